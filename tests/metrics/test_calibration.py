"""calibration_error against hand-computed cases and an independent naive implementation."""

from __future__ import annotations

import numpy as np
import pytest

from logitlab.metrics import calibration_error


def naive_ece(conf: np.ndarray, correct: np.ndarray, n_bins: int, p: str) -> float:
    """Loop over bins the textbook way: (lo, hi] bins, the first one closed at 0."""
    edges = np.linspace(0, 1, n_bins + 1)
    gaps, weights = [], []
    for b in range(n_bins):
        lo, hi = edges[b], edges[b + 1]
        m = (conf > lo) & (conf <= hi) if b else (conf >= lo) & (conf <= hi)
        if m.sum() == 0:
            continue
        gaps.append(abs(correct[m].mean() - conf[m].mean()))
        weights.append(m.sum() / conf.size)
    g, w = np.array(gaps), np.array(weights)
    if p == "l1":
        return float(np.sum(w * g))
    if p == "l2":
        return float(np.sqrt(np.sum(w * g**2)))
    return float(g.max())


def test_hand_computed_two_bins() -> None:
    p = np.array([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7], [0.8, 0.2]])
    y = np.array([0, 1, 0, 0])
    # top-label conf .9 .6 .7 .8, correct 1 0 0 1; 4 bins: (.5,.75] -> conf .65 acc 0,
    # (.75, 1] -> conf .85 acc 1: ECE = .5 * .65 + .5 * .15 = .4, MCE = .65,
    # RMSCE = sqrt(.5 * .65^2 + .5 * .15^2)
    assert calibration_error(probs=p, target=y, n_bins=4).value == pytest.approx(0.4)
    assert calibration_error(probs=p, target=y, n_bins=4, norm="max").value == pytest.approx(0.65)
    assert calibration_error(probs=p, target=y, n_bins=4, norm="l2").value == pytest.approx(
        np.sqrt(0.5 * 0.65**2 + 0.5 * 0.15**2)
    )


@pytest.mark.parametrize("norm", ["l1", "l2", "max"])
@pytest.mark.parametrize("n_bins", [1, 7, 15])
def test_matches_naive_implementation(norm: str, n_bins: int) -> None:
    rng = np.random.default_rng(n_bins)
    z = rng.standard_normal((500, 6)) * 2
    y = rng.integers(0, 6, 500)
    p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    r = calibration_error(probs=p, target=y, n_bins=n_bins, norm=norm)
    ref = naive_ece(p.max(1), (p.argmax(1) == y).astype(float), n_bins, norm)
    assert r.value == pytest.approx(ref, rel=1e-12, abs=1e-15)
    assert r.table.counts.sum() == 500


def test_classwise_is_mean_over_classes() -> None:
    rng = np.random.default_rng(3)
    z = rng.standard_normal((400, 4))
    y = rng.integers(0, 4, 400)
    p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    r = calibration_error(probs=p, target=y, mode="classwise", n_bins=10)
    per = [naive_ece(p[:, c], (y == c).astype(float), 10, "l1") for c in range(4)]
    assert r.value == pytest.approx(np.mean(per), rel=1e-12)
    assert r.per_class == pytest.approx(per, rel=1e-12)


def test_equal_mass_bins_have_equal_counts() -> None:
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.ones(3), 300)
    y = rng.integers(0, 3, 300)
    r = calibration_error(probs=p, target=y, n_bins=10, binning="equal-mass")
    assert r.table.counts.tolist() == [30] * 10


def test_edges_zero_and_one_and_on_edge() -> None:
    p1 = np.array([1.0, 0.0, 0.5, 0.2])
    y = np.array([1, 0, 1, 0])
    two = np.stack([1 - p1, p1], 1)  # a 2-class problem: top-label conf 1, 1, .5, .8
    r = calibration_error(probs=two, target=y, n_bins=2)
    # 0.5 sits on the edge between the two bins and belongs to the lower one
    assert r.table.counts.tolist() == [1, 3]
    # binary (N,) input: P(class 1) = 1, 0, .5, .2 itself is binned (0 is inside the first bin)
    assert calibration_error(probs=p1, target=y, n_bins=2).table.counts.tolist() == [3, 1]


def test_single_class_and_empty() -> None:
    r = calibration_error(probs=np.ones((5, 1)), target=np.zeros(5, dtype=int))
    assert r.value == 0.0
    with pytest.raises(ValueError, match="empty"):
        calibration_error(probs=np.ones((0, 2)), target=np.zeros(0, dtype=int))


def test_debiased_is_below_plain_for_calibrated_noise() -> None:
    rng = np.random.default_rng(5)
    conf = rng.uniform(0.5, 1, 2000)
    correct = rng.uniform(size=2000) < conf  # perfectly calibrated, finite-sample noise only
    p = np.stack([1 - conf, conf], 1)
    y = correct.astype(int)
    plain = calibration_error(probs=p, target=y, norm="l2").value
    deb = calibration_error(probs=p, target=y, norm="l2", debiased=True).value
    assert deb < plain


def test_bad_options() -> None:
    p, y = np.full((2, 2), 0.5), np.array([0, 1])
    for kw, msg in (
        ({"norm": "l3"}, "norm"),
        ({"binning": "x"}, "binning"),
        ({"mode": "x"}, "mode"),
        ({"n_bins": 0}, "n_bins"),
        ({"debiased": True}, "l2"),
    ):
        with pytest.raises(ValueError, match=msg):
            calibration_error(probs=p, target=y, **kw)
    with pytest.raises(ValueError, match="not a class index"):
        calibration_error(probs=p, target=np.array([0, 2]))
    with pytest.raises(ValueError, match="sum to 1"):
        calibration_error(probs=np.full((2, 2), 0.7), target=y)
    with pytest.raises(ValueError, match="2 labels but there are 3"):
        calibration_error(probs=np.full((3, 2), 0.5), target=y)
    with pytest.raises(ValueError, match="NaN"):
        calibration_error(logits=np.array([[np.nan, 0.0], [0.0, 0.0]]), target=y)


@pytest.mark.parametrize("norm", ["l1", "l2", "max"])
def test_binary_input_calibrates_probability_of_class_one(norm: str) -> None:
    # issue 13 item 6: (N,) scores are P(class 1); the calibration of a binary classifier bins it
    # against y == 1 (torchmetrics' binary_calibration_error: confidences = preds, accuracies =
    # target; scikit-learn's calibration_curve), not max(p, 1 - p) against correctness
    from scipy.special import expit
    from sklearn.calibration import calibration_curve

    rng = np.random.default_rng(11)
    z = rng.standard_normal(3000) * 2
    y = (rng.uniform(size=3000) < expit(0.7 * z + 0.4)).astype(int)
    p1 = expit(z)
    ref = naive_ece(p1, (y == 1).astype(float), 15, norm)
    got = calibration_error(p1, y, norm=norm)
    assert got.value == pytest.approx(ref, rel=1e-12)
    assert calibration_error(logits=z, target=y, norm=norm).value == pytest.approx(ref, rel=1e-12)
    prob_true, prob_pred = calibration_curve(y, p1, n_bins=15)
    m = got.table.counts > 0
    np.testing.assert_allclose(got.table.confidence[m], prob_pred, rtol=1e-12)
    np.testing.assert_allclose(got.table.accuracy[m], prob_true, rtol=1e-12)
    # the same forecasts as two columns are a 2-class problem: top-label, another number
    two = calibration_error(np.stack([1 - p1, p1], 1), y, norm=norm)
    top = naive_ece(np.maximum(p1, 1 - p1), ((p1 > 0.5) == (y == 1)).astype(float), 15, norm)
    assert two.value == pytest.approx(top, rel=1e-12) and two.value != pytest.approx(ref)

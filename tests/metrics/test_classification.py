"""NLL, accuracy, Brier score and its decomposition."""

from __future__ import annotations

import mpmath
import numpy as np
import pytest
import scipy.stats
from tests import reference as R

from logitlab.metrics import accuracy, brier_decomposition, brier_score, entropy_stats, nll

torch = pytest.importorskip("torch")


def _data(seed: int = 0, n: int = 300, c: int = 5) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, c)) * 2, rng.integers(0, c, n)


def test_nll_matches_torch() -> None:
    z, y = _data()
    ref = torch.nn.functional.cross_entropy(torch.tensor(z), torch.tensor(y)).item()
    assert nll(logits=z, target=y) == pytest.approx(ref, rel=1e-13)
    p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    assert nll(probs=p, target=y) == pytest.approx(ref, rel=1e-12)


def test_topk_accuracy() -> None:
    s = np.array([[0.1, 0.7, 0.2], [0.5, 0.3, 0.2], [0.2, 0.2, 0.6]])
    y = np.array([2, 0, 0])
    assert accuracy(s, y) == pytest.approx(1 / 3)
    # row 3's target ties with another class for second place: ties go to the target
    assert accuracy(s, y, k=2) == 1.0
    z, yy = _data(4, 200, 10)  # no ties: same as torch.topk
    for k in (1, 3, 5):
        ref = (torch.tensor(z).topk(k, 1).indices == torch.tensor(yy)[:, None]).any(1)
        assert accuracy(z, yy, k=k) == pytest.approx(float(ref.double().mean()))


def test_brier_multiclass_and_binary() -> None:
    z, y = _data(1)
    p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    onehot = np.eye(5)[y]
    assert brier_score(probs=p, target=y) == pytest.approx(np.mean(((p - onehot) ** 2).sum(1)))
    pb = np.array([0.9, 0.2, 0.6])
    yb = np.array([1, 0, 0])
    # binary (N,) input: the classic one-column score (sklearn's brier_score_loss) ...
    assert brier_score(probs=pb, target=yb) == pytest.approx(np.mean((pb - yb) ** 2))
    # ... which is half the two-column multiclass score of the same forecasts
    p2 = np.stack([1 - pb, pb], 1)
    assert brier_score(probs=p2, target=yb) == pytest.approx(2 * np.mean((pb - yb) ** 2))
    d = brier_decomposition(probs=pb, target=yb, n_bins=3)
    assert d.brier == pytest.approx(np.mean((pb - yb) ** 2))
    total = d.reliability - d.resolution + d.uncertainty
    assert total + d.within_bin_variance - d.within_bin_covariance == pytest.approx(d.brier)


@pytest.mark.parametrize("n_bins", [1, 5, 15, 100])
def test_brier_decomposition_sums_to_brier(n_bins: int) -> None:
    z, y = _data(2, 500, 4)
    d = brier_decomposition(logits=z, target=y, n_bins=n_bins)
    total = (
        d.reliability
        - d.resolution
        + d.uncertainty
        + d.within_bin_variance
        - d.within_bin_covariance
    )
    assert total == pytest.approx(d.brier, rel=1e-12)
    assert d.reliability >= 0 and d.resolution >= 0
    assert d.uncertainty == pytest.approx(
        sum(np.mean(y == c) * (1 - np.mean(y == c)) for c in range(4))
    )


def test_decomposition_exact_without_within_bin_terms_for_discrete_forecasts() -> None:
    # forecasts take one value per bin: Murphy's three terms alone sum to the Brier score
    y = np.array([0, 1, 1, 0, 1, 0, 0, 1])
    p1 = np.array([0.1, 0.1, 0.7, 0.7, 0.7, 0.1, 0.7, 0.7])
    p = np.stack([1 - p1, p1], 1)
    d = brier_decomposition(probs=p, target=y, n_bins=10)
    assert abs(d.within_bin_variance) < 1e-15 and abs(d.within_bin_covariance) < 1e-15
    assert d.reliability - d.resolution + d.uncertainty == pytest.approx(d.brier)


def test_entropy_stats() -> None:
    e = entropy_stats(logits=np.zeros((3, 4)))
    assert e.mean == pytest.approx(np.log(4)) and e.mean_normalized == pytest.approx(1.0)


BINARY_LOGITS = [-40.0, -3.5, -1e-9, 0.0, 0.25, 2.0, 37.0]


@pytest.mark.parametrize("kind", ["numpy", "list", "torch"])
def test_entropy_stats_of_binary_logits(kind: str) -> None:
    # (N,) logits are the logit of class 1, the pair (0, z), as nll and calibration_error read
    # them; entropy_stats(logits=np.zeros(3)) raised IndexError before the metrics merge.
    z = np.array(BINARY_LOGITS)
    arg = {"numpy": z, "list": z.tolist(), "torch": torch.tensor(z)}[kind]
    e = entropy_stats(logits=arg)
    with mpmath.workdps(60):
        h = [R.entropy_logits([0.0, v]) for v in BINARY_LOGITS]
        want = [float(sum(h) / len(h)), float(min(h)), float(max(h))]
        want.append(float(sum(h) / len(h) / mpmath.log(2)))
    got = [e.mean, e.min, e.max, e.mean_normalized]
    np.testing.assert_allclose(got, want, rtol=1e-13, atol=0)
    # and exactly what the same scores give as two columns (0, z)
    two = entropy_stats(logits=np.stack([np.zeros_like(z), z], 1))
    assert [two.mean, two.min, two.max] == pytest.approx(got[:3], rel=1e-15)


def test_entropy_stats_of_binary_probabilities() -> None:
    # (N,) probabilities are P(class 1): scipy.stats.entropy of (1 - p, p)
    p = np.array([0.0, 0.1, 0.5, 0.75, 1.0])
    e = entropy_stats(p)
    h = scipy.stats.entropy(np.stack([1 - p, p]), axis=0)
    want = [h.mean(), h.min(), h.max(), h.mean() / np.log(2)]
    np.testing.assert_allclose([e.mean, e.min, e.max, e.mean_normalized], want, rtol=1e-14)
    assert entropy_stats(probs=p) == e
    with pytest.raises(ValueError, match=r"probs"):
        entropy_stats(np.array([0.5, 1.5]))  # not a probability of class 1


def test_perfect_predictions_give_positive_zero() -> None:
    # issue 13 item 8: nll(probs=...) of a certain, correct forecast was -log(1) = -0.0
    p = np.array([[1.0, 0.0], [0.0, 1.0]])
    y = np.array([0, 1])
    for v in (
        nll(probs=p, target=y),
        nll(logits=[[0.0, -np.inf]], target=[0]),
        brier_score(probs=p, target=y),
        entropy_stats(probs=p).mean,
    ):
        assert v == 0 and not np.signbit(v)


@pytest.mark.parametrize(
    "row, target",
    [
        ([0.0, -40.0, -41.0], 0),
        ([3.0, -30.0, -28.5, 1.0], 0),
        ([0.5, -33.0, -35.0], 1),
        ([2.0, 1.0], 0),
    ],
)
def test_brier_score_of_logits_does_not_cancel(row: list[float], target: int) -> None:
    # softmax(x) - onehot cancels on a confident correct row: [0, -40, -41] gave 2.0e-35 for
    # 5.4e-35. Reference: mpmath at 60 digits.
    with mpmath.workdps(60):
        e = [mpmath.exp(mpmath.mpf(v)) for v in row]
        p = [v / mpmath.fsum(e) for v in e]
        ref = float(mpmath.fsum((pc - (c == target)) ** 2 for c, pc in enumerate(p)))
    got = brier_score(logits=np.array([row]), target=np.array([target]))
    assert got == pytest.approx(ref, rel=1e-13)


def test_binary_brier_score_of_logits_does_not_cancel() -> None:
    # (sigmoid(40) - 1)^2 = sigmoid(-40)^2 = 1.8e-35, not 0
    z = [40.0, -38.0, 0.25]
    y = [1, 0, 1]
    with mpmath.workdps(60):
        terms = [(1 / (1 + mpmath.exp(-v)) - t) ** 2 for v, t in zip(z, y, strict=True)]
        ref = float(mpmath.fsum(terms) / 3)
    assert brier_score(logits=np.array(z), target=np.array(y)) == pytest.approx(ref, rel=1e-13)

"""What each argument means (issue 13 items 12 and 13).

* The probability form of cross-entropy (``cross_entropy(probs=..., target=...)``) against mpmath
  and torch, with its autograd gradient (gradcheck and gradgradcheck in float64).
* Probabilities passed as logits warn (:class:`logitlab.ProbabilitiesAsLogitsWarning`) naming the
  probability form, in every function that has one.
* The positional forms of the peers (``scipy.stats.entropy(pk, qk, base)``, torchmetrics'
  ``(preds, target)``), no existing keyword call broken, and scikit-learn's ``(y_true, y_prob)``
  order refused with an error that says the arguments look swapped.
"""

from __future__ import annotations

import inspect
import math
import warnings
from collections.abc import Callable
from typing import Any

import mpmath
import numpy as np
import pytest
import scipy.stats
from tests import reference as R
from tests.conftest import Backend

import logitlab as ll
import logitlab.metrics as lm

torch = pytest.importorskip("torch")
F = torch.nn.functional


def _ulps(got: object, exact: object) -> float:
    return R.ulp_error(float(np.asarray(got)), exact, np.float64)  # type: ignore[arg-type]


def _ce_probs_ref(p: list[float], t: int, eps: float, w: list[float]) -> mpmath.mpf:
    """``(1 - eps) w_t (-log p_t) + eps / |S| sum_{c in S} w_c (-log p_c)`` at 60 digits, with
    the smoothing spread over the support S = {c: p_c > 0} (masked logits' convention)."""
    sup = [c for c, v in enumerate(p) if v > 0]
    e = mpmath.mpf(eps)
    nll = [-mpmath.log(mpmath.mpf(v)) if v > 0 else mpmath.inf for v in p]
    tail = mpmath.fsum(mpmath.mpf(w[c]) * nll[c] for c in sup) if eps else 0
    return (1 - e) * mpmath.mpf(w[t]) * nll[t] + e / len(sup) * tail


# --------------------------------------------------------------------------- item 13: CE(probs=)


def test_issue_repro_probabilities_as_logits() -> None:
    p, q = [0.7, 0.2, 0.1], [0.5, 0.3, 0.2]
    exact = -mpmath.fsum(
        mpmath.mpf(b) * mpmath.log(mpmath.mpf(a)) for a, b in zip(p, q, strict=True)
    )
    assert abs(float(exact) - 1.1217) < 1e-4  # the issue's 1.122
    assert _ulps(ll.cross_entropy(probs=p, target=q), exact) <= 2
    with pytest.warns(ll.ProbabilitiesAsLogitsWarning, match=r"cross_entropy\(probs=") as rec:
        got = ll.cross_entropy(p, q)
    assert float(got) == pytest.approx(1.038, abs=1e-3)  # what logits mean: softmax(p)
    assert rec[0].filename == __file__  # the warning points at the caller's line


def test_probability_form_class_targets_against_mpmath(backend: Backend) -> None:
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.ones(5), 6)
    p[1] = [0.0, 0.5, 0.5, 0.0, 0.0]  # zeros off the label: exact 0 terms, no smoothing mass
    p[2] = [1e-300, 1 - 1e-300, 0.0, 0.0, 0.0]  # a tiny probability on the label: no clamping
    t = np.array([0, 2, 0, 3, 4, -100])
    w = [1.0, 2.0, 0.5, 1.5, 1.0]
    for eps in (0.0, 0.1):
        got = backend.to_numpy(
            ll.cross_entropy(
                probs=backend.asarray(p),
                target=backend.asarray(t),
                weight=backend.asarray(w),
                label_smoothing=eps,
                reduction="none",
            )
        )
        for i in range(5):
            assert _ulps(got[i], _ce_probs_ref(list(p[i]), int(t[i]), eps, w)) <= 8, (i, eps)
        assert got[5] == 0  # ignore_index
    assert float(ll.cross_entropy(probs=[[1e-300, 1 - 1e-300]], target=[0])) == pytest.approx(
        300 * math.log(10), rel=1e-15
    )
    assert float(ll.cross_entropy(probs=[[0.0, 1.0]], target=[0])) == math.inf


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_probability_form_matches_torch(reduction: str) -> None:
    g = torch.Generator().manual_seed(3)
    p = torch.softmax(torch.randn(7, 4, 3, dtype=torch.float64, generator=g), dim=1)  # class axis 1
    t = torch.randint(0, 4, (7, 3), generator=g)
    t[0, 0] = -1
    w = torch.tensor([1.0, 0.3, 2.0, 1.0], dtype=torch.float64)
    for eps in (0.0, 0.2):
        ref = F.cross_entropy(
            p.log(), t, weight=w, ignore_index=-1, label_smoothing=eps, reduction=reduction
        )
        got = ll.cross_entropy(
            probs=p,
            target=t,
            axis=1,
            weight=w,
            ignore_index=-1,
            label_smoothing=eps,
            reduction=reduction,
        )
        torch.testing.assert_close(got, ref, rtol=1e-13, atol=0)
    q = torch.softmax(torch.randn(7, 4, 3, dtype=torch.float64, generator=g), dim=1)
    got = ll.cross_entropy(probs=p, target=q, axis=1, reduction=reduction)
    torch.testing.assert_close(
        got, F.cross_entropy(p.log(), q, reduction=reduction), rtol=1e-13, atol=0
    )


def test_probability_form_gradients() -> None:
    g = torch.Generator().manual_seed(4)
    p = torch.softmax(torch.randn(5, 4, dtype=torch.float64, generator=g), dim=1)
    t = torch.tensor([0, 3, 1, -100, 2])
    w = torch.tensor([1.0, 2.0, 0.5, 1.0], dtype=torch.float64)
    p.requires_grad_()
    loss = ll.cross_entropy(probs=p, target=t, weight=w, reduction="sum", label_smoothing=0.1)
    (grad,) = torch.autograd.grad(loss, p)
    # d/dp_c of sum_c alpha_c (-log p_c) is -alpha_c / p_c, alpha built by hand
    alpha = torch.zeros(5, 4, dtype=torch.float64)
    for i, ti in enumerate(t.tolist()):
        if ti >= 0:
            alpha[i] = w * 0.1 / 4
            alpha[i, ti] += 0.9 * w[ti]
    torch.testing.assert_close(grad, -alpha / p.detach(), rtol=1e-14, atol=0)

    def f(pp: Any, qq: Any) -> Any:
        # gradcheck's perturbations leave the simplex: validation would (rightly) refuse them
        with ll.validation(False):
            return ll.cross_entropy(probs=pp, target=qq, weight=w, label_smoothing=0.1)

    q = torch.softmax(torch.randn(5, 4, dtype=torch.float64, generator=g), dim=1)
    q.requires_grad_()
    assert torch.autograd.gradcheck(f, (p, q))
    assert torch.autograd.gradgradcheck(f, (p, q))
    # a class without target mass has gradient 0 even where p = 0 (never 0 * inf = NaN)
    z = torch.tensor([[0.0, 0.5, 0.5]], dtype=torch.float64, requires_grad=True)
    ll.cross_entropy(probs=z, target=torch.tensor([1])).backward()
    assert z.grad is not None and z.grad.tolist() == [[0.0, -2.0, 0.0]]


def test_probability_form_bad_input() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        ll.cross_entropy([[0.0, 1.0]], [0], probs=[[0.5, 0.5]])
    with pytest.raises(TypeError, match="target"):
        ll.cross_entropy(probs=[[0.5, 0.5]])
    with pytest.raises(ValueError, match="must sum to 1"):
        ll.cross_entropy(probs=[[0.5, 0.6]], target=[0])
    with pytest.raises(ValueError, match="probs must be probabilities"):
        ll.cross_entropy(probs=[[2.0, -1.0]], target=[0])
    with pytest.raises(ValueError, match="temperature"):
        ll.cross_entropy(probs=[[0.5, 0.5]], target=[0], temperature=2.0)


# --------------------------------------------------------------------------- item 13: the guard

P2 = [[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]]
Y2 = [0, 2]
GUARDED: dict[str, tuple[Callable[[Any], object], str]] = {
    "cross_entropy": (lambda s: ll.cross_entropy(s, Y2), "cross_entropy(probs="),
    "perplexity": (lambda s: ll.perplexity(s, Y2), "perplexity(probs="),
    "entropy": (lambda s: ll.entropy(logits=s), "entropy(probs="),
    "kl_divergence": (lambda s: ll.kl_divergence(p_logits=s, q=P2), "kl_divergence(p="),
    "js_divergence": (lambda s: ll.js_divergence(P2, q_logits=s), "js_divergence(q="),
    "nll": (lambda s: ll.nll(logits=s, target=Y2), "nll(probs="),
    "calibration_error": (
        lambda s: ll.calibration_error(logits=s, target=Y2),
        "calibration_error(probs=",
    ),
    "brier_score": (lambda s: ll.brier_score(logits=s, target=Y2), "brier_score(probs="),
    "entropy_stats": (lambda s: lm.entropy_stats(logits=s), "entropy_stats(probs="),
    "fit_temperature": (lambda s: ll.fit_temperature(s, Y2), "fit_temperature(probs="),
    "Evaluator": (lambda s: ll.Evaluator().update(s, Y2), "Evaluator(from_probs=True)"),
}


@pytest.mark.parametrize("name", sorted(GUARDED))
@pytest.mark.parametrize("kind", ["list", "torch"])
def test_probabilities_as_logits_warn_once_naming_the_probability_form(
    name: str, kind: str
) -> None:
    fn, form = GUARDED[name]
    scores: Any = P2 if kind == "list" else torch.tensor(P2, dtype=torch.float32)
    with pytest.warns(ll.ProbabilitiesAsLogitsWarning) as rec:
        fn(scores)
    assert len(rec) == 1 and form in str(rec[0].message)
    # real logits, a batch whose later row is not a distribution, and validation off: silent
    other = [P2[0], [2.0, -1.0, 0.5]]
    for silent in ([[2.0, -1.0, 0.5], [0.1, 0.3, 0.2]], other):
        with warnings.catch_warnings():
            warnings.simplefilter("error", ll.ProbabilitiesAsLogitsWarning)
            fn(silent if kind == "list" else torch.tensor(silent))
    with ll.validation(False), warnings.catch_warnings():
        warnings.simplefilter("error", ll.ProbabilitiesAsLogitsWarning)
        fn(scores)


def test_probabilities_in_a_report_file_are_a_finding(tmp_path: Any) -> None:
    from typer.testing import CliRunner

    from logitlab.cli import app

    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.ones(4), 200)
    np.savez(tmp_path / "p.npz", logits=p, labels=rng.integers(0, 4, 200))
    r = CliRunner().invoke(app, ["evaluate", str(tmp_path / "p.npz"), "--json"])
    assert r.exit_code == 0, r.output
    out = CliRunner().invoke(app, ["report", str(tmp_path / "p.npz"), "--out", str(tmp_path)])
    assert out.exit_code == 0, out.output
    import json

    finding = json.loads((tmp_path / "report.json").read_text())["findings"][0]
    assert finding["code"] == "probabilities-as-logits" and "--probs" in finding["message"]
    assert "look like probabilities" in (tmp_path / "report.html").read_text()


# --------------------------------------------------------------------------- item 12: positions


def test_entropy_takes_scipy_positional_form() -> None:
    rng = np.random.default_rng(1)
    p = rng.dirichlet(np.ones(6), 4)
    q = rng.dirichlet(np.ones(6), 4)
    np.testing.assert_allclose(ll.entropy(p), scipy.stats.entropy(p, axis=-1), rtol=1e-14)
    np.testing.assert_allclose(
        ll.entropy(p, base=2), scipy.stats.entropy(p, base=2, axis=-1), rtol=1e-14
    )
    np.testing.assert_allclose(
        ll.entropy(p, q, 2), scipy.stats.entropy(p, q, 2, axis=-1), rtol=1e-12
    )
    np.testing.assert_allclose(
        ll.entropy(p.T, q.T, None, 0), scipy.stats.entropy(p.T, q.T, None, 0), rtol=1e-12
    )
    assert float(ll.entropy([0.5, 0.5])) == pytest.approx(math.log(2), rel=1e-16)
    # qk is the exact relative entropy: SciPy's sum(p log(p / q)) is rounding noise as q -> p
    a = np.array([0.5 + 2.0**-30, 0.5 - 2.0**-30])
    b = np.array([0.5, 0.5])
    assert _ulps(ll.entropy(a, b), R.kl(list(a), list(b))) <= 4
    assert float(ll.entropy(logits=[0.0, 0.0], qk=[0.25, 0.75])) == pytest.approx(
        float(R.kl([0.5, 0.5], [0.25, 0.75])), rel=1e-15
    )


def test_metrics_take_predictions_first() -> None:
    rng = np.random.default_rng(2)
    p = rng.dirichlet(np.ones(3), 50)
    y = rng.integers(0, 3, 50)
    from sklearn.metrics import brier_score_loss, log_loss

    assert ll.nll(p, y) == pytest.approx(log_loss(y, p), rel=1e-13)
    assert ll.brier_score(p, y) == pytest.approx(
        brier_score_loss(y, p, scale_by_half=False), rel=1e-13
    )
    assert ll.brier_decomposition(p, y).brier == ll.brier_score(probs=p, target=y)
    assert ll.calibration_error(p, y).value == ll.calibration_error(probs=p, target=y).value
    assert lm.entropy_stats(p).mean == lm.entropy_stats(probs=p).mean
    assert ll.fit_temperature(probs=p, target=y).temperature == pytest.approx(
        ll.fit_temperature(np.log(p), y).temperature, rel=1e-12
    )


# the parameter names of every public callable on main: keyword calls must keep working
MAIN_PARAMETERS = {
    "entropy": {"probs", "logits", "axis", "base"},
    "cross_entropy": {
        "logits",
        "target",
        "axis",
        "ignore_index",
        "label_smoothing",
        "weight",
        "reduction",
        "temperature",
    },
    "perplexity": {"logits", "target", "axis", "ignore_index", "temperature"},
    "kl_divergence": {"p", "q", "p_logits", "q_logits", "axis", "base", "reduction"},
    "js_divergence": {"p", "q", "p_logits", "q_logits", "axis", "base", "reduction"},
    "binary_cross_entropy": {"probs", "target", "weight", "reduction"},
    "binary_cross_entropy_with_logits": {"logits", "target", "weight", "pos_weight", "reduction"},
    "nll": {"logits", "probs", "target"},
    "accuracy": {"scores", "target", "k"},
    "brier_score": {"probs", "logits", "target"},
    "brier_decomposition": {"probs", "logits", "target", "n_bins"},
    "calibration_error": {
        "probs",
        "logits",
        "target",
        "n_bins",
        "binning",
        "norm",
        "mode",
        "debiased",
    },
    "entropy_stats": {"logits", "probs"},
    "fit_temperature": {"logits", "target", "max_iter", "tol", "beta_max"},
}


@pytest.mark.parametrize("name", sorted(MAIN_PARAMETERS))
def test_no_keyword_call_breaks(name: str) -> None:
    fn = getattr(ll, name, None) or getattr(lm, name)
    params = inspect.signature(fn).parameters
    assert MAIN_PARAMETERS[name] <= {
        k for k, v in params.items() if v.kind is not inspect.Parameter.POSITIONAL_ONLY
    }


@pytest.mark.parametrize(
    "call",
    [
        lambda y, p: ll.brier_score(y, p[:, 1]),
        lambda y, p: ll.brier_score(y, p),
        lambda y, p: ll.nll(y, p),
        lambda y, p: ll.calibration_error(y, p[:, 1]),
        lambda y, p: ll.brier_decomposition(y, p),
        lambda y, p: ll.accuracy(y, p),
    ],
    ids=["brier binary", "brier", "nll", "calibration binary", "decomposition", "accuracy"],
)
def test_scikit_learn_argument_order_is_refused(call: Callable[..., object]) -> None:
    # scikit-learn: brier_score_loss(y_true, y_proba), log_loss(y_true, y_pred),
    # top_k_accuracy_score(y_true, y_score); logitlab and torchmetrics: (preds, target)
    rng = np.random.default_rng(3)
    p = rng.dirichlet(np.ones(2), 20)
    y = rng.integers(0, 2, 20)
    with pytest.raises(ValueError, match="look swapped"):
        call(y, p)


def test_accuracy_binary_scores_follow_scikit_learn() -> None:
    from sklearn.metrics import top_k_accuracy_score

    rng = np.random.default_rng(5)
    p = rng.uniform(size=400)
    y = (rng.uniform(size=400) < p).astype(int)
    z = np.log(p) - np.log1p(-p)
    assert ll.accuracy(p, y) == top_k_accuracy_score(y, p, k=1)  # probabilities: 0.5
    assert ll.accuracy(z, y) == top_k_accuracy_score(y, z, k=1)  # logits: 0
    s = rng.standard_normal((400, 7))
    yy = rng.integers(0, 7, 400)
    for k in (1, 3, 6):
        assert ll.accuracy(s, yy, k=k) == top_k_accuracy_score(yy, s, k=k, labels=range(7))
    with pytest.warns(UserWarning, match="k=7 >= the number of classes 7"):
        assert ll.accuracy(s, yy, k=7) == 1.0


def test_torch_kl_div_order_is_named() -> None:
    # torch's F.kl_div(input=log q, target=p) ported as kl_divergence(log q, p): the error says
    # what was probably given
    p = np.array([0.2, 0.8])
    with pytest.raises(ValueError, match=r"use p_logits=.*KL\(p \|\| q\)"):
        ll.kl_divergence(np.log(p), p)


def test_cross_entropy_says_when_labels_and_logits_are_swapped() -> None:
    # scikit-learn's log_loss takes y_true first; the message spoke of a probability target's shape
    y = np.array([0, 2, 1])
    z = np.random.default_rng(0).normal(size=(3, 4))
    with pytest.raises(ValueError, match="look swapped"):
        ll.cross_entropy(y, z)
    with pytest.raises(ValueError, match="look swapped"):
        ll.cross_entropy(y.astype(float), z)


def test_a_single_distribution_is_not_called_row_empty_tuple() -> None:
    with pytest.raises(ValueError, match=r"it sums to 2\.0") as e:
        ll.entropy([1.0, 1.0])
    assert "row ()" not in str(e.value)

"""Entropy, cross-entropy, BCE, KL/JS and perplexity: issue values, agreement with torch where
torch is accurate, masked classes, all-ignored batches, type preservation."""

from __future__ import annotations

import math

import numpy as np
import pytest
from tests import reference as R
from tests.conftest import Backend

import logitlab as ll

INF = math.inf


def _ulps(got: object, exact: object, dtype: type = np.float64) -> float:
    return R.ulp_error(float(np.asarray(got)), exact, dtype)  # type: ignore[arg-type]


def test_issue_values() -> None:
    x32 = np.array([0.0, -30.0, -30.0, -30.0], np.float32)
    assert _ulps(ll.entropy(logits=x32), R.entropy_logits(list(x32)), np.float32) <= 4
    big = np.array([1e4, 1e4 - 1], np.float32)
    assert _ulps(ll.entropy(logits=big), R.entropy_logits([float(v) for v in big]), np.float32) <= 4
    assert float(ll.binary_cross_entropy([1e-50], [1.0])) == pytest.approx(115.129, rel=1e-5)
    assert _ulps(ll.binary_cross_entropy([1e-50], [1.0]), R.bce_probs(1e-50, 1.0)) <= 1
    assert _ulps(ll.binary_cross_entropy_with_logits([-40.0], [0.0]), R.bce_logits(-40, 0)) <= 1
    p = np.array([0.5 + 2.0**-20, 0.5 - 2.0**-20])
    kl = ll.kl_divergence(p, np.array([0.5, 0.5]))
    assert 0 < float(kl) < 1e-11 and _ulps(kl, R.kl(list(p), [0.5, 0.5])) <= 4


def test_output_type_and_dtype(backend: Backend) -> None:
    for dt in (np.float64, np.float32):
        x = backend.asarray([[0.5, -1.0, 2.0], [0.0, 0.0, -3.0]], dt)
        y = backend.asarray([[0.2, 0.3, 0.5], [1.0, 0.0, 0.0]], dt)
        outs = [
            ll.entropy(logits=x),
            ll.entropy(probs=y),
            ll.cross_entropy(x, backend.asarray([2, 0])),
            ll.cross_entropy(x, y, reduction="none"),
            ll.binary_cross_entropy(y, y),
            ll.binary_cross_entropy_with_logits(x, y),
            ll.kl_divergence(p_logits=x, q_logits=x),
            ll.js_divergence(y, ll.softmax(x)),
            ll.perplexity(x, backend.asarray([2, 0])),
        ]
        for out in outs:
            # NumPy full reductions may come back as NumPy scalars (np.float64 / np.float32)
            kinds = (np.ndarray, np.generic) if backend.name == "numpy" else type(x)
            assert isinstance(out, kinds) and out.dtype == x.dtype


def test_cross_entropy_matches_torch() -> None:
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    g = torch.Generator().manual_seed(5)
    x = torch.randn(6, 5, 3, dtype=torch.float64, generator=g) * 3  # class axis 1
    t = torch.randint(0, 5, (6, 3), generator=g)
    t[0, 0] = t[4, 2] = -100
    w = torch.rand(5, dtype=torch.float64, generator=g) + 0.1
    soft = torch.softmax(torch.randn(6, 5, 3, dtype=torch.float64, generator=g), 1)
    for tgt in (t, soft):
        for kw in (
            {},
            {"weight": w},
            {"label_smoothing": 0.2},
            {"weight": w, "label_smoothing": 0.1, "reduction": "sum"},
            {"reduction": "none"},
        ):
            ours = ll.cross_entropy(x, tgt, axis=1, **kw)
            ref = F.cross_entropy(x, tgt, **kw)
            torch.testing.assert_close(ours, ref, rtol=1e-13, atol=0)
    # ignore_index other than -100
    t2 = torch.where(t < 0, torch.full_like(t, 3), t)
    torch.testing.assert_close(
        ll.cross_entropy(x, t2, axis=1, ignore_index=3), F.cross_entropy(x, t2, ignore_index=3)
    )


def test_masked_classes_with_label_smoothing_finite(backend: Backend) -> None:
    x = backend.asarray([[2.0, 0.0, -INF], [-INF, 1.0, 1.0]], np.float64)
    got = backend.to_numpy(
        ll.cross_entropy(x, backend.asarray([0, 2]), label_smoothing=0.3, reduction="none")
    )
    assert np.isfinite(got).all()
    for i, (row, t) in enumerate([([2.0, 0.0, -INF], 0), ([-INF, 1.0, 1.0], 2)]):
        assert _ulps(got[i], R.ce_smooth(row, t, 0.3)) <= 4


def test_all_ignored_mean_is_zero(backend: Backend) -> None:
    x = backend.asarray(np.zeros((3, 4)), np.float64)
    t = backend.asarray([-100, -100, -100])
    assert float(backend.to_numpy(ll.cross_entropy(x, t))) == 0.0
    assert float(backend.to_numpy(ll.cross_entropy(x, t, weight=backend.asarray([1.0] * 4)))) == 0
    assert float(backend.to_numpy(ll.perplexity(x, t))) == 1.0


def test_mean_reduction_denominator_uses_weights() -> None:
    x = np.array([[0.0, 1.0], [2.0, 0.0], [0.0, 0.0]])
    t = np.array([1, 0, -100])
    w = np.array([3.0, 0.5])
    per = np.asarray(ll.cross_entropy(x, t, weight=w, reduction="none"))
    assert float(ll.cross_entropy(x, t, weight=w)) == pytest.approx(per.sum() / (0.5 + 3.0))
    assert per[2] == 0.0


def test_bce_infinite_logits_no_nan() -> None:
    x = np.array([INF, -INF, INF, -INF, INF])
    y = np.array([1.0, 0.0, 0.0, 1.0, 0.5])
    got = np.asarray(ll.binary_cross_entropy_with_logits(x, y, reduction="none"))
    np.testing.assert_array_equal(got, [0.0, 0.0, INF, INF, INF])
    got = np.asarray(ll.binary_cross_entropy([0.0, 1.0, 0.0], [0.0, 1.0, 1.0], reduction="none"))
    np.testing.assert_array_equal(got, [0.0, 0.0, INF])


def test_bce_matches_torch_where_torch_is_accurate() -> None:
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    g = torch.Generator().manual_seed(2)
    x = torch.randn(4, 6, dtype=torch.float64, generator=g) * 3
    y = torch.rand(4, 6, dtype=torch.float64, generator=g)
    pw = torch.rand(6, dtype=torch.float64, generator=g) * 3
    w = torch.rand(4, 6, dtype=torch.float64, generator=g)
    for red in ("mean", "sum", "none"):
        torch.testing.assert_close(
            ll.binary_cross_entropy_with_logits(x, y, weight=w, pos_weight=pw, reduction=red),
            F.binary_cross_entropy_with_logits(x, y, weight=w, pos_weight=pw, reduction=red),
            rtol=1e-13,
            atol=0,
        )
        p = torch.sigmoid(x)
        torch.testing.assert_close(
            ll.binary_cross_entropy(p, y, weight=w, reduction=red),
            F.binary_cross_entropy(p, y, weight=w, reduction=red),
            rtol=1e-13,
            atol=0,
        )


# q_logits [0, 1] lie in [0, 1] and sum to 1: the probabilities-as-logits guard rightly warns
@pytest.mark.filterwarnings("ignore::logitlab.ProbabilitiesAsLogitsWarning")
def test_kl_js_options_and_limits(backend: Backend) -> None:
    p = backend.asarray([[0.5, 0.5, 0.0], [0.2, 0.3, 0.5]], np.float64)
    q = backend.asarray([[0.25, 0.25, 0.5], [0.2, 0.3, 0.5]], np.float64)
    kl = backend.to_numpy(ll.kl_divergence(p, q))
    assert _ulps(kl[0], R.kl([0.5, 0.5, 0.0], [0.25, 0.25, 0.5])) <= 4 and kl[1] == 0.0
    assert float(backend.to_numpy(ll.kl_divergence(q, p))[0]) == INF  # q > 0 where p = 0
    k2 = backend.to_numpy(ll.kl_divergence(p, q, base=2, reduction="sum"))
    assert float(k2) == 1.0  # row 0: log 2 nats = 1 bit; row 1: 0
    js = backend.to_numpy(ll.js_divergence(p, q, base=2))
    js_rev = backend.to_numpy(ll.js_divergence(q, p, base=2))
    np.testing.assert_allclose(js, js_rev, rtol=1e-15)
    assert float(ll.js_divergence([1.0, 0.0], [0.0, 1.0], base=2)) == 1.0
    xl = backend.asarray([[0.0, 1.0, -INF]], np.float64)
    k = backend.to_numpy(ll.kl_divergence(p_logits=xl, q_logits=backend.asarray([[0.0] * 3])))
    assert np.isfinite(k).all()
    # mixed: probabilities for p, logits for q
    mixed = ll.kl_divergence(backend.asarray([[0.5, 0.5]], np.float64), q_logits=xl[:, :2])
    assert (
        _ulps(backend.to_numpy(mixed)[0], R.kl([0.5, 0.5], [float(v) for v in R.softmax([0, 1])]))
        <= 4
    )


def test_perplexity_is_exp_mean_nll() -> None:
    x = np.array([[0.0, 1.0, 2.0], [3.0, 0.0, 0.0]])
    t = np.array([2, 1])
    ref = math.exp((float(R.nll([0, 1, 2], 2)) + float(R.nll([3, 0, 0], 1))) / 2)
    assert float(ll.perplexity(x, t)) == pytest.approx(ref, rel=1e-14)
    assert float(ll.perplexity(x, np.array([2, -100]))) == pytest.approx(
        math.exp(float(R.nll([0, 1, 2], 2))), rel=1e-14
    )


def test_entropy_base_and_zero_probabilities(backend: Backend) -> None:
    p = backend.asarray([[0.5, 0.5, 0.0], [1.0, 0.0, 0.0]], np.float64)
    np.testing.assert_array_equal(backend.to_numpy(ll.entropy(probs=p, base=2)), [1.0, 0.0])
    x = backend.asarray([[0.0, 0.0, -INF], [0.0, -INF, -INF]], np.float64)
    h = backend.to_numpy(ll.entropy(logits=x, base=2))
    np.testing.assert_allclose(h, [1.0, 0.0], rtol=1e-15)


# Exact zeros of quantities that are >= 0 (issue 13 item 8): entropy(probs=[1, 0]) was -0.0.
_ZERO_CASES = {
    "entropy probs": lambda a, i: ll.entropy(probs=a([[1.0, 0.0], [0.0, 1.0]])),
    "entropy probs 1-D": lambda a, i: ll.entropy(probs=a([0.0, 1.0, 0.0])),
    "entropy probs base<1": lambda a, i: ll.entropy(probs=a([1.0, 0.0]), base=0.5),
    "entropy logits": lambda a, i: ll.entropy(logits=a([[0.0, -INF], [3.0, -INF]]), base=2),
    "kl probs": lambda a, i: ll.kl_divergence(a([1.0, 0.0]), a([1.0, 0.0])),
    "kl -0.0": lambda a, i: ll.kl_divergence(a([-0.0, 1.0]), a([-0.0, 1.0]), reduction="sum"),
    "kl logits": lambda a, i: ll.kl_divergence(p_logits=a([0.0, -INF]), q_logits=a([1.0, -INF])),
    "js probs": lambda a, i: ll.js_divergence(a([1.0, -0.0]), a([1.0, 0.0]), base=0.5),
    "ce class": lambda a, i: ll.cross_entropy(a([[0.0, -INF]]), i([0]), reduction="none"),
    "ce mean": lambda a, i: ll.cross_entropy(a([[0.0, -INF]]), i([0])),
    "ce soft": lambda a, i: ll.cross_entropy(a([[0.0, -INF]]), a([[1.0, -0.0]]), reduction="sum"),
    "ce weight -0": lambda a, i: ll.cross_entropy(
        a([[0.0, 2.0]]), i([1]), weight=a([1.0, -0.0]), reduction="none"
    ),
    "bce probs": lambda a, i: ll.binary_cross_entropy(
        a([1.0, 0.0]), a([1.0, 0.0]), reduction="none"
    ),
    "bce probs mean": lambda a, i: ll.binary_cross_entropy(a([1.0]), a([1.0])),
    "bce weight -0": lambda a, i: ll.binary_cross_entropy(
        a([0.5]), a([1.0]), weight=a([-0.0]), reduction="none"
    ),
    "bce logits": lambda a, i: ll.binary_cross_entropy_with_logits(
        a([INF, -INF]), a([1.0, 0.0]), reduction="none"
    ),
}


@pytest.mark.parametrize("case", sorted(_ZERO_CASES))
@pytest.mark.parametrize("grad", [False, True], ids=["plain", "requires_grad"])
def test_exact_zeros_are_positive_zero(backend: Backend, case: str, grad: bool) -> None:
    if grad and backend.name != "torch":
        pytest.skip("requires_grad is a torch notion")
    if grad and case == "ce weight -0":
        pytest.skip("the fused torch kernel (logitlab.torch.cross_entropy) is another layer")

    def a(v: object) -> object:
        x = backend.asarray(v, np.float64)
        return x.requires_grad_() if grad else x

    def i(v: object) -> object:
        return backend.asarray(v, np.int64)

    out = backend.to_numpy(_ZERO_CASES[case](a, i))
    assert np.all(out == 0), out
    assert not np.any(np.signbit(out)), f"{case}: {out!r} has a negative zero"

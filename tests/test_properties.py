"""Invariants that hold for every input (hypothesis): shift invariance, entropy bounds, Gibbs'
inequality (CE >= H, KL >= 0), gradient rows summing to zero."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import logitlab as ll

EPS = float(np.finfo(np.float64).eps)

logit_rows = arrays(
    np.float64,
    st.tuples(st.integers(1, 4), st.integers(2, 12)),
    elements=st.floats(-50, 50, allow_nan=False, allow_subnormal=False),
)
shifts = st.floats(-1e3, 1e3, allow_nan=False)
_elems = st.floats(-50, 50, allow_nan=False, allow_subnormal=False)
row_pairs = st.tuples(st.integers(1, 4), st.integers(2, 12)).flatmap(
    lambda sh: st.tuples(
        arrays(np.float64, sh, elements=_elems), arrays(np.float64, sh, elements=_elems)
    )
)


def _probs(x: np.ndarray) -> np.ndarray:
    return np.asarray(ll.softmax(x))


@given(logit_rows, shifts)
def test_lse_shift_invariance(x: np.ndarray, c: float) -> None:
    lhs = np.asarray(ll.logsumexp(x + c))
    rhs = np.asarray(ll.logsumexp(x)) + c
    # (x + c) is itself rounded: allow the error of that rounding, |x| + |c| ulps
    tol = 8 * EPS * (np.abs(x).max() + abs(c) + np.abs(rhs))
    assert np.all(np.abs(lhs - rhs) <= tol)


dyadic_rows = arrays(
    np.float64,
    st.tuples(st.integers(1, 4), st.integers(2, 12)),
    elements=st.integers(-3200, 3200).map(lambda k: k / 64),
)


@given(dyadic_rows, st.integers(-30, 30))
def test_softmax_shift_invariance(x: np.ndarray, c: int) -> None:
    y = x + c  # dyadic values: the shift itself is exact
    np.testing.assert_allclose(_probs(y), _probs(x), rtol=1e-13, atol=1e-300)


@given(logit_rows)
def test_softmax_sums_to_one_and_log_softmax_matches(x: np.ndarray) -> None:
    p = _probs(x)
    assert np.all(p >= 0) and np.all(p <= 1)
    np.testing.assert_allclose(p.sum(-1), 1.0, rtol=0, atol=x.shape[-1] * EPS)
    lp = np.asarray(ll.log_softmax(x))
    assert np.all(lp <= 0)
    np.testing.assert_allclose(np.exp(lp), p, rtol=1e-12, atol=1e-300)


@given(logit_rows)
def test_entropy_bounds(x: np.ndarray) -> None:
    h = np.asarray(ll.entropy(logits=x))
    n = x.shape[-1]
    assert np.all(h >= 0)
    assert np.all(h <= math.log(n) * (1 + 4 * EPS))
    hp = np.asarray(ll.entropy(probs=_probs(x)))
    np.testing.assert_allclose(hp, h, rtol=1e-9, atol=1e-12)


@given(row_pairs)
def test_cross_entropy_at_least_entropy(pair: tuple[np.ndarray, np.ndarray]) -> None:
    x, z = pair
    y = _probs(z)
    ce = np.asarray(ll.cross_entropy(x, y, reduction="none"))
    h = np.asarray(ll.entropy(probs=y))
    assert np.all(ce >= h - 8 * EPS * np.maximum(1, ce))
    kl = np.asarray(ll.kl_divergence(y, _probs(x)))
    assert np.all(kl >= 0)
    np.testing.assert_allclose(ce - h, kl, rtol=1e-6, atol=1e-9 * np.max(np.maximum(ce, 1)))


@given(row_pairs)
def test_kl_and_js_nonnegative(pair: tuple[np.ndarray, np.ndarray]) -> None:
    x, z = pair
    assert np.all(np.asarray(ll.kl_divergence(p_logits=x, q_logits=z)) >= 0)
    js = np.asarray(ll.js_divergence(p_logits=x, q_logits=z))
    assert np.all(js >= 0) and np.all(js <= math.log(2) * (1 + 4 * EPS))
    np.testing.assert_allclose(
        js, np.asarray(ll.js_divergence(p_logits=z, q_logits=x)), rtol=1e-12, atol=1e-300
    )


@given(logit_rows, st.floats(0.05, 20))
def test_gradient_rows_sum_to_zero(x: np.ndarray, t: float) -> None:
    torch = pytest.importorskip("torch")
    xt = torch.tensor(x, requires_grad=True)
    target = torch.tensor(np.argmin(x, axis=-1))
    ll.cross_entropy(xt, target, label_smoothing=0.1, temperature=t).backward()
    assert xt.grad is not None
    scale = float(xt.grad.abs().max()) + 1e-300
    assert float(xt.grad.sum(-1).abs().max()) <= 64 * EPS * scale * x.shape[-1]
    xt.grad = None
    (ll.log_softmax(xt) * torch.tensor(x)).sum().backward()
    g = xt.grad
    # d/dx sum_j c_j log_softmax_j = c - p sum(c): rows sum to sum(c) (1 - sum p) = 0
    assert float(g.sum(-1).abs().max()) <= 64 * EPS * float(g.abs().max() + 1) * x.shape[-1]


bce_pairs = st.integers(1, 20).flatmap(
    lambda n: st.tuples(
        arrays(np.float64, n, elements=st.floats(-800, 800)),
        arrays(np.float64, n, elements=st.floats(0, 1)),
    )
)


@given(bce_pairs)
def test_bce_logits_nonnegative_and_matches_probs(pair: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = pair
    lo = np.asarray(ll.binary_cross_entropy_with_logits(x, y, reduction="none"))
    assert np.all(lo >= 0) and np.all(np.isfinite(lo))
    p = 1 / (1 + np.exp(-np.clip(x, -30, 30)))
    inside = np.abs(x) < 5  # where sigmoid(x) in float64 leaves 1 - p accurate
    pr = np.asarray(ll.binary_cross_entropy(p, y, reduction="none"))
    np.testing.assert_allclose(pr[inside], lo[inside], rtol=1e-9, atol=1e-12)

"""Gradients and Hessian-vector products against 60-digit mpmath on the adversarial families.

The references (``tests/reference_grad.py``) are closed forms derived by hand; the first test checks
them against mpmath's own numerical differentiation of the plain definitions, so that the accuracy
tests below do not share a derivation with the implementation. Bound: **4 ulps per component**
(float64 and float32), for the first-order gradient (``backward()``) and for the Hessian-vector
product (``create_graph=True`` and a second ``backward``), on rows where the Hessian-vector product
is well conditioned (see ``docs/accuracy.md`` for every family, including the ill-conditioned ones).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import mpmath
import numpy as np
import pytest
from tests import reference as R
from tests import reference_grad as RG
from tests.reference_grad import torch_orders as _orders

import logitlab as ll

torch = pytest.importorskip("torch")
import logitlab.torch as lt  # noqa: E402

mpf = mpmath.mpf
BOUND = 4.0

# --------------------------------------------------------------------------- the references


def _mp_lse(x: list[Any]) -> Any:
    return mpmath.log(mpmath.fsum(mpmath.exp(v) for v in x))


def _mp_p(x: list[Any], t: Any = 1) -> list[Any]:
    z = _mp_lse([v / t for v in x])
    return [mpmath.exp(v / t - z) for v in x]


def _mp_l(x: list[Any], t: Any = 1) -> list[Any]:
    z = _mp_lse([v / t for v in x])
    return [v / t - z for v in x]


def _mp_kl(lp: list[Any], lq: list[Any]) -> Any:
    return mpmath.fsum(mpmath.exp(a) * (a - b) for a, b in zip(lp, lq, strict=True))


X = [0.3, -1.2, 0.8, 0.1]
XQ = [0.5, 0.2, -0.4, 0.9]
V = [0.5, -0.7, 0.2, 1.1]
C = [0.9, -0.3, 1.4, 0.6]

REFS: list[tuple[str, Callable[[list[Any]], Any], Callable[[], tuple[list[Any], list[Any]]]]] = [
    ("lse", _mp_lse, lambda: RG.lse(X, V)),
    (
        "softmax_dot",
        lambda x: mpmath.fsum(c * p for c, p in zip(C, _mp_p(x, mpf(0.7)), strict=True)),
        lambda: RG.softmax_dot(X, C, V, 0.7),
    ),
    (
        "log_softmax_dot",
        lambda x: mpmath.fsum(c * v for c, v in zip(C, _mp_l(x, mpf(0.7)), strict=True)),
        lambda: RG.log_softmax_dot(X, C, V, 0.7),
    ),
    (
        "cross_entropy",
        lambda x: (
            ((1 - mpf(0.1)) * -_mp_l(x, mpf(1.3))[2])
            + mpf(0.1) / 4 * mpmath.fsum(-v for v in _mp_l(x, mpf(1.3)))
        ),
        lambda: RG.cross_entropy(X, 2, V, 0.1, 1.3)[:2],
    ),
    (
        "entropy_logits",
        lambda x: -mpmath.fsum(p * v for p, v in zip(_mp_p(x), _mp_l(x), strict=True)),
        lambda: RG.entropy_logits(X, V),
    ),
    (
        "kl_logits_p",
        lambda x: _mp_kl(_mp_l(x), _mp_l([mpf(v) for v in XQ])),
        lambda: RG.kl_logits_p(X, XQ, V),
    ),
    (
        "kl_logits_q",
        lambda x: _mp_kl(_mp_l([mpf(v) for v in XQ]), _mp_l(x)),
        lambda: RG.kl_logits_q(XQ, X, V),
    ),
]


@pytest.mark.parametrize(("name", "f", "ref"), REFS, ids=[r[0] for r in REFS])
def test_reference_matches_mpmath_differentiation(
    name: str, f: Callable[[list[Any]], Any], ref: Callable[[], tuple[list[Any], list[Any]]]
) -> None:
    xm, vm = [mpf(a) for a in X], [mpf(a) for a in V]

    def at(s: Any, t: Any, j: int) -> Any:
        return f([xm[i] + (s if i == j else 0) + t * vm[i] for i in range(len(xm))])

    grad, hv = ref()
    for j in range(len(X)):
        g_num = mpmath.diff(lambda s, j=j: at(s, 0, j), 0)
        h_num = mpmath.diff(lambda s, t, j=j: at(s, t, j), (0, 0), (1, 1))
        assert abs(g_num - grad[j]) <= mpf(10) ** -40 * (1 + abs(g_num)), (name, j)
        assert abs(h_num - hv[j]) <= mpf(10) ** -40 * (1 + abs(h_num)), (name, j)


def test_bce_reference_matches_mpmath_differentiation() -> None:
    for x, y, w in ((3.0, 0.3, 2.0), (-40.0, 0.0, 1.0), (0.0, 0.5, 0.7)):
        xm, ym, wm = mpf(x), mpf(y), mpf(w)

        def f(z: Any, ym: Any = ym, wm: Any = wm) -> Any:
            return wm * ym * mpmath.log1p(mpmath.exp(-z)) + (1 - ym) * mpmath.log1p(mpmath.exp(z))

        d1, d2 = RG.bce_logits(x, y, w)
        assert abs(mpmath.diff(f, xm) - d1) <= mpf(10) ** -40
        assert abs(mpmath.diff(f, xm, 2) - d2) <= mpf(10) ** -40


# --------------------------------------------------------------------------- logitlab vs mpmath

NEG = float("-inf")
FAMILIES = {
    "dominated-40": [0.0, -40.0],
    "dominated-20": [0.0, -20.0, -25.0],
    "near-deterministic": [0.0, -30.0, -30.0, -30.0],
    "near-deterministic-shifted": [0.1, -29.9, -29.9, -29.9],
    "huge+-1e4": [1e4, 1e4 - 1.0, -1e4],
    "huge+-1e30": [1e30, -1e30, 0.0],
    "masked": [NEG, 0.5, 1.0, NEG],
}
DTYPES = {"f64": torch.float64, "f32": torch.float32}


def _rounded(v: list[float], dt: Any) -> list[float]:
    return [float(a) for a in torch.tensor(v, dtype=torch.float64).to(dt)]


def _ulps(got: list[float], exact: list[Any], dt: Any) -> float:
    npdt = np.float64 if dt == torch.float64 else np.float32
    return max(R.ulp_error(c, e, npdt) for c, e in zip(got, exact, strict=True))


def _argmax(r: list[float]) -> int:
    return int(np.argmax(r))


def _argmin_finite(r: list[float]) -> int:
    return int(np.argmin(np.where(np.isfinite(r), r, np.inf)))


Fn = Callable[[list[float]], Callable[[Any], Any]]
Ref = Callable[[list[float], list[float]], tuple[Any, ...]]

FUNCS: dict[str, tuple[Fn, Ref]] = {
    "logsumexp": (lambda r: ll.logsumexp, RG.lse),
    "entropy": (lambda r: lambda x: ll.entropy(logits=x), RG.entropy_logits),
    # 3-D input: the core Function (2-D class targets take the fused path, tested below)
    "cross_entropy-confident": (
        lambda r: (
            lambda x: ll.cross_entropy(x[None, :, None], torch.tensor([[_argmax(r)]]), axis=1)
        ),
        lambda r, v: RG.cross_entropy(r, _argmax(r), v),
    ),
    "cross_entropy-smooth-T2": (
        lambda r: (
            lambda x: ll.cross_entropy(
                x[None, :, None],
                torch.tensor([[_argmin_finite(r)]]),
                axis=1,
                label_smoothing=0.1,
                temperature=2.0,
            )
        ),
        lambda r, v: RG.cross_entropy(r, _argmin_finite(r), v, 0.1, 2.0),
    ),
}


@pytest.mark.parametrize("dt", DTYPES.values(), ids=list(DTYPES))
@pytest.mark.parametrize("family", list(FAMILIES))
@pytest.mark.parametrize("fname", list(FUNCS))
def test_gradient_and_hvp_within_4_ulps(fname: str, family: str, dt: Any) -> None:
    fn, ref = FUNCS[fname]
    r = _rounded(FAMILIES[family], dt)
    v = _rounded([0.7, -1.3, 0.4, 0.9][: len(r)], dt)
    g1, hv = _orders(fn(r), r, v, dt)
    eg, eh = ref(r, v)[:2]
    assert _ulps(g1, eg, dt) <= BOUND
    assert _ulps(hv, eh, dt) <= BOUND


@pytest.mark.parametrize("family", list(FAMILIES))
def test_fused_cross_entropy_hvp_within_4_ulps(family: str) -> None:
    # under create_graph the fused loss takes the core's closed form: same accuracy
    r = FAMILIES[family]
    v = [0.7, -1.3, 0.4, 0.9][: len(r)]
    k = _argmax(r)
    x = torch.tensor([r], dtype=torch.float64, requires_grad=True)
    (g,) = torch.autograd.grad(lt.cross_entropy(x, torch.tensor([k])), x, create_graph=True)
    (hv,) = torch.autograd.grad((g * torch.tensor([v], dtype=torch.float64)).sum(), x)
    assert _ulps(hv[0].tolist(), RG.cross_entropy(r, k, v)[1], torch.float64) <= BOUND


@pytest.mark.parametrize("dt", DTYPES.values(), ids=list(DTYPES))
@pytest.mark.parametrize("delta", [1e-6, 1e-3])
def test_kl_gradient_near_p_equals_q(delta: float, dt: Any) -> None:
    # d KL / d x_q = q - p: two rounded probabilities that agree to 6 digits lose 6 digits in
    # their difference (1e7 ulps before); -q expm1(u) with the accurate u does not
    base = list(3 * np.random.default_rng(2).standard_normal(8))
    pert = np.random.default_rng(3).standard_normal(8)
    xp = _rounded(base, dt)
    xq = _rounded([b + delta * e for b, e in zip(base, pert, strict=True)], dt)
    v = _rounded(list(np.random.default_rng(4).standard_normal(8)), dt)
    pt = torch.tensor(xp, dtype=dt)
    g1, hv = _orders(lambda x: ll.kl_divergence(p_logits=pt, q_logits=x), xq, v, dt)
    eg, eh = RG.kl_logits_q(xp, xq, v)
    if dt == torch.float64 or delta == 1e-6:  # float32, 1e-3: 6 ulps, c sums mixed signs
        assert _ulps(g1, eg, dt) <= BOUND
    assert _ulps(hv, eh, dt) <= BOUND
    g1, hv = _orders(lambda x: ll.kl_divergence(p_logits=x, q_logits=torch.tensor(xq, dtype=dt)),
                     xp, v, dt)  # fmt: skip
    eg, eh = RG.kl_logits_p(xp, xq, v)
    assert _ulps(g1, eg, dt) <= BOUND and _ulps(hv, eh, dt) <= BOUND


@pytest.mark.parametrize("dt", DTYPES.values(), ids=list(DTYPES))
def test_bce_with_logits_derivatives_in_both_tails(dt: Any) -> None:
    # the second derivative sigmoid(x) sigmoid(-x) = 4.2e-18 at x = 40: torch's y (1 - y) gives 0
    xs = _rounded([-40.0, 40.0, -1e4, 3.0, -750.0, 0.0, 17.0], dt)
    ys = _rounded([0.0, 1.0, 1.0, 0.3, 0.0, 0.5, 0.2], dt)
    yt = torch.tensor(ys, dtype=dt)
    pw = 1.5
    ones = [1.0] * len(xs)
    g1, hv = _orders(
        lambda x: ll.binary_cross_entropy_with_logits(
            x, yt, pos_weight=torch.tensor(pw, dtype=dt), reduction="sum"
        ),
        xs,
        ones,
        dt,
    )
    ex = [RG.bce_logits(a, b, pw) for a, b in zip(xs, ys, strict=True)]
    assert _ulps(g1, [e[0] for e in ex], dt) <= BOUND
    assert _ulps(hv, [e[1] for e in ex], dt) <= BOUND

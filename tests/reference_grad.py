"""High-precision gradients and Hessian-vector products (mpmath, 60 digits) of the core functions.

Each function takes the rounded inputs (floats as the tested dtype holds them) and returns the
exact derivatives of the exact function at those inputs, from closed forms derived by hand below
(and checked against mpmath's own numerical differentiation in ``tests/test_grad_accuracy.py``).
Notation for one row: ``p = softmax(x / T)``, ``l = log p``, ``J = diag(p) - p p^T`` (the
Jacobian of ``p`` w.r.t. ``x / T``). Masked entries (``-inf``) are constants: their derivatives
are 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import mpmath
from tests import reference as R

mpf = mpmath.mpf
Vec = list[mpmath.mpf]


def _mm(v: object) -> mpmath.mpf:
    return v if isinstance(v, mpmath.mpf) else R._m(v)  # type: ignore[arg-type]


def _p_l(x: Sequence[float], t: float = 1.0) -> tuple[Vec, Vec]:
    ls = R.log_softmax(x, t)
    return [mpmath.exp(v) if v != -R.INF else mpf(0) for v in ls], ls


def _jv(p: Vec, v: Sequence[float]) -> Vec:
    """``J v = p * (v - p . v)`` for the active entries."""
    pv = mpmath.fsum(pi * R._m(vi) for pi, vi in zip(p, v, strict=True) if pi != 0)
    return [pi * (R._m(vi) - pv) if pi != 0 else mpf(0) for pi, vi in zip(p, v, strict=True)]


def lse(x: Sequence[float], v: Sequence[float]) -> tuple[Vec, Vec]:
    """(gradient, Hessian @ v) of ``lse(x)``: ``p`` and ``J v``."""
    p, _ = _p_l(x)
    return p, _jv(p, v)


def softmax_dot(x: Sequence[float], c: Sequence[float], v: Sequence[float], t: float = 1.0):  # type: ignore[no-untyped-def]
    """``f = sum_i c_i p_i``: gradient ``p (c - cbar) / T``, Hessian
    ``[J_jk (c_j - cbar) - p_j p_k (c_k - cbar)] / T^2`` (``cbar = c . p``)."""
    p, _ = _p_l(x, t)
    tm = R._m(t)
    cm = [R._m(ci) for ci in c]
    cbar = mpmath.fsum(pi * ci for pi, ci in zip(p, cm, strict=True))
    d = [ci - cbar for ci in cm]
    grad = [pi * di / tm for pi, di in zip(p, d, strict=True)]
    vm = [R._m(vi) for vi in v]
    jv = _jv(p, v)  # sum_k J_jk v_k
    pdv = mpmath.fsum(pk * dk * vk for pk, dk, vk in zip(p, d, vm, strict=True))
    hv = [(jv[j] * d[j] - p[j] * pdv) / tm**2 for j in range(len(p))]
    return grad, hv


def log_softmax_dot(x: Sequence[float], c: Sequence[float], v: Sequence[float], t: float = 1.0):  # type: ignore[no-untyped-def]
    """``f = sum_i c_i l_i`` over the active entries: gradient ``(c - p sum c) / T``, Hessian
    ``-(sum c) J / T^2``."""
    p, _ = _p_l(x, t)
    tm = R._m(t)
    act = [pi != 0 for pi in p]
    cm = [_mm(ci) if a else mpf(0) for ci, a in zip(c, act, strict=True)]
    sc = mpmath.fsum(cm)
    grad = [(ci - pi * sc) / tm if a else mpf(0) for ci, pi, a in zip(cm, p, act, strict=True)]
    hv = [-sc * u / tm**2 for u in _jv(p, v)]
    return grad, hv


def cross_entropy(
    x: Sequence[float], target: int, v: Sequence[float], eps: float = 0.0, t: float = 1.0
):  # type: ignore[no-untyped-def]
    """One row, class target, smoothing ``eps`` over the finite classes, temperature ``t``:
    ``loss = sum_c a_c (lse(x/T) - x_c/T)``; gradient ``(p sum a - a) / T``, Hessian
    ``(sum a) J / T^2``."""
    fin = [i for i, xi in enumerate(x) if xi != -R.INF]
    e = R._m(eps)
    a = [mpf(0)] * len(x)
    for i in fin:
        a[i] += e / len(fin)
    a[target] += 1 - e
    sa = mpmath.fsum(a)
    g, hv = log_softmax_dot(x, [-ai for ai in a], v, t)  # loss = -sum a_c l_c
    return g, hv, sa


def entropy_logits(x: Sequence[float], v: Sequence[float]) -> tuple[Vec, Vec]:
    """``H = -sum p l``: gradient ``-p (l + H)``; Hessian
    ``H_jk = -p_j d_jk (l_j + H + 1) + p_j p_k (l_j + l_k + 2 H + 1)``."""
    p, ls = _p_l(x)
    act = [pi != 0 for pi in p]
    h = -mpmath.fsum(pi * li for pi, li, a in zip(p, ls, act, strict=True) if a)
    lm = [li if a else mpf(0) for li, a in zip(ls, act, strict=True)]
    grad = [-pi * (li + h) for pi, li in zip(p, lm, strict=True)]
    vm = [R._m(vi) if a else mpf(0) for vi, a in zip(v, act, strict=True)]
    s1 = mpmath.fsum(pk * vk for pk, vk in zip(p, vm, strict=True))
    s2 = mpmath.fsum(pk * lk * vk for pk, lk, vk in zip(p, lm, vm, strict=True))
    hv = [
        -p[j] * (lm[j] + h + 1) * vm[j] + p[j] * ((lm[j] + 2 * h + 1) * s1 + s2)
        for j in range(len(p))
    ]
    return grad, hv


def kl_logits_p(xp: Sequence[float], xq: Sequence[float], v: Sequence[float]) -> tuple[Vec, Vec]:
    """``KL(p || q)`` w.r.t. the logits of ``p`` (``q`` fixed): gradient ``p (u - KL)``
    (``u = l_p - l_q``); Hessian ``p_j d_jk (u_j - KL + 1) - p_j p_k (u_j + u_k - 2 KL + 1)``."""
    p, lp = _p_l(xp)
    _, lq = _p_l(xq)
    act = [pi != 0 for pi in p]
    u = [a_ - b_ if a else mpf(0) for a_, b_, a in zip(lp, lq, act, strict=True)]
    kl = mpmath.fsum(pi * ui for pi, ui in zip(p, u, strict=True))
    grad = [pi * (ui - kl) for pi, ui in zip(p, u, strict=True)]
    vm = [R._m(vi) if a else mpf(0) for vi, a in zip(v, act, strict=True)]
    s1 = mpmath.fsum(pk * vk for pk, vk in zip(p, vm, strict=True))
    s2 = mpmath.fsum(pk * uk * vk for pk, uk, vk in zip(p, u, vm, strict=True))
    hv = [
        p[j] * (u[j] - kl + 1) * vm[j] - p[j] * ((u[j] - 2 * kl + 1) * s1 + s2)
        for j in range(len(p))
    ]
    return grad, hv


def kl_logits_q(xp: Sequence[float], xq: Sequence[float], v: Sequence[float]) -> tuple[Vec, Vec]:
    """``KL(p || q)`` w.r.t. the logits of ``q`` (``p`` fixed): gradient ``q - p``, Hessian
    ``J_q``."""
    p, _ = _p_l(xp)
    q, _ = _p_l(xq)
    return [qi - pi for qi, pi in zip(q, p, strict=True)], _jv(q, v)


def bce_logits(x: float, y: float, pos_weight: float = 1.0) -> tuple[mpmath.mpf, mpmath.mpf]:
    """(d/dx, d2/dx2) of ``w+ y softplus(-x) + (1 - y) softplus(x)``:
    ``(1 - y) s(x) - w+ y s(-x)`` and ``((1 - y) + w+ y) s(x) s(-x)``."""
    xm, ym, wm = R._m(x), R._m(y), R._m(pos_weight)
    s = 1 / (1 + mpmath.exp(-xm))
    sm = 1 / (1 + mpmath.exp(xm))
    return (1 - ym) * s - wm * ym * sm, ((1 - ym) + wm * ym) * s * sm


def torch_orders(f: Any, x0: Sequence[float], v: Sequence[float], dt: Any) -> tuple[Any, Any]:
    """The quantities under test, as torch computes them: the first-order gradient of the scalar
    ``f`` at ``x0`` (a plain ``backward``) and the Hessian-vector product ``H v`` (through
    ``create_graph=True``), as lists; compare them with the mpmath functions above."""
    import torch

    x = torch.tensor(x0, dtype=dt, requires_grad=True)
    (g1,) = torch.autograd.grad(f(x), x)
    x = torch.tensor(x0, dtype=dt, requires_grad=True)
    (g,) = torch.autograd.grad(f(x), x, create_graph=True)
    (hv,) = torch.autograd.grad((g * torch.tensor(v, dtype=dt)).sum(), x)
    return g1.tolist(), hv.tolist()

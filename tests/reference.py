"""High-precision references (mpmath, 60 significant digits) and ulp error measurement.

Every reference takes the *rounded input* exactly as the tested dtype holds it (a float32 input is
first rounded to float32, then evaluated exactly), so that the measured error is the error of the
computation alone.
"""

from __future__ import annotations

from collections.abc import Sequence

import mpmath
import numpy as np

mpmath.mp.dps = 60
mpf = mpmath.mpf
INF = mpmath.inf


def _m(v: float) -> mpmath.mpf:
    return mpf(float(v)) if np.isfinite(v) else (INF if v > 0 else -INF)


def _tail(vals: list[mpmath.mpf]) -> mpmath.mpf:
    """``log1p(sum of exp(v - a) over all but one maximal entry)``: exact even when that sum is
    below 1e-60 (``a + log(...)`` at 60 digits would round it away when ``a != 0``)."""
    a = max(vals)
    k = vals.index(a)
    return mpmath.log1p(
        mpmath.fsum(mpmath.exp(v - a) for i, v in enumerate(vals) if i != k and v != -INF)
    )


def lse(x: Sequence[float], temperature: float = 1.0) -> mpmath.mpf:
    """``log sum exp(x / T)`` of the rounded inputs (T exact too)."""
    vals = [_m(v) / _m(temperature) for v in x]
    if all(v == -INF for v in vals):
        return -INF
    if any(v == INF for v in vals):
        return INF
    return max(vals) + _tail(vals)


def lse_b(x: Sequence[float], b: Sequence[float]) -> tuple[mpmath.mpf, int]:
    """``(log |sum b exp(x)|, sign)``."""
    tot = mpmath.fsum(_m(bi) * mpmath.exp(_m(v)) for v, bi in zip(x, b, strict=True) if bi != 0)
    if tot == 0:
        return -INF, 0
    return mpmath.log(abs(tot)), (1 if tot > 0 else -1)


def log_softmax(x: Sequence[float], temperature: float = 1.0) -> list[mpmath.mpf]:
    """``-(a - x_i) / T - log1p(s)``: the dominant entry keeps its tiny value at any ``a``."""
    vals = [_m(v) / _m(temperature) for v in x]
    a = max(vals)
    if a == -INF:
        return [-mpmath.log(len(vals))] * len(vals)
    t = _tail(vals)
    return [-(a - v) - t if v != -INF else -INF for v in vals]


def softmax(x: Sequence[float], temperature: float = 1.0) -> list[mpmath.mpf]:
    return [mpmath.exp(v) for v in log_softmax(x, temperature)]


def entropy_logits(x: Sequence[float]) -> mpmath.mpf:
    ls = log_softmax(x)
    return -mpmath.fsum(mpmath.exp(v) * v for v in ls if v != -INF)


def entropy_probs(p: Sequence[float]) -> mpmath.mpf:
    return -mpmath.fsum(_m(v) * mpmath.log(_m(v)) for v in p if v > 0)


def nll(x: Sequence[float], t: int, temperature: float = 1.0) -> mpmath.mpf:
    return -log_softmax(x, temperature)[t]


def ce_weighted(x: Sequence[float], t: int, eps: float, weight: Sequence[float]) -> mpmath.mpf:
    """Per-row CE with class weights and label smoothing over the finite classes (torch's
    formula when no class is masked): ``(1 - eps) w_t nll_t + eps / |F| sum_{c in F} w_c nll_c``.
    """
    ls = log_softmax(x)
    fin = [i for i, v in enumerate(x) if np.isfinite(v)]
    e = _m(eps)
    tail = mpmath.fsum(-_m(weight[i]) * ls[i] for i in fin) if eps else mpf(0)
    return (1 - e) * -_m(weight[t]) * ls[t] + e / len(fin) * tail


def ce_smooth(x: Sequence[float], t: int, eps: float) -> mpmath.mpf:
    """Label smoothing spread over the classes with a finite logit."""
    ls = log_softmax(x)
    fin = [i for i, v in enumerate(x) if np.isfinite(v)]
    e = _m(eps)
    return (1 - e) * -ls[t] + e / len(fin) * mpmath.fsum(-ls[i] for i in fin)


def ce_soft(x: Sequence[float], y: Sequence[float]) -> mpmath.mpf:
    ls = log_softmax(x)
    return mpmath.fsum(-_m(yi) * li for yi, li in zip(y, ls, strict=True) if yi != 0)


def bce_probs(p: float, y: float) -> mpmath.mpf:
    pm, ym = _m(p), _m(y)
    out = mpf(0)
    if ym != 0:
        out -= ym * mpmath.log(pm)
    if ym != 1:
        out -= (1 - ym) * mpmath.log1p(-pm)
    return out


def softplus(x: float) -> mpmath.mpf:
    xm = _m(x)
    if xm == INF:
        return INF
    if xm == -INF:
        return mpf(0)
    return mpmath.log1p(mpmath.exp(xm))


def bce_logits(x: float, y: float, pos_weight: float = 1.0) -> mpmath.mpf:
    ym = _m(y)
    out = mpf(0)
    if ym != 0:
        out += _m(pos_weight) * ym * softplus(-x)
    if ym != 1:
        out += (1 - ym) * softplus(x)
    return out


def xlogy(x: float, y: float) -> mpmath.mpf:
    return mpf(0) if x == 0 else _m(x) * mpmath.log(_m(y))


def xlog1py(x: float, y: float) -> mpmath.mpf:
    return mpf(0) if x == 0 else _m(x) * mpmath.log1p(_m(y))


def log1mexp(x: float) -> mpmath.mpf:
    return mpmath.log(1 - mpmath.exp(_m(x)))


def kl(p: Sequence[float], q: Sequence[float]) -> mpmath.mpf:
    return mpmath.fsum(
        _m(pi) * mpmath.log(_m(pi) / _m(qi)) if pi > 0 else mpf(0)
        for pi, qi in zip(p, q, strict=True)
    )


def kl_logits(xp: Sequence[float], xq: Sequence[float]) -> mpmath.mpf:
    lp, lq = log_softmax(xp), log_softmax(xq)
    return mpmath.fsum(mpmath.exp(a) * (a - b) for a, b in zip(lp, lq, strict=True) if a != -INF)


def js_logits(xp: Sequence[float], xq: Sequence[float]) -> mpmath.mpf:
    p, q = softmax(xp), softmax(xq)
    m = [(a + b) / 2 for a, b in zip(p, q, strict=True)]
    t1 = mpmath.fsum(a * mpmath.log(a / mi) for a, mi in zip(p, m, strict=True) if a > 0)
    t2 = mpmath.fsum(b * mpmath.log(b / mi) for b, mi in zip(q, m, strict=True) if b > 0)
    return (t1 + t2) / 2


def js(p: Sequence[float], q: Sequence[float]) -> mpmath.mpf:
    m = [(_m(a) + _m(b)) / 2 for a, b in zip(p, q, strict=True)]
    t1 = mpmath.fsum(_m(a) * mpmath.log(_m(a) / mi) for a, mi in zip(p, m, strict=True) if a > 0)
    t2 = mpmath.fsum(_m(b) * mpmath.log(_m(b) / mi) for b, mi in zip(q, m, strict=True) if b > 0)
    return (t1 + t2) / 2


def ulp_error(computed: float, exact: mpmath.mpf, dtype: type) -> float:
    """``|computed - exact|`` in units of the last place of ``exact`` rounded to ``dtype``.

    The ulp of a value ``v`` is the gap between ``|v|`` rounded to ``dtype`` and the next larger
    representable number; below the normal range it is the subnormal spacing, so underflow to 0
    costs ``|exact| / smallest_subnormal`` ulps rather than a division by zero. Exact infinities
    must be matched exactly (0 or inf ulps).
    """
    if exact in (INF, -INF):
        return 0.0 if computed == float(exact) else float("inf")
    if np.isnan(computed):
        return float("inf")
    ex = dtype(float(exact))
    ulp = float(np.spacing(np.abs(ex).astype(dtype)))
    tiny = float(np.finfo(dtype).smallest_subnormal)
    ulp = max(ulp, tiny)
    return float(abs(mpf(float(computed)) - exact) / mpf(ulp))

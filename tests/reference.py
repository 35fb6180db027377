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


# --------------------------------------------------------------------------- fused losses
# Loss AND gradient references for logitlab.torch's fused paths (linear and in-memory
# cross-entropy, linear KL). Logits given as mpf values are used as they are (for the linear
# losses, z = h W^T + b computed exactly by `linear_logits`); floats are taken exactly.


def _mpv(v: float | mpmath.mpf) -> mpmath.mpf:
    return v if isinstance(v, mpmath.mpf) else _m(float(v))


def _lsm(vals: list[mpmath.mpf]) -> tuple[mpmath.mpf, list[mpmath.mpf], list[mpmath.mpf]]:
    """``(lse, log_softmax, softmax)`` of exact values (``-inf`` allowed; one finite at least),
    one ``exp`` per entry: ``p_i = e^{v_i - a} / (1 + s)``, ``log p_i = -(a - v_i) - log1p(s)``
    (``s`` the sum over all but one maximal entry, as in ``_tail``)."""
    a = max(vals)
    k = vals.index(a)
    e = [mpmath.exp(v - a) if v != -INF else mpf(0) for v in vals]
    s = mpmath.fsum(ei for i, ei in enumerate(e) if i != k)
    t = mpmath.log1p(s)
    ls = [-(a - v) - t if v != -INF else -INF for v in vals]
    return a + t, ls, [ei / (1 + s) for ei in e]


def linear_logits(
    h: Sequence[Sequence[float]], w: Sequence[Sequence[float]], b: Sequence[float] | None = None
) -> list[list[mpmath.mpf]]:
    """``z = h W^T + b`` of the rounded inputs, exactly (products of two doubles have 106 bits,
    far inside 60 digits)."""
    wm = [[_m(v) for v in row] for row in w]
    bm = [mpf(0)] * len(wm) if b is None else [_m(v) for v in b]
    out = []
    for hr in h:
        hm = [_m(v) for v in hr]
        out.append([mpmath.fdot(hm, wr) + bc for wr, bc in zip(wm, bm, strict=True)])
    return out


def ce_row(
    x: Sequence[float | mpmath.mpf],
    t: int,
    *,
    eps: float = 0.0,
    weight: Sequence[float] | None = None,
    zloss: float = 0.0,
    softcap: float | None = None,
    temperature: float = 1.0,
) -> dict[str, object]:
    """Everything the fused cross-entropy computes for one row, exactly.

    ``y = softcap(x) / T`` (``softcap(x) = c tanh(x / c)``), ``F`` the classes with finite ``y``,
    ``alpha_c = (1 - eps) w_t [c = t] + eps / |F| w_c [c in F]``, ``A = sum alpha + 2 zloss lse``:

    * ``loss = (1 - eps) w_t (lse - y_t) + eps / |F| sum_F w_c (lse - y_c) + zloss lse^2``
    * ``grad_i = d loss / d x_i = (A p_i - alpha_i) dy_i/dx_i`` (0 on masked classes)
    * ``scale_i = (A p_i + alpha_i) |dy_i/dx_i|``: the size of the two terms of that difference,
      against which a computed gradient entry's error is measured (a confident target entry,
      ``p_t - 1 ~ -1e-13``, is the difference of two numbers near 1 in every fused path).

    Returns a dict with ``loss``, ``lse``, ``entropy`` (of softmax(y)), ``grad``, ``scale``.
    """
    xm = [_mpv(v) for v in x]
    it = 1 / _m(temperature)
    if softcap is None:
        y = [v * it for v in xm]
        dy = [it] * len(xm)
    else:
        c = _m(softcap)
        th = [mpmath.tanh(v / c) if v != -INF else mpf(-1) for v in xm]
        y = [c * tv * it for tv in th]
        # sech^2, not 1 - tanh^2: at |x / c| > 70 the latter is 0 even at 60 digits
        dy = [mpmath.sech(v / c) ** 2 * it if v != -INF else mpf(0) for v in xm]
    lse_v, ls, p = _lsm(y)
    fin = [i for i, v in enumerate(y) if v != -INF]
    wv = [mpf(1)] * len(y) if weight is None else [_m(v) for v in weight]
    e = _m(eps)
    alpha = [mpf(0)] * len(y)
    alpha[t] += (1 - e) * wv[t]
    if eps:
        for i in fin:
            alpha[i] += e / len(fin) * wv[i]
    loss = (1 - e) * wv[t] * -ls[t]
    if eps:
        loss += e / len(fin) * mpmath.fsum(-wv[i] * ls[i] for i in fin)
    loss += _m(zloss) * lse_v * lse_v
    a_sum = mpmath.fsum(alpha) + 2 * _m(zloss) * lse_v
    fin_set = set(fin)
    grad = [(a_sum * p[i] - alpha[i]) * dy[i] if i in fin_set else mpf(0) for i in range(len(y))]
    scale = [(abs(a_sum) * p[i] + alpha[i]) * abs(dy[i]) for i in range(len(y))]
    ent = -mpmath.fsum(pi * li for pi, li in zip(p, ls, strict=True) if pi != 0)
    return {"loss": loss, "lse": lse_v, "entropy": ent, "grad": grad, "scale": scale}


def kl_row(
    zs: Sequence[float | mpmath.mpf],
    zt: Sequence[float | mpmath.mpf],
    *,
    temperature: float = 1.0,
    reverse: bool = False,
) -> dict[str, object]:
    """KL of student ``q = softmax(zs / T)`` and teacher ``p = softmax(zt / T)`` and its gradient
    with respect to ``zs``: forward ``KL(p || q)``, gradient ``(q - p) / T``; reverse
    ``KL(q || p)``, gradient ``q (log q - log p - KL) / T``. Terms of zero weight are 0;
    ``KL = inf`` where the weighted distribution has mass on a class the other lacks.

    ``scale_i = |g_i| + q_i m_i / T`` (``+ q_i KL / T`` reverse) measures a gradient entry's
    error: ``m_i`` is what a computed ``u_i = log(p_i / q_i)`` may be off by in ulps. For a pair
    with the same support and ``|delta| <= 1`` (``delta = (zt - zs) / T``, the p ~ q regime)
    that is ``|delta_i| + sum_j q_j |delta_j|`` (``u = delta - log1p(sum q expm1(delta))``, no
    ``log p`` in it); otherwise ``u = log p - log q`` and ``m_i = |log p_i| + |log q_i|``.

    Returns a dict with ``kl``, ``grad`` and ``scale``.
    """
    it = 1 / _m(temperature)
    s_vals = [_mpv(v) for v in zs]
    t_vals = [_mpv(v) for v in zt]
    _, lq, q = _lsm([v * it for v in s_vals])
    _, lp, p = _lsm([v * it for v in t_vals])
    if not reverse:
        kl_v = mpmath.fsum(pi * (a - b) for pi, a, b in zip(p, lp, lq, strict=True) if pi != 0)
        grad = [(qi - pi) * it for qi, pi in zip(q, p, strict=True)]
    else:
        kl_v = mpmath.fsum(qi * (a - b) for qi, a, b in zip(q, lq, lp, strict=True) if qi != 0)
        grad = [
            qi * (a - b - kl_v) * it if qi != 0 else mpf(0)
            for qi, a, b in zip(q, lq, lp, strict=True)
        ]
    both = [a != -INF and b != -INF for a, b in zip(s_vals, t_vals, strict=True)]
    delta = [
        abs(b - a) * it if ok else mpf(0) for a, b, ok in zip(s_vals, t_vals, both, strict=True)
    ]
    same = all(ok or (a == b == -INF) for a, b, ok in zip(s_vals, t_vals, both, strict=True))
    if same and max(delta) <= 1:
        mean = mpmath.fsum(qi * di for qi, di in zip(q, delta, strict=True))
        m = [di + mean for di in delta]
    else:
        m = [
            (abs(a) if a != -INF else 0) + (abs(b) if b != -INF else 0)
            for a, b in zip(lp, lq, strict=True)
        ]
    extra = kl_v if reverse and kl_v != INF else mpf(0)
    scale = [
        abs(g) + qi * (mi + extra) * it if g not in (INF, -INF) else mpf(0)
        for g, qi, mi in zip(grad, q, m, strict=True)
    ]
    return {"kl": kl_v, "grad": grad, "scale": scale}


def matmul(a: Sequence[Sequence[object]], b: Sequence[Sequence[object]]) -> list[list[mpmath.mpf]]:
    """``a @ b`` exactly (entries floats or mpf)."""
    am = [[_mpv(v) for v in row] for row in a]  # type: ignore[arg-type]
    bt = [[_mpv(b[i][j]) for i in range(len(b))] for j in range(len(b[0]))]  # type: ignore[arg-type]
    return [[mpmath.fdot(r, c) for c in bt] for r in am]


def rel_error(computed: float, exact: mpmath.mpf) -> float:
    """``|computed - exact| / |exact|`` (0 when both are 0; inf for a wrong zero, NaN or inf)."""
    if exact in (INF, -INF):
        return 0.0 if computed == float(exact) else float("inf")
    if not np.isfinite(computed):
        return float("inf")
    err = abs(mpf(float(computed)) - exact)
    if exact == 0:
        return 0.0 if err == 0 else float("inf")
    return float(err / abs(exact))


def one_hot_head(
    rows: Sequence[Sequence[float]], dtype: type
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """``(h, W, b)`` with ``h W^T + b`` equal to ``rows`` *exactly* in any summation order: ``h``
    is the ``N x N`` identity and ``W[c, n] = rows[n][c]`` (every dot product is one product by 1
    plus zeros). The gradient ``G`` with respect to the logits then comes back exactly as
    ``grad_W = G^T``, so a fused linear loss can be checked entry by entry against ``ce_row`` /
    ``kl_row`` on adversarial rows that no rounded GEMM would reproduce. A ``-inf`` logit (a
    masked class, the same columns in every row) comes from ``b = -inf`` with ``W = 0`` there
    (``0 * -inf`` in the GEMM would be NaN); ``b`` is None when nothing is masked."""
    z = np.asarray(rows, dtype=dtype)
    masked = np.isneginf(z)
    if not (masked == masked[:1]).all():
        raise ValueError("one_hot_head: -inf must be in the same columns of every row")
    w = np.ascontiguousarray(np.where(masked, 0, z).T)
    b = np.where(masked[0], -np.inf, 0).astype(dtype) if masked.any() else None
    return np.eye(z.shape[0], dtype=dtype), w, b


def ulps_of(computed: float, exact: mpmath.mpf, scale: mpmath.mpf, dtype: type) -> float:
    """``|computed - exact|`` in ulps of ``scale`` (``eps * |scale|``), with an absolute floor of
    the smallest *normal* number of ``dtype``: a gradient entry that underflows (flushed to 0,
    or subnormal) costs nothing. Exact infinities, and exact values beyond the largest finite
    number of ``dtype`` (they round to infinity), must be matched exactly."""
    fi = np.finfo(dtype)
    if exact in (INF, -INF) or abs(exact) > float(fi.max):
        return 0.0 if computed == float(mpmath.sign(exact) * INF) else float("inf")
    if not np.isfinite(computed):
        return float("inf")
    unit = max(float(abs(scale)) * float(fi.eps), float(fi.smallest_normal))
    return float(abs(mpf(float(computed)) - exact) / mpf(unit))

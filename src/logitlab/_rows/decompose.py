r"""The row decomposition over the array API: the reference backend of the row engine.

For one row ``x`` with maximum ``a`` at index ``k``, ``d_i = (a - x_i) / T >= 0``,
``w_i = exp(-d_i)`` and ``s = sum_{i != k} w_i`` (one maximal entry excluded; other ties contribute
``exp(0) = 1``). Every row quantity of logitlab is a closed form in these, with no cancellation:

* ``lse(x / T) = a / T + log1p(s)``, ``softmax_i = w_i / (1 + s)`` (``w_k = 1``),
  ``log_softmax_i = -d_i - log1p(s)``,
* ``H = log1p(s) + sum_i d_i w_i / (1 + s)`` (entropy from logits; non-negative terms),
* ``-log p_t = d_t + log1p(s)`` (the cross-entropy target term).

``log1p(s)`` keeps ``s`` when ``s < eps``: ``lse([0, -40]) = 4.248e-18``, where
``log(sum(exp(x - a)))`` returns 0 (Blanchard, Higham & Higham 2021). ``exp`` amplifies the
rounding error of ``a - x_i`` by ``d_i``; :func:`parts` restores it with Knuth's TwoSum.

Non-finite rows: a row whose maximum is ``+inf`` behaves as the limit (its ``+inf`` entries share
the mass); a row of only ``-inf`` has ``lse = -inf`` and the uniform softmax (fully masked rows
never produce NaN); NaN anywhere makes the row NaN. An empty row has ``a = -inf``, ``s = 0``.

:func:`parts` is the general form (any axis, any namespace, every non-finite case);
:func:`block` the lean one the streaming consumers (evaluator, temperature fit, diagnose) use on
2-D NumPy/torch blocks of rows whose maximum is finite, where ``exp(beta (x - a))`` is taken
without the TwoSum correction and masked classes are clamped so that ``w d = 0``, never
``0 * inf``.

References:
    P. Blanchard, D. J. Higham, N. J. Higham, "Accurately computing the log-sum-exp and softmax
    functions", IMA J. Numer. Anal. 41(4):2311-2330, 2021.

    D. E. Knuth, *The Art of Computer Programming*, vol. 2, section 4.2.2 (TwoSum).
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

from logitlab._array import Array, is_torch_array

__all__ = [
    "Block",
    "Parts",
    "block",
    "entropy",
    "gather",
    "limit_softmax",
    "log_softmax",
    "lse",
    "lse_weighted",
    "parts",
    "rowdot",
    "rowsum",
    "softmax",
    "sub_error",
]


class Parts(NamedTuple):
    """The decomposition of the module docstring, all with ``keepdims=True`` along ``axis``."""

    a: Array  # row maximum (of x, not x / T)
    d: Array  # (a - x) / T >= 0; +inf for masked entries
    w: Array  # exp(-d) with the one excluded maximal entry set to 0
    s: Array  # sum of w
    top: Array  # boolean mask of the excluded maximal entry


def device_of(x: Array) -> Any:
    from array_api_compat import device

    return device(x)


def _size(x: Array) -> int:
    return math.prod(x.shape)


def _axis_index(xp: Any, n: int, ndim: int, axis: int, like: Array) -> Array:
    shape = [1] * ndim
    shape[axis] = n
    return xp.reshape(xp.arange(n, device=device_of(like)), tuple(shape))


def sub_error(xp: Any, a: Array, x: Array) -> Array:
    """The rounding error ``e`` of ``d = fl(a - x)``, so that ``a - x = d + e`` exactly.

    Knuth's TwoSum (6 flops, any magnitudes); 0 where ``x`` or ``a`` is not finite.
    ``exp(-(a - x))`` amplifies an error ``e`` in ``d`` by ``|d|``: a softmax entry 30 nats below
    the maximum would otherwise lose 15 ulps. ``exp(-d) * (1 - e)`` restores it.
    """
    d = a - x
    bp = d - a
    ap = d - bp
    e = (a - ap) + (-x - bp)
    return xp.where(xp.isfinite(e), e, xp.zeros_like(e))


def exact_division(t: float) -> bool:
    """Whether dividing by ``t`` is exact (a power of two, barring underflow)."""
    m, _ = math.frexp(t)
    return m == 0.5


def div_remainder(xp: Any, d: Array, q: Array, t: float) -> Array:
    """``r = d - q t`` exactly, for ``q = fl(d / t)`` (0 where ``d`` or ``q`` is not finite).

    Dekker's product ``q t = p + err`` with both factors split in halves (no fused multiply-add in
    the array API), and ``d - p`` exact by Sterbenz's lemma (``p`` is within a factor 2 of ``d``).
    """
    fi = xp.finfo(d.dtype)
    t = float(xp.asarray(t, dtype=d.dtype))  # the divisor as the division held it
    digits = round(-math.log2(float(fi.eps))) + 1  # significand bits: 53 float64, 24 float32
    split = float(2 ** ((digits + 1) // 2) + 1)  # 2^27 + 1 for float64, 2^12 + 1 for float32
    ok = xp.isfinite(d) & xp.isfinite(q) & (xp.abs(q) < float(fi.max) / split)
    qs = xp.where(ok, q, xp.zeros_like(q))
    c = qs * split
    qh = c - (c - qs)
    ql = qs - qh
    # t is split here, exactly, in binary64: the top half of its digits, then the rest (Veltkamp's
    # split of a Python float works in 53 bits and would give float32 halves that do not fit)
    m, e = math.frexp(t)
    th = math.ldexp(math.trunc(math.ldexp(m, (digits + 1) // 2)), e - (digits + 1) // 2)
    tl = t - th
    p = qs * t
    err = ((qh * th - p) + qh * tl + ql * th) + ql * tl
    r = (xp.where(ok, d, xp.zeros_like(d)) - p) - err
    return xp.where(ok, r, xp.zeros_like(r))


def parts(xp: Any, x: Array, axis: int, temperature: float = 1.0) -> Parts:
    """Compute :class:`Parts` for a floating array ``x`` (already in its compute dtype).

    An empty row (``x.shape[axis] == 0``) has the maximum of the empty set, ``a = -inf``, and
    ``s = 0``: ``lse = -inf`` (the log of an empty sum), entropy and cross-entropy 0 (empty sums),
    softmax and log-softmax empty. NumPy and torch refuse ``max`` over a zero-length axis, so no
    reduction runs on an input without elements.
    """
    n = x.shape[axis]
    if _size(x) == 0:
        kept = tuple(1 if i == axis else k for i, k in enumerate(x.shape))
        a0 = xp.full(kept, -math.inf, dtype=x.dtype, device=device_of(x))
        zeros = xp.zeros_like(x)
        top0 = xp.zeros(tuple(x.shape), dtype=xp.bool, device=device_of(x))
        return Parts(a0, zeros, zeros, xp.zeros_like(a0), top0)
    a = xp.max(x, axis=axis, keepdims=True)
    a_finite = xp.isfinite(a)
    if bool(xp.all(a_finite)):
        d = a - x
    else:
        # Rows whose max is +-inf or NaN: ties with the max get d = 0 (they share the mass), the
        # rest d = inf; NaN rows get NaN everywhere. Only taken when such a row exists.
        a_safe = xp.where(a_finite, a, xp.zeros_like(a))
        inf = xp.full_like(x, math.inf)
        fix = xp.where(x == a, xp.zeros_like(x), inf)
        fix = xp.where(xp.isnan(a), xp.full_like(x, math.nan), fix)
        d = xp.where(a_finite, a_safe - x, fix)
    # exp amplifies the rounding error e of a - x by |d|: exp(-(d + e) / T) = w * (1 - e / T).
    err = sub_error(xp, a, x)
    if temperature != 1.0:
        q = d / temperature
        if not exact_division(temperature):
            # the division rounds too: d = q T + r exactly, and exp(-(d + e) / T) is then
            # exp(-q) (1 - (r + e) / T); without r a class 30 nats down at T = 0.3 is 17 ulps off
            err = err + div_remainder(xp, d, q, temperature)
        d = q
    k = xp.argmax(x, axis=axis, keepdims=True)
    top = _axis_index(xp, n, x.ndim, axis, x) == k
    w = xp.where(top, xp.zeros_like(d), xp.exp(-d))
    w = w * (1 - err / temperature)
    s = xp.sum(w, axis=axis, keepdims=True)
    return Parts(a, d, w, s, top)


def lse(xp: Any, x: Array, axis: int, keepdims: bool, temperature: float = 1.0) -> Array:
    """``a / T + log1p(s)`` along ``axis``."""
    p = parts(xp, x, axis, temperature)
    a = p.a / temperature if temperature != 1.0 else p.a
    r = a + xp.log1p(p.s)
    return r if keepdims else xp.squeeze(r, axis=axis)


def softmax(xp: Any, x: Array, axis: int, temperature: float = 1.0) -> Array:
    """``w / (1 + s)`` with the excluded maximal entry ``1 / (1 + s)``."""
    p = parts(xp, x, axis, temperature)
    w = xp.where(p.top, xp.ones_like(p.w), p.w)
    return w / (1 + p.s)


def log_softmax(xp: Any, x: Array, axis: int, temperature: float = 1.0) -> Array:
    """``-d - log1p(s)``: two roundings, so the dominant entry keeps its tiny log-probability."""
    p = parts(xp, x, axis, temperature)
    return -p.d - xp.log1p(p.s)


def entropy(xp: Any, x: Array, axis: int) -> Array:
    """``log1p(s) + sum(d w) / (1 + s)`` along ``axis`` (axis removed)."""
    p = parts(xp, x, axis)
    # d_i * w_i is 0 for masked entries (w = 0, d = inf): never form inf * 0.
    dw = xp.where(p.w > 0, p.d * p.w, xp.zeros_like(p.w))
    h = xp.log1p(p.s) + xp.sum(dw, axis=axis, keepdims=True) / (1 + p.s)
    return xp.squeeze(h, axis=axis)


def limit_softmax(xp: Any, x: Array, axis: int, temperature: float) -> Array:
    """The limits of ``softmax(x / T)``: ``T -> 0`` the argmax one-hot (ties sharing equally),
    ``T -> inf`` uniform over the entries that are not ``-inf`` (masked classes keep 0). NaN rows
    stay NaN."""
    if _size(x) == 0:
        return xp.zeros_like(x)
    a = xp.max(x, axis=axis, keepdims=True)
    sel = (x == a) if temperature == 0.0 else (x > -math.inf)
    sel = sel | ((a == -math.inf) & (x == a))
    m = xp.astype(sel, x.dtype)
    out = m / xp.sum(m, axis=axis, keepdims=True)
    return xp.where(xp.isnan(a), xp.full_like(out, math.nan), out)


def lse_weighted(xp: Any, x: Array, b: Array, axis: int, keepdims: bool) -> tuple[Array, Array]:
    """``(log |sum b e^x|, sign)`` along ``axis``.

    Entries with ``b == 0`` are dropped (SciPy's convention), then the largest remaining term
    ``b_k exp(x_k - a) = b_k`` is factored out so that the rest is a relative correction ``r``:
    ``sum = b_k e^a (1 + r)``, ``r = sum_{i != k} b_i w_i / b_k``, and ``log|1 + r|`` is
    ``log1p(r)`` for ``r > -1`` (no loss of a tiny ``r``), ``log(-1 - r)`` below. ``+inf`` terms
    give ``+-inf`` by the sign of their weights' total, and NaN (sign NaN) where that total is 0.
    """
    x = xp.where(b == 0, xp.full_like(x, -math.inf), x)
    p = parts(xp, x, axis)
    bk = xp.sum(xp.where(p.top, b, xp.zeros_like(b)), axis=axis, keepdims=True)
    bk_safe = xp.where(bk == 0, xp.ones_like(bk), bk)
    rest = xp.sum(xp.where(p.w == 0, xp.zeros_like(b), b * p.w), axis=axis, keepdims=True)
    r = rest / bk_safe
    pos = r > -1
    one_plus = xp.where(
        pos,
        xp.log1p(xp.where(pos, r, xp.zeros_like(r))),
        xp.log(xp.where(pos, xp.ones_like(r), -1 - r)),
    )
    out = p.a + xp.log(xp.abs(bk_safe)) + one_plus
    sgn = xp.sign(bk_safe) * xp.where(pos, xp.ones_like(r), -xp.ones_like(r))
    empty = (bk == 0) | (r == -1)
    out = xp.where(empty, xp.full_like(out, -math.inf), out)
    sgn = xp.where(empty, xp.zeros_like(sgn), sgn)
    pinf = x == math.inf
    if bool(xp.any(pinf)):
        # +inf terms: the sum is +-inf by the sign of their weights' total, and inf - inf
        # (total 0, or NaN) is undefined: NaN with sign NaN, as in SciPy
        total = xp.sum(xp.where(pinf, b, xp.zeros_like(b)), axis=axis, keepdims=True)
        has = xp.any(pinf, axis=axis, keepdims=True)
        defined = has & ~(total == 0) & ~xp.isnan(total)
        out = xp.where(defined, xp.full_like(out, math.inf), out)
        sgn = xp.where(defined, xp.sign(total), sgn)
        out = xp.where(has & ~defined, xp.full_like(out, math.nan), out)
        sgn = xp.where(has & ~defined, xp.full_like(sgn, math.nan), sgn)
    if not keepdims:
        out, sgn = xp.squeeze(out, axis=axis), xp.squeeze(sgn, axis=axis)
    return out, sgn


# --------------------------------------------------------------------------- 2-D blocks


class Block(NamedTuple):
    """:func:`block` of ``(n, V)`` rows: row vectors have shape ``(n,)``."""

    k: Array  # first index of the row maximum (int64)
    a: Array  # the row maximum
    d: Array  # (n, V) x - a <= 0; masked classes clamped to the most negative finite value
    w: Array  # (n, V) exp(beta d), 0 at the excluded maximal entry k
    s: Array  # sum of w


def rowsum(xp: Any, m: Array) -> Array:
    """Sum over the class axis of an ``(n, V)`` block.

    On torch a matrix-vector product with a vector of ones: it reduces a short class axis about
    four times faster than ``.sum(1)`` on a CPU, and the same elsewhere.
    """
    if is_torch_array(m):
        import torch

        return m @ torch.ones(m.shape[1], dtype=m.dtype, device=m.device)
    return xp.sum(m, axis=1)


def rowdot(xp: Any, u: Array, v: Array) -> Array:
    """``sum_i u_i v_i`` per row of two ``(n, V)`` blocks."""
    if is_torch_array(u):
        return rowsum(xp, u * v)
    import numpy as np

    return np.einsum("ij,ij->i", u, v)


def gather(xp: Any, m: Array, idx: Array) -> Array:
    """``m[r, idx[r]]`` for every row ``r`` of an ``(n, V)`` block."""
    if is_torch_array(m):
        return m.gather(1, idx[:, None])[:, 0]
    import numpy as np

    return np.take_along_axis(m, idx[:, None], axis=1)[:, 0]


def block(xp: Any, x: Array, beta: float = 1.0, out: tuple[Array, Array] | None = None) -> Block:
    """:class:`Block` of a 2-D NumPy array or torch tensor whose rows have a finite maximum.

    ``w = exp(beta (x - a))`` (``beta = 1 / T``), the first maximal entry excluded; a masked class
    (``x = -inf``) has ``d`` clamped to ``-finfo.max``, so ``w = 0`` and ``w d = 0``. ``out``:
    two NumPy arrays of ``x``'s shape and dtype that receive ``d`` and ``w`` (a caller that loops
    over chunks reuses them instead of faulting in fresh pages every time).
    """
    if is_torch_array(x):
        import torch

        a2, k2 = x.max(dim=1, keepdim=True)
        d = (x - a2).clamp_(min=-torch.finfo(x.dtype).max)
        w = torch.exp(d * beta) if beta != 1.0 else torch.exp(d)
        w.scatter_(1, k2, 0.0)
        k, a = k2[:, 0], a2[:, 0]
    else:
        import numpy as np

        k = np.argmax(x, axis=1)
        a = np.take_along_axis(x, k[:, None], axis=1)[:, 0]
        d, w = out if out is not None else (np.empty_like(x), np.empty_like(x))
        np.subtract(x, a[:, None], out=d)
        np.maximum(d, -np.finfo(x.dtype).max, out=d)
        if beta != 1.0:
            np.multiply(d, beta, out=w)
            np.exp(w, out=w)
        else:
            np.exp(d, out=w)
        np.put_along_axis(w, k[:, None], 0.0, axis=1)
    return Block(k, a, d, w, rowsum(xp, w))

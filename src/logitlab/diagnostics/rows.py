r"""The entry pass of :class:`~logitlab.diagnostics.LogitStats`: per-row sums of a chunk.

Everything the accumulator needs from the entries of a chunk comes from one pass, with two
backends behind :func:`row_pass`: the fused kernel ``logitlab_diag_rows`` of ``csrc/diag_rows.c``
(float16/float32 rows with unit stride; three passes over each row while it is in cache) and
NumPy (any other input, or ``LOGITLAB_NATIVE=0``; about 20 whole-chunk passes). Both fill the
same record per finite row, :data:`ROW_DTYPE`, whose fields the C header ``csrc/logitlab.h``
declares as the struct ``logitlab_diag_row`` in the same order; both add to the same two entry
histograms. With :math:`a = \max_i z_i` (first index :math:`k`), :math:`d_i = z_i - a \le 0` and
:math:`w_i = e^{d_i}` for :math:`i \ne k`, :math:`w_k = 0` (the decomposition of
:mod:`logitlab._rows`), the fields are:

=============== ================================================================================
``max``         :math:`a`
``min``         :math:`\min_i z_i`
``sum_w``       :math:`s = \sum_i w_i`: :math:`\operatorname{lse} = a + \operatorname{log1p}(s)`
``ent_w``       :math:`h = -\sum_i d_i w_i \ge 0`: :math:`H = \operatorname{log1p}(s) + h / (1 + s)`
``mean``        :math:`\bar z = \frac1V \sum_i z_i`
``std``         :math:`\sqrt{\frac1V \sum_i (z_i - \bar z)^2}` (population standard deviation)
``sum_w_half``  :math:`\sum_i w_i^2` (softmax at temperature 1/2)
``ent_w_half``  :math:`-\sum_i d_i w_i^2 / (1/2)`
``sum_w_two``   :math:`\sum_i \sqrt{w_i}` (temperature 2)
``ent_w_two``   :math:`-\sum_i d_i \sqrt{w_i} / 2`
``abs_z_w``     :math:`\sum_i |z_i| w_i`
``min_abs``     :math:`\min_i |z_i|`
``p_target``    :math:`p_t = w_t / (1 + s)` in the work dtype (:math:`p_k` for :math:`t = k`)
=============== ================================================================================

The histograms: the logits by the top 16 bits of their float32 pattern, and the biased binary
exponent of every :math:`p_i` (the gradient ``softmax - onehot`` before the caller moves the
target entries). Rows holding NaN or :math:`\pm\infty` are flagged (``ok``) and left out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from logitlab import _rows

__all__ = ["ROW_DTYPE", "RowPass", "Workspace", "row_pass"]

# The field order is the C struct's (csrc/logitlab.h); tests/test_diagnostics_rows.py checks it.
ROW_DTYPE = np.dtype(
    [
        (name, np.float64)
        for name in (
            "max",
            "min",
            "sum_w",
            "ent_w",
            "mean",
            "std",
            "sum_w_half",
            "ent_w_half",
            "sum_w_two",
            "ent_w_two",
            "abs_z_w",
            "min_abs",
            "p_target",
        )
    ]
)
TEMPERATURES = {0.5: ("sum_w_half", "ent_w_half"), 2.0: ("sum_w_two", "ent_w_two")}


class Workspace:
    """Work arrays reused from chunk to chunk (no page faults from fresh allocations)."""

    def __init__(self) -> None:
        self._buf: dict[str, np.ndarray] = {}

    def get(self, name: str, shape: tuple[int, int], dtype: Any) -> np.ndarray:
        """An uninitialised array ``shape`` of ``dtype``, the same memory as the last call."""
        n = shape[0] * shape[1]
        b = self._buf.get(name)
        if b is None or b.size < n or b.dtype != dtype:
            b = np.empty(n, dtype=dtype)
            self._buf[name] = b
        return b[:n].reshape(shape)

    def clear(self) -> None:
        """Release the arrays."""
        self._buf.clear()


@dataclass
class RowPass:
    """The entry pass over one chunk: its finite rows and their :data:`ROW_DTYPE` records."""

    ok: np.ndarray  # bool per chunk row: False where the row holds NaN or +-inf
    x: np.ndarray  # the finite rows
    t: np.ndarray | None  # their targets
    k: np.ndarray  # first index of each finite row's maximum
    q: np.ndarray  # ROW_DTYPE record per finite row
    exp_counts: np.ndarray  # counts of the biased exponent field of every p_i of the finite rows
    exp_bias: int  # the exponent bias of those counts (127 float32, 1023 float64)


def row_pass(x: np.ndarray, t: np.ndarray | None, h_logit: np.ndarray, work: Workspace) -> RowPass:
    """Per-row sums of the rows ``x`` (class axis last), adding their logits to ``h_logit``.

    ``x`` is float16/float32 (either backend) or float32/float64 (NumPy; the caller widens other
    dtypes exactly), ``t`` the integer targets or ``None`` (the argmax).
    """
    r, v = x.shape
    q = np.empty(r, dtype=ROW_DTYPE)
    k = np.empty(r, dtype=np.int64)
    h_exp = np.zeros(256, np.int64)
    if _rows.native.diag_rows(x, t, q, k, work.get("scratch", (2, v), np.float32), h_logit, h_exp):
        return _select(RowPass(k >= 0, x, t, k, q, h_exp, 127))
    return _numpy_pass(x, t, h_logit, work)


def _select(rp: RowPass) -> RowPass:
    # keep the finite rows only
    if rp.ok.all():
        return rp
    ok = rp.ok
    rp.x, rp.k, rp.q = rp.x[ok], rp.k[ok], rp.q[ok]
    rp.t = None if rp.t is None else rp.t[ok]
    return rp


def _numpy_pass(
    x: np.ndarray, t: np.ndarray | None, h_logit: np.ndarray, work: Workspace
) -> RowPass:
    r, V = x.shape
    b = np.min(x, axis=1)
    # max is +inf with any +inf and NaN with any NaN, min is -inf with any -inf: the rows left
    # out are found from these row vectors
    ok = np.isfinite(np.max(x, axis=1)) & np.isfinite(b)
    wd = x.dtype
    nb = 256 if wd == np.float32 else 2048
    bias = 127 if wd == np.float32 else 1023
    if not ok.all():
        x, b = x[ok], b[ok]
        t = None if t is None else t[ok]
        r = x.shape[0]
    q = np.empty(r, dtype=ROW_DTYPE)
    if r == 0:
        return RowPass(ok, x, t, np.zeros(0, np.int64), q, np.zeros(nb, np.int64), bias)
    ar = np.arange(r)
    # e = x - a <= 0 (clamped at -max: a spread beyond the dtype's range would give
    # e * exp(e) = -inf * 0) and w = exp(e) with the one maximal entry excluded: the row engine's
    # decomposition, so that s, 1 - p_max and the entropy carry no cancellation.
    bl = _rows.block(np, x, out=(work.get("e", (r, V), wd), work.get("w", (r, V), wd)))
    k, a, e, w = bl.k, bl.a, bl.d, bl.w
    q["max"], q["min"] = a, b
    q["sum_w"] = bl.s
    q["ent_w"] = -np.einsum("ij,ij->i", e, w)  # sum d_i w_i >= 0
    # Temperature: softmax(z / T) reuses w: w^2 for T = 1/2, sqrt(w) for T = 2.
    buf = work.get("buf", (r, V), wd)
    for temp, (s_name, h_name) in TEMPERATURES.items():
        if temp == 0.5:
            np.square(w, out=buf)
        else:
            np.sqrt(w, out=buf)
        q[s_name] = buf.sum(axis=1, dtype=wd)
        q[h_name] = -np.einsum("ij,ij->i", e, buf) / temp

    # Logit histogram: the top 16 bits of the float32 pattern (sign, exponent, 7 mantissa
    # bits), i.e. bins of relative width 2^-7 that are fixed, exact and mergeable.
    xf = x if wd == np.float32 else x.astype(np.float32)
    _bincount_into(h_logit, xf.view(np.uint32), 16)

    # Gradient p - onehot: exponent histogram of every entry from the bits of p (one multiply
    # and one shift); the caller moves the target entries from the bin of p_t to 1 - p_t.
    ptop = (1 / (1 + q["sum_w"])).astype(wd)
    np.multiply(w, ptop[:, None], out=buf)
    buf[ar, k] = ptop
    q["p_target"] = buf[ar, k if t is None else t]
    # p >= 0, so the sign bit is 0 and bits >> (mantissa bits) is the biased exponent
    exp_counts = np.zeros(nb, np.int64)
    if wd == np.float32:
        _bincount_into(exp_counts, buf.view(np.uint32), 23)
    else:
        _bincount_into(exp_counts, buf.view(np.uint64), 52)

    # Conditioning: sum p|z| from |x| (reusing e, no longer needed).
    np.abs(x, out=e)
    q["min_abs"] = e.min(axis=1)
    q["abs_z_w"] = np.einsum("ij,ij->i", e, w)
    # Moments in float64 (e is free again: float64 work reuses it)
    g = e if wd == np.float64 else work.get("g", (r, V), np.float64)
    q["mean"], q["std"] = row_moments(x, np.maximum(np.abs(a), np.abs(b)), g)
    return RowPass(ok, x, t, k, q, exp_counts, bias)


_HUGE_EXP = 400  # rows beyond 2^400 (float64 only) are scaled down first: their squares stay finite


def row_moments(x: np.ndarray, maxabs: np.ndarray, g: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    r"""Mean and population standard deviation of each row of finite ``x``, to a few float64 ulps.

    The corrected two-pass algorithm (Chan, Golub & LeVeque 1983): :math:`m` = the row's pairwise
    float64 sum over :math:`V`, :math:`g_i = x_i - m` in float64, then
    :math:`ar x = m + \sum g / V` and :math:`M_2 = \sum g^2 - (\sum g)^2 / V`: no cancellation
    whatever the row's offset, and no overflow (a float32 row's squares are below
    :math:`10^{78}`; float64 rows with :math:`\max|x| > 2^{400}` are scaled by a power of two
    first, which is exact).

    Args:
        x: finite rows, float32 or float64.
        maxabs: :math:`\max_i |x_i|` of each row.
        g: float64 work array of ``x``'s shape (overwritten).

    Returns:
        ``(mean, std)``, float64 per row.
    """
    V = x.shape[1]
    mean = x.sum(axis=1, dtype=np.float64) / V
    np.subtract(x, mean[:, None], out=g)
    sg = g.sum(axis=1)
    np.square(g, out=g)
    m2 = g.sum(axis=1) - sg * sg / V
    mean += sg / V
    std = np.sqrt(np.maximum(m2, 0.0) / V)
    if x.dtype != np.float64:
        return mean, std  # float32 squares stay below 1e78: nothing to scale
    huge = maxabs > 2.0**_HUGE_EXP
    if huge.any():
        e = np.frexp(maxabs[huge])[1] - _HUGE_EXP
        xs = np.ldexp(x[huge], -e[:, None])
        hm, hs = row_moments(xs, np.ldexp(maxabs[huge], -e), np.empty(xs.shape))
        mean[huge], std[huge] = np.ldexp(hm, e), np.ldexp(hs, e)
    return mean, std


def _bincount_into(hist: np.ndarray, bits: np.ndarray, shift: int) -> None:
    # bincount converts its input to intp: do it in row blocks of ~1M entries (bounded memory).
    step = max(1, (1 << 20) // max(1, bits.shape[1]))
    for i in range(0, bits.shape[0], step):
        hist += np.bincount((bits[i : i + step] >> shift).ravel(), minlength=hist.size)

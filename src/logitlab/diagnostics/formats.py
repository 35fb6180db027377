"""IEEE 754 binary formats and the half-precision model of :mod:`logitlab.diagnostics`.

:data:`FORMATS` (float16, bfloat16, float32, float64), :func:`round_to_format` (exact rounding of
float64 values to a format, bfloat16 included) and :func:`simulate_softmax` (the naive and the
stable softmax in real arithmetic of a format; see the package docstring for the model).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["FORMATS", "Format", "round_to_format", "simulate_softmax"]


@dataclass(frozen=True)
class Format:
    """An IEEE 754 binary format: ``p`` significand bits (hidden bit included), exponent range."""

    name: str
    p: int
    emin: int
    emax: int

    @property
    def max(self) -> float:
        """Largest finite value :math:`(2 - 2^{1-p}) 2^{e_{max}}`."""
        return math.ldexp(2.0 - math.ldexp(1.0, 1 - self.p), self.emax)

    @property
    def eps(self) -> float:
        """Machine epsilon :math:`2^{1-p}` (spacing of the numbers just above 1)."""
        return math.ldexp(1.0, 1 - self.p)

    @property
    def tiny(self) -> float:
        """Smallest positive normal number :math:`2^{e_{min}}`."""
        return math.ldexp(1.0, self.emin)

    @property
    def min_subnormal(self) -> float:
        """Smallest positive subnormal number :math:`2^{e_{min} + 1 - p}`."""
        return math.ldexp(1.0, self.emin + 1 - self.p)

    @property
    def overflow_log(self) -> float:
        """:math:`\\ln` of the overflow boundary ``max + ulp(max) / 2``: values at or above it round
        to ``inf`` (round to nearest even), so ``log`` of it is where a sum overflows."""
        return math.log(2.0) * (self.emax + 1) + math.log1p(-math.ldexp(1.0, -self.p - 1))

    @property
    def exp_limit(self) -> float:
        """:math:`\\ln(\\mathrm{max})`: the largest argument whose ``exp`` is finite (about)."""
        return math.log(self.max)


FORMATS: dict[str, Format] = {
    "float16": Format("float16", 11, -14, 15),
    "bfloat16": Format("bfloat16", 8, -126, 127),
    "float32": Format("float32", 24, -126, 127),
    "float64": Format("float64", 53, -1022, 1023),
}
_HALF = ("float16", "bfloat16")


def round_to_format(x: Any, fmt: str) -> np.ndarray:
    """Round values to a binary format (round half to even), returned as float64.

    Exact for every float64 input: the value is scaled by a power of two so that the format's
    quantum (its ulp, or the subnormal spacing below :math:`2^{e_{min}}`) becomes 1, rounded with
    ``np.round`` (half to even) and scaled back; results beyond ``max`` become ``inf``.

    Args:
        x: real values (any shape).
        fmt: ``"float16"``, ``"bfloat16"``, ``"float32"`` or ``"float64"``.

    Returns:
        float64 array of values representable in ``fmt``.

    Example:
        >>> round_to_format([1 + 2**-9, 65519.0, 65520.0, 2**-26], "float16").tolist()
        [1.0, 65504.0, inf, 0.0]
        >>> round_to_format([1 + 2**-8 + 2**-9], "bfloat16").tolist()
        [1.0078125]
    """
    f = FORMATS[fmt]
    v = np.asarray(x, dtype=np.float64)
    if fmt == "float64":
        return v.copy()
    with np.errstate(all="ignore"):
        _, e = np.frexp(v)  # |v| = m 2^e with 0.5 <= m < 1, so floor(log2|v|) = e - 1
        q = np.maximum(e - 1, f.emin) - (f.p - 1)  # exponent of the quantum
        r = np.ldexp(np.round(np.ldexp(v, -q)), q)
        r = np.where(np.abs(r) > f.max, np.copysign(np.inf, v), r)
        return np.asarray(np.where(np.isfinite(v), r, v))


def _exp_in(x: np.ndarray, fmt: str) -> np.ndarray:
    # exp as NumPy/PyTorch evaluate it: float32 exp rounded to the half format; native otherwise.
    with np.errstate(all="ignore"):
        if fmt == "float64":
            return np.exp(x.astype(np.float64))
        y = np.exp(x.astype(np.float32))
        return y.astype(np.float64) if fmt == "float32" else round_to_format(y, fmt)


def _sum_in(x: np.ndarray, fmt: str) -> np.ndarray:
    # Half-precision sums accumulate in float32 (NumPy and PyTorch CPU), then round once.
    with np.errstate(all="ignore"):
        if fmt == "float64":
            return np.asarray(np.sum(x, axis=-1))
        s = np.asarray(np.sum(x.astype(np.float32), axis=-1, dtype=np.float32), np.float64)
        return s if fmt == "float32" else round_to_format(s, fmt)


def simulate_softmax(x: Any, fmt: str) -> dict[str, np.ndarray]:
    """Run the naive and the stable softmax on rows of ``x`` in real ``fmt`` arithmetic.

    The reference computation behind the analytic counts of :class:`LogitStats` (see the module
    docstring for the arithmetic model).

    Args:
        x: finite logits, shape ``(rows, classes)``.
        fmt: a key of :data:`FORMATS`.

    Returns:
        Boolean row arrays: ``naive_overflow`` (the naive sum is ``inf``), ``naive_nan`` (every
        ``exp`` underflowed: 0/0) and ``stable_zero`` (some stable probability is exactly 0).

    Example:
        >>> r = simulate_softmax([[11.0, 11.0, 0.0], [10.0, 0.0, -20.0]], "float16")
        >>> r["naive_overflow"].tolist(), r["stable_zero"].tolist()
        ([True, False], [False, True])
    """
    x64 = np.asarray(x, dtype=np.float64)
    xd = round_to_format(x64, fmt)
    s_naive = _sum_in(_exp_in(xd, fmt), fmt)
    with np.errstate(all="ignore"):
        d = round_to_format(xd - xd.max(axis=-1, keepdims=True), fmt)
        es = _exp_in(d, fmt)
        s_stable = _sum_in(es, fmt)
        pmin = round_to_format(es.min(axis=-1) / s_stable, fmt)
    return {
        "naive_overflow": np.isinf(s_naive),
        "naive_nan": s_naive == 0,
        "stable_zero": pmin == 0,
    }


def softmax_verdicts(
    fmt: str,
    x: np.ndarray,
    a: np.ndarray,
    b: np.ndarray,
    lse: np.ndarray,
    maxabs: np.ndarray,
) -> tuple[int, int, int]:
    """How many rows of ``x`` overflow, give 0/0 and round a probability to 0 in ``fmt``.

    The counts of :func:`simulate_softmax`'s ``naive_overflow``, ``naive_nan`` and
    ``stable_zero``, decided from the row vectors (maximum ``a``, minimum ``b``, ``lse`` in the
    work dtype, ``maxabs``) except in a proven band around each boundary, where the rows are
    recomputed in real ``fmt`` arithmetic.

    Args:
        fmt: a key of :data:`FORMATS`.
        x: finite rows (float16, float32 or float64).
        a, b, lse, maxabs: per row: maximum, minimum, log-sum-exp, ``max(|a|, |b|)``.

    Returns:
        ``(naive overflow rows, naive 0/0 rows, stable zero rows)``.
    """
    f = FORMATS[fmt]
    u = f.eps / 2  # unit roundoff
    # Naive softmax. exp of the rounded max decides "some term is inf" and "all terms are 0"
    # exactly (rounding is monotone, so max(round(x)) = round(max(x))).
    e_max = _exp_in(round_to_format(a, fmt), fmt)
    over_sure = np.isinf(e_max)
    nan_sure = e_max == 0
    # Otherwise the sum is exp(lse) times a factor within exp(+-delta): rounding x to D moves
    # each term by at most exp(u |x|), exp and the float32 sum add a few u; 1e-4 (relative to
    # lse) covers the error of lse itself in the work dtype. Rows inside the band are redone
    # in real D arithmetic.
    delta = 1.01 * u * maxabs + 8 * u + 1e-4 * (1 + np.abs(lse))
    if fmt == "float64" or x.dtype in (np.float16, np.float32) and fmt == "float32":
        delta = 8 * u + 1e-5 * (1 + np.abs(lse))  # x is exact in D: no input rounding
    band = ~over_sure & ~nan_sure & (np.abs(lse - f.overflow_log) <= delta)
    over = over_sure | (~nan_sure & (lse - delta > f.overflow_log))
    # Stable softmax: the smallest probability is exp(b - lse); it rounds to 0 below
    # min_subnormal / 2. Outside +-(2 + delta) nats of ln(min_subnormal) the rounding of the
    # subnormal exp and of the division cannot change the verdict; inside, recompute.
    z = b - lse
    thr = math.log(f.min_subnormal)
    delta2 = 2.0 + 1.01 * u * (np.abs(a) + np.abs(b)) + 1e-4 * (1 + np.abs(z))
    zband = np.abs(z - thr) <= delta2
    zero = ~zband & (z < thr)
    need = band | zband
    if need.any():
        sim = simulate_softmax(x[need], fmt)  # float16 rows are widened exactly
        over = over.copy()
        over[need] = np.where(band[need], sim["naive_overflow"], over[need])
        zero = zero.copy()
        zero[need] = np.where(zband[need], sim["stable_zero"], zero[need])
    return int(np.count_nonzero(over)), int(np.count_nonzero(nan_sure)), int(np.count_nonzero(zero))

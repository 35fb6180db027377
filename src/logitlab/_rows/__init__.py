"""The row engine: every row statistic of logitlab, computed once, backends chosen here.

Every public function, the fused torch losses, the streaming evaluator, the temperature fit and
``diagnose`` compute their row quantities (maximum, the sum of ``exp`` without one maximal entry,
log-sum-exp, entropy, the target term, the cross-entropy gradient) through this package, from the
decomposition of :mod:`logitlab._rows.decompose`. A backend is a faster way to run the same
formula, held to the same accuracy tests:

========== ==================================== ===========================================
backend    module                               when
========== ==================================== ===========================================
native     :mod:`logitlab._rows.native`,        float32 on the CPU, library built and
           :mod:`logitlab._rows.fused`          enabled (``LOGITLAB_NATIVE``)
chunked    :mod:`logitlab._rows.chunked`        NumPy float32/float64 and CPU torch tensors
                                                outside an autograd graph, class axis last
                                                and contiguous: in-cache row blocks
xp         :mod:`logitlab._rows.decompose`      everything else (any axis, any array-API
                                                namespace, CUDA, rows with non-finite maxima)
========== ==================================== ===========================================

:func:`backend` is the one place that decides; the functions below ask it. The fused torch
cross-entropy kernels (:mod:`logitlab._rows.fused`, imported only by :mod:`logitlab.torch`) and
the diagnose kernels make the same choice for their own inputs.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from logitlab._array import Array
from logitlab._rows import chunked, decompose, native
from logitlab._rows.decompose import (
    Block,
    Parts,
    block,
    gather,
    lse_weighted,
    parts,
    rowdot,
    rowsum,
    sub_error,
)

__all__ = [
    "Block",
    "Parts",
    "backend",
    "block",
    "entropy",
    "gather",
    "log_softmax",
    "lse",
    "lse_weighted",
    "nll",
    "parts",
    "rowdot",
    "rowsum",
    "softmax",
    "sub_error",
]

Backend = Literal["native", "chunked", "xp"]


def backend(x: Array, axis: int, temperature: float = 1.0) -> Backend:
    """The backend that computes row statistics of ``x`` along ``axis`` (see the module table).

    ``native`` stands for "native if its kernel takes the call, else chunked": the native
    functions return ``None`` when the library is off or the dtype is not float32, and the
    chunked backend runs instead; only ``T = 1`` has a native log-softmax/lse kernel.
    """
    if not chunked.usable(x, axis):
        return "xp"
    if temperature == 1.0:
        return "native"
    # the chunked loop compensates the rounding of a - x but not that of (a - x) / T; a division
    # by a power of two is exact, any other temperature takes the compensated array-API form
    return "chunked" if decompose.exact_division(temperature) else "xp"


def _rows2d(x: Array) -> Array:
    return x.reshape(-1, x.shape[-1])


def lse(xp: Any, x: Array, axis: int, keepdims: bool = False, temperature: float = 1.0) -> Array:
    """``log sum exp(x / T)`` along ``axis``."""
    how = backend(x, axis, temperature)
    if how == "xp":
        return decompose.lse(xp, x, axis, keepdims, temperature)

    def general(c: Array) -> Array:
        return decompose.lse(xp, c, 1, False, temperature)

    x2 = _rows2d(x)
    r = native.lsm_rows(x2, 1, general) if how == "native" else None
    if r is None:
        r = chunked.lse(x2, temperature, general)
    r = r.reshape(x.shape[:-1])
    return xp.expand_dims(r, axis=axis) if keepdims else r


def softmax(xp: Any, x: Array, axis: int, temperature: float = 1.0) -> Array:
    """``softmax(x / T)`` along ``axis``; ``T = 0`` and ``T = inf`` are the limits."""
    if temperature == 0.0 or temperature == math.inf:
        return decompose.limit_softmax(xp, x, axis, temperature)
    if backend(x, axis, temperature) == "xp":
        return decompose.softmax(xp, x, axis, temperature)
    return chunked.softmax(
        x, temperature, lambda c: decompose.softmax(xp, c, 1, temperature)
    ).reshape(x.shape)


def log_softmax(xp: Any, x: Array, axis: int, temperature: float = 1.0) -> Array:
    """``log softmax(x / T)`` along ``axis`` (``-inf`` where the limits give 0)."""
    if temperature == 0.0 or temperature == math.inf:
        return xp.log(decompose.limit_softmax(xp, x, axis, temperature))
    how = backend(x, axis, temperature)
    if how == "xp":
        return decompose.log_softmax(xp, x, axis, temperature)

    def general(c: Array) -> Array:
        return decompose.log_softmax(xp, c, 1, temperature)

    x2 = _rows2d(x)
    r = native.lsm_rows(x2, 0, general) if how == "native" else None
    if r is None:
        r = chunked.log_softmax(x2, temperature, general)
    return r.reshape(x.shape)


def entropy(xp: Any, x: Array, axis: int) -> Array:
    """Entropy of ``softmax(x)`` along ``axis`` (axis removed)."""
    if backend(x, axis) == "xp":
        return decompose.entropy(xp, x, axis)
    return chunked.entropy(x, lambda c: decompose.entropy(xp, c, 1))


def nll(xp: Any, x: Array, target: Array, temperature: float = 1.0) -> Array:
    """``-log softmax(x / T)[target] = d_t + log1p(s)`` per row of an ``x`` that takes the
    chunked backend along its last axis (see :func:`backend`), targets in range."""

    def general(c: Array, t: Array) -> Array:
        p = decompose.parts(xp, c, 1, temperature)
        return gather(xp, p.d + xp.log1p(p.s), t)

    return chunked.nll_class(x, target, temperature, general)

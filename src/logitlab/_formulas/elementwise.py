"""Elementwise closed forms: softplus, log(1 - e^x), x log y and x log1p(y), and the signed zero.

References:
    M. Mächler, "Accurately computing log(1 - exp(-|a|)) assessed by the Rmpfr package", 2012.
"""

from __future__ import annotations

import math
from typing import Any

from logitlab._array import Array

__all__ = ["log1mexp", "log1pexp", "plus_zero", "xlog1py", "xlogy"]


def log1pexp(xp: Any, x: Array) -> Array:
    # max(x, 0) + log1p(exp(-|x|)): exp(-|x|) never overflows and both terms are >= 0, so there is
    # no cancellation for any x (the Mächler cut-offs only save time). +-inf: inf and 0.
    return xp.maximum(x, xp.zeros_like(x)) + xp.log1p(xp.exp(-xp.abs(x)))


def log1mexp(xp: Any, x: Array) -> Array:
    # Mächler's switch at -ln 2: above it 1 - e^x is small and -expm1(x) is exact; below it e^x is
    # small and log1p(-e^x) is exact. Each branch is fed a safe value so neither warns.
    near = x > -math.log(2.0)
    a = xp.log(-xp.expm1(xp.where(near, x, -xp.ones_like(x))))
    b = xp.log1p(-xp.exp(xp.where(near, -xp.ones_like(x), x)))
    return xp.where(near, a, b)


def xlogy(xp: Any, x: Array, y: Array) -> Array:
    # 0 * log(0) = 0 by convention (entropy's limit p log p -> 0); NaN in y still propagates.
    zero = (x == 0) & ~xp.isnan(y)
    safe_y = xp.where(zero, xp.ones_like(y), y)
    return xp.where(zero, xp.zeros_like(x), x * xp.log(safe_y))


def xlog1py(xp: Any, x: Array, y: Array) -> Array:
    zero = (x == 0) & ~xp.isnan(y)
    safe_y = xp.where(zero, xp.zeros_like(y), y)
    return xp.where(zero, xp.zeros_like(x), x * xp.log1p(safe_y))


def plus_zero(x: Array) -> Array:
    """``x + 0``: turns ``-0.0`` into ``+0.0`` and leaves every other value (and gradient) as is.

    Every quantity of this module is >= 0, but a zero reached by a negation (``-sum(p log p)`` with
    ``p`` in {0, 1}, ``-log(1)``), by a division by ``log(base) < 0`` or by a product with a
    ``-0.0`` input would print as ``-0.0``. In round-to-nearest, ``-0 + 0 = +0`` (IEEE 754, 6.3).
    """
    return x + 0.0

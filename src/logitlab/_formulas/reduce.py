"""Reductions of per-row losses (mean, sum, none; the mean of an empty or all-ignored batch is 0)
and the entropy of probability rows."""

from __future__ import annotations

import math
from typing import Any

from logitlab._array import Array
from logitlab._formulas.elementwise import xlogy

__all__ = ["entropy_probs", "reduce"]


def reduce(xp: Any, loss: Array, reduction: str, denom: Array | float | None = None) -> Array:
    if reduction == "none":
        return loss
    total = xp.sum(loss)
    if reduction == "sum":
        return total
    if denom is None:
        n = math.prod(loss.shape)
        return total / n if n else xp.zeros_like(total)
    # An all-ignored (or zero-weight) batch has mean 0 with zero gradient, not 0/0 = NaN.
    denom = xp.asarray(denom, dtype=total.dtype) if not hasattr(denom, "shape") else denom
    safe = xp.where(denom == 0, xp.ones_like(denom), denom)
    return xp.where(denom == 0, xp.zeros_like(total), total / safe)


def entropy_probs(xp: Any, p: Array, axis: int) -> Array:
    return -xp.sum(xlogy(xp, p, p), axis=axis)

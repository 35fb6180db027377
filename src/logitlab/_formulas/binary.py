"""Binary cross-entropy on probabilities and on logits, as sums of non-negative terms."""

from __future__ import annotations

from typing import Any

from logitlab._array import Array
from logitlab._formulas.elementwise import log1pexp, xlog1py, xlogy
from logitlab._formulas.reduce import reduce

__all__ = ["bce_logits", "bce_probs", "binary_cross_entropy"]


def bce_probs(xp: Any, p: Array, y: Array) -> Array:
    # -y log p - (1 - y) log1p(-p): log1p keeps tiny p exact and there is no clamp (torch clamps
    # log at -100, so BCE(1e-50, 1) = 100 instead of 115.13).
    return -xlogy(xp, y, p) - xlog1py(xp, 1 - y, -p)


def bce_logits(xp: Any, x: Array, y: Array, pos_weight: Array | None) -> Array:
    # Two non-negative terms w y softplus(-x) + (1 - y) softplus(x): no cancellation for any x, y
    # in [0, 1]; 0 * inf is taken as 0 so x = +-inf gives 0 or inf, never NaN.
    a = log1pexp(xp, -x)
    b = log1pexp(xp, x)
    pos = y if pos_weight is None else pos_weight * y
    ta = pos * xp.where(pos == 0, xp.zeros_like(a), a)
    tb = (1 - y) * xp.where(y == 1, xp.zeros_like(b), b)
    return ta + tb


def binary_cross_entropy(
    xp: Any,
    pred: Array,
    y: Array,
    w: Array | None,
    pos_weight: Array | None,
    reduction: str,
    *,
    from_logits: bool,
) -> Array:
    """The reduced binary cross-entropy of probabilities or logits ``pred`` (checked, one dtype):
    the computation behind the two public functions and their autograd Function's forward."""
    loss = bce_logits(xp, pred, y, pos_weight) if from_logits else bce_probs(xp, pred, y)
    if w is not None:
        loss = loss * w
    return reduce(xp, loss, reduction)

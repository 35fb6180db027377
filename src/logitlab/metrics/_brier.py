"""The Brier score of logit rows from the row engine's decomposition, free of cancellation.

``1 - 2 p_t + sum p^2`` cancels to exactly 0 on a confident correct row, whose score is about
``s^2`` (``[0, -40, -41]``: 5.4e-35; through ``softmax`` then ``(p - onehot)^2``, 2.0e-35). With
the maximum's ``w = 1`` left out of ``s = sum w`` and ``see = sum w^2``, every term is
non-negative: a correct row (the target is the first maximum) scores ``(s^2 + see) / (1 + s)^2``,
any other ``((1 + s - w_t)^2 + 1 + see - w_t^2) / (1 + s)^2``.
"""

from __future__ import annotations

from typing import Any

from logitlab import _rows
from logitlab._array import Array

__all__ = ["brier_rows"]


def brier_rows(xp: Any, bl: Any, y: Array) -> Array:
    """Per-row multiclass Brier score of the rows of :func:`logitlab._rows.block` ``bl``, for
    labels ``y`` (first maximum: ``bl.k``)."""
    s = bl.s
    inv = 1.0 / (1.0 + s)
    see = _rows.rowdot(xp, bl.w, bl.w)
    correct = bl.k == y
    et = _rows.gather(xp, bl.w, y)  # 0 for a correct row (w_k is excluded)
    gap = xp.where(correct, s, 1.0 + s - et)
    rest = xp.where(correct, see, 1.0 + see - et * et)
    return (gap * gap + rest) * inv * inv

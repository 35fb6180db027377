"""What the loss functions share: the probabilities-as-logits guard and the class-axis moves."""

from __future__ import annotations

from typing import Any

from logitlab._array import Array, as_arrays, is_floating
from logitlab._checks import _GUARDED, normalize_axis, warn_if_probabilities
from logitlab._config import validation_enabled

__all__ = ["move_back", "move_last", "warn_probabilities_as_logits"]


def warn_probabilities_as_logits(
    logits: Any, axis: object, fn: str, instead: str, name: str = "logits"
) -> None:
    """:func:`~logitlab._checks.warn_if_probabilities` on the raw argument (read, never cast)."""
    if not validation_enabled() or logits is None or _GUARDED.get():
        return
    xp, (x,) = as_arrays(logits, names=[name])
    # a bad axis is left to the caller's own check, which names it
    if x.ndim and is_floating(xp, x) and isinstance(axis, int) and -x.ndim <= axis < x.ndim:
        warn_if_probabilities(
            xp, x, normalize_axis(axis, x.ndim), fn=fn, instead=instead, name=name
        )


def move_last(xp: Any, x: Array, axis: int) -> Array:
    """``x`` with ``axis`` moved last (a differentiable view for torch tensors)."""
    return x if axis == x.ndim - 1 else xp.moveaxis(x, axis, -1)


def move_back(x: Array, ax: int) -> tuple[int, ...]:
    """The shape of ``x`` (class axis last) with that axis back at ``ax``: for messages."""
    shape = list(x.shape)
    last = shape.pop()
    shape.insert(ax, last)
    return tuple(shape)

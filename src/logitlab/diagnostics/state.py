r"""Declared state of a streaming accumulator: every field once, with its default and its merge.

The way torchmetrics declares a metric's state (``Metric.add_state(name, default,
dist_reduce_fx="sum")``), as class-level fields: ``rows: int = state(0, SUM)`` declares the field,
its type, its default and how the states of two accumulators built on disjoint rows combine.
:func:`accumulator` makes the class a slotted dataclass and refuses a field declared without a
merge (``TypeError`` at import), and, the class having slots, an attribute assigned without a
declaration (``AttributeError``); :func:`merge_states` is generic over the declarations, so a new
field is merged the day it is declared.

The merges: :data:`SUM`, :data:`MIN`, :data:`MAX`, :data:`ARRAY_SUM` (element-wise, in place),
:data:`KEY_SUM` (per key of a dict), :data:`CHAN` (:class:`Moments`: Chan, Golub and LeVeque's
parallel update of the mean and the sum of squared deviations), :data:`FIRST` (the smaller of
two optional row indices), :data:`SAME` and :data:`AGREE` (configuration that must be equal, or
equal where known; checked before anything is merged) and :data:`OWN` (report metadata and
scratch: the merged accumulator keeps its own).

References:
    T. F. Chan, G. H. Golub, R. J. LeVeque, "Algorithms for computing the sample variance:
    analysis and recommendations", The American Statistician 37(3):242-247, 1983.

    torchmetrics, ``Metric.add_state`` (https://lightning.ai/docs/torchmetrics).
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any, TypeVar

import numpy as np

__all__ = [
    "AGREE",
    "ARRAY_SUM",
    "CHAN",
    "FIRST",
    "KEY_SUM",
    "MAX",
    "MIN",
    "OWN",
    "SAME",
    "SUM",
    "Merge",
    "Moments",
    "accumulator",
    "merge_states",
    "reset_states",
    "state",
]

T = TypeVar("T")
_MERGE = "logitlab.merge"  # the key of a field's declaration in its metadata


@dataclass(frozen=True)
class Merge:
    """How a field of two accumulators combines: ``fn(mine, theirs)`` returns the merged value
    (``ValueError`` when they cannot be merged); ``check`` merges run before all others."""

    name: str
    fn: Callable[[Any, Any], Any]
    check: bool = False


def _array_sum(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a += b
    return a


def _key_sum(a: dict[Any, Any], b: dict[Any, Any]) -> dict[Any, Any]:
    if a.keys() != b.keys():
        raise ValueError(f"different keys {sorted(a)} and {sorted(b)}")
    return {k: a[k] + b[k] for k in a}


def _first(a: int | None, b: int | None) -> int | None:
    return b if a is None else a if b is None else min(a, b)


def _same(a: Any, b: Any) -> Any:
    if a != b:
        raise ValueError(f"{a!r} != {b!r}")
    return a


def _agree(a: Any, b: Any) -> Any:
    if a is None:
        return b
    if b is not None and a != b:
        raise ValueError(f"{a!r} != {b!r}")
    return a


_BIG_EXP = 400  # |mean| or std beyond 2^400: scale by a power of two so that squares stay finite


def _scale_for(v: float) -> int:
    # the power of two that brings v (>= 0) to at most 2^_BIG_EXP; 0 for every float32 value
    return max(0, math.frexp(v)[1] - _BIG_EXP) if math.isfinite(v) else 0


@dataclass(frozen=True)
class Moments:
    r"""Count, mean and sum of squared deviations :math:`M_2 = \sum_i (x_i - \bar x)^2` of
    finite values, stored as ``m2`` :math:`= M_2 / 4^{\text{scale}}`: ``scale`` is 0 unless
    the values exceed :math:`2^{400}` (float64 only), where :math:`M_2` itself would overflow
    although the standard deviation does not.

    Example:
        >>> a, b = Moments(2, 1.5, 0.5), Moments(1, 3.0, 0.0)  # [1, 2] and [3]
        >>> m = a.merge(b)
        >>> m.n, m.mean, m.m2, m.std
        (3, 2.0, 2.0, 0.816496580927726)
    """

    n: int = 0
    mean: float = 0.0
    m2: float = 0.0
    scale: int = 0

    @property
    def std(self) -> float:
        r"""Population standard deviation :math:`\sqrt{M_2 / n}` (NaN for no values)."""
        return math.ldexp(math.sqrt(self.m2 / self.n), self.scale) if self.n else math.nan

    @classmethod
    def of_rows(cls, means: np.ndarray, stds: np.ndarray, per_row: int) -> Moments:
        r"""The moments of rows of ``per_row`` values each, from their means and standard
        deviations: :math:`M_2 = V \sum_r (\sigma_r^2 + (\bar x_r - \bar x)^2)`."""
        e = _scale_for(float(max(np.abs(means).max(), stds.max())))
        if e:
            means, stds = np.ldexp(means, -e), np.ldexp(stds, -e)
        mean = float(means.mean())
        m2 = per_row * float(np.sum(stds * stds) + np.sum((means - mean) ** 2))
        return cls(len(means) * per_row, math.ldexp(mean, e), m2, e)

    def merge(self, other: Moments) -> Moments:
        r"""Chan's update: :math:`\delta = \bar x_b - \bar x_a`,
        :math:`\bar x = \bar x_a + \delta n_b / n`,
        :math:`M_2 = M_{2,a} + M_{2,b} + \delta^2 n_a n_b / n` (in the larger scale)."""
        if other.n == 0:
            return self
        if self.n == 0:
            return other
        e = max(self.scale, other.scale, _scale_for(max(abs(self.mean), abs(other.mean))))
        a, b = math.ldexp(self.mean, -e), math.ldexp(other.mean, -e)
        tot = self.n + other.n
        delta = b - a
        m2 = math.ldexp(self.m2, 2 * (self.scale - e)) + (
            math.ldexp(other.m2, 2 * (other.scale - e)) + delta * delta * self.n * other.n / tot
        )
        return Moments(tot, math.ldexp(a + delta * other.n / tot, e), m2, e)


SUM = Merge("sum", operator.add)
MIN = Merge("min", min)
MAX = Merge("max", max)
ARRAY_SUM = Merge("element-wise sum", _array_sum)
KEY_SUM = Merge("per-key sum", _key_sum)
CHAN = Merge("Chan's parallel update", Moments.merge)
FIRST = Merge("first row", _first)
SAME = Merge("equal", _same, check=True)
AGREE = Merge("equal where known", _agree, check=True)
OWN = Merge("keep own", lambda a, b: a)


def state(default: Any, merge: Merge) -> Any:
    """Declare a state field: its ``default`` (a value, or a zero-argument factory such as
    ``lambda: np.zeros(8)`` for a mutable one) and how two states ``merge``."""
    if not isinstance(merge, Merge):
        raise TypeError(f"merge must be a Merge, got {type(merge).__name__}")
    factory = default if callable(default) else lambda: default
    return field(default_factory=factory, metadata={_MERGE: merge})


def accumulator(cls: type[T]) -> type[T]:
    """Class decorator: a slotted dataclass (``init=False``: the class writes its own
    ``__init__`` and calls :func:`reset_states`) whose every field is declared by :func:`state`.

    Raises:
        TypeError: a field declared without a merge.
    """
    new = dataclass(slots=True, eq=False, repr=False, init=False)(cls)
    for f in fields(new):  # type: ignore[arg-type]
        if not isinstance(f.metadata.get(_MERGE), Merge):
            raise TypeError(
                f"{cls.__name__}.{f.name} is a state field without a merge: declare it with "
                "state(default, merge)"
            )
    return new


def reset_states(obj: Any) -> None:
    """Set every declared field of ``obj`` to its default."""
    for f in fields(obj):
        setattr(obj, f.name, f.default_factory())  # type: ignore[misc, operator]


def merge_states(mine: T, theirs: T) -> T:
    """Merge ``theirs`` into ``mine`` field by field, as declared; returns ``mine``.

    Raises:
        ValueError: the two cannot be merged, naming the field: a configuration field differs
            (:data:`SAME`, :data:`AGREE`; checked before any field is merged, so ``mine`` is
            unchanged then).
    """
    decls = sorted(fields(mine), key=lambda f: not f.metadata[_MERGE].check)  # type: ignore[arg-type]
    for f in decls:
        m: Merge = f.metadata[_MERGE]
        try:
            value = m.fn(getattr(mine, f.name), getattr(theirs, f.name))
        except ValueError as exc:
            raise ValueError(f"cannot merge {type(mine).__name__}.{f.name}: {exc}") from None
        setattr(mine, f.name, value)
    return mine

"""Input conversion shared by the metrics: any array (NumPy, torch, array-API, lists) to NumPy,
validated, with errors that name the argument.

Two checks guard the argument meaning (issue 13): probabilities passed as ``logits=`` get a
:class:`~logitlab.ProbabilitiesAsLogitsWarning`, and scikit-learn's ``(y_true, y_prob)`` order
passed to logitlab's ``(probs, target)`` (torchmetrics' order) raises a ValueError that says so.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from logitlab._array import as_arrays, to_numpy
from logitlab._checks import check_probabilities, input_eps, warn_if_probabilities
from logitlab.special import softmax

__all__ = [
    "check_logit_rows",
    "is_binary",
    "logit_matrix",
    "to_numpy_2d",
    "to_labels",
    "to_probs",
    "to_probs_and_labels",
]


def _numpy_of(x: Any, name: str) -> tuple[np.ndarray, float | None]:
    """``x`` as a NumPy array (bfloat16 widened to float32), and the machine epsilon of the
    floating dtype it came in (``None`` for integers)."""
    xp, (arr,) = as_arrays(x, names=[name])
    return np.asarray(to_numpy(xp, arr)), input_eps(arr)


def to_numpy_2d(x: Any, name: str) -> np.ndarray:
    """``x`` as a float NumPy array of shape ``(N, C)`` or ``(N,)`` (half precision as float32)."""
    return _to_numpy_2d(x, name)[0]


def _to_numpy_2d(x: Any, name: str) -> tuple[np.ndarray, float | None]:
    a, eps = _numpy_of(x, name)
    if a.dtype.kind not in "biuf":
        raise TypeError(f"{name} must be numeric, got dtype {a.dtype}")
    if a.ndim not in (1, 2):
        raise ValueError(f"{name} must have shape (N, C) or (N,), got {a.shape}")
    if a.shape[0] == 0:
        raise ValueError(f"{name} is empty: no samples")
    if a.dtype.kind != "f" or a.dtype.itemsize < 4:
        a = a.astype(np.float32 if a.dtype.kind == "f" else np.float64)
    if np.isnan(a).any():
        i = tuple(int(v) for v in np.argwhere(np.isnan(a))[0])
        raise ValueError(f"{name} contains NaN (first at index {i})")
    return a, eps


def check_logit_rows(z: np.ndarray, name: str = "logits", row0: int = 0) -> None:
    """Raise a ValueError naming ``name`` and the row where a metric of ``softmax(z)`` is undefined.

    The one check of logits that every metric runs (the batch metrics, :func:`fit_temperature`,
    :class:`Evaluator`, the files of ``logitlab evaluate``/``report``): NaN anywhere, ``+inf``
    anywhere (an overflow upstream: ``softmax`` of a row with ``+inf`` has no value, only limits
    that depend on how the overflow happened), and a row of ``(N, C)`` logits with no finite
    entry (every class ``-inf``: no distribution). ``-inf`` in some classes is a mask, which is
    valid; so is any ``-inf`` in ``(N,)`` binary logits (the row ``(0, -inf)``). Rows are reported
    as ``row0 + i`` (the row in the caller's data when ``z`` is a chunk).

    Example:
        >>> check_logit_rows(np.array([[0.0, -np.inf], [1.0, np.inf]]), row0=10)
        Traceback (most recent call last):
        ...
        ValueError: logits contains +inf (first at index (11, 1)): a +inf logit is an overflow ...
    """
    ok = np.isfinite(z)
    if ok.all():
        return
    bad = np.isnan(z) | np.isposinf(z)
    if bad.any():
        i = np.argwhere(bad)[0]
        idx = tuple(int(v) for v in i)
        idx = (row0 + idx[0], *idx[1:])
        if np.isnan(z[tuple(i)]):
            raise ValueError(f"{name} contains NaN (first at index {idx})")
        raise ValueError(
            f"{name} contains +inf (first at index {idx}): a +inf logit is an overflow "
            "upstream, not a certainty"
        )
    if z.ndim == 2:
        empty = ~ok.any(axis=1)
        if empty.any():
            r = row0 + int(np.argmax(empty))
            raise ValueError(f"{name} row {r} has no finite value (every class is -inf)")


def logit_matrix(z: np.ndarray, eps: float | None, fn: str) -> np.ndarray:
    """Checked logits as ``(N, C)`` in their own dtype: ``(N, C)`` as given (with the
    probabilities-as-logits warning), ``(N,)`` binary logits ``z`` as the rows ``(0, z)``.

    Raises:
        ValueError: see :func:`check_logit_rows` (indices are those of the caller's array).
    """
    check_logit_rows(z)
    if z.ndim == 1:  # a single logit z is the pair (0, z)
        return np.stack([np.zeros_like(z), z], axis=1)
    warn_if_probabilities(np, z, 1, fn=fn, instead=f"{fn}(probs=...)", eps=eps)
    return z


def to_labels(target: Any, n: int, n_classes: int, name: str = "target") -> np.ndarray:
    y, _ = _numpy_of(target, name)
    return _labels(y, n, n_classes, name)


def _labels(y: np.ndarray, n: int, n_classes: int, name: str) -> np.ndarray:
    if y.ndim != 1:
        raise ValueError(f"{name} must be 1-D integer labels, got shape {y.shape}")
    if y.shape[0] != n:
        raise ValueError(f"{name} has {y.shape[0]} labels but there are {n} rows of scores")
    if y.dtype.kind == "f":
        if not np.all(np.isfinite(y)) or np.any(y != np.round(y)):
            raise ValueError(f"{name} must hold integer class labels")
    elif y.dtype.kind not in "biu":
        raise TypeError(f"{name} must hold integer class labels, got dtype {y.dtype}")
    y = y.astype(np.int64)
    bad = (y < 0) | (y >= n_classes)
    if bad.any():
        i = int(np.argmax(bad))
        raise ValueError(f"{name}[{i}] = {y[i]} is not a class index in [0, {n_classes})")
    return y


def is_binary(x: Any) -> bool:
    """1-D scores: the probability (or logit) of class 1 of a binary problem."""
    return x is not None and len(getattr(x, "shape", np.shape(x))) == 1


def _binary_to_two_columns(a: np.ndarray) -> np.ndarray:
    return np.stack([1 - a, a], axis=1)


def _is_label_vector(a: np.ndarray) -> bool:
    return a.ndim == 1 and (a.dtype.kind in "biu" or bool(np.all(a == np.round(a))))


def _is_score_array(t: np.ndarray) -> bool:
    if t.ndim == 2:
        return True
    return t.dtype.kind == "f" and bool(np.any(np.isfinite(t) & (t != np.round(t))))


def check_not_swapped(pred: np.ndarray, target: np.ndarray, fn: str, pred_name: str) -> None:
    """Raise if ``fn(pred, target)`` looks like scikit-learn's ``(y_true, y_prob)`` order.

    ``pred`` a vector of integer labels and ``target`` fractional or two-dimensional is never
    valid (targets are class labels) and is exactly what the swapped call gives, so the error says
    so instead of complaining about one argument.
    """
    if _is_label_vector(pred) and _is_score_array(target):
        raise ValueError(
            f"{fn}({pred_name}, target): the arguments look swapped: {pred_name} holds only "
            f"integer labels while target holds scores (shape {target.shape}). logitlab takes "
            f"the predictions first, like torchmetrics; scikit-learn's metrics take y_true first. "
            f"Call {fn}({pred_name}=predictions, target=labels)"
        )


def to_probs(*, probs: Any = None, logits: Any = None, fn: str = "metric") -> np.ndarray:
    """Validated probabilities ``(N, C)`` float64 from either argument (``(N,)``: binary)."""
    if (probs is None) == (logits is None):
        raise ValueError(f"{fn}() takes exactly one of probs=... or logits=...")
    if logits is not None:
        return _probs_of(*_to_numpy_2d(logits, "logits"), logits=True, fn=fn)
    return _probs_of(*_to_numpy_2d(probs, "probs"), logits=False, fn=fn)


def _probs_of(a: np.ndarray, eps: float | None, *, logits: bool, fn: str) -> np.ndarray:
    if logits:
        z = logit_matrix(a, eps, fn)
        return np.asarray(softmax(z.astype(np.float64), axis=1))
    if a.ndim == 1:
        check_probabilities(np, a, "probs", None, normalized=False)
        return _binary_to_two_columns(a.astype(np.float64))
    # the row sums are checked in the dtype the probabilities came in (float32 softmax output
    # sums to 1 within float32 rounding only), before the float64 cast
    check_probabilities(np, a, "probs", 1, eps=eps)
    return a.astype(np.float64)


def to_logits_and_labels(*, logits: Any, target: Any, fn: str) -> tuple[np.ndarray, np.ndarray]:
    """Validated ``(logits (N, C) float64, labels (N,) int64)``; ``(N,)`` binary logits become
    the rows ``(0, z)``. The checks of :func:`to_probs_and_labels` with ``logits=``.
    """
    if target is None:
        raise TypeError(f"{fn}() needs target= (integer class labels)")
    a, eps = _to_numpy_2d(logits, "logits")
    y, _ = _numpy_of(target, "target")
    check_not_swapped(a, y, fn, "logits")
    z = logit_matrix(a, eps, fn).astype(np.float64)
    return z, _labels(y, z.shape[0], z.shape[1], "target")


def to_probs_and_labels(
    *, probs: Any = None, logits: Any = None, target: Any, fn: str = "metric"
) -> tuple[np.ndarray, np.ndarray]:
    """Validated ``(probabilities (N, C) float64, labels (N,) int64)``.

    Raises:
        TypeError: no ``target``.
        ValueError: both or neither of ``probs``/``logits``; arguments in scikit-learn's order
            (see :func:`check_not_swapped`); invalid scores or labels.
    """
    if target is None:
        raise TypeError(f"{fn}() needs target= (integer class labels)")
    if (probs is None) == (logits is None):
        raise ValueError(f"{fn}() takes exactly one of probs=... or logits=...")
    name = "probs" if logits is None else "logits"
    a, eps = _to_numpy_2d(probs if logits is None else logits, name)
    y, _ = _numpy_of(target, "target")
    check_not_swapped(a, y, fn, name)
    p = _probs_of(a, eps, logits=logits is not None, fn=fn)
    return p, _labels(y, p.shape[0], p.shape[1], "target")

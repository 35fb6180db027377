"""Input conversion shared by the metrics: any array (NumPy, torch, array-API, lists) to NumPy,
validated, with errors that name the argument."""

from __future__ import annotations

from typing import Any

import numpy as np

from logitlab._array import as_arrays, check_probabilities, to_numpy
from logitlab.special import softmax

__all__ = ["to_numpy_2d", "to_labels", "to_probs_and_labels", "check_logit_rows"]


def to_numpy_2d(x: Any, name: str) -> np.ndarray:
    """``x`` as a float NumPy array of shape ``(N, C)``; 1-D binary scores become two columns."""
    xp, (arr,) = as_arrays(x, names=[name])
    a = np.asarray(to_numpy(xp, arr))
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
    return a


def check_logit_rows(
    z: np.ndarray, name: str = "logits", row0: int = 0, posinf: bool = False
) -> None:
    """Raise a ValueError naming ``name`` and the row where a metric of ``softmax(z)`` is undefined.

    NaN anywhere, a row of ``(N, C)`` logits with no finite entry (every class ``-inf``: no
    distribution), and with ``posinf`` any ``+inf``. ``-inf`` in some classes is a mask, which is
    valid. Rows are reported as ``row0 + i`` (the row in the caller's data when ``z`` is a chunk).
    """
    ok = np.isfinite(z)
    if ok.all():
        return
    bad = np.isnan(z) | (np.isposinf(z) if posinf else False)
    if bad.any():
        i = np.argwhere(bad)[0]
        idx = tuple(int(v) for v in i)
        idx = (row0 + idx[0], *idx[1:])
        what = "NaN" if np.isnan(z[tuple(i)]) else "+inf"
        raise ValueError(f"{name} contains {what} (first at index {idx})")
    if z.ndim == 2:
        empty = ~ok.any(axis=1)
        if empty.any():
            r = row0 + int(np.argmax(empty))
            raise ValueError(f"{name} row {r} has no finite value (every class is -inf)")


def to_labels(target: Any, n: int, n_classes: int, name: str = "target") -> np.ndarray:
    xp, (arr,) = as_arrays(target, names=[name])
    y = np.asarray(to_numpy(xp, arr))
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


def _binary_to_two_columns(a: np.ndarray, logits: bool) -> np.ndarray:
    if logits:  # a single logit z is the pair (0, z)
        return np.stack([np.zeros_like(a), a], axis=1)
    return np.stack([1 - a, a], axis=1)


def to_probs_and_labels(
    *, probs: Any = None, logits: Any = None, target: Any
) -> tuple[np.ndarray, np.ndarray]:
    """Validated ``(probabilities (N, C) float64, labels (N,) int64)``."""
    if (probs is None) == (logits is None):
        raise ValueError("give exactly one of probs=... or logits=...")
    if logits is not None:
        z = to_numpy_2d(logits, "logits")
        if z.ndim == 1:
            z = _binary_to_two_columns(z, True)
        check_logit_rows(z)
        p = np.asarray(softmax(z.astype(np.float64), axis=1))
    else:
        p = to_numpy_2d(probs, "probs").astype(np.float64)
        if p.ndim == 1:
            check_probabilities(np, p, "probs", None, normalized=False)
            p = _binary_to_two_columns(p, False)
        check_probabilities(np, p, "probs", 1)
    return p, to_labels(target, p.shape[0], p.shape[1])

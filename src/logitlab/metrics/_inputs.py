"""Input conversion shared by the metrics: any array (NumPy, torch, array-API, lists) to NumPy,
validated, with errors that name the argument."""

from __future__ import annotations

from typing import Any

import numpy as np
from array_api_compat import is_torch_array

from logitlab._array import as_arrays, check_probabilities, input_eps, is_half, to_numpy
from logitlab.special import softmax

__all__ = ["to_numpy_2d", "to_labels", "to_probs", "to_probs_and_labels"]


def _numpy_of(x: Any, name: str) -> tuple[np.ndarray, float | None]:
    """``x`` as a NumPy array, and the machine epsilon of the floating dtype it came in (``None``
    for integers). bfloat16 tensors, which NumPy cannot hold, become float32."""
    xp, (arr,) = as_arrays(x, names=[name])
    eps = input_eps(arr)
    if is_torch_array(arr) and is_half(xp, arr.dtype):
        arr = arr.float()
    return np.asarray(to_numpy(xp, arr)), eps


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
    p = to_probs(probs=probs, logits=logits)
    return p, to_labels(target, p.shape[0], p.shape[1])


def to_probs(*, probs: Any = None, logits: Any = None) -> np.ndarray:
    """Validated probabilities ``(N, C)`` float64 from either argument (``(N,)``: binary)."""
    if (probs is None) == (logits is None):
        raise ValueError("give exactly one of probs=... or logits=...")
    if logits is not None:
        z = to_numpy_2d(logits, "logits")
        if z.ndim == 1:
            z = _binary_to_two_columns(z, True)
        p = np.asarray(softmax(z.astype(np.float64), axis=1))
    else:
        p32, eps = _to_numpy_2d(probs, "probs")
        if p32.ndim == 1:
            check_probabilities(np, p32, "probs", None, normalized=False)
            p = _binary_to_two_columns(p32.astype(np.float64), False)
        else:
            # the row sums are checked in the dtype the probabilities came in (float32 softmax
            # output sums to 1 within float32 rounding only), before the float64 cast
            check_probabilities(np, p32, "probs", 1, eps=eps)
            p = p32.astype(np.float64)
    return p

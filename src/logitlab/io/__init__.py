"""Safe loading of logits/labels files, shared by every command (writing: :mod:`logitlab._outputs`).

Formats: ``.npy`` (memory-mapped), ``.npz`` (stored members memory-mapped, compressed members
streamed through the decompressor), ``.safetensors`` (memory-mapped) and ``.pt``/``.pth``
(``torch.load(weights_only=True, mmap=True)``). Nothing in a file is ever executed: pickled object
arrays and arbitrary pickles are refused with a :class:`LoadError`.

Hostile files: every header (``.npy``, ``.npz`` member, safetensors JSON) is parsed and checked by
this module before any data is read: the declared shape and dtype must describe exactly the bytes
that are there, so a small file cannot make a command allocate or read more than it holds, a
truncated file is refused before its data is touched, and every read loop ends on end-of-data.
Every problem is a :class:`LoadError` whose message starts with the file (and member) name.

Large inputs are read through :class:`ArraySource`, which exposes ``shape``/``dtype`` and row slices
without loading the whole array, so that commands can stream fixed-size row chunks in bounded
memory.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from logitlab._outputs import atomic_write, write_files
from logitlab.io._npy import _open_npy
from logitlab.io._npz import _npz_keys, _open_npz, _zip
from logitlab.io._source import MAX_ROW_BYTES as MAX_ROW_BYTES
from logitlab.io._source import SUFFIXES as SUFFIXES
from logitlab.io._source import WHOLE_MEMBER_LIMIT as WHOLE_MEMBER_LIMIT
from logitlab.io._source import ArraySource, LoadError, _exists, _mib, _suffix
from logitlab.io._tensors import (
    _is_tensor_like,
    _open_pt,
    _open_safetensors,
    _safetensors_header,
    _torch_load,
)

__all__ = [
    "LoadError",
    "ArraySource",
    "open_array",
    "load_array",
    "list_keys",
    "load_predictions",
    "atomic_write",
    "write_files",
    "iter_row_chunks",
    "check_row_size",
]


def list_keys(path: str | os.PathLike[str]) -> list[str]:
    """Names of the arrays stored in ``path`` (``[]`` for ``.npy``), the keys :func:`open_array`
    takes.

    For ``.npz``: its ``.npy`` members, without the suffix. ``np.load(path).files`` also lists
    any other member of the zip (a text file, a directory entry); those hold no array (NumPy
    returns their raw bytes), and :func:`open_array` refuses a key that names one, saying so.
    For ``.pt``/``.pth``: the keys of a saved dict whose values are tensors or arrays.

    Raises:
        LoadError: missing, unreadable or unsupported file.
    """
    p = Path(path)
    s = _suffix(p)
    _exists(p)
    if s == ".npy":
        return []
    if s == ".npz":
        with _zip(p) as zf:
            return _npz_keys(zf)
    if s == ".safetensors":
        return list(_safetensors_header(p)[0])
    obj = _torch_load(p)
    if isinstance(obj, dict):
        return [str(k) for k, v in obj.items() if _is_tensor_like(v)]
    return []


def open_array(path: str | os.PathLike[str], key: str | None = None) -> ArraySource:
    """Open one array of a file for row-sliced reading without loading it all.

    Only the header is read here; it must describe exactly the data the file holds.

    Args:
        path: a ``.npy``, ``.npz``, ``.pt``/``.pth`` or ``.safetensors`` file.
        key: the array's name for containers; ``None`` picks the only array (or raises if several).

    Returns:
        An :class:`ArraySource`.

    Raises:
        LoadError: missing/corrupt/truncated file, unsupported type, pickled content, unknown or
            ambiguous key, non-numeric dtype.

    Example:
        >>> import numpy as np, tempfile, os
        >>> from logitlab.io import open_array
        >>> f = os.path.join(tempfile.mkdtemp(), "z.npz")
        >>> np.savez_compressed(f, logits=np.arange(12.0).reshape(4, 3))
        >>> src = open_array(f, "logits")
        >>> src.shape, src.rows(2, 10)  # rows past the end are clipped, as in a slice
        ((4, 3), array([[ 6.,  7.,  8.],
               [ 9., 10., 11.]]))
    """
    p = Path(path)
    s = _suffix(p)
    _exists(p)
    if s == ".npy":
        if key is not None:
            raise LoadError(f"{p}: a .npy file holds one array; --key {key!r} does not apply")
        return _open_npy(p)
    if s == ".safetensors":
        return _open_safetensors(p, key)
    if s == ".npz":
        return _open_npz(p, key)
    return _open_pt(p, key)


def load_array(path: str | os.PathLike[str], key: str | None = None) -> np.ndarray:
    """Load one whole array from ``path`` (see :func:`open_array` for formats and errors).

    Example:
        >>> import numpy as np, tempfile, os
        >>> from logitlab.io import load_array
        >>> d = tempfile.mkdtemp(); f = os.path.join(d, "x.npy")
        >>> np.save(f, np.arange(3.0))
        >>> load_array(f)
        array([0., 1., 2.])
    """
    return open_array(path, key).read()


def check_row_size(src: ArraySource, values: int) -> None:
    """Refuse (from the header, before any read) rows of ``values`` entries that would take more
    than :data:`MAX_ROW_BYTES`.

    Raises:
        LoadError: the row is too large.
    """
    nbytes = values * src.dtype.itemsize
    if nbytes > MAX_ROW_BYTES:
        raise LoadError(
            f"{src.where}: one row holds {values} values ({_mib(nbytes)}), more than the "
            f"{_mib(MAX_ROW_BYTES)} a row may take in memory (each row is processed whole)"
        )


def iter_row_chunks(src: ArraySource | np.ndarray, rows: int) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(start, chunk)`` with at most ``rows`` rows each, in order."""
    if rows < 1:
        raise ValueError(f"rows must be >= 1, got {rows}")
    n = src.shape[0]
    for a in range(0, n, rows):
        b = min(n, a + rows)
        yield a, (src.rows(a, b) if isinstance(src, ArraySource) else np.asarray(src[a:b]))


def rows_for_budget(row_bytes: int, budget_bytes: int = 64 << 20) -> int:
    """Rows per chunk so that one chunk (in float32 work copies) stays under ``budget_bytes``."""
    return max(1, budget_bytes // max(1, row_bytes))


def load_predictions(
    path: str | os.PathLike[str],
    labels: str | os.PathLike[str] | None = None,
    *,
    scores_key: str | None = None,
    labels_key: str | None = None,
) -> tuple[ArraySource, np.ndarray]:
    """Open the scores (logits or probabilities) and labels of a prediction file.

    A container (``.npz``/``.pt``/``.safetensors``) is searched for ``logits`` (or ``probs``) and
    ``labels`` unless keys are given; a separate ``labels`` file may be passed instead. The
    headers are compared first: the labels are read only once their shape and dtype fit the
    scores.

    Returns:
        ``(scores, labels)``: the scores as an :class:`ArraySource` (rows = samples, last axis =
        classes, or 1-D for binary scores) and the labels as an int64 array.

    Raises:
        LoadError: missing keys, mismatched lengths, non-integer or negative labels.
    """
    p = Path(path)
    if scores_key is None and _suffix(p) != ".npy":
        keys = list_keys(p)
        for cand in ("logits", "probs", "probabilities", "scores"):
            if cand in keys:
                scores_key = cand
                break
        else:
            if len(keys) != 1:
                raise LoadError(f"{p}: no 'logits' or 'probs' array among {keys}; pass a key")
    scores = open_array(p, scores_key)
    if labels is None:
        if _suffix(p) == ".npy":
            raise LoadError(
                f"{p}: a .npy file holds only the scores; pass the labels file too "
                "(labels=..., or --labels FILE on the command line)"
            )
        lk = labels_key
        if lk is None:
            keys = list_keys(p)
            lk = next((c for c in ("labels", "label", "targets", "target", "y") if c in keys), None)
            if lk is None:
                raise LoadError(f"{p}: no 'labels' array among {keys}; pass --labels FILE")
        lab_src = open_array(p, lk)
    else:
        lab_src = open_array(labels, labels_key)
    lab_name = lab_src.where
    if len(lab_src.shape) != 1:
        raise LoadError(f"{lab_name}: labels must be 1-D, got shape {lab_src.shape}")
    if lab_src.dtype.kind not in "biuf":
        raise LoadError(f"{lab_name}: labels must be integer class indices, got {lab_src.dtype}")
    if not scores.shape:
        raise LoadError(f"{p}: scores must have at least one dimension, got a scalar")
    if scores.shape[0] != lab_src.shape[0]:
        raise LoadError(
            f"{p}: {scores.shape[0]} rows of scores but {lab_src.shape[0]} labels in {lab_name}"
        )
    if scores.shape[0] == 0:
        raise LoadError(f"{p}: no samples (empty input)")
    check_row_size(scores, math.prod(scores.shape[1:]))
    lab = lab_src.read()
    if lab.dtype.kind == "f":
        if not np.all(np.isfinite(lab)) or np.any(lab != np.round(lab)):
            raise LoadError(f"{lab_name}: labels must be integer class indices")
    return scores, lab.astype(np.int64)

"""Safe loading of logits/labels files and atomic writes, shared by every command.

Formats: ``.npy`` (``np.load(allow_pickle=False)``, memory-mapped), ``.npz``
(``allow_pickle=False``), ``.pt``/``.pth`` (``torch.load(weights_only=True, mmap=True)``) and
``.safetensors`` (read slice by slice). Nothing in a file is ever executed: pickled object arrays
and arbitrary pickles are refused with a :class:`LoadError`.

Large inputs are read through :class:`ArraySource`, which exposes ``shape``/``dtype`` and row slices
without loading the whole array, so that commands can stream fixed-size row chunks in bounded
memory.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import warnings
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "LoadError",
    "ArraySource",
    "open_array",
    "load_array",
    "list_keys",
    "load_predictions",
    "atomic_write",
    "iter_row_chunks",
]

SUFFIXES = (".npy", ".npz", ".pt", ".pth", ".safetensors")


class LoadError(ValueError):
    """A file could not be read as numeric arrays (the message names the file and the problem)."""


def _suffix(path: Path) -> str:
    s = path.suffix.lower()
    if s not in SUFFIXES:
        raise LoadError(f"{path}: unsupported file type {s or '(none)'!r}; use one of {SUFFIXES}")
    return s


def _check_numeric(path: Path, key: str | None, dtype: Any) -> None:
    kind = np.dtype(dtype).kind if not _is_torch_dtype(dtype) else "f"
    if kind not in "biuf":
        where = f"{path}" + (f"[{key!r}]" if key else "")
        raise LoadError(f"{where}: dtype {dtype} is not numeric")


def _is_torch_dtype(dtype: Any) -> bool:
    return type(dtype).__module__ == "torch"


def _torch_to_numpy(t: Any) -> np.ndarray:
    import torch

    t = t.detach().cpu()
    if t.dtype == torch.bfloat16:  # NumPy has no bfloat16: widen exactly to float32
        t = t.float()
    return t.numpy()


@dataclass
class ArraySource:
    """A read-only 2-D-or-more array in a file, read by row slices.

    Attributes:
        path: the file.
        key: the array's name inside the file (``None`` for ``.npy``).
        shape: the full shape.
        dtype: NumPy dtype of the rows returned (bfloat16 is widened to float32).
    """

    path: Path
    key: str | None
    shape: tuple[int, ...]
    dtype: np.dtype
    _get: Any

    def rows(self, start: int, stop: int) -> np.ndarray:
        """Rows ``start:stop`` along the first axis, as an in-memory NumPy array."""
        return np.asarray(self._get(start, stop))

    def read(self) -> np.ndarray:
        """The whole array in memory."""
        return (
            self.rows(0, self.shape[0] if self.shape else 0)
            if self.shape
            else np.asarray(self._get(None, None))
        )

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize


def list_keys(path: str | os.PathLike[str]) -> list[str]:
    """Names of the arrays stored in ``path`` (``[]`` for ``.npy``)."""
    p = Path(path)
    s = _suffix(p)
    if not p.exists():
        raise LoadError(f"{p}: no such file")
    if s == ".npy":
        return []
    if s == ".npz":
        try:
            with np.load(p, allow_pickle=False) as z:
                return list(z.files)
        except (OSError, ValueError, zipfile.BadZipFile) as exc:
            raise LoadError(f"{p}: not a readable .npz file ({exc})") from exc
    if s == ".safetensors":
        return list(_safetensors_header(p))
    obj = _torch_load(p)
    if isinstance(obj, dict):
        return [str(k) for k, v in obj.items() if _is_tensor_like(v)]
    return []


def _is_tensor_like(v: Any) -> bool:
    return type(v).__module__.startswith("torch") or isinstance(v, np.ndarray)


def _torch_load(p: Path) -> Any:
    try:
        import torch
    except ImportError as exc:  # pragma: no cover - torch is an optional extra
        raise LoadError(
            f"{p}: reading .pt files needs PyTorch (pip install 'logitlab[torch]')"
        ) from exc
    try:
        with warnings.catch_warnings():
            # torch warns about pickle protocols it then refuses anyway; the LoadError says it all.
            warnings.simplefilter("ignore", UserWarning)
            try:
                return torch.load(p, map_location="cpu", weights_only=True, mmap=True)
            except RuntimeError as exc:
                if "mmap" not in str(exc):
                    raise
                return torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # weights_only refuses pickled code: report, never execute
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise LoadError(
            f"{p}: cannot be loaded safely with torch.load(weights_only=True): {msg}"
        ) from exc


def _safetensors_header(p: Path) -> dict[str, Any]:
    import json
    import struct

    try:
        with open(p, "rb") as f:
            raw = f.read(8)
            if len(raw) != 8:
                raise ValueError("file too short")
            (n,) = struct.unpack("<Q", raw)
            if n > 100_000_000:
                raise ValueError("header too large")
            header = json.loads(f.read(n))
    except (OSError, ValueError) as exc:
        raise LoadError(f"{p}: not a readable .safetensors file ({exc})") from exc
    header.pop("__metadata__", None)
    return dict(header)


def open_array(path: str | os.PathLike[str], key: str | None = None) -> ArraySource:
    """Open one array of a file for row-sliced reading without loading it all.

    Args:
        path: a ``.npy``, ``.npz``, ``.pt``/``.pth`` or ``.safetensors`` file.
        key: the array's name for containers; ``None`` picks the only array (or raises if several).

    Returns:
        An :class:`ArraySource`.

    Raises:
        LoadError: missing/corrupt file, unsupported type, pickled content, unknown or ambiguous
            key, non-numeric dtype.
    """
    p = Path(path)
    s = _suffix(p)
    if not p.exists():
        raise LoadError(f"{p}: no such file")
    if s == ".npy":
        with open(p, "rb") as fh:
            if fh.read(6) != b"\x93NUMPY":
                raise LoadError(f"{p}: not a .npy file (bad magic number)")
        try:
            arr = np.load(p, mmap_mode="r", allow_pickle=False)
        except ValueError as exc:
            raise LoadError(f"{p}: refused: {exc} (pickled .npy content is never loaded)") from exc
        except OSError as exc:
            raise LoadError(f"{p}: not a readable .npy file ({exc})") from exc
        if key is not None:
            raise LoadError(f"{p}: a .npy file holds one array; --key {key!r} does not apply")
        _check_numeric(p, None, arr.dtype)
        return ArraySource(p, None, tuple(arr.shape), arr.dtype, _slicer(arr))
    if s == ".safetensors":
        header = _safetensors_header(p)
        name = _pick_key(p, list(header), key)
        from safetensors import safe_open

        dt = header[name].get("dtype", "")
        framework = "pt" if dt == "BF16" else "np"
        try:
            f = safe_open(str(p), framework=framework)
            sl = f.get_slice(name)
        except Exception as exc:
            raise LoadError(f"{p}: cannot read tensor {name!r} ({exc})") from exc
        shape = tuple(int(v) for v in header[name]["shape"])

        def get(a: int | None, b: int | None) -> np.ndarray:
            v = sl[a:b] if shape else f.get_tensor(name)
            return _torch_to_numpy(v) if framework == "pt" else np.asarray(v)

        probe = get(0, 0) if shape else get(None, None)
        _check_numeric(p, name, probe.dtype)
        return ArraySource(p, name, shape, probe.dtype, get)
    if s == ".npz":
        try:
            z = np.load(p, allow_pickle=False)
        except (OSError, ValueError, zipfile.BadZipFile) as exc:
            raise LoadError(f"{p}: not a readable .npz file ({exc})") from exc
        zk = _pick_key(p, list(z.files), key)
        try:
            arr = z[zk]
        except ValueError as exc:
            raise LoadError(
                f"{p}[{zk!r}]: refused: {exc} (pickled content is never loaded)"
            ) from exc
        _check_numeric(p, zk, arr.dtype)
        return ArraySource(p, zk, tuple(arr.shape), arr.dtype, _slicer(arr))
    obj = _torch_load(p)
    k: str | None = None
    if isinstance(obj, dict):
        keys = [str(kk) for kk, v in obj.items() if _is_tensor_like(v)]
        k = _pick_key(p, keys, key)
        obj = obj[k]
    else:
        if key is not None:
            raise LoadError(f"{p}: holds a single tensor; key {key!r} does not apply")
    if not _is_tensor_like(obj):
        raise LoadError(f"{p}: holds a {type(obj).__name__}, not a tensor")
    arr = _torch_to_numpy(obj) if not isinstance(obj, np.ndarray) else obj
    _check_numeric(p, k, arr.dtype)
    return ArraySource(p, k, tuple(arr.shape), arr.dtype, _slicer(arr))


def _slicer(arr: np.ndarray) -> Any:
    def get(a: int | None, b: int | None) -> np.ndarray:
        return arr[a:b] if arr.ndim else arr

    return get


def _pick_key(p: Path, keys: list[str], key: str | None) -> str:
    if key is not None:
        if key not in keys:
            raise LoadError(f"{p}: no array named {key!r}; it holds {keys}")
        return key
    if len(keys) == 1:
        return keys[0]
    if not keys:
        raise LoadError(f"{p}: holds no arrays")
    raise LoadError(f"{p}: holds several arrays {keys}; choose one with a key")


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
    ``labels`` unless keys are given; a separate ``labels`` file may be passed instead.

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
            raise LoadError(f"{p}: a .npy file holds only the scores; pass the labels file too")
        lk = labels_key
        if lk is None:
            keys = list_keys(p)
            lk = next((c for c in ("labels", "label", "targets", "target", "y") if c in keys), None)
            if lk is None:
                raise LoadError(f"{p}: no 'labels' array among {keys}; pass --labels FILE")
        lab = open_array(p, lk).read()
        lab_name = f"{p}[{lk!r}]"
    else:
        lab = open_array(labels, labels_key).read()
        lab_name = str(labels)
    if lab.ndim != 1:
        raise LoadError(f"{lab_name}: labels must be 1-D, got shape {lab.shape}")
    if lab.dtype.kind == "f":
        if not np.all(np.isfinite(lab)) or np.any(lab != np.round(lab)):
            raise LoadError(f"{lab_name}: labels must be integer class indices")
    elif lab.dtype.kind not in "biu":
        raise LoadError(f"{lab_name}: labels must be integer class indices, got {lab.dtype}")
    lab = lab.astype(np.int64)
    if not scores.shape:
        raise LoadError(f"{p}: scores must have at least one dimension, got a scalar")
    if scores.shape[0] != lab.shape[0]:
        raise LoadError(
            f"{p}: {scores.shape[0]} rows of scores but {lab.shape[0]} labels in {lab_name}"
        )
    if scores.shape[0] == 0:
        raise LoadError(f"{p}: no samples (empty input)")
    return scores, lab


def atomic_write(path: str | os.PathLike[str], data: str | bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file and ``os.replace``: never a partial file."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", dir=p.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
        # mkstemp creates 0600 files: give the result the usual permissions of a new file
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(tmp, 0o666 & ~mask)
        os.replace(tmp, p)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise

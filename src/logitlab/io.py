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
        source_dtype: name of the dtype stored in the file (``"bfloat16"`` for such tensors).
    """

    path: Path
    key: str | None
    shape: tuple[int, ...]
    dtype: np.dtype
    _get: Any
    source_dtype: str = ""  # the stored dtype's name ("bfloat16" where rows come as float32)

    def __post_init__(self) -> None:
        if not self.source_dtype:
            self.source_dtype = str(self.dtype)

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
        return ArraySource(p, name, shape, probe.dtype, get, "bfloat16" if dt == "BF16" else "")
    if s == ".npz":
        return _open_npz(p, key)
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
    if isinstance(obj, np.ndarray):
        _check_numeric(p, k, obj.dtype)
        return ArraySource(p, k, tuple(obj.shape), obj.dtype, _slicer(obj))
    # torch.load(mmap=True) maps the storage: convert row slices as they are asked for, so that
    # a bfloat16 tensor is widened chunk by chunk rather than as one float32 copy of the file
    t = obj.detach()
    probe = _torch_to_numpy(t.reshape(-1)[:0])
    _check_numeric(p, k, probe.dtype)
    src_name = str(t.dtype).removeprefix("torch.")

    def get_t(a: int | None, b: int | None) -> np.ndarray:
        return _torch_to_numpy(t[a:b] if t.ndim else t)

    return ArraySource(p, k, tuple(t.shape), probe.dtype, get_t, src_name)


def _open_npz(p: Path, key: str | None) -> ArraySource:
    """A member of an ``.npz``: memory-mapped when stored, streamed through the decompressor when
    compressed (``np.savez_compressed``); the member is never read whole."""
    try:
        zf = zipfile.ZipFile(p)
    except (OSError, zipfile.BadZipFile) as exc:
        raise LoadError(f"{p}: not a readable .npz file ({exc})") from exc
    with zf:
        names = [n.removesuffix(".npy") for n in zf.namelist() if n.endswith(".npy")]
        zk = _pick_key(p, names, key)
        info = zf.getinfo(zk + ".npy")
        try:
            with zf.open(info) as fh:
                version = np.lib.format.read_magic(fh)
                read_header = (
                    np.lib.format.read_array_header_1_0
                    if version == (1, 0)
                    else np.lib.format.read_array_header_2_0
                )
                if version not in ((1, 0), (2, 0)):
                    raise ValueError(f"unsupported .npy format version {version}")
                shape, fortran, dtype = read_header(fh)
                header_len = fh.tell()
        except (ValueError, OSError, zipfile.BadZipFile) as exc:
            raise LoadError(f"{p}[{zk!r}]: not a readable .npy member ({exc})") from exc
    if dtype.hasobject:
        raise LoadError(
            f"{p}[{zk!r}]: refused: object arrays hold pickled content, which is never loaded"
        )
    _check_numeric(p, zk, dtype)
    shape = tuple(int(v) for v in shape)
    if fortran and len(shape) > 1:
        # column-major rows are not contiguous: read the member whole (np.load, no pickle)
        with np.load(p, allow_pickle=False) as z:
            arr = z[zk]
        return ArraySource(p, zk, shape, arr.dtype, _slicer(arr))
    if info.compress_type == zipfile.ZIP_STORED:
        with open(p, "rb") as fh:
            fh.seek(info.header_offset)
            local = fh.read(30)
            if local[:4] != b"PK\x03\x04":
                raise LoadError(f"{p}[{zk!r}]: corrupt zip entry")
            n_name = int.from_bytes(local[26:28], "little")
            n_extra = int.from_bytes(local[28:30], "little")
        offset = info.header_offset + 30 + n_name + n_extra + header_len
        count = int(np.prod(shape, dtype=np.int64))
        if offset + count * dtype.itemsize > p.stat().st_size:
            raise LoadError(f"{p}[{zk!r}]: truncated member")
        arr = np.memmap(p, dtype=dtype, mode="r", offset=offset, shape=shape or (1,))
        return ArraySource(p, zk, shape, dtype, _slicer(arr if shape else arr.reshape(())))
    return ArraySource(
        p, zk, shape, dtype, _CompressedRows(p, zk + ".npy", header_len, shape, dtype)
    )


class _CompressedRows:
    """Row slices of a compressed ``.npz`` member, read forward through the decompressor (a
    request behind the current position reopens the member). Thread-safe."""

    def __init__(
        self, p: Path, member: str, header_len: int, shape: tuple[int, ...], dtype: np.dtype
    ) -> None:
        import threading

        self.p, self.member, self.header_len = p, member, header_len
        self.shape, self.dtype = shape, dtype
        self.row_bytes = int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize
        self._lock = threading.Lock()
        self._zf: zipfile.ZipFile | None = None
        self._fh: Any = None
        self._row = 0

    def _reopen(self) -> None:
        if self._zf is None:
            self._zf = zipfile.ZipFile(self.p)
        if self._fh is not None:
            self._fh.close()
        self._fh = self._zf.open(self.member)
        self._fh.read(self.header_len)
        self._row = 0

    def __call__(self, a: int | None, b: int | None) -> np.ndarray:
        n = self.shape[0] if self.shape else 1
        a, b, _ = slice(a, b).indices(n)
        b = max(a, b)
        with self._lock:
            try:
                if self._fh is None or a < self._row:
                    self._reopen()
                skip = (a - self._row) * self.row_bytes
                while skip > 0:
                    skip -= len(self._fh.read(min(skip, 1 << 24)))
                data = self._fh.read((b - a) * self.row_bytes)
            except (OSError, zipfile.BadZipFile, EOFError) as exc:
                raise LoadError(f"{self.p}[{self.member}]: cannot read ({exc})") from exc
            if len(data) != (b - a) * self.row_bytes:
                raise LoadError(f"{self.p}[{self.member}]: truncated member")
            self._row = b
        out = np.frombuffer(data, dtype=self.dtype).reshape((b - a, *self.shape[1:]))
        return out if self.shape else out.reshape(())


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

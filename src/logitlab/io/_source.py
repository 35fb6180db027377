"""What every reader of :mod:`logitlab.io` shares: the error type, the limits, and
:class:`ArraySource`, the row-sliceable view of an array in a file."""

from __future__ import annotations

import math
import struct
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

try:  # pragma: no branch - lzma is optional in CPython builds
    from lzma import LZMAError as _LZMAError
except ImportError:  # pragma: no cover
    _LZMAError = OSError  # type: ignore[misc, assignment]

SUFFIXES = (".npy", ".npz", ".pt", ".pth", ".safetensors")


#: Largest compressed Fortran-ordered ``.npz`` member read whole (its rows are not contiguous in
#: the compressed stream, so it cannot be streamed by rows).
WHOLE_MEMBER_LIMIT = 256 << 20


#: Largest row (one sample: all classes) a command holds in memory, as stored. A row is the unit
#: of every computation (a softmax needs all of its classes) and its work copies take 15 to 25
#: times its size, so a small compressed file declaring one huge row would otherwise need GBs.
#: 32 MiB is 8M float32 classes.
MAX_ROW_BYTES = 32 << 20


_MAX_NPY_HEADER = 1 << 16  # a numeric .npy header is under 200 bytes; numpy allows 10000 chars


_MAX_ST_HEADER = 16 << 20  # JSON of a safetensors header; a logits file's is under 1 KiB


_PIECE = 4 << 20  # bytes per read from a decompressor


# What zipfile and its decompressors raise on corrupt, truncated, encrypted or unsupported members
# (zlib.error for bad deflate data, EOFError for a stream that ends early, RuntimeError for an
# encrypted member, NotImplementedError for an unknown compression method, struct.error and
# OverflowError for mangled zip64 records).
_ZIP_ERRORS = (
    OSError,
    EOFError,
    ValueError,
    zipfile.BadZipFile,
    zlib.error,
    _LZMAError,
    RuntimeError,
    NotImplementedError,
    struct.error,
    OverflowError,
)


class LoadError(ValueError):
    """A file could not be read as numeric arrays (the message names the file and the problem)."""


def _suffix(path: Path) -> str:
    s = path.suffix.lower()
    if s not in SUFFIXES:
        raise LoadError(f"{path}: unsupported file type {s or '(none)'!r}; use one of {SUFFIXES}")
    return s


def _exists(p: Path) -> None:
    if not p.exists():
        raise LoadError(f"{p}: no such file")
    if p.is_dir():
        raise LoadError(f"{p}: is a directory, not a file")


def _check_numeric(where: str, dtype: Any) -> None:
    kind = np.dtype(dtype).kind if not _is_torch_dtype(dtype) else "f"
    if kind not in "biuf":
        raise LoadError(f"{where}: dtype {dtype} is not numeric")


def _is_torch_dtype(dtype: Any) -> bool:
    return type(dtype).__module__ == "torch"


def _mib(nbytes: int) -> str:
    return f"{nbytes} bytes" if nbytes < 1 << 20 else f"{nbytes / 2**20:.4g} MiB"


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
            self.source_dtype = self.dtype.name  # "float16" also for big-endian ">f2"

    @property
    def where(self) -> str:
        """The file, and the member for containers: the prefix of every error about this array."""
        return f"{self.path}" + (f"[{self.key!r}]" if self.key is not None else "")

    def rows(self, start: int, stop: int) -> np.ndarray:
        """Rows ``start:stop`` along the first axis (clipped like a Python slice), in memory."""
        if not self.shape:
            raise LoadError(f"{self.where}: holds a scalar, which has no rows")
        a, b, _ = slice(start, stop).indices(self.shape[0])
        b = max(a, b)
        try:
            return np.asarray(self._get(a, b))
        except MemoryError as exc:  # e.g. the labels of 2**40 samples a small zip can declare
            size = (b - a) * math.prod(self.shape[1:]) * self.dtype.itemsize
            raise LoadError(
                f"{self.where}: rows {a}:{b} ({_mib(size)}) do not fit in memory"
            ) from exc

    def read(self) -> np.ndarray:
        """The whole array in memory."""
        return self.rows(0, self.shape[0]) if self.shape else np.asarray(self._get(None, None))

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize


def _check_size(where: str, shape: tuple[int, ...], dtype: np.dtype, avail: int) -> int:
    """The data size the header declares (exact Python ints: no overflow warning); refused when
    the file does not hold that many bytes."""
    need = math.prod(shape) * dtype.itemsize
    if need > avail:
        raise LoadError(
            f"{where}: truncated or corrupt: the header declares shape {shape} of {dtype} "
            f"({_mib(need)}) but only {_mib(max(avail, 0))} of data follow"
        )
    return need


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

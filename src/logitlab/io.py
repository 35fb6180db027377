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

import ast
import math
import os
import re
import struct
import threading
import warnings
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from logitlab._array import to_numpy
from logitlab._outputs import atomic_write, write_files

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

try:  # pragma: no branch - lzma is optional in CPython builds
    from lzma import LZMAError as _LZMAError
except ImportError:  # pragma: no cover
    _LZMAError = OSError  # type: ignore[misc, assignment]

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


# --------------------------------------------------------------------------- .npy headers

_NPY_VERSIONS = {(1, 0): (2, "latin1"), (2, 0): (4, "latin1"), (3, 0): (4, "utf8")}
_NUMERIC_DESCR = re.compile(r"[<>|=]?(?:[biuf]\d{1,2}|\?)")
_OBJECT_DESCR = re.compile(r"[<>|=]?O\d*")


def _read_npy_header(fh: IO[bytes], where: str) -> tuple[tuple[int, ...], bool, np.dtype, int]:
    """Parse a ``.npy`` header from ``fh``: ``(shape, fortran_order, dtype, header length)``.

    Stricter than ``np.lib.format``: only plain numeric dtypes, a shape of non-negative ints, and
    a bounded header; never numpy's tokenizer fallback (which raised ``tokenize.TokenError`` on a
    cut-off header).

    Raises:
        LoadError: anything else, and object arrays (pickled content, never loaded).
    """
    magic = fh.read(8)
    if len(magic) < 8 or magic[:6] != b"\x93NUMPY":
        raise LoadError(f"{where}: not a .npy file (bad magic number)")
    version = (magic[6], magic[7])
    if version not in _NPY_VERSIONS:
        raise LoadError(f"{where}: unsupported .npy format version {version[0]}.{version[1]}")
    n_len, encoding = _NPY_VERSIONS[version]
    raw = fh.read(n_len)
    hlen = int.from_bytes(raw, "little")
    if len(raw) < n_len:
        raise LoadError(f"{where}: truncated .npy header")
    if hlen > _MAX_NPY_HEADER:
        raise LoadError(f"{where}: .npy header of {hlen} bytes is too large for a numeric array")
    text = fh.read(hlen)
    if len(text) < hlen:
        raise LoadError(f"{where}: truncated .npy header ({len(text)} of {hlen} bytes)")
    d = _literal(text, encoding, version, where)
    if not isinstance(d, dict) or set(d) != {"descr", "fortran_order", "shape"}:
        raise LoadError(f"{where}: the .npy header is not a {{descr, fortran_order, shape}} dict")
    shape, fortran, descr = d["shape"], d["fortran_order"], d["descr"]
    if not isinstance(shape, tuple) or any(type(v) is not int or v < 0 for v in shape):
        raise LoadError(f"{where}: invalid shape {shape!r} in the .npy header")
    if type(fortran) is not bool:
        raise LoadError(f"{where}: invalid fortran_order {fortran!r} in the .npy header")
    if isinstance(descr, str) and _OBJECT_DESCR.fullmatch(descr):
        raise LoadError(
            f"{where}: refused: object arrays hold pickled content, which is never loaded"
        )
    if not (isinstance(descr, str) and _NUMERIC_DESCR.fullmatch(descr)):
        raise LoadError(f"{where}: dtype {descr!r} is not numeric")
    try:
        dtype = np.dtype(descr)
    except TypeError as exc:  # e.g. 'f3': the pattern admits sizes numpy does not have
        raise LoadError(f"{where}: dtype {descr!r} is not numeric ({exc})") from exc
    return shape, fortran, dtype, 8 + n_len + hlen


def _literal(text: bytes, encoding: str, version: tuple[int, int], where: str) -> Any:
    try:
        s = text.decode(encoding)
    except UnicodeDecodeError as exc:
        raise LoadError(f"{where}: the .npy header is not {encoding} text") from exc
    # literal_eval only builds literals; a hostile header can still be malformed (SyntaxError,
    # ValueError), unhashable ({[1]: 2} is a TypeError) or deeply nested (RecursionError,
    # MemoryError).
    errors = (SyntaxError, ValueError, TypeError, MemoryError, RecursionError)
    try:
        return ast.literal_eval(s)
    except errors as exc:
        if version < (3, 0) and re.search(r"\dL\b", s):
            # headers written by Python 2 spell long ints 12L (numpy's _filter_header)
            try:
                return ast.literal_eval(re.sub(r"(\d)L\b", r"\1", s))
            except errors:
                pass
        raise LoadError(f"{where}: unreadable .npy header ({type(exc).__name__})") from exc


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


def _memmap(
    p: Path, dtype: np.dtype, offset: int, shape: tuple[int, ...], fortran: bool, where: str
) -> np.ndarray:
    if math.prod(shape) == 0:
        return np.zeros(shape, dtype)  # nothing to map (mmap refuses empty ranges)
    try:
        m = np.memmap(
            p,
            dtype=dtype,
            mode="r",
            offset=offset,
            shape=shape or (1,),
            order="F" if fortran else "C",
        )
    except (OSError, ValueError) as exc:
        raise LoadError(f"{where}: cannot map the data ({exc})") from exc
    return m if shape else m.reshape(())


def _open_npy(p: Path) -> ArraySource:
    where = str(p)
    try:
        with open(p, "rb") as fh:
            shape, fortran, dtype, offset = _read_npy_header(fh, where)
            size = os.fstat(fh.fileno()).st_size
    except OSError as exc:
        raise LoadError(f"{p}: cannot read ({exc.strerror or exc})") from exc
    _check_size(where, shape, dtype, size - offset)
    arr = _memmap(p, dtype, offset, shape, fortran, where)
    return ArraySource(p, None, shape, dtype, _slicer(arr))


# --------------------------------------------------------------------------- .npz


def _zip(p: Path) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(p)
    except _ZIP_ERRORS as exc:
        raise LoadError(f"{p}: not a readable .npz file ({exc})") from exc


def _npz_keys(zf: zipfile.ZipFile) -> list[str]:
    """The arrays of an ``.npz``: its ``.npy`` members, without the suffix. ``np.load``'s
    ``files`` also lists the other members of the zip, whose raw bytes are no array."""
    return [n.removesuffix(".npy") for n in zf.namelist() if n.endswith(".npy")]


def _npz_key(p: Path, zf: zipfile.ZipFile, key: str | None) -> str:
    keys = _npz_keys(zf)
    if key is not None and key not in keys and key in zf.namelist():
        raise LoadError(
            f"{p}: the member {key!r} is not a .npy array (np.load gives its raw bytes); only "
            f"the arrays can be read: {keys}"
        )
    return _pick_key(p, keys, key)


def _open_npz(p: Path, key: str | None) -> ArraySource:
    """A member of an ``.npz``: memory-mapped when stored, streamed through the decompressor when
    compressed (``np.savez_compressed``); the member is never read whole, except a compressed
    Fortran-ordered one of at most :data:`WHOLE_MEMBER_LIMIT` bytes."""
    with _zip(p) as zf:
        zk = _npz_key(p, zf, key)
        info = zf.getinfo(zk + ".npy")
        where = f"{p}[{zk!r}]"
        if info.flag_bits & 0x1:
            raise LoadError(f"{where}: the member is encrypted")
        try:
            with zf.open(info) as fh:
                shape, fortran, dtype, header_len = _read_npy_header(fh, where)
        except LoadError:
            raise
        except _ZIP_ERRORS as exc:
            raise LoadError(f"{where}: cannot read the member ({exc})") from exc
    # the zip directory's size of the member bounds what any read can return: a header that
    # declares more is refused here, before any data is decompressed
    nbytes = _check_size(where, shape, dtype, info.file_size - header_len)
    if info.compress_type == zipfile.ZIP_STORED:
        try:
            with open(p, "rb") as fh:
                fh.seek(info.header_offset)
                local = fh.read(30)
                size = os.fstat(fh.fileno()).st_size
        except OSError as exc:
            raise LoadError(f"{where}: cannot read ({exc.strerror or exc})") from exc
        if len(local) < 30 or local[:4] != b"PK\x03\x04":
            raise LoadError(f"{where}: corrupt zip entry")
        n_name = int.from_bytes(local[26:28], "little")
        n_extra = int.from_bytes(local[28:30], "little")
        offset = info.header_offset + 30 + n_name + n_extra + header_len
        _check_size(where, shape, dtype, size - offset)
        arr = _memmap(p, dtype, offset, shape, fortran, where)
        return ArraySource(p, zk, shape, dtype, _slicer(arr))
    reader = _CompressedRows(p, zk + ".npy", header_len, shape, dtype, where)
    if fortran and len(shape) > 1:
        # column-major data: the rows of any chunk are spread over the whole stream
        if nbytes > WHOLE_MEMBER_LIMIT:
            raise LoadError(
                f"{where}: a compressed Fortran-ordered member of {_mib(nbytes)} cannot be "
                f"streamed by rows (limit {_mib(WHOLE_MEMBER_LIMIT)}); save it C-ordered "
                "(np.ascontiguousarray) or uncompressed (np.savez)"
            )
        flat = reader.read_flat()
        arr = flat.reshape(shape, order="F")
        return ArraySource(p, zk, shape, dtype, _slicer(arr))
    return ArraySource(p, zk, shape, dtype, reader)


class _CompressedRows:
    """Row slices of a compressed ``.npz`` member, read forward through the decompressor (a
    request behind the current position reopens the member). Thread-safe. Every read loop ends
    at end-of-data: a member that holds fewer bytes than its header declares is a LoadError."""

    def __init__(
        self,
        p: Path,
        member: str,
        header_len: int,
        shape: tuple[int, ...],
        dtype: np.dtype,
        where: str,
    ) -> None:
        self.p, self.member, self.header_len, self.where = p, member, header_len, where
        self.shape, self.dtype = shape, dtype
        self.row_bytes = math.prod(shape[1:]) * dtype.itemsize
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
        self._row = 0
        self._fill(memoryview(bytearray(self.header_len)))

    def _fill(self, out: memoryview) -> None:
        """Fill ``out`` from the member, or raise at end-of-data (never loops on b"")."""
        done = 0
        while done < len(out):
            piece = self._fh.read(min(len(out) - done, _PIECE))
            if not piece:
                raise LoadError(f"{self.where}: truncated member (the data ends early)")
            out[done : done + len(piece)] = piece
            done += len(piece)

    def _skip(self, nbytes: int) -> None:
        buf = memoryview(bytearray(min(nbytes, _PIECE)))
        while nbytes > 0:
            n = min(nbytes, len(buf))
            self._fill(buf[:n])
            nbytes -= n

    def _read(self, a: int, b: int, out: memoryview) -> None:
        with self._lock:
            try:
                if self._fh is None or a < self._row:
                    self._reopen()
                self._skip((a - self._row) * self.row_bytes)
                self._fill(out)
            except LoadError:
                self._close()
                raise
            except _ZIP_ERRORS as exc:
                self._close()
                raise LoadError(f"{self.where}: cannot read the member ({exc})") from exc
            self._row = b

    def _close(self) -> None:
        # a failed stream is never resumed: the next request reopens it
        if self._fh is not None:
            self._fh.close()
        self._fh = None

    def __call__(self, a: int | None, b: int | None) -> np.ndarray:
        n = self.shape[0] if self.shape else 1
        a, b, _ = slice(a, b).indices(n)
        b = max(a, b)
        out = np.empty(((b - a) * self.row_bytes) // self.dtype.itemsize, self.dtype)
        self._read(a, b, memoryview(out).cast("B"))  # type: ignore[arg-type]
        return out.reshape((b - a, *self.shape[1:])) if self.shape else out.reshape(())

    def read_flat(self) -> np.ndarray:
        """The whole member's data as a flat array, in stored order."""
        try:
            out = np.empty(math.prod(self.shape), self.dtype)
        except MemoryError as exc:
            raise LoadError(f"{self.where}: the member does not fit in memory") from exc
        self._read(0, 0, memoryview(out).cast("B"))  # type: ignore[arg-type]
        self._close()
        return out


def _slicer(arr: np.ndarray) -> Any:
    def get(a: int | None, b: int | None) -> np.ndarray:
        return arr[a:b] if arr.ndim else arr

    return get


# --------------------------------------------------------------------------- .safetensors

_ST_DTYPES = {
    "BOOL": "|b1",
    "U8": "|u1",
    "I8": "|i1",
    "U16": "<u2",
    "I16": "<i2",
    "U32": "<u4",
    "I32": "<i4",
    "U64": "<u8",
    "I64": "<i8",
    "F16": "<f2",
    "BF16": "<u2",  # read as its bit pattern, widened exactly to float32 per slice
    "F32": "<f4",
    "F64": "<f8",
}


def _safetensors_header(p: Path) -> tuple[dict[str, dict[str, Any]], int]:
    """The validated tensor entries of a safetensors header and the offset of the data buffer.

    Every entry must be ``{"dtype": str, "shape": [ints >= 0], "data_offsets": [begin, end]}``
    with ``end - begin`` equal to the size its shape and dtype declare, inside the file.
    """
    import json

    try:
        with open(p, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            raw = f.read(8)
            if len(raw) != 8:
                raise LoadError(f"{p}: not a readable .safetensors file (file too short)")
            (n,) = struct.unpack("<Q", raw)
            if n > min(_MAX_ST_HEADER, size - 8):
                what = "larger than the file" if n > size - 8 else "too large"
                raise LoadError(f"{p}: not a readable .safetensors file (header {what})")
            text = f.read(n)
    except OSError as exc:
        raise LoadError(f"{p}: cannot read ({exc.strerror or exc})") from exc
    try:
        header = json.loads(text)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeDecodeError
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise LoadError(f"{p}: not a readable .safetensors file ({msg})") from exc
    if not isinstance(header, dict):
        raise LoadError(
            f"{p}: not a readable .safetensors file (the header is a JSON "
            f"{type(header).__name__}, not an object)"
        )
    data_len = size - 8 - n
    out: dict[str, dict[str, Any]] = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        where = f"{p}[{name!r}]"
        if not isinstance(entry, dict):
            raise LoadError(f"{where}: invalid safetensors entry {entry!r:.60}")
        dt, shape, offs = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
        if not isinstance(dt, str):
            raise LoadError(f"{where}: invalid safetensors dtype {dt!r:.60}")
        if not isinstance(shape, list) or any(type(v) is not int or v < 0 for v in shape):
            raise LoadError(f"{where}: invalid safetensors shape {shape!r:.60}")
        if not (
            isinstance(offs, list)
            and len(offs) == 2
            and all(type(v) is int for v in offs)
            and 0 <= offs[0] <= offs[1] <= data_len
        ):
            raise LoadError(f"{where}: invalid data_offsets {offs!r:.60} (data: {data_len} bytes)")
        if dt in _ST_DTYPES:
            itemsize = np.dtype(_ST_DTYPES[dt]).itemsize
            need = math.prod(shape) * itemsize
            if need != offs[1] - offs[0]:
                raise LoadError(
                    f"{where}: shape {tuple(shape)} of {dt} needs {_mib(need)} but its "
                    f"data_offsets span {_mib(offs[1] - offs[0])}"
                )
        out[name] = {"dtype": dt, "shape": tuple(shape), "offset": 8 + n + offs[0]}
    return out, 8 + n


def _open_safetensors(p: Path, key: str | None) -> ArraySource:
    header, _ = _safetensors_header(p)
    name = _pick_key(p, list(header), key)
    entry = header[name]
    where = f"{p}[{name!r}]"
    dt = entry["dtype"]
    if dt not in _ST_DTYPES:
        raise LoadError(f"{where}: dtype {dt} is not numeric or not supported")
    shape = entry["shape"]
    arr = _memmap(p, np.dtype(_ST_DTYPES[dt]), entry["offset"], shape, False, where)
    if dt != "BF16":
        return ArraySource(p, name, shape, arr.dtype, _slicer(arr))

    def get_bf16(a: int | None, b: int | None) -> np.ndarray:
        # bfloat16 is the top half of a float32: exact widening by a 16-bit shift
        bits = np.asarray(arr[a:b] if arr.ndim else arr)
        return (bits.astype(np.uint32) << 16).view(np.float32)

    return ArraySource(p, name, shape, np.dtype(np.float32), get_bf16, "bfloat16")


# --------------------------------------------------------------------------- .pt


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


def _open_pt(p: Path, key: str | None) -> ArraySource:
    obj = _torch_load(p)
    k: str | None = None
    if isinstance(obj, dict):
        keys = [str(kk) for kk, v in obj.items() if _is_tensor_like(v)]
        k = _pick_key(p, keys, key)
        obj = obj[k]
    elif key is not None:
        raise LoadError(f"{p}: holds a single tensor; key {key!r} does not apply")
    where = f"{p}" + (f"[{k!r}]" if k is not None else "")
    if not _is_tensor_like(obj):
        raise LoadError(f"{p}: holds a {type(obj).__name__}, not a tensor")
    if isinstance(obj, np.ndarray):
        _check_numeric(where, obj.dtype)
        return ArraySource(p, k, tuple(obj.shape), obj.dtype, _slicer(obj))
    # torch.load(mmap=True) maps the storage: convert row slices as they are asked for, so that
    # a bfloat16 tensor is widened chunk by chunk rather than as one float32 copy of the file
    t = obj.detach()
    probe = to_numpy(None, t.reshape(-1)[:0])
    _check_numeric(where, probe.dtype)
    src_name = str(t.dtype).removeprefix("torch.")

    def get_t(a: int | None, b: int | None) -> np.ndarray:
        return to_numpy(None, t[a:b] if t.ndim else t)  # bfloat16: float32

    return ArraySource(p, k, tuple(t.shape), probe.dtype, get_t, src_name)


# --------------------------------------------------------------------------- public API


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
            raise LoadError(f"{p}: a .npy file holds only the scores; pass the labels file too")
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

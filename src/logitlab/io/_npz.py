"""``.npz`` containers: each member's header checked against the member before its data is read;
stored members memory-mapped, compressed ones streamed through the decompressor."""

from __future__ import annotations

import math
import os
import threading
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from logitlab.io._npy import _memmap, _read_npy_header
from logitlab.io._source import (
    _PIECE,
    _ZIP_ERRORS,
    WHOLE_MEMBER_LIMIT,
    ArraySource,
    LoadError,
    _check_size,
    _mib,
    _pick_key,
    _slicer,
)


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

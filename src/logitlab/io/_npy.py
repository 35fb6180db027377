"""``.npy`` files: the header parsed and checked against the file before any data is read, then a
memory map."""

from __future__ import annotations

import ast
import math
import os
import re
from pathlib import Path
from typing import IO, Any

import numpy as np

from logitlab.io._source import (
    _MAX_NPY_HEADER,
    ArraySource,
    LoadError,
    _check_size,
    _slicer,
)

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

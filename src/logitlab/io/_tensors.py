"""``.safetensors`` (header JSON checked, then a memory map) and ``.pt``/``.pth`` files
(``torch.load(weights_only=True, mmap=True)``: nothing in the file is executed)."""

from __future__ import annotations

import math
import os
import struct
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from logitlab._array import to_numpy
from logitlab.io._npy import _memmap
from logitlab.io._source import (
    _MAX_ST_HEADER,
    ArraySource,
    LoadError,
    _check_numeric,
    _mib,
    _pick_key,
    _slicer,
)

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

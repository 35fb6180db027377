"""Builders of hostile and broken input files (issue 14), shared by the hostile-input tests.

Each builder writes raw bytes (``.npy`` headers, zip members, safetensors JSON) so that the files
are exactly what a malicious or damaged producer would write, not what NumPy would.
"""

from __future__ import annotations

import io
import json
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np

NPY_MAGIC = b"\x93NUMPY"


def npy_header(text: str, version: tuple[int, int] = (1, 0)) -> bytes:
    """Magic, version, length and ``text`` padded as numpy pads it (to 64 bytes, then newline)."""
    h = text.encode("latin1" if version < (3, 0) else "utf8")
    n_len = 2 if version == (1, 0) else 4
    pad = -(len(NPY_MAGIC) + 2 + n_len + len(h) + 1) % 64
    h += b" " * pad + b"\n"
    return NPY_MAGIC + bytes(version) + len(h).to_bytes(n_len, "little") + h


def npy_dict(descr: str, shape: tuple[int, ...], fortran: bool = False) -> str:
    return f"{{'descr': {descr!r}, 'fortran_order': {fortran}, 'shape': {shape!r}, }}"


def npy_bytes(arr: np.ndarray) -> bytes:
    b = io.BytesIO()
    np.save(b, arr, allow_pickle=False)
    return b.getvalue()


def write_zip(path: Path, members: dict[str, bytes], compress: int = zipfile.ZIP_DEFLATED) -> Path:
    with zipfile.ZipFile(path, "w", compress) as z:
        for name, data in members.items():
            z.writestr(name, data)
    return path


def safetensors_bytes(header: object, data: bytes = b"") -> bytes:
    h = json.dumps(header).encode() if not isinstance(header, bytes) else header
    return struct.pack("<Q", len(h)) + h + data


def _gf2_times(mat: list[int], vec: int) -> int:
    out, i = 0, 0
    while vec:
        if vec & 1:
            out ^= mat[i]
        vec >>= 1
        i += 1
    return out


def _gf2_square(mat: list[int]) -> list[int]:
    return [_gf2_times(mat, v) for v in mat]


def crc32_combine(crc1: int, crc2: int, len2: int) -> int:
    """CRC-32 of ``A + B`` from ``crc32(A)``, ``crc32(B)`` and ``len(B)`` (zlib's
    ``crc32_combine``: ``crc1`` times x^(8 len2) in GF(2)[x] modulo the CRC polynomial)."""
    if len2 == 0:
        return crc1
    odd = [0xEDB88320] + [1 << n for n in range(31)]  # the operator for one zero bit
    even = _gf2_square(odd)  # two zero bits
    odd = _gf2_square(even)  # four zero bits
    while True:
        even = _gf2_square(odd)
        if len2 & 1:
            crc1 = _gf2_times(even, crc1)
        len2 >>= 1
        if not len2:
            break
        odd = _gf2_square(even)
        if len2 & 1:
            crc1 = _gf2_times(odd, crc1)
        len2 >>= 1
        if not len2:
            break
    return crc1 ^ crc2


def deflated_zeros(head: bytes, n_zeros: int) -> tuple[bytes, int, int]:
    """A raw deflate stream of ``head`` then ``n_zeros`` zero bytes, built in time independent
    of ``n_zeros``: after a full flush the compressor keeps no history, so each MiB of zeros
    compresses to the same byte-aligned blocks, which are repeated. Returns ``(stream, crc32,
    uncompressed size)``."""
    mib = 1 << 20
    zero = bytes(mib)
    k, rest = divmod(n_zeros, mib)
    co = zlib.compressobj(9, zlib.DEFLATED, -15)
    parts = [co.compress(head) + co.flush(zlib.Z_FULL_FLUSH)]
    if k:
        block = co.compress(zero) + co.flush(zlib.Z_FULL_FLUSH)
        parts.append(block)
        if k > 1:
            again = co.compress(zero) + co.flush(zlib.Z_FULL_FLUSH)
            assert again == block  # no history after a full flush, as claimed
            parts.append(block * (k - 1))
    parts.append(co.compress(bytes(rest)) + co.flush())
    crc, run, run_len = zlib.crc32(head), zlib.crc32(zero), mib  # run: crc32 of run_len zeros
    while k:
        if k & 1:
            crc = crc32_combine(crc, run, run_len)
        run, run_len = crc32_combine(run, run, run_len), 2 * run_len
        k >>= 1
    crc = crc32_combine(crc, zlib.crc32(bytes(rest)), rest)
    return b"".join(parts), crc, len(head) + n_zeros


def write_zip_raw(path: Path, members: dict[str, bytes | tuple[bytes, int, int]]) -> Path:
    """A zip file written field by field: a ``bytes`` member is stored, a ``(raw deflate stream,
    crc32, size)`` member (from :func:`deflated_zeros`) is deflated."""
    local, central = bytearray(), bytearray()
    for name, m in members.items():
        if isinstance(m, bytes):
            method, data, crc, size = 0, m, zlib.crc32(m), len(m)
        else:
            method, (data, crc, size) = 8, m
        nm = name.encode()
        off = len(local)
        fields = (20, 0, method, 0, 0x21, crc, len(data), size, len(nm), 0)
        local += struct.pack("<IHHHHHIIIHH", 0x04034B50, *fields) + nm + data
        central += struct.pack("<IH", 0x02014B50, 20) + struct.pack("<HHHHHIIIHH", *fields)
        central += struct.pack("<HHHII", 0, 0, 0, 0, off) + nm
    n = len(members)
    eocd = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, n, n, len(central), len(local), 0)
    path.write_bytes(bytes(local + central + eocd))
    return path


# ------------------------------------------------------------------ the files of issue 14


def short_deflated_npz(path: Path) -> Path:
    """A deflated member whose header declares (2097152, 8) float32 with 0.9 x 524288 rows of
    data present: a 15 KB file (the `diagnose` hang)."""
    head = npy_header(npy_dict("<f4", (2097152, 8)))
    return write_zip(path, {"logits.npy": head + bytes(int(0.9 * 524288) * 8 * 4)})


def fortran_npz(path: Path, rows: int = 262144, cols: int = 1024) -> Path:
    """A 2 MiB .npz whose member says fortran_order: True, (262144, 1024) float64 zeros."""
    head = npy_header(npy_dict("<f8", (rows, cols), fortran=True))
    labels = deflated_zeros(npy_header(npy_dict("<i8", (rows,))), rows * 8)
    logits = deflated_zeros(head, rows * cols * 8)
    return write_zip_raw(path, {"logits.npy": logits, "labels.npy": labels})


def label_bomb_npz(path: Path) -> Path:
    """logits (10, 5) with a compressed labels member of 2**28 int64 zeros (2 GiB inflated)."""
    lab = deflated_zeros(npy_header(npy_dict("<i8", (2**28,))), 2**31)
    logits = npy_bytes(np.zeros((10, 5), np.float32))
    return write_zip_raw(path, {"logits.npy": logits, "labels.npy": lab})


def one_row_npz(path: Path, classes: int = 2**26) -> Path:
    """A 260 KB .npz holding ONE row of 2**26 float32 zeros (256 MiB inflated) and its label:
    evaluate peaked at 3.8 GB and diagnose at 6.1 GB on it."""
    head = npy_header(npy_dict("<f4", (1, classes)))
    members = {"logits.npy": deflated_zeros(head, 4 * classes)}
    return write_zip_raw(path, {**members, "labels.npy": npy_bytes(np.zeros(1, np.int64))})


def truncated_header_npy(path: Path) -> Path:
    """A .npy whose header dict is cut off: {'descr': '<f4', 'fortran_ord"""
    text = b"{'descr': '<f4', 'fortran_ord"
    path.write_bytes(NPY_MAGIC + b"\x01\x00" + len(text).to_bytes(2, "little") + text)
    return path


def corrupt_deflate_npz(path: Path) -> Path:
    """A savez_compressed file with bytes of the logits member's deflate stream flipped."""
    b = io.BytesIO()
    rng = np.random.default_rng(0)
    np.savez_compressed(
        b, logits=rng.standard_normal((200, 10)).astype(np.float32), labels=np.zeros(200, np.int64)
    )
    raw = bytearray(b.getvalue())
    info = zipfile.ZipFile(io.BytesIO(bytes(raw))).getinfo("logits.npy")
    start = info.header_offset + 30 + len(info.filename) + len(info.extra)
    for i in range(start + 40, start + info.compress_size - 10, 7):
        raw[i] ^= 0x5A
    path.write_bytes(bytes(raw))
    return path


def empty_file(path: Path) -> Path:
    path.write_bytes(b"")
    return path


def safetensors_file(path: Path, header: object, data: bytes = b"") -> Path:
    path.write_bytes(safetensors_bytes(header, data))
    return path


def huge_shape_npy(path: Path) -> Path:
    """A .npy header declaring shape (2**62, 2**62) float32 and no data."""
    path.write_bytes(npy_header(npy_dict("<f4", (2**62, 2**62))))
    return path


def object_npy(path: Path) -> Path:
    """A pickled object array (never loaded)."""
    np.save(path, np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    return path


def bad_row_npz(path: Path, rows: int, cols: int, bad_row: int, value: float) -> Path:
    """Compressed zero logits with one bad row: ``value`` in one class (NaN or +inf), or in
    every class (-inf: a fully masked row)."""
    z = np.zeros((rows, cols), np.float32)
    if value == -np.inf:
        z[bad_row] = value
    else:
        z[bad_row, 3] = value
    np.savez_compressed(path, logits=z, labels=np.zeros(rows, np.int64))
    return path


def good_npz(path: Path, n: int = 60, c: int = 4, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, c, n)
    z = rng.standard_normal((n, c)) + 2.0 * np.eye(c)[y]
    np.savez(path, logits=z.astype(np.float32), labels=y)
    return path


def lying_size_npz(path: Path, rows: int = 1000, cols: int = 4, present: int = 300) -> Path:
    """A deflated member whose .npy header AND zip directory both declare ``rows`` rows while the
    deflate stream holds only ``present`` (the CRC is that of the bytes present): the
    decompressor returns b"" before the declared end, which every read loop must stop on."""
    head = npy_header(npy_dict("<f8", (rows, cols)))
    data = head + np.arange(present * cols, dtype=np.float64).tobytes()
    write_zip(path, {"logits.npy": data})
    raw = bytearray(path.read_bytes())
    full = len(head) + rows * cols * 8
    # file_size is at offset 22 of the local header and 24 of the central directory record
    lh = raw.index(b"PK\x03\x04")
    struct.pack_into("<I", raw, lh + 22, full)
    cd = raw.index(b"PK\x01\x02")
    struct.pack_into("<I", raw, cd + 24, full)
    assert zlib.crc32(data) == struct.unpack_from("<I", raw, cd + 16)[0]
    path.write_bytes(bytes(raw))
    return path

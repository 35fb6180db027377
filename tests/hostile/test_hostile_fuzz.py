"""Fuzzing the loaders (issue 14): random ``.npy`` headers and bytes, random ``.npz`` containers
(random members, stored or deflated, then randomly damaged) and random safetensors headers
(random JSON, random shapes, dtypes and offsets). Whatever the file, :mod:`logitlab.io` either
returns arrays that match their headers or raises its own :class:`LoadError`: never another
exception, and never a read beyond what the file holds."""

from __future__ import annotations

import io
import itertools
import json
import struct
import zipfile
from pathlib import Path
from typing import Any

import hostile_files as hf
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from logitlab.io import LoadError, list_keys, load_predictions, open_array

_names = itertools.count()


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


def _exercise(path: Path) -> None:
    """Every way a command reads a file; anything but a LoadError fails the test."""
    try:
        keys: list[str | None] = list(list_keys(path)) or [None]
    except LoadError:
        keys = [None]
    for k in keys:
        try:
            src = open_array(path, k)
            a = src.read()
        except LoadError:
            continue
        assert a.shape == src.shape and a.dtype.kind in "biuf"
        if src.shape:
            assert src.rows(1, 3).shape[0] == max(0, min(src.shape[0], 3) - 1)
    try:
        load_predictions(path, path if path.suffix == ".npy" else None)
    except LoadError:
        pass


def _file(work: Path, suffix: str, data: bytes) -> Path:
    p = work / f"f{next(_names)}{suffix}"
    p.write_bytes(data)
    return p


# ------------------------------------------------------------------ .npy

literal = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=8),
    lambda kids: (
        st.lists(kids, max_size=4)
        | st.lists(kids, max_size=4).map(tuple)
        | st.dictionaries(st.text(max_size=6), kids, max_size=4)
    ),
    max_leaves=12,
)
descrs = (
    st.sampled_from(
        [
            "<f4",
            "<f8",
            "<f2",
            ">f4",
            "|b1",
            "<i8",
            "|u1",
            "<u2",
            "|O",
            "<U3",
            "<c8",
            "f3",
            "<M8[s]",
            "",
        ]
    )
    | st.text(max_size=6)
    | literal
)
shapes = (
    st.lists(st.integers(-2, 2**64), max_size=4).map(tuple)
    | st.lists(st.integers(0, 5), max_size=3).map(tuple)
    | literal
)


@st.composite
def npy_header_text(draw: Any) -> str:
    kind = draw(st.integers(0, 3))
    if kind == 0:
        return draw(st.text(max_size=80))
    if kind == 1:
        return repr(draw(literal))
    d = {
        "descr": draw(descrs),
        "fortran_order": draw(st.booleans() | literal),
        "shape": draw(shapes),
    }
    if draw(st.booleans()):
        d.pop(draw(st.sampled_from(sorted(d))))
    text = repr(d)
    if draw(st.booleans()):  # cut off anywhere
        text = text[: draw(st.integers(0, len(text)))]
    return text


@st.composite
def npy_bytes(draw: Any) -> bytes:
    kind = draw(st.integers(0, 4))
    if kind == 0:
        return draw(st.binary(max_size=200))
    if kind == 1:  # a valid file, cut or extended
        dt = draw(st.sampled_from(["<f4", "<f8", "|u1", "<i8", "<f2", ">f8"]))
        shape = tuple(draw(st.lists(st.integers(0, 5), max_size=3)))
        arr = np.arange(int(np.prod(shape)), dtype=dt).reshape(shape)
        if draw(st.booleans()):
            arr = np.asfortranarray(arr)
        raw = hf.npy_bytes(arr)
        return raw[: draw(st.integers(0, len(raw)))] + draw(st.binary(max_size=16))
    version = draw(st.sampled_from([(1, 0), (2, 0), (3, 0), (0, 0), (4, 1)]))
    text = draw(npy_header_text())
    try:
        head = hf.npy_header(text, version if version in ((1, 0), (2, 0), (3, 0)) else (1, 0))
    except UnicodeEncodeError:
        head = hf.npy_header(text.encode("utf8", "replace").decode("latin1"))
    head = head[:6] + bytes(version) + head[8:]
    return head + draw(st.binary(max_size=64))


@given(data=npy_bytes())
def test_npy_fuzz(work: Path, data: bytes) -> None:
    _exercise(_file(work, ".npy", data))


# ------------------------------------------------------------------ .npz


@st.composite
def npz_bytes(draw: Any) -> bytes:
    if draw(st.integers(0, 5)) == 0:
        return draw(st.binary(max_size=300))
    b = io.BytesIO()
    method = draw(st.sampled_from([zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED]))
    with zipfile.ZipFile(b, "w", method) as z:
        for name in draw(
            st.lists(
                st.sampled_from(["logits.npy", "labels.npy", "x.npy", "y"]), max_size=3, unique=True
            )
        ):
            z.writestr(name, draw(npy_bytes()))
    raw = bytearray(b.getvalue())
    for _ in range(draw(st.integers(0, 3))):  # damage: flip bytes anywhere
        if raw:
            i = draw(st.integers(0, len(raw) - 1))
            raw[i] ^= draw(st.integers(1, 255))
    if draw(st.booleans()):
        raw = raw[: draw(st.integers(0, len(raw)))]
    return bytes(raw)


@given(data=npz_bytes())
def test_npz_fuzz(work: Path, data: bytes) -> None:
    _exercise(_file(work, ".npz", data))


# ------------------------------------------------------------------ .safetensors

st_dtypes = st.sampled_from(["F32", "F64", "F16", "BF16", "I64", "U8", "BOOL", "F8_E5M2", "x"])


@st.composite
def safetensors_bytes(draw: Any) -> bytes:
    kind = draw(st.integers(0, 3))
    if kind == 0:
        return draw(st.binary(max_size=120))
    data = draw(st.binary(max_size=64))
    if kind == 1:
        header: Any = draw(literal)
    else:
        header = {}
        for name in draw(
            st.lists(
                st.sampled_from(["logits", "labels", "__metadata__", "z"]), max_size=3, unique=True
            )
        ):
            entry = {
                "dtype": draw(st_dtypes | literal),
                "shape": draw(st.lists(st.integers(-1, 2**64), max_size=3) | literal),
                "data_offsets": draw(
                    st.lists(st.integers(-1, 80), min_size=2, max_size=2) | literal
                ),
            }
            if draw(st.booleans()):
                entry.pop(draw(st.sampled_from(sorted(entry))))
            header[name] = entry if draw(st.integers(0, 4)) else draw(literal)
    try:
        text = json.dumps(header).encode()
    except (ValueError, TypeError):
        text = b"{}"
    n = len(text) if draw(st.integers(0, 3)) else draw(st.integers(0, 2**64 - 1))
    return struct.pack("<Q", n) + text + data


@given(data=safetensors_bytes())
def test_safetensors_fuzz(work: Path, data: bytes) -> None:
    _exercise(_file(work, ".safetensors", data))


@given(
    dtype=st.sampled_from(["F32", "F64", "F16", "BF16", "I64", "U8"]),
    shape=st.lists(st.integers(0, 4), max_size=3),
)
def test_safetensors_valid_headers_round_trip(work: Path, dtype: str, shape: list[int]) -> None:
    # the success path of the same reader: a consistent header gives exactly its array
    npdt = {"F32": "<f4", "F64": "<f8", "F16": "<f2", "BF16": "<u2", "I64": "<i8", "U8": "|u1"}
    arr = np.arange(int(np.prod(shape)), dtype=npdt[dtype]).reshape(shape)
    header = {"logits": {"dtype": dtype, "shape": shape, "data_offsets": [0, arr.nbytes]}}
    got = open_array(
        _file(work, ".safetensors", hf.safetensors_bytes(header, arr.tobytes()))
    ).read()
    if dtype == "BF16":
        arr = (arr.astype(np.uint32) << 16).view(np.float32)
    assert got.shape == tuple(shape)
    np.testing.assert_array_equal(got, arr)

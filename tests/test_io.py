"""Safe loading: every supported format round-trips, and unsafe or broken files are refused."""

from __future__ import annotations

import os
import pickle
import re
import struct
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from logitlab.io import (
    LoadError,
    atomic_write,
    iter_row_chunks,
    list_keys,
    load_array,
    load_predictions,
    open_array,
)

torch = pytest.importorskip("torch")


@pytest.fixture
def logits() -> np.ndarray:
    return np.random.default_rng(0).standard_normal((7, 4)).astype(np.float32)


@pytest.fixture
def labels() -> np.ndarray:
    return np.array([0, 1, 2, 3, 0, 1, 2])


def test_npy_is_memory_mapped(tmp_path: Path, logits: np.ndarray) -> None:
    f = tmp_path / "x.npy"
    np.save(f, logits)
    src = open_array(f)
    assert src.shape == (7, 4) and src.dtype == np.float32
    assert isinstance(src._get.__closure__[0].cell_contents, np.memmap)  # type: ignore[union-attr]
    np.testing.assert_array_equal(src.rows(2, 5), logits[2:5])


def test_npz_keys_and_predictions(tmp_path: Path, logits: np.ndarray, labels: np.ndarray) -> None:
    f = tmp_path / "p.npz"
    np.savez(f, logits=logits, labels=labels)
    assert sorted(list_keys(f)) == ["labels", "logits"]
    scores, lab = load_predictions(f)
    np.testing.assert_array_equal(scores.read(), logits)
    np.testing.assert_array_equal(lab, labels)


def test_npz_keys_are_its_arrays(tmp_path: Path, logits: np.ndarray) -> None:
    # np.load lists every member of the zip; only the .npy members are arrays (np.load returns
    # the others' raw bytes): list_keys gives those, and a key naming another member says so
    f = tmp_path / "m.npz"
    np.savez(f, logits=logits, labels=np.arange(7))
    with zipfile.ZipFile(f, "a") as zf:
        zf.writestr("notes.txt", b"trained on split A\n")
        zf.writestr("meta/", b"")
    with np.load(f) as npz:
        every = list(npz.files)
        assert isinstance(npz["notes.txt"], bytes)
    with zipfile.ZipFile(f) as zf:
        arrays = [n.removesuffix(".npy") for n in zf.namelist() if n.endswith(".npy")]
    assert sorted(every) == ["labels", "logits", "meta/", "notes.txt"]
    assert list_keys(f) == [k for k in every if k in arrays] == ["logits", "labels"]
    for key in ("notes.txt", "meta/"):
        with pytest.raises(LoadError, match=rf"m\.npz: the member '{key}' is not a \.npy array"):
            open_array(f, key)
    with pytest.raises(LoadError, match=r"no array named 'nope'; it holds \['logits', 'labels'\]"):
        open_array(f, "nope")
    scores, lab = load_predictions(f)  # the non-array members are not in the way
    np.testing.assert_array_equal(scores.read(), logits)


def test_pt_bfloat16_widened(tmp_path: Path, labels: np.ndarray) -> None:
    f = tmp_path / "p.pt"
    t = torch.randn(7, 4).to(torch.bfloat16)
    torch.save({"logits": t, "labels": torch.from_numpy(labels)}, f)
    scores, lab = load_predictions(f)
    assert scores.dtype == np.float32
    np.testing.assert_array_equal(scores.read(), t.float().numpy())


def test_safetensors_rows(tmp_path: Path, logits: np.ndarray, labels: np.ndarray) -> None:
    from safetensors.numpy import save_file

    f = tmp_path / "p.safetensors"
    save_file({"logits": logits, "labels": labels.astype(np.int64)}, str(f))
    scores, lab = load_predictions(f)
    np.testing.assert_array_equal(scores.rows(1, 3), logits[1:3])
    chunks = list(iter_row_chunks(scores, 3))
    assert [a for a, _ in chunks] == [0, 3, 6]
    np.testing.assert_array_equal(np.concatenate([c for _, c in chunks]), logits)


def test_separate_labels_file(tmp_path: Path, logits: np.ndarray, labels: np.ndarray) -> None:
    np.save(tmp_path / "s.npy", logits)
    np.save(tmp_path / "l.npy", labels)
    _, lab = load_predictions(tmp_path / "s.npy", tmp_path / "l.npy")
    np.testing.assert_array_equal(lab, labels)


def test_pickled_npy_refused(tmp_path: Path) -> None:
    f = tmp_path / "o.npy"
    np.save(f, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(LoadError, match="o.npy"):
        load_array(f)


def test_pickled_pt_never_executed(tmp_path: Path) -> None:
    marker = tmp_path / "executed"

    class Evil:
        def __reduce__(self):  # type: ignore[no-untyped-def]
            return (os.mkdir, (str(marker),))

    f = tmp_path / "evil.pt"
    f.write_bytes(pickle.dumps(Evil()))
    with pytest.raises(LoadError, match="weights_only"):
        load_array(f)
    assert not marker.exists()


@pytest.mark.parametrize(
    ("name", "content", "match"),
    [
        ("x.npy", b"not numpy", "npy"),
        ("x.npz", b"not a zip", "npz"),
        ("x.safetensors", b"\x01", "safetensors"),
        ("x.csv", b"1,2", "unsupported"),
    ],
)
def test_corrupt_files(tmp_path: Path, name: str, content: bytes, match: str) -> None:
    f = tmp_path / name
    f.write_bytes(content)
    with pytest.raises(LoadError, match=match):
        load_array(f)


def test_missing_file_and_wrong_key(tmp_path: Path, logits: np.ndarray) -> None:
    with pytest.raises(LoadError, match="no such file"):
        load_array(tmp_path / "nope.npy")
    np.savez(tmp_path / "a.npz", a=logits, b=logits)
    with pytest.raises(LoadError, match="several arrays"):
        load_array(tmp_path / "a.npz")
    with pytest.raises(LoadError, match="no array named 'c'"):
        load_array(tmp_path / "a.npz", "c")


def test_non_numeric_refused(tmp_path: Path) -> None:
    np.save(tmp_path / "s.npy", np.array(["a", "b"]))
    with pytest.raises(LoadError, match="not numeric"):
        load_array(tmp_path / "s.npy")


def test_prediction_mismatches(tmp_path: Path, logits: np.ndarray) -> None:
    np.savez(tmp_path / "n.npz", logits=logits, labels=np.arange(3))
    with pytest.raises(LoadError, match="7 rows of scores but 3 labels"):
        load_predictions(tmp_path / "n.npz")
    np.savez(tmp_path / "f.npz", logits=logits, labels=np.full(7, 0.5))
    with pytest.raises(LoadError, match="integer class indices"):
        load_predictions(tmp_path / "f.npz")
    np.savez(tmp_path / "e.npz", logits=logits[:0], labels=np.arange(0))
    with pytest.raises(LoadError, match="empty"):
        load_predictions(tmp_path / "e.npz")


def test_atomic_write_leaves_no_partial_file(tmp_path: Path) -> None:
    f = tmp_path / "out" / "r.json"
    atomic_write(f, "{}")
    assert f.read_text() == "{}"

    with pytest.raises(TypeError):
        atomic_write(f, 123)  # type: ignore[arg-type]
    assert f.read_text() == "{}"
    assert [p.name for p in f.parent.iterdir()] == ["r.json"]


# ---------------------------------------------------------------- streamed containers


def test_stored_npz_member_is_memory_mapped(tmp_path: Path) -> None:
    x = np.random.default_rng(1).standard_normal((300, 17)).astype(np.float16)
    f = tmp_path / "s.npz"
    np.savez(f, other=np.arange(5), logits=x, scalar=np.float32(2.5))
    src = open_array(f, "logits")
    assert src.shape == (300, 17) and src.dtype == np.float16 and src.source_dtype == "float16"
    part = src._get(10, 20)
    assert isinstance(part, np.memmap) or isinstance(part.base, np.memmap)
    np.testing.assert_array_equal(src.rows(10, 20), x[10:20])
    np.testing.assert_array_equal(src.read(), x)
    assert float(open_array(f, "scalar").read()) == 2.5


def test_compressed_npz_member_is_streamed_in_any_order(tmp_path: Path) -> None:
    x = np.random.default_rng(2).standard_normal((1000, 33))
    f = tmp_path / "c.npz"
    np.savez_compressed(f, logits=x, labels=np.arange(1000) % 33)
    src = open_array(f, "logits")
    assert src.shape == (1000, 33) and src.dtype == np.float64
    for a, b in [(0, 10), (10, 400), (700, 1000), (5, 6), (990, 2000), (0, 1000)]:
        np.testing.assert_array_equal(src.rows(a, b), x[a:b])  # backwards reads reopen
    np.testing.assert_array_equal(load_array(f, "labels"), np.arange(1000) % 33)


def test_npz_fortran_order_and_bad_members(tmp_path: Path) -> None:
    x = np.asfortranarray(np.random.default_rng(3).standard_normal((20, 6)))
    f = tmp_path / "f.npz"
    np.savez(f, logits=x)
    np.testing.assert_array_equal(open_array(f).rows(3, 9), x[3:9])
    np.savez(tmp_path / "o.npz", logits=np.array([{"a": 1}], dtype=object))
    with pytest.raises(LoadError, match="never loaded"):
        open_array(tmp_path / "o.npz")
    good = tmp_path / "t.npz"
    np.savez(good, logits=np.zeros((1000, 10)))
    cut = tmp_path / "cut.npz"
    cut.write_bytes(good.read_bytes()[:5000])
    with pytest.raises(LoadError, match=r"cut\.npz"):
        open_array(cut).read()


def test_bfloat16_pt_is_widened_per_slice_and_named(tmp_path: Path) -> None:
    t = torch.randn(50, 8).to(torch.bfloat16)
    f = tmp_path / "b.pt"
    torch.save({"logits": t}, f)
    src = open_array(f)
    assert src.dtype == np.float32 and src.source_dtype == "bfloat16"
    np.testing.assert_array_equal(src.rows(5, 9), t[5:9].float().numpy())
    from logitlab.diagnostics import diagnose_file

    assert diagnose_file(f).dtype == "bfloat16"


# ---------------------------------------------------------------- hostile files (issue 14)

sys_path_hostile = str(Path(__file__).with_name("hostile"))


@pytest.fixture
def hf() -> Any:
    import sys

    if sys_path_hostile not in sys.path:
        sys.path.insert(0, sys_path_hostile)
    import hostile_files

    return hostile_files


def _in_thread(fn: Any, timeout: float = 30.0) -> BaseException | None:
    """Run ``fn`` in a daemon thread; fail (instead of hanging the suite) if it does not end."""
    import threading

    box: list[BaseException | None] = []

    def run() -> None:
        try:
            fn()
            box.append(None)
        except BaseException as exc:
            box.append(exc)

    th = threading.Thread(target=run, daemon=True)
    th.start()
    th.join(timeout)
    assert box, f"did not return within {timeout} s (a read loop that never ends)"
    return box[0]


def test_read_loops_end_on_end_of_data(tmp_path: Path, hf: Any) -> None:
    # header and zip directory both declare 1000 rows, the deflate stream holds 300 (valid CRC)
    f = hf.lying_size_npz(tmp_path / "l.npz", rows=1000, cols=4, present=300)
    src = open_array(f)
    assert src.shape == (1000, 4)
    np.testing.assert_array_equal(src.rows(0, 300).ravel(), np.arange(1200.0))
    for a, b in [(500, 600), (0, 1000), (290, 310)]:  # skipping past the data, reading across it
        exc = _in_thread(lambda a=a, b=b: src.rows(a, b))
        assert isinstance(exc, LoadError) and "truncated" in str(exc), exc
    exc = _in_thread(src.read)
    assert isinstance(exc, LoadError)


def test_truncated_deflated_member_refused_from_its_header(
    tmp_path: Path, hf: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import logitlab.io._npz

    f = hf.short_deflated_npz(tmp_path / "short.npz")

    def no_data(*a: object) -> None:
        raise AssertionError("member data read")

    monkeypatch.setattr(logitlab.io._npz._CompressedRows, "__call__", no_data)
    with pytest.raises(LoadError, match=r"short\.npz\['logits'\]: truncated or corrupt"):
        open_array(f)


def test_labels_refused_from_their_header(
    tmp_path: Path, hf: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import logitlab.io._npz

    f = hf.label_bomb_npz(tmp_path / "bomb.npz")  # 2 MiB file, 2 GiB of labels inflated

    def no_data(*a: object) -> None:
        raise AssertionError("label data read before the shapes were compared")

    monkeypatch.setattr(logitlab.io._npz._CompressedRows, "__call__", no_data)
    with pytest.raises(LoadError, match="10 rows of scores but 268435456 labels"):
        load_predictions(f)
    np.savez(tmp_path / "l2.npz", logits=np.zeros((3, 2)), labels=np.zeros((3, 1), np.int64))
    with pytest.raises(LoadError, match=r"l2\.npz\['labels'\]: labels must be 1-D"):
        load_predictions(tmp_path / "l2.npz")
    np.savez(tmp_path / "l3.npz", logits=np.zeros((3, 2)), labels=np.array(["a", "b", "c"]))
    with pytest.raises(LoadError, match=r"l3\.npz\['labels'\]: dtype '<U1' is not numeric$"):
        load_predictions(tmp_path / "l3.npz")


def test_one_huge_row_refused_from_its_header(
    tmp_path: Path, hf: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import logitlab.io._npz
    from logitlab.diagnostics import diagnose_file

    f = hf.one_row_npz(tmp_path / "row.npz", classes=2**24)  # one 64 MiB row, a 70 KB file

    def no_data(*a: object) -> None:
        raise AssertionError("row data read")

    monkeypatch.setattr(logitlab.io._npz._CompressedRows, "__call__", no_data)
    msg = r"row\.npz\['logits'\]: one row holds 16777216 values \(64 MiB\), more than the 32 MiB"
    with pytest.raises(LoadError, match=msg):
        load_predictions(f)
    with pytest.raises(LoadError, match=msg):
        diagnose_file(f, "logits")
    monkeypatch.undo()
    # the bound is on one row only: many rows of a modest class count stream as before
    np.savez_compressed(tmp_path / "ok.npz", logits=np.zeros((5000, 3), np.float32))
    assert diagnose_file(tmp_path / "ok.npz").n_rows == 5000


def test_compressed_fortran_member(
    tmp_path: Path, hf: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import logitlab.io._npz

    x = np.asfortranarray(np.random.default_rng(4).standard_normal((300, 7)))
    f = tmp_path / "f.npz"
    np.savez_compressed(f, logits=x, labels=np.arange(300) % 7)
    src = open_array(f, "logits")
    np.testing.assert_array_equal(src.rows(10, 250), x[10:250])
    np.testing.assert_array_equal(src.read(), x)
    # above the limit it is refused from its header, not read whole
    monkeypatch.setattr(logitlab.io._npz, "WHOLE_MEMBER_LIMIT", x.nbytes - 1)
    with pytest.raises(LoadError, match=r"Fortran-ordered member of 16800 bytes cannot be"):
        open_array(f, "logits")
    big = hf.fortran_npz(tmp_path / "big.npz")  # 2 MiB file, (262144, 1024) float64 declared
    monkeypatch.undo()
    with pytest.raises(LoadError, match=r"big\.npz\['logits'\]: a compressed Fortran-ordered"):
        open_array(big, "logits")
    # stored (not compressed) Fortran data is memory-mapped column-major: streamed, any size
    np.savez(tmp_path / "s.npz", logits=x)
    part = open_array(tmp_path / "s.npz")._get(5, 9)
    assert isinstance(part, np.memmap) or isinstance(part.base, np.memmap)
    np.testing.assert_array_equal(part, x[5:9])
    np.save(tmp_path / "f.npy", x)
    np.testing.assert_array_equal(open_array(tmp_path / "f.npy").rows(0, 3), x[:3])


def _npy(
    tmp_path: Path, hf: Any, text: str, data: bytes = b"", version: tuple[int, int] = (1, 0)
) -> Path:
    f = tmp_path / "h.npy"
    f.write_bytes(hf.npy_header(text, version) + data)
    return f


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("{'descr': '<f4', 'fortran_ord", "unreadable .npy header"),  # numpy: tokenize.TokenError
        ("[1, 2, 3]", "not a {descr, fortran_order, shape} dict"),
        ("{'descr': '<f4', 'fortran_order': False}", "not a {descr"),
        ("{'descr': '<f4', 'fortran_order': False, 'shape': (-1, 2)}", "invalid shape"),
        ("{'descr': '<f4', 'fortran_order': False, 'shape': (2.0,)}", "invalid shape"),
        ("{'descr': '<f4', 'fortran_order': False, 'shape': (True,)}", "invalid shape"),
        ("{'descr': '<f4', 'fortran_order': 1, 'shape': (2,)}", "invalid fortran_order"),
        ("{'descr': '<U3', 'fortran_order': False, 'shape': (2,)}", "not numeric"),
        ("{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (2,)}", "not numeric"),
        ("{'descr': '<f3', 'fortran_order': False, 'shape': (2,)}", "not numeric"),
        ("{[1]: 2}", "unreadable .npy header"),
        ("(" * 300 + ")" * 300, "unreadable .npy header"),
        ("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3)}", "truncated or corrupt"),
        ("{'descr': '<f4', 'fortran_order': False, 'shape': (2**62, 2**62)}", "truncated or"),
    ],
)
def test_npy_header_errors(tmp_path: Path, hf: Any, text: str, match: str) -> None:
    import warnings

    f = _npy(tmp_path, hf, text.replace("2**62", str(2**62)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # numpy printed an overflow RuntimeWarning first
        with pytest.raises(LoadError, match=re.escape(match)) as ei:
            load_array(f)
    msg = str(ei.value)
    assert msg.startswith(f"{f}: ") and "\n" not in msg
    assert "pickle" not in msg  # the suffix only where a pickle was refused


def test_npy_header_variants(tmp_path: Path, hf: Any) -> None:
    x = np.arange(6, dtype=">f8").reshape(2, 3)
    for version in ((1, 0), (2, 0), (3, 0)):
        f = _npy(tmp_path, hf, hf.npy_dict(">f8", (2, 3)), x.tobytes(), version)
        np.testing.assert_array_equal(load_array(f), x)
    f = _npy(tmp_path, hf, "{'descr': '<i8', 'fortran_order': False, 'shape': (2L, 1L), }",
             np.arange(2).tobytes())  # fmt: skip
    np.testing.assert_array_equal(load_array(f), [[0], [1]])  # a Python 2 header
    np.save(tmp_path / "e.npy", np.zeros((0, 3), np.float32))
    assert load_array(tmp_path / "e.npy").shape == (0, 3)
    np.save(tmp_path / "s.npy", np.float32(2.5))
    assert float(load_array(tmp_path / "s.npy")) == 2.5
    f = tmp_path / "bad.npy"
    f.write_bytes(b"\x93NUMPY\x09\x09")
    with pytest.raises(LoadError, match="unsupported .npy format version 9.9"):
        load_array(f)
    f.write_bytes(b"\x93NUMPY\x01\x00\xff\xff{")
    with pytest.raises(LoadError, match="truncated .npy header"):
        load_array(f)


def test_object_arrays_refused_as_pickles(tmp_path: Path, hf: Any) -> None:
    f = hf.object_npy(tmp_path / "o.npy")
    with pytest.raises(LoadError, match="pickled content, which is never loaded"):
        load_array(f)


def test_npz_container_errors(tmp_path: Path, hf: Any) -> None:
    f = hf.corrupt_deflate_npz(tmp_path / "c.npz")
    with pytest.raises(LoadError, match=r"c\.npz\['logits'\]: cannot read the member"):
        load_array(f, "logits")
    e = hf.empty_file(tmp_path / "e.npz")
    for fn in (list_keys, load_array, load_predictions):
        with pytest.raises(LoadError, match=r"e\.npz: not a readable \.npz file"):
            fn(e)  # numpy raised EOFError, which the CLI took for a user abort
    x = hf.npy_bytes(np.zeros(3))
    f = hf.write_zip(tmp_path / "enc.npz", {"x.npy": x}, zipfile.ZIP_STORED)
    raw = bytearray(f.read_bytes())
    for sig, at in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):  # set the "encrypted" flag bit
        raw[raw.index(sig) + at] |= 1
    f.write_bytes(bytes(raw))
    with pytest.raises(LoadError, match="encrypted"):
        load_array(f)
    f = hf.write_zip(tmp_path / "m.npz", {"x.npy": x})
    raw = bytearray(f.read_bytes())
    for sig, at in ((b"PK\x03\x04", 8), (b"PK\x01\x02", 10)):  # compression method 99
        raw[raw.index(sig) + at] = 99
    f.write_bytes(bytes(raw))
    with pytest.raises(LoadError, match=r"m\.npz\['x'\]"):
        load_array(f)


def _st(dtype: object, shape: list[int], offsets: list[int]) -> dict[str, object]:
    return {"logits": {"dtype": dtype, "shape": shape, "data_offsets": offsets}}


@pytest.mark.parametrize(
    ("header", "data", "match"),
    [
        ([1, 2, 3], b"", "the header is a JSON list, not an object"),
        (7, b"", "the header is a JSON int"),
        ({"logits": 5}, b"", "invalid safetensors entry 5"),
        (_st("F32", [2], [0, 9]), bytes(8), "invalid data_offsets"),
        (_st("F32", [3], [0, 8]), bytes(8), "needs 12 bytes"),
        (_st("F32", [-2], [0, 8]), bytes(8), "invalid safetensors shape"),
        (_st(3, [2], [0, 8]), bytes(8), "invalid safetensors dtype"),
        (_st("F8_E4M3", [2], [0, 2]), bytes(2), "not numeric or not supported"),
        (b"[[[[", b"", "not a readable .safetensors file"),
        (b"[" * 100000 + b"]" * 100000, b"", "not a readable .safetensors file"),
        (b"\xff\xfe", b"", "not a readable .safetensors file"),
    ],
)
def test_safetensors_header_errors(
    tmp_path: Path, hf: Any, header: object, data: bytes, match: str
) -> None:
    f = hf.safetensors_file(tmp_path / "s.safetensors", header, data)
    with pytest.raises(LoadError, match=re.escape(match)):
        load_array(f)
    f.write_bytes(struct.pack("<Q", 10**6) + b"{}")  # a header longer than the file
    with pytest.raises(LoadError, match="header larger than the file"):
        list_keys(f)


def test_safetensors_read_without_the_library(tmp_path: Path) -> None:
    from safetensors.numpy import save_file

    rng = np.random.default_rng(5)
    arrs = {
        "f16": rng.standard_normal((9, 4)).astype(np.float16),
        "u16": rng.integers(0, 60000, (5, 3)).astype(np.uint16),
        "i8": rng.integers(-100, 100, 7).astype(np.int8),
        "empty": np.zeros((0, 4), np.float32),
        "scalar": np.array(1.5, np.float64),
    }
    f = tmp_path / "a.safetensors"
    save_file(arrs, str(f), metadata={"who": "test"})
    assert sorted(list_keys(f)) == sorted(arrs)
    for k, v in arrs.items():
        got = load_array(f, k)
        assert got.dtype == v.dtype and got.shape == v.shape
        np.testing.assert_array_equal(got, v)
    t = torch.randn(6, 5).to(torch.bfloat16)
    from safetensors.torch import save_file as save_t

    save_t({"logits": t}, str(tmp_path / "b.safetensors"))
    src = open_array(tmp_path / "b.safetensors")
    assert src.dtype == np.float32 and src.source_dtype == "bfloat16"
    np.testing.assert_array_equal(src.rows(1, 4), t[1:4].float().numpy())  # exact widening


@pytest.mark.parametrize("fmt", ["npy", "npz", "npz_compressed", "safetensors", "pt"])
def test_rows_past_the_end_are_clipped(tmp_path: Path, fmt: str) -> None:
    # `report` on a .safetensors file crashed: the temperature pass asks for rows a:a+step
    x = np.random.default_rng(6).standard_normal((13, 3)).astype(np.float32)
    f = tmp_path / f"x.{fmt.split('_')[0]}"
    if fmt == "npy":
        np.save(f, x)
    elif fmt == "npz":
        np.savez(f, logits=x)
    elif fmt == "npz_compressed":
        np.savez_compressed(f, logits=x)
    elif fmt == "safetensors":
        from safetensors.numpy import save_file

        save_file({"logits": x}, str(f))
    else:
        torch.save({"logits": torch.from_numpy(x)}, f)
    src = open_array(f)
    np.testing.assert_array_equal(src.rows(10, 1000), x[10:])
    assert src.rows(20, 30).shape == (0, 3)
    np.testing.assert_array_equal(src.rows(0, 10**9), x)

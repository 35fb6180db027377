"""Safe loading: every supported format round-trips, and unsafe or broken files are refused."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

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

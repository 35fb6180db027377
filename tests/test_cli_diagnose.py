"""The ``logitlab diagnose`` command: formats, --json/--html, and one-line errors on bad files."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from logitlab.cli import app
from logitlab.diagnostics import diagnose, diagnose_file
from logitlab.io import LoadError

torch = pytest.importorskip("torch")
runner = CliRunner()


def _logits() -> np.ndarray:
    x = np.random.default_rng(0).normal(scale=4, size=(64, 10)).astype(np.float16)
    x[:5, 0] = 12.0  # naive float16 overflow on (at least) these rows
    return x


def _run(*args: str) -> tuple[int, str, str]:
    r = runner.invoke(app, ["diagnose", *args])
    return r.exit_code, r.stdout, r.stderr


@pytest.mark.parametrize("fmt", ["npy", "npz", "pt", "safetensors"])
def test_json_matches_api(tmp_path: Path, fmt: str) -> None:
    x = _logits()
    f = tmp_path / f"z.{fmt}"
    if fmt == "npy":
        np.save(f, x)
    elif fmt == "npz":
        np.savez(f, logits=x, other=np.zeros(3))
    elif fmt == "pt":
        torch.save({"logits": torch.from_numpy(x)}, f)
    else:
        from safetensors.numpy import save_file

        save_file({"logits": x}, str(f))
    extra = ["--key", "logits"] if fmt == "npz" else []
    code, out, err = _run(str(f), "--json", *extra)
    assert code == 0, err
    d = json.loads(out)  # stdout is JSON and nothing else
    want = diagnose(x)
    n_over = d["dtypes"]["float16"]["naive_overflow_rows"]
    assert n_over == want.dtypes["float16"].naive_overflow_rows >= 5
    assert d["mixed_precision"]["loss_scale"] == want.mixed_precision.loss_scale
    assert d["dtype"] == "float16"


def test_html_and_terminal(tmp_path: Path) -> None:
    f = tmp_path / "z.npy"
    np.save(f, _logits())
    out_html = tmp_path / "r" / "rep.html"
    code, out, err = _run(str(f), "--html", str(out_html))
    assert code == 0, err
    assert "findings" in out and "float16" in out
    page = out_html.read_text()
    assert page.startswith("<!DOCTYPE html>") and "data:image/png;base64," in page


def test_bfloat16_safetensors_and_axis(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    x = torch.randn(4, 7, 5).to(torch.bfloat16)
    f = tmp_path / "b.safetensors"
    save_file({"logits": x}, str(f))
    rep = diagnose_file(f, axis=1)
    assert rep.dtype == "bfloat16" and rep.n_classes == 7 and rep.n_rows == 20
    ref = diagnose(x.float().numpy(), axis=1)
    assert rep.entropy.mean_nats == pytest.approx(ref.entropy.mean_nats)


def test_targets_from_container(tmp_path: Path) -> None:
    x = _logits().astype(np.float32)
    t = np.arange(64) % 10
    f = tmp_path / "p.npz"
    np.savez(f, logits=x, labels=t)
    rep = diagnose_file(f, "logits", target_key="labels")
    assert rep.saturation.wrong_rows == diagnose(x, t).saturation.wrong_rows
    code, out, _ = _run(str(f), "--key", "logits", "--target-key", "labels", "--json")
    assert code == 0 and json.loads(out)["mixed_precision"]["target_source"] == "target"


def test_streaming_in_chunks_is_exact(tmp_path: Path) -> None:
    x = np.random.default_rng(1).normal(scale=5, size=(500, 40)).astype(np.float16)
    f = tmp_path / "z.npy"
    np.save(f, x)
    seen: list[tuple[int, int]] = []
    rep = diagnose_file(f, chunk_bytes=40 * 8 * 13, progress=lambda a, b: seen.append((a, b)))
    assert len(seen) == 39 and seen[-1] == (500, 500)
    ref = diagnose(x)
    assert rep.histograms == ref.histograms
    assert rep.dtypes["float16"] == ref.dtypes["float16"]


def test_axis_zero_cannot_stream_big(tmp_path: Path) -> None:
    f = tmp_path / "z.npy"
    np.save(f, np.zeros((10, 50), np.float32))
    assert diagnose_file(f, axis=0).n_classes == 10  # small: read whole
    with pytest.raises(LoadError, match="cannot be streamed"):
        diagnose_file(f, axis=0, chunk_bytes=100)


class _Evil:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        import os

        return (os.system, ("touch PWNED_BY_PICKLE",))


def _bad_files(tmp: Path) -> dict[str, tuple[Path, list[str]]]:
    out: dict[str, tuple[Path, list[str]]] = {}
    p = tmp / "corrupt.npy"
    p.write_bytes(b"\x93NUMPY garbage")
    out["corrupt"] = (p, [])
    p = tmp / "obj.npy"
    np.save(p, np.array([_Evil()], dtype=object), allow_pickle=True)
    out["pickled npy"] = (p, [])
    p = tmp / "evil.pt"
    with open(p, "wb") as fh:
        pickle.dump({"logits": _Evil()}, fh)
    out["pickled pt"] = (p, [])
    p = tmp / "k.npz"
    np.savez(p, logits=np.zeros((2, 3)))
    out["wrong key"] = (p, ["--key", "nope"])
    p = tmp / "s.npy"
    np.save(p, np.array(["a", "b"]))
    out["strings"] = (p, [])
    p = tmp / "scalar.npy"
    np.save(p, np.float32(1.0))
    out["0-d"] = (p, [])
    out["missing"] = (tmp / "nope.npy", [])
    p = tmp / "x.txt"
    p.write_text("1 2 3")
    out["suffix"] = (p, [])
    p = tmp / "ax.npy"
    np.save(p, np.zeros((2, 3)))
    out["axis"] = (p, ["--axis", "5"])
    return out


def test_bad_files_one_line_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    for name, (path, extra) in _bad_files(tmp_path).items():
        code, out, err = _run(str(path), "--json", *extra)
        assert code != 0, name
        assert out == "", name
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("logitlab: error:"), (name, err)
        assert "Traceback" not in err
    assert not (tmp_path / "PWNED_BY_PICKLE").exists()  # nothing in a file was executed


def test_chunks_are_read_in_file_order() -> None:
    # a compressed .npz member can only be read forward: a chunk asked for out of order makes it
    # decompress again from the start. Reads now happen in order even with two workers.
    import time

    from logitlab.diagnostics import LogitStats
    from logitlab.diagnostics.runners import _run_chunks

    x = np.random.default_rng(2).standard_normal((100, 6))
    seen: list[int] = []

    def get(a: int, b: int) -> tuple[np.ndarray, None]:
        if a == 0:
            time.sleep(0.3)  # the first worker is slow to read its chunk
        seen.append(a)
        return x[a:b], None

    st = _run_chunks(100, 6, 10, get, lambda: LogitStats(6), 2, None)
    assert seen == list(range(0, 100, 10)) and st.rows == 100


def test_compressed_member_decompressed_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import logitlab.io._npz

    x = np.random.default_rng(3).standard_normal((3000, 30)).astype(np.float32)
    f = tmp_path / "c.npz"
    np.savez_compressed(f, logits=x)
    opened: list[int] = []
    real = logitlab.io._npz._CompressedRows._reopen

    def count(self: object) -> None:
        opened.append(1)
        real(self)  # type: ignore[arg-type]

    monkeypatch.setattr(logitlab.io._npz._CompressedRows, "_reopen", count)
    rep = diagnose_file(f, chunk_bytes=30 * 8 * 50, workers=2)  # 60 chunks, two workers
    assert len(opened) == 1
    ref = diagnose(x)
    assert rep.histograms == ref.histograms  # exact integer counts, whatever the chunking
    assert rep.entropy.mean_nats == pytest.approx(ref.entropy.mean_nats, rel=1e-12)

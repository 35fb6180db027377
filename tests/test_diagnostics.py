"""Diagnostics on logits with known properties: exact fractions, checked against real half-precision
computations."""

from __future__ import annotations

import json
import math
import pickle
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from logitlab.cli import app
from logitlab.diagnostics import LogitStats, diagnose, diagnose_file

torch = pytest.importorskip("torch")
runner = CliRunner()


def _naive_bad_fraction(x: np.ndarray, dt: torch.dtype) -> float:
    t = torch.tensor(x, dtype=torch.float32).to(dt)
    e = torch.exp(t)
    p = e / e.sum(1, keepdim=True)
    return float((~torch.isfinite(p).all(1)).double().mean())


def test_known_overflow_fractions() -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((400, 50))
    x[:37, 3] = 12.0  # exp(12) overflows float16 (ln 65504 = 11.09)
    x[37:41, 0] = 95.0  # and these overflow float32/bfloat16 too (ln max = 88.72)
    r = diagnose(x)
    assert r.per_dtype["float16"]["naive_softmax_bad_fraction"] == pytest.approx(41 / 400)
    assert r.per_dtype["bfloat16"]["naive_softmax_bad_fraction"] == pytest.approx(4 / 400)
    assert r.per_dtype["float32"]["naive_softmax_bad_fraction"] == pytest.approx(4 / 400)
    assert r.per_dtype["float64"]["naive_softmax_bad_fraction"] == 0.0
    assert r.per_dtype["float16"]["margin"] == pytest.approx(math.log(65504) - 95.0)


@pytest.mark.parametrize("scale", [2.0, 4.0, 6.0])
def test_float16_claim_matches_actual_float16_softmax(scale: float) -> None:
    # includes rows whose *sum* overflows although no single exp does (many logits near 10)
    rng = np.random.default_rng(int(scale))
    x = rng.standard_normal((300, 200)) * scale
    x[::7] = 10.0 + rng.standard_normal((43, 200)) * 0.01
    r = diagnose(x)
    for name, dt in (("float16", torch.float16), ("bfloat16", torch.bfloat16)):
        assert r.per_dtype[name]["naive_softmax_bad_fraction"] == pytest.approx(
            _naive_bad_fraction(x, dt)
        )


def test_all_underflow_rows_are_nan_in_naive_softmax() -> None:
    x = np.full((10, 4), -20.0)  # exp(-20) = 2e-9 underflows to 0 in float16: 0/0
    r = diagnose(x)
    assert r.per_dtype["float16"]["naive_softmax_bad_fraction"] == 1.0
    assert _naive_bad_fraction(x, torch.float16) == 1.0


def test_stable_softmax_zero_probabilities() -> None:
    x = np.zeros((10, 3))
    x[:4, 0] = 30.0  # p = e^-30 = 9e-14: 0 in float16 (below 2^-25), fine in float32
    r = diagnose(x)
    assert r.per_dtype["float16"]["stable_softmax_zero_fraction"] == pytest.approx(0.4)
    assert r.per_dtype["float32"]["stable_softmax_zero_fraction"] == 0.0
    t = torch.softmax(torch.tensor(x, dtype=torch.float16), 1)
    assert float((t == 0).any(1).double().mean()) == pytest.approx(0.4)


def test_saturation_and_confidently_wrong() -> None:
    x = np.zeros((20, 5))
    x[:6, 1] = 30.0  # 1 - p_top = 4 * e^-30 = 3.7e-13 < 2^-23: saturated in float32
    x[6:10, 1] = 9.0  # 1 - p_top = 4.9e-4 < 2^-10: saturated in float16 only
    y = np.zeros(20, dtype=int)
    y[:3] = 1  # three of the six float32-saturated rows are right, three wrong
    r = diagnose(x, y)
    assert r.saturation["float32"] == pytest.approx(6 / 20)
    assert r.saturation["float16"] == pytest.approx(10 / 20)
    assert r.saturation["confidently_wrong"] == pytest.approx(3 / 20)


def test_mixed_precision_gradient_counts_match_float16_cast() -> None:
    rng = np.random.default_rng(3)
    x = rng.standard_normal((200, 64)) * 5
    y = rng.integers(0, 64, 200)
    r = diagnose(x, y)
    g = torch.softmax(torch.tensor(x), 1)
    g[torch.arange(200), torch.tensor(y)] -= 1
    h = g.to(torch.float16)
    zero = float((h == 0).double().mean())
    sub = float(((h != 0) & (h.abs() < 2.0**-14)).double().mean())
    mp = r.mixed_precision
    # counts from the log2 histogram: exact except at the bin straddling the rounding boundary
    assert mp["float16_zero_fraction"] == pytest.approx(zero, abs=0.01)
    assert mp["float16_subnormal_fraction"] == pytest.approx(sub, abs=0.01)
    s = mp["recommended_loss_scale"]
    assert torch.isfinite((g * s).to(torch.float16)).all()
    assert not torch.isfinite((g * s * 4).to(torch.float16)).all() or g.abs().max() * s * 4 < 65504


def test_conditioning_and_entropy() -> None:
    r = diagnose(np.array([[0.0, 0.0, 0.0, 0.0], [1.0, 2.0, 4.0, -8.0]]))
    assert r.conditioning["kappa_ratio"] == math.inf  # a zero logit: the ratio is undefined
    r2 = diagnose(np.array([[1.0, 2.0, 4.0, -8.0]]))
    assert r2.conditioning["kappa_ratio"] == pytest.approx(8.0)
    p = np.exp([1.0, 2.0, 4.0, -8.0])
    p /= p.sum()
    lse = math.log(np.exp([1.0, 2.0, 4.0, -8.0]).sum())
    assert r2.conditioning["lse_condition_max"] == pytest.approx(
        float(np.sum(p * np.abs([1.0, 2.0, 4.0, -8.0]))) / lse
    )
    assert r.entropy["max_nats"] == pytest.approx(math.log(4))
    temps = {t["temperature"]: t for t in r2.temperature}
    assert temps[0.5]["mean_entropy"] < temps[1.0]["mean_entropy"] < temps[2.0]["mean_entropy"]


def test_streaming_equals_whole_and_merge() -> None:
    rng = np.random.default_rng(4)
    x = rng.standard_normal((500, 30)) * 8
    whole = diagnose(x).to_dict()
    parts = diagnose(x, chunk_rows=37).to_dict()
    assert json.dumps(whole, sort_keys=True, default=str) == json.dumps(
        parts, sort_keys=True, default=str
    ) or all(whole[k] == parts[k] for k in ("per_dtype", "saturation", "nan", "rows"))
    a, b = LogitStats(30), LogitStats(30)
    a.update(x[:200])
    b.update(x[200:])
    merged = a.merge(b).finalize()
    assert merged.per_dtype == diagnose(x).per_dtype
    assert merged.rows == 500


def test_nan_and_inf_rows_are_counted_and_excluded() -> None:
    x = np.zeros((5, 3))
    x[0, 0] = np.nan
    x[1, 1] = np.inf
    x[2, 2] = -np.inf
    r = diagnose(x)
    assert (r.nan, r.posinf, r.neginf) == (1, 1, 1)
    assert r.findings[0].severity == "high"


def test_bad_input() -> None:
    with pytest.raises(ValueError, match="0-d"):
        diagnose(np.float32(3.0))
    with pytest.raises(TypeError, match="numeric"):
        diagnose(np.array([["a"]]))
    with pytest.raises(ValueError, match="not a class index"):
        diagnose(np.zeros((2, 3)), np.array([0, 3]))


def test_report_renderings(tmp_path: Path) -> None:
    r = diagnose(np.random.default_rng(0).standard_normal((50, 10)) * 6)
    d = json.loads(r.to_json())
    assert d["rows"] == 50 and "float16" in d["per_dtype"]
    html = r.to_html()
    assert "data:image/png;base64," in html and "https://" not in html


def test_file_streaming_matches_memory(tmp_path: Path) -> None:
    x = (np.random.default_rng(5).standard_normal((3000, 40)) * 6).astype(np.float16)
    np.save(tmp_path / "x.npy", x)
    a = diagnose_file(str(tmp_path / "x.npy"), chunk_bytes=40 * 4 * 100)  # 100-row chunks
    b = diagnose(x)
    assert a.per_dtype == b.per_dtype and a.saturation == b.saturation


def test_cli(tmp_path: Path) -> None:
    x = np.random.default_rng(6).standard_normal((64, 16)).astype(np.float32) * 9
    np.save(tmp_path / "x.npy", x)
    r = runner.invoke(app, ["diagnose", str(tmp_path / "x.npy"), "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["classes"] == 16
    r = runner.invoke(
        app, ["diagnose", str(tmp_path / "x.npy"), "--html", str(tmp_path / "d.html")]
    )
    assert r.exit_code == 0 and (tmp_path / "d.html").exists() and "findings" in r.stdout
    torch.save({"logits": torch.from_numpy(x)}, tmp_path / "x.pt")
    r = runner.invoke(app, ["diagnose", str(tmp_path / "x.pt"), "--key", "logits", "--json"])
    assert r.exit_code == 0


@pytest.mark.parametrize(
    "case", ["pickle-npy", "pickle-pt", "corrupt", "wrong-key", "scalar", "strings"]
)
def test_cli_bad_files(tmp_path: Path, case: str) -> None:
    marker = tmp_path / "executed"
    f = tmp_path / "f.npy"
    args: list[str] = []
    if case == "pickle-npy":
        np.save(f, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    elif case == "pickle-pt":

        class Evil:
            def __reduce__(self):  # type: ignore[no-untyped-def]
                return (marker.mkdir, ())

        f = tmp_path / "f.pt"
        f.write_bytes(pickle.dumps(Evil()))
    elif case == "corrupt":
        f.write_bytes(b"garbage")
    elif case == "wrong-key":
        f = tmp_path / "f.npz"
        np.savez(f, logits=np.zeros((2, 2)))
        args = ["--key", "nope"]
    elif case == "scalar":
        np.save(f, np.float32(1.0))
    else:
        np.save(f, np.array([["a", "b"]]))
    r = runner.invoke(app, ["diagnose", str(f), *args])
    assert r.exit_code == 2, r.output
    assert r.stderr.startswith("logitlab: error:") and r.stderr.count("\n") == 1
    assert not marker.exists()

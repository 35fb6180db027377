"""The benchmarks of the torch losses on the harness: `logitlab bench`'s rows and table
(logitlab.app.linear_ce.run_linear_ce) and benchmarks/bench_cross_entropy.py, on tiny shapes."""

import importlib.util
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from logitlab.app import bench, linear_ce  # noqa: E402

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="peak RSS from /proc")
BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def test_linear_bench_rows_and_table():
    # logits of 4 MB: well above the page granularity of the peak-RSS measurement
    variants = ("naive", "torch_lce_compact")
    shapes = [(512, 64, 2000)]
    rows, table = linear_ce.run_linear_ce(shapes, variants=variants, repeats=2, pause_s=0)
    assert [r["variant"] for r in rows] == list(variants)  # the GEMM-floor worker is no row
    r, c = rows
    assert r["time_s"] > 0 and r["floor_s"] > 0 and r["extra_mb"] >= 0 and r["gemm_gflops"] > 0
    assert 0 < r["best_s"] <= r["time_s"]
    assert r["naive_mem_pct"] == 100.0
    # compact keeps the logits (4 MB) but not naive's log-probabilities and fresh gradient
    assert 0 < c["naive_mem_pct"] < 100.0
    assert c["vs_compact"] == 1.0 and r["vs_compact"] > 0
    assert "vs_before" not in r
    assert table.splitlines()[0].split() == [
        "shape", "variant", "time_s", "best_s", "floor_x", "vs_compact", "extra_MB", "%naive_mem"
    ]  # fmt: skip


def test_linear_bench_unknown_variant_starts_no_worker():
    with pytest.raises(ValueError, match="variants: unknown 'nope'"):
        linear_ce.run_linear_ce([(8, 4, 10)], variants=("nope",), repeats=1)
    with pytest.raises(ValueError, match="variants: unknown 'compact'"):
        linear_ce.run_linear_ce([(8, 4, 10)], variants=[bench.Variant("x", {"impl": "compact"})])


def test_linear_bench_variants_with_chunks_and_environment():
    rows_layout = {"LOGITLAB_CHUNK_LAYOUT": "rows"}
    variants = [
        bench.Variant("logitlab@16", {"impl": "logitlab", "chunk_size": 16}),
        bench.Variant("logitlab_rows", {"impl": "logitlab"}, env=rows_layout),
    ]
    rows, table = linear_ce.run_linear_ce([(64, 16, 300)], variants=variants, repeats=1, pause_s=0)
    assert [r["variant"] for r in rows] == ["logitlab@16", "logitlab_rows"]
    assert "vs_compact" not in rows[0] and "vs_compact" not in table


def _script(name):
    spec = importlib.util.spec_from_file_location(f"bench_script_{name}", BENCHMARKS / name)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


def test_cross_entropy_bench_rows():
    ce = _script("bench_cross_entropy.py")
    rows, table = ce.run([(512, 1000)], ("torch", "logitlab_inplace"), repeats=1, pause_s=0)
    assert [r["variant"] for r in rows] == ["torch", "logitlab_inplace"]
    # torch keeps log-probabilities and a fresh gradient (~2 MB each); in place needs neither
    assert rows[0]["extra_mb"] > rows[1]["extra_mb"] + 1.0
    assert rows[0]["speedup"] == 1.0 and rows[1]["speedup"] > 0
    assert "speedup" in table


def test_cli_bench_worker_failure_is_one_line(monkeypatch):
    from typer.testing import CliRunner

    from logitlab.cli import app

    def failing(**kwargs):
        raise RuntimeError("benchmark worker naive failed: ValueError: boom\nTraceback ...")

    monkeypatch.setattr(linear_ce, "run_linear_ce", failing)
    r = CliRunner().invoke(app, ["bench", "--n", "8", "--d", "4", "--v", "10"])
    assert r.exit_code == 2
    assert "logitlab: error: benchmark worker naive failed: ValueError: boom" in r.output
    assert "Traceback" not in r.output

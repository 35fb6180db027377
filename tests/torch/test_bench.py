"""The benchmark entry points the CLI calls: rows and a table, on tiny shapes."""

import sys

import pytest

torch = pytest.importorskip("torch")

from logitlab.torch import bench  # noqa: E402

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="peak RSS from /proc")


def test_linear_bench_rows_and_table():
    # logits of 4 MB: well above the page granularity of the peak-RSS measurement
    variants = ("naive", "torch_lce_compact")
    rows, table = bench.run([(512, 64, 2000)], variants=variants, repeats=2)
    assert [r["variant"] for r in rows] == list(variants)
    r, c = rows
    assert r["time_s"] > 0 and r["floor_s"] > 0 and r["extra_mb"] >= 0
    assert 0 < r["best_s"] <= r["time_s"]
    assert r["naive_mem_pct"] == 100.0
    # compact keeps the logits (4 MB) but not naive's log-probabilities and fresh gradient
    assert 0 < c["naive_mem_pct"] < 100.0
    assert c["vs_compact"] == 1.0 and r["vs_compact"] > 0
    assert "naive" in table and "floor_x" in table and "vs_compact" in table


def test_bench_worker_failure_names_the_variant():
    with pytest.raises(RuntimeError, match="(?s)worker nope .*unknown variant"):
        bench.run([(8, 4, 10)], variants=("nope",), repeats=1)


def test_cross_entropy_bench_rows():
    variants = ("torch", "logitlab_inplace")
    rows, table = bench.run_cross_entropy([(512, 1000)], variants=variants, repeats=1)
    assert [r["variant"] for r in rows] == list(variants)
    # torch keeps log-probabilities and a fresh gradient (~2 MB each); in place needs neither
    assert rows[0]["extra_mb"] > rows[1]["extra_mb"] + 1.0
    assert "speedup" in table

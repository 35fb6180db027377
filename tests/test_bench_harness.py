"""The benchmark harness (logitlab.app.bench) on cases that need neither torch nor a quiet
machine: worker processes, interleaved rounds, ratios, peak memory, environments and source trees
of their own, errors that name the variant."""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import bench_cases as bc
from logitlab.app import bench
from logitlab.app.bench import (
    Case,
    Variant,
    format_table,
    median_ratio,
    run_case,
    run_cases,
    shared_workers,
    with_before,
)

SRC = Path(__file__).resolve().parents[1] / "src"
linux = pytest.mark.skipif(sys.platform != "linux", reason="peak memory from /proc")


def test_rounds_times_and_ratio_to_the_baseline() -> None:
    variants = [Variant("numpy", {"impl": "numpy"}), Variant("python", {"impl": "python"})]
    case = Case("sum", bc.sum_setup, variants, {"n": 1_000_000}, baseline="numpy")
    fast, slow = run_case(case, rounds=3, pause_s=0)
    assert [fast.variant, slow.variant] == ["numpy", "python"]
    assert len(fast.times) == len(slow.times) == 3 and min(fast.times) > 0
    assert fast.time_s == statistics.median(fast.times) and fast.best_s == min(fast.times)
    per_round = sorted(s / f for s, f in zip(slow.times, fast.times, strict=True))
    assert slow.ratio == per_round[1] and fast.ratio == 1.0
    # a Python loop over a million floats against one NumPy reduction: ~20x apart, not 2
    assert slow.ratio > 2
    assert fast.vs_before is None and slow.row()["ratio"] == slow.ratio


@linux
def test_peak_memory_of_a_step_and_what_it_keeps() -> None:
    variants = [Variant("fresh"), Variant("kept", {"keep": True})]
    fresh, kept = run_case(Case("alloc", bc.alloc_setup, variants, {"mb": 32}), 1, pause_s=0)
    assert 31 <= fresh.extra_mb <= 34 and 31 <= fresh.anon_mb <= 34
    # keep_bytes: the 32 MiB the step is meant to leave behind are not overhead
    assert kept.extra_mb < 2 and kept.anon_mb < 2


@linux
def test_memory_mapped_pages_are_resident_but_not_anonymous(tmp_path: Path) -> None:
    path = tmp_path / "x.npy"
    np.save(path, np.ones(8 << 20, dtype=np.float32))  # 32 MiB
    case = Case("mmap", bc.mmap_setup, [Variant("read")], {"path": str(path)}, warmup=False)
    (r,) = run_case(case, 1, pause_s=0)
    assert r.extra_mb >= 30 and r.anon_mb < 4


def test_worker_environment_stdout_and_imports() -> None:
    case = Case("env", bc.environment_setup, [Variant("a", env={"BENCH_MARK": "seen"})])
    (r,) = run_case(case, 2, pause_s=0)  # the step prints to stdout: the replies survive it
    assert r.info["mark"] == "seen" and r.info["mmap_threshold"] == "65536"
    assert r.info["torch_loaded"] is False  # the harness never imports torch for a case
    assert Path(r.info["logitlab"]).parent == SRC / "logitlab" == Path(r.origin or "")


def test_before_twin_runs_the_other_tree(tmp_path: Path) -> None:
    # an older checkout: this tree's library without the harness, which the twin must not need
    shutil.copytree(
        SRC / "logitlab",
        tmp_path / "src" / "logitlab",
        ignore=shutil.ignore_patterns("app", "__pycache__"),
    )
    variants = with_before([Variant("after"), Variant("peer")], tmp_path, ["after"])
    assert [v.name for v in variants] == ["before:after", "after", "peer"]
    twin, after, peer = run_case(Case("env", bc.environment_setup, variants), 2, pause_s=0)
    assert Path(twin.origin or "") == tmp_path.resolve() / "src" / "logitlab"
    assert Path(after.origin or "") == SRC / "logitlab"
    assert after.vs_before is not None and twin.vs_before is None and peer.vs_before is None
    with pytest.raises(ValueError, match="before: .* has no src/logitlab"):
        with_before(variants, tmp_path / "src", ["after"])
    with pytest.raises(ValueError, match="none of"):
        with_before(variants, tmp_path, ["nope"])


def test_control_twin_runs_the_before_tree_in_its_own_worker(tmp_path: Path) -> None:
    shutil.copytree(
        SRC / "logitlab",
        tmp_path / "src" / "logitlab",
        ignore=shutil.ignore_patterns("app", "__pycache__"),
    )
    variants = with_before([Variant("after"), Variant("peer")], tmp_path, ["after"], control=True)
    assert [v.name for v in variants] == ["before:after", "control:after", "after", "peer"]
    twin, ctl, after, peer = run_case(Case("env", bc.environment_setup, variants), 2, pause_s=0)
    assert (
        Path(ctl.origin or "") == Path(twin.origin or "") == tmp_path.resolve() / "src" / "logitlab"
    )
    assert ctl.info["pid"] != twin.info["pid"]
    # the control's vs_before is taken against the before: twin, as the variant's is
    assert ctl.vs_before == median_ratio(ctl.times, twin.times)
    assert after.vs_before == median_ratio(after.times, twin.times)
    assert twin.vs_before is None and peer.vs_before is None


@pytest.mark.parametrize("k", [1, 2, 3, 4])
def test_round_order_puts_every_variant_in_every_place_equally_often(k: int) -> None:
    names = [f"v{i}" for i in range(k)]
    rounds = [bench._order(names, r) for r in range(4 * k)]
    assert all(sorted(o) == names for o in rounds)
    for name in names:
        places = [o.index(name) for o in rounds]
        assert sorted(places) == sorted(list(range(k)) * 4), (name, places)
    if k == 3:
        # plain forward/backward alternation kept v1 in the middle in every round
        assert {o[1] for o in rounds} == set(names)


def test_reused_workers_serve_the_next_case_fresh_ones_do_not() -> None:
    cases = [Case(f"c{i}", bc.environment_setup, [Variant("a"), Variant("b")]) for i in range(2)]
    for reuse in (True, False):
        first, second = run_cases(cases, 1, pause_s=0, reuse_workers=reuse)
        same = [x.info["pid"] == y.info["pid"] for x, y in zip(first, second, strict=True)]
        assert same == [reuse, reuse]
        assert first[0].info["pid"] != first[1].info["pid"]  # variants never share a process


def test_shared_workers_serve_every_call_of_the_block() -> None:
    # the benchmark smoke tests run every script's main in one such block
    case = Case("c", bc.environment_setup, [Variant("a"), Variant("b")])

    def pids(res: list[Any]) -> list[int]:
        return [r.info["pid"] for r in res]

    with shared_workers():
        first = run_case(case, 1, pause_s=0)
        with shared_workers():  # nested: the same pool
            second = run_cases([case], 1, pause_s=0, reuse_workers=False)[0]
    assert pids(first) == pids(second) and len(set(pids(first))) == 2
    for pid in pids(first):  # closed (and reaped) when the block ended
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    third = run_case(case, 1, pause_s=0)
    assert not set(pids(third)) & set(pids(first))


@pytest.mark.parametrize(
    ("where", "message"),
    [("setup", "ValueError: setup failed on purpose"), ("step", "ZeroDivisionError")],
)
def test_worker_failure_names_the_variant(where: str, message: str) -> None:
    case = Case("fail", bc.failing_setup, [Variant("boom")], {"where": where})
    with pytest.raises(RuntimeError) as info:
        run_case(case, 1, pause_s=0)
    first, *tail = str(info.value).splitlines()
    assert first.startswith("benchmark worker boom failed: ") and message in first
    assert any(line.startswith("Traceback") for line in tail)  # the worker's stderr follows


def test_setup_must_return_a_step() -> None:
    case = Case("bad", bc.bad_return_setup, [Variant("x")])
    with pytest.raises(RuntimeError, match="(?s)TypeError: setup bad_return_setup returned int"):
        run_case(case, 1, pause_s=0)


def _local() -> None:
    def inner() -> None:
        pass

    Case("c", inner, [Variant("x")])


def test_bad_declarations_name_what_is_wrong() -> None:
    with pytest.raises(ValueError, match="top level"):
        Case("c", lambda: None, [Variant("x")])
    with pytest.raises(ValueError, match="top level"):
        _local()
    with pytest.raises(TypeError, match="setup must be a function"):
        Case("c", 3, [Variant("x")])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="repeat a name"):
        Case("c", bc.sum_setup, [Variant("x"), Variant("x")])
    with pytest.raises(TypeError, match="non-empty list of Variant"):
        Case("c", bc.sum_setup, [])
    with pytest.raises(ValueError, match="baseline 'y' is not a variant"):
        Case("c", bc.sum_setup, [Variant("x")], baseline="y")
    with pytest.raises(TypeError, match="params of case 'c' must be a mapping of JSON values"):
        Case("c", bc.sum_setup, [Variant("x")], {"n": object()})
    with pytest.raises(TypeError, match="params of variant 'x'"):
        Variant("x", {"a": np.float32})
    with pytest.raises(TypeError, match="env of variant 'x'"):
        Variant("x", env={"A": 1})  # type: ignore[dict-item]
    with pytest.raises(ValueError, match="non-empty string"):
        Variant("")
    case = Case("c", bc.sum_setup, [Variant("x")])
    for rounds in (0, 1.5, True):
        with pytest.raises(ValueError, match="rounds must be an integer >= 1"):
            run_cases([case], rounds)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="pause_s must be >= 0"):
        run_cases([case], 1, pause_s=-1)


def test_format_table_columns_and_missing_cells() -> None:
    rows = [
        dict(case="a", variant="x", time_s=0.5, ratio=None, extra_mb=1.25, note="hi"),
        dict(case="a", variant="longer", time_s=2.0, ratio=4.0, anon_mb=3.0),
    ]
    assert format_table(rows, ["variant", "ratio", "anon_mb", "note"]).splitlines() == [
        "variant  ratio  anon_MB  note",
        "x        -      -        hi",
        "longer   4.000  3.0      -",
    ]
    assert format_table(rows).splitlines()[0] == "case  variant  time_s  ratio  extra_MB  note"
    assert format_table([]) == ""


def test_the_harness_imports_without_torch() -> None:
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "import logitlab.app.bench as b\n"
        "print(b.format_table([dict(case='c', variant='v')]))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["case", "variant", "c", "v"]

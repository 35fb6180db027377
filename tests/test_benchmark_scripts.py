"""Smoke test of the benchmark scripts: each runs with --quick (tiny shapes, one round) on the
harness and prints its table; one runs --before against another source tree."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HAS_TORCH = importlib.util.find_spec("torch") is not None

# script -> a string its output must hold
SCRIPTS = {
    "speed_core.py": "| logsumexp (numpy) |",
    "bench_linear_ce.py": "torch_lce_compact",
    "bench_cross_entropy.py": "logitlab_inplace",
    "bench_diagnose.py": "diagnose_file",
    "bench_evaluator.py": "fit_temperature",
    "studies/ab_linear_ce.py": "faster_in_rounds",
    "studies/gemm_shapes.py": "numpy grad_weight",
}


def run_script(name: str, *args: str) -> str:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "src"), env.get("PYTHONPATH")]))
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / name), "--quick", "--repeats", "1", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


@pytest.mark.skipif(not HAS_TORCH, reason="the torch peers need torch")
@pytest.mark.parametrize("name", list(SCRIPTS))
def test_script_quick(name: str) -> None:
    stdout = run_script(name)
    assert SCRIPTS[name] in stdout
    assert "vs_before" not in stdout and "vs before" not in stdout


@pytest.mark.skipif(not HAS_TORCH, reason="the torch peers need torch")
def test_script_before_and_after(tmp_path: Path) -> None:
    # an older checkout: this tree's library without the harness (the twins must not need it)
    ignore = shutil.ignore_patterns("app", "__pycache__")
    shutil.copytree(ROOT / "src" / "logitlab", tmp_path / "src" / "logitlab", ignore=ignore)
    stdout = run_script("speed_core.py", "--before", str(tmp_path))
    lines = stdout.splitlines()
    assert "| logitlab | before s | vs before | s | peer | s | ratio | MB | peer MB |" in lines
    rows = [line for line in lines if line.startswith("| ") and "|---" not in line]
    assert len(rows) == 1 + 9 and all(row.count("|") == 10 for row in rows)  # header, 9 cases

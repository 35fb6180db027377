"""Smoke test of the benchmark scripts: each runs with --quick (tiny shapes, one round) on the
harness and prints its table; one runs --before against another source tree.

Cost: the scripts' ``main`` run in this process, one after the other, inside one
``shared_workers()`` block, so a worker per variant (one torch import each) serves every
script's cases instead of a fresh process per variant per script (seven scripts had cost about
35 worker start-ups and seven parent start-ups). One script, speed_core.py --before, still runs
as a program in a subprocess of its own: the command-line entry and the before/after twins.
"""

from __future__ import annotations

import ast
import importlib.util
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
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

pytestmark = pytest.mark.skipif(not HAS_TORCH, reason="the torch peers need torch")


@pytest.fixture(scope="module")
def shared() -> Iterator[None]:
    from logitlab.app.bench import shared_workers

    with shared_workers():
        yield


def _main_of(name: str) -> object:
    path = ROOT / "benchmarks" / name
    spec = importlib.util.spec_from_file_location(f"_smoke_{path.stem}", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod.main


@pytest.mark.parametrize("name", list(SCRIPTS))
def test_script_quick(name: str, shared: None, capsys: pytest.CaptureFixture[str]) -> None:
    main = _main_of(name)
    main(["--quick", "--repeats", "1"])  # type: ignore[operator]
    stdout = capsys.readouterr().out
    assert SCRIPTS[name] in stdout
    assert "vs_before" not in stdout and "vs before" not in stdout


@pytest.mark.parametrize("name", list(SCRIPTS))
def test_script_runs_main_as_a_program(name: str) -> None:
    # in-process runs call main(argv); as a program each script calls main() under the guard
    tree = ast.parse((ROOT / "benchmarks" / name).read_text())
    last = tree.body[-1]
    assert isinstance(last, ast.If) and ast.unparse(last.test) == "__name__ == '__main__'"
    assert "main()" in ast.unparse(last)


def test_script_before_and_after(tmp_path: Path) -> None:
    # an older checkout: this tree's library without the harness (the twins must not need it)
    ignore = shutil.ignore_patterns("app", "__pycache__")
    shutil.copytree(ROOT / "src" / "logitlab", tmp_path / "src" / "logitlab", ignore=ignore)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "src"), env.get("PYTHONPATH")]))
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "speed_core.py"), "--quick", "--repeats", "1"]
        + ["--before", str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stdout.splitlines()
    assert "| logitlab | before s | vs before | s | peer | s | ratio | MB | peer MB |" in lines
    rows = [line for line in lines if line.startswith("| ") and "|---" not in line]
    assert len(rows) == 1 + 9 and all(row.count("|") == 10 for row in rows)  # header, 9 cases


@pytest.fixture(scope="module")
def older_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tree = tmp_path_factory.mktemp("before")
    ignore = shutil.ignore_patterns("app", "__pycache__")
    shutil.copytree(ROOT / "src" / "logitlab", tree / "src" / "logitlab", ignore=ignore)
    return tree


@pytest.mark.parametrize("name", [n for n in SCRIPTS if not n.startswith("studies/")])
def test_every_script_takes_before(
    name: str, older_tree: Path, shared: None, capsys: pytest.CaptureFixture[str]
) -> None:
    # bench_linear_ce.py --before once died on its own twins ("unknown 'before:logitlab'")
    main = _main_of(name)
    args = ["--quick", "--repeats", "1", "--before", str(older_tree), "--control"]
    main(args)  # type: ignore[operator]
    stdout = capsys.readouterr().out
    assert SCRIPTS[name] in stdout
    assert "vs_before" in stdout or "vs before" in stdout
    assert "control" in stdout

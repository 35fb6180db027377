"""Application code lives in ``logitlab.app`` (the layer under the CLI): the evaluation report of
``logitlab report``/``evaluate`` (file IO and assembly, formerly ``logitlab.metrics.summary``) and
the benchmark harness. The library packages and the renderers never import it, not even lazily
(annotations under ``TYPE_CHECKING`` excepted)."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "logitlab"


def test_metrics_holds_no_application_code() -> None:
    # no alias is kept: nothing public (README, docs) named logitlab.metrics.summary
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("logitlab.metrics.summary")
    from logitlab.app import evaluate

    assert {"EvaluationReport", "evaluate_predictions", "SAMPLE"} <= set(evaluate.__all__)
    assert evaluate.SAMPLE.is_file()


def _imports(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, module) of every import, at any depth, outside ``if TYPE_CHECKING:`` blocks."""
    out: list[tuple[int, str]] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            out.extend((node.lineno, a.name) for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.extend((node.lineno, f"{node.module}.{a.name}") for a in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return out


def test_only_the_cli_imports_the_application_layer() -> None:
    bad = []
    for f in sorted(SRC.rglob("*.py")):
        rel = f.relative_to(SRC)
        if rel.parts[0] == "app" or rel.name in ("cli.py", "__main__.py"):
            continue
        for line, mod in _imports(ast.parse(f.read_text(), str(f))):
            if mod == "logitlab.app" or mod.startswith("logitlab.app."):
                bad.append(f"{rel}:{line} imports {mod}")
    assert not bad, bad


def test_rendering_an_evaluation_does_not_load_the_application_layer() -> None:
    code = (
        "import sys, logitlab, logitlab.metrics, logitlab.report, logitlab.report.evaluate\n"
        "print(sorted(m for m in sys.modules if m.startswith('logitlab.app')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONPATH": str(SRC.parent), "PATH": "/usr/bin:/bin"},
    )
    assert out.stdout.strip() == "[]"


def test_application_modules_stay_small() -> None:
    # app/bench.py was 660 lines: the harness and the `logitlab bench` case are now apart
    sizes = {f.name: len(f.read_text().splitlines()) for f in (SRC / "app").glob("*.py")}
    assert max(sizes.values()) <= 600, sizes


@pytest.mark.parametrize("name", ["bench.py", "linear_ce.py"])
def test_worker_loaded_modules_need_no_logitlab_at_import(name: str) -> None:
    # benchmark workers load these files by path, possibly against an older checkout (before:
    # variants) that has no logitlab.app: their top level imports nothing of logitlab
    code = (
        "import importlib.util, sys\n"
        "sys.modules['logitlab'] = None\n"
        f"spec = importlib.util.spec_from_file_location('case', {str(SRC / 'app' / name)!r})\n"
        "m = sys.modules['case'] = importlib.util.module_from_spec(spec)\n"
        "spec.loader.exec_module(m)\n"
        "print(sorted(m.__all__)[0])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr

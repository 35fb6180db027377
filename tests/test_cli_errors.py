"""Through the real command line (``logitlab.cli.main`` in a subprocess, as the ``logitlab``
script runs it): any exception that escapes a command, expected or not, inside or outside the
command's error block, is one line ``logitlab: error: <what>`` with exit status 2, never a
traceback; ``LOGITLAB_DEBUG=1`` (read at call time) re-raises it; SIGINT and SIGTERM still exit
130 and 143.

Each case replaces one library function in the child process with one that fails, then runs
``main``: the failures are those of library code the CLI calls, not of the CLI itself.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")

# (module, attribute, the failure it raises when called)
EVALUATE = ("logitlab.app.evaluate", "evaluate_predictions")
RENDER = ("logitlab.report.evaluate", "metrics_rows")  # called after the error block


def _run(
    target: tuple[str, str], body: str, argv: list[str], env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    mod, attr = target
    code = textwrap.dedent(
        f"""
        import importlib, os, signal, sys, time
        m = importlib.import_module({mod!r})
        def failing(*args, **kwargs):
        {textwrap.indent(body, "    ")}
        setattr(m, {attr!r}, failing)
        from logitlab.cli import main
        os.environ.update({env or {}!r})  # set after import: read at call time
        sys.exit(main({argv!r}))
        """
    )
    e = dict(os.environ)
    e.pop("LOGITLAB_DEBUG", None)
    e["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "src"), e.get("PYTHONPATH")]))
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=e, timeout=300
    )


def _one_line_error(r: subprocess.CompletedProcess[str], *has: str) -> str:
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr, r.stderr
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("logitlab: error: "), r.stderr
    for h in has:
        assert h in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize(
    ("body", "has"),
    [
        ('raise RuntimeError("kernel failed\\nsecond line")', ["RuntimeError: kernel failed"]),
        ('raise KeyError("logits")', ["KeyError: 'logits'"]),
        ("raise AssertionError", ["AssertionError"]),
        ("return 1 / 0", ["ZeroDivisionError: division by zero"]),
        ("import numpy as np; np.zeros(3)[5]", ["IndexError: index 5 is out of bounds"]),
        ("raise MemoryError", ["MemoryError (an internal error"]),
    ],
)
def test_unexpected_error_in_a_command_is_one_line(body: str, has: list[str]) -> None:
    # RuntimeError and the rest escaped cli_errors (which caught only ValueError, TypeError,
    # OSError, ...) and printed a traceback
    line = _one_line_error(_run(EVALUATE, body, ["evaluate", "--json"]), *has)
    assert "LOGITLAB_DEBUG=1" in line  # how to see where it came from
    assert "second line" not in line


def test_expected_errors_keep_their_message() -> None:
    r = _run(EVALUATE, 'raise ValueError("f.npz: logits contains NaN")', ["evaluate"])
    assert _one_line_error(r) == "logitlab: error: f.npz: logits contains NaN"


def test_error_outside_the_error_block_is_one_line() -> None:
    # evaluate renders its table after the `with cli_errors()` block
    _one_line_error(_run(RENDER, 'raise RuntimeError("render")', ["evaluate"]), "render")


@pytest.mark.parametrize("target", [EVALUATE, RENDER])
def test_logitlab_debug_reraises(target: tuple[str, str]) -> None:
    r = _run(target, 'raise RuntimeError("boom")', ["evaluate"], {"LOGITLAB_DEBUG": "1"})
    assert r.returncode == 1  # Python's own exit status for an uncaught exception
    assert "Traceback (most recent call last)" in r.stderr
    assert r.stderr.rstrip().endswith("RuntimeError: boom")
    r = _run(target, 'raise RuntimeError("boom")', ["evaluate"], {"LOGITLAB_DEBUG": "0"})
    _one_line_error(r, "RuntimeError: boom")


@pytest.mark.parametrize(("sig", "code"), [("SIGINT", 130), ("SIGTERM", 143)])
def test_signals_keep_their_exit_status(sig: str, code: int) -> None:
    body = f"os.kill(os.getpid(), signal.{sig}); time.sleep(30)"
    r = _run(EVALUATE, body, ["evaluate", "--json"])
    assert r.returncode == code, r.stderr
    assert r.stderr.strip() == f"logitlab: interrupted by {sig}"

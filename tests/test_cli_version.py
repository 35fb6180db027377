"""`logitlab --version` and `python -m logitlab --version` print the package version and the
native backend (tests/test_native.py checks the ISA level it names)."""

import subprocess
import sys

import logitlab


def test_version_module_entry() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "logitlab", "--version"], capture_output=True, text=True, check=True
    )
    first, second = out.stdout.strip().splitlines()
    assert first == f"logitlab {logitlab.__version__}"
    assert second.startswith("native kernels: ")


def test_version_main() -> None:
    from logitlab.cli import main

    assert main(["--version"]) == 0


def test_bench_command_tiny() -> None:
    import json

    import pytest
    from typer.testing import CliRunner

    pytest.importorskip("torch")
    from logitlab.cli import app

    r = CliRunner().invoke(
        app, ["bench", "--n", "64", "--d", "16", "--v", "200", "--repeats", "1", "--json"]
    )
    assert r.exit_code == 0, r.output
    rows = json.loads(r.stdout)
    assert {row["variant"] for row in rows} >= {"naive", "logitlab"}
    assert all(row["time_s"] > 0 for row in rows)

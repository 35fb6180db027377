"""`logitlab --version` and `python -m logitlab --version` print the package version."""

import subprocess
import sys

import logitlab


def test_version_module_entry() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "logitlab", "--version"], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == f"logitlab {logitlab.__version__}"


def test_version_main() -> None:
    from logitlab.cli import main

    assert main(["--version"]) == 0

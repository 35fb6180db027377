"""Every command's help: flags that take no value are shown without one."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from logitlab.cli import app

runner = CliRunner()


@pytest.mark.parametrize(
    "cmd", [[], ["report"], ["evaluate"], ["diagnose"], ["perplexity"], ["bench"]]
)
def test_flags_show_no_value(cmd: list[str]) -> None:
    # the help read "--json <bool>", and "--json true" is then refused as an extra argument
    r = runner.invoke(app, [*cmd, "--help"], env={"COLUMNS": "120"})
    assert r.exit_code == 0, r.output
    assert "--json" in r.output or "--version" in r.output
    # typer's own --help option is drawn with a <bool> where a command has ranged options
    # (perplexity, bench): not ours to set
    ours = [line for line in r.output.splitlines() if "--help" not in line]
    assert not [line for line in ours if "<bool>" in line]

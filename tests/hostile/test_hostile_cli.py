"""Hostile input through the real command line (issue 14): every broken, truncated or malicious
file is refused with exit status 2 and exactly one line ``logitlab: error: <file>: <what>`` (no
traceback, no warning), within a memory limit and a timeout; a report is written all or nothing,
whatever happens while it is written (a full disk, SIGINT, SIGTERM), keeping the permissions of
the files it replaces.

All cases run in ONE subprocess (``cli_driver.py``: ``logitlab.cli.main`` per case, as the
``logitlab`` script runs it), under ``RLIMIT_AS``, so the suite pays the start-up cost once. The
signal cases pause the writer at a named point (a test-only environment hook of
``logitlab._outputs``) and this test sends the real signal to the driver process there.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import hostile_files as hf
import numpy as np
import pytest

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX resource limits")

MEMORY_LIMIT = 3 << 29  # 1.5 GiB of address space: the CLI needs under 0.9 GiB on these files
RUN_TIMEOUT = 240  # the whole driver run; each case also has its own alarm
DRIVER = Path(__file__).with_name("cli_driver.py")
OLD = "OLD REPORT\n"


def _old_report(d: Path, html_mode: int = 0o600, json_mode: int = 0o640) -> Path:
    d.mkdir()
    (d / "report.json").write_text(OLD)
    (d / "report.html").write_text(OLD)
    os.chmod(d / "report.json", json_mode)
    os.chmod(d / "report.html", html_mode)
    return d


def _build(root: Path) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]]]:
    """The files, the driver cases, and what each case must produce."""
    f: dict[str, Path] = {
        "short": hf.short_deflated_npz(root / "short.npz"),
        "fortran": hf.fortran_npz(root / "fortran.npz"),
        "bomb": hf.label_bomb_npz(root / "labels_bomb.npz"),
        "row": hf.one_row_npz(root / "one_row.npz"),
        "trunc": hf.truncated_header_npy(root / "truncated_header.npy"),
        "corrupt": hf.corrupt_deflate_npz(root / "corrupt_deflate.npz"),
        "empty": hf.empty_file(root / "empty.npz"),
        "st_list": hf.safetensors_file(root / "list.safetensors", [1, 2, 3]),
        "st_int": hf.safetensors_file(root / "int.safetensors", 7),
        "st_val": hf.safetensors_file(root / "value.safetensors", {"logits": 5}),
        "huge": hf.huge_shape_npy(root / "huge_shape.npy"),
        "object": hf.object_npy(root / "object.npy"),
        "posinf": hf.bad_row_npz(root / "posinf.npz", 3000, 1000, 2500, np.inf),
        "neginf": hf.bad_row_npz(root / "masked_row.npz", 3000, 1000, 2500, -np.inf),
        "nan": hf.bad_row_npz(root / "nan.npz", 3000, 1000, 2500, np.nan),
        "good": hf.good_npz(root / "good.npz"),
    }
    np.save(root / "labels.npy", np.zeros(10, np.int64))
    s = {k: str(v) for k, v in f.items()}
    member = {k: f"{v}['logits']" for k, v in s.items()}
    cases: list[tuple[str, list[str], dict[str, Any]]] = [
        # the hang (the skip loop spun on b"" once past the data)
        ("hang_diagnose", ["diagnose", s["short"], "--json"], {"file": member["short"]}),
        (
            "hang_evaluate",
            ["evaluate", s["short"], "--labels", str(root / "labels.npy")],
            {"file": member["short"]},
        ),
        # memory bounds: refused from the headers, before reading data
        (
            "fortran_diagnose",
            ["diagnose", s["fortran"], "--key", "logits", "--json"],
            {"file": member["fortran"], "has": "Fortran-ordered"},
        ),
        (
            "fortran_evaluate",
            ["evaluate", s["fortran"], "--json"],
            {"file": member["fortran"], "has": "Fortran-ordered"},
        ),
        (
            "labels_bomb_evaluate",
            ["evaluate", s["bomb"], "--json"],
            {"file": s["bomb"], "has": "10 rows of scores but 268435456 labels"},
        ),
        (
            "labels_bomb_diagnose",
            ["diagnose", s["bomb"], "--key", "logits", "--target-key", "labels", "--json"],
            {"file": f"{s['bomb']}['labels']", "has": "does not match (10,)"},
        ),
        # one row of 2**26 classes in a 260 KB file (3.8 GB / 6.1 GB peaks)
        (
            "one_row_evaluate",
            ["evaluate", s["row"], "--json"],
            {"file": member["row"], "has": "one row holds 67108864 values"},
        ),
        (
            "one_row_diagnose",
            ["diagnose", s["row"], "--key", "logits", "--json"],
            {"file": member["row"], "has": "one row holds 67108864 values"},
        ),
        # tracebacks and meaningless messages
        (
            "truncated_header_diagnose",
            ["diagnose", s["trunc"], "--json"],
            {"file": s["trunc"], "has": "header", "not": "pickle"},
        ),
        (
            "truncated_header_evaluate",
            ["evaluate", s["trunc"], "--labels", str(root / "labels.npy")],
            {"file": s["trunc"]},
        ),
        (
            "corrupt_deflate_evaluate",
            ["evaluate", s["corrupt"], "--json"],
            {"file": member["corrupt"]},
        ),
        (
            "corrupt_deflate_diagnose",
            ["diagnose", s["corrupt"], "--key", "logits", "--json"],
            {"file": member["corrupt"]},
        ),
        ("empty_npz_evaluate", ["evaluate", s["empty"]], {"file": s["empty"]}),
        ("empty_npz_diagnose", ["diagnose", s["empty"]], {"file": s["empty"]}),
        ("safetensors_list", ["diagnose", s["st_list"]], {"file": s["st_list"], "has": "list"}),
        ("safetensors_int", ["diagnose", s["st_int"]], {"file": s["st_int"], "has": "int"}),
        ("safetensors_value", ["diagnose", s["st_val"]], {"file": f"{s['st_val']}['logits']"}),
        ("safetensors_list_evaluate", ["evaluate", s["st_list"]], {"file": s["st_list"]}),
        ("huge_shape", ["diagnose", s["huge"], "--json"], {"file": s["huge"], "not": "pickle"}),
        (
            "object_npy",
            ["diagnose", s["object"], "--json"],
            {"file": s["object"], "has": "pickled content, which is never loaded"},
        ),
        # errors that name the file and the row in it (2500, not 403 of an internal chunk)
        (
            "posinf_row",
            ["evaluate", s["posinf"], "--json"],
            {"file": s["posinf"], "has": "logits contains +inf (first at index (2500, 3))"},
        ),
        (
            "masked_row",
            ["evaluate", s["neginf"], "--json"],
            {"file": s["neginf"], "has": "logits row 2500 has no finite value"},
        ),
        (
            "nan_row",
            ["evaluate", s["nan"], "--json"],
            {"file": s["nan"], "has": "logits contains NaN (first at index (2500, 3))"},
        ),
    ]
    rep = {k: root / k for k in ("rep_fsize", "rep_int", "rep_term", "rep_commit", "rep_diag")}
    for k in ("rep_fsize", "rep_int", "rep_term", "rep_commit"):
        _old_report(rep[k])
    rep["rep_diag"].mkdir()
    (rep["rep_diag"] / "d.html").write_text(OLD)
    os.chmod(rep["rep_diag"] / "d.html", 0o600)
    pause = root / "paused"

    def writer(out: Path, point: str, sig: int | None, fsize: int | None = None) -> dict[str, Any]:
        env = {"_LOGITLAB_TEST_PAUSE": point, "_LOGITLAB_TEST_PAUSE_FILE": f"{pause}.{out.name}"}
        return {"env": env if sig else {}, "fsize": fsize, "signal": sig, "out": str(out)}

    report = ["report", s["good"], "--json", "--out"]
    cases += [
        # writes limited to 40 KB (ulimit -f): the 90 KB HTML cannot be staged
        (
            "report_disk_full",
            [*report, str(rep["rep_fsize"])],
            {
                "file": str(rep["rep_fsize"] / "report.html"),
                "has": "nothing was changed",
                **writer(rep["rep_fsize"], "", None, 40_000),
            },
        ),
        # SIGINT the moment the HTML temp file appears; SIGTERM while staging; SIGTERM between
        # the two renames (it waits until both files are in place)
        (
            "report_sigint_staging",
            [*report, str(rep["rep_int"])],
            {"rc": 130, **writer(rep["rep_int"], "staged:report.html", signal.SIGINT)},
        ),
        (
            "report_sigterm_staging",
            [*report, str(rep["rep_term"])],
            {"rc": 143, **writer(rep["rep_term"], "staged:report.json", signal.SIGTERM)},
        ),
        (
            "report_sigterm_commit",
            [*report, str(rep["rep_commit"])],
            {"rc": 143, **writer(rep["rep_commit"], "commit", signal.SIGTERM)},
        ),
        (
            "diagnose_html_sigterm",
            ["diagnose", s["good"], "--key", "logits", "--html", str(rep["rep_diag"] / "d.html")],
            {"rc": 143, **writer(rep["rep_diag"], "staged:d.html", signal.SIGTERM)},
        ),
    ]
    driver_cases, expect = [], {}
    for cid, argv, exp in cases:
        driver_cases.append(
            {
                "id": cid,
                "argv": argv,
                "env": exp.get("env", {}),
                "fsize": exp.get("fsize"),
                "timeout": 60,
            }
        )
        expect[cid] = exp
    return driver_cases, expect


def _limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent  # shared by the workers of one session (`make test` runs -n 2)
    root = base / "hostile_cli"
    try:
        root.mkdir()  # atomic: the first worker to get here builds the files and runs the CLI
    except FileExistsError:  # another worker does: wait for its summary
        summary = root / "summary.json"
        deadline = time.monotonic() + RUN_TIMEOUT + 120
        while not summary.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        return json.loads(summary.read_text())
    out = _run_driver(root)
    tmp = root / "summary.json.part"
    tmp.write_text(json.dumps(out))
    tmp.rename(root / "summary.json")
    return out


def _run_driver(root: Path) -> dict[str, Any]:
    cases, expect = _build(root)
    (root / "cases.json").write_text(json.dumps(cases))
    results = root / "results.json"
    env = dict(os.environ)
    src = Path(__file__).resolve().parents[2] / "src"
    env["PYTHONPATH"] = os.pathsep.join([str(src), env.get("PYTHONPATH", "")])
    proc = subprocess.Popen(
        [sys.executable, str(DRIVER), str(root / "cases.json"), str(results)],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        preexec_fn=_limit_memory,
    )
    deadline = time.monotonic() + RUN_TIMEOUT
    try:
        # deliver each signal at its pause point, in case order
        for c in cases:
            e = expect[c["id"]]
            if not e.get("signal"):
                continue
            flag = Path(c["env"]["_LOGITLAB_TEST_PAUSE_FILE"])
            while not flag.exists() and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.01)
            if flag.exists():
                os.kill(proc.pid, e["signal"])
        _, err = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
    done = {r["id"]: r for r in json.loads(results.read_text())} if results.exists() else {}
    return {
        "expect": expect,
        "results": done,
        "driver": (proc.returncode, err.decode(errors="replace")[-3000:]),
    }


def _result(runs: dict[str, Any], cid: str) -> dict[str, Any]:
    r = runs["results"].get(cid)
    if r is None:
        rc, tail = runs["driver"]
        pytest.fail(f"case {cid} did not finish (a hang or a crash; driver rc {rc}):\n{tail}")
    assert not r["timed_out"], f"{cid} timed out (a hang)"
    return r


ERROR_CASES = [
    "hang_diagnose", "hang_evaluate", "fortran_diagnose", "fortran_evaluate",
    "labels_bomb_evaluate", "labels_bomb_diagnose", "one_row_evaluate", "one_row_diagnose",
    "truncated_header_diagnose",
    "truncated_header_evaluate", "corrupt_deflate_evaluate", "corrupt_deflate_diagnose",
    "empty_npz_evaluate", "empty_npz_diagnose", "safetensors_list", "safetensors_int",
    "safetensors_value", "safetensors_list_evaluate", "huge_shape", "object_npy", "posinf_row",
    "masked_row", "nan_row", "report_disk_full",
]  # fmt: skip


@pytest.mark.parametrize("cid", ERROR_CASES)
def test_one_line_error(runs: dict[str, Any], cid: str) -> None:
    r, e = _result(runs, cid), runs["expect"][cid]
    assert r["rc"] == 2, r
    lines = r["stderr"].splitlines()
    assert len(lines) == 1, r["stderr"]  # no traceback, no warning, no "Aborted."
    assert lines[0].startswith(f"logitlab: error: {e['file']}: "), lines[0]
    if "has" in e:
        assert e["has"] in lines[0]
    if "not" in e:
        assert e["not"] not in lines[0]
    assert r["stdout"] == ""


def _no_temp_files(d: Path) -> None:
    assert sorted(p.name for p in d.iterdir()) in (
        ["report.html", "report.json"],
        ["d.html"],
    ), sorted(p.name for p in d.iterdir())


def _old_intact(d: Path) -> None:
    _no_temp_files(d)
    for name in ("report.json", "report.html"):
        assert (d / name).read_text() == OLD
    assert (d / "report.html").stat().st_mode & 0o777 == 0o600
    assert (d / "report.json").stat().st_mode & 0o777 == 0o640


@pytest.mark.parametrize(
    "cid", ["report_disk_full", "report_sigint_staging", "report_sigterm_staging"]
)
def test_failed_or_interrupted_report_leaves_old_report(runs: dict[str, Any], cid: str) -> None:
    r, e = _result(runs, cid), runs["expect"][cid]
    assert r["rc"] == e.get("rc", 2), r
    if e.get("signal"):
        name = signal.Signals(e["signal"]).name
        assert r["stderr"].splitlines() == [f"logitlab: interrupted by {name}"], r["stderr"]
    _old_intact(Path(e["out"]))


def test_signal_during_commit_completes_the_new_report(runs: dict[str, Any]) -> None:
    r, e = _result(runs, "report_sigterm_commit"), runs["expect"]["report_sigterm_commit"]
    assert r["rc"] == 143, r
    d = Path(e["out"])
    _no_temp_files(d)
    new = json.loads((d / "report.json").read_text())
    assert new["n"] == 60 and r["stdout"] == ""  # stopped by the signal before printing
    assert (d / "report.html").read_text().rstrip().endswith("</html>")
    # replaced files keep their permissions
    assert (d / "report.html").stat().st_mode & 0o777 == 0o600
    assert (d / "report.json").stat().st_mode & 0o777 == 0o640


def test_diagnose_html_interrupted(runs: dict[str, Any]) -> None:
    r, e = _result(runs, "diagnose_html_sigterm"), runs["expect"]["diagnose_html_sigterm"]
    assert r["rc"] == 143, r
    d = Path(e["out"])
    _no_temp_files(d)
    assert (d / "d.html").read_text() == OLD and (d / "d.html").stat().st_mode & 0o777 == 0o600

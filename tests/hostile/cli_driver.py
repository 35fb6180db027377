"""Run several ``logitlab`` command lines in one process, as the console script does.

Usage: ``python cli_driver.py CASES.json RESULTS.json``. Each case is
``{"id", "argv", "env": {...}, "fsize": bytes or null, "timeout": seconds}``; it runs
``logitlab.cli.main(argv)`` (the entry point of the ``logitlab`` script) with file descriptors 1
and 2 redirected to files of its own, the given environment variables, and optionally a
``RLIMIT_FSIZE`` soft limit (a full disk). RESULTS.json is rewritten after every case with
``{"id", "rc", "stdout", "stderr", "seconds", "timed_out"}``, so that a case that hangs is
visible even if the whole run is killed. One process for all cases keeps the start-up cost
(the imports) to one; the caller sets the memory limit (``RLIMIT_AS``) of the whole run.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import sys
import time
import traceback
import warnings
from pathlib import Path
from typing import Any


class _CaseTimeout(BaseException):
    """Not an Exception: the CLI's error handling must not turn it into a one-line error."""


def _on_alarm(signum: int, frame: object) -> None:
    raise _CaseTimeout


def run_case(case: dict[str, Any], work: Path) -> dict[str, Any]:
    from logitlab.cli import main

    out, err = work / f"{case['id']}.out", work / f"{case['id']}.err"
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    fo, fe = open(out, "wb"), open(err, "wb")
    os.dup2(fo.fileno(), 1)
    os.dup2(fe.fileno(), 2)
    env = case.get("env") or {}
    os.environ.update(env)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    if case.get("fsize"):
        resource.setrlimit(resource.RLIMIT_FSIZE, (int(case["fsize"]), hard))
    signal.signal(signal.SIGALRM, _on_alarm)
    signal.alarm(int(case.get("timeout", 60)))
    t0 = time.monotonic()
    rc: int | None = None
    timed_out = False
    try:
        rc = main(list(case["argv"]))
    except _CaseTimeout:
        timed_out = True
    except BaseException:  # a traceback is a failure of the case: keep it for the report
        traceback.print_exc()
    finally:
        signal.alarm(0)
        seconds = time.monotonic() - t0
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        for k in env:
            os.environ.pop(k, None)
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in saved:
            os.close(fd)
        fo.close()
        fe.close()
    return {
        "id": case["id"],
        "rc": rc,
        "stdout": out.read_text(errors="replace"),
        "stderr": err.read_text(errors="replace"),
        "seconds": seconds,
        "timed_out": timed_out,
    }


def main() -> None:
    cases = json.loads(Path(sys.argv[1]).read_text())
    results_path = Path(sys.argv[2])
    work = results_path.parent
    # every warning is shown every time, so that one case cannot hide another's
    warnings.simplefilter("always")
    results = []
    for case in cases:
        results.append(run_case(case, work))
        results_path.write_text(json.dumps(results))


if __name__ == "__main__":
    main()

"""Run the conformance suite (``tests/conformance``) and print the per-peer table.

Each case of the suite is a peer's own test case (SciPy, PyTorch, optax, torchmetrics), run
against logitlab. Per peer the table counts the cases, those that pass, the deliberate
differences among them (documented, asserted cases marked ``deliberate_difference``), and the
expected failures (strict xfails) by origin: a bug listed in issue 13 (being fixed), the
empty-reduction semantics of issue 14, or a NEW finding no issue lists yet. A strict xfail that
starts passing is a failure of the suite (its fix landed: remove the mark); it is counted under
"failed" and listed.

Run from the repository root::

    python benchmarks/conformance_summary.py              # the table (Markdown)
    python benchmarks/conformance_summary.py --reasons    # and every expected failure's reason
    python benchmarks/conformance_summary.py --write-docs # also replace the Conformance section
                                                          # of docs/accuracy.md
    python benchmarks/conformance_summary.py --json out.json

It runs pytest in this process with a small collector plugin (no xdist, no cache); extra
arguments after ``--`` go to pytest (``-- -k scipy``).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SUITE = "tests/conformance"
# module name -> peer; the first matching prefix wins ("torchmetrics" before "torch")
PEERS = (
    ("scipy", "SciPy"),
    ("torchmetrics", "torchmetrics"),
    ("torch", "PyTorch"),
    ("optax", "optax"),
)
COLUMNS = ("cases", "passed", "deliberate", "xfail13", "xfail14", "xfail_new", "failed", "skipped")
SECTION = "## Conformance"


def peer_of(nodeid: str) -> str:
    module = nodeid.split("::", 1)[0].rsplit("/", 1)[-1]
    m = re.match(r"test_conformance_(.+)\.py$", module)
    name = m.group(1) if m else module
    for prefix, peer in PEERS:
        if name.startswith(prefix):
            return peer
    return "other"


def origin(reason: str) -> str:
    if reason.startswith("issue 13"):
        return "xfail13"
    if reason.startswith("issue 14"):
        return "xfail14"
    if reason.startswith("NEW"):
        return "xfail_new"
    return "failed"  # an expected failure must say where it comes from


class Collector:
    """pytest plugin: per case, its peer, whether it is a deliberate difference, its outcome."""

    def __init__(self) -> None:
        self.cases: dict[str, dict[str, Any]] = {}

    def pytest_collection_modifyitems(self, items: list[Any]) -> None:
        for item in items:
            mark = item.get_closest_marker("deliberate_difference")
            self.cases[item.nodeid] = {
                "peer": peer_of(item.nodeid),
                "deliberate": mark is not None,
                "why": mark.args[0] if mark is not None and mark.args else "",
                "outcome": "not run",
                "reason": "",
            }

    def pytest_runtest_logreport(self, report: Any) -> None:
        case = self.cases.get(report.nodeid)
        if case is None:
            return
        if hasattr(report, "wasxfail"):
            case["outcome"] = "xfailed" if report.skipped else "xpassed"
            case["reason"] = report.wasxfail
        elif report.failed:
            case["outcome"] = "failed"
            text = str(getattr(report, "longrepr", ""))
            if text.startswith("[XPASS(strict)]"):
                case["outcome"] = "xpassed (strict)"
                case["reason"] = text[len("[XPASS(strict)] ") :]
        elif report.skipped and case["outcome"] == "not run":
            case["outcome"] = "skipped"
        elif report.when == "call" and report.passed:
            case["outcome"] = "passed"


def tally(cases: dict[str, dict[str, Any]]) -> dict[str, Counter[str]]:
    table: dict[str, Counter[str]] = defaultdict(Counter)
    for case in cases.values():
        row = table[case["peer"]]
        row["cases"] += 1
        outcome = case["outcome"]
        if outcome == "passed":
            row["passed"] += 1
            row["deliberate"] += case["deliberate"]
        elif outcome == "xfailed":
            row[origin(case["reason"])] += 1
        elif outcome == "skipped":
            row["skipped"] += 1
        else:
            row["failed"] += 1
    return table


def markdown(table: dict[str, Counter[str]]) -> str:
    head = (
        "| peer | cases | passed | of which deliberate differences | expected failures: "
        "issue 13 | issue 14 | new findings | failed | skipped |"
    )
    lines = [head, "|---|" + "---:|" * 8]
    total: Counter[str] = Counter()
    order = [p for _, p in PEERS if p in table] + sorted(set(table) - {p for _, p in PEERS})
    for peer in order:
        row = table[peer]
        total.update(row)
        lines.append(f"| {peer} | " + " | ".join(str(row[c]) for c in COLUMNS) + " |")
    lines.append("| **all** | " + " | ".join(f"**{total[c]}**" for c in COLUMNS) + " |")
    return "\n".join(lines)


def differences(cases: dict[str, dict[str, Any]]) -> str:
    """The distinct deliberate differences, per peer, with their number of cases."""
    by_why: dict[tuple[str, str], int] = Counter()
    for case in cases.values():
        if case["deliberate"] and case["outcome"] == "passed":
            by_why[(case["peer"], case["why"])] += 1
    return "\n".join(
        f"- {peer}: {why} ({n} case{'s' * (n != 1)})" for (peer, why), n in sorted(by_why.items())
    )


def reasons(cases: dict[str, dict[str, Any]]) -> str:
    by_reason: dict[tuple[str, str], list[str]] = defaultdict(list)
    for nodeid, case in cases.items():
        if case["outcome"] != "passed" and case["outcome"] != "skipped":
            by_reason[(case["outcome"], case["reason"])].append(nodeid)
    lines = []
    for (outcome, reason), ids in sorted(by_reason.items(), key=lambda kv: kv[0][1]):
        n = len(ids)
        lines.append(f"- {outcome}, {n} case{'s' * (n != 1)}: {reason or '(no reason)'}")
        if outcome != "xfailed":
            lines += [f"    - {i}" for i in ids]
    return "\n".join(lines)


def write_docs(table_md: str, cases: dict[str, dict[str, Any]], command: str) -> Path:
    """Replace (or append) the Conformance section of docs/accuracy.md."""
    path = ROOT / "docs" / "accuracy.md"
    text = path.read_text() if path.exists() else ""
    body = "\n".join(
        [
            SECTION,
            "",
            "The conformance suite (`tests/conformance/`, part of `make test`) runs the peers' own "
            "test cases against logitlab: SciPy's `special`/`stats`/`spatial` tests, PyTorch's "
            "loss and softmax tests with `gradcheck` and `gradgradcheck`, optax's classification "
            "loss tests (incl. the stability tests) and torchmetrics' calibration-error and "
            "perplexity tests. Expected values are the peers' (their constants, or the peer run "
            "here on the same input) or an independent mpmath/NumPy computation of the peer's "
            "definition, never logitlab's. Each case runs on every backend it applies to (NumPy, "
            "torch, array-api-strict), so one transcribed case may count up to three times.",
            "",
            "A *deliberate difference* is a case where logitlab differs on purpose and documents "
            "it (uniform softmax for an all `-inf` row, mean 0 for an all-ignored batch, "
            "validated probabilities, smoothing over finite classes only, ...); it asserts "
            "logitlab's behaviour and that the peer differs. *Expected failures* are strict "
            "xfails, each naming the defect it waits for (a fix that lands turns its cases red "
            "until the mark goes); the 124 of the first run (issue 13, the empty reductions of "
            "issue 14, 34 new findings) are all fixed. Their reasons, when there are any: "
            "`python benchmarks/conformance_summary.py --reasons`.",
            "",
            f"Produced by `{command}`:",
            "",
            table_md,
            "",
            "Deliberate differences (each a documented, asserted case; counted once per backend):",
            "",
            differences(cases),
            "",
            "Expected failures, by reason:",
            "",
            reasons(cases) or "- none",
            "",
        ]
    )
    start = text.find(f"\n{SECTION}\n")
    if start < 0:
        new = text.rstrip("\n") + "\n\n" + body
    else:
        nxt = text.find("\n## ", start + 1)
        new = text[: start + 1] + body + (text[nxt + 1 :] if nxt >= 0 else "")
    path.write_text(new)
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reasons", action="store_true", help="list every non-passing case's reason")
    ap.add_argument("--json", type=Path, help="write the per-case outcomes and the table here")
    ap.add_argument("--write-docs", action="store_true", help="update docs/accuracy.md")
    ap.add_argument("pytest_args", nargs="*", help="extra pytest arguments (after --)")
    args = ap.parse_args(argv)

    import pytest

    os.chdir(ROOT)
    for p in (str(ROOT / "src"), str(ROOT)):
        if p not in sys.path:
            sys.path.insert(0, p)
    collector = Collector()
    pytest_args = [SUITE, "-p", "no:cacheprovider", "-p", "no:xdist", "-q", "-o", "addopts="]
    code = pytest.main([*pytest_args, *args.pytest_args], plugins=[collector])
    table = tally(collector.cases)
    table_md = markdown(table)
    print()
    print(table_md)
    if args.reasons:
        print("\nDeliberate differences:")
        print(differences(collector.cases))
        print("\nExpected failures and failures:")
        print(reasons(collector.cases))
    if args.json:
        args.json.write_text(
            json.dumps({"table": table, "cases": collector.cases}, indent=1, sort_keys=True)
        )
    if args.write_docs:
        cmd = "python benchmarks/conformance_summary.py --write-docs"
        print(f"\nwrote {write_docs(table_md, collector.cases, cmd)}")
    return int(code)


if __name__ == "__main__":
    sys.exit(main())

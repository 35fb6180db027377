"""Speed of the exact core against PyTorch and SciPy: each operation a case of the harness of
logitlab.app.bench (logitlab and its peer in processes of their own, timed in interleaved rounds).

Prints a Markdown table (median seconds over ``--repeats`` rounds; ratio = median over rounds of
logitlab's time over the peer's in the same round, below 1 means logitlab is faster; peak memory
above the inputs, the output included) and, with ``--write``, records it in ``docs/speed.md``.
With ``--before PATH`` (a checkout of another commit) the table has a before column and
``vs before``, the median per-round ratio of the two versions of logitlab.

Run: ``python benchmarks/speed_core.py [--rows 8192 --cols 32000 --repeats 3 --before PATH]
[--write]`` (``--quick``: a (64, 1000) smoke test).
"""

from __future__ import annotations

import argparse
import os
import platform
from importlib.metadata import version
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

# (operation, array library) -> the peer's name in the table
PEERS = {
    ("logsumexp", "torch"): "torch.logsumexp",
    ("log_softmax", "torch"): "torch.log_softmax",
    ("entropy", "torch"): "Categorical(logits).entropy()",
    ("softmax", "torch"): "torch.softmax",
    ("cross_entropy", "torch"): "F.cross_entropy",
    ("logsumexp", "numpy"): "scipy.special.logsumexp",
    ("log_softmax", "numpy"): "scipy.special.log_softmax",
    ("entropy", "numpy"): "scipy.stats.entropy(softmax)",
    ("cross_entropy", "numpy"): "-log_softmax[t] (scipy)",
}


def setup(op: str, lib: str, impl: str, rows: int, cols: int) -> Any:
    """Worker side: ``op`` on a (rows, cols) float32 array of ``lib`` (torch or numpy) by
    logitlab (``impl="logitlab"``) or by the peer; the NumPy cases never import torch."""
    import numpy as np

    if lib == "torch":
        import torch

        gen = torch.Generator().manual_seed(0)
        x: Any = torch.randn(rows, cols, generator=gen) * 3
        t: Any = torch.randint(0, cols, (rows,), generator=gen)
    else:
        rng = np.random.default_rng(0)
        x = rng.standard_normal((rows, cols), dtype=np.float32) * 3
        t = rng.integers(0, cols, rows)
    if impl == "logitlab":
        import logitlab as ll

        ours = {
            "logsumexp": lambda: ll.logsumexp(x),
            "log_softmax": lambda: ll.log_softmax(x),
            "entropy": lambda: ll.entropy(logits=x),
            "softmax": lambda: ll.softmax(x),
            "cross_entropy": lambda: ll.cross_entropy(x, t),
        }
        return ours[op]
    if lib == "torch":
        import torch.nn.functional as F

        theirs = {
            "logsumexp": lambda: torch.logsumexp(x, -1),
            "log_softmax": lambda: torch.log_softmax(x, -1),
            "entropy": lambda: torch.distributions.Categorical(logits=x).entropy(),
            "softmax": lambda: torch.softmax(x, -1),
            "cross_entropy": lambda: F.cross_entropy(x, t),
        }
        return theirs[op]
    import scipy.special as ss
    import scipy.stats as st

    scipy_peers = {
        "logsumexp": lambda: ss.logsumexp(x, axis=-1),
        "log_softmax": lambda: ss.log_softmax(x, axis=-1),
        "entropy": lambda: st.entropy(ss.softmax(x, axis=-1), axis=-1),
        "cross_entropy": lambda: (
            -np.take_along_axis(ss.log_softmax(x, axis=-1), t[:, None], 1).mean()
        ),
    }
    return scipy_peers[op]


def main(argv: list[str] | None = None) -> None:
    from logitlab.app.bench import Case, Variant, add_arguments, run_cases, with_before

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=8192)
    ap.add_argument("--cols", type=int, default=32000)
    ap.add_argument("--write", action="store_true", help="write docs/speed.md")
    add_arguments(ap)
    a = ap.parse_args(argv)
    rows, cols = (64, 1000) if a.quick else (a.rows, a.cols)
    cases = []
    for (op, lib), peer in PEERS.items():
        vs = [Variant("logitlab", {"impl": "logitlab"}), Variant(peer, {"impl": "peer"})]
        if a.before:
            vs = with_before(vs, a.before, ["logitlab"], control=a.control)
        params = dict(op=op, lib=lib, rows=rows, cols=cols)
        cases.append(Case(f"{op} ({lib})", setup, vs, params, baseline=peer))
    # --quick: one worker per variant serves every case (start-up dominates tiny cases)
    results = run_cases(cases, a.repeats, pause_s=0 if a.quick else 0.25, reuse_workers=a.quick)
    before = " before s | vs before |" if a.before else ""
    before += " control |" if a.before and a.control else ""
    lines = [f"| logitlab |{before} s | peer | s | ratio | MB | peer MB |"]
    lines.append("|" + "---|" * (lines[0].count("|") - 1))
    for case, res in zip(cases, results, strict=True):
        r = {x.variant: x for x in res}
        ours, peer = r["logitlab"], r[case.baseline or ""]
        old = f" {r['before:logitlab'].time_s:.3f} | {ours.vs_before:.3f} |" if a.before else ""
        old += f" {r['control:logitlab'].vs_before:.3f} |" if a.before and a.control else ""
        lines.append(
            f"| {case.name} |{old} {ours.time_s:.3f} | {peer.variant} | {peer.time_s:.3f} | "
            f"**{ours.ratio:.2f}x** | {ours.extra_mb:.0f} | {peer.extra_mb:.0f} |"
        )
    header = (
        f"({rows}, {cols}) float32, median of {a.repeats} interleaved rounds, "
        f"torch {version('torch')}, SciPy {version('scipy')}, {os.cpu_count()} CPUs, "
        f"{platform.processor() or platform.machine()}"
    )
    table = "\n".join([header, "", *lines])
    print(table)
    if a.write:
        (ROOT / "docs" / "speed.md").write_text(
            "# Speed of the exact core\n\n"
            "Generated by `python benchmarks/speed_core.py --write`: each operation is a case of "
            "the benchmark harness (`logitlab.app.bench`), logitlab and its peer each in a worker "
            "process of its own, timed in interleaved rounds; s = median over rounds, ratio = "
            "median over rounds of logitlab's time over the peer's in the same round (below 1: "
            "logitlab is faster), MB = peak memory above the inputs, output included. The peers "
            "are not exact (see accuracy.md): this is the price of exactness.\n\n" + table + "\n"
        )


if __name__ == "__main__":
    main()

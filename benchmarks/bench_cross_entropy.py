"""In-memory cross-entropy, loss and gradient: F.cross_entropy against logitlab.torch.cross_entropy
(a fresh gradient, and ``inplace_backward=True``), on the harness of logitlab.app.bench.

    PYTHONPATH=src python benchmarks/bench_cross_entropy.py [--shape 8192 32000] [--repeats 5]
    PYTHONPATH=src python benchmarks/bench_cross_entropy.py --before ../logitlab-old  # before/after

Columns: ``time_s`` (median over interleaved rounds), ``best_s``, ``speedup`` (median per-round
ratio of F.cross_entropy's time to the variant's), ``vs_before``, ``extra_MB`` (all memory the
loss forward + backward allocates, the returned gradient included: one N x V buffer for a fresh
gradient, 0 when it overwrites the logits).
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from typing import Any

VARIANTS = ("torch", "logitlab", "logitlab_inplace")


def setup(impl: str, n: int, v: int) -> dict[str, Any]:
    """Worker side: ``d loss / d logits`` of one variant, fresh logits before every step (the
    in-place variant overwrites them)."""
    import torch
    import torch.nn.functional as F

    if impl not in VARIANTS:
        raise ValueError(f"unknown cross-entropy variant {impl!r}")
    from logitlab.torch import cross_entropy

    torch.manual_seed(0)
    master = torch.randn(n, v) * 2
    t = torch.randint(0, v, (n,))
    box: list[Any] = []

    def prepare() -> None:
        box.clear()
        box.append(master.clone().requires_grad_())

    def step() -> None:
        z = box[0]
        if impl == "torch":
            loss = F.cross_entropy(z, t)
        else:
            loss = cross_entropy(z, t, inplace_backward=impl == "logitlab_inplace")
        box.append(torch.autograd.grad(loss, [z])[0])  # kept: part of the step's memory

    return dict(step=step, prepare=prepare)


def run(
    shapes: Sequence[tuple[int, int]],
    variants: Sequence[str] = VARIANTS,
    repeats: int = 3,
    before: str | None = None,
    pause_s: float = 0.25,
    control: bool = False,
) -> tuple[list[dict[str, Any]], str]:
    """Rows (``shape``, ``variant``, ``time_s``, ``best_s``, ``speedup``, ``vs_before``,
    ``extra_mb``) and their table."""
    from logitlab.app.bench import Case, Variant, format_table, median_ratio, run_cases, with_before

    vs = [Variant(name, {"impl": name}) for name in variants]
    if before:
        names = [name for name in variants if name != "torch"]
        vs = with_before(vs, before, names, control=control)
    cases = [Case(f"{n}x{v}", setup, vs, dict(n=n, v=v)) for n, v in shapes]
    rows = []
    for res in run_cases(cases, repeats, pause_s=pause_s):
        base = next((r.times for r in res if r.variant == "torch"), None)
        for r in res:
            row = dict(shape=r.case, variant=r.variant, time_s=r.time_s, best_s=r.best_s)
            row["speedup"] = median_ratio(base, r.times) if base else math.nan
            if r.vs_before is not None:
                row["vs_before"] = r.vs_before
            rows.append({**row, "extra_mb": r.extra_mb})
    cols = ["shape", "variant", "time_s", "best_s", "speedup", "vs_before", "extra_mb"]
    return rows, format_table(rows, [c for c in cols if any(c in r for r in rows)])


def main(argv: list[str] | None = None) -> None:
    from logitlab.app.bench import add_arguments

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shape", nargs=2, type=int, action="append", metavar=("N", "V"))
    add_arguments(p, repeats=5)
    a = p.parse_args(argv)
    shapes = [tuple(s) for s in a.shape] if a.shape else [(8192, 32000)]
    if a.quick:
        shapes = [(64, 1000)]
    pause = 0 if a.quick else 0.25
    print(run(shapes, repeats=a.repeats, before=a.before, pause_s=pause, control=a.control)[1])


if __name__ == "__main__":
    main()

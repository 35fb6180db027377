"""The streaming Evaluator against torch computing the NLL alone, and fit_temperature on a
memory-mapped file, on the harness of logitlab.app.bench.

1. ``Evaluator`` (NLL, accuracy, Brier, entropy, calibration histogram) over an ``(N, C)`` float32
   array fed in batches, against ``F.cross_entropy`` on the whole array and in the same batches,
   each in a worker process of its own, timed in interleaved rounds. ``speed`` = median over
   rounds of (the faster torch variant's time / the Evaluator's time) (the target is >= 0.5).
2. ``fit_temperature`` on an ``(N, V)`` float32 ``.npy`` file read through
   :func:`logitlab.io.open_array` (memory-mapped, row chunks): time, passes, and the peak
   anonymous memory (``anon_MB``: the file's mapped pages are page cache, not counted).

``--before PATH`` adds the Evaluator and fit_temperature of another checkout, timed in the same
rounds (``vs_before``).

Run: ``python benchmarks/bench_evaluator.py [--n 10000000 --c 10 --tn 1000000 --tv 1000]``.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from typing import Any

import numpy as np


def setup_evaluator(impl: str, n: int, c: int, batch: int, threads: int = 0) -> Any:
    """Worker side: one pass over the (n, c) logits, in batches (``evaluator``, ``torch_batched``)
    or whole (``torch_whole``)."""
    import torch
    import torch.nn.functional as F

    if threads:
        torch.set_num_threads(threads)
    rng = np.random.default_rng(0)
    y = rng.integers(0, c, n)
    x = rng.standard_normal((n, c), dtype=np.float32) * 2
    x[np.arange(n), y] += 2.0
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    if impl == "evaluator":
        from logitlab.metrics import Evaluator

        def run_eval() -> None:
            ev = Evaluator(c)
            for a in range(0, n, batch):
                ev.update(xt[a : a + batch], yt[a : a + batch])
            ev.compute()

        return run_eval
    if impl == "torch_whole":
        return lambda: float(F.cross_entropy(xt, yt))
    if impl == "torch_batched":
        return lambda: sum(
            float(F.cross_entropy(xt[a : a + batch], yt[a : a + batch], reduction="sum"))
            for a in range(0, n, batch)
        )
    raise ValueError(f"unknown variant {impl!r}")


def make_file(path: str, n: int, v: int) -> None:
    """Normal logits (scale 3) with the label's logit raised by 4; labels from seed 1."""
    rng = np.random.default_rng(1)
    y = rng.integers(0, v, n)
    mm = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, v))
    step = max(1, (64 << 20) // (4 * v))
    for a in range(0, n, step):
        b = min(n, a + step)
        blk = rng.standard_normal((b - a, v), dtype=np.float32) * 3
        blk[np.arange(b - a), y[a:b]] += 4.0
        mm[a:b] = blk
    mm.flush()
    del mm
    np.save(path + ".labels.npy", y)


def setup_temperature(path: str) -> dict[str, Any]:
    """Worker side: ``fit_temperature`` over the memory-mapped file (the fit as ``info``)."""
    from logitlab.io import open_array
    from logitlab.metrics import fit_temperature

    y = np.load(path + ".labels.npy")
    # one-time costs (lazy imports, the native kernel's load) outside the measured fit
    fit_temperature(np.load(path, mmap_mode="r")[:8], y[:8])
    fits: list[Any] = []

    def info() -> dict[str, Any]:
        r = fits[-1]
        return dict(
            T=r.temperature,
            passes=r.iterations + 1,
            converged=r.converged,
            nll=f"{r.nll_before:.4f}->{r.nll_after:.4f}",
            ece=f"{r.ece_before:.4f}->{r.ece_after:.4f}",
        )

    return dict(step=lambda: fits.append(fit_temperature(open_array(path), y)), info=info)


def main(argv: list[str] | None = None) -> None:
    from logitlab.app.bench import (
        Case,
        Variant,
        add_arguments,
        format_table,
        median_ratio,
        run_case,
        with_before,
    )

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10_000_000, help="Evaluator rows")
    ap.add_argument("--c", type=int, default=10, help="Evaluator classes")
    ap.add_argument("--batch", type=int, default=1_000_000, help="Evaluator batch rows")
    ap.add_argument("--tn", type=int, default=1_000_000, help="fit_temperature rows")
    ap.add_argument("--tv", type=int, default=1000, help="fit_temperature classes")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--temperature-repeats", type=int, default=1, help="rounds of the fit")
    ap.add_argument("--skip-temperature", action="store_true")
    ap.add_argument("--skip-evaluator", action="store_true")
    add_arguments(ap)
    a = ap.parse_args(argv)
    if a.quick:
        a.n, a.batch, a.tn, a.tv = 2000, 500, 500, 50
    pause = 0 if a.quick else 0.25

    if not a.skip_evaluator:
        vs = [Variant(k, {"impl": k}) for k in ("torch_whole", "torch_batched", "evaluator")]
        if a.before:
            vs = with_before(vs, a.before, ["evaluator"], control=a.control)
        params = dict(n=a.n, c=a.c, batch=a.batch, threads=a.threads)
        case = Case(f"{a.n} x {a.c}, batches of {a.batch}", setup_evaluator, vs, params)
        res = {r.variant: r for r in run_case(case, a.repeats, pause_s=pause)}
        whole, batched = res["torch_whole"].times, res["torch_batched"].times
        torch_best = [min(p, q) for p, q in zip(whole, batched, strict=True)]
        rows = [r.row() for r in res.values()]
        for row in rows:
            if "evaluator" in row["variant"]:
                row["speed"] = median_ratio(torch_best, res[row["variant"]].times)
                row["M_rows_per_s"] = a.n / row["time_s"] / 1e6
        print(f"Evaluator, {case.name} float32 ({a.repeats} interleaved rounds)")
        cols = ["variant", "time_s", "best_s", "speed", "vs_before", "M_rows_per_s", "extra_mb"]
        print(format_table(rows, [c for c in cols if any(c in r for r in rows)]))

    if not a.skip_temperature:
        vs = [Variant("fit_temperature")]
        if a.before:
            vs = with_before(vs, a.before, ["fit_temperature"], control=a.control)
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "logits.npy")
            make_file(path, a.tn, a.tv)
            # no warm-up: one fit is several passes over the file
            case = Case(f"{a.tn} x {a.tv}", setup_temperature, vs, dict(path=path), warmup=False)
            res_t = run_case(case, a.temperature_repeats, pause_s=pause)
        rows = [r.row() for r in res_t]
        size = a.tn * a.tv * 4 / 2**20
        print(f"\nfit_temperature, {case.name} float32 memory-mapped .npy ({size:,.0f} MiB)")
        for row in rows:
            row["s_per_pass"] = row["time_s"] / row["passes"]
        cols = ["variant", "time_s", "passes", "s_per_pass", "vs_before", "anon_mb", "T"]
        cols += ["converged", "nll", "ece"]
        print(format_table(rows, [c for c in cols if any(c in r for r in rows)]))


if __name__ == "__main__":
    main()

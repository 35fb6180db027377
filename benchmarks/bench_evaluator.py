"""Benchmark of the streaming Evaluator and of fit_temperature.

1. ``Evaluator`` over an ``(N, C)`` float32 array fed in batches, against computing the NLL alone
   with torch (``F.cross_entropy`` on the whole array and in the same batches; the faster of the
   two is the reference). Speed ratio = torch time / Evaluator time (the target is >= 0.5).
2. ``fit_temperature`` on an ``(N, V)`` float32 ``.npy`` file read through
   :func:`logitlab.io.open_array` (memory-mapped, row chunks): time, passes, and the peak
   anonymous memory (``RssAnon``: the file's mapped pages are not counted, they are page cache).

Run: ``python benchmarks/bench_evaluator.py [--n 10000000 --c 10 --tn 1000000 --tv 1000]``.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import threading
import time
from pathlib import Path

import numpy as np


def _rss_anon_mib() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


class PeakAnon:
    """Samples RssAnon every 20 ms in a thread; ``peak`` in MiB."""

    def __init__(self) -> None:
        self.peak = _rss_anon_mib()
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, _rss_anon_mib())
            time.sleep(0.02)

    def __enter__(self) -> PeakAnon:
        self._t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._t.join()


def bench_evaluator(n: int, c: int, batch: int, repeats: int) -> None:
    import torch

    from logitlab.metrics import Evaluator

    rng = np.random.default_rng(0)
    y = rng.integers(0, c, n)
    x = rng.standard_normal((n, c), dtype=np.float32) * 2
    x[np.arange(n), y] += 2.0
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)

    def run_eval() -> None:
        ev = Evaluator(c)
        for a in range(0, n, batch):
            ev.update(xt[a : a + batch], yt[a : a + batch])
        ev.compute()

    def run_ce_whole() -> None:
        float(torch.nn.functional.cross_entropy(xt, yt))

    def run_ce_batched() -> None:
        tot = 0.0
        for a in range(0, n, batch):
            tot += float(
                torch.nn.functional.cross_entropy(
                    xt[a : a + batch], yt[a : a + batch], reduction="sum"
                )
            )

    best = {"eval": 1e9, "ce_whole": 1e9, "ce_batched": 1e9}
    for _ in range(repeats):  # interleaved, best of `repeats`: robust to a busy machine
        for name, fn in (
            ("ce_whole", run_ce_whole),
            ("eval", run_eval),
            ("ce_batched", run_ce_batched),
        ):
            t0 = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - t0)
    ref = min(best["ce_whole"], best["ce_batched"])
    print(f"Evaluator ({n:,} x {c}) float32, batches of {batch:,}, best of {repeats}")
    print(f"  torch F.cross_entropy whole array : {best['ce_whole']:.3f} s")
    print(f"  torch F.cross_entropy in batches  : {best['ce_batched']:.3f} s")
    print(f"  logitlab Evaluator (all metrics)  : {best['eval']:.3f} s")
    print(f"  speed ratio (torch NLL / Evaluator): {ref / best['eval']:.2f}x  (target >= 0.5x)")
    print(f"  Evaluator throughput: {n / best['eval'] / 1e6:.1f} M rows/s")


def bench_temperature(n: int, v: int) -> None:
    from logitlab.io import open_array
    from logitlab.metrics import fit_temperature

    with tempfile.TemporaryDirectory() as d:
        f = os.path.join(d, "logits.npy")
        rng = np.random.default_rng(1)
        y = rng.integers(0, v, n)
        mm = np.lib.format.open_memmap(f, mode="w+", dtype=np.float32, shape=(n, v))
        step = max(1, (64 << 20) // (4 * v))
        for a in range(0, n, step):
            b = min(n, a + step)
            blk = rng.standard_normal((b - a, v), dtype=np.float32) * 3
            blk[np.arange(b - a), y[a:b]] += 4.0
            mm[a:b] = blk
        mm.flush()
        del mm
        src = open_array(f)
        base = _rss_anon_mib()
        with PeakAnon() as peak:
            t0 = time.perf_counter()
            r = fit_temperature(src, y)
            dt = time.perf_counter() - t0
        size = n * v * 4 / 2**20
        print(f"fit_temperature ({n:,} x {v:,}) float32 memory-mapped .npy ({size:,.0f} MiB)")
        print(
            f"  T = {r.temperature:.6f}, {r.iterations} Newton iterations "
            f"({r.iterations + 1} passes), converged={r.converged}"
        )
        print(
            f"  NLL {r.nll_before:.4f} -> {r.nll_after:.4f}, "
            f"ECE {r.ece_before:.4f} -> {r.ece_after:.4f}"
        )
        print(f"  time {dt:.1f} s ({dt / (r.iterations + 1):.2f} s per pass)")
        print(f"  peak anonymous memory above baseline: {peak.peak - base:.0f} MiB")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10_000_000, help="Evaluator rows")
    ap.add_argument("--c", type=int, default=10, help="Evaluator classes")
    ap.add_argument("--batch", type=int, default=1_000_000, help="Evaluator batch rows")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--tn", type=int, default=1_000_000, help="fit_temperature rows")
    ap.add_argument("--tv", type=int, default=1000, help="fit_temperature classes")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--skip-temperature", action="store_true")
    ap.add_argument("--skip-evaluator", action="store_true")
    a = ap.parse_args()
    import torch

    if a.threads:
        torch.set_num_threads(a.threads)
    print(
        f"torch {torch.__version__} ({torch.get_num_threads()} threads), numpy {np.__version__}, "
        f"{platform.machine()}, {os.cpu_count()} CPUs"
    )
    if not a.skip_evaluator:
        bench_evaluator(a.n, a.c, a.batch, a.repeats)
    if not a.skip_temperature:
        bench_temperature(a.tn, a.tv)


if __name__ == "__main__":
    main()

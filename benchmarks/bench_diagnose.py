"""Benchmark of ``logitlab diagnose`` on a memory-mapped float16 file, and of LogitMonitor.

Creates a ``(rows, classes)`` float16 ``.npy`` file in a temporary directory (default
100000 x 32000 = 6.4 GB; scale down with ``--rows``), then times

* the baseline: NumPy's one reduction pass over the memory map (``np.add.reduce`` in float32 and
  ``np.max``, in row chunks),
* :func:`logitlab.diagnostics.diagnose_file` on the same file,

and reports the peak anonymous memory (``RssAnon``, sampled every 10 ms: the memory the process
owns; pages of the memory map are file-backed page cache) and the ratio. The file is deleted
afterwards. Finally it times a forward pass of a ``Linear(d, V)`` head with and without
:class:`logitlab.torch.monitor.LogitMonitor`.

Usage::

    python benchmarks/bench_diagnose.py --rows 20000
"""

from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time
from pathlib import Path

import numpy as np


def _rss_anon() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024
    return 0


class PeakMemory:
    """Samples RssAnon in a thread; ``peak`` is the maximum above the starting value."""

    def __init__(self) -> None:
        self.start = _rss_anon()
        self.peak = 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, _rss_anon() - self.start)
            time.sleep(0.01)

    def __enter__(self) -> PeakMemory:
        self._t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, _rss_anon() - self.start)


def make_file(path: Path, rows: int, classes: int, seed: int = 0) -> None:
    mm = np.lib.format.open_memmap(path, mode="w+", dtype=np.float16, shape=(rows, classes))
    rng = np.random.default_rng(seed)
    step = max(1, (16 << 20) // (4 * classes))
    for a in range(0, rows, step):
        b = min(rows, a + step)
        z = rng.standard_normal((b - a, classes), dtype=np.float32) * 2.0
        z[:, :1] += rng.uniform(0.0, 6.0, (b - a, 1)).astype(np.float32)  # some rows overflow
        mm[a:b] = z
    mm.flush()
    del mm


def baseline(path: Path, op: str) -> float:
    mm = np.load(path, mmap_mode="r")
    step = max(1, (64 << 20) // (2 * mm.shape[1]))
    t0 = time.perf_counter()
    acc = 0.0
    for a in range(0, mm.shape[0], step):
        c = mm[a : a + step]
        acc += float(np.add.reduce(c, axis=None, dtype=np.float32) if op == "sum" else c.max())
    return time.perf_counter() - t0


def bench_monitor(rows: int, d: int, classes: int, reps: int) -> tuple[float, float]:
    import torch

    from logitlab.torch.monitor import LogitMonitor

    torch.manual_seed(0)
    head = torch.nn.Linear(d, classes, bias=False)
    h = torch.randn(rows, d)

    def run() -> float:
        with torch.no_grad():
            head(h)
            t0 = time.perf_counter()
            for _ in range(reps):
                head(h)
            return (time.perf_counter() - t0) / reps

    plain = run()
    with LogitMonitor(head, saturation_fraction=1.0, overflow_fraction=1.0):
        mon = run()
    return plain, mon


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--classes", type=int, default=32_000)
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--dir", default=None, help="where to create the temporary file")
    args = ap.parse_args()

    from logitlab.diagnostics import diagnose, diagnose_file

    # first call: loads the native library (built at install time) and imports: not timed
    t0 = time.perf_counter()
    diagnose(np.zeros((2, 8), dtype=np.float16))
    print(f"first-use set-up (library load, imports): {time.perf_counter() - t0:.2f} s")

    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        path = Path(tmp) / "logits.npy"
        t0 = time.perf_counter()
        make_file(path, args.rows, args.classes)
        size = os.path.getsize(path)
        print(
            f"file: {args.rows} x {args.classes} float16, {size / 1e9:.2f} GB "
            f"(written in {time.perf_counter() - t0:.1f} s)"
        )
        t_sum = baseline(path, "sum")
        t_max = baseline(path, "max")
        with PeakMemory() as mem:
            t0 = time.perf_counter()
            rep = diagnose_file(path, workers=args.workers)
            t_diag = time.perf_counter() - t0
        t_sum = min(t_sum, baseline(path, "sum"))
        n = args.rows * args.classes
        print(
            f"numpy one pass, np.add.reduce(float32): {t_sum:.2f} s ({t_sum / n * 1e9:.2f} ns/elt)"
        )
        print(
            f"numpy one pass, np.max:                 {t_max:.2f} s ({t_max / n * 1e9:.2f} ns/elt)"
        )
        print(
            f"logitlab diagnose_file:                 {t_diag:.2f} s "
            f"({t_diag / n * 1e9:.2f} ns/elt)"
        )
        print(f"ratio diagnose / add.reduce: {t_diag / t_sum:.2f}x; / max: {t_diag / t_max:.2f}x")
        print(f"peak anonymous memory during diagnose: {mem.peak / 2**20:.0f} MiB")
        print(
            f"float16 naive overflow rows: {rep.dtypes['float16'].naive_overflow_fraction:.2%}; "
            f"loss scale {rep.mixed_precision.loss_scale:.0f}"
        )
    try:
        plain, mon = bench_monitor(4096, 512, args.classes, 5)
    except ImportError:
        return
    print(
        f"LogitMonitor on Linear(512, {args.classes}) over 4096 rows: "
        f"forward {plain * 1e3:.1f} ms, "
        f"with monitor {mon * 1e3:.1f} ms (overhead {(mon / plain - 1):.0%})"
    )


if __name__ == "__main__":
    main()

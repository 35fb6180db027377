"""``logitlab diagnose`` on a memory-mapped float16 file against one NumPy reduction pass over it,
and the overhead of LogitMonitor, on the harness of logitlab.app.bench.

Creates a ``(rows, classes)`` float16 ``.npy`` file in a temporary directory (default
100000 x 32000 = 6.4 GB; scale down with ``--rows``) and times, in interleaved rounds, each in a
worker process of its own:

* NumPy's one reduction pass over the memory map in row chunks: ``np.add.reduce`` in float32
  (the baseline: ``ratio`` is diagnose's time over it) and ``np.max``;
* :func:`logitlab.diagnostics.diagnose_file` on the same file,

with the peak anonymous memory (``anon_MB``: ``RssAnon``, the memory the process owns; the pages
of the memory map are file-backed page cache). The file is deleted afterwards. Then a forward pass
of a ``Linear(d, V)`` head with and without :class:`logitlab.torch.monitor.LogitMonitor` (when
torch is installed). ``--before PATH`` adds the diagnose and monitor of another checkout.

Usage::

    PYTHONPATH=src python benchmarks/bench_diagnose.py --rows 20000
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np


def make_file(path: Path, rows: int, classes: int, seed: int = 0) -> None:
    """Normal logits (scale 2) in float16, some rows shifted up by 0-6 so that they overflow."""
    mm = np.lib.format.open_memmap(path, mode="w+", dtype=np.float16, shape=(rows, classes))
    rng = np.random.default_rng(seed)
    step = max(1, (16 << 20) // (4 * classes))
    for a in range(0, rows, step):
        b = min(rows, a + step)
        z = rng.standard_normal((b - a, classes), dtype=np.float32) * 2.0
        z[:, :1] += rng.uniform(0.0, 6.0, (b - a, 1)).astype(np.float32)
        mm[a:b] = z
    mm.flush()
    del mm


def setup_file(impl: str, path: str, workers: int | None = None) -> Any:
    """Worker side: one pass over the file (``sum``, ``max``) or ``diagnose_file``."""
    if impl == "diagnose":
        from logitlab.diagnostics import diagnose, diagnose_file

        diagnose(np.zeros((2, 8), dtype=np.float16))  # the native kernel's build or cache load
        last: list[Any] = []

        def info() -> dict[str, Any]:
            rep = last[-1]
            overflow = rep.dtypes["float16"].naive_overflow_fraction
            return dict(overflow_rows=overflow, loss_scale=rep.mixed_precision.loss_scale)

        return dict(step=lambda: last.append(diagnose_file(path, workers=workers)), info=info)

    def one_pass() -> float:
        mm = np.load(path, mmap_mode="r")
        step = max(1, (64 << 20) // (2 * mm.shape[1]))
        acc = 0.0
        for a in range(0, mm.shape[0], step):
            c = mm[a : a + step]
            acc += float(
                np.add.reduce(c, axis=None, dtype=np.float32) if impl == "sum" else c.max()
            )
        return acc

    if impl not in ("sum", "max"):
        raise ValueError(f"unknown variant {impl!r}")
    return one_pass


def setup_monitor(impl: str, rows: int, d: int, classes: int) -> Any:
    """Worker side: a forward pass of ``Linear(d, classes)``, with LogitMonitor attached when
    ``impl="monitor"`` (thresholds at 1: it computes every statistic and never warns)."""
    import torch

    from logitlab.torch.monitor import LogitMonitor

    torch.manual_seed(0)
    head = torch.nn.Linear(d, classes, bias=False)
    h = torch.randn(rows, d)
    if impl == "monitor":  # its forward hook stays on the head for the worker's lifetime
        LogitMonitor(head, saturation_fraction=1.0, overflow_fraction=1.0)
    elif impl != "plain":
        raise ValueError(f"unknown variant {impl!r}")

    def forward() -> None:
        with torch.no_grad():
            head(h)

    return forward


def main(argv: list[str] | None = None) -> None:
    from logitlab.app.bench import Case, Variant, add_arguments, format_table, run_case, with_before

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--classes", type=int, default=32_000)
    ap.add_argument("--workers", type=int, default=None, help="threads of diagnose_file")
    ap.add_argument("--dir", default=None, help="where to create the temporary file")
    add_arguments(ap)
    a = ap.parse_args(argv)
    rows, classes = (200, 1000) if a.quick else (a.rows, a.classes)
    pause = 0 if a.quick else 0.25
    names = {"np.add.reduce": "sum", "np.max": "max", "diagnose_file": "diagnose"}
    vs = [Variant(name, {"impl": impl}) for name, impl in names.items()]
    if a.before:
        vs = with_before(vs, a.before, ["diagnose_file"], control=a.control)

    with tempfile.TemporaryDirectory(dir=a.dir) as tmp:
        path = Path(tmp) / "logits.npy"
        t0 = time.perf_counter()
        make_file(path, rows, classes)
        size = os.path.getsize(path)
        print(
            f"file: {rows} x {classes} float16, {size / 1e9:.2f} GB "
            f"(written in {time.perf_counter() - t0:.1f} s)"
        )
        params = dict(path=str(path), workers=a.workers)
        case = Case("diagnose", setup_file, vs, params, baseline="np.add.reduce")
        res = run_case(case, a.repeats, pause_s=pause)
    out = []
    for r in res:
        out.append({**r.row(), "ns_per_elt": r.time_s / (rows * classes) * 1e9})
    cols = ["variant", "time_s", "best_s", "ns_per_elt", "ratio", "vs_before", "anon_mb"]
    cols += ["overflow_rows", "loss_scale"]
    print(format_table(out, [c for c in cols if any(c in r for r in out)]))

    if importlib.util.find_spec("torch") is None:
        return
    n, d = (64, 16) if a.quick else (4096, 512)
    vs = [Variant("plain", {"impl": "plain"}), Variant("monitor", {"impl": "monitor"})]
    if a.before:
        vs = with_before(vs, a.before, ["monitor"], control=a.control)
    params = dict(rows=n, d=d, classes=classes)
    case = Case(f"Linear({d}, {classes}) over {n} rows", setup_monitor, vs, params, "plain")
    res = run_case(case, a.repeats, pause_s=pause)
    print(f"\nLogitMonitor: {case.name}, forward (ratio - 1 = the monitor's overhead)")
    cols = ["variant", "time_s", "best_s", "ratio", "vs_before"]
    rows_ = [r.row() for r in res]
    print(format_table(rows_, [c for c in cols if any(c in r for r in rows_)]))


if __name__ == "__main__":
    main()

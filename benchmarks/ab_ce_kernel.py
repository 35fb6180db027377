"""Interleaved A/B of two builds of the row kernel (``_ce_rows.c``), called directly.

Each source is compiled with the flags ``logitlab.torch._kernels`` uses and loaded with
``ctypes``; every round times both builds on the same logits (one OpenMP team of
``--threads``), and the table gives the medians and the median per-round ratio B / A.

Run, e.g. against the kernel of an earlier commit:
``git show b71c0ca:src/logitlab/torch/_ce_rows.c > /tmp/A.c``
``python benchmarks/ab_ce_kernel.py /tmp/A.c src/logitlab/torch/_ce_rows.c --mode keep``.
Modes: ``ro`` (loss and lse only, the read-only forward of the in-memory loss), ``stats``
(also entropy and argmax), ``keep`` (loss and gradient written over the rows, the chunk kernel
of ``linear_cross_entropy``), ``grad`` (``logitlab_ce_grad_rows``, the one-pass backward).
"""

from __future__ import annotations

import argparse
import ctypes
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from logitlab.torch._kernels import _FLAGS


def build(src: str, out: Path) -> Any:
    cmd = ["gcc", *_FLAGS, "-march=native", src, "-o", str(out), "-lm"]
    subprocess.run(cmd, check=True, capture_output=True)
    return ctypes.CDLL(str(out))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("a", help="_ce_rows.c of build A")
    ap.add_argument("b", help="_ce_rows.c of build B")
    ap.add_argument("--mode", choices=("ro", "stats", "keep", "grad"), default="ro")
    ap.add_argument("--shape", type=int, nargs=2, default=(8192, 32000))
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    a = ap.parse_args()
    n, v = a.shape
    tmp = Path(tempfile.mkdtemp())
    libs = [build(a.a, tmp / "a.so"), build(a.b, tmp / "b.so")]
    torch.manual_seed(0)
    x0 = torch.randn(n, v) * 2
    t = torch.randint(0, v, (n,))
    x = x0.clone()
    gs = torch.full((n,), 1.0 / n)
    loss, lse, ent = torch.empty(n), torch.empty(n), torch.empty(n)
    amax = torch.empty(n, dtype=torch.int64)

    def p(z: torch.Tensor | None) -> ctypes.c_void_p | None:
        return None if z is None else ctypes.c_void_p(z.data_ptr())

    i64, f32 = ctypes.c_int64, ctypes.c_float

    def rows(lib: Any, grad: bool, with_stats: bool) -> None:
        lib.logitlab_ce_rows(
            p(x),
            i64(n),
            p(t),
            None,
            p(gs) if grad else None,
            p(loss),
            p(lse),
            p(ent) if with_stats else None,
            p(amax) if with_stats else None,
            i64(v),
            i64(v),
            i64(-100),
            f32(1.0),
            f32(0.0),
            f32(0.0),
            f32(0.0),
            i64(0),
            a.threads,
        )

    def call(lib: Any) -> None:
        if a.mode != "grad":
            rows(lib, a.mode == "keep", a.mode == "stats")
            return
        lib.logitlab_ce_grad_rows(
            p(x),
            p(x),
            i64(n),
            p(t),
            None,
            p(gs),
            p(lse),
            i64(v),
            i64(v),
            i64(v),
            i64(-100),
            f32(1.0),
            a.threads,
        )

    def timed(lib: Any) -> float:
        x.copy_(x0)
        t0 = time.perf_counter()
        call(lib)
        return time.perf_counter() - t0

    x.copy_(x0)
    rows(libs[0], False, False)  # the lse that the grad mode starts from
    for lib in libs:
        timed(lib)  # warm-up
    ta: list[float] = []
    tb: list[float] = []
    for r in range(a.rounds):
        for lib, out in (
            ((libs[0], ta), (libs[1], tb)) if r % 2 == 0 else ((libs[1], tb), (libs[0], ta))
        ):
            out.append(timed(lib))
    ratio = statistics.median(q / p_ for p_, q in zip(ta, tb, strict=True))
    print(f"{n}x{v} mode={a.mode}, {a.rounds} interleaved rounds, {a.threads} threads")
    print(f"A {statistics.median(ta):.3f} s  B {statistics.median(tb):.3f} s  B/A {ratio:.3f}")


if __name__ == "__main__":
    main()

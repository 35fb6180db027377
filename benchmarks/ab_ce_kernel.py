"""Interleaved A/B of two builds of the cross-entropy row kernel (``csrc/ce_rows.c``), called
directly.

Each side is a ``csrc`` folder compiled by :func:`logitlab._native._build.build_library` (the
flags ``pip install`` uses) at one ISA level and loaded with ``ctypes``; every round times both
builds on the same logits (rows split over ``--threads`` Python threads, one native thread per
call, as in the library), and the table gives the medians and the median per-round ratio B / A.

Run, e.g. against the kernels of an earlier commit:
``mkdir /tmp/A && git archive <commit> csrc | tar -x -C /tmp/A``
``python benchmarks/ab_ce_kernel.py /tmp/A/csrc csrc --mode keep``.
Modes: ``ro`` (loss and lse only, the read-only forward of the in-memory loss), ``stats``
(also entropy and argmax), ``keep`` (loss and gradient written over the rows, the chunk kernel
of ``linear_cross_entropy``), ``grad`` (``logitlab_ce_grad_rows``, the one-pass backward); and
the core's row kernel of ``csrc/lsm_rows.c``, ``lse`` (``ll.logsumexp`` of float32 rows) and
``lsm`` (``ll.log_softmax``).
"""

from __future__ import annotations

import argparse
import ctypes
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from logitlab import _native
from logitlab._native._build import LEVELS, build_library


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("a", type=Path, help="csrc folder of build A")
    ap.add_argument("b", type=Path, help="csrc folder of build B")
    ap.add_argument("--mode", choices=("ro", "stats", "keep", "grad", "lse", "lsm"), default="ro")
    ap.add_argument("--shape", type=int, nargs=2, default=(8192, 32000))
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--isa", choices=LEVELS, default=_native.cpu_level() or "generic")
    ap.add_argument(
        "--confident",
        type=float,
        default=0.0,
        help="share of rows whose target leads the others by 10 to 30 nats (a trained model's)",
    )
    a = ap.parse_args()
    n, v = a.shape
    tmp = Path(tempfile.mkdtemp())
    libs = [
        ctypes.CDLL(str(build_library(a.isa, tmp / f"{side}.so", csrc=src)))
        for side, src in (("a", a.a), ("b", a.b))
    ]
    torch.manual_seed(0)
    x0 = torch.randn(n, v) * 2
    t = torch.randint(0, v, (n,))
    k = int(round(a.confident * n))
    rows_c = torch.arange(k)
    x0[rows_c, t[:k]] = x0[:k].max(dim=1).values + 10 + 20 * torch.rand(k)
    x = x0.clone()
    gs = torch.full((n,), 1.0 / n)
    loss, lse, ent = torch.empty(n), torch.empty(n), torch.empty(n)
    amax = torch.empty(n, dtype=torch.int64)

    def p(z: torch.Tensor | None, r: int = 0) -> ctypes.c_void_p | None:
        if z is None:
            return None
        return ctypes.c_void_p(z.data_ptr() + r * z.stride(0) * z.element_size())

    i64, f32 = ctypes.c_int64, ctypes.c_float

    def rows(lib: Any, grad: bool, with_stats: bool) -> None:
        def call(r0: int, r1: int) -> None:
            lib.logitlab_ce_rows(
                p(x, r0), i64(r1 - r0), p(t, r0), None, p(gs, r0) if grad else None,
                p(loss, r0), p(lse, r0), p(ent, r0) if with_stats else None,
                p(amax, r0) if with_stats else None, i64(v), i64(v), i64(-100),
                f32(1.0), f32(0.0), f32(0.0), f32(0.0), i64(0),
            )  # fmt: skip

        _native.split_rows(n, n * v, a.threads, call)

    flag = torch.empty(n, dtype=torch.int32)
    dst = torch.empty(n, v) if a.mode == "lsm" else lse

    def call(lib: Any) -> None:
        if a.mode in ("lse", "lsm"):

            def lsm(r0: int, r1: int) -> None:
                lib.logitlab_lsm_rows(
                    p(x, r0), p(dst, r0), p(flag, r0), i64(r1 - r0), i64(v), i64(v), i64(v),
                    ctypes.c_int(1 if a.mode == "lse" else 0),
                )  # fmt: skip

            _native.split_rows(n, n * v, a.threads, lsm)
            return
        if a.mode != "grad":
            rows(lib, a.mode == "keep", a.mode == "stats")
            return

        def grad(r0: int, r1: int) -> None:
            lib.logitlab_ce_grad_rows(
                p(x, r0), p(x, r0), i64(r1 - r0), p(t, r0), None, p(gs, r0), p(lse, r0),
                i64(v), i64(v), i64(v), i64(-100), f32(1.0),
            )  # fmt: skip

        _native.split_rows(n, n * v, a.threads, grad)

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
    print(
        f"{n}x{v} mode={a.mode} isa={a.isa} confident={a.confident}, {a.rounds} interleaved "
        f"rounds, {a.threads} threads"
    )
    print(f"A {statistics.median(ta):.3f} s  B {statistics.median(tb):.3f} s  B/A {ratio:.3f}")


if __name__ == "__main__":
    main()

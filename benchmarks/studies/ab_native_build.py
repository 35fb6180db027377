"""One-off study: the first-use ``-march=native`` builds of the kernels (before the native
library moved to install time) against the install-time libraries of every ISA level.

Found (docs/performance.md, "Native library built at install time"): the avx512 library runs
every kernel at 0.91-1.03x the time of the ``-march=native`` build (median per-round ratios on
a loaded 2-core AMD EPYC host), avx2 at 0.91-1.59x, generic at 3.3-9.3x.

The old sources are taken from a git revision (``--old-rev``, default ``main`` before the move)
and compiled with the old loaders' flags; the new libraries are those installed beside
``logitlab._native``. Every kernel runs on one native thread on the same inputs; each round runs
every build once (order rotated and reversed every other round); the table gives median times
and the median per-round ratio to the old build.

Run: ``python benchmarks/studies/ab_native_build.py --rounds 21 --levels avx512``.
"""

from __future__ import annotations

import argparse
import ctypes
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from logitlab import _native

OLD_FLAGS = ["-O3", "-std=c11", "-fPIC", "-shared", "-fopenmp", "-fno-math-errno", "-march=native"]
i64, f32, ci = ctypes.c_int64, ctypes.c_float, ctypes.c_int


def old_libraries(rev: str, tmp: Path) -> tuple[Any, Any]:
    """main's two first-use builds: _rows.c (which included torch/_ce_rows.c) and _ce_rows.c."""
    (tmp / "torch").mkdir()
    for path in ("src/logitlab/_rows.c", "src/logitlab/torch/_ce_rows.c"):
        text = subprocess.run(
            ["git", "show", f"{rev}:{path}"], capture_output=True, text=True, check=True
        ).stdout
        (tmp / path.removeprefix("src/logitlab/")).write_text(text)
    rows, ce = tmp / "rows.so", tmp / "ce.so"
    subprocess.run(["gcc", *OLD_FLAGS, str(tmp / "_rows.c"), "-o", str(rows), "-lm"], check=True)
    ce_flags = [*OLD_FLAGS, "-ffp-contract=fast"]
    cmd = ["gcc", *ce_flags, str(tmp / "torch" / "_ce_rows.c"), "-o", str(ce), "-lm"]
    subprocess.run(cmd, check=True)
    return ctypes.CDLL(str(rows)), ctypes.CDLL(str(ce))


def p(a: np.ndarray | None) -> ctypes.c_void_p | None:
    return None if a is None else ctypes.c_void_p(a.ctypes.data)


class Inputs:
    def __init__(self) -> None:
        rng = np.random.default_rng(0)
        self.n, self.v = 1024, 32000
        self.x = (rng.standard_normal((self.n, self.v)) * 3).astype(np.float32)
        self.xh = self.x[:512].astype(np.float16)
        self.t = rng.integers(0, self.v, self.n).astype(np.int64)
        self.work = np.empty_like(self.x)
        self.out = np.empty_like(self.x)
        self.flag = np.empty(self.n, np.int32)
        self.loss, self.lse, self.ent = (np.empty(self.n, np.float32) for _ in range(3))
        self.amax = np.empty(self.n, np.int64)
        self.gs = np.full(self.n, 1.0 / self.n, np.float32)
        self.e10 = (rng.standard_normal((400_000, 10)) * 3).astype(np.float32)
        self.y10 = rng.integers(0, 10, 400_000).astype(np.int64)
        self.e1k = (rng.standard_normal((8000, 1000)) * 3).astype(np.float32)
        self.y1k = rng.integers(0, 1000, 8000).astype(np.int64)
        self.edges = np.linspace(0, 1, 1001)
        self.cv, self.cm = 32000, 512  # class-major chunk: classes x tokens
        self.zt = (rng.standard_normal((self.cv, self.cm)) * 3).astype(np.float32)
        self.ztw = np.empty_like(self.zt)
        self.ct = rng.integers(0, self.cv, self.cm).astype(np.int64)
        self.cgs = np.full(self.cm, 1.0 / self.cm, np.float32)

    def reset(self) -> None:
        np.copyto(self.work, self.x)
        np.copyto(self.ztw, self.zt)


def kernels(d: Inputs) -> Iterator[tuple[str, str, Callable[[Any, bool], Callable[[], None]]]]:
    """(name, old library: rows|ce, make(lib, old) -> call); old calls pass main's nthreads=1."""
    n, v = d.n, d.v

    def lsm(mode: int) -> Callable[[Any, bool], Callable[[], None]]:
        def make(lib: Any, old: bool) -> Callable[[], None]:
            args = [p(d.x), p(d.out), p(d.flag), i64(n), i64(v), i64(v), i64(v), ci(mode)]
            return lambda: lib.logitlab_lsm_rows(*args, *([ci(1)] if old else []))

        return make

    def ev(x: np.ndarray, y: np.ndarray) -> Callable[[Any, bool], Callable[[], None]]:
        def make(lib: Any, old: bool) -> Callable[[], None]:
            def f() -> None:
                acc, hist = np.zeros(5), np.zeros(3000)
                c = x.shape[1]
                lib.logitlab_eval_rows(
                    p(x), p(y), i64(len(x)), i64(c), i64(c), i64(1000), p(d.edges), p(acc), p(hist)
                )

            return f

        return make

    def diag(x: np.ndarray) -> Callable[[Any, bool], Callable[[], None]]:
        def make(lib: Any, old: bool) -> Callable[[], None]:
            def f() -> None:
                rows, cols = x.shape
                o, k = np.empty((rows, 13)), np.empty(rows, np.int64)
                scratch = np.empty(2 * cols, np.float32)
                hl, he = np.zeros(1 << 16, np.int64), np.zeros(256, np.int64)
                lib.logitlab_diag_rows(
                    p(x), ci(x.dtype == np.float16), None, i64(rows), i64(cols), i64(cols),
                    p(o), p(k), p(scratch), p(hl), p(he),
                )  # fmt: skip

            return f

        return make

    def ce(grad: bool, stats: bool, eps: float) -> Callable[[Any, bool], Callable[[], None]]:
        def make(lib: Any, old: bool) -> Callable[[], None]:
            return lambda: lib.logitlab_ce_rows(
                p(d.work), i64(n), p(d.t), None, p(d.gs) if grad else None, p(d.loss),
                p(d.lse), p(d.ent) if stats else None, p(d.amax) if stats else None, i64(v),
                i64(v), i64(-100), f32(1.0), f32(0.0), f32(eps), f32(0.0), i64(0),
                *([ci(1)] if old else []),
            )  # fmt: skip

        return make

    def ce_grad(lib: Any, old: bool) -> Callable[[], None]:
        return lambda: lib.logitlab_ce_grad_rows(
            p(d.work), p(d.work), i64(n), p(d.t), None, p(d.gs), p(d.lse), i64(v), i64(v),
            i64(v), i64(-100), f32(1.0), *([ci(1)] if old else []),
        )  # fmt: skip

    def cols(lib: Any, old: bool) -> Callable[[], None]:
        cv, cm = d.cv, d.cm
        mv = -(-cm // 8) * 8
        cb = min(256, max(16, 65536 // mv))
        nb = -(-cv // cb)

        def f() -> None:
            rb, rc = np.empty((nb, mv), np.float32), np.empty(mv, np.float32)
            s_, e_ = np.empty(mv), np.empty(mv)
            k_, nan, ztg = np.empty(mv, np.int32), np.empty(mv, np.int32), np.zeros(mv, np.float32)
            lo, ls = np.empty(cm, np.float32), np.empty(cm, np.float32)
            a, fac, fix, tg = (np.empty(mv, np.float32) for _ in range(4))
            new = [] if old else [p(tg)]  # the target entry of confident columns (after 2026-12)
            lib.logitlab_ce_cols_part(
                p(d.ztw), i64(cm), i64(cm), i64(0), i64(cv), i64(cb), p(d.ct), p(rb), p(rc),
                p(s_), p(e_), p(k_), p(nan), p(ztg), ci(1), ci(0),
            )  # fmt: skip
            lib.logitlab_ce_cols_merge(
                i64(cm), i64(1), p(rc), p(s_), p(e_), p(k_), p(nan), p(ztg), p(d.ct), p(d.cgs),
                p(lo), p(ls), None, None, i64(-100), f32(0.0), p(a), p(fac), p(fix), *new,
            )  # fmt: skip
            lib.logitlab_ce_cols_grad(
                p(d.ztw), i64(cm), i64(cm), i64(0), i64(cv), i64(cb), p(rb), p(a), p(fac),
                p(fix), *new, p(d.ct), p(d.cgs), i64(-100),
            )  # fmt: skip

        return f

    yield "lsm log_softmax 1024x32000", "rows", lsm(0)
    yield "lsm lse 1024x32000", "rows", lsm(1)
    yield "eval 400000x10", "rows", ev(d.e10, d.y10)
    yield "eval 8000x1000", "rows", ev(d.e1k, d.y1k)
    yield "diag f16 512x32000", "rows", diag(d.xh)
    yield "diag f32 1024x32000", "rows", diag(d.x)
    yield "ce ro 1024x32000", "ce", ce(False, False, 0.0)
    yield "ce stats", "ce", ce(False, True, 0.0)
    yield "ce keep (loss+grad)", "ce", ce(True, False, 0.0)
    yield "ce smoothing 0.1", "ce", ce(True, False, 0.1)
    yield "ce_grad_rows", "ce", ce_grad
    yield "ce_cols 32000x512", "ce", cols


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--old-rev", default="main")
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--levels", default=",".join(_native.LEVELS))
    ap.add_argument("--only", default="", help="comma-separated substrings of kernel names")
    a = ap.parse_args()
    levels = a.levels.split(",")
    new = {lv: ctypes.CDLL(str(_native.library_path(lv))) for lv in levels}
    d = Inputs()
    with tempfile.TemporaryDirectory() as tmp:
        old_rows, old_ce = old_libraries(a.old_rev, Path(tmp))
        d.reset()
        lse_for_grad(old_ce, d)
        head = " ".join(f"{lv:>8s} ms {'/old':>6s}" for lv in new)
        print(f"{'kernel':28s} {'old ms':>8s} {head}")
        for name, which, make in kernels(d):
            if a.only and not any(s in name for s in a.only.split(",")):
                continue
            old = old_rows if which == "rows" else old_ce
            fns = {"old": make(old, True), **{lv: make(lib, False) for lv, lib in new.items()}}
            times: dict[str, list[float]] = {k: [] for k in fns}
            keys = list(fns)
            for r in range(-1, a.rounds):  # round -1: warm-up, not recorded
                order = keys[r % len(keys) :] + keys[: r % len(keys)]
                for k in order[::-1] if r % 2 else order:
                    d.reset()
                    t0 = time.perf_counter()
                    fns[k]()
                    if r >= 0:
                        times[k].append(time.perf_counter() - t0)
            med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
            ratio = {
                k: statistics.median(x / y for x, y in zip(times[k], times["old"], strict=True))
                for k in new
            }
            cells = " ".join(f"{med[lv]:11.1f} {ratio[lv]:6.3f}" for lv in new)
            print(f"{name:28s} {med['old']:8.1f} {cells}", flush=True)


def lse_for_grad(lib: Any, d: Inputs) -> None:
    """The lse that ce_grad_rows starts from (main's signature: nthreads last)."""
    lib.logitlab_ce_rows(
        p(d.work), i64(d.n), p(d.t), None, None, p(d.loss), p(d.lse), None, None, i64(d.v),
        i64(d.v), i64(-100), f32(1.0), f32(0.0), f32(0.0), f32(0.0), i64(0), ci(1),
    )  # fmt: skip


if __name__ == "__main__":
    main()

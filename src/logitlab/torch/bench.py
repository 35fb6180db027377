"""Speed and memory of fused linear + cross-entropy against PyTorch, one process per variant,
timed in interleaved rounds.

Method
------
* **Processes**: every variant of a shape runs in its own subprocess (so that its peak memory is
  its own), and all of them stay alive for the whole shape. After each has warmed up and
  measured its memory, the parent runs ``repeats`` **rounds**: in each round every variant times
  one forward + backward of a scalar mean loss, in an order reversed every other round, with a
  short pause between steps so that no idle OpenMP team spins during another's step. On a
  shared machine the GEMM rate drifts by tens of percent within minutes; separate runs (or the
  best of runs made minutes apart) cannot resolve variants a few percent apart, rounds can.
* **Time**: the median over rounds. ``vs_compact`` (linear) is the median of the per-round
  ratio to ``torch_lce_compact`` (below 1: faster); ``speedup`` (cross-entropy) the median of
  the per-round ratio of ``F.cross_entropy``'s time to the variant's.
* **GEMM floor**: ``6 N d V`` FLOPs (logits, grad_hidden, grad_weight) divided by the rate of a
  2048^3 float32 ``torch.matmul`` measured by the parent in every round; ``floor_x`` is the
  median over rounds of time / floor of that round.
* **Peak extra memory**: CPU torch tensors come from glibc ``malloc``. Each subprocess runs with
  ``MALLOC_MMAP_THRESHOLD_=65536`` so that every tensor of 64 KiB or more is its own ``mmap`` and
  is returned to the OS when freed: the resident set then tracks live tensors. After the warm-up
  (inputs exist, ``.grad`` set to None) the peak-RSS counter is reset (``/proc/self/clear_refs``
  with ``5``), one forward + backward runs, and
  ``extra = VmHWM - VmRSS(before) - bytes(grad_hidden + grad_weight)``: memory above the inputs
  and their gradients. Linux only; page-granular; small allocations under 64 KiB are ignored.

Example:
    >>> from logitlab.torch.bench import format_table
    >>> print(format_table([dict(shape="2x3x4", variant="x", time_s=1.0, floor_x=1.1,
    ...                         extra_mb=2.0, naive_mem_pct=10.0)]))
    shape  variant  time_s  floor_x  extra_MB  %naive_mem
    2x3x4  x        1.000   1.10     2.0       10.0
"""

from __future__ import annotations

import json
import os
import select
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from typing import Any

import torch

# isort: split
from logitlab.torch.cross_entropy import cross_entropy
from logitlab.torch.linear_cross_entropy import linear_cross_entropy

__all__ = ["LINEAR_VARIANTS", "CE_VARIANTS", "run", "run_cross_entropy", "format_table"]

LINEAR_VARIANTS = ("naive", "torch_lce_default", "torch_lce_compact", "logitlab")
CE_VARIANTS = ("torch", "logitlab", "logitlab_inplace")


def _rss_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1])
    return 0


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _gemm_rate() -> float:
    a = torch.randn(2048, 2048)
    b = torch.randn(2048, 2048)
    a @ b
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2 * 2048**3 / best


def _linear_step(variant: str, h: Any, w: Any, t: Any) -> Any:
    import torch.nn.functional as F

    if variant == "naive":
        return F.cross_entropy(F.linear(h, w), t)
    if variant == "torch_lce_default":
        return F.linear_cross_entropy(h, w, t, options=torch.nn.LinearCrossEntropyOptions())
    if variant == "torch_lce_compact":
        opts = torch.nn.LinearCrossEntropyOptions(acc_policy="compact", chunking_method=None)
        return F.linear_cross_entropy(h, w, t, options=opts)
    if variant == "logitlab":
        return linear_cross_entropy(h, w, t)
    raise ValueError(f"unknown variant {variant!r}")


def _ce_step(variant: str, z: Any, t: Any) -> Any:
    import torch.nn.functional as F

    if variant == "torch":
        loss = F.cross_entropy(z, t)
    else:
        loss = cross_entropy(z, t, inplace_backward=variant == "logitlab_inplace")
    return torch.autograd.grad(loss, [z])[0]


def _setup(kind: str, variant: str, shape: Sequence[int]) -> tuple[Any, Any, list[Any]]:
    """Inputs of one variant: (prepare, step, parameters whose gradients the step sets)."""
    torch.manual_seed(0)
    if kind == "linear":
        n, d, v = shape
        h = (torch.randn(n, d) * 0.5).requires_grad_()
        w = (torch.randn(v, d) / d**0.5).requires_grad_()
        t = torch.randint(0, v, (n,))
        params = [h, w]

        def prepare() -> None:
            for p in params:
                p.grad = None

        def step() -> None:
            _linear_step(variant, h, w, t).backward()

        return prepare, step, params
    n, v = shape
    master = torch.randn(n, v) * 2
    t = torch.randint(0, v, (n,))
    box: list[Any] = []

    def prepare_ce() -> None:
        # fresh logits every step: the in-place variant overwrites them with their gradient
        box.clear()
        box.append(master.clone().requires_grad_())

    def step_ce() -> None:
        # d loss / d logits; the in-place variant returns the logits' own storage
        box.append(_ce_step(variant, box[0], t))

    return prepare_ce, step_ce, []


def _reply(obj: dict[str, Any]) -> None:
    print(json.dumps(obj), flush=True)


def _serve(kind: str, variant: str, shape: Sequence[int]) -> None:
    """Worker process: warm up, measure peak extra memory, then time one step per ``step``."""
    prepare, step, params = _setup(kind, variant, shape)
    prepare()
    step()  # warm-up: thread pools, one-time allocations, native kernel build
    grad_bytes = sum(p.numel() * p.element_size() for p in params)
    prepare()
    rss0 = _rss_kb("VmRSS:")
    ok = _reset_peak()
    step()
    peak = _rss_kb("VmHWM:")
    extra = (peak - rss0) * 1024 - grad_bytes if ok else float("nan")
    _reply(dict(extra_mb=max(extra, 0) / 2**20))
    for line in sys.stdin:
        if line.strip() != "step":
            break
        prepare()
        t0 = time.perf_counter()
        step()
        _reply(dict(time_s=time.perf_counter() - t0))


class _Worker:
    """One variant's subprocess, driven line by line (``step`` -> one JSON reply)."""

    def __init__(self, kind: str, variant: str, shape: Sequence[int]) -> None:
        self.name = f"{variant} {tuple(shape)}"
        self.err = tempfile.TemporaryFile()
        self.buf = b""
        arg = json.dumps([kind, variant, list(shape)])
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "logitlab.torch.bench", "--serve", arg],
            env=dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536"),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.err,
        )
        self.first = self.reply()

    def reply(self, timeout: float = 900.0) -> dict[str, Any]:
        """The next JSON line on the worker's stdout (other lines are skipped)."""
        fd = self.proc.stdout.fileno()  # type: ignore[union-attr]
        while True:
            line, nl, rest = self.buf.partition(b"\n")
            if nl:
                self.buf = rest
                if line.startswith(b"{"):
                    res: dict[str, Any] = json.loads(line)
                    return res
                continue
            chunk = os.read(fd, 1 << 16) if select.select([fd], [], [], timeout)[0] else b""
            if not chunk:  # exited, or silent past the timeout
                self.close()
                self.err.seek(0)
                tail = self.err.read()[-2000:].decode(errors="replace")
                raise RuntimeError(f"benchmark worker {self.name} failed:\n{tail}")
            self.buf += chunk

    def step(self) -> float:
        stdin = self.proc.stdin
        assert stdin is not None
        stdin.write(b"step\n")
        stdin.flush()
        return float(self.reply()["time_s"])

    def close(self) -> None:
        try:
            if self.proc.stdin is not None:
                self.proc.stdin.close()
            self.proc.wait(timeout=60)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait()


def _rounds(
    kind: str, variants: Sequence[str], shape: Sequence[int], rounds: int
) -> tuple[dict[str, float], dict[str, list[float]], list[float]]:
    """Start one worker per variant, then time ``rounds`` interleaved rounds.

    Returns (extra MB per variant, step times per variant, GEMM rate of each round)."""
    workers: dict[str, _Worker] = {}
    try:
        for var in variants:  # one at a time: a warm-up never shares the CPU with another
            workers[var] = _Worker(kind, var, shape)
        times: dict[str, list[float]] = {var: [] for var in variants}
        rates: list[float] = []
        for r in range(max(rounds, 1)):
            rates.append(_gemm_rate())
            for var in variants if r % 2 == 0 else variants[::-1]:
                time.sleep(0.25)  # let the previous worker's threads go idle
                times[var].append(workers[var].step())
        extra = {var: float(w.first["extra_mb"]) for var, w in workers.items()}
        return extra, times, rates
    finally:
        for w in workers.values():
            w.close()


def _median_ratio(a: Sequence[float], b: Sequence[float]) -> float:
    return statistics.median(x / y for x, y in zip(a, b, strict=True))


def run(
    shapes: Sequence[tuple[int, int, int]] = ((2048, 512, 32000),),
    variants: Sequence[str] = LINEAR_VARIANTS,
    repeats: int = 3,
) -> tuple[list[dict[str, Any]], str]:
    """Benchmark fused linear + cross-entropy variants; returns (rows, text table).

    Each row: ``shape``, ``variant``, ``time_s`` (fwd+bwd, median over ``repeats`` interleaved
    rounds), ``best_s`` (the fastest round), ``floor_x`` (time over the GEMM floor
    ``6 N d V / rate(2048^3 matmul)``, median over rounds), ``vs_compact`` (median per-round
    time ratio to ``torch_lce_compact``, when it runs), ``extra_mb`` (peak memory above inputs
    and their gradients) and ``naive_mem_pct`` (``extra_mb`` as a percentage of the naive
    variant's).
    """
    rows: list[dict[str, Any]] = []
    for n, d, v in shapes:
        extra, times, rates = _rounds("linear", variants, (n, d, v), repeats)
        floors = [6 * n * d * v / r for r in rates]
        naive_mb = extra.get("naive")
        ref = times.get("torch_lce_compact")
        for var in variants:
            row = dict(
                shape=f"{n}x{d}x{v}",
                variant=var,
                time_s=statistics.median(times[var]),
                best_s=min(times[var]),
                floor_s=statistics.median(floors),
                floor_x=_median_ratio(times[var], floors),
            )
            if ref is not None:
                row["vs_compact"] = _median_ratio(times[var], ref)
            row.update(
                extra_mb=extra[var],
                naive_mem_pct=100 * extra[var] / naive_mb if naive_mb else float("nan"),
                gemm_gflops=statistics.median(rates) / 1e9,
            )
            rows.append(row)
    return rows, format_table(rows)


def run_cross_entropy(
    shapes: Sequence[tuple[int, int]] = ((8192, 32000),),
    variants: Sequence[str] = CE_VARIANTS,
    repeats: int = 3,
) -> tuple[list[dict[str, Any]], str]:
    """Benchmark the in-memory cross-entropy (fwd+bwd) against ``F.cross_entropy``.

    Rows: ``shape``, ``variant``, ``time_s`` (median over ``repeats`` interleaved rounds),
    ``best_s`` (the fastest round; ``F.cross_entropy``'s time is bimodal here, 1.4 or 2.2 s on
    (8192, 32000), with the cost of faulting in its fresh 3 GB),
    ``speedup`` (median per-round ratio of the ``torch`` variant's time to this one's),
    ``extra_mb`` (all memory allocated by the loss forward + backward, the returned
    ``d loss / d logits`` included: about one ``N x V`` buffer for a fresh gradient, 0 when it
    overwrites the logits).
    """
    rows: list[dict[str, Any]] = []
    for n, v in shapes:
        extra, times, _ = _rounds("ce", variants, (n, v), repeats)
        base = times.get("torch")
        for var in variants:
            rows.append(
                dict(
                    shape=f"{n}x{v}",
                    variant=var,
                    time_s=statistics.median(times[var]),
                    best_s=min(times[var]),
                    speedup=_median_ratio(base, times[var]) if base else float("nan"),
                    extra_mb=extra[var],
                )
            )
    return rows, format_table(rows)


_FMT = {
    "time_s": ("time_s", "{:.3f}"),
    "best_s": ("best_s", "{:.3f}"),
    "floor_x": ("floor_x", "{:.2f}"),
    "vs_compact": ("vs_compact", "{:.3f}"),
    "speedup": ("speedup", "{:.2f}"),
    "extra_mb": ("extra_MB", "{:.1f}"),
    "naive_mem_pct": ("%naive_mem", "{:.1f}"),
}


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """Plain-text table of benchmark rows (columns: shape, variant, then the numeric ones)."""
    if not rows:
        return ""
    keys = ["shape", "variant"] + [k for k in _FMT if k in rows[0]]
    head = [_FMT[k][0] if k in _FMT else k for k in keys]
    body = [[_FMT[k][1].format(r[k]) if k in _FMT else str(r[k]) for k in keys] for r in rows]
    widths = [max(len(x) for x in col) for col in zip(head, *body, strict=True)]
    lines = ["  ".join(x.ljust(w) for x, w in zip(head, widths, strict=True)).rstrip()]
    for line in body:
        lines.append("  ".join(x.ljust(w) for x, w in zip(line, widths, strict=True)).rstrip())
    return "\n".join(lines)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--serve":
        kind, variant, shape = json.loads(sys.argv[2])
        _serve(kind, variant, shape)

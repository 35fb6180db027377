"""Speed and memory of fused linear + cross-entropy against PyTorch, one fresh process per variant.

Method
------
* **Time**: forward + backward of a scalar mean loss, best of ``repeats`` runs after one warm-up,
  in a fresh subprocess per (shape, variant).
* **GEMM floor**: ``6 N d V`` FLOPs (logits, grad_hidden, grad_weight) divided by the rate of a
  2048^3 float32 ``torch.matmul`` measured in the same subprocess just before the variant runs, so
  that the ratio ``time / floor`` is taken under the same machine load.
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
import subprocess
import sys
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


def _worker(kind: str, variant: str, shape: Sequence[int], repeats: int) -> dict[str, Any]:
    torch.manual_seed(0)
    if kind == "linear":
        n, d, v = shape
        h = (torch.randn(n, d) * 0.5).requires_grad_()
        w = (torch.randn(v, d) / d**0.5).requires_grad_()
        t = torch.randint(0, v, (n,))
        params = [h, w]

        def step() -> None:
            _linear_step(variant, h, w, t).backward()

    else:
        n, v = shape
        master = torch.randn(n, v) * 2
        t = torch.randint(0, v, (n,))
        params = []
        box: list[Any] = []

        def prepare() -> None:
            box.clear()
            box.append(master.clone().requires_grad_())

        def step() -> None:
            # d loss / d logits; the in-place variant returns the logits' own storage
            box.append(_ce_step(variant, box[0], t))

    if kind != "linear":
        prepare()
    step()  # warm-up: thread pools, one-time allocations, native kernel build
    grad_bytes = sum(p.numel() * p.element_size() for p in params)
    for p in params:
        p.grad = None
    if kind != "linear":
        prepare()
    rss0 = _rss_kb("VmRSS:")
    ok = _reset_peak()
    t0 = time.perf_counter()
    step()
    best = time.perf_counter() - t0
    peak = _rss_kb("VmHWM:")
    extra = (peak - rss0) * 1024 - grad_bytes if ok else float("nan")
    for _ in range(repeats - 1):
        for p in params:
            p.grad = None
        if kind != "linear":
            prepare()
        t0 = time.perf_counter()
        step()
        best = min(best, time.perf_counter() - t0)
    rate = _gemm_rate()
    return dict(time_s=best, extra_mb=max(extra, 0) / 2**20, gemm_gflops=rate / 1e9)


def _spawn(kind: str, variant: str, shape: Sequence[int], repeats: int) -> dict[str, Any]:
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536")
    arg = json.dumps([kind, variant, list(shape), repeats])
    out = subprocess.run(
        [sys.executable, "-m", "logitlab.torch.bench", "--worker", arg],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(f"benchmark worker {variant} {shape} failed:\n{out.stderr[-2000:]}")
    res: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return res


def run(
    shapes: Sequence[tuple[int, int, int]] = ((2048, 512, 32000),),
    variants: Sequence[str] = LINEAR_VARIANTS,
    repeats: int = 2,
) -> tuple[list[dict[str, Any]], str]:
    """Benchmark fused linear + cross-entropy variants; returns (rows, text table).

    Each row: ``shape``, ``variant``, ``time_s`` (fwd+bwd), ``floor_x`` (time over the GEMM
    floor ``6 N d V / rate(2048^3 matmul)``), ``extra_mb`` (peak memory above inputs and their
    gradients) and ``naive_mem_pct`` (``extra_mb`` as a percentage of the naive variant's).
    """
    rows: list[dict[str, Any]] = []
    for n, d, v in shapes:
        naive_mb = None
        for var in variants:
            r = _spawn("linear", var, (n, d, v), repeats)
            floor = 6 * n * d * v / (r["gemm_gflops"] * 1e9)
            if var == "naive":
                naive_mb = r["extra_mb"]
            rows.append(
                dict(
                    shape=f"{n}x{d}x{v}",
                    variant=var,
                    time_s=r["time_s"],
                    floor_s=floor,
                    floor_x=r["time_s"] / floor,
                    extra_mb=r["extra_mb"],
                    naive_mem_pct=100 * r["extra_mb"] / naive_mb if naive_mb else float("nan"),
                    gemm_gflops=r["gemm_gflops"],
                )
            )
    return rows, format_table(rows)


def run_cross_entropy(
    shapes: Sequence[tuple[int, int]] = ((8192, 32000),),
    variants: Sequence[str] = CE_VARIANTS,
    repeats: int = 3,
) -> tuple[list[dict[str, Any]], str]:
    """Benchmark the in-memory cross-entropy (fwd+bwd) against ``F.cross_entropy``.

    Rows: ``shape``, ``variant``, ``time_s``, ``speedup`` (torch time / time), ``extra_mb``
    (all memory allocated by the loss forward + backward, the returned ``d loss / d logits``
    included: about one ``N x V`` buffer for a fresh gradient, 0 when it overwrites the logits).
    """
    rows: list[dict[str, Any]] = []
    for n, v in shapes:
        base = None
        for var in variants:
            r = _spawn("ce", var, (n, v), repeats)
            if var == "torch":
                base = r["time_s"]
            rows.append(
                dict(
                    shape=f"{n}x{v}",
                    variant=var,
                    time_s=r["time_s"],
                    speedup=base / r["time_s"] if base else float("nan"),
                    extra_mb=r["extra_mb"],
                )
            )
    return rows, format_table(rows)


_FMT = {
    "time_s": ("time_s", "{:.3f}"),
    "floor_x": ("floor_x", "{:.2f}"),
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
    if len(sys.argv) == 3 and sys.argv[1] == "--worker":
        kind, variant, shape, repeats = json.loads(sys.argv[2])
        print(json.dumps(_worker(kind, variant, shape, repeats)))

"""Interleaved A/B timing of fused linear + cross-entropy variants in one process.

On a shared machine the GEMM rate drifts by tens of percent within minutes, so separate runs (or
one subprocess per variant, as ``bench_linear_ce.py`` does to measure memory) cannot separate
variants that differ by a few percent. Here every round runs each variant once (fwd + bwd of the
mean loss), the order reversed every other round, and the table shows per-variant medians and
the median of the per-round ratios to the first variant, and in how many rounds each variant
was the faster of the pair.

Run: ``python benchmarks/ab_linear_ce.py --shape 2048 512 32000 --rounds 8``.
Variants: ``torch_compact`` (``F.linear_cross_entropy`` with ``acc_policy="compact",
chunking_method=None``), ``naive``, ``logitlab`` (default chunking),
``logitlab_one_chunk`` (``chunk_size=N``),
``logitlab@C`` (``chunk_size=C``), ``logitlab_rows`` (token-major chunks and the row kernel
everywhere: ``LOGITLAB_CHUNK_LAYOUT=rows``), ``logitlab_cols`` (class-major wherever it
applies: ``LOGITLAB_CHUNK_LAYOUT=cols``), ``logitlab_rows@C`` / ``logitlab_cols@C``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from logitlab.torch import linear_cross_entropy

_lce = sys.modules["logitlab.torch.linear_cross_entropy"]


def variants(h: Any, w: Any, t: Any) -> dict[str, Callable[[], Any]]:
    n = h.shape[0]
    opts = torch.nn.LinearCrossEntropyOptions(acc_policy="compact", chunking_method=None)

    def ll(chunk: int | None, layout: str) -> Callable[[], Any]:
        def f() -> Any:
            _lce._LAYOUT = layout
            return linear_cross_entropy(h, w, t, chunk_size=chunk)

        return f

    return {
        "torch_compact": lambda: F.linear_cross_entropy(h, w, t, options=opts),
        "naive": lambda: F.cross_entropy(F.linear(h, w), t),
        "logitlab": ll(None, "auto"),
        "logitlab_one_chunk": ll(n, "auto"),
        "logitlab_rows": ll(None, "rows"),
        "logitlab_cols": ll(None, "cols"),
    }


def _chunked(h: Any, w: Any, t: Any, chunk: int, layout: str) -> Callable[[], Any]:
    def f() -> Any:
        _lce._LAYOUT = layout
        return linear_cross_entropy(h, w, t, chunk_size=chunk)

    return f


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", type=int, nargs=3, default=(2048, 512, 32000))
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--variants", default="torch_compact,logitlab,logitlab_rows")
    a = ap.parse_args()
    n, d, v = a.shape
    torch.manual_seed(0)
    h = (torch.randn(n, d) * 0.5).requires_grad_()
    w = (torch.randn(v, d) / d**0.5).requires_grad_()
    t = torch.randint(0, v, (n,))
    table = variants(h, w, t)
    names = a.variants.split(",")
    for k in names:  # "logitlab@1536": chunk_size=1536 ("logitlab_rows@1536": token-major)
        if k.startswith(("logitlab@", "logitlab_rows@", "logitlab_cols@")):
            name, chunk = k.split("@")
            layout = name.split("_")[1] if "_" in name else "auto"
            table[k] = _chunked(h, w, t, int(chunk), layout)
    times: dict[str, list[float]] = {k: [] for k in names}
    for k in names:  # warm-up: thread pools, library load
        table[k]().backward()
    for r in range(a.rounds):
        for k in names if r % 2 == 0 else names[::-1]:
            h.grad = w.grad = None
            t0 = time.perf_counter()
            table[k]().backward()
            times[k].append(time.perf_counter() - t0)
    base = times[names[0]]
    print(f"{n}x{d}x{v} float32, {a.rounds} interleaved rounds, torch {torch.__version__}")
    head = f"{'variant':20s} {'median_s':>9s} {'min_s':>7s} {'ratio_to_' + names[0]:>24s}"
    print(head + "  faster_in_rounds")
    for k in names:
        ratios = [x / b for x, b in zip(times[k], base, strict=True)]
        wins = sum(r < 1 for r in ratios)
        print(
            f"{k:20s} {statistics.median(times[k]):9.3f} {min(times[k]):7.3f} "
            f"{statistics.median(ratios):24.3f}  {wins}/{len(ratios)}"
        )


if __name__ == "__main__":
    main()

"""GFLOP/s of the three GEMMs of one linear-cross-entropy chunk, in both layouts, torch vs NumPy.

For a chunk of ``n`` tokens (hidden ``d``, vocabulary ``V``): the logits token-major
(``z = h W^T``) or class-major (``z^T = W h^T``), ``grad_hidden`` and ``grad_weight`` (written,
beta = 0), each through ``torch.mm`` (MKL in the CPU wheels) and ``np.matmul`` (NumPy's own
BLAS, OpenBLAS in the PyPI wheels) on the same memory. Interleaved rounds, medians.

Run: ``python benchmarks/gemm_shapes.py --shape 1408 1024 32000 --shape 512 512 128256``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch


def products(n: int, d: int, v: int) -> dict[str, Callable[[], object]]:
    torch.manual_seed(0)
    h = torch.randn(n, d)
    w = torch.randn(v, d) / d**0.5
    zt, z = torch.empty(v, n), torch.empty(n, v)
    gh, gw = torch.empty(n, d), torch.empty(v, d)
    H, W, ZT, Z, GH, GW = (a.numpy() for a in (h, w, zt, z, gh, gw))
    return {
        "torch logits class-major": lambda: torch.mm(w, h.t(), out=zt),
        "torch logits token-major": lambda: torch.mm(h, w.t(), out=z),
        "torch grad_hidden": lambda: torch.mm(zt.t(), w, out=gh),
        "torch grad_weight": lambda: torch.mm(zt, h, out=gw),
        "numpy logits class-major": lambda: np.matmul(W, H.T, out=ZT),
        "numpy logits token-major": lambda: np.matmul(H, W.T, out=Z),
        "numpy grad_hidden": lambda: np.matmul(ZT.T, W, out=GH),
        "numpy grad_weight": lambda: np.matmul(ZT, H, out=GW),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", type=int, nargs=3, action="append", metavar=("n", "d", "V"))
    ap.add_argument("--rounds", type=int, default=5)
    a = ap.parse_args()
    print(f"torch {torch.__version__} ({torch.get_num_threads()} threads), numpy {np.__version__}")
    for n, d, v in a.shape or [(1408, 1024, 32000), (512, 512, 128256)]:
        table = products(n, d, v)
        for f in table.values():
            f()  # warm-up
        times: dict[str, list[float]] = {k: [] for k in table}
        for _ in range(a.rounds):
            for k, f in table.items():
                t0 = time.perf_counter()
                f()
                times[k].append(time.perf_counter() - t0)
        flops = 2 * n * d * v
        for k, ts in times.items():
            med = statistics.median(ts)
            print(f"{n}x{d}x{v}  {k:26s} {med * 1e3:8.1f} ms {flops / med / 1e9:6.1f} GFLOP/s")


if __name__ == "__main__":
    main()

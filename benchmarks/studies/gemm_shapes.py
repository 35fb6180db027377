"""GFLOP/s of the three GEMMs of one linear-cross-entropy chunk, in both layouts, torch vs NumPy,
on the harness of logitlab.app.bench.

For a chunk of ``n`` tokens (hidden ``d``, vocabulary ``V``): the logits token-major
(``z = h W^T``) or class-major (``z^T = W h^T``), ``grad_hidden`` and ``grad_weight`` (written,
beta = 0), each through ``torch.mm`` (MKL in the CPU wheels) and ``np.matmul`` (NumPy's own
BLAS, OpenBLAS in the PyPI wheels). Every product runs in a worker process of its own (so two
BLAS thread pools never share one), all timed in interleaved rounds; medians. Each worker holds
the inputs and output of its product: up to ~0.8 GB at 512 x 512 x 128256, eight at a time.

Run: ``python benchmarks/studies/gemm_shapes.py --shape 1408 1024 32000 --shape 512 512 128256``
(no ``--before``: no logitlab code runs here).
"""

from __future__ import annotations

import argparse
from typing import Any

PRODUCTS = ("logits class-major", "logits token-major", "grad_hidden", "grad_weight")


def setup(lib: str, product: str, n: int, d: int, v: int) -> Any:
    """Worker side: one product of ``lib`` (``torch`` or ``numpy``) into a preallocated output."""
    import numpy as np

    rng = np.random.default_rng(0)
    h = rng.standard_normal((n, d), dtype=np.float32)
    w = rng.standard_normal((v, d), dtype=np.float32) / d**0.5
    # the gradient products read a class-major logits buffer, as the chunk loop does
    z = rng.standard_normal((v, n), dtype=np.float32) if product.startswith("grad") else h
    rows, cols = dict(zip(PRODUCTS, [(v, n), (n, v), (n, d), (v, d)], strict=True))[product]
    out = np.empty((rows, cols), np.float32)
    if lib == "torch":
        import torch

        # torch's own (64-byte aligned) allocations, as in the loss
        h, w, z, out = (torch.from_numpy(x).clone() for x in (h, w, z, out))
        products = {
            "logits class-major": lambda: torch.mm(w, h.t(), out=out),
            "logits token-major": lambda: torch.mm(h, w.t(), out=out),
            "grad_hidden": lambda: torch.mm(z.t(), w, out=out),
            "grad_weight": lambda: torch.mm(z, h, out=out),
        }
    else:
        products = {
            "logits class-major": lambda: np.matmul(w, h.T, out=out),
            "logits token-major": lambda: np.matmul(h, w.T, out=out),
            "grad_hidden": lambda: np.matmul(z.T, w, out=out),
            "grad_weight": lambda: np.matmul(z, h, out=out),
        }
    return products[product]


def main(argv: list[str] | None = None) -> None:
    from logitlab.app.bench import Case, Variant, format_table, run_cases

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", type=int, nargs=3, action="append", metavar=("n", "d", "V"))
    ap.add_argument("--repeats", type=int, default=5, help="interleaved timing rounds")
    ap.add_argument("--quick", action="store_true", help="tiny shapes: a smoke test")
    a = ap.parse_args(argv)
    shapes = [(64, 32, 500)] if a.quick else a.shape or [(1408, 1024, 32000), (512, 512, 128256)]
    libs = ("torch", "numpy")
    vs = [Variant(f"{lib} {p}", dict(lib=lib, product=p)) for lib in libs for p in PRODUCTS]
    cases = [Case(f"{n}x{d}x{v}", setup, vs, dict(n=n, d=d, v=v)) for n, d, v in shapes]
    results = run_cases(cases, a.repeats, pause_s=0 if a.quick else 0.25)
    rows = []
    for (n, d, v), res in zip(shapes, results, strict=True):
        for r in res:
            row = dict(shape=r.case, product=r.variant, median_ms=r.time_s * 1e3)
            rows.append({**row, "GFLOP/s": 2 * n * d * v / r.time_s / 1e9})
    print(format_table(rows))


if __name__ == "__main__":
    main()

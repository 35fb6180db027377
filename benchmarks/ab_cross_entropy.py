"""Interleaved A/B of in-memory cross-entropy fwd+bwd in one process: F.cross_entropy against
logitlab.torch.cross_entropy with ``inplace_backward=True``.

``bench_cross_entropy.py`` runs each variant in its own process (to measure peak memory); on a
shared machine the two processes can see different memory bandwidth. Here every round runs both,
and the table gives the medians and the median of the per-round speedups.

Run: ``python benchmarks/ab_cross_entropy.py --shape 8192 32000 --rounds 8``.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from logitlab.torch import cross_entropy


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", type=int, nargs=2, default=(8192, 32000))
    ap.add_argument("--rounds", type=int, default=8)
    a = ap.parse_args()
    n, v = a.shape
    torch.manual_seed(0)
    x0 = torch.randn(n, v) * 2
    t = torch.randint(0, v, (n,))
    x = x0.clone()

    def torch_step() -> float:
        z = x0.requires_grad_()
        t0 = time.perf_counter()
        (g,) = torch.autograd.grad(F.cross_entropy(z, t), [z])
        dt = time.perf_counter() - t0
        del g
        return dt

    def logitlab_step() -> float:
        x.copy_(x0)  # the gradient overwrites the logits: fresh logits, outside the timing
        z = x.requires_grad_()
        t0 = time.perf_counter()
        torch.autograd.grad(cross_entropy(z, t, inplace_backward=True), [z])
        return time.perf_counter() - t0

    torch_step(), logitlab_step()  # warm-up: library load, thread pool
    tt: list[float] = []
    ll: list[float] = []
    for _ in range(a.rounds):
        tt.append(torch_step())
        ll.append(logitlab_step())
    speed = statistics.median([p / q for p, q in zip(tt, ll, strict=True)])
    print(f"{n}x{v} float32 fwd+bwd, {a.rounds} interleaved rounds, torch {torch.__version__}")
    print(f"F.cross_entropy            median {statistics.median(tt):.3f} s")
    print(f"logitlab inplace_backward  median {statistics.median(ll):.3f} s  speedup {speed:.2f}x")


if __name__ == "__main__":
    main()

"""Fused linear + cross-entropy: logitlab vs naive F.linear + F.cross_entropy vs PyTorch's
F.linear_cross_entropy (default and fastest options), with the GEMM floor, in one run.

    PYTHONPATH=src python benchmarks/bench_linear_ce.py                # the three target shapes
    PYTHONPATH=src python benchmarks/bench_linear_ce.py --scale        # + N and V scaling tables
    PYTHONPATH=src python benchmarks/bench_linear_ce.py --shape 2048 512 32000

See logitlab.torch.bench for the timing and memory method.
"""

import argparse

from logitlab.torch.bench import run

TARGETS = [(4096, 1024, 32000), (2048, 512, 128256), (2048, 512, 32000)]
SCALE_N = [(n, 512, 32000) for n in (512, 1024, 2048, 4096)]
SCALE_V = [(1024, 512, v) for v in (8000, 32000, 64000, 128256)]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shape", nargs=3, type=int, action="append", metavar=("N", "d", "V"))
    p.add_argument("--scale", action="store_true", help="also time/memory as N and V grow")
    p.add_argument("--repeats", type=int, default=3, help="interleaved timing rounds")
    a = p.parse_args()
    shapes = [tuple(s) for s in a.shape] if a.shape else TARGETS
    print(run(shapes, repeats=a.repeats)[1], flush=True)
    if a.scale:
        for title, sh in (("N grows", SCALE_N), ("V grows", SCALE_V)):
            print(f"\n{title}")
            print(run(sh, variants=("naive", "logitlab"), repeats=a.repeats)[1], flush=True)


if __name__ == "__main__":
    main()

"""In-memory cross-entropy fwd+bwd: logitlab.torch.cross_entropy vs F.cross_entropy.

PYTHONPATH=src python benchmarks/bench_cross_entropy.py [--shape 8192 32000]
"""

import argparse

from logitlab.torch.bench import run_cross_entropy


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shape", nargs=2, type=int, action="append", metavar=("N", "V"))
    p.add_argument("--repeats", type=int, default=5, help="interleaved timing rounds")
    a = p.parse_args()
    shapes = [tuple(s) for s in a.shape] if a.shape else [(8192, 32000)]
    print(run_cross_entropy(shapes, repeats=a.repeats)[1])


if __name__ == "__main__":
    main()

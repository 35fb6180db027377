"""Fused linear + cross-entropy: logitlab vs naive F.linear + F.cross_entropy vs PyTorch's
F.linear_cross_entropy (default and compact options), with the GEMM floor, in one interleaved run
on the harness of logitlab.app.bench (``logitlab bench``, logitlab.app.linear_ce, runs the same
for one shape).

    PYTHONPATH=src python benchmarks/bench_linear_ce.py                # the three target shapes
    PYTHONPATH=src python benchmarks/bench_linear_ce.py --scale        # + N and V scaling tables
    PYTHONPATH=src python benchmarks/bench_linear_ce.py --shape 2048 512 32000
    PYTHONPATH=src python benchmarks/bench_linear_ce.py --before ../logitlab-old  # before/after

Columns: ``time_s`` (median over interleaved rounds), ``best_s``, ``floor_x`` (median per-round
time over the GEMM floor ``6 N d V / rate(2048^3 sgemm)``), ``vs_compact`` (median per-round
ratio to PyTorch's compact path), ``vs_before``, ``extra_MB`` (peak memory above the inputs and
their gradients) and ``%naive_mem``.
"""

from __future__ import annotations

import argparse

TARGETS = [(4096, 1024, 32000), (2048, 512, 128256), (2048, 512, 32000)]
SCALE_N = [(n, 512, 32000) for n in (512, 1024, 2048, 4096)]
SCALE_V = [(1024, 512, v) for v in (8000, 32000, 64000, 128256)]


def main(argv: list[str] | None = None) -> None:
    from logitlab.app.bench import Variant, add_arguments, with_before
    from logitlab.app.linear_ce import LINEAR_VARIANTS, run_linear_ce

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shape", nargs=3, type=int, action="append", metavar=("N", "d", "V"))
    p.add_argument("--scale", action="store_true", help="also time/memory as N and V grow")
    add_arguments(p)
    a = p.parse_args(argv)
    shapes = [tuple(s) for s in a.shape] if a.shape else TARGETS
    if a.quick:
        shapes = [(64, 16, 500)]
    pause = 0 if a.quick else 0.25

    def variants(names: tuple[str, ...]) -> list[Variant]:
        vs = [Variant(name) for name in names]
        return with_before(vs, a.before, ["logitlab"], control=a.control) if a.before else vs

    gemm = 256 if a.quick else 2048  # --quick: a smoke test, no meaningful floor
    rows, table = run_linear_ce(
        shapes, variants(LINEAR_VARIANTS), a.repeats, pause_s=pause, gemm_size=gemm
    )
    print(table, flush=True)
    if a.scale:
        for title, sh in (("N grows", SCALE_N), ("V grows", SCALE_V)):
            print(f"\n{title}")
            rows, table = run_linear_ce(
                sh, variants(("naive", "logitlab")), a.repeats, pause_s=pause, gemm_size=gemm
            )
            print(table, flush=True)


if __name__ == "__main__":
    main()

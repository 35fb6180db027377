"""``logitlab bench``: fused linear + cross-entropy, forward and backward, timed on the harness of
:mod:`logitlab.app.bench` against the naive ``F.linear`` + ``F.cross_entropy`` and PyTorch's own
``F.linear_cross_entropy`` (default and compact options), with a GEMM floor measured in every
round. ``benchmarks/bench_linear_ce.py`` runs the same on more shapes.

Workers load this file by path to run :func:`linear_ce_setup`, possibly against another checkout
(``before:`` variants): so, as the harness asks of a setup's module, it imports ``logitlab``
(torch, and the harness itself) inside functions only.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import math
import statistics
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from logitlab.app.bench import Variant

__all__ = ["LINEAR_VARIANTS", "linear_ce_setup", "run_linear_ce"]

LINEAR_VARIANTS = ("naive", "torch_lce_default", "torch_lce_compact", "logitlab")
_FLOOR = "gemm"


def linear_ce_setup(
    impl: str, n: int, d: int, v: int, chunk_size: int | None = None, gemm_size: int = 2048
) -> Any:
    """Worker side: fwd+bwd of the mean loss ``naive`` = ``F.cross_entropy(F.linear(h, W), t)``,
    ``torch_lce_default`` / ``torch_lce_compact`` = ``F.linear_cross_entropy`` with default
    options / ``acc_policy="compact", chunking_method=None``, ``logitlab`` =
    ``logitlab.torch.linear_cross_entropy`` (with ``chunk_size`` when given); or ``gemm``, three
    ``gemm_size``^3 float32 ``torch.mm`` (the GEMM rate of the floor)."""
    import torch
    import torch.nn.functional as F

    if impl == _FLOOR:
        g = gemm_size
        a, b, out = torch.randn(g, g), torch.randn(g, g), torch.empty(g, g)
        return lambda: [torch.mm(a, b, out=out) for _ in range(3)]
    torch.manual_seed(0)
    h = (torch.randn(n, d) * 0.5).requires_grad_()
    w = (torch.randn(v, d) / d**0.5).requires_grad_()
    t = torch.randint(0, v, (n,))
    if impl == "logitlab":
        from logitlab.torch import linear_cross_entropy

        kw = {} if chunk_size is None else {"chunk_size": chunk_size}
        loss = lambda: linear_cross_entropy(h, w, t, **kw)  # noqa: E731
    elif impl == "naive":
        loss = lambda: F.cross_entropy(F.linear(h, w), t)  # noqa: E731
    elif impl in ("torch_lce_default", "torch_lce_compact"):
        compact = dict(acc_policy="compact", chunking_method=None) if "compact" in impl else {}
        opts = torch.nn.LinearCrossEntropyOptions(**compact)  # type: ignore[arg-type]
        loss = lambda: F.linear_cross_entropy(h, w, t, options=opts)  # noqa: E731
    else:
        raise ValueError(f"unknown linear cross-entropy variant {impl!r}")

    def prepare() -> None:
        h.grad = w.grad = None

    # the step leaves grad_hidden and grad_weight behind: not overhead
    return dict(step=lambda: loss().backward(), prepare=prepare, keep_bytes=4 * (n + v) * d)


def run_linear_ce(
    shapes: Sequence[tuple[int, int, int]] = ((2048, 512, 32000),),
    variants: Sequence[str | Variant] = LINEAR_VARIANTS,
    repeats: int = 3,
    *,
    pause_s: float = 0.25,
    gemm_size: int = 2048,
) -> tuple[list[dict[str, Any]], str]:
    """Fused linear + cross-entropy fwd+bwd, one case per ``(N, d, V)`` shape.

    Rows: ``shape``, ``variant``, ``time_s``, ``best_s``; ``floor_s``, the GEMM floor
    ``6 N d V / rate`` (the rate of three ``gemm_size``^3 ``torch.mm``, timed in every round by a
    worker of its own; median over rounds) and ``floor_x``, the median per-round time / floor;
    ``vs_compact``, the median per-round ratio to ``torch_lce_compact`` (when it runs);
    ``vs_before`` (variants with a ``before:`` twin, see :func:`with_before`); ``extra_mb``, the
    peak memory above the inputs and their gradients, and ``naive_mem_pct``, the same in % of
    the naive variant's; ``gemm_gflops``.

    Args:
        shapes: ``(N, d, V)`` triples.
        variants: names from :data:`LINEAR_VARIANTS`, or :class:`Variant` objects with one in
            ``params["impl"]`` (default: the name) and their own ``chunk_size``, environment
            or source tree.
        repeats: interleaved timing rounds.
        pause_s: pause before every timed step.
        gemm_size: the size of the floor's square GEMMs (2048; smaller for smoke tests only).

    Returns:
        (rows, text table).

    Raises:
        ImportError: PyTorch is not installed.
        ValueError: an unknown variant.
    """
    from logitlab.app.bench import (
        BEFORE,
        CONTROL,
        Case,
        Variant,
        format_table,
        median_ratio,
        run_cases,
    )

    vs = []
    for var in variants:
        var = Variant(var) if isinstance(var, str) else var
        # a before: or control: twin (see with_before) runs the variant of its name on another tree
        impl = var.params.get("impl", var.name.removeprefix(BEFORE).removeprefix(CONTROL))
        if impl not in LINEAR_VARIANTS:
            raise ValueError(f"variants: unknown {impl!r} (known: {', '.join(LINEAR_VARIANTS)})")
        vs.append(dataclasses.replace(var, params={**var.params, "impl": impl}))
    floor = f"gemm_{gemm_size}"  # its own worker, timed in every round; not a row
    vs.append(Variant(floor, {"impl": _FLOOR, "gemm_size": gemm_size}))
    if importlib.util.find_spec("torch") is None:
        raise ModuleNotFoundError("No module named 'torch'", name="torch")
    cases = [Case(f"{n}x{d}x{v}", linear_ce_setup, vs, dict(n=n, d=d, v=v)) for n, d, v in shapes]
    rows: list[dict[str, Any]] = []
    for (n, d, v), res in zip(shapes, run_cases(cases, repeats, pause_s=pause_s), strict=True):
        by = {r.variant: r for r in res}
        rates = [3 * 2 * gemm_size**3 / t for t in by.pop(floor).times]
        floors = [6 * n * d * v / rate for rate in rates]
        naive, ref = by.get("naive"), by.get("torch_lce_compact")
        for r in by.values():
            row = dict(shape=r.case, variant=r.variant, time_s=r.time_s, best_s=r.best_s)
            row.update(floor_s=statistics.median(floors), floor_x=median_ratio(r.times, floors))
            if ref is not None:
                row["vs_compact"] = median_ratio(r.times, ref.times)
            if r.vs_before is not None:
                row["vs_before"] = r.vs_before
            pct = 100 * r.extra_mb / naive.extra_mb if naive and naive.extra_mb else math.nan
            gflops = statistics.median(rates) / 1e9
            rows.append(
                {**row, "extra_mb": r.extra_mb, "naive_mem_pct": pct, "gemm_gflops": gflops}
            )
    cols = ["shape", "variant", "time_s", "best_s", "floor_x", "vs_compact", "vs_before"]
    cols = [c for c in [*cols, "extra_mb", "naive_mem_pct"] if any(c in r for r in rows)]
    return rows, format_table(rows, cols)

"""Paired rounds of logitlab's own knobs for fused linear + cross-entropy (chunk layout, chunk
size) against PyTorch's compact path, on the harness of logitlab.app.bench.

Each variant runs in a worker process of its own, with its knob in its environment or its
arguments (the settings are read when logitlab is imported, so one process cannot switch them);
every round runs each variant once (fwd + bwd of the mean loss), the order reversed every other
round. The table shows per-variant medians, the median of the per-round ratios to the first
variant, and in how many rounds each variant was the faster of the pair.

Run: ``python benchmarks/studies/ab_linear_ce.py --shape 2048 512 32000 --repeats 8``.
Variants: ``torch_compact`` (``F.linear_cross_entropy`` with ``acc_policy="compact",
chunking_method=None``), ``naive``, ``logitlab`` (default chunking),
``logitlab_one_chunk`` (``chunk_size=N``),
``logitlab@C`` (``chunk_size=C``), ``logitlab_rows`` / ``logitlab_cols`` (token-major /
class-major chunks: ``LOGITLAB_CHUNK_LAYOUT=rows`` / ``cols``), ``logitlab_rows@C`` /
``logitlab_cols@C``.
"""

from __future__ import annotations

import argparse
from typing import Any

ENV = {k: {"LOGITLAB_CHUNK_LAYOUT": k} for k in ("rows", "cols")}


def variant(name: str, n: int) -> Any:
    """The Variant a name stands for (see the module docstring)."""
    from logitlab.app.bench import Variant

    impls = {"torch_compact": "torch_lce_compact", "naive": "naive"}
    if name in impls:
        return Variant(name, {"impl": impls[name]})
    base, _, chunk = name.partition("@")
    knob = base.removeprefix("logitlab").removeprefix("_")
    if not base.startswith("logitlab") or knob not in ("", "one_chunk", *ENV):
        raise SystemExit(f"unknown variant {name!r} (see --help)")
    params: dict[str, Any] = {"impl": "logitlab"}
    if knob == "one_chunk" or chunk:
        params["chunk_size"] = int(chunk) if chunk else n
    return Variant(name, params, env=ENV.get(knob, {}))


def main(argv: list[str] | None = None) -> None:
    from logitlab.app.bench import Case, add_arguments, format_table, run_case, with_before
    from logitlab.app.linear_ce import linear_ce_setup

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", type=int, nargs=3, default=(2048, 512, 32000))
    ap.add_argument("--variants", default="torch_compact,logitlab,logitlab_rows,logitlab_cols")
    add_arguments(ap, repeats=6)
    a = ap.parse_args(argv)
    n, d, v = (64, 16, 500) if a.quick else a.shape
    names = a.variants.split(",")
    vs = [variant(name, n) for name in names]
    if a.before:
        vs = with_before(vs, a.before, [x for x in names if x.startswith("logitlab")])
    case = Case(f"{n}x{d}x{v}", linear_ce_setup, vs, dict(n=n, d=d, v=v), baseline=names[0])
    res = run_case(case, a.repeats, pause_s=0 if a.quick else 0.25)
    base = res[[r.variant for r in res].index(names[0])].times
    rows = []
    for r in res:
        wins = sum(x < b for x, b in zip(r.times, base, strict=True))
        rows.append(dict(variant=r.variant, median_s=r.time_s, min_s=r.best_s, ratio=r.ratio))
        rows[-1]["faster_in_rounds"] = f"{wins}/{len(base)}"
    print(f"{case.name} float32, {a.repeats} interleaved rounds, ratio to {names[0]}")
    print(format_table(rows))


if __name__ == "__main__":
    main()

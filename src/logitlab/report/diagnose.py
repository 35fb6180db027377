"""Rendering of a :class:`~logitlab.diagnostics.LogitReport`: rich terminal tables and a
self-contained HTML page with the logit, top-probability and entropy histograms and the per-dtype
overflow margins."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from logitlab.report.html import esc, fig_to_data_uri, html_page, html_table

__all__ = ["render_terminal", "render_html", "summary_rows", "dtype_rows"]


def _g(v: Any) -> str:
    if isinstance(v, float):
        if math.isnan(v):
            return "—"
        return f"{v:.4g}"
    return str(v)


def _pct(v: float) -> str:
    return "—" if v != v else f"{100 * v:.3g}%"


def summary_rows(r: Any) -> list[tuple[str, str]]:
    mp = r.mixed_precision
    rows = [
        ("shape / dtype", f"{tuple(r.shape)} {r.dtype}"),
        ("rows × classes", f"{r.rows} × {r.classes}"),
        ("NaN / +inf / −inf", f"{r.nan} / {r.posinf} / {r.neginf}"),
        ("min / max", f"{_g(r.min)} / {_g(r.max)}"),
        ("mean ± std", f"{_g(r.mean)} ± {_g(r.std)}"),
        ("row spread (max − min): mean / max", f"{_g(r.spread_mean)} / {_g(r.spread_max)}"),
        (
            "saturated rows (float32 / float16)",
            f"{_pct(r.saturation['float32'])} / {_pct(r.saturation['float16'])}",
        ),
        ("confidently wrong rows", _pct(r.saturation["confidently_wrong"])),
        (
            "entropy mean (nats / bits)",
            f"{_g(r.entropy['mean_nats'])} / {_g(r.entropy['mean_bits'])}",
        ),
        ("entropy min / max (nats)", f"{_g(r.entropy['min_nats'])} / {_g(r.entropy['max_nats'])}"),
        ("entropy / log V", _g(r.entropy["mean_normalized"])),
        ("κ = max|z| / min|z| (course notes)", _g(r.conditioning["kappa_ratio"])),
        (
            "cond(lse) mean / max",
            f"{_g(r.conditioning['lse_condition_mean'])} / "
            f"{_g(r.conditioning['lse_condition_max'])}",
        ),
        (
            "cond(loss) mean / max",
            f"{_g(r.conditioning['loss_condition_mean'])} / "
            f"{_g(r.conditioning['loss_condition_max'])}",
        ),
    ]
    if mp.get("elements"):
        rows += [
            (
                "fp16 gradient zero / subnormal",
                f"{_pct(mp['float16_zero_fraction'])} / {_pct(mp['float16_subnormal_fraction'])}",
            ),
            ("recommended static loss scale", str(mp["recommended_loss_scale"])),
        ]
    for t in r.temperature:
        rows.append(
            (
                f"T = {t['temperature']:g}: mean entropy / top-1 p",
                f"{_g(t['mean_entropy'])} / {_g(t['mean_top1_probability'])}",
            )
        )
    return rows


def dtype_rows(r: Any) -> list[tuple[str, str, str, str, str]]:
    return [
        (
            name,
            f"{d['exp_overflow_limit']:.2f}",
            f"{d['margin']:.4g}",
            _pct(d["naive_softmax_bad_fraction"]),
            _pct(d["stable_softmax_zero_fraction"]),
        )
        for name, d in r.per_dtype.items()
    ]


_DT_HEAD = [
    "dtype",
    "ln(max)",
    "margin to max|z|",
    "naive softmax inf/NaN rows",
    "stable softmax rows with p = 0",
]


def render_terminal(r: Any, console: Any = None) -> None:
    from rich.console import Console
    from rich.table import Table

    con = console or Console()
    t = Table(title="logitlab diagnose", header_style="bold")
    t.add_column("quantity")
    t.add_column("value", justify="right")
    for k, v in summary_rows(r):
        t.add_row(k, v)
    con.print(t)
    d = Table(title="per dtype", header_style="bold")
    for h in _DT_HEAD:
        d.add_column(h, justify="right")
    for row in dtype_rows(r):
        d.add_row(*row)
    con.print(d)
    f = Table(title="findings", header_style="bold")
    f.add_column("severity")
    f.add_column("finding")
    f.add_column("advice")
    colors = {"high": "red", "medium": "yellow", "low": "cyan", "info": "green"}
    for x in r.findings:
        f.add_row(f"[{colors.get(x.severity, 'white')}]{x.severity}[/]", x.message, x.advice)
    con.print(f)
    if r.mixed_precision.get("reasoning"):
        con.print(f"[dim]loss scale: {r.mixed_precision['reasoning']}[/dim]")


def _bar(ax: Any, h: dict[str, list[float]], title: str, xlabel: str, log: bool = False) -> None:
    e = np.asarray(h["edges"])
    ax.bar((e[:-1] + e[1:]) / 2, h["counts"], width=np.diff(e), color="#4c72b0")
    if log:
        ax.set_yscale("symlog")
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("count")


def render_html(r: Any) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(11, 7.5))
    _bar(axes[0][0], r.histograms["logits"], "logit values (clipped to ±50)", "logit", log=True)
    _bar(axes[0][1], r.histograms["top_probability"], "top probability", "p_max")
    _bar(axes[1][0], r.histograms["entropy_normalized"], "entropy / log V", "normalised entropy")
    names = list(r.per_dtype)
    margins = [r.per_dtype[n]["margin"] for n in names]
    ax = axes[1][1]
    ax.barh(names, margins, color=["#c44e52" if m < 0 else "#55a868" for m in margins])
    ax.axvline(0, color="k", lw=1)
    ax.set_xscale("symlog")
    ax.set_title("margin: ln(max) − max|z| (negative: naive exp overflows)")
    fig.tight_layout()
    img = fig_to_data_uri(fig)
    findings = "".join(
        f'<li class="sev-{esc(x.severity)}"><b>{esc(x.severity)}</b>: {esc(x.message)} — '
        f"{esc(x.advice)}</li>"
        for x in r.findings
    )
    sections = [
        ("Findings", f"<ul>{findings}</ul>"),
        ("Summary", html_table(["quantity", "value"], summary_rows(r))),
        ("Per dtype", html_table(_DT_HEAD, dtype_rows(r))),
        ("Plots", f'<img alt="histograms" src="{img}">'),
    ]
    if r.mixed_precision.get("reasoning"):
        sections.append(("Loss scale", f"<p>{esc(r.mixed_precision['reasoning'])}</p>"))
    return html_page("logitlab diagnose", sections)

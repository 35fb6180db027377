"""Rendering of :class:`logitlab.diagnostics.LogitReport`: rich terminal tables and HTML with plots.

Rendering only: every number comes from the report; nothing is recomputed here.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from logitlab.report.html import esc, fig_to_data_uri, html_page, html_table

if TYPE_CHECKING:
    from logitlab.diagnostics import LogitReport

__all__ = ["renderables", "render_terminal", "to_html", "summary_rows"]

_SEV_STYLE = {"high": "bold red", "medium": "bold yellow", "low": "dim"}


def _g(v: Any, digits: int = 4) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return f"{v:.{digits}g}"
    return str(v)


def _pct(v: float) -> str:
    return "nan" if math.isnan(v) else f"{v:.2%}"


def summary_rows(rep: LogitReport) -> list[tuple[str, str]]:
    """Basic statistics as (label, value) rows."""
    b = rep.basic
    return [
        ("shape / dtype / class axis", f"{rep.shape} {rep.dtype} axis={rep.axis}"),
        ("rows (finite / non-finite)", f"{b.finite_rows} / {b.nonfinite_rows}"),
        ("NaN / +inf / -inf entries", f"{b.nan_count} / {b.posinf_count} / {b.neginf_count}"),
        ("min / max", f"{_g(b.min)} / {_g(b.max)}"),
        ("mean / std", f"{_g(b.mean)} / {_g(b.std)}"),
        ("min|z| / max|z|", f"{_g(b.min_abs)} / {_g(b.max_abs)}"),
        (
            "row spread max-min (mean, min, max)",
            f"{_g(b.spread_mean)}, {_g(b.spread_min)}, {_g(b.spread_max)}",
        ),
    ]


def _dtype_rows(rep: LogitReport) -> list[list[str]]:
    return [
        [
            name,
            _g(r.exp_limit),
            _g(r.margin),
            _pct(r.naive_overflow_fraction),
            str(r.naive_nan_rows),
            _pct(r.stable_zero_fraction),
            _pct(r.saturated_fraction),
        ]
        for name, r in rep.dtypes.items()
    ]


_DTYPE_HEAD = [
    "dtype",
    "ln(max)",
    "margin to max|z|",
    "naive softmax overflow",
    "naive 0/0 rows",
    "stable p = 0 rows",
    "saturated (1-p<eps)",
]


def _other_rows(rep: LogitReport) -> list[tuple[str, str]]:
    s, c, e, m = rep.saturation, rep.conditioning, rep.entropy, rep.mixed_precision
    rows = [
        ("mean top probability / rows > 0.99", f"{_g(s.mean_top_prob)} / {s.rows_top_above_099}"),
        (f"mean cross-entropy (target: {m.target_source})", _g(s.mean_loss)),
    ]
    if s.has_target:
        rows.append(
            (
                "wrong / confidently wrong (>0.99) / saturated wrong",
                f"{s.wrong_rows} / {s.confident_wrong_rows} / {s.saturated_wrong_rows}",
            )
        )
    rows += [
        (
            "kappa ratio max|z|/min|z| (global, median, max)",
            f"{_g(c.ratio_global)}, {_g(c.ratio_median, 3)}, {_g(c.ratio_max)}",
        ),
        ("kappa lse = sum p|z| / |lse| (median, max)", f"{_g(c.lse_median, 3)}, {_g(c.lse_max)}"),
        ("kappa loss (median, max)", f"{_g(c.loss_median, 3)}, {_g(c.loss_max)}"),
        ("entropy nats (mean, min, max)", f"{_g(e.mean_nats)}, {_g(e.min_nats)}, {_g(e.max_nats)}"),
        ("entropy bits (mean, min, max)", f"{_g(e.mean_bits)}, {_g(e.min_bits)}, {_g(e.max_bits)}"),
        (
            "entropy / log V (mean, min, max)",
            f"{_g(e.normalized_mean)}, {_g(e.normalized_min)}, {_g(e.normalized_max)}",
        ),
    ]
    for t, v in e.temperature.items():
        rows.append(
            (
                f"T = {t}: mean entropy / top-1 prob",
                f"{_g(v['mean_entropy_nats'])} / {_g(v['mean_top_prob'])}",
            )
        )
    rows += [
        (
            "float16 CE gradient: zero / subnormal at S=1",
            f"{_pct(m.zero_fraction)} / {_pct(m.subnormal_fraction)}",
        ),
        ("recommended static loss scale", f"{m.loss_scale:.0f}"),
        (
            "at that scale: zero / subnormal / overflow",
            f"{_pct(m.scaled_zero_fraction)} / {_pct(m.scaled_subnormal_fraction)} / "
            f"{_pct(m.scaled_overflow_fraction)}",
        ),
    ]
    return rows


def renderables(rep: LogitReport) -> list[Any]:
    """rich renderables (tables and text) for the report."""
    from rich.table import Table
    from rich.text import Text

    def quantities(title: str, rows: list[tuple[str, str]]) -> Any:
        t = Table(title=title, show_header=False)
        t.add_column("quantity")
        t.add_column("value", justify="right")
        for k, v in rows:
            t.add_row(k, v)
        return t

    out: list[Any] = [quantities("logits", summary_rows(rep))]
    t = Table(title="per dtype (fractions of finite rows)")
    for i, h in enumerate(_DTYPE_HEAD):
        t.add_column(h, justify="left" if i == 0 else "right")
    for row in _dtype_rows(rep):
        t.add_row(*row)
    out.append(t)
    out.append(quantities("saturation, conditioning, entropy, mixed precision", _other_rows(rep)))
    out.append(Text("loss-scale reasoning:", style="bold"))
    for line in rep.mixed_precision.reasoning:
        out.append(Text(f"  - {line}"))
    out.append(Text("findings:", style="bold"))
    for f in rep.findings:
        out.append(Text(f"  [{f.severity}] {f.message}", style=_SEV_STYLE.get(f.severity, "")))
        out.append(Text(f"      advice: {f.advice}"))
    return out


def render_terminal(rep: LogitReport, console: Any = None) -> None:
    """Print the report with rich (to ``console``, default stdout)."""
    from rich.console import Console

    con = console if console is not None else Console()
    for r in renderables(rep):
        con.print(r)


def _hist_fig(edges: list[float], counts: list[float], title: str, xlabel: str, log: bool) -> Any:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5, 3.2))
    ax = fig.add_subplot(1, 1, 1)
    widths = [b - a for a, b in zip(edges[:-1], edges[1:], strict=True)]
    ax.bar(edges[:-1], counts, width=widths, align="edge", color="#3b6ea5")
    if log and any(c > 0 for c in counts):
        ax.set_yscale("log")
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("count")
    return fig


def _margin_fig(rep: LogitReport) -> Any:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5, 3.2))
    ax = fig.add_subplot(1, 1, 1)
    names = list(rep.dtypes)
    vals = [rep.dtypes[n].margin for n in names]
    colors = ["#b00020" if v < 0 else "#3b6ea5" for v in vals]
    ax.bar(names, [v if math.isfinite(v) else 0.0 for v in vals], color=colors)
    ax.axhline(0, color="k", lw=0.8)
    ax.set_yscale("symlog")
    ax.set_title("margin ln(max) - max|z| per dtype")
    ax.set_ylabel("nats (negative: exp overflows)")
    return fig


# (figure name, histogram key, title, x label, log y axis), in page order around the margins plot
_HISTOGRAMS = (
    ("logits", "logits", "logit histogram", "logit", True),
    ("top probability", "top_prob", "top-1 probability per row", "p_max", False),
    ("entropy", "entropy_normalized", "entropy / log V per row", "normalized entropy", False),
    ("gradient", "grad_log2", "|softmax - onehot| (log2)", "floor(log2 |g|)", True),
)


def to_html(rep: LogitReport) -> str:
    """Self-contained HTML page: tables, findings and four plots (matplotlib, Agg backend).

    Uses :class:`matplotlib.figure.Figure` directly (no pyplot state, no GUI backend).
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    h = rep.histograms
    figs = [
        (name, _hist_fig(h[key]["edges"], h[key]["counts"], title, xlabel, log))
        for name, key, title, xlabel, log in _HISTOGRAMS[:3]
        if key in h
    ]
    figs.append(("margins", _margin_fig(rep)))
    figs += [
        (name, _hist_fig(h[key]["edges"], h[key]["counts"], title, xlabel, log))
        for name, key, title, xlabel, log in _HISTOGRAMS[3:]
        if key in h
    ]
    imgs = "".join(
        f'<figure><img alt="{esc(n)}" src="{fig_to_data_uri(f)}"></figure>' for n, f in figs
    )
    sev = "".join(
        f'<li class="sev-{esc(f.severity)}">[{esc(f.severity)}] {esc(f.message)}'
        f"<br>advice: {esc(f.advice)}</li>"
        for f in rep.findings
    )
    reasons = "".join(f"<li>{esc(r)}</li>" for r in rep.mixed_precision.reasoning)
    sections = [
        ("Findings", f"<ul>{sev}</ul>"),
        ("Logits", html_table(["quantity", "value"], summary_rows(rep))),
        ("Per dtype", html_table(_DTYPE_HEAD, _dtype_rows(rep))),
        (
            "Saturation, conditioning, entropy, mixed precision",
            html_table(["quantity", "value"], _other_rows(rep)),
        ),
        ("Loss-scale reasoning", f"<ul>{reasons}</ul>"),
        ("Plots", f'<div class="figs">{imgs}</div>'),
    ]
    return html_page("logitlab diagnose", sections)

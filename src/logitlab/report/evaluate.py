"""Rendering of an :class:`~logitlab.metrics.evaluation.EvaluationReport`: rich terminal tables,
JSON, and a self-contained HTML page with reliability diagrams and histograms."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from logitlab.metrics.calibration import BinTable
from logitlab.metrics.evaluation import EvaluationReport
from logitlab.report.html import esc, fig_to_data_uri, html_page, html_table

__all__ = ["render_terminal", "render_html", "metrics_rows"]


def _f(v: Any, digits: int = 4) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if v != 0 and (abs(v) < 1e-3 or abs(v) >= 1e5):
            return f"{v:.3e}"
        return f"{v:.{digits}f}"
    return str(v)


def metrics_rows(rep: EvaluationReport) -> list[tuple[str, str]]:
    m = rep.metrics
    rows = [
        ("samples", str(rep.n)),
        ("classes", str(rep.n_classes)),
        ("input", rep.input_kind),
        ("NLL (nats)", _f(m["nll"])),
        ("perplexity", _f(m["perplexity"])),
        ("accuracy", _f(m["accuracy"])),
    ]
    if m.get("top5_accuracy") is not None:  # absent for 5 classes or fewer (k >= C)
        rows.append(("top-5 accuracy", _f(m["top5_accuracy"])))
    rows += [
        ("Brier score", _f(m["brier"])),
        ("mean entropy (nats)", _f(m["mean_entropy"])),
    ]
    if rep.brier_decomposition is not None:
        b = rep.brier_decomposition
        rows += [
            ("  Brier reliability", _f(b["reliability"])),
            ("  Brier resolution", _f(b["resolution"])),
            ("  Brier uncertainty", _f(b["uncertainty"])),
            (
                "  within-bin terms (WBV − WBC)",
                _f(b["within_bin_variance"] - b["within_bin_covariance"]),
            ),
        ]
    if rep.temperature is not None:
        t = rep.temperature
        rows += [
            ("fitted temperature", _f(t.temperature) + ("" if t.converged else " (not converged)")),
            ("NLL before → after", f"{_f(t.nll_before)} → {_f(t.nll_after)}"),
            ("ECE before → after", f"{_f(t.ece_before)} → {_f(t.ece_after)}"),
        ]
    return rows


def _calib_name(c: dict[str, Any]) -> str:
    names = {"l1": "ECE", "l2": "RMSCE", "max": "MCE"}
    n = names[c["norm"]] + (" (debiased)" if c["debiased"] else "")
    return f"{n}, {c['mode']}, {c['binning']}"


def render_terminal(rep: EvaluationReport, console: Any = None) -> None:
    """Print the report's tables with rich (to ``console``, or stdout)."""
    from rich.console import Console
    from rich.table import Table

    con = console or Console()
    t = Table(title=f"logitlab report — {rep.source}", show_header=True, header_style="bold")
    t.add_column("metric")
    t.add_column("value", justify="right")
    for k, v in metrics_rows(rep):
        t.add_row(k, v)
    con.print(t)
    c = Table(title="calibration error", header_style="bold")
    c.add_column("variant")
    c.add_column("value", justify="right")
    for row in rep.calibration:
        c.add_row(_calib_name(row), _f(row["value"]))
    con.print(c)
    if rep.findings:
        f = Table(title="numerical health", header_style="bold")
        f.add_column("severity")
        f.add_column("finding")
        for row in rep.findings:
            f.add_row(row.get("severity", ""), row.get("message", str(row)))
        con.print(f)
    for note in rep.notes:
        con.print(f"[dim]note: {note}[/dim]")


def _reliability(ax: Any, t: BinTable, title: str, xlabel: str = "confidence") -> None:
    m = t.counts > 0
    centers = (t.edges[:-1] + t.edges[1:]) / 2
    width = np.diff(t.edges)
    ax.bar(
        centers[m],
        t.accuracy[m],
        width=width[m] * 0.95,
        color="#4c72b0",
        label="accuracy",
        edgecolor="white",
    )
    ax.bar(
        centers[m],
        t.confidence[m] - t.accuracy[m],
        bottom=t.accuracy[m],
        width=width[m] * 0.95,
        color="#dd8452",
        alpha=0.5,
        label="gap",
    )
    ax.plot([0, 1], [0, 1], "k--", lw=1)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("frequency of class 1" if xlabel.startswith("P(") else "accuracy")
    ax.set_title(title)
    ax.legend(loc="upper left")


def _hist(ax: Any, h: dict[str, list[float]], title: str, xlabel: str) -> None:
    e = np.asarray(h["edges"])
    ax.bar((e[:-1] + e[1:]) / 2, h["counts"], width=np.diff(e), color="#55a868")
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("count")


def render_html(rep: EvaluationReport) -> str:
    """A self-contained HTML page (plots embedded as PNG, no external resources)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figs = []
    fig, axes = plt.subplots(
        1, 2 if rep.reliability_after is not None else 1, figsize=(10, 4.2), squeeze=False
    )
    ece = rep.metrics["ece"]
    # binary (N,) scores: the reliability diagram of P(class 1), as scikit-learn draws it
    xlabel = "P(class 1)" if rep.binary else "confidence"
    _reliability(axes[0][0], rep.reliability_before, f"before (ECE {ece:.4f})", xlabel)
    if rep.reliability_after is not None and rep.temperature is not None:
        _reliability(
            axes[0][1],
            rep.reliability_after,
            f"after T = {rep.temperature.temperature:.3f} (ECE {rep.temperature.ece_after:.4f})",
            xlabel,
        )
    figs.append(("Reliability diagram", fig_to_data_uri(fig)))
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), squeeze=False)
    _hist(axes[0][0], rep.confidence_histogram, "top-label confidence", "confidence")
    _hist(axes[0][1], rep.entropy_histogram, "entropy / log C", "normalised entropy")
    figs.append(("Confidence and entropy", fig_to_data_uri(fig)))
    sections = [
        ("Summary", html_table(["metric", "value"], metrics_rows(rep))),
        (
            "Calibration error",
            html_table(
                ["variant", "value"], [(_calib_name(c), _f(c["value"])) for c in rep.calibration]
            ),
        ),
    ]
    for title, uri in figs:
        sections.append((title, f'<img alt="{esc(title)}" src="{uri}">'))
    if rep.findings:
        rows = "".join(
            f'<li class="sev-{esc(f.get("severity", "low"))}">{esc(f.get("severity", ""))}: '
            f"{esc(f.get('message', ''))}</li>"
            for f in rep.findings
        )
        sections.append(("Numerical health", f"<ul>{rows}</ul>"))
    if rep.notes:
        sections.append(("Notes", "".join(f"<p>{esc(n)}</p>" for n in rep.notes)))
    return html_page(f"logitlab report — {rep.source}", sections)

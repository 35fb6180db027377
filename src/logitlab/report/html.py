"""Self-contained HTML: one page, inline CSS, plots embedded as base64 PNG, no network access."""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence
from typing import Any

__all__ = ["fig_to_data_uri", "html_page", "html_table", "esc"]

_CSS = """
body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
h1{font-size:1.6em}
h2{font-size:1.25em;border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;margin:.6em 0}
td,th{border:1px solid #ccc;padding:.25em .6em;text-align:right}
th{background:#f4f4f4}td:first-child,th:first-child{text-align:left}
.sev-high{color:#b00020;font-weight:600}.sev-medium{color:#b36b00;font-weight:600}
.sev-low{color:#555}img{max-width:100%}.figs{display:flex;flex-wrap:wrap;gap:1em}
.figs figure{margin:0}code{background:#f4f4f4;padding:0 .2em}
"""


def esc(x: object) -> str:
    """HTML-escape ``str(x)``."""
    return html.escape(str(x))


def fig_to_data_uri(fig: Any, dpi: int = 100) -> str:
    """Render a matplotlib figure to a ``data:image/png;base64,...`` URI and close it."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def html_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A plain HTML table (all cells escaped).

    Example:
        >>> html_table(["a", "b"], [[1, "<x>"]])
        '<table><tr><th>a</th><th>b</th></tr><tr><td>1</td><td>&lt;x&gt;</td></tr></table>'
    """
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def html_page(title: str, sections: Sequence[tuple[str, str]]) -> str:
    """A complete HTML document; ``sections`` are ``(heading, inner_html)`` pairs (trusted HTML)."""
    parts = [f"<h2>{esc(h)}</h2>\n{body}" for h, body in sections]
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{esc(title)}</title><style>{_CSS}</style></head><body>"
        f"<h1>{esc(title)}</h1>\n" + "\n".join(parts) + "\n</body></html>\n"
    )

"""Rendering only: rich terminal tables, JSON and self-contained HTML with embedded plots.

Computation never prints; results are dataclasses with ``to_dict()`` that these helpers render.
"""

from logitlab.report.html import fig_to_data_uri, html_page, html_table
from logitlab.report.jsonout import to_json

__all__ = ["fig_to_data_uri", "html_page", "html_table", "to_json"]

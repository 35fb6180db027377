"""Strict JSON for the reports: :func:`logitlab._json.to_json` (kept importable from here)."""

from logitlab._json import to_json

__all__ = ["to_json"]

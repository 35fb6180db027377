"""Strict JSON that accepts NumPy scalars/arrays and non-finite floats.

Data, not rendering: the result dataclasses of every layer (``LogitReport.to_json`` in
:mod:`logitlab.diagnostics`) and the report commands serialise through :func:`to_json`; it
lives below them so that no domain module imports :mod:`logitlab.report`.
"""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any

import numpy as np

__all__ = ["Record", "to_json"]


def _clean(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_clean(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _clean(obj.tolist())
    if isinstance(obj, np.generic):
        return _clean(obj.item())
    if isinstance(obj, float) and not math.isfinite(obj):
        # JSON has no inf/NaN: write them as strings so every parser can read the file.
        return "nan" if math.isnan(obj) else ("inf" if obj > 0 else "-inf")
    return obj


def to_json(obj: Any, indent: int | None = 2) -> str:
    """Serialise ``obj`` (dicts/lists of numbers, NumPy values) to strict JSON.

    Example:
        >>> import numpy as np
        >>> to_json({"a": np.float32(0.5), "b": float("inf")}, indent=None)
        '{"a": 0.5, "b": "inf"}'
    """
    return json.dumps(_clean(obj), indent=indent, allow_nan=False)


class Record:
    """Base of the plain result dataclasses: :meth:`to_dict` gives their fields (nested)."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]

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


def _plain(v: Any) -> Any:
    if isinstance(v, Record):
        return v.to_dict()
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, list | tuple):
        return type(v)(_plain(x) for x in v)
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    return v


class Record:
    """Base of the plain result dataclasses: :meth:`to_dict` gives their fields by name, in
    their order, with nested records as dicts and arrays as lists (the field names are the
    keys of the JSON the report commands write).

    Example:
        >>> from dataclasses import dataclass
        >>> @dataclass
        ... class Bins(Record):
        ...     edges: np.ndarray
        ...     label: str = "x"
        >>> Bins(np.array([0.0, 0.5, 1.0])).to_dict()
        {'edges': [0.0, 0.5, 1.0], 'label': 'x'}
    """

    def to_dict(self) -> dict[str, Any]:
        fields = dataclasses.fields(self)  # type: ignore[arg-type]
        return {f.name: _plain(getattr(self, f.name)) for f in fields}

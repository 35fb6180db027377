"""The result of evaluating a predictions file (:func:`logitlab.app.evaluate.evaluate_predictions`):
plain data, rendered by :mod:`logitlab.report.evaluate`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from logitlab._json import Record
from logitlab.metrics.calibration import BinTable
from logitlab.metrics.temperature import TemperatureResult

__all__ = ["EvaluationReport"]


@dataclass
class EvaluationReport(Record):
    """Metrics, calibration, temperature fit and histograms of one predictions file (the field
    names are the keys of ``logitlab evaluate --json``)."""

    source: str
    n: int
    n_classes: int
    input_kind: str
    metrics: dict[str, Any]
    calibration: list[dict[str, Any]]
    brier_decomposition: dict[str, Any] | None
    temperature: TemperatureResult | None
    reliability_before: BinTable
    reliability_after: BinTable | None
    confidence_histogram: dict[str, list[float]]
    entropy_histogram: dict[str, list[float]]
    findings: list[dict[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    binary: bool = False  # (N,) scores of class 1: calibration of P(class 1), one-column Brier

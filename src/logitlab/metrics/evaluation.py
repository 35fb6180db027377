"""The result of evaluating a predictions file (:func:`logitlab.app.evaluate.evaluate_predictions`):
plain data, rendered by :mod:`logitlab.report.evaluate`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from logitlab.metrics.calibration import BinTable
from logitlab.metrics.temperature import TemperatureResult

__all__ = ["EvaluationReport"]


@dataclass
class EvaluationReport:
    """Metrics, calibration, temperature fit and histograms of one predictions file."""

    source: str
    n: int
    n_classes: int
    input_kind: str
    metrics: dict[str, Any]
    calibration: list[dict[str, Any]]
    brier: dict[str, Any] | None
    temperature: TemperatureResult | None
    table_before: BinTable
    table_after: BinTable | None
    confidence_hist: dict[str, list[float]]
    entropy_hist: dict[str, list[float]]
    findings: list[dict[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    binary: bool = False  # (N,) scores of class 1: calibration of P(class 1), one-column Brier

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "n": self.n,
            "n_classes": self.n_classes,
            "input_kind": self.input_kind,
            "binary": self.binary,
            "metrics": self.metrics,
            "calibration": self.calibration,
            "brier_decomposition": self.brier,
            "temperature": None if self.temperature is None else self.temperature.to_dict(),
            "reliability_before": self.table_before.to_dict(),
            "reliability_after": None if self.table_after is None else self.table_after.to_dict(),
            "confidence_histogram": self.confidence_hist,
            "entropy_histogram": self.entropy_hist,
            "findings": self.findings,
            "notes": self.notes,
        }

"""Evaluation metrics: NLL, accuracy, Brier, calibration error, streaming Evaluator, temperature
scaling and language-model perplexity.

Inputs may be NumPy arrays, torch tensors, any array-API array or lists; they are converted to
NumPy (float64 for the reductions) after validation, so every metric returns Python floats.
"""

from logitlab.metrics.calibration import BinTable, CalibrationResult, bin_table, calibration_error
from logitlab.metrics.classification import (
    BrierDecomposition,
    EntropyStats,
    accuracy,
    brier_decomposition,
    brier_score,
    entropy_stats,
    nll,
    perplexity_from_logits,
)
from logitlab.metrics.evaluator import EvaluationResult, Evaluator, all_reduce_state
from logitlab.metrics.lm import LMPerplexity, lm_perplexity, load_local_model, sliding_window_nll
from logitlab.metrics.temperature import TemperatureResult, fit_temperature

__all__ = [
    "BinTable",
    "BrierDecomposition",
    "CalibrationResult",
    "EntropyStats",
    "EvaluationResult",
    "Evaluator",
    "TemperatureResult",
    "LMPerplexity",
    "accuracy",
    "all_reduce_state",
    "bin_table",
    "brier_decomposition",
    "brier_score",
    "calibration_error",
    "entropy_stats",
    "fit_temperature",
    "lm_perplexity",
    "load_local_model",
    "nll",
    "perplexity_from_logits",
    "sliding_window_nll",
]

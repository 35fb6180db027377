"""logitlab: exact, fast and explained softmax, log-sum-exp, entropy, cross-entropy, calibration."""

from logitlab._checks import ProbabilitiesAsLogitsWarning
from logitlab._config import set_validation, validation, validation_enabled
from logitlab._sysinfo import show_config
from logitlab._version import __version__
from logitlab.losses import (
    binary_cross_entropy,
    binary_cross_entropy_with_logits,
    cross_entropy,
    entropy,
    js_divergence,
    kl_divergence,
    perplexity,
)
from logitlab.metrics import (
    Evaluator,
    accuracy,
    brier_decomposition,
    brier_score,
    calibration_error,
    fit_temperature,
    nll,
)
from logitlab.special import log1mexp, log1pexp, log_softmax, logsumexp, softmax, xlog1py, xlogy

__all__ = [
    "Evaluator",
    "LogitReport",
    "ProbabilitiesAsLogitsWarning",
    "__version__",
    "accuracy",
    "brier_decomposition",
    "brier_score",
    "calibration_error",
    "diagnose",
    "fit_temperature",
    "nll",
    "binary_cross_entropy",
    "binary_cross_entropy_with_logits",
    "cross_entropy",
    "entropy",
    "js_divergence",
    "kl_divergence",
    "perplexity",
    "log1mexp",
    "log1pexp",
    "log_softmax",
    "logsumexp",
    "set_validation",
    "show_config",
    "softmax",
    "validation",
    "validation_enabled",
    "xlog1py",
    "xlogy",
]


def __getattr__(name: str) -> object:
    # diagnostics pulls in more than the core needs: import it on first use
    if name in ("diagnose", "LogitReport"):
        from logitlab import diagnostics

        return getattr(diagnostics, name)
    raise AttributeError(f"module 'logitlab' has no attribute {name!r}")

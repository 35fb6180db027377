"""logitlab: exact, fast and explained softmax, log-sum-exp, entropy, cross-entropy and calibration."""

from logitlab._array import set_validation, validation, validation_enabled
from logitlab._version import __version__
from logitlab.special import log1mexp, log1pexp, log_softmax, logsumexp, softmax, xlog1py, xlogy

__all__ = [
    "__version__",
    "log1mexp",
    "log1pexp",
    "log_softmax",
    "logsumexp",
    "set_validation",
    "softmax",
    "validation",
    "validation_enabled",
    "xlog1py",
    "xlogy",
]

"""Closed forms shared by the public functions and the torch autograd layer.

One implementation of each formula, over the array API: the cross-entropy target weights
(:mod:`~logitlab._formulas.ce`), the KL/JS terms and log-ratios
(:mod:`~logitlab._formulas.divergence`), the binary cross-entropy forms
(:mod:`~logitlab._formulas.binary`), the elementwise helpers (softplus, log1mexp, xlogy;
:mod:`~logitlab._formulas.elementwise`) and the reductions (:mod:`~logitlab._formulas.reduce`).
Row statistics (max, log-sum-exp, softmax, entropy of logits) are the row engine's
(:mod:`logitlab._rows`); these formulas build on them.
"""

from logitlab._formulas.binary import bce_logits, bce_probs, binary_cross_entropy
from logitlab._formulas.ce import (
    ce_coefficients,
    class_rows,
    cross_entropy,
    cross_entropy_probs,
    target_weights,
)
from logitlab._formulas.divergence import (
    divergence,
    h_series,
    js,
    kl,
    kl_terms,
    log_half_ratio,
    log_ratio,
    log_ratio_probs,
)
from logitlab._formulas.elementwise import log1mexp, log1pexp, plus_zero, xlog1py, xlogy
from logitlab._formulas.reduce import entropy_probs, reduce

__all__ = [
    "bce_logits",
    "bce_probs",
    "binary_cross_entropy",
    "ce_coefficients",
    "class_rows",
    "cross_entropy",
    "cross_entropy_probs",
    "divergence",
    "entropy_probs",
    "h_series",
    "js",
    "kl",
    "kl_terms",
    "log1mexp",
    "log1pexp",
    "log_half_ratio",
    "log_ratio",
    "log_ratio_probs",
    "plus_zero",
    "reduce",
    "target_weights",
    "xlog1py",
    "xlogy",
]

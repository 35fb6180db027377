r"""Classification metrics from logits or probabilities: NLL, top-k accuracy, perplexity, Brier
score with Murphy's decomposition, entropy statistics.

References:
    G. W. Brier, "Verification of forecasts expressed in terms of probability", Monthly Weather
    Review 78(1), 1950.

    A. H. Murphy, "A new vector partition of the probability score", J. Applied Meteorology 12,
    1973.

    D. B. Stephenson, C. A. S. Coelho, I. T. Jolliffe, "Two extra components in the Brier score
    decomposition", Weather and Forecasting 23, 2008.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from logitlab._array import validation
from logitlab.losses import cross_entropy, entropy
from logitlab.metrics._inputs import to_labels, to_numpy_2d, to_probs, to_probs_and_labels
from logitlab.metrics.calibration import uniform_edges

__all__ = [
    "nll",
    "accuracy",
    "perplexity_from_logits",
    "brier_score",
    "BrierDecomposition",
    "brier_decomposition",
    "EntropyStats",
    "entropy_stats",
]


def nll(*, logits: Any = None, probs: Any = None, target: Any) -> float:
    r"""Mean negative log-likelihood :math:`-\frac1N \sum_i \log p_{i, t_i}` (exact, from logits).

    Example:
        >>> round(nll(logits=[[0.0, 0.0]], target=[1]), 6)
        0.693147
    """
    if logits is not None and probs is None:
        z = to_numpy_2d(logits, "logits")
        if z.ndim == 1:
            z = np.stack([np.zeros_like(z), z], axis=1)
        y = to_labels(target, z.shape[0], z.shape[1])
        return float(cross_entropy(z.astype(np.float64), y))
    p, y = to_probs_and_labels(probs=probs, logits=logits, target=target)
    with np.errstate(divide="ignore"):
        # + 0.0: -log(1) is -0.0, and -0 + 0 = +0 (every other value unchanged)
        return float(-np.mean(np.log(p[np.arange(y.size), y]))) + 0.0


def accuracy(scores: Any, target: Any, k: int = 1) -> float:
    """Top-``k`` accuracy: the fraction of rows whose target is among the ``k`` highest scores.

    A row counts when fewer than ``k`` scores are strictly higher than the target's: ties are
    resolved in the target's favour, so the value does not depend on sort order.

    Example:
        >>> accuracy([[0.1, 0.7, 0.2], [0.5, 0.3, 0.2]], [2, 0], k=2)
        1.0
    """
    s = to_numpy_2d(scores, "scores")
    if s.ndim == 1:
        s = np.stack([np.zeros_like(s), s], axis=1) if s.dtype.kind == "f" else s
    y = to_labels(target, s.shape[0], s.shape[1])
    if not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    st = s[np.arange(y.size), y][:, None]
    higher = (s > st).sum(axis=1)
    return float(np.mean(higher < k))


def perplexity_from_logits(logits: Any, target: Any) -> float:
    """``exp(mean NLL)``; see :func:`logitlab.perplexity` for token sequences."""
    return math.exp(nll(logits=logits, target=target))


def _is_binary(x: Any) -> bool:
    """1-D scores: the probability (or logit) of class 1 of a binary problem."""
    return x is not None and len(getattr(x, "shape", np.shape(x))) == 1


def brier_score(*, probs: Any = None, logits: Any = None, target: Any) -> float:
    r"""Brier score: multiclass :math:`\frac1N \sum_i \sum_c (p_{ic} - [y_i = c])^2` for
    ``(N, C)`` input; binary :math:`\frac1N \sum_i (p_i - y_i)^2` for ``(N,)`` input (the
    probability, or logit, of class 1), which is half the two-column multiclass value.

    Args:
        probs: probabilities ``(N, C)`` or ``(N,)``.
        logits: logits instead of ``probs``.
        target: integer labels ``(N,)``.

    Returns:
        The mean score (0 is perfect; 2 (multiclass) or 1 (binary) is the worst).

    Raises:
        ValueError: shapes, labels out of range, invalid probabilities, NaN.

    Example:
        >>> round(brier_score(probs=[[0.8, 0.2], [0.4, 0.6]], target=[0, 0]), 12)
        0.4
        >>> round(brier_score(probs=[0.2, 0.6], target=[0, 0]), 12)  # binary: P(class 1)
        0.2

    References:
        Brier 1950.
    """
    binary = _is_binary(probs if logits is None else logits)
    p, y = to_probs_and_labels(probs=probs, logits=logits, target=target)
    return _brier(p, y, binary)


def _brier(p: np.ndarray, y: np.ndarray, binary: bool) -> float:
    """The Brier score of validated float64 ``(N, C)`` probabilities (binary: class 1 only)."""
    if binary:
        return float(np.mean((p[:, 1] - (y == 1)) ** 2))
    onehot = np.zeros_like(p)
    onehot[np.arange(y.size), y] = 1.0
    return float(np.mean(np.sum((p - onehot) ** 2, axis=1)))


@dataclass
class BrierDecomposition:
    r"""Murphy's decomposition, with Stephenson et al.'s two within-bin terms, summed over classes:
    :math:`\mathrm{BS} = \mathrm{REL} - \mathrm{RES} + \mathrm{UNC} + \mathrm{WBV} - \mathrm{WBC}`.

    The identity is exact for any binning; ``WBV - WBC`` vanishes when the forecasts inside a bin
    are equal (and is small with fine bins)."""

    brier: float
    reliability: float
    resolution: float
    uncertainty: float
    within_bin_variance: float
    within_bin_covariance: float
    n_bins: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def brier_decomposition(
    *, probs: Any = None, logits: Any = None, target: Any, n_bins: int = 15
) -> BrierDecomposition:
    r"""Brier score and its decomposition (one-vs-rest per class, equal-width bins, summed;
    binary ``(N,)`` input: the class-1 column only).

    For each class :math:`c` with forecasts :math:`f = p_{\cdot c}` and outcomes
    :math:`o = [y = c]`, in bins :math:`b` with means :math:`\bar f_b, \bar o_b` and
    overall :math:`\bar o`:

    .. math::

        \mathrm{REL} = \tfrac1N \sum_b n_b (\bar f_b - \bar o_b)^2,\quad
        \mathrm{RES} = \tfrac1N \sum_b n_b (\bar o_b - \bar o)^2,\quad
        \mathrm{UNC} = \bar o (1 - \bar o),

        \mathrm{WBV} = \tfrac1N \sum_i (f_i - \bar f_{b(i)})^2,\quad
        \mathrm{WBC} = \tfrac2N \sum_i (o_i - \bar o_{b(i)})(f_i - \bar f_{b(i)}) .

    Example:
        >>> d = brier_decomposition(probs=[[0.8, 0.2], [0.4, 0.6], [0.7, 0.3]], target=[0, 0, 1])
        >>> total = d.reliability - d.resolution + d.uncertainty
        >>> round(total + d.within_bin_variance - d.within_bin_covariance - d.brier, 12)
        0.0

    References:
        Murphy 1973; Stephenson, Coelho & Jolliffe 2008.
    """
    binary = _is_binary(probs if logits is None else logits)
    if not isinstance(n_bins, int | np.integer) or n_bins < 1:
        raise ValueError(f"n_bins must be a positive integer, got {n_bins!r}")
    p, y = to_probs_and_labels(probs=probs, logits=logits, target=target)
    n = y.size
    edges = uniform_edges(n_bins)
    rel = res = unc = wbv = wbc = 0.0
    # binary (N,) input: the one column of class 1, as in Murphy 1973
    for c in [1] if binary else range(p.shape[1]):
        f = p[:, c]
        o = (y == c).astype(np.float64)
        b = np.clip(np.searchsorted(edges[1:-1], f, side="left"), 0, n_bins - 1)
        cnt = np.bincount(b, minlength=n_bins).astype(np.float64)
        fb = np.bincount(b, weights=f, minlength=n_bins) / np.maximum(cnt, 1)
        ob = np.bincount(b, weights=o, minlength=n_bins) / np.maximum(cnt, 1)
        obar = o.mean()
        rel += float(np.sum(cnt * (fb - ob) ** 2)) / n
        res += float(np.sum(cnt * (ob - obar) ** 2)) / n
        unc += float(obar * (1 - obar))
        df = f - fb[b]
        wbv += float(np.sum(df**2)) / n
        wbc += 2 * float(np.sum((o - ob[b]) * df)) / n
    bs = _brier(p, y, binary)
    return BrierDecomposition(bs, rel, res, unc, wbv, wbc, n_bins)


@dataclass
class EntropyStats:
    """Entropy of the predicted distributions in nats, and normalised by ``log C``."""

    mean: float
    min: float
    max: float
    mean_normalized: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def entropy_stats(*, logits: Any = None, probs: Any = None) -> EntropyStats:
    """Mean/min/max predictive entropy (exact, from logits when given).

    Example:
        >>> entropy_stats(logits=[[0.0, 0.0], [0.0, 0.0]]).mean_normalized
        1.0
    """
    if logits is not None:
        z = to_numpy_2d(logits, "logits").astype(np.float64)
        if z.ndim == 1:  # binary: the logit of class 1
            z = np.stack([np.zeros_like(z), z], axis=1)
        h = np.asarray(entropy(logits=z))
        c = z.shape[1]
    else:
        p = to_probs(probs=probs)  # validated with the tolerance of the dtype given
        with validation(False):
            h = np.asarray(entropy(probs=p))
        c = p.shape[1]
    norm = math.log(c) if c > 1 else 1.0
    return EntropyStats(float(h.mean()), float(h.min()), float(h.max()), float(h.mean() / norm))

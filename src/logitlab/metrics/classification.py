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
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from logitlab import _rows
from logitlab._checks import scores_already_guarded
from logitlab._config import validation
from logitlab._json import Record
from logitlab.losses import cross_entropy, entropy
from logitlab.metrics._brier import brier_rows
from logitlab.metrics._inputs import (
    _numpy_of,
    _to_numpy_2d,
    check_logit_rows,
    check_not_swapped,
    is_binary,
    logit_matrix,
    to_labels,
    to_logits_and_labels,
    to_probs,
    to_probs_and_labels,
)
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


def nll(probs: Any = None, target: Any = None, *, logits: Any = None) -> float:
    r"""Mean negative log-likelihood :math:`-\frac1N \sum_i \log p_{i, t_i}`.

    From logits it is the exact cross-entropy of :func:`logitlab.cross_entropy`; from
    probabilities, :math:`-\log p_{i,t_i}` of the probabilities as given (scikit-learn's
    ``log_loss`` without its clipping: a zero probability on the label gives ``inf``).

    Args:
        probs: probabilities ``(N, C)``, or ``(N,)`` for binary (the probability of class 1).
            Positional, like the predictions of torchmetrics (``preds, target``); scikit-learn's
            ``log_loss(y_true, y_pred)`` order is detected and refused.
        target: integer labels ``(N,)``.
        logits: logits instead of ``probs`` (keyword only); ``(N,)``: the logit of class 1.

    Returns:
        The mean NLL in nats.

    Raises:
        ValueError: both or neither of ``probs``/``logits``, swapped arguments, shapes, labels
            out of range, invalid probabilities, NaN.
        TypeError: no ``target``, non-numeric input.

    Warns:
        ProbabilitiesAsLogitsWarning: ``logits`` whose rows look like probabilities.

    Example:
        >>> round(nll(logits=[[0.0, 0.0]], target=[1]), 6)
        0.693147
        >>> round(nll([[0.25, 0.75]], [1]), 6)
        0.287682

    References:
        Bishop, *Pattern Recognition and Machine Learning*, section 4.3.4, 2006.
    """
    if logits is not None and probs is None and target is not None:
        z = logit_matrix(*_to_numpy_2d(logits, "logits"), fn="nll")
        y = to_labels(target, z.shape[0], z.shape[1])
        with scores_already_guarded():
            return float(cross_entropy(z.astype(np.float64), y))
    p, y = to_probs_and_labels(probs=probs, logits=logits, target=target, fn="nll")
    with np.errstate(divide="ignore"):
        # + 0.0: -log(1) is -0.0, and -0 + 0 = +0 (every other value unchanged)
        return float(-np.mean(np.log(p[np.arange(y.size), y]))) + 0.0


def accuracy(scores: Any, target: Any, k: int = 1) -> float:
    """Top-``k`` accuracy: the fraction of rows whose target is among the ``k`` highest scores.

    A row counts when fewer than ``k`` scores are strictly higher than the target's: ties are
    resolved in the target's favour, so the value does not depend on sort order (scikit-learn's
    ``top_k_accuracy_score`` breaks ties by class order instead). Binary ``(N,)`` scores follow
    scikit-learn: scores all in [0, 1] are the probability of class 1 (threshold 0.5), other
    scores are its logit (threshold 0). ``k >= C`` warns, as scikit-learn does: every row counts.

    Args:
        scores: logits or probabilities ``(N, C)``, or binary scores ``(N,)``; predictions first,
            as in torchmetrics (scikit-learn's ``(y_true, y_score)`` order is detected).
        target: integer labels ``(N,)``.
        k: how many of the highest scores count.

    Returns:
        The fraction of rows counted, in [0, 1].

    Raises:
        ValueError: bad ``k``, swapped arguments, shapes, labels out of range.

    Example:
        >>> accuracy([[0.1, 0.7, 0.2], [0.5, 0.3, 0.2]], [2, 0], k=2)
        1.0
        >>> accuracy([0.2, 0.9, 0.6], [0, 1, 0])  # binary probabilities of class 1
        0.6666666666666666

    References:
        scikit-learn, ``sklearn.metrics.top_k_accuracy_score``.
    """
    if not isinstance(k, int | np.integer) or isinstance(k, bool) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    s, _ = _to_numpy_2d(scores, "scores")
    yv, _ = _numpy_of(target, "target")
    check_not_swapped(s, yv, "accuracy", "scores")
    check_logit_rows(s, "scores")  # logits or probabilities: +inf or no finite score is no rank
    if s.ndim == 1:
        probs = bool(np.all((s >= 0) & (s <= 1)))
        s = np.stack([1 - s, s] if probs else [np.zeros_like(s), s], axis=1)
    y = to_labels(target, s.shape[0], s.shape[1])
    if k >= s.shape[1]:
        warnings.warn(
            f"accuracy: k={k} >= the number of classes {s.shape[1]}: every row counts, so "
            "top-k accuracy is 1 whatever the scores",
            UserWarning,
            stacklevel=2,
        )
    st = s[np.arange(y.size), y][:, None]
    higher = (s > st).sum(axis=1)
    return float(np.mean(higher < k))


def perplexity_from_logits(logits: Any, target: Any) -> float:
    """``exp(mean NLL)``; see :func:`logitlab.perplexity` for token sequences."""
    return math.exp(nll(logits=logits, target=target))


def brier_score(probs: Any = None, target: Any = None, *, logits: Any = None) -> float:
    r"""Brier score: multiclass :math:`\frac1N \sum_i \sum_c (p_{ic} - [y_i = c])^2` for
    ``(N, C)`` input; binary :math:`\frac1N \sum_i (p_i - y_i)^2` for ``(N,)`` input (the
    probability, or logit, of class 1), which is half the two-column multiclass value and equals
    scikit-learn's ``brier_score_loss``.

    Args:
        probs: probabilities ``(N, C)`` or ``(N,)``. Positional (predictions first, as in
            torchmetrics); scikit-learn's ``brier_score_loss(y_true, y_proba)`` order is detected
            and refused.
        target: integer labels ``(N,)``.
        logits: logits instead of ``probs`` (keyword only).

    Returns:
        The mean score (0 is perfect; 2 (multiclass) or 1 (binary) is the worst).

    Raises:
        ValueError: shapes, labels out of range, invalid probabilities, NaN, swapped arguments.
        TypeError: no ``target``.

    Warns:
        ProbabilitiesAsLogitsWarning: ``logits`` whose rows look like probabilities.

    Example:
        >>> round(brier_score([[0.8, 0.2], [0.4, 0.6]], [0, 0]), 12)
        0.4
        >>> round(brier_score(probs=[0.2, 0.6], target=[0, 0]), 12)  # binary: P(class 1)
        0.2

    References:
        Brier 1950.
    """
    binary = is_binary(probs if logits is None else logits)
    if logits is not None and probs is None:
        # from the logits' decomposition, not from softmax(logits) - onehot, which cancels on a
        # confident correct row ([0, -40, -41]: 2.0e-35 where the score is 5.4e-35)
        z, y = to_logits_and_labels(logits=logits, target=target, fn="brier_score")
        rows = brier_rows(np, _rows.block(np, z), y)
        return float(np.mean(rows)) / (2.0 if binary else 1.0)
    p, y = to_probs_and_labels(probs=probs, logits=logits, target=target, fn="brier_score")
    return _brier(p, y, binary)


def _brier(p: np.ndarray, y: np.ndarray, binary: bool) -> float:
    """The Brier score of validated float64 ``(N, C)`` probabilities (binary: class 1 only)."""
    if binary:
        return float(np.mean((p[:, 1] - (y == 1)) ** 2))
    onehot = np.zeros_like(p)
    onehot[np.arange(y.size), y] = 1.0
    return float(np.mean(np.sum((p - onehot) ** 2, axis=1)))


@dataclass
class BrierDecomposition(Record):
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


def brier_decomposition(
    probs: Any = None, target: Any = None, *, logits: Any = None, n_bins: int = 15
) -> BrierDecomposition:
    r"""Brier score and its decomposition (one-vs-rest per class, equal-width bins, summed;
    binary ``(N,)`` input: the class-1 column only, as in Murphy 1973, so that the terms add up
    to the binary :func:`brier_score`).

    For each class :math:`c` with forecasts :math:`f = p_{\cdot c}` and outcomes
    :math:`o = [y = c]`, in bins :math:`b` with means :math:`\bar f_b, \bar o_b` and
    overall :math:`\bar o`:

    .. math::

        \mathrm{REL} = \tfrac1N \sum_b n_b (\bar f_b - \bar o_b)^2,\quad
        \mathrm{RES} = \tfrac1N \sum_b n_b (\bar o_b - \bar o)^2,\quad
        \mathrm{UNC} = \bar o (1 - \bar o),

        \mathrm{WBV} = \tfrac1N \sum_i (f_i - \bar f_{b(i)})^2,\quad
        \mathrm{WBC} = \tfrac2N \sum_i (o_i - \bar o_{b(i)})(f_i - \bar f_{b(i)}) .

    Args:
        probs: probabilities ``(N, C)`` or ``(N,)`` (binary: class 1), positional as in
            :func:`brier_score`.
        target: integer labels ``(N,)``.
        logits: logits instead of ``probs`` (keyword only).
        n_bins: equal-width bins of each forecast column.

    Returns:
        :class:`BrierDecomposition`.

    Raises:
        ValueError: as for :func:`brier_score`; ``n_bins`` not a positive integer.

    Example:
        >>> d = brier_decomposition(probs=[[0.8, 0.2], [0.4, 0.6], [0.7, 0.3]], target=[0, 0, 1])
        >>> total = d.reliability - d.resolution + d.uncertainty
        >>> round(total + d.within_bin_variance - d.within_bin_covariance - d.brier, 12)
        0.0

    References:
        Murphy 1973; Stephenson, Coelho & Jolliffe 2008.
    """
    binary = is_binary(probs if logits is None else logits)
    if not isinstance(n_bins, int | np.integer) or n_bins < 1:
        raise ValueError(f"n_bins must be a positive integer, got {n_bins!r}")
    p, y = to_probs_and_labels(probs=probs, logits=logits, target=target, fn="brier_decomposition")
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
class EntropyStats(Record):
    """Entropy of the predicted distributions in nats, and normalised by ``log C``."""

    mean: float
    min: float
    max: float
    mean_normalized: float


def entropy_stats(probs: Any = None, *, logits: Any = None) -> EntropyStats:
    r"""Mean/min/max predictive entropy :math:`H_i = -\sum_c p_{ic} \log p_{ic}` (exact, from
    logits when given), normalised by :math:`\log C`.

    ``(N,)`` input is binary, as in :func:`nll` and :func:`calibration_error`: the probability
    ``p`` of class 1 is the distribution ``(1 - p, p)``, the logit ``z`` of class 1 is the
    logits ``(0, z)``; ``C = 2``.

    Args:
        probs: probabilities ``(N, C)`` or ``(N,)`` (binary: class 1); positional, as in
            :func:`logitlab.entropy`.
        logits: logits instead (keyword only); ``(N,)``: the logit of class 1.

    Returns:
        :class:`EntropyStats` in nats, with the mean normalised by ``log C``.

    Raises:
        ValueError: both or neither argument, invalid probabilities.

    Warns:
        ProbabilitiesAsLogitsWarning: ``logits`` whose rows look like probabilities.

    Example:
        >>> entropy_stats(logits=[[0.0, 0.0], [0.0, 0.0]]).mean_normalized
        1.0
        >>> entropy_stats([[0.5, 0.5], [1.0, 0.0]]).mean_normalized
        0.5
        >>> entropy_stats(logits=[0.0, 0.0]).mean_normalized  # binary: logits (0, 0)
        1.0
    """
    if logits is not None and probs is None:
        z = logit_matrix(*_to_numpy_2d(logits, "logits"), fn="entropy_stats")
        with scores_already_guarded():
            h = np.asarray(entropy(logits=z.astype(np.float64)))
        c = z.shape[1]
    else:
        p = to_probs(probs=probs, logits=logits, fn="entropy_stats")  # the dtype's tolerance
        with validation(False):
            h = np.asarray(entropy(probs=p))
        c = p.shape[1]
    norm = math.log(c) if c > 1 else 1.0
    return EntropyStats(float(h.mean()), float(h.min()), float(h.max()), float(h.mean() / norm))

r"""Calibration error in every common variant, with the per-bin table for reliability diagrams.

One function, :func:`calibration_error`, covers

* binning: ``"equal-width"`` (Guo et al. 2017) or ``"equal-mass"`` (adaptive, Nixon et al. 2019);
* norm: ``"l1"`` (ECE), ``"l2"`` (RMSCE), ``"max"`` (MCE);
* mode: ``"top-label"`` (confidence of the predicted class) or ``"classwise"`` (marginal
  calibration error over all classes, Kumar et al. 2019 / Nixon et al. 2019's SCE);
* ``debiased=True``: Kumar et al.'s debiased estimator of the squared (l2) error.

Bins are half-open ``(lo, hi]`` except the first, which includes 0, so a confidence exactly on an
edge belongs to the lower bin and 0 and 1 are always inside.

.. math::

    \mathrm{CE}_p = \Big(\sum_b \frac{n_b}{N}\,|\bar y_b - \bar f_b|^p\Big)^{1/p},
    \qquad \mathrm{MCE} = \max_{b:\,n_b > 0} |\bar y_b - \bar f_b| .

References:
    C. Guo, G. Pleiss, Y. Sun, K. Q. Weinberger, "On calibration of modern neural networks",
    ICML 2017.

    A. Kumar, P. Liang, T. Ma, "Verified uncertainty calibration", NeurIPS 2019.

    J. Nixon, M. Dusenberry, L. Zhang, G. Jerfel, D. Tran, "Measuring calibration in deep
    learning", CVPR Workshops 2019.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from logitlab._json import Record
from logitlab.metrics._inputs import is_binary, to_probs_and_labels

__all__ = [
    "BinTable",
    "CalibrationResult",
    "calibration_error",
    "bin_table",
    "uniform_edges",
    "BINNINGS",
    "NORMS",
]

BINNINGS = ("equal-width", "equal-mass")
NORMS = ("l1", "l2", "max")
MODES = ("top-label", "classwise")


@dataclass
class BinTable(Record):
    """Per-bin statistics: edges (``n_bins + 1``), counts, mean confidence and accuracy (NaN for
    empty bins)."""

    edges: np.ndarray
    counts: np.ndarray
    confidence: np.ndarray
    accuracy: np.ndarray


@dataclass
class CalibrationResult(Record):
    """The calibration error and the table it was computed from."""

    value: float
    norm: str
    binning: str
    mode: str
    n_bins: int
    debiased: bool
    table: BinTable
    per_class: list[float] = field(default_factory=list)


def uniform_edges(n_bins: int) -> np.ndarray:
    """Edges ``i / n_bins`` (each the correctly rounded quotient, unlike ``np.linspace``), so that
    the edges of ``n`` bins are a subset of those of any multiple of ``n`` bins, bit for bit.

    Example:
        >>> bool(np.all(uniform_edges(15) == uniform_edges(3000)[::200]))
        True
    """
    return np.arange(n_bins + 1, dtype=np.float64) / n_bins


def _edges(conf: np.ndarray, n_bins: int, binning: str) -> np.ndarray:
    if binning == "equal-width":
        return uniform_edges(n_bins)
    # equal-mass: boundaries between consecutive groups of the sorted confidences (groups of
    # sizes differing by at most one); ties may straddle a boundary, as in Nixon et al.
    s = np.sort(conf)
    n = s.size
    cuts = [(n * b) // n_bins for b in range(1, n_bins)]
    inner = [s[c - 1] if c > 0 else 0.0 for c in cuts]
    return np.concatenate([[0.0], inner, [1.0]])


def _assign(conf: np.ndarray, edges: np.ndarray, binning: str) -> np.ndarray:
    n_bins = edges.size - 1
    if binning == "equal-mass":
        # rank-based so that every bin gets its share even with ties on a boundary
        order = np.argsort(conf, kind="stable")
        idx = np.empty(conf.size, dtype=np.int64)
        idx[order] = (np.arange(conf.size) * n_bins) // max(1, conf.size)
        return idx
    return np.clip(np.searchsorted(edges[1:-1], conf, side="left"), 0, n_bins - 1)


def bin_table(
    conf: np.ndarray, correct: np.ndarray, n_bins: int = 15, binning: str = "equal-width"
) -> BinTable:
    """Bin confidences and outcomes (see the module docstring for the edge convention)."""
    conf = np.asarray(conf, dtype=np.float64)
    correct = np.asarray(correct, dtype=np.float64)
    edges = _edges(conf, n_bins, binning)
    idx = _assign(conf, edges, binning)
    counts = np.bincount(idx, minlength=n_bins).astype(np.int64)
    s_conf = np.bincount(idx, weights=conf, minlength=n_bins)
    s_acc = np.bincount(idx, weights=correct, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mc = np.where(counts > 0, s_conf / np.maximum(counts, 1), np.nan)
        ac = np.where(counts > 0, s_acc / np.maximum(counts, 1), np.nan)
    return BinTable(edges, counts, mc, ac)


def error_from_table(t: BinTable, norm: str, debiased: bool = False) -> tuple[float, float]:
    """``(sum of |gap|^p weights or max gap, total count)`` of one table, before the root."""
    n = t.counts.sum()
    m = t.counts > 0
    if n == 0:
        return 0.0, 0.0
    gap = np.abs(t.accuracy[m] - t.confidence[m])
    w = t.counts[m] / n
    if norm == "max":
        return float(gap.max()), float(n)
    if norm == "l1":
        return float(np.sum(w * gap)), float(n)
    sq = gap**2
    if debiased:
        # Kumar et al. 2019: E[(ybar - fbar)^2] overestimates the squared gap by the variance of
        # the bin's accuracy, ybar (1 - ybar) / (n_b - 1); single-sample bins are left as they are.
        nb = t.counts[m]
        acc = t.accuracy[m]
        sq = sq - np.where(nb > 1, acc * (1 - acc) / np.maximum(nb - 1, 1), 0.0)
    return float(np.sum(w * sq)), float(n)


def calibration_error(
    probs: Any = None,
    target: Any = None,
    *,
    logits: Any = None,
    n_bins: int = 15,
    binning: str = "equal-width",
    norm: str = "l1",
    mode: str = "top-label",
    debiased: bool = False,
) -> CalibrationResult:
    r"""Expected (l1), root-mean-square (l2) or maximum calibration error, with its bin table.

    .. math::

        \mathrm{ECE} = \sum_b \frac{n_b}{N} \big|\mathrm{acc}_b - \mathrm{conf}_b\big|,\quad
        \mathrm{RMSCE} = \Big(\sum_b \frac{n_b}{N} (\mathrm{acc}_b - \mathrm{conf}_b)^2\Big)^{1/2},
        \quad \mathrm{MCE} = \max_b |\mathrm{acc}_b - \mathrm{conf}_b| .

    ``classwise`` averages the p-th powers over classes before the root (Kumar et al.'s marginal
    calibration error); its table pools the bins of all classes.

    **Binary** ``(N,)`` input is the probability (or logit) of class 1, and ``"top-label"`` bins
    that probability against the outcome ``y == 1``, as torchmetrics' ``binary_calibration_error``
    and scikit-learn's ``calibration_curve`` do (the reliability diagram of a binary classifier).
    The same forecasts as two columns ``(N, 2)`` are a 2-class problem: top-label bins
    ``max(p, 1 - p)`` against correctness, a different number.

    Args:
        probs: probabilities, shape ``(N, C)`` (or ``(N,)`` for binary: probability of class 1).
            Positional, predictions first (torchmetrics' ``preds, target``).
        target: integer labels, shape ``(N,)``.
        logits: logits instead of ``probs`` (keyword only).
        n_bins: number of bins (15 by default).
        binning: ``"equal-width"`` or ``"equal-mass"``.
        norm: ``"l1"``, ``"l2"`` or ``"max"``.
        mode: ``"top-label"`` or ``"classwise"``.
        debiased: Kumar et al.'s debiased estimator (``norm="l2"`` only).

    Returns:
        A :class:`CalibrationResult` with ``value`` and ``table``.

    Raises:
        ValueError: bad option, empty input, shape mismatch, labels out of range, invalid
            probabilities, arguments in scikit-learn's ``(y_true, y_prob)`` order.
        TypeError: no ``target``.

    Warns:
        ProbabilitiesAsLogitsWarning: ``logits`` whose rows look like probabilities.

    Example:
        >>> import numpy as np
        >>> p = np.array([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7], [0.8, 0.2]])
        >>> r = calibration_error(probs=p, target=np.array([0, 1, 0, 0]), n_bins=4)
        >>> round(r.value, 4)  # bins (.5, .75]: conf .65 acc 0; (.75, 1]: conf .85 acc 1
        0.4
        >>> r.table.counts.tolist()
        [0, 0, 2, 2]

    References:
        Guo et al. 2017; Kumar et al. 2019; Nixon et al. 2019.
    """
    if binning not in BINNINGS:
        raise ValueError(f"binning must be one of {BINNINGS}, got {binning!r}")
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if not isinstance(n_bins, int | np.integer) or n_bins < 1:
        raise ValueError(f"n_bins must be a positive integer, got {n_bins!r}")
    if debiased and norm != "l2":
        raise ValueError("debiased=True is Kumar et al.'s estimator of the l2 error: use norm='l2'")
    binary = is_binary(probs if logits is None else logits)
    p, y = to_probs_and_labels(probs=probs, logits=logits, target=target, fn="calibration_error")
    n_classes = p.shape[1]
    if mode == "top-label":
        if binary:  # P(class 1) against the outcome (torchmetrics' binary_calibration_error)
            conf, correct = p[:, 1], (y == 1).astype(np.float64)
        else:
            conf = p.max(axis=1)
            correct = (p.argmax(axis=1) == y).astype(np.float64)
        t = bin_table(conf, correct, n_bins, binning)
        s, _ = error_from_table(t, norm, debiased)
        value = s if norm in ("l1", "max") else _root(s)
        return CalibrationResult(value, norm, binning, mode, n_bins, debiased, t)
    per_class: list[float] = []
    tables: list[BinTable] = []
    for c in range(n_classes):
        tc = bin_table(p[:, c], (y == c).astype(np.float64), n_bins, binning)
        tables.append(tc)
        per_class.append(error_from_table(tc, norm, debiased)[0])
    agg = max(per_class) if norm == "max" else float(np.mean(per_class))
    value = agg if norm in ("l1", "max") else _root(agg)
    pooled = _pool(tables)
    if norm == "l2":
        per_class = [_root(v) for v in per_class]
    return CalibrationResult(value, norm, binning, mode, n_bins, debiased, pooled, per_class)


def _root(s: float) -> float:
    """The square root of a mean squared gap; 0 for ``s <= 0`` (the debiased estimator can go
    below 0; ``max(-0.0, 0.0)`` is ``-0.0`` in Python, so compare instead)."""
    return math.sqrt(s) if s > 0 else 0.0


def _pool(tables: list[BinTable]) -> BinTable:
    counts = np.sum([t.counts for t in tables], axis=0)
    sc = np.nansum([np.nan_to_num(t.confidence) * t.counts for t in tables], axis=0)
    sa = np.nansum([np.nan_to_num(t.accuracy) * t.counts for t in tables], axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mc = np.where(counts > 0, sc / np.maximum(counts, 1), np.nan)
        ac = np.where(counts > 0, sa / np.maximum(counts, 1), np.nan)
    # equal-width: all classes share the edges; equal-mass: the mean of the classes' edges (the
    # pooled table is for drawing; the value is computed per class)
    edges = np.mean([t.edges for t in tables], axis=0)
    return BinTable(edges, counts, mc, ac)

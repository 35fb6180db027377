"""The fixed-bin histograms of :class:`~logitlab.diagnostics.LogitStats`.

Fixed bins make every count exact and mergeable: condition numbers in 0.1-decade bins of
``log10`` (:class:`LogHist`), the binary exponent of every gradient entry ``softmax - onehot``
(:class:`GradHist`), top probability and normalised entropy in 50 bins of ``[0, 1]`` and the logits
by the top 16 bits of their float32 pattern; :func:`display_histograms` turns them into the
report's ``histograms``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from logitlab.diagnostics.state import ARRAY_SUM, MAX, SUM, accumulator, reset_states, state

__all__ = ["EXP_BINS", "LOG_BINS", "UNIT_BINS", "GradHist", "LogHist", "display_histograms"]

LOG_BINS = np.linspace(-3.0, 21.0, 241)  # log10 of condition numbers: 0.1-decade bins
UNIT_BINS = np.linspace(0.0, 1.0, 51)
EXP_OFFSET = 1100  # gradient exponent histogram index = floor(log2|g|) + offset
EXP_BINS = 1104
LOGIT_BINS = 1 << 16  # the top 16 bits of a float32


@accumulator
class LogHist:
    """Per-row values in 0.1-decade bins of ``log10``, with their exact maximum and the count of
    infinite values (kept apart, above every bin)."""

    counts: np.ndarray = state(lambda: np.zeros(len(LOG_BINS) - 1, np.int64), ARRAY_SUM)
    inf: int = state(0, SUM)
    max: float = state(0.0, MAX)  # of the finite values

    def __init__(self) -> None:
        reset_states(self)

    def add(self, v: np.ndarray) -> None:
        """Count the values ``v`` (>= 0; zeros count in the lowest bin, ``inf`` apart)."""
        fin = np.isfinite(v)
        with np.errstate(all="ignore"):
            lv = np.clip(np.log10(v[fin & (v > 0)]), LOG_BINS[0], LOG_BINS[-1])
        self.counts += np.histogram(lv, bins=LOG_BINS)[0]
        self.inf += int((~fin).sum())
        if fin.any():
            self.max = max(self.max, float(v[fin].max()))

    def median(self) -> float:
        """The median at bin resolution (the bin's midpoint); ``inf`` when infinite values are
        the upper half, NaN when nothing was counted."""
        n = int(self.counts.sum()) + self.inf
        if n == 0:
            return math.nan
        c = np.cumsum(self.counts)
        i = int(np.searchsorted(c, (n + 1) / 2.0))
        if i >= len(self.counts):
            return math.inf
        return float(10 ** ((LOG_BINS[i] + LOG_BINS[i + 1]) / 2))

    def maximum(self, n_rows: int) -> float:
        """The largest value (``inf`` when one was; NaN for no rows)."""
        return math.inf if self.inf else (self.max if n_rows else math.nan)


@accumulator
class GradHist:
    """``floor(log2 |g|)`` of every gradient entry; entries below the work dtype's normal range
    (zeros included) are counted in ``zero``, and ``max`` is the exact largest ``|g|``."""

    counts: np.ndarray = state(lambda: np.zeros(EXP_BINS, np.int64), ARRAY_SUM)
    zero: int = state(0, SUM)
    max: float = state(0.0, MAX)

    def __init__(self) -> None:
        reset_states(self)

    def add_exponents(self, h: np.ndarray, bias: int) -> None:
        """Add counts ``h`` of a biased exponent field (``bias`` 127 float32, 1023 float64):
        field 0 (zero or subnormal in the work dtype) counts as zero for float16 purposes."""
        self.zero += int(h[0])
        idx = np.arange(1, h.size) - bias + EXP_OFFSET  # floor(log2 p) + offset
        keep = (idx >= 0) & (idx < EXP_BINS)
        self.counts[idx[keep]] += h[1:][keep]

    def move(self, v: np.ndarray, sign: int, wd: Any) -> None:
        """Add (``sign = 1``) or remove (``-1``) the values ``v`` as rounded to ``wd``."""
        vw = v.astype(wd)
        small = vw < np.finfo(wd).tiny  # zero or subnormal in the work dtype: the "zero" bucket
        self.zero += sign * int(small.sum())
        _, ex = np.frexp(vw[~small].astype(np.float64))
        np.add.at(self.counts, ex - 1 + EXP_OFFSET, sign)

    def exponents(self) -> np.ndarray:
        """``floor(log2 |g|)`` of each bin."""
        return np.arange(EXP_BINS) - EXP_OFFSET


def display_histograms(
    h_logit: np.ndarray,
    vmin: float,
    vmax: float,
    h_top: np.ndarray,
    h_ent: np.ndarray,
    grad: GradHist,
) -> dict[str, dict[str, list[Any]]]:
    """The report's histograms: ``edges`` and ``counts`` of the logits (60 equal bins over
    ``[vmin, vmax]``; float64 logits beyond the float32 range, whose float32 pattern is
    infinite, are left out), the top probability, the normalised entropy and
    ``floor(log2 |g|)``."""
    out: dict[str, dict[str, list[Any]]] = {}
    # Logits: the exact bfloat16-resolution bins merged into 60 equal bins over [min, max]
    # by the bins' lower edges (display only; exact counts stay in the accumulator).
    keys = np.nonzero(h_logit)[0]
    if keys.size and math.isfinite(vmin):
        lo = (keys.astype(np.uint32) << 16).view(np.float32).astype(np.float64)
        fin = np.isfinite(lo)
        lo, cnt = lo[fin], h_logit[keys][fin]
        if vmax <= vmin:
            vmax = vmin + 1.0
        # halves: vmax - vmin may exceed the float64 range, (vmax - vmin) / 2 never does
        edges = np.linspace(vmin / 2, vmax / 2, 61) * 2
        idx = np.clip(np.searchsorted(edges, lo, side="right") - 1, 0, 59)
        counts = np.bincount(idx, weights=cnt, minlength=60)
        out["logits"] = {"edges": edges.tolist(), "counts": counts.tolist()}
    out["top_prob"] = {"edges": UNIT_BINS.tolist(), "counts": h_top.tolist()}
    out["entropy_normalized"] = {"edges": UNIT_BINS.tolist(), "counts": h_ent.tolist()}
    e = grad.exponents()
    nz = np.nonzero(grad.counts)[0]
    if nz.size:
        sl = slice(int(nz.min()), int(nz.max()) + 1)
        out["grad_log2"] = {
            "edges": [float(v) for v in e[sl]] + [float(e[sl][-1] + 1)],
            "counts": grad.counts[sl].tolist(),
        }
    return out

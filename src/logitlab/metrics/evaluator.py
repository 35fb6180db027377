r"""Streaming evaluation: constant memory in the number of samples, mergeable across processes.

The state is a handful of float64 sums and one fine histogram of the top-label confidence
(``fine_bins`` bins with edges :math:`j / F`, holding per bin the count, the sum of confidences and
the number of correct predictions; binary ``(N,)`` scores: of P(class 1) and the number of class-1
outcomes, as :func:`~logitlab.metrics.calibration_error` bins them). From it:

* NLL, top-1/top-5 accuracy, Brier score and mean entropy are sums, so the streaming result equals
  the batch one up to floating-point summation order;
* equal-width ECE/RMSCE/MCE with ``n_bins`` dividing ``fine_bins`` are **exact**: every coarse
  edge :math:`i / n` is also a fine edge (both are the correctly rounded value of the same
  rational), and both use the same ``(lo, hi]`` convention;
* equal-mass bins are unions of whole fine bins. Each coarse boundary lands at the end of the fine
  bin that holds the batch boundary (sample rank :math:`r_j = \lceil jN/n \rceil`), so the two
  partitions of the sorted samples differ only by the :math:`m_j` samples of that fine bin ranked
  at or after :math:`r_j`. The ECE changes by at most :math:`\frac1N \sum_b |D_b|`, where
  :math:`D_b` is a signed sum of :math:`o_i - f_i` over those samples; each such sum is bounded
  with the fine bin's count, number correct, confidence sum and edges (a fraction of
  :math:`m_j`, not the whole bin), and boundaries sharing a fine bin are counted once.
  :meth:`Evaluator.equal_mass_error_bound` (reported as ``ece_equal_mass_bound``) combines these
  with the streaming bin sums into a bound that is never above 1, the range of the ECE. With
  ``F = 3000`` fine bins it is typically a few 1e-3 or less, and below 0.05 where the
  confidences of a large vocabulary crowd into a few fine bins.

Per-row work runs in the input's floating dtype (float32 stays float32, like the model that
produced it) on cache-sized row blocks with torch when it is installed (NumPy otherwise); every
per-row quantity is accumulated in float64. The per-row formulas use the exact decomposition of
:mod:`logitlab.special` (row maximum :math:`a`, :math:`d_i = x_i - a \le 0`, :math:`s` = the sum
of :math:`e^{d_i}` over all but one maximal entry):

.. math::

    -\log p_t = \operatorname{log1p}(s) - d_t,\quad
    \max_i p_i = \frac{1}{1 + s},\quad
    H = \operatorname{log1p}(s) - \frac{\sum_i e^{d_i} d_i}{1 + s},

and the Brier score :math:`\sum_i (p_i - y_i)^2` as non-negative terms (``1 - 2 p_t + sum p^2``
cancels to 0 for a confident correct row, whose score is about :math:`s^2`), with
:math:`S_2 = \sum_{i \ne k} e^{2 d_i}`:

.. math::

    \frac{s^2 + S_2}{(1 + s)^2} \ (t = k), \qquad
    \frac{(1 + s - e^{d_t})^2 + 1 + S_2 - e^{2 d_t}}{(1 + s)^2} \ (t \ne k).

``merge`` adds two states; ``all_reduce`` sums the state over a ``torch.distributed`` group, so
evaluating shards on several processes gives the single-process result.

References:
    C. Guo, G. Pleiss, Y. Sun, K. Q. Weinberger, "On calibration of modern neural networks",
    ICML 2017.

    J. Nixon et al., "Measuring calibration in deep learning", CVPR Workshops 2019.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from array_api_compat import array_namespace

from logitlab import _rows
from logitlab._array import to_numpy, torch_view
from logitlab._checks import check_probabilities, input_eps, warn_if_probabilities
from logitlab._config import validation_enabled
from logitlab.metrics._brier import brier_rows
from logitlab.metrics._inputs import check_logit_rows
from logitlab.metrics.calibration import BinTable, error_from_table, uniform_edges

__all__ = ["Evaluator", "EvaluationResult", "all_reduce_state"]

_SUMS = ("n", "nll", "top1", "top5", "brier", "entropy")
_BLOCK_ELEMS = 1 << 22  # rows x classes per block (16 MiB f32): few, large ops (see the docs)


@dataclass
class EvaluationResult:
    """Metrics of everything seen by an :class:`Evaluator` (see the module docstring)."""

    n: int
    n_classes: int
    nll: float
    perplexity: float
    accuracy: float
    top5_accuracy: float | None  # None (and left out of to_dict) for 5 classes or fewer
    brier: float
    mean_entropy: float
    ece: float
    rmsce: float
    mce: float
    ece_equal_mass: float
    ece_equal_mass_bound: float
    table: BinTable

    def to_dict(self) -> dict[str, Any]:
        d = {k: getattr(self, k) for k in self.__dataclass_fields__ if k != "table"}
        if self.top5_accuracy is None:
            del d["top5_accuracy"]  # top-k with k >= C counts every row: meaningless
        d["table"] = self.table.to_dict()
        return d


def _torch() -> Any:
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is an optional extra
        return None
    return torch


def _block_stats(x: Any, y: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The five sums (NLL, top-1, top-5, Brier, entropy; float64) of one NumPy/torch block, and
    per row the confidence ``max p`` (float64) and correctness, from the row engine's
    :func:`~logitlab._rows.block`.

    Brier as non-negative terms (:func:`~logitlab.metrics._brier.brier_rows`): the textbook
    ``1 - 2 p_t + sum p^2`` cancels to exactly 0 for a confident correct row.
    """
    xp = array_namespace(x)
    bl = _rows.block(xp, x)
    s = bl.s
    l1p = xp.log1p(s)
    inv = 1.0 / (1.0 + s)
    xt = _rows.gather(xp, x, y)
    nll = l1p - (xt - bl.a)  # a masked target class keeps its honest NLL, +inf
    ent = l1p - _rows.rowdot(xp, bl.w, bl.d) * inv
    correct = bl.k == y
    brier = brier_rows(xp, bl, y)
    # classes with a larger logit than the target's (ties count in the target's favour)
    higher = _rows.rowsum(xp, xp.astype(x > xt[:, None], x.dtype))
    f64 = xp.float64
    sums = [nll, xp.astype(higher < 1, x.dtype), xp.astype(higher < 5, x.dtype), brier, ent]
    # one float64 reduction per quantity, one device-to-host copy per block
    v = to_numpy(xp, xp.stack([xp.sum(q, dtype=f64) for q in sums]))
    return v, to_numpy(xp, xp.astype(inv, f64)), to_numpy(xp, correct)


def _binary_columns(x: Any, from_probs: bool, torch: Any) -> tuple[Any, np.ndarray]:
    """``(B,)`` scores of class 1 as two columns in ``x``'s dtype, and P(class 1) in float64.

    Logits ``z`` become ``(0, z)`` and P(class 1) is their sigmoid; probabilities ``p`` become
    the log-probabilities ``(log1p(-p), log p)`` (``log1p``: exact for tiny ``p``) and P(class 1)
    is ``p`` itself, so that the histogram bins exactly what :func:`calibration_error` bins.
    """
    xn = np.asarray(x.double().cpu().numpy() if torch is not None else x, dtype=np.float64)
    with np.errstate(divide="ignore", over="ignore"):
        if from_probs:
            if validation_enabled():
                check_probabilities(np, xn, "scores", None, normalized=False)
            p1 = xn
            cols = np.stack([np.log1p(-xn), np.log(xn)], 1)  # p = 0 or 1: a masked class
        else:
            check_logit_rows(xn, "scores")  # in the caller's (B,) indices
            e = np.exp(-np.abs(xn))  # sigmoid without overflow
            p1 = np.where(xn >= 0, 1 / (1 + e), e / (1 + e))
            cols = np.stack([np.zeros_like(xn), xn], 1)
    if torch is not None:
        return torch.from_numpy(cols).to(device=x.device, dtype=x.dtype), p1
    return cols.astype(x.dtype), p1


class Evaluator:
    r"""Accumulate predictions batch by batch; :meth:`compute` equals the batch metrics.

    Args:
        n_classes: number of classes (fixed by the first batch if ``None``).
        n_bins: calibration bins (must divide ``fine_bins``).
        fine_bins: resolution :math:`F` of the confidence histogram (memory: ``3 F`` floats).
        from_probs: batches are probabilities rather than logits (checked to lie in [0, 1] and
            sum to one while validation is on).

    Raises:
        ValueError: ``n_bins`` does not divide ``fine_bins``, or either is not positive.

    Example:
        >>> import numpy as np
        >>> from logitlab.metrics import Evaluator, nll
        >>> rng = np.random.default_rng(0)
        >>> z, y = rng.standard_normal((100, 4)), rng.integers(0, 4, 100)
        >>> ev = Evaluator()
        >>> ev.update(z[:60], y[:60]); ev.update(z[60:], y[60:])
        >>> abs(ev.compute().nll - nll(logits=z, target=y)) < 1e-12
        True
    """

    def __init__(
        self,
        n_classes: int | None = None,
        *,
        n_bins: int = 15,
        fine_bins: int = 3000,
        from_probs: bool = False,
    ) -> None:
        if not (isinstance(n_bins, int) and n_bins > 0):
            raise ValueError(f"n_bins must be a positive integer, got {n_bins!r}")
        if not (isinstance(fine_bins, int) and fine_bins > 0) or fine_bins % n_bins:
            raise ValueError(f"n_bins={n_bins} must divide fine_bins={fine_bins}")
        if n_classes is not None and not (isinstance(n_classes, int) and n_classes > 0):
            raise ValueError(f"n_classes must be a positive integer, got {n_classes!r}")
        self.n_classes = n_classes
        self.n_bins = n_bins
        self.fine_bins = fine_bins
        self.from_probs = from_probs
        self.binary: bool | None = None  # (N,) scores of class 1: binary Brier convention
        self.sums = dict.fromkeys(_SUMS, 0.0)
        self.hist = np.zeros((3, fine_bins))  # count, sum of confidence, number correct
        self._fine_edges = uniform_edges(fine_bins)

    # ------------------------------------------------------------------ update

    def update(self, scores: Any, target: Any) -> None:
        """Add a batch (all or nothing: a batch that fails validation leaves the state unchanged).

        Args:
            scores: shape ``(B, C)`` logits (or probabilities with ``from_probs``), or ``(B,)``
                binary scores of class 1. NumPy, torch (any device) or array-API arrays.
            target: integer class indices, shape ``(B,)``.

        Raises:
            ValueError: shapes, class count different from earlier batches, labels out of range,
                NaN or ``+inf`` scores, a row with no finite logit, invalid probabilities.
            TypeError: non-numeric input.
        """
        torch = _torch()
        binary = len(getattr(scores, "shape", np.shape(scores))) == 1
        if self.binary is not None and binary != self.binary:
            raise ValueError(
                "scores mix binary (N,) batches and (N, C) batches: pass one kind throughout"
            )
        if not self.from_probs and validation_enabled():
            self._warn_if_probabilities(scores)
        x, y, p1 = self._prepare(scores, target, torch)
        n, c = x.shape
        if self.n_classes is None:
            self.n_classes = c
        if c != self.n_classes:
            raise ValueError(f"scores have {c} classes, earlier batches had {self.n_classes}")
        if n == 0:
            return
        block = max(1, _BLOCK_ELEMS // c)
        acc = np.zeros(len(_SUMS))
        hist = np.zeros_like(self.hist)
        # binary input histograms P(class 1) itself, which the native kernel does not compute
        native = None if p1 is not None else _rows.native.eval_rows(x, y, self._fine_edges)
        if native is not None:
            bad, nacc, hist = native
            if bad >= 0:
                self._raise_nonfinite(x, bad, 1)
            acc[0] = n
            acc[1:] = nacc
            # a masked target class (NLL = +inf) does not raise: the honest value is kept
        for a in range(0, n if native is None else 0, block):
            xb, yb = x[a : a + block], y[a : a + block]
            v, conf_np, corr_np = _block_stats(xb, yb)
            if not np.isfinite(v[0]) or not np.isfinite(v[3]):
                self._raise_nonfinite(x, a, block)
            acc[0] += xb.shape[0]
            acc[1:] += v
            if p1 is not None:  # binary: P(class 1) against the outcome, as calibration_error
                conf_np = p1[a : a + block]
                corr_np = np.asarray(yb.cpu() if hasattr(yb, "cpu") else yb) == 1
            self._add_hist(hist, conf_np, corr_np)
        for i, k in enumerate(_SUMS):
            self.sums[k] += float(acc[i])
        self.hist += hist
        self.binary = binary

    def _prepare(self, scores: Any, target: Any, torch: Any) -> tuple[Any, Any, Any]:
        """Validated ``(scores (N, C) floating, labels (N,) int64, P(class 1) or None)``, in
        torch when available; the last is the float64 probability of class 1 of binary ``(N,)``
        scores (``None`` for ``(N, C)``)."""
        from logitlab._array import as_arrays, to_numpy

        is_t = torch is not None and isinstance(scores, torch.Tensor)
        eps = input_eps(scores)  # probabilities are checked with their own dtype's tolerance
        if is_t:
            x = scores.detach()
            if not x.is_floating_point():
                x = x.double()
            elif x.dtype in (torch.float16, torch.bfloat16):
                x = x.float()  # half-precision exp/sums lose too much: compute in float32
        else:
            xp, (arr,) = as_arrays(scores, names=["scores"])
            eps = input_eps(arr)
            a = np.asarray(to_numpy(xp, arr))
            if a.dtype.kind not in "biuf":
                raise TypeError(f"scores must be numeric, got dtype {a.dtype}")
            if a.dtype.kind != "f" or a.dtype.itemsize < 4:
                a = a.astype(np.float64 if a.dtype.kind != "f" else np.float32)
            x = a
        if x.ndim not in (1, 2):
            raise ValueError(f"scores must have shape (N, C) or (N,), got {tuple(x.shape)}")
        # labels
        if torch is not None and isinstance(target, torch.Tensor):
            yv = target.detach().cpu().numpy()
        else:
            xp2, (t_arr,) = as_arrays(target, names=["target"])
            yv = np.asarray(to_numpy(xp2, t_arr))
        if yv.ndim != 1:
            raise ValueError(f"target must be 1-D integer labels, got shape {yv.shape}")
        if yv.shape[0] != x.shape[0]:
            raise ValueError(f"target has {yv.shape[0]} labels but scores have {x.shape[0]} rows")
        if yv.dtype.kind == "f":
            if not np.all(np.isfinite(yv)) or np.any(yv != np.round(yv)):
                raise ValueError("target must hold integer class labels")
        elif yv.dtype.kind not in "iu" or yv.dtype == np.bool_:
            raise TypeError(f"target must hold integer class labels, got dtype {yv.dtype}")
        yv = yv.astype(np.int64, copy=False)
        p1 = None
        if x.ndim == 1:  # binary score of class 1
            x, p1 = _binary_columns(x, self.from_probs, torch if is_t else None)
        c = x.shape[1]
        if c == 0:
            raise ValueError("scores have no classes (shape (N, 0))")
        bad = (yv < 0) | (yv >= c)
        if bad.any():
            i = int(np.argmax(bad))
            raise ValueError(f"target[{i}] = {yv[i]} is not a class index in [0, {c})")
        if self.from_probs and p1 is None:
            xn = x.cpu().numpy() if is_t else x
            if validation_enabled():
                check_probabilities(np, xn, "scores", 1, eps=eps)
            with np.errstate(divide="ignore"):
                lx = np.log(xn)  # softmax(log p) = p; p = 0 gives a masked class
            x = torch.from_numpy(lx).to(scores.device) if is_t else lx
        if torch is not None and not is_t:
            x = torch_view(x)  # zero copy, read only
            y = torch.from_numpy(yv)
        elif is_t:
            y = torch.from_numpy(yv).to(x.device)
        else:
            y = yv
        return x, y, p1

    def _warn_if_probabilities(self, scores: Any) -> None:
        from logitlab._array import as_arrays

        xp, (arr,) = as_arrays(scores, names=["scores"])
        if arr.ndim == 2:
            warn_if_probabilities(
                xp,
                arr,
                1,
                fn="Evaluator.update",
                instead="probabilities to Evaluator(from_probs=True)",
                name="scores",
            )

    def _raise_nonfinite(self, x: Any, a: int, block: int) -> None:
        xb = x[a : a + block]
        xn = xb.cpu().numpy() if hasattr(xb, "cpu") else np.asarray(xb)
        # the metrics' one check; a target class masked with -inf passes (its NLL is +inf,
        # which is the honest value)
        check_logit_rows(xn, "scores", a)

    def _add_hist(self, hist: np.ndarray, conf: np.ndarray, correct: np.ndarray) -> None:
        f = self.fine_bins
        e = self._fine_edges
        # bin j holds (e[j], e[j+1]] (bin 0 also holds 0): ceil(conf F) - 1, then corrected by
        # one where the product rounded across an edge, so the bins agree exactly with
        # searchsorted on the same edges (and with calibration_error's equal-width bins)
        idx = np.clip(np.ceil(conf * f).astype(np.int64) - 1, 0, f - 1)
        idx -= (conf <= e[idx]) & (idx > 0)
        idx += (conf > e[idx + 1]) & (idx < f - 1)
        hist[0] += np.bincount(idx, minlength=f)
        hist[1] += np.bincount(idx, weights=conf, minlength=f)
        hist[2] += np.bincount(idx, weights=correct.astype(np.float64), minlength=f)

    # ------------------------------------------------------------------ state

    def merge(self, other: Evaluator) -> Evaluator:
        """Add ``other``'s state into this one (same configuration) and return ``self``.

        Raises:
            ValueError: different bin settings or numbers of classes.
        """
        if (other.n_bins, other.fine_bins, other.from_probs) != (
            self.n_bins,
            self.fine_bins,
            self.from_probs,
        ):
            raise ValueError("cannot merge evaluators with different bin settings or input kinds")
        if self.n_classes is None:
            self.n_classes = other.n_classes
        elif other.n_classes not in (None, self.n_classes):
            raise ValueError(f"cannot merge {self.n_classes}-class and {other.n_classes}-class")
        if None not in (self.binary, other.binary) and self.binary != other.binary:
            raise ValueError("cannot merge a binary (N,) evaluator with an (N, C) one")
        for k in _SUMS:
            self.sums[k] += other.sums[k]
        self.hist += other.hist
        if self.binary is None:
            self.binary = other.binary
        return self

    def state_dict(self) -> dict[str, Any]:
        """A serialisable state (NumPy arrays and numbers only); see :meth:`from_state_dict`."""
        return {
            "n_classes": -1 if self.n_classes is None else self.n_classes,
            "n_bins": self.n_bins,
            "fine_bins": self.fine_bins,
            "from_probs": self.from_probs,
            "binary": -1 if self.binary is None else int(self.binary),
            "sums": np.array([self.sums[k] for k in _SUMS]),
            "hist": self.hist.copy(),
        }

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> Evaluator:
        """Rebuild an evaluator from :meth:`state_dict`."""
        ev = cls(
            None if int(state["n_classes"]) < 0 else int(state["n_classes"]),
            n_bins=int(state["n_bins"]),
            fine_bins=int(state["fine_bins"]),
            from_probs=bool(state["from_probs"]),
        )
        b = int(state.get("binary", -1))
        ev.binary = None if b < 0 else bool(b)
        ev.sums = dict(zip(_SUMS, (float(v) for v in state["sums"]), strict=True))
        ev.hist = np.asarray(state["hist"], dtype=np.float64).reshape(3, ev.fine_bins).copy()
        return ev

    def all_reduce(self, group: Any = None) -> Evaluator:
        """Sum the state over a ``torch.distributed`` process group, in place (see
        :func:`all_reduce_state`). Every rank ends with the state of all ranks' batches."""
        return all_reduce_state(self, group)

    # ------------------------------------------------------------------ results

    def _coarse(self, bounds: list[int], edges: np.ndarray) -> BinTable:
        cs = np.concatenate([np.zeros((3, 1)), np.cumsum(self.hist, axis=1)], axis=1)
        b = np.asarray(bounds)
        sums = cs[:, b[1:]] - cs[:, b[:-1]]
        cnt, sc, sa = np.rint(sums[0]), sums[1], sums[2]
        with np.errstate(invalid="ignore", divide="ignore"):
            return BinTable(
                edges,
                cnt.astype(np.int64),
                np.where(cnt > 0, sc / np.maximum(cnt, 1), np.nan),
                np.where(cnt > 0, sa / np.maximum(cnt, 1), np.nan),
            )

    def _mass_bounds(self) -> list[int]:
        f, b = self.fine_bins, self.n_bins
        cum = np.cumsum(self.hist[0])
        total = cum[-1]
        # the fine bin holding the batch boundary rank ceil(j N / b): first with cum >= j N / b
        cuts = [int(np.searchsorted(cum, total * j / b, side="left")) + 1 for j in range(1, b)]
        bounds = [0, *cuts, f]
        return [int(v) for v in np.maximum.accumulate(np.minimum(bounds, f))]

    def table(self, binning: str = "equal-width") -> BinTable:
        """The reliability table of everything seen so far.

        Args:
            binning: ``"equal-width"`` (exact) or ``"equal-mass"`` (whole fine bins; see the
                module docstring for the error bound).
        """
        f, b = self.fine_bins, self.n_bins
        if binning == "equal-width":
            k = f // b
            return self._coarse([i * k for i in range(b + 1)], uniform_edges(b))
        if binning != "equal-mass":
            raise ValueError(f"binning must be 'equal-width' or 'equal-mass', got {binning!r}")
        bounds = self._mass_bounds()
        return self._coarse(bounds, self._fine_edges[np.asarray(bounds)])

    def equal_mass_error_bound(self) -> float:
        r"""A bound, in [0, 1], on :math:`|\mathrm{ECE}^{stream} - \mathrm{ECE}^{batch}|` for
        equal-mass bins (see the module docstring for the derivation).

        With :math:`r_j = \lceil jN/n \rceil` the batch boundaries and :math:`s_j \ge r_j` the
        streaming ones (the end of the fine bin holding rank :math:`r_j`), the coarse bins differ
        by :math:`D_b = \delta_{b+1} - \delta_b`, :math:`\delta_j = \sum_{r_j \le i < s_j}
        (o_i - f_i)`: sums over samples of a single fine bin, bounded with that bin's count,
        number correct, confidence sum and edges (:meth:`_subset_gap`). When two boundaries share
        a fine bin, the streaming bin between them is empty and :math:`|D_b|` is the batch bin's
        own gap. With :math:`u_b \ge |D_b|` and the streaming bin sums :math:`S'_b`,

        .. math::

            N\,|\mathrm{ECE}^{s} - \mathrm{ECE}^{b}| \le
            \max\Big(\sum_b \min(|S'_b|, u_b),\;
            \min\big(N, N\,\mathrm{ECE}^{s} + \sum_b u_b\big) - N\,\mathrm{ECE}^{s}\Big),

        plus ``4 (N + n) 2**-53`` for the rounding of the two float64 sums (a worst case;
        typically 1e-15). It holds for the confidences the Evaluator computed (float32 input:
        its float32 confidences).
        """
        n_samples = self.sums["n"]
        if n_samples == 0:
            return 0.0
        n, b = int(round(n_samples)), self.n_bins
        cum = np.cumsum(self.hist[0])
        bounds = self._mass_bounds()
        q = [v - 1 for v in bounds]  # q[j]: the fine bin holding boundary j (1 <= j < b)
        s = [0] + [int(round(cum[v])) if v >= 0 else 0 for v in q[1:-1]] + [n]
        r = [-(-j * n // b) for j in range(b + 1)]  # ceil(j n / b), exactly
        u = np.zeros(b)
        for k in range(b):
            if 1 <= k and k + 1 < b and s[k] > r[k + 1]:  # boundaries k, k+1 in one fine bin
                u[k] = self._subset_gap(q[k], r[k + 1] - r[k])
            else:
                u[k] = (self._subset_gap(q[k], s[k] - r[k]) if k >= 1 else 0.0) + (
                    self._subset_gap(q[k + 1], s[k + 1] - r[k + 1]) if k + 1 < b else 0.0
                )
        cs = np.concatenate([np.zeros((3, 1)), np.cumsum(self.hist, axis=1)], axis=1)
        bb = np.asarray(bounds)
        gap_sums = np.abs((cs[2, bb[1:]] - cs[2, bb[:-1]]) - (cs[1, bb[1:]] - cs[1, bb[:-1]]))
        ece = float(gap_sums.sum()) / n
        lower_side = float(np.minimum(gap_sums, u).sum()) / n
        upper_side = min(1.0, ece + float(u.sum()) / n) - ece
        return min(1.0, max(lower_side, upper_side, 0.0) + 4 * (n + b) * 2.0**-53)

    def _subset_gap(self, q: int, m: int) -> float:
        r"""The largest :math:`|\sum (o_i - f_i)|` over any ``m`` samples of fine bin ``q``, from
        its count ``c``, number correct ``k``, confidence sum ``F`` and edges ``(lo, hi]``:
        the outcomes sum to between ``max(0, m - (c - k))`` and ``min(m, k)``, the confidences
        to between ``max(m lo, F - (c - m) hi)`` and ``min(m hi, F - (c - m) lo)``."""
        if m <= 0:
            return 0.0
        c, f_sum, k = (float(v) for v in self.hist[:, q])
        lo, hi = float(self._fine_edges[q]), float(self._fine_edges[q + 1])
        f_min = max(m * lo, f_sum - (c - m) * hi)
        f_max = min(m * hi, f_sum - (c - m) * lo)
        o_min, o_max = max(0.0, m - (c - k)), min(float(m), k)
        return max(o_max - f_min, f_max - o_min, 0.0)

    def compute(self) -> EvaluationResult:
        """The metrics of everything seen so far.

        Raises:
            ValueError: no sample was seen.
        """
        n = self.sums["n"]
        if n == 0:
            raise ValueError("Evaluator.compute() before any update(): no samples")
        t = self.table()
        ece = error_from_table(t, "l1")[0]
        ms = error_from_table(t, "l2")[0]
        rms = math.sqrt(ms) if ms > 0 else 0.0
        mce = error_from_table(t, "max")[0]
        ece_m = error_from_table(self.table("equal-mass"), "l1")[0]
        mean_nll = self.sums["nll"] / n
        return EvaluationResult(
            n=int(n),
            n_classes=int(self.n_classes or 0),
            nll=mean_nll,
            perplexity=math.exp(mean_nll) if mean_nll < 709 else math.inf,
            accuracy=self.sums["top1"] / n,
            top5_accuracy=self.sums["top5"] / n if (self.n_classes or 0) > 5 else None,
            # binary (N,) input: the one-column Brier score, half the two-class sum
            brier=self.sums["brier"] / n / (2.0 if self.binary else 1.0),
            mean_entropy=self.sums["entropy"] / n,
            ece=ece,
            rmsce=rms,
            mce=mce,
            ece_equal_mass=ece_m,
            ece_equal_mass_bound=self.equal_mass_error_bound(),
            table=t,
        )


def all_reduce_state(ev: Evaluator, group: Any = None) -> Evaluator:
    """Sum an :class:`Evaluator`'s state over a ``torch.distributed`` group, in place.

    One float64 ``all_reduce`` of ``6 + 3 F`` numbers (CPU tensor: use the gloo backend, or move
    it yourself for NCCL). The number of classes must be known on every rank.

    Raises:
        RuntimeError: the default process group is not initialised.
    """
    import torch
    import torch.distributed as dist

    if not dist.is_available() or not dist.is_initialized():
        raise RuntimeError("torch.distributed is not initialised: call init_process_group first")
    flat = torch.from_numpy(
        np.concatenate([np.array([ev.sums[k] for k in _SUMS]), ev.hist.reshape(-1)])
    )
    dist.all_reduce(flat, op=dist.ReduceOp.SUM, group=group)
    v = flat.numpy()
    ev.sums = dict(zip(_SUMS, (float(x) for x in v[: len(_SUMS)]), strict=True))
    ev.hist = v[len(_SUMS) :].reshape(3, ev.fine_bins).copy()
    return ev

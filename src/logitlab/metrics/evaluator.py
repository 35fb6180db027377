r"""Streaming evaluation: constant memory in the number of samples, mergeable across processes.

The state is a handful of sums and one fine histogram of the top-label confidence
(``fine_bins`` bins of width ``1/fine_bins``, with count, sum of confidences and sum of correct
predictions per bin). From it:

* NLL, top-1/top-5 accuracy, Brier score and mean entropy are exact (sums);
* equal-width ECE/RMSCE/MCE with ``n_bins`` dividing ``fine_bins`` are **exact** (each coarse bin
  is a union of fine bins with the same ``(lo, hi]`` convention);
* equal-mass bins are formed from whole fine bins: each coarse boundary lies within one fine bin
  (``1/fine_bins`` in confidence) of the batch quantile, so each bin's count differs from the
  batch result by at most the count of the fine bin at each of its two edges.

``merge`` adds two states; ``all_reduce`` sums the state over a ``torch.distributed`` group, so
evaluating shards on several processes gives the single-process result.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from logitlab.losses import entropy
from logitlab.metrics._inputs import to_labels, to_numpy_2d
from logitlab.metrics.calibration import BinTable, error_from_table
from logitlab.special import log_softmax

__all__ = ["Evaluator", "EvaluationResult"]

_SUMS = ("n", "nll", "top1", "top5", "brier", "entropy")


@dataclass
class EvaluationResult:
    n: int
    n_classes: int
    nll: float
    perplexity: float
    accuracy: float
    top5_accuracy: float
    brier: float
    mean_entropy: float
    ece: float
    rmsce: float
    mce: float
    ece_equal_mass: float
    table: BinTable

    def to_dict(self) -> dict[str, Any]:
        d = {k: getattr(self, k) for k in self.__dataclass_fields__ if k != "table"}
        d["table"] = self.table.to_dict()
        return d


class Evaluator:
    """Accumulate predictions batch by batch; ``compute()`` equals the batch metrics.

    Args:
        n_classes: number of classes (fixed by the first batch if ``None``).
        n_bins: calibration bins (must divide ``fine_bins``).
        fine_bins: resolution of the confidence histogram.
        from_probs: batches are probabilities rather than logits.

    Example:
        >>> import numpy as np
        >>> ev = Evaluator()
        >>> rng = np.random.default_rng(0)
        >>> z, y = rng.standard_normal((100, 4)), rng.integers(0, 4, 100)
        >>> ev.update(z[:60], y[:60]); ev.update(z[60:], y[60:])
        >>> from logitlab.metrics import nll
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
        if fine_bins % n_bins:
            raise ValueError(f"n_bins={n_bins} must divide fine_bins={fine_bins}")
        self.n_classes = n_classes
        self.n_bins = n_bins
        self.fine_bins = fine_bins
        self.from_probs = from_probs
        self.sums = dict.fromkeys(_SUMS, 0.0)
        self.hist = np.zeros((3, fine_bins))  # count, sum of confidence, sum of correct

    def update(self, scores: Any, target: Any) -> None:
        """Add a batch: ``scores`` of shape ``(B, C)`` (logits, or probabilities with
        ``from_probs``) and integer ``target`` of shape ``(B,)``."""
        z = to_numpy_2d(scores, "scores").astype(np.float64)
        if z.ndim == 1:
            z = (
                np.stack([np.zeros_like(z), z], 1)
                if not self.from_probs
                else np.stack([1 - z, z], 1)
            )
        if self.n_classes is None:
            self.n_classes = z.shape[1]
        if z.shape[1] != self.n_classes:
            raise ValueError(
                f"scores have {z.shape[1]} classes, earlier batches had {self.n_classes}"
            )
        y = to_labels(target, z.shape[0], z.shape[1])
        if self.from_probs:
            with np.errstate(divide="ignore"):
                lp = np.log(z)
        else:
            lp = np.asarray(log_softmax(z, axis=1))
        p = np.exp(lp)
        rows = np.arange(y.size)
        lt = lp[rows, y]
        self.sums["n"] += y.size
        self.sums["nll"] += float(-lt.sum())
        higher = (lp > lt[:, None]).sum(axis=1)
        self.sums["top1"] += float((higher < 1).sum())
        self.sums["top5"] += float((higher < 5).sum())
        onehot_term = (1 - p[rows, y]) ** 2 - p[rows, y] ** 2
        self.sums["brier"] += float(np.sum(np.sum(p * p, axis=1) + onehot_term))
        h = np.asarray(entropy(logits=lp)) if not self.from_probs else np.asarray(entropy(probs=p))
        self.sums["entropy"] += float(h.sum())
        conf = p.max(axis=1)
        correct = (p.argmax(axis=1) == y).astype(np.float64)
        idx = np.clip(np.ceil(conf * self.fine_bins).astype(np.int64) - 1, 0, self.fine_bins - 1)
        self.hist[0] += np.bincount(idx, minlength=self.fine_bins)
        self.hist[1] += np.bincount(idx, weights=conf, minlength=self.fine_bins)
        self.hist[2] += np.bincount(idx, weights=correct, minlength=self.fine_bins)

    def merge(self, other: Evaluator) -> Evaluator:
        """Add ``other``'s state into this one (same configuration) and return ``self``."""
        if (other.n_bins, other.fine_bins) != (self.n_bins, self.fine_bins):
            raise ValueError("cannot merge evaluators with different bin settings")
        if self.n_classes is None:
            self.n_classes = other.n_classes
        elif other.n_classes not in (None, self.n_classes):
            raise ValueError(f"cannot merge {self.n_classes}-class and {other.n_classes}-class")
        for k in _SUMS:
            self.sums[k] += other.sums[k]
        self.hist += other.hist
        return self

    def state_dict(self) -> dict[str, Any]:
        """A picklable/serialisable state (NumPy arrays and numbers only)."""
        return {
            "n_classes": -1 if self.n_classes is None else self.n_classes,
            "n_bins": self.n_bins,
            "fine_bins": self.fine_bins,
            "from_probs": self.from_probs,
            "sums": np.array([self.sums[k] for k in _SUMS]),
            "hist": self.hist.copy(),
        }

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> Evaluator:
        ev = cls(
            None if state["n_classes"] < 0 else int(state["n_classes"]),
            n_bins=int(state["n_bins"]),
            fine_bins=int(state["fine_bins"]),
            from_probs=bool(state["from_probs"]),
        )
        ev.sums = dict(zip(_SUMS, (float(v) for v in state["sums"]), strict=True))
        ev.hist = np.asarray(state["hist"], dtype=np.float64).copy()
        return ev

    def all_reduce(self, group: Any = None) -> Evaluator:
        """Sum the state over a ``torch.distributed`` process group, in place.

        Every rank ends with the state of the union of all ranks' batches.
        """
        import torch
        import torch.distributed as dist

        flat = torch.from_numpy(
            np.concatenate([np.array([self.sums[k] for k in _SUMS]), self.hist.reshape(-1)]).astype(
                np.float64
            )
        )
        dist.all_reduce(flat, op=dist.ReduceOp.SUM, group=group)
        v = flat.numpy()
        self.sums = dict(zip(_SUMS, (float(x) for x in v[: len(_SUMS)]), strict=True))
        self.hist = v[len(_SUMS) :].reshape(3, self.fine_bins).copy()
        return self

    def _coarse(self, groups: list[np.ndarray], edges: np.ndarray) -> BinTable:
        cnt = np.array([self.hist[0, g].sum() for g in groups])
        sc = np.array([self.hist[1, g].sum() for g in groups])
        sa = np.array([self.hist[2, g].sum() for g in groups])
        with np.errstate(invalid="ignore", divide="ignore"):
            return BinTable(
                edges,
                cnt.astype(np.int64),
                np.where(cnt > 0, sc / np.maximum(cnt, 1), np.nan),
                np.where(cnt > 0, sa / np.maximum(cnt, 1), np.nan),
            )

    def table(self, binning: str = "equal-width") -> BinTable:
        f, b = self.fine_bins, self.n_bins
        if binning == "equal-width":
            k = f // b
            groups = [np.arange(i * k, (i + 1) * k) for i in range(b)]
            return self._coarse(groups, np.linspace(0, 1, b + 1))
        cum = np.cumsum(self.hist[0])
        total = cum[-1]
        cuts = [int(np.searchsorted(cum, total * j / b, side="left")) + 1 for j in range(1, b)]
        bounds = [0, *cuts, f]
        bounds = list(np.maximum.accumulate(np.minimum(bounds, f)))
        groups = [np.arange(bounds[i], bounds[i + 1]) for i in range(b)]
        edges = np.array([x / f for x in bounds], dtype=np.float64)
        return self._coarse(groups, edges)

    def compute(self) -> EvaluationResult:
        n = self.sums["n"]
        if n == 0:
            raise ValueError("Evaluator.compute() before any update(): no samples")
        t = self.table()
        ece = error_from_table(t, "l1")[0]
        rms = math.sqrt(max(error_from_table(t, "l2")[0], 0.0))
        mce = error_from_table(t, "max")[0]
        ece_m = error_from_table(self.table("equal-mass"), "l1")[0]
        mean_nll = self.sums["nll"] / n
        return EvaluationResult(
            n=int(n),
            n_classes=int(self.n_classes or 0),
            nll=mean_nll,
            perplexity=math.exp(mean_nll),
            accuracy=self.sums["top1"] / n,
            top5_accuracy=self.sums["top5"] / n,
            brier=self.sums["brier"] / n,
            mean_entropy=self.sums["entropy"] / n,
            ece=ece,
            rmsce=rms,
            mce=mce,
            ece_equal_mass=ece_m,
            table=t,
        )

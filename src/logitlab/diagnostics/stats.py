"""The streaming accumulator of :mod:`logitlab.diagnostics`: :class:`LogitStats`."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from logitlab._rows.native import diag_applies
from logitlab.diagnostics.findings import CONFIDENT, findings, loss_scale_advice
from logitlab.diagnostics.formats import FORMATS, softmax_verdicts
from logitlab.diagnostics.hist import LOGIT_BINS, UNIT_BINS, GradHist, LogHist, display_histograms
from logitlab.diagnostics.results import (
    BasicStats,
    Conditioning,
    DtypeRisk,
    EntropyStats,
    LogitReport,
    Saturation,
)
from logitlab.diagnostics.rows import TEMPERATURES, Workspace, row_pass
from logitlab.diagnostics.state import (
    AGREE,
    ARRAY_SUM,
    CHAN,
    FIRST,
    KEY_SUM,
    MAX,
    MIN,
    OWN,
    SAME,
    SUM,
    Merge,
    Moments,
    accumulator,
    merge_states,
    reset_states,
    state,
)

__all__ = ["LogitStats"]

_NESTED = Merge("field by field, as declared", merge_states)


def _per_format() -> dict[str, int]:
    return dict.fromkeys(FORMATS, 0)


def _unit_hist() -> np.ndarray:
    return np.zeros(len(UNIT_BINS) - 1, np.int64)


def _first_row(mask: np.ndarray, rows: np.ndarray) -> int | None:
    hit = mask.any(axis=1)
    return int(rows[np.argmax(hit)]) if hit.any() else None


@accumulator
class LogitStats:
    r"""Streaming accumulator behind :func:`diagnose`: exact counts and fixed-bin histograms.

    ``update`` takes row chunks with the class axis last; ``merge`` combines accumulators built on
    disjoint rows (threads, files, ranks) and is exact for every count and histogram (moments use
    Chan's parallel update); ``finalize`` builds the :class:`LogitReport`. Every field is state
    declared once with its default and its merge (:mod:`logitlab.diagnostics.state`), so
    ``merge`` needs no list of fields. Memory is independent of the number of rows: a few
    histograms of fixed size (about 0.6 MB) plus, during ``update``, two rows of scratch for the
    native kernel (float16/float32 input) or work buffers of about four times the chunk's size
    in float64 (the NumPy path).

    Per row, with :math:`p = \operatorname{softmax}(z)`, target :math:`t` and
    :math:`\ell = -\log p_t`:

    .. math::

        \kappa_{\text{ratio}} = \frac{\max_i |z_i|}{\min_i |z_i|}, \qquad
        \kappa_{\operatorname{lse}} = \frac{\sum_i p_i |z_i|}{|\operatorname{lse}(z)|}, \qquad
        \kappa_{\ell} = \frac{\sum_i |z_i|\,|p_i - \delta_{it}|}{\ell} .

    Args:
        n_classes: size of the class axis.
        dtype: name of the input dtype (for the report).
        shape: the full input shape (for the report).
        axis: the class axis of the original input (for the report).

    Example:
        >>> import numpy as np
        >>> st = LogitStats(3)
        >>> st.update(np.array([[0.0, 1.0, 2.0]], dtype=np.float32))
        >>> st.update(np.array([[20.0, 0.0, 0.0]], dtype=np.float32))
        >>> rep = st.finalize()
        >>> rep.n_rows, rep.dtypes["float16"].naive_overflow_rows
        (2, 1)
    """

    # Every field is state, declared once with its default and its merge (see state.py): merge()
    # is generic over these declarations and the class has slots, so an undeclared attribute
    # cannot be added.
    # -- configuration (merged accumulators must agree) and report metadata (keep one's own)
    V: int = state(1, SAME)  # classes
    has_target: bool | None = state(None, AGREE)  # None until the first chunk
    dtype: str = state("float32", OWN)
    shape: tuple[int, ...] | None = state(None, OWN)
    axis: int = state(-1, OWN)
    # -- rows and non-finite entries
    rows: int = state(0, SUM)
    ok_rows: int = state(0, SUM)  # rows without NaN or +-inf: all the statistics below
    nan: int = state(0, SUM)
    posinf: int = state(0, SUM)
    neginf: int = state(0, SUM)
    bad_rows: int = state(0, SUM)
    first_nan_row: int | None = state(None, FIRST)  # row index among all rows (row_offset)
    first_posinf_row: int | None = state(None, FIRST)
    first_neginf_row: int | None = state(None, FIRST)
    # -- values
    vmin: float = state(math.inf, MIN)
    vmax: float = state(-math.inf, MAX)
    min_abs: float = state(math.inf, MIN)
    max_abs: float = state(0.0, MAX)
    moments: Moments = state(Moments, CHAN)  # of every entry of the finite rows
    spread_sum: float = state(0.0, SUM)
    spread_min: float = state(math.inf, MIN)
    spread_max: float = state(-math.inf, MAX)
    h_logit: np.ndarray = state(lambda: np.zeros(LOGIT_BINS, np.int64), ARRAY_SUM)
    # -- per format: rows whose naive softmax overflows / gives 0/0, whose stable softmax rounds
    #    a probability to 0, whose 1 - p_max is below eps
    naive_over: dict[str, int] = state(_per_format, KEY_SUM)
    naive_nan: dict[str, int] = state(_per_format, KEY_SUM)
    stable_zero: dict[str, int] = state(_per_format, KEY_SUM)
    saturated: dict[str, int] = state(_per_format, KEY_SUM)
    # -- confidence and targets (the argmax without targets)
    top_sum: float = state(0.0, SUM)
    top_099: int = state(0, SUM)
    h_top: np.ndarray = state(_unit_hist, ARRAY_SUM)
    wrong: int = state(0, SUM)
    conf_wrong: int = state(0, SUM)
    sat_wrong: int = state(0, SUM)
    loss_sum: float = state(0.0, SUM)
    grad: GradHist = state(GradHist, _NESTED)  # every entry of softmax - onehot(target)
    # -- entropy at T = 1 and at the temperatures of rows.TEMPERATURES
    h_sum: float = state(0.0, SUM)
    h_min: float = state(math.inf, MIN)
    h_max: float = state(-math.inf, MAX)
    h_ent: np.ndarray = state(_unit_hist, ARRAY_SUM)
    t_h: dict[float, float] = state(lambda: dict.fromkeys(TEMPERATURES, 0.0), KEY_SUM)
    t_top: dict[float, float] = state(lambda: dict.fromkeys(TEMPERATURES, 0.0), KEY_SUM)
    # -- condition numbers per row
    k_ratio: LogHist = state(LogHist, _NESTED)
    k_lse: LogHist = state(LogHist, _NESTED)
    k_loss: LogHist = state(LogHist, _NESTED)
    # -- scratch, not state: work arrays reused from chunk to chunk
    _work: Workspace = state(Workspace, OWN)

    def __init__(
        self,
        n_classes: int,
        dtype: str = "float32",
        shape: tuple[int, ...] | None = None,
        axis: int = -1,
    ) -> None:
        if n_classes < 1:
            raise ValueError(f"the class axis must have at least one entry, got {n_classes}")
        reset_states(self)
        self.V = int(n_classes)
        self.dtype = str(dtype)
        self.shape = shape
        self.axis = axis

    # ----------------------------------------------------------------- update

    def update(self, chunk: Any, target: Any = None, *, row_offset: int | None = None) -> None:
        """Add rows: ``chunk`` has the class axis last (any leading shape), ``target`` the
        matching leading shape of integer class indices (or ``None``: use the argmax).
        ``row_offset`` is the index of the chunk's first row among all rows, which the report's
        ``first_*_row`` count from (default: the rows this accumulator has seen, right for
        chunks added in order; accumulators to be merged need their own offsets).

        Raises:
            ValueError: wrong class count, target shape or out-of-range targets; mixing chunks
                with and without targets; a negative ``row_offset``.
            TypeError: non-numeric chunk or non-integer targets.
        """
        x = np.asarray(chunk)
        if x.dtype.kind not in "biuf":
            raise TypeError(f"logits must be real numbers, got dtype {x.dtype}")
        if x.ndim == 0:
            raise ValueError("logits must have at least one dimension (a class axis), got a scalar")
        if x.shape[-1] != self.V:
            raise ValueError(f"chunk has {x.shape[-1]} classes, expected {self.V}")
        lead = x.shape[:-1]
        x = x.reshape(-1, self.V)
        has_t = target is not None
        if self.has_target is None:
            self.has_target = has_t
        elif self.has_target != has_t:
            raise ValueError("either every chunk has targets or none has")
        t: np.ndarray | None = None
        if target is not None:
            t = np.asarray(target)
            if t.shape != lead:
                raise ValueError(f"target shape {t.shape} does not match the logits' rows {lead}")
            if t.dtype.kind == "f":
                if not np.all(np.isfinite(t)) or np.any(t != np.round(t)):
                    raise TypeError("target must hold integer class indices")
            elif t.dtype.kind not in "iub":
                raise TypeError(f"target must hold integer class indices, got dtype {t.dtype}")
            t = t.reshape(-1).astype(np.int64)
            if t.size and (t.min() < 0 or t.max() >= self.V):
                raise ValueError(
                    f"target values must be in [0, {self.V}), got {t.min()}..{t.max()}"
                )
        if row_offset is not None and int(row_offset) < 0:
            raise ValueError(f"row_offset must be a row index >= 0, got {row_offset}")
        if x.shape[0] == 0:
            return
        row0 = self.rows if row_offset is None else int(row_offset)
        self.rows += x.shape[0]
        work = np.float64 if x.dtype.kind != "f" or x.dtype.itemsize > 4 else np.float32
        if x.dtype == work or diag_applies(x):
            xw = x  # the native kernel widens float16 rows in cache: no chunk-sized copy
        else:
            xw = self._work.get("x", x.shape, work)
            xw[...] = x  # exact widening (float16 -> float32, int -> float64)
        with np.errstate(all="ignore"):
            self._update_rows(xw, t, row0)

    def _count_bad_rows(self, xb: np.ndarray, rows: np.ndarray) -> None:
        # rows left out of every statistic (their indices: rows): their NaN / +inf / -inf
        # entries are counted exactly, and the first row holding each kind is kept
        self.bad_rows += xb.shape[0]
        nan, pinf, ninf = np.isnan(xb), xb == np.inf, xb == -np.inf
        self.nan += int(np.count_nonzero(nan))
        self.posinf += int(np.count_nonzero(pinf))
        self.neginf += int(np.count_nonzero(ninf))
        self.first_nan_row = FIRST.fn(self.first_nan_row, _first_row(nan, rows))
        self.first_posinf_row = FIRST.fn(self.first_posinf_row, _first_row(pinf, rows))
        self.first_neginf_row = FIRST.fn(self.first_neginf_row, _first_row(ninf, rows))

    def _update_rows(self, x: np.ndarray, t: np.ndarray | None, row0: int) -> None:
        rp = row_pass(x, t, self.h_logit, self._work)
        if not rp.ok.all():
            self._count_bad_rows(x[~rp.ok], row0 + np.flatnonzero(~rp.ok))
        self.grad.add_exponents(rp.exp_counts, rp.exp_bias)
        if rp.x.shape[0]:
            self._accumulate(rp.x, rp.t, rp.k, rp.q)

    def _accumulate(
        self, x: np.ndarray, t: np.ndarray | None, k: np.ndarray, q: np.ndarray
    ) -> None:
        """Everything after the entry passes: O(rows) work on the per-row sums ``q``."""
        r, V = x.shape
        ar = np.arange(r)
        self.ok_rows += r
        a64, b64, s, edw = q["max"], q["min"], q["sum_w"], q["ent_w"]
        log1ps = np.log1p(s)
        lse = a64 + log1ps
        gap = s / (1 + s)  # 1 - p_max, exact
        ptop = 1 / (1 + s)
        ent = log1ps + edw / (1 + s)
        for temp, (s_name, h_name) in TEMPERATURES.items():
            st, sdw = q[s_name], q[h_name]
            self.t_h[temp] += float(np.sum(np.log1p(st) + sdw / (1 + st)))
            self.t_top[temp] += float(np.sum(1 / (1 + st)))

        # Moments: rows' means and standard deviations, merged with Chan's update.
        self.moments = self.moments.merge(Moments.of_rows(q["mean"], q["std"], V))

        self.vmin = min(self.vmin, float(b64.min()))
        self.vmax = max(self.vmax, float(a64.max()))
        maxabs = np.maximum(np.abs(a64), np.abs(b64))
        self.max_abs = max(self.max_abs, float(maxabs.max()))
        spread = a64 - b64
        self.spread_sum += float(spread.sum())
        self.spread_min = min(self.spread_min, float(spread.min()))
        self.spread_max = max(self.spread_max, float(spread.max()))

        # Per-dtype overflow/underflow (analytic with an exact band fallback) and saturation.
        for name, f in FORMATS.items():
            over, nan_sure, zero = softmax_verdicts(name, x, a64, b64, lse, maxabs)
            self.naive_over[name] += over
            self.naive_nan[name] += nan_sure
            self.stable_zero[name] += zero
            self.saturated[name] += int(np.count_nonzero(gap < f.eps))

        # Targets (argmax when none): loss, wrong rows, gradient of CE.
        tt = k if t is None else t
        xt = x[ar, tt].astype(np.float64)
        is_top = tt == k
        d_t = a64 - xt
        loss = d_t + log1ps
        p_t = np.where(is_top, ptop, np.exp(-d_t) / (1 + s))
        g_t = np.where(is_top, gap, 1 - p_t)  # |p_t - 1|, exact for t = argmax
        self.loss_sum += float(loss.sum())
        self.top_sum += float(ptop.sum())
        self.top_099 += int(np.count_nonzero(ptop > CONFIDENT))
        if t is not None:
            wrong = ~is_top & (x[ar, t] != x[ar, k])  # a tie with the max is not wrong
            self.wrong += int(wrong.sum())
            self.conf_wrong += int(np.count_nonzero(wrong & (ptop > CONFIDENT)))
            self.sat_wrong += int(np.count_nonzero(wrong & (gap < FORMATS["float16"].eps)))

        # the target entry of the gradient is p_t - 1, not the p_t counted with the others
        wd = np.float32 if x.dtype.itemsize <= 4 else np.float64
        self.grad.move(q["p_target"], -1, wd)
        self.grad.move(g_t, +1, wd)
        self.grad.max = max(self.grad.max, float(g_t.max()))

        # Conditioning
        minabs = q["min_abs"]
        spz = (q["abs_z_w"] + np.abs(a64)) / (1 + s)
        self.min_abs = min(self.min_abs, float(minabs.min()))
        k_ratio = np.where(minabs > 0, maxabs / np.where(minabs > 0, minabs, 1), np.inf)
        k_lse = np.where(spz == 0, 0.0, spz / np.abs(lse))
        abs_xt = np.abs(xt)
        num_loss = np.maximum(spz - p_t * abs_xt, 0) + g_t * abs_xt
        k_loss = np.where(num_loss == 0, 0.0, num_loss / loss)
        self.k_ratio.add(k_ratio)
        self.k_lse.add(k_lse)
        self.k_loss.add(k_loss)

        logv = math.log(V) if V > 1 else 1.0
        self.h_sum += float(ent.sum())
        self.h_min = min(self.h_min, float(ent.min()))
        self.h_max = max(self.h_max, float(ent.max()))
        self.h_ent += np.histogram(np.clip(ent / logv, 0, 1), bins=UNIT_BINS)[0]
        self.h_top += np.histogram(ptop, bins=UNIT_BINS)[0]

    # ----------------------------------------------------------------- merge

    def merge(self, other: LogitStats) -> LogitStats:
        """Add the rows of ``other`` (built with the same number of classes) into ``self``:
        every field merges as it is declared (exact for counts and histograms; Chan's update for
        the moments).

        Raises:
            ValueError: a different number of classes, or targets in one and not the other
                (``self`` is unchanged then).

        Example:
            >>> import numpy as np
            >>> x = np.random.default_rng(0).normal(size=(6, 4))
            >>> a, b = LogitStats(4), LogitStats(4)
            >>> a.update(x[:2]); b.update(x[2:])
            >>> round(a.merge(b).finalize().basic.mean, 12) == round(float(x.mean()), 12)
            True
        """
        return merge_states(self, other)

    # ----------------------------------------------------------------- finalize

    def finalize(self) -> LogitReport:
        """Build the :class:`LogitReport` (the accumulator stays usable)."""
        n = self.ok_rows
        V = self.V
        nan = math.nan

        def frac(c: int | float) -> float:
            return float(c) / n if n else nan

        basic = BasicStats(
            nan_count=self.nan,
            posinf_count=self.posinf,
            neginf_count=self.neginf,
            nonfinite_rows=self.bad_rows,
            finite_rows=n,
            min=self.vmin if n else nan,
            max=self.vmax if n else nan,
            mean=self.moments.mean if n else nan,
            std=self.moments.std,
            max_abs=self.max_abs if n else nan,
            min_abs=self.min_abs if n else nan,
            spread_mean=self.spread_sum / n if n else nan,
            spread_min=self.spread_min if n else nan,
            spread_max=self.spread_max if n else nan,
            first_nan_row=self.first_nan_row,
            first_posinf_row=self.first_posinf_row,
            first_neginf_row=self.first_neginf_row,
        )
        dtypes = {}
        for name, f in FORMATS.items():
            dtypes[name] = DtypeRisk(
                dtype=name,
                exp_limit=f.exp_limit,
                margin=f.exp_limit - self.max_abs if n else nan,
                max_representable=bool(self.max_abs <= f.max),
                naive_overflow_rows=self.naive_over[name],
                naive_overflow_fraction=frac(self.naive_over[name]),
                naive_nan_rows=self.naive_nan[name],
                stable_zero_rows=self.stable_zero[name],
                stable_zero_fraction=frac(self.stable_zero[name]),
                eps=f.eps,
                saturated_rows=self.saturated[name],
                saturated_fraction=frac(self.saturated[name]),
            )
        has_t = bool(self.has_target)
        sat = Saturation(
            mean_top_prob=frac(self.top_sum),
            rows_top_above_099=self.top_099,
            has_target=has_t,
            wrong_rows=self.wrong if has_t else None,
            confident_wrong_rows=self.conf_wrong if has_t else None,
            saturated_wrong_rows=self.sat_wrong if has_t else None,
            mean_loss=frac(self.loss_sum),
        )
        mp = loss_scale_advice(self.grad, n * V, has_t)
        cond = Conditioning(
            ratio_global=(self.max_abs / self.min_abs if self.min_abs > 0 else math.inf)
            if n
            else nan,
            ratio_median=self.k_ratio.median(),
            ratio_max=self.k_ratio.maximum(n),
            ratio_inf_rows=self.k_ratio.inf,
            lse_median=self.k_lse.median(),
            lse_max=self.k_lse.maximum(n),
            loss_median=self.k_loss.median(),
            loss_max=self.k_loss.maximum(n),
            loss_inf_rows=self.k_loss.inf,
        )
        logv = math.log(V) if V > 1 else nan
        ln2 = math.log(2)
        temps = {
            "0.5": {
                "mean_entropy_nats": frac(self.t_h[0.5]),
                "mean_top_prob": frac(self.t_top[0.5]),
            },
            "1": {"mean_entropy_nats": frac(self.h_sum), "mean_top_prob": frac(self.top_sum)},
            "2": {"mean_entropy_nats": frac(self.t_h[2.0]), "mean_top_prob": frac(self.t_top[2.0])},
        }
        hmean = frac(self.h_sum)
        hmin = self.h_min if n else nan
        hmax = self.h_max if n else nan
        ent = EntropyStats(
            mean_nats=hmean,
            min_nats=hmin,
            max_nats=hmax,
            mean_bits=hmean / ln2,
            min_bits=hmin / ln2,
            max_bits=hmax / ln2,
            normalized_mean=hmean / logv if V > 1 else 0.0,
            normalized_min=hmin / logv if V > 1 else 0.0,
            normalized_max=hmax / logv if V > 1 else 0.0,
            temperature=temps,
        )
        shape = self.shape if self.shape is not None else (self.rows, V)
        rep = LogitReport(
            shape=tuple(int(s) for s in shape),
            dtype=self.dtype,
            axis=self.axis,
            n_rows=self.rows,
            n_classes=V,
            basic=basic,
            dtypes=dtypes,
            saturation=sat,
            mixed_precision=mp,
            conditioning=cond,
            entropy=ent,
            findings=[],
            histograms=display_histograms(
                self.h_logit, self.vmin, self.vmax, self.h_top, self.h_ent, self.grad
            ),
        )
        rep.findings = findings(rep)
        return rep

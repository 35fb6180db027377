"""The streaming accumulator of :mod:`logitlab.diagnostics`: :class:`LogitStats`."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from logitlab.diagnostics.findings import _CONF, _findings
from logitlab.diagnostics.formats import FORMATS, Format, _exp_in, round_to_format, simulate_softmax
from logitlab.diagnostics.results import (
    BasicStats,
    Conditioning,
    DtypeRisk,
    EntropyStats,
    LogitReport,
    MixedPrecision,
    Saturation,
)
from logitlab.diagnostics.rows import TEMPERATURES, Workspace, native_lib, row_pass

__all__ = ["LogitStats"]

_LOG_BINS = np.linspace(-3.0, 21.0, 241)  # log10 of condition numbers: 0.1-decade bins
_UNIT_BINS = np.linspace(0.0, 1.0, 51)
_EXP_OFFSET = 1100  # gradient exponent histogram index = floor(log2|g|) + offset
_EXP_BINS = 1104


def _hist_log10(v: np.ndarray) -> np.ndarray:
    # Counts of log10(v) in _LOG_BINS with under/overflow folded into the end bins; inf and 0
    # are counted separately by the caller.
    with np.errstate(all="ignore"):
        lv = np.clip(np.log10(v[np.isfinite(v) & (v > 0)]), _LOG_BINS[0], _LOG_BINS[-1])
    return np.histogram(lv, bins=_LOG_BINS)[0]


def _median_from_hist(counts: np.ndarray, edges: np.ndarray, extra_high: int = 0) -> float:
    # Median at bin resolution (bin midpoint) of log10 values; extra_high counts lie above all bins.
    n = int(counts.sum()) + extra_high
    if n == 0:
        return math.nan
    c = np.cumsum(counts)
    i = int(np.searchsorted(c, (n + 1) / 2.0))
    if i >= len(counts):
        return math.inf
    return float(10 ** ((edges[i] + edges[i + 1]) / 2))


class LogitStats:
    r"""Streaming accumulator behind :func:`diagnose`: exact counts and fixed-bin histograms.

    ``update`` takes row chunks with the class axis last; ``merge`` combines accumulators built on
    disjoint rows (threads, files, ranks) and is exact for every count and histogram (moments use
    Chan's parallel update); ``finalize`` builds the :class:`LogitReport`. Memory is independent
    of the number of rows: a few histograms of fixed size (about 0.6 MB) plus, during ``update``,
    two rows of scratch for the native kernel (float16/float32 input) or four work-dtype
    buffers of the chunk's size (the NumPy path).

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

    def __init__(
        self,
        n_classes: int,
        dtype: str = "float32",
        shape: tuple[int, ...] | None = None,
        axis: int = -1,
    ) -> None:
        if n_classes < 1:
            raise ValueError(f"the class axis must have at least one entry, got {n_classes}")
        self.V = int(n_classes)
        self.dtype = str(dtype)
        self.shape = shape
        self.axis = axis
        self.has_target: bool | None = None
        self.rows = 0
        self.ok_rows = 0
        self.nan = self.posinf = self.neginf = self.bad_rows = 0
        self.vmin, self.vmax = math.inf, -math.inf
        self.min_abs, self.max_abs = math.inf, 0.0
        self.mean, self.m2 = 0.0, 0.0  # Chan/Welford over all finite-row entries
        self.spread_sum, self.spread_min, self.spread_max = 0.0, math.inf, -math.inf
        self.naive_over = dict.fromkeys(FORMATS, 0)
        self.naive_nan = dict.fromkeys(FORMATS, 0)
        self.stable_zero = dict.fromkeys(FORMATS, 0)
        self.saturated = dict.fromkeys(FORMATS, 0)
        self.top_sum = 0.0
        self.top_099 = 0
        self.wrong = self.conf_wrong = self.sat_wrong = 0
        self.loss_sum = 0.0
        self.grad_hist = np.zeros(_EXP_BINS, dtype=np.int64)
        self.grad_zero = 0  # exact zeros (and values below the work dtype's normal range)
        self.grad_max = 0.0
        self.h_sum, self.h_min, self.h_max = 0.0, math.inf, -math.inf
        self.t_h = dict.fromkeys(TEMPERATURES, 0.0)
        self.t_top = dict.fromkeys(TEMPERATURES, 0.0)
        nb = len(_LOG_BINS) - 1
        self.k_ratio, self.k_lse, self.k_loss = (np.zeros(nb, np.int64) for _ in range(3))
        self.k_ratio_max = self.k_lse_max = self.k_loss_max = 0.0
        self.k_ratio_inf = self.k_loss_inf = self.k_lse_inf = 0
        self.h_top = np.zeros(len(_UNIT_BINS) - 1, np.int64)
        self.h_ent = np.zeros(len(_UNIT_BINS) - 1, np.int64)
        self.h_logit = np.zeros(1 << 16, np.int64)  # by the top 16 bits of the float32 pattern
        self._work = Workspace()

    # ----------------------------------------------------------------- update

    def update(self, chunk: Any, target: Any = None) -> None:
        """Add rows: ``chunk`` has the class axis last (any leading shape), ``target`` the
        matching leading shape of integer class indices (or ``None``: use the argmax).

        Raises:
            ValueError: wrong class count, target shape or out-of-range targets; mixing chunks
                with and without targets.
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
        if x.shape[0] == 0:
            return
        self.rows += x.shape[0]
        work = np.float64 if x.dtype.kind != "f" or x.dtype.itemsize > 4 else np.float32
        if x.dtype == work or native_lib(x) is not None:
            xw = x  # the native kernel widens float16 rows in cache: no chunk-sized copy
        else:
            xw = self._work.get("x", x.shape, work)
            xw[...] = x  # exact widening (float16 -> float32, int -> float64)
        with np.errstate(all="ignore"):
            self._update_rows(xw, t)

    def _count_bad_rows(self, xb: np.ndarray) -> None:
        # rows left out of every statistic: their NaN / +inf / -inf entries are counted exactly
        self.nan += int(np.count_nonzero(np.isnan(xb)))
        self.posinf += int(np.count_nonzero(xb == np.inf))
        self.neginf += int(np.count_nonzero(xb == -np.inf))
        self.bad_rows += xb.shape[0]

    def _update_rows(self, x: np.ndarray, t: np.ndarray | None) -> None:
        rp = row_pass(x, t, self.h_logit, self._work)
        if not rp.ok.all():
            self._count_bad_rows(x[~rp.ok])
        self._add_exp_hist(rp.exp_counts, rp.exp_bias)
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
        sum_e, sum_e2 = q["sum_d"], q["sum_d2"]
        log1ps = np.log1p(s)
        lse = a64 + log1ps
        gap = s / (1 + s)  # 1 - p_max, exact
        ptop = 1 / (1 + s)
        ent = log1ps + edw / (1 + s)
        for temp, (s_name, h_name) in TEMPERATURES.items():
            st, sdw = q[s_name], q[h_name]
            self.t_h[temp] += float(np.sum(np.log1p(st) + sdw / (1 + st)))
            self.t_top[temp] += float(np.sum(1 / (1 + st)))

        # Moments: row means/M2 from e (centred at the row max), merged with Chan's formula.
        row_mean = a64 + sum_e / V
        row_m2 = np.maximum(sum_e2 - sum_e * sum_e / V, 0.0)
        n_new = r * V
        c_mean = float(row_mean.mean())
        c_m2 = float(row_m2.sum() + V * np.sum((row_mean - c_mean) ** 2))
        n_old = (self.ok_rows - r) * V
        tot = n_old + n_new
        delta = c_mean - self.mean
        self.mean += delta * n_new / tot
        self.m2 += c_m2 + delta * delta * n_old * n_new / tot

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
            self._dtype_rows(name, f, x, a64, b64, lse, maxabs)
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
        self.top_099 += int(np.count_nonzero(ptop > _CONF))
        if t is not None:
            wrong = ~is_top & (x[ar, t] != x[ar, k])  # a tie with the max is not wrong
            self.wrong += int(wrong.sum())
            self.conf_wrong += int(np.count_nonzero(wrong & (ptop > _CONF)))
            self.sat_wrong += int(np.count_nonzero(wrong & (gap < FORMATS["float16"].eps)))

        # the target entry of the gradient is p_t - 1, not the p_t counted with the others
        wd = np.float32 if x.dtype.itemsize <= 4 else np.float64
        self._exp_move(q["p_target"], -1, wd)
        self._exp_move(g_t, +1, wd)
        self.grad_max = max(self.grad_max, float(g_t.max()))

        # Conditioning
        minabs = q["min_abs"]
        spz = (q["abs_z_w"] + np.abs(a64)) / (1 + s)
        self.min_abs = min(self.min_abs, float(minabs.min()))
        k_ratio = np.where(minabs > 0, maxabs / np.where(minabs > 0, minabs, 1), np.inf)
        k_lse = np.where(spz == 0, 0.0, spz / np.abs(lse))
        abs_xt = np.abs(xt)
        num_loss = np.maximum(spz - p_t * abs_xt, 0) + g_t * abs_xt
        k_loss = np.where(num_loss == 0, 0.0, num_loss / loss)
        for name, v in (("ratio", k_ratio), ("lse", k_lse), ("loss", k_loss)):
            hist = getattr(self, f"k_{name}")
            hist += _hist_log10(v)
            fin = np.isfinite(v)
            setattr(self, f"k_{name}_inf", getattr(self, f"k_{name}_inf") + int((~fin).sum()))
            if fin.any():
                cur = getattr(self, f"k_{name}_max")
                setattr(self, f"k_{name}_max", max(cur, float(v[fin].max())))

        logv = math.log(V) if V > 1 else 1.0
        self.h_sum += float(ent.sum())
        self.h_min = min(self.h_min, float(ent.min()))
        self.h_max = max(self.h_max, float(ent.max()))
        self.h_ent += np.histogram(np.clip(ent / logv, 0, 1), bins=_UNIT_BINS)[0]
        self.h_top += np.histogram(ptop, bins=_UNIT_BINS)[0]

    def _add_exp_hist(self, h: np.ndarray, bias: int) -> None:
        # exponent field 0 (zero or below the work dtype's normal range) counts as zero for
        # float16 purposes
        nb = h.size
        self.grad_zero += int(h[0])
        idx = np.arange(1, nb) - bias + _EXP_OFFSET  # floor(log2 p) + offset
        keep = (idx >= 0) & (idx < _EXP_BINS)
        self.grad_hist[idx[keep]] += h[1:][keep]

    def _exp_move(self, v: np.ndarray, sign: int, wd: Any) -> None:
        vw = v.astype(wd)
        fi = np.finfo(wd)
        small = vw < fi.tiny  # zero or subnormal in the work dtype: the "zero" bucket
        self.grad_zero += sign * int(small.sum())
        _, ex = np.frexp(vw[~small].astype(np.float64))
        np.add.at(self.grad_hist, ex - 1 + _EXP_OFFSET, sign)

    def _dtype_rows(
        self,
        name: str,
        f: Format,
        x: np.ndarray,
        a: np.ndarray,
        b: np.ndarray,
        lse: np.ndarray,
        maxabs: np.ndarray,
    ) -> None:
        u = f.eps / 2  # unit roundoff
        # Naive softmax. exp of the rounded max decides "some term is inf" and "all terms are 0"
        # exactly (rounding is monotone, so max(round(x)) = round(max(x))).
        e_max = _exp_in(round_to_format(a, name), name)
        over_sure = np.isinf(e_max)
        nan_sure = e_max == 0
        # Otherwise the sum is exp(lse) times a factor within exp(+-delta): rounding x to D moves
        # each term by at most exp(u |x|), exp and the float32 sum add a few u; 1e-4 (relative to
        # lse) covers the error of lse itself in the work dtype. Rows inside the band are redone
        # in real D arithmetic.
        delta = 1.01 * u * maxabs + 8 * u + 1e-4 * (1 + np.abs(lse))
        if name == "float64" or x.dtype in (np.float16, np.float32) and name == "float32":
            delta = 8 * u + 1e-5 * (1 + np.abs(lse))  # x is exact in D: no input rounding
        band = ~over_sure & ~nan_sure & (np.abs(lse - f.overflow_log) <= delta)
        over = over_sure | (~nan_sure & (lse - delta > f.overflow_log))
        # Stable softmax: the smallest probability is exp(b - lse); it rounds to 0 below
        # min_subnormal / 2. Outside +-(2 + delta) nats of ln(min_subnormal) the rounding of the
        # subnormal exp and of the division cannot change the verdict; inside, recompute.
        z = b - lse
        thr = math.log(f.min_subnormal)
        delta2 = 2.0 + 1.01 * u * (np.abs(a) + np.abs(b)) + 1e-4 * (1 + np.abs(z))
        zband = np.abs(z - thr) <= delta2
        zero = ~zband & (z < thr)
        need = band | zband
        if need.any():
            sim = simulate_softmax(x[need], name)  # float16 rows are widened exactly
            over = over.copy()
            over[need] = np.where(band[need], sim["naive_overflow"], over[need])
            zero = zero.copy()
            zero[need] = np.where(zband[need], sim["stable_zero"], zero[need])
        self.naive_over[name] += int(np.count_nonzero(over))
        self.naive_nan[name] += int(np.count_nonzero(nan_sure))
        self.stable_zero[name] += int(np.count_nonzero(zero))

    # ----------------------------------------------------------------- merge

    def merge(self, other: LogitStats) -> LogitStats:
        """Add the rows of ``other`` (built with the same number of classes) into ``self``.

        Example:
            >>> import numpy as np
            >>> x = np.random.default_rng(0).normal(size=(6, 4))
            >>> a, b = LogitStats(4), LogitStats(4)
            >>> a.update(x[:2]); b.update(x[2:])
            >>> round(a.merge(b).finalize().basic.mean, 12) == round(float(x.mean()), 12)
            True
        """
        if other.V != self.V:
            raise ValueError(f"cannot merge stats over {other.V} and {self.V} classes")
        if self.has_target is None:
            self.has_target = other.has_target
        elif other.has_target is not None and other.has_target != self.has_target:
            raise ValueError("cannot merge stats with and without targets")
        n1, n2 = self.ok_rows * self.V, other.ok_rows * self.V
        if n2:
            tot = n1 + n2
            delta = other.mean - self.mean
            self.mean += delta * n2 / tot
            self.m2 += other.m2 + delta * delta * n1 * n2 / tot
        for name in ("rows", "ok_rows", "nan", "posinf", "neginf", "bad_rows", "top_099"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for name in ("wrong", "conf_wrong", "sat_wrong", "grad_zero"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for name in ("loss_sum", "top_sum", "h_sum", "spread_sum"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for name in ("k_ratio_inf", "k_lse_inf", "k_loss_inf"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for name in ("vmin", "min_abs", "spread_min", "h_min"):
            setattr(self, name, min(getattr(self, name), getattr(other, name)))
        for name in ("vmax", "max_abs", "spread_max", "h_max", "grad_max"):
            setattr(self, name, max(getattr(self, name), getattr(other, name)))
        for name in ("k_ratio_max", "k_lse_max", "k_loss_max"):
            setattr(self, name, max(getattr(self, name), getattr(other, name)))
        for name in ("grad_hist", "k_ratio", "k_lse", "k_loss", "h_top", "h_ent", "h_logit"):
            getattr(self, name)[...] += getattr(other, name)
        for dct in ("naive_over", "naive_nan", "stable_zero", "saturated", "t_h", "t_top"):
            mine, theirs = getattr(self, dct), getattr(other, dct)
            for key in mine:
                mine[key] += theirs[key]
        return self

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
            mean=self.mean if n else nan,
            std=math.sqrt(self.m2 / (n * V)) if n else nan,
            max_abs=self.max_abs if n else nan,
            min_abs=self.min_abs if n else nan,
            spread_mean=self.spread_sum / n if n else nan,
            spread_min=self.spread_min if n else nan,
            spread_max=self.spread_max if n else nan,
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
        mp = self._mixed_precision(has_t)
        cond = Conditioning(
            ratio_global=(self.max_abs / self.min_abs if self.min_abs > 0 else math.inf)
            if n
            else nan,
            ratio_median=_median_from_hist(self.k_ratio, _LOG_BINS, self.k_ratio_inf),
            ratio_max=math.inf if self.k_ratio_inf else (self.k_ratio_max if n else nan),
            ratio_inf_rows=self.k_ratio_inf,
            lse_median=_median_from_hist(self.k_lse, _LOG_BINS, self.k_lse_inf),
            lse_max=math.inf if self.k_lse_inf else (self.k_lse_max if n else nan),
            loss_median=_median_from_hist(self.k_loss, _LOG_BINS, self.k_loss_inf),
            loss_max=math.inf if self.k_loss_inf else (self.k_loss_max if n else nan),
            loss_inf_rows=self.k_loss_inf,
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
            histograms=self._histograms(),
        )
        rep.findings = _findings(rep)
        return rep

    def _grad_counts(self, k: int) -> tuple[int, int, int]:
        """Entries that are zero, subnormal and (surely) overflowing in float16 after scale 2^k."""
        f16 = FORMATS["float16"]
        # |g| 2^k < 2^-25 <=> floor(log2|g|) < -25 - k: rounds to 0 (2^-25 itself ties to 0 too,
        # counted as subnormal here); < 2^-14 <=> floor < -14 - k: subnormal.
        e = np.arange(_EXP_BINS) - _EXP_OFFSET
        zero = self.grad_zero + int(self.grad_hist[e < -25 - k].sum())
        sub = int(self.grad_hist[(e >= -25 - k) & (e < f16.emin - k)].sum())
        # Overflow: exactly none if max|g| 2^k is below the boundary; else the bins surely above it.
        if self.grad_max * 2.0**k < math.exp(f16.overflow_log):
            over = 0
        else:
            over = max(1, int(self.grad_hist[e >= 16 - k].sum()))
        return zero, sub, over

    def _mixed_precision(self, has_t: bool) -> MixedPrecision:
        ng = self.ok_rows * self.V
        src = "target" if has_t else "argmax"
        if ng == 0:
            nan = math.nan
            return MixedPrecision(src, 0, nan, nan, nan, nan, 1.0, nan, nan, nan, [])
        f16 = FORMATS["float16"]
        z0, s0, o0 = self._grad_counts(0)
        nonzero_true = ng - self.grad_zero  # gradients that are not 0 in the work dtype
        # Largest k keeping the largest gradient finite (with the exact max).
        if self.grad_max > 0:
            k_max = int(math.floor(math.log2(f16.max / self.grad_max)))
            while self.grad_max * 2.0**k_max > f16.max:
                k_max -= 1
        else:
            k_max = 24
        k_max = max(0, min(k_max, 24))
        # Smallest k leaving at most 1% of the nonzero gradients below the normal range.
        k_need = None
        for k in range(0, 64):
            zk, sk, _ = self._grad_counts(k)
            if zk + sk - self.grad_zero <= 0.01 * nonzero_true:
                k_need = k
                break
        k = k_max if k_need is None else min(k_need, k_max)
        zk, sk, ok_ = self._grad_counts(k)
        why = [
            f"gradient of cross-entropy w.r.t. the logits, softmax - onehot({src}), per row "
            f"(sum reduction): {ng} entries, max |g| = {self.grad_max:.4g}",
            f"in float16 at scale 1: {z0 / ng:.2%} round to 0 (|g| < 2^-25), "
            f"{s0 / ng:.2%} are subnormal (|g| < 2^-14), none overflow (|g| <= 1)",
            f"scale 2^{k_max} is the largest power of 2 with max|g| * S <= 65504 (finite)",
        ]
        if k_need is None:
            why.append(
                f"no scale up to 2^{k_max} lifts 99% of the nonzero gradients out of the "
                "subnormal range: the gradients span more than float16's exponent range; "
                "use bfloat16 or keep the gradient of the loss in float32"
            )
        elif k_need > k_max:
            why.append(
                f"lifting 99% of the nonzero gradients needs 2^{k_need} > 2^{k_max}: "
                f"capped at 2^{k_max} to keep the largest gradient finite"
            )
        else:
            why.append(
                f"2^{k_need} is the smallest power of 2 that leaves at most 1% of the nonzero "
                "gradients below the normal range (smaller scales keep more headroom)"
            )
        why.append(
            f"at S = 2^{k}: {zk / ng:.2%} round to 0, {sk / ng:.2%} subnormal, "
            f"{ok_ / ng:.2%} overflow; with a loss averaged over N rows the gradients are N times "
            "smaller: multiply S by N (or use dynamic loss scaling)"
        )
        return MixedPrecision(
            target_source=src,
            n_gradients=ng,
            max_abs_grad=self.grad_max,
            zero_fraction=z0 / ng,
            subnormal_fraction=s0 / ng,
            overflow_fraction=o0 / ng,
            loss_scale=float(2.0**k),
            scaled_zero_fraction=zk / ng,
            scaled_subnormal_fraction=sk / ng,
            scaled_overflow_fraction=ok_ / ng,
            reasoning=why,
        )

    def _histograms(self) -> dict[str, dict[str, list[Any]]]:
        out: dict[str, dict[str, list[Any]]] = {}
        # Logits: the exact bfloat16-resolution bins merged into 60 equal bins over [min, max]
        # by the bins' lower edges (display only; exact counts stay in the accumulator).
        keys = np.nonzero(self.h_logit)[0]
        if keys.size and self.ok_rows:
            lo = (keys.astype(np.uint32) << 16).view(np.float32).astype(np.float64)
            fin = np.isfinite(lo)
            lo, cnt = lo[fin], self.h_logit[keys][fin]
            vmin, vmax = self.vmin, self.vmax
            if vmax <= vmin:
                vmax = vmin + 1.0
            edges = np.linspace(vmin, vmax, 61)
            idx = np.clip(np.searchsorted(edges, lo, side="right") - 1, 0, 59)
            counts = np.bincount(idx, weights=cnt, minlength=60)
            out["logits"] = {"edges": edges.tolist(), "counts": counts.tolist()}
        out["top_prob"] = {"edges": _UNIT_BINS.tolist(), "counts": self.h_top.tolist()}
        out["entropy_normalized"] = {"edges": _UNIT_BINS.tolist(), "counts": self.h_ent.tolist()}
        e = np.arange(_EXP_BINS) - _EXP_OFFSET
        nz = np.nonzero(self.grad_hist)[0]
        if nz.size:
            sl = slice(int(nz.min()), int(nz.max()) + 1)
            out["grad_log2"] = {
                "edges": [float(v) for v in e[sl]] + [float(e[sl][-1] + 1)],
                "counts": self.grad_hist[sl].tolist(),
            }
        return out

r"""What a model's logits will do in float16, bfloat16, float32 and float64.

:func:`diagnose` (and :class:`LogitStats` for streaming) answers, from the logits alone:

* **overflow / underflow per dtype**: the margin of ``max|z|`` to the ``exp`` overflow limit
  (:math:`\ln 65504 \approx 11.09` for float16, :math:`\approx 88.72` for bfloat16/float32,
  :math:`\approx 709.78` for float64); the fraction of rows where a *naive* softmax
  ``exp(z) / sum(exp(z))`` gives inf/NaN, found by running exactly that computation in the dtype on
  every row that could fail (a row whose maximum is below :math:`\ln(\max) - \ln V - 2` and above
  the all-underflow limit cannot, so only the others are simulated); and the fraction of rows
  where the *stable* softmax rounds some probability to exactly 0 (the smallest probability
  :math:`e^{\min z - \operatorname{lse} z}`, computed in float64, rounded to the dtype).
* **saturation**: rows whose top probability exceeds :math:`1 - \varepsilon` of float32/float16,
  where the gradient ``softmax - onehot`` vanishes; with targets, the confidently wrong ones.
* **mixed precision**: the gradient of the per-row cross-entropy w.r.t. the logits,
  ``p - onehot(target)`` (the argmax stands in for the target when none is given), cast to
  float16: the fraction that is zero or subnormal, that would overflow, and a static loss scale.
* **conditioning**: the course notes' ratio :math:`\kappa = \max|z| / \min|z|`, and the relative
  condition numbers of log-sum-exp, :math:`\kappa_{lse} = \sum_i p_i |z_i| / |\operatorname{lse}|`
  (Blanchard, Higham & Higham 2021) and of the loss, :math:`\sum_i |p_i - y_i||z_i| / \ell`.
* **entropy** in nats and bits, normalised by :math:`\log V`, and the effect of temperature.

Everything is accumulated chunk by chunk in constant memory (fixed-bin histograms, counts, sums), so
a file of any size is diagnosed by streaming row chunks.

References:
    P. Micikevicius et al., "Mixed precision training", ICLR 2018.

    P. Blanchard, D. J. Higham, N. J. Higham, "Accurately computing the log-sum-exp and softmax
    functions", IMA J. Numer. Anal. 41(4), 2021.

    IEEE Standard for Floating-Point Arithmetic, IEEE 754-2019.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from logitlab.losses import entropy
from logitlab.special import logsumexp

__all__ = ["DTYPES", "Finding", "LogitReport", "LogitStats", "diagnose", "diagnose_file"]


@dataclass(frozen=True)
class _DType:
    name: str
    max: float
    tiny: float  # smallest positive subnormal
    eps: float
    normal: float  # smallest positive normal


DTYPES = {
    "float16": _DType("float16", 65504.0, 2.0**-24, 2.0**-10, 2.0**-14),
    "bfloat16": _DType("bfloat16", 3.3895313892515355e38, 2.0**-133, 2.0**-7, 2.0**-126),
    "float32": _DType("float32", float(np.finfo(np.float32).max), 2.0**-149, 2.0**-23, 2.0**-126),
    "float64": _DType("float64", float(np.finfo(np.float64).max), 2.0**-1074, 2.0**-52, 2.0**-1022),
}
_LOG2_BINS = 200  # histogram of log2|gradient| over [-200, 0)
_TEMPS = (0.5, 1.0, 2.0)
_TEMP_ROWS = 20000  # rows used for the temperature table (the rest of the report uses all rows)


def _naive_softmax_bad(rows: np.ndarray, dt: str) -> np.ndarray:
    """Run ``exp(z) / sum(exp(z))`` in dtype ``dt`` on ``rows``: True where an output is inf/NaN."""
    if dt == "float64":
        with np.errstate(all="ignore"):
            e = np.exp(rows.astype(np.float64))
            p = e / e.sum(axis=1, keepdims=True)
        return ~np.isfinite(p).all(axis=1)
    import torch

    tdt = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}[dt]
    t = torch.from_numpy(np.ascontiguousarray(rows, dtype=np.float32)).to(tdt)
    et = torch.exp(t)
    pt = et / et.sum(dim=1, keepdim=True)
    return np.asarray((~torch.isfinite(pt).all(dim=1)).numpy())


def _round_to(v: np.ndarray, dt: str) -> np.ndarray:
    """``v`` rounded to dtype ``dt`` and widened back to float64 (bfloat16 via torch)."""
    if dt == "float64":
        return v
    if dt == "bfloat16":
        import torch

        return torch.from_numpy(v).to(torch.bfloat16).double().numpy()
    return v.astype(np.dtype(dt)).astype(np.float64)


@dataclass
class Finding:
    severity: str  # "high", "medium", "low", "info"
    message: str
    advice: str

    def to_dict(self) -> dict[str, str]:
        return {"severity": self.severity, "message": self.message, "advice": self.advice}


@dataclass
class LogitReport:
    """The result of :func:`diagnose`; see the module docstring for each number."""

    shape: tuple[int, ...]
    dtype: str
    rows: int
    classes: int
    nan: int
    posinf: int
    neginf: int
    min: float
    max: float
    mean: float
    std: float
    spread_mean: float
    spread_max: float
    per_dtype: dict[str, dict[str, float]]
    saturation: dict[str, float]
    mixed_precision: dict[str, Any]
    conditioning: dict[str, float]
    entropy: dict[str, float]
    temperature: list[dict[str, float]]
    histograms: dict[str, dict[str, list[float]]]
    findings: list[Finding] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        d = {k: getattr(self, k) for k in self.__dataclass_fields__ if k != "findings"}
        d["shape"] = list(self.shape)
        d["findings"] = [f.to_dict() for f in self.findings]
        return d

    def to_json(self) -> str:
        from logitlab.report.jsonout import to_json

        return to_json(self.to_dict())

    def to_html(self) -> str:
        from logitlab.report.diagnose import render_html

        return render_html(self)

    def print(self, console: Any = None) -> None:
        from logitlab.report.diagnose import render_terminal

        render_terminal(self, console)


class LogitStats:
    """Streaming accumulator: ``update(chunk, target)`` per row chunk, ``finalize()`` at the end.

    Memory is constant in the number of rows: counts, sums, and fixed-bin histograms.
    """

    def __init__(self, classes: int, dtype: str = "float32", shape: tuple[int, ...] = ()) -> None:
        if classes < 1:
            raise ValueError("logits need at least one class along the class axis")
        self.V = classes
        self.dtype = dtype
        self.shape = shape
        self.n = 0
        self.nan = self.posinf = self.neginf = 0
        self.vmin, self.vmax = math.inf, -math.inf
        self.s1 = self.s2 = 0.0
        self.nfinite = 0
        self.abs_max = 0.0
        self.abs_min = math.inf
        self.spread_sum, self.spread_max = 0.0, 0.0
        self.naive_bad = dict.fromkeys(DTYPES, 0)
        self.stable_zero = dict.fromkeys(DTYPES, 0)
        self.sat = {"float32": 0, "float16": 0}
        self.conf_wrong = 0
        self.has_target = False
        self.g_hist = np.zeros(_LOG2_BINS + 1)  # last bin: exact zeros
        self.g_max = 0.0
        self.lse_kappa_sum = self.lse_kappa_max = 0.0
        self.loss_kappa_sum = self.loss_kappa_max = 0.0
        self.h_sum, self.h_min, self.h_max = 0.0, math.inf, 0.0
        self.temp_rows = 0
        self.temp_h = dict.fromkeys(_TEMPS, 0.0)
        self.temp_top = dict.fromkeys(_TEMPS, 0.0)
        self.hist_logit = np.zeros(100)
        self.hist_top = np.zeros(50)
        self.hist_entropy = np.zeros(50)
        self.bad_rows = 0  # rows with NaN or +inf (excluded from the softmax statistics)

    def update(self, chunk: Any, target: Any = None) -> None:
        z_in = np.asarray(chunk)
        if z_in.ndim != 2 or z_in.shape[1] != self.V:
            raise ValueError(f"chunk must have shape (rows, {self.V}), got {z_in.shape}")
        z = z_in.astype(np.float32) if z_in.dtype != np.float64 else z_in
        r = z.shape[0]
        self.n += r
        nan = np.isnan(z)
        pinf = z == np.inf
        ninf = z == -np.inf
        self.nan += int(nan.sum())
        self.posinf += int(pinf.sum())
        self.neginf += int(ninf.sum())
        fin = ~(nan | pinf | ninf)
        zf = np.where(fin, z, 0)
        nfin = int(fin.sum())
        if nfin:
            self.vmin = min(self.vmin, float(np.min(z, where=fin, initial=np.inf)))
            self.vmax = max(self.vmax, float(np.max(z, where=fin, initial=-np.inf)))
            self.s1 += float(zf.sum(dtype=np.float64))
            self.s2 += float(np.square(zf, dtype=np.float64).sum())
            self.nfinite += nfin
            az = np.abs(zf)
            self.abs_max = max(self.abs_max, float(az.max()))
            nz = az[fin & (az > 0)]
            self.abs_min = min(self.abs_min, float(nz.min()) if nz.size else math.inf)
            if (fin & (az == 0)).any():
                self.abs_min = 0.0
            self.hist_logit += np.histogram(np.clip(zf[fin], -50, 50), bins=100, range=(-50, 50))[0]
        good = ~(nan | pinf).any(axis=1) & np.isfinite(np.where(ninf, 0, z)).all(axis=1)
        good &= fin.any(axis=1)
        self.bad_rows += int((~good).sum())
        z = z[good]
        y = None
        if target is not None:
            yy = np.asarray(target).reshape(-1)
            if yy.shape[0] != r:
                raise ValueError(f"target has {yy.shape[0]} entries for {r} rows")
            y = yy[good].astype(np.int64)
            if ((y < 0) | (y >= self.V)).any():
                i = int(np.argmax((y < 0) | (y >= self.V)))
                raise ValueError(f"target {y[i]} is not a class index in [0, {self.V})")
            self.has_target = True
        if z.shape[0] == 0:
            return
        # float64 throughout: 1 - p_top of a saturated row (below 2^-23) must survive lse - max
        self._softmax_stats(z.astype(np.float64), y)

    def _softmax_stats(self, z: np.ndarray, y: np.ndarray | None) -> None:
        mx = z.max(axis=1)
        mn = z.min(axis=1)
        am = z.argmax(axis=1)
        lse = np.asarray(logsumexp(z, axis=1), dtype=np.float64)
        mx64, mn64 = mx.astype(np.float64), mn.astype(np.float64)
        spread = mx64 - mn64
        self.spread_sum += float(spread.sum())
        self.spread_max = max(self.spread_max, float(spread.max()))
        # naive softmax: simulate exactly on the rows that could fail in each dtype
        for name, d in DTYPES.items():
            hi = math.log(d.max) - math.log(self.V) - 2.0
            lo = math.log(d.tiny) + 1.0
            cand = (mx64 > hi) | (mx64 < lo)
            if cand.any():
                self.naive_bad[name] += int(_naive_softmax_bad(z[cand], name).sum())
            # stable softmax: the smallest probability exp(min - lse), rounded to the dtype
            pmin = np.exp(mn64 - lse)
            self.stable_zero[name] += int((_round_to(pmin, name) == 0).sum())
        # saturation: top probability 1 / (1 + s) with s = expm1(lse - max) > ... (no 1 - p loss)
        s = np.expm1(lse - mx64)
        ptop_gap = s / (1 + s)  # = 1 - p_top, accurately
        for name in self.sat:
            sat = ptop_gap < DTYPES[name].eps
            self.sat[name] += int(sat.sum())
            if name == "float32" and y is not None:
                self.conf_wrong += int((sat & (am != y)).sum())
        self.hist_top += np.histogram(1 - ptop_gap, bins=50, range=(0, 1))[0]
        # entropy
        h = np.asarray(entropy(logits=z), dtype=np.float64)
        self.h_sum += float(h.sum())
        self.h_min = min(self.h_min, float(h.min()))
        self.h_max = max(self.h_max, float(h.max()))
        logv = math.log(self.V) if self.V > 1 else 1.0
        self.hist_entropy += np.histogram(np.clip(h / logv, 0, 1), bins=50, range=(0, 1))[0]
        # gradient p - onehot: log2 of its magnitudes, element by element
        t = am if y is None else y
        logp = (z - lse[:, None].astype(z.dtype)).astype(np.float64)
        rows = np.arange(z.shape[0])
        lp_t = logp[rows, t].copy()
        g_t = -np.expm1(lp_t)  # |p_t - 1| = 1 - p_t, without cancellation
        lg = logp / math.log(2)
        with np.errstate(divide="ignore"):
            lg[rows, t] = np.log2(g_t)
        self.g_max = max(self.g_max, float(np.exp2(lg.max())))
        zero = ~np.isfinite(lg) | (lg < -_LOG2_BINS)
        idx = np.clip(np.floor(-lg[~zero]).astype(np.int64), 0, _LOG2_BINS - 1)
        self.g_hist[:_LOG2_BINS] += np.bincount(idx, minlength=_LOG2_BINS)
        self.g_hist[_LOG2_BINS] += int(zero.sum())
        # conditioning of lse and of the loss (relative, componentwise)
        p = np.exp(logp)
        az = np.abs(z.astype(np.float64))
        with np.errstate(divide="ignore", invalid="ignore"):
            k_lse = np.sum(p * az, axis=1) / np.abs(lse)
            gy = p.copy()
            gy[rows, t] -= 1
            loss = -lp_t
            k_loss = np.sum(np.abs(gy) * az, axis=1) / loss
        k_lse = np.where(np.isfinite(k_lse), k_lse, np.inf)
        k_loss = np.where(np.isfinite(k_loss), k_loss, np.inf)
        self.lse_kappa_sum += float(np.sum(np.minimum(k_lse, 1e300)))
        self.lse_kappa_max = max(self.lse_kappa_max, float(k_lse.max()))
        self.loss_kappa_sum += float(np.sum(np.minimum(k_loss, 1e300)))
        self.loss_kappa_max = max(self.loss_kappa_max, float(k_loss.max()))
        # temperature effects on the first rows
        take = min(z.shape[0], _TEMP_ROWS - self.temp_rows)
        if take > 0:
            zz = z[:take].astype(np.float64)
            for temp in _TEMPS:
                zt = zz / temp
                lt = np.asarray(logsumexp(zt, axis=1))
                self.temp_h[temp] += float(np.sum(np.asarray(entropy(logits=zt))))
                self.temp_top[temp] += float(np.sum(np.exp(zt.max(axis=1) - lt)))
            self.temp_rows += take

    def merge(self, other: LogitStats) -> LogitStats:
        """Add ``other`` (same number of classes) into this accumulator."""
        for k, v in vars(other).items():
            mine = getattr(self, k)
            if k in ("V", "dtype", "shape"):
                continue
            if k in ("vmin", "h_min", "abs_min"):
                setattr(self, k, min(mine, v))
            elif k in (
                "vmax",
                "h_max",
                "abs_max",
                "spread_max",
                "g_max",
                "lse_kappa_max",
                "loss_kappa_max",
            ):
                setattr(self, k, max(mine, v))
            elif isinstance(v, dict):
                for kk in v:
                    mine[kk] += v[kk]
            elif k == "has_target":
                self.has_target = mine or v
            else:
                setattr(self, k, mine + v)
        return self

    def finalize(self) -> LogitReport:
        n_ok = max(1, self.n - self.bad_rows)
        per_dtype: dict[str, dict[str, float]] = {}
        for name, d in DTYPES.items():
            lim = math.log(d.max)
            per_dtype[name] = {
                "exp_overflow_limit": lim,
                "margin": lim - self.abs_max,
                "naive_softmax_bad_fraction": self.naive_bad[name] / n_ok,
                "stable_softmax_zero_fraction": self.stable_zero[name] / n_ok,
            }
        mean = self.s1 / self.nfinite if self.nfinite else math.nan
        var = self.s2 / self.nfinite - mean**2 if self.nfinite else math.nan
        mp = self._mixed_precision()
        logv = math.log(self.V) if self.V > 1 else 1.0
        hmean = self.h_sum / n_ok
        temps = [
            {
                "temperature": t,
                "mean_entropy": self.temp_h[t] / max(1, self.temp_rows),
                "mean_top1_probability": self.temp_top[t] / max(1, self.temp_rows),
            }
            for t in _TEMPS
        ]
        kappa = (
            (math.inf if self.abs_min == 0 else self.abs_max / self.abs_min)
            if (self.nfinite)
            else math.nan
        )
        rep = LogitReport(
            shape=self.shape,
            dtype=self.dtype,
            rows=self.n,
            classes=self.V,
            nan=self.nan,
            posinf=self.posinf,
            neginf=self.neginf,
            min=self.vmin,
            max=self.vmax,
            mean=mean,
            std=math.sqrt(max(var, 0.0)),
            spread_mean=self.spread_sum / n_ok,
            spread_max=self.spread_max,
            per_dtype=per_dtype,
            saturation={
                "float32": self.sat["float32"] / n_ok,
                "float16": self.sat["float16"] / n_ok,
                "confidently_wrong": (self.conf_wrong / n_ok) if self.has_target else math.nan,
            },
            mixed_precision=mp,
            conditioning={
                "kappa_ratio": kappa,
                "lse_condition_mean": self.lse_kappa_sum / n_ok,
                "lse_condition_max": self.lse_kappa_max,
                "loss_condition_mean": self.loss_kappa_sum / n_ok,
                "loss_condition_max": self.loss_kappa_max,
            },
            entropy={
                "mean_nats": hmean,
                "min_nats": self.h_min if self.n > self.bad_rows else math.nan,
                "max_nats": self.h_max,
                "mean_bits": hmean / math.log(2),
                "mean_normalized": hmean / logv,
            },
            temperature=temps,
            histograms={
                "logits": {
                    "edges": np.linspace(-50, 50, 101).tolist(),
                    "counts": self.hist_logit.tolist(),
                },
                "top_probability": {
                    "edges": np.linspace(0, 1, 51).tolist(),
                    "counts": self.hist_top.tolist(),
                },
                "entropy_normalized": {
                    "edges": np.linspace(0, 1, 51).tolist(),
                    "counts": self.hist_entropy.tolist(),
                },
            },
        )
        rep.findings = _findings(rep, self.bad_rows)
        return rep

    def _mixed_precision(self) -> dict[str, Any]:
        total = float(self.g_hist.sum())
        if total == 0:
            return {"elements": 0}
        # bin j holds |g| in [2^-(j+1), 2^-j); float16 zero below 2^-25, subnormal below 2^-14
        exps = -(np.arange(_LOG2_BINS) + 1)  # lower edge exponent of each bin
        zeros16 = float(self.g_hist[_LOG2_BINS] + self.g_hist[:_LOG2_BINS][exps < -25].sum())
        sub16 = float(self.g_hist[:_LOG2_BINS][(exps >= -25) & (exps < -14)].sum())
        over16 = 1.0 if self.g_max > DTYPES["float16"].max else 0.0
        # loss scale 2^k: keep max|g| * 2^k below 65504 with one bit of headroom, and report how
        # many gradient elements are still zero or subnormal at that scale
        kmax = int(math.floor(math.log2(DTYPES["float16"].max / max(self.g_max, 1e-300)))) - 1
        k = max(0, min(kmax, 24))
        lifted_zero = float(
            self.g_hist[_LOG2_BINS] + self.g_hist[:_LOG2_BINS][exps + k < -25].sum()
        )
        lifted_sub = float(self.g_hist[:_LOG2_BINS][(exps + k >= -25) & (exps + k < -14)].sum())
        reasoning = (
            f"max |dL/dz| = {self.g_max:.3g}; 2^{k} = {2**k} is the largest power of two that "
            f"keeps it below 65504 with a factor 2 of headroom. In float16 without scaling "
            f"{100 * zeros16 / total:.2f}% of the gradient elements are 0 and "
            f"{100 * sub16 / total:.2f}% subnormal; with 2^{k}: {100 * lifted_zero / total:.2f}% "
            f"and {100 * lifted_sub / total:.2f}%. (Gradient of the per-row loss; a mean over N "
            f"tokens divides it by N: multiply the scale by N, up to the same overflow bound.)"
        )
        return {
            "elements": int(total),
            "max_abs_gradient": self.g_max,
            "float16_zero_fraction": zeros16 / total,
            "float16_subnormal_fraction": sub16 / total,
            "float16_overflow": bool(over16),
            "recommended_loss_scale": 2**k,
            "zero_fraction_scaled": lifted_zero / total,
            "subnormal_fraction_scaled": lifted_sub / total,
            "reasoning": reasoning,
        }


def _pct(x: float) -> str:
    return f"{100 * x:.3g}%"


def _findings(r: LogitReport, bad_rows: int) -> list[Finding]:
    out: list[Finding] = []
    if r.nan or r.posinf:
        out.append(
            Finding(
                "high",
                f"{r.nan} NaN and {r.posinf} +inf logits ({bad_rows} rows)",
                "find where the model produces them (e.g. an fp16 overflow upstream); "
                "those rows are excluded from the softmax statistics",
            )
        )
    for name in ("float16", "bfloat16", "float32"):
        d = r.per_dtype[name]
        if d["naive_softmax_bad_fraction"] > 0:
            out.append(
                Finding(
                    "high" if name != "float32" else "medium",
                    f"a naive {name} softmax (no max subtraction) overflows to inf/NaN on "
                    f"{_pct(d['naive_softmax_bad_fraction'])} of rows (max |z| = {r.max:.4g}, "
                    f"limit {d['exp_overflow_limit']:.4g})",
                    "use a max-subtracted softmax/log-softmax (logitlab, torch.log_softmax) and "
                    "keep the loss in float32" + ("; or use bfloat16" if name == "float16" else ""),
                )
            )
    z16 = r.per_dtype["float16"]["stable_softmax_zero_fraction"]
    if z16 > 0.01:
        out.append(
            Finding(
                "low",
                f"the stable float16 softmax rounds some probabilities to 0 on {_pct(z16)} of rows",
                "compute log-probabilities (log_softmax), not "
                "probabilities, when their logarithms are needed",
            )
        )
    s32 = r.saturation["float32"]
    if s32 > 0.05:
        out.append(
            Finding(
                "medium",
                f"{_pct(s32)} of rows are saturated in float32 (top "
                "probability > 1 - 2^-23): their gradient softmax - onehot vanishes",
                "consider label smoothing, a logit soft-cap, or z-loss",
            )
        )
    cw = r.saturation["confidently_wrong"]
    if cw == cw and cw > 0:
        out.append(
            Finding(
                "high" if cw > 0.01 else "medium",
                f"{_pct(cw)} of rows are saturated AND wrong (confidently wrong)",
                "check the labels of these rows; consider temperature scaling",
            )
        )
    mp = r.mixed_precision
    if mp.get("elements"):
        zf = mp["float16_zero_fraction"] + mp["float16_subnormal_fraction"]
        if zf > 0.01:
            out.append(
                Finding(
                    "medium",
                    f"{_pct(zf)} of float16 logit gradients are 0 or "
                    "subnormal without loss scaling",
                    f"use a loss scale of {mp['recommended_loss_scale']} (see "
                    "reasoning) or dynamic loss scaling; or bfloat16",
                )
            )
    if r.conditioning["lse_condition_max"] > 1e3:
        out.append(
            Finding(
                "low",
                f"log-sum-exp is ill-conditioned on some rows (relative "
                f"condition number up to {r.conditioning['lse_condition_max']:.3g})",
                "results near lse = 0 lose relative accuracy in any algorithm",
            )
        )
    if not out:
        out.append(Finding("info", "no numerical problems found", "nothing to do"))
    return out


def _as_2d(x: np.ndarray, axis: int) -> np.ndarray:
    if x.ndim == 0:
        raise ValueError("logits must have at least one dimension (got a 0-d scalar)")
    if x.dtype.kind not in "biuf":
        raise TypeError(f"logits must be numeric, got dtype {x.dtype}")
    ax = axis % x.ndim
    x = np.moveaxis(x, ax, -1)
    return x.reshape(-1, x.shape[-1]) if x.ndim > 1 else x.reshape(1, -1)


def _to_numpy(x: Any) -> tuple[np.ndarray, str]:
    if hasattr(x, "detach"):
        import torch

        t = x.detach().cpu()
        name = str(t.dtype).replace("torch.", "")
        if t.dtype == torch.bfloat16:
            t = t.float()
        return t.numpy(), name
    a = np.asarray(x)
    return a, str(a.dtype)


def diagnose(
    logits: Any, target: Any = None, *, axis: int = -1, chunk_rows: int | None = None
) -> LogitReport:
    """Diagnose an in-memory array of logits (NumPy, torch, lists).

    Args:
        logits: logits with the class axis ``axis``.
        target: optional integer labels (one per row).
        axis: the class axis.
        chunk_rows: rows per chunk (default: about 64 MB of float32 work per chunk).

    Returns:
        A :class:`LogitReport`.

    Raises:
        ValueError: 0-d input, empty class axis, target length or range mismatch.
        TypeError: non-numeric dtype.

    Example:
        >>> import numpy as np
        >>> r = diagnose(np.array([[12.0, 0.0, -3.0], [1.0, 2.0, 3.0]]))
        >>> r.per_dtype["float16"]["naive_softmax_bad_fraction"]  # exp(12) overflows float16
        0.5
        >>> r.per_dtype["float32"]["naive_softmax_bad_fraction"]
        0.0
    """
    a, name = _to_numpy(logits)
    shape = tuple(a.shape)
    z = _as_2d(a, axis)
    if z.shape[1] == 0:
        raise ValueError("logits have no classes (empty class axis)")
    y = None if target is None else np.asarray(_to_numpy(target)[0]).reshape(-1)
    st = LogitStats(z.shape[1], name, shape)
    step = chunk_rows or max(1, (64 << 20) // (4 * z.shape[1] * 8))
    for a0 in range(0, z.shape[0], step):
        st.update(z[a0 : a0 + step], None if y is None else y[a0 : a0 + step])
    return st.finalize()


def diagnose_file(
    path: str,
    key: str | None = None,
    *,
    axis: int = -1,
    target_path: str | None = None,
    target_key: str | None = None,
    progress: Callable[[int, int], None] | None = None,
    chunk_bytes: int = 64 << 20,
) -> LogitReport:
    """Diagnose logits stored in a file, streaming row chunks of at most ``chunk_bytes`` of
    float32 work, so memory stays bounded (about 10 x ``chunk_bytes``) whatever the file size.

    The class axis must be the last (``axis=-1``) or, for 2-D files, may be 0 (then the file is
    read whole: transposing needs all rows)."""
    from logitlab.io import iter_row_chunks, load_array, open_array

    src = open_array(path, key)
    if len(src.shape) == 0:
        raise ValueError(f"{path}: logits must have at least one dimension, got a scalar")
    y = None if target_path is None else load_array(target_path, target_key).reshape(-1)
    nd = len(src.shape)
    if axis % nd != nd - 1:
        return diagnose(src.read(), y, axis=axis)
    v = src.shape[-1]
    if v == 0:
        raise ValueError(f"{path}: logits have no classes (empty last axis)")
    st = LogitStats(v, str(src.dtype), tuple(src.shape))
    per_row = int(np.prod(src.shape[1:-1], dtype=np.int64)) if nd > 2 else 1
    rows = max(1, chunk_bytes // (4 * v * per_row))
    total = src.shape[0]
    for a, chunk in iter_row_chunks(src, rows):
        c2 = np.asarray(chunk).reshape(-1, v) if nd != 1 else np.asarray(chunk).reshape(1, -1)
        yy = None
        if y is not None:
            yy = y[a * per_row : a * per_row + c2.shape[0]]
        st.update(c2, yy)
        if progress is not None:
            progress(a + chunk.shape[0], total)
    return st.finalize()

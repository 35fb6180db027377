r"""Numerical diagnostics of logits: overflow per dtype, saturation, loss scale, conditioning.

:func:`diagnose` answers "why did my loss go NaN in float16?", "is my model saturated?" and "what
loss scale do I need?" from the logits themselves. It is a streaming computation:
:class:`LogitStats` accumulates exact counts and fixed-bin histograms over row chunks
(``update`` / ``merge`` / ``finalize``), so that :func:`diagnose_file` reads files of any size in
bounded memory; :func:`diagnose` runs the same accumulator over an in-memory array.

Numerical model
---------------
Each chunk is widened once to a *work dtype* (float32 for float16/bfloat16/float32 inputs, float64
for float64 and integer inputs; the widening is exact) and every per-element quantity is computed
from the decomposition of :mod:`logitlab.special`: row maximum :math:`a` at index :math:`k`,
:math:`e_i = x_i - a \le 0`, :math:`w_i = e^{e_i}` with :math:`w_k` excluded,
:math:`s = \sum_{i \ne k} w_i`, so :math:`\operatorname{lse} = a + \operatorname{log1p}(s)`,
:math:`1 - p_{\max} = s / (1 + s)` (no cancellation) and
:math:`H = \operatorname{log1p}(s) - \sum_i e_i w_i / (1 + s)` (non-negative terms).

The half-precision claims are *computed, not estimated*. For a format ``D`` the model is what
NumPy and PyTorch (CPU) do: inputs rounded to ``D`` (round to nearest even), ``exp`` evaluated in
float32 and rounded to ``D``, sums accumulated in float32 (float64 for float64) and rounded to
``D``, quotients rounded to ``D``:

* naive softmax ``exp(x) / sum(exp(x))`` *overflows* on a row iff the rounded sum is ``inf`` (the
  row's output is then NaN or all zeros) and gives *0/0 = NaN* iff every ``exp`` underflows;
* the stable softmax ``exp(x - a) / sum(exp(x - a))`` *underflows* on a row iff its smallest
  probability rounds to exactly 0.

The row vectors (maximum, minimum, lse) decide almost every row exactly: the naive sum lies within a
proven relative band of :math:`e^{\operatorname{lse}}` (rounding ``x`` to ``D`` moves each term by
at most :math:`e^{\pm u|x|}`), and only rows whose band straddles the overflow (or underflow)
boundary are recomputed in real ``D`` arithmetic (:func:`simulate_softmax`), so the counts are
exact for the model at the cost of a few row vectors. bfloat16 has no NumPy dtype: it is simulated
by rounding float64 values to 8 significant bits with round-half-even (:func:`round_to_format`,
checked against ``torch.bfloat16`` in the tests).

Non-finite values: rows that contain NaN or +-inf (including ``-inf`` masks) are counted exactly
(NaN, +inf, -inf entries and rows) and excluded from every other statistic.

References:
    P. Micikevicius et al., "Mixed Precision Training", ICLR 2018 (loss scaling).

    P. Blanchard, D. J. Higham, N. J. Higham, "Accurately computing the log-sum-exp and softmax
    functions", IMA J. Numer. Anal. 41(4):2311-2330, 2021 (condition number of lse).

    IEEE Std 754-2019, IEEE Standard for Floating-Point Arithmetic (formats, rounding, subnormals).
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "FORMATS",
    "LogitReport",
    "LogitStats",
    "Finding",
    "diagnose",
    "diagnose_file",
    "round_to_format",
    "simulate_softmax",
]

# --------------------------------------------------------------------------- formats


@dataclass(frozen=True)
class Format:
    """An IEEE 754 binary format: ``p`` significand bits (hidden bit included), exponent range."""

    name: str
    p: int
    emin: int
    emax: int

    @property
    def max(self) -> float:
        """Largest finite value :math:`(2 - 2^{1-p}) 2^{e_{max}}`."""
        return math.ldexp(2.0 - math.ldexp(1.0, 1 - self.p), self.emax)

    @property
    def eps(self) -> float:
        """Machine epsilon :math:`2^{1-p}` (spacing of the numbers just above 1)."""
        return math.ldexp(1.0, 1 - self.p)

    @property
    def tiny(self) -> float:
        """Smallest positive normal number :math:`2^{e_{min}}`."""
        return math.ldexp(1.0, self.emin)

    @property
    def min_subnormal(self) -> float:
        """Smallest positive subnormal number :math:`2^{e_{min} + 1 - p}`."""
        return math.ldexp(1.0, self.emin + 1 - self.p)

    @property
    def overflow_log(self) -> float:
        """:math:`\\ln` of the overflow boundary ``max + ulp(max) / 2``: values at or above it round
        to ``inf`` (round to nearest even), so ``log`` of it is where a sum overflows."""
        return math.log(2.0) * (self.emax + 1) + math.log1p(-math.ldexp(1.0, -self.p - 1))

    @property
    def exp_limit(self) -> float:
        """:math:`\\ln(\\mathrm{max})`: the largest argument whose ``exp`` is finite (about)."""
        return math.log(self.max)


FORMATS: dict[str, Format] = {
    "float16": Format("float16", 11, -14, 15),
    "bfloat16": Format("bfloat16", 8, -126, 127),
    "float32": Format("float32", 24, -126, 127),
    "float64": Format("float64", 53, -1022, 1023),
}
_HALF = ("float16", "bfloat16")


def round_to_format(x: Any, fmt: str) -> np.ndarray:
    """Round values to a binary format (round half to even), returned as float64.

    Exact for every float64 input: the value is scaled by a power of two so that the format's
    quantum (its ulp, or the subnormal spacing below :math:`2^{e_{min}}`) becomes 1, rounded with
    ``np.round`` (half to even) and scaled back; results beyond ``max`` become ``inf``.

    Args:
        x: real values (any shape).
        fmt: ``"float16"``, ``"bfloat16"``, ``"float32"`` or ``"float64"``.

    Returns:
        float64 array of values representable in ``fmt``.

    Example:
        >>> round_to_format([1 + 2**-9, 65519.0, 65520.0, 2**-26], "float16").tolist()
        [1.0, 65504.0, inf, 0.0]
        >>> round_to_format([1 + 2**-8 + 2**-9], "bfloat16").tolist()
        [1.0078125]
    """
    f = FORMATS[fmt]
    v = np.asarray(x, dtype=np.float64)
    if fmt == "float64":
        return v.copy()
    with np.errstate(all="ignore"):
        _, e = np.frexp(v)  # |v| = m 2^e with 0.5 <= m < 1, so floor(log2|v|) = e - 1
        q = np.maximum(e - 1, f.emin) - (f.p - 1)  # exponent of the quantum
        r = np.ldexp(np.round(np.ldexp(v, -q)), q)
        r = np.where(np.abs(r) > f.max, np.copysign(np.inf, v), r)
        return np.asarray(np.where(np.isfinite(v), r, v))


def _exp_in(x: np.ndarray, fmt: str) -> np.ndarray:
    # exp as NumPy/PyTorch evaluate it: float32 exp rounded to the half format; native otherwise.
    with np.errstate(all="ignore"):
        if fmt == "float64":
            return np.exp(x.astype(np.float64))
        y = np.exp(x.astype(np.float32))
        return y.astype(np.float64) if fmt == "float32" else round_to_format(y, fmt)


def _sum_in(x: np.ndarray, fmt: str) -> np.ndarray:
    # Half-precision sums accumulate in float32 (NumPy and PyTorch CPU), then round once.
    with np.errstate(all="ignore"):
        if fmt == "float64":
            return np.asarray(np.sum(x, axis=-1))
        s = np.asarray(np.sum(x.astype(np.float32), axis=-1, dtype=np.float32), np.float64)
        return s if fmt == "float32" else round_to_format(s, fmt)


def simulate_softmax(x: Any, fmt: str) -> dict[str, np.ndarray]:
    """Run the naive and the stable softmax on rows of ``x`` in real ``fmt`` arithmetic.

    The reference computation behind the analytic counts of :class:`LogitStats` (see the module
    docstring for the arithmetic model).

    Args:
        x: finite logits, shape ``(rows, classes)``.
        fmt: a key of :data:`FORMATS`.

    Returns:
        Boolean row arrays: ``naive_overflow`` (the naive sum is ``inf``), ``naive_nan`` (every
        ``exp`` underflowed: 0/0) and ``stable_zero`` (some stable probability is exactly 0).

    Example:
        >>> r = simulate_softmax([[11.0, 11.0, 0.0], [10.0, 0.0, -20.0]], "float16")
        >>> r["naive_overflow"].tolist(), r["stable_zero"].tolist()
        ([True, False], [False, True])
    """
    x64 = np.asarray(x, dtype=np.float64)
    xd = round_to_format(x64, fmt)
    s_naive = _sum_in(_exp_in(xd, fmt), fmt)
    with np.errstate(all="ignore"):
        d = round_to_format(xd - xd.max(axis=-1, keepdims=True), fmt)
        es = _exp_in(d, fmt)
        s_stable = _sum_in(es, fmt)
        pmin = round_to_format(es.min(axis=-1) / s_stable, fmt)
    return {
        "naive_overflow": np.isinf(s_naive),
        "naive_nan": s_naive == 0,
        "stable_zero": pmin == 0,
    }


# --------------------------------------------------------------------------- report dataclasses


@dataclass
class Finding:
    """One diagnostic conclusion: ``severity`` is ``"high"``, ``"medium"`` or ``"low"``."""

    severity: str
    code: str
    message: str
    advice: str


@dataclass
class BasicStats:
    """Counts of non-finite values and moments of the finite rows."""

    nan_count: int
    posinf_count: int
    neginf_count: int
    nonfinite_rows: int
    finite_rows: int
    min: float
    max: float
    mean: float
    std: float
    max_abs: float
    min_abs: float
    spread_mean: float
    spread_min: float
    spread_max: float


@dataclass
class DtypeRisk:
    """What happens to these logits in one floating-point format (fractions are of finite rows)."""

    dtype: str
    exp_limit: float  # ln(max finite)
    margin: float  # exp_limit - max|z|; negative: some exp(z) overflows in this format
    max_representable: bool  # every |z| <= max finite of the format
    naive_overflow_rows: int
    naive_overflow_fraction: float
    naive_nan_rows: int  # every exp underflowed: 0 / 0
    stable_zero_rows: int
    stable_zero_fraction: float
    eps: float
    saturated_rows: int  # 1 - p_max < eps
    saturated_fraction: float


@dataclass
class Saturation:
    """Confidence of the rows, and (with targets) how often the model is confidently wrong."""

    mean_top_prob: float
    rows_top_above_099: int
    has_target: bool
    wrong_rows: int | None
    confident_wrong_rows: int | None  # wrong and p_max > 0.99
    saturated_wrong_rows: int | None  # wrong and 1 - p_max < float16 eps
    mean_loss: float  # mean cross-entropy against the target (argmax if none)


@dataclass
class MixedPrecision:
    """Cross-entropy gradient ``softmax - onehot`` in float16, before and after loss scaling."""

    target_source: str  # "target" or "argmax"
    n_gradients: int
    max_abs_grad: float
    zero_fraction: float  # |g| < 2^-25: rounds to 0 in float16
    subnormal_fraction: float  # 2^-25 <= |g| < 2^-14
    overflow_fraction: float
    loss_scale: float
    scaled_zero_fraction: float
    scaled_subnormal_fraction: float
    scaled_overflow_fraction: float
    reasoning: list[str]


@dataclass
class Conditioning:
    """Course-notes ratio and the relative condition numbers of lse and of the loss, per row."""

    ratio_global: float  # max|z| / min|z| over all finite entries
    ratio_median: float
    ratio_max: float
    ratio_inf_rows: int  # rows containing an exact zero logit
    lse_median: float
    lse_max: float
    loss_median: float
    loss_max: float
    loss_inf_rows: int  # rows with loss exactly 0


@dataclass
class EntropyStats:
    """Entropy of softmax(z / T) in nats and bits; ``normalized`` divides by log V."""

    mean_nats: float
    min_nats: float
    max_nats: float
    mean_bits: float
    min_bits: float
    max_bits: float
    normalized_mean: float
    normalized_min: float
    normalized_max: float
    temperature: dict[str, dict[str, float]]  # "0.5"/"1"/"2" -> mean_entropy_nats, mean_top_prob


@dataclass
class LogitReport:
    """Everything :func:`diagnose` found; ``to_dict`` / ``to_json`` / ``to_html`` render it."""

    shape: tuple[int, ...]
    dtype: str
    axis: int
    n_rows: int
    n_classes: int
    basic: BasicStats
    dtypes: dict[str, DtypeRisk]
    saturation: Saturation
    mixed_precision: MixedPrecision
    conditioning: Conditioning
    entropy: EntropyStats
    findings: list[Finding]
    histograms: dict[str, dict[str, list[Any]]] = field(repr=False)

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (lists and numbers only)."""
        d = asdict(self)
        d["shape"] = list(self.shape)
        return d

    def to_json(self, indent: int | None = 2) -> str:
        """Strict JSON (non-finite numbers as strings) via :func:`logitlab.report.to_json`."""
        from logitlab.report.jsonout import to_json

        return to_json(self.to_dict(), indent=indent)

    def to_html(self) -> str:
        """A self-contained HTML page with plots (needs matplotlib)."""
        from logitlab.report.diagnose import to_html

        return to_html(self)

    def __rich_console__(self, console: Any, options: Any) -> Any:
        from logitlab.report.diagnose import renderables

        yield from renderables(self)


# --------------------------------------------------------------------------- accumulator

_T_LIST = (0.5, 2.0)
_LOG_BINS = np.linspace(-3.0, 21.0, 241)  # log10 of condition numbers: 0.1-decade bins
_UNIT_BINS = np.linspace(0.0, 1.0, 51)
_EXP_OFFSET = 1100  # gradient exponent histogram index = floor(log2|g|) + offset
_EXP_BINS = 1104
_CONF = 0.99


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


_N_ROW = 13  # per-row sums shared by the NumPy and the native entry passes (see csrc/diag_rows.c)
_Rows = tuple[np.ndarray, "np.ndarray | None", np.ndarray, np.ndarray]


def _diag_lib(x: np.ndarray) -> Any:
    """The native kernel library when it applies to ``x`` (float16/float32 rows, unit stride)."""
    if x.dtype not in (np.float16, np.float32) or x.ndim != 2 or x.shape[1] == 0:
        return None
    if x.strides[1] != x.itemsize or x.strides[0] % x.itemsize:
        return None
    from logitlab import _native

    return _native.lib()


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
        self.t_h = dict.fromkeys(_T_LIST, 0.0)
        self.t_top = dict.fromkeys(_T_LIST, 0.0)
        nb = len(_LOG_BINS) - 1
        self.k_ratio, self.k_lse, self.k_loss = (np.zeros(nb, np.int64) for _ in range(3))
        self.k_ratio_max = self.k_lse_max = self.k_loss_max = 0.0
        self.k_ratio_inf = self.k_loss_inf = self.k_lse_inf = 0
        self.h_top = np.zeros(len(_UNIT_BINS) - 1, np.int64)
        self.h_ent = np.zeros(len(_UNIT_BINS) - 1, np.int64)
        self.h_logit = np.zeros(1 << 16, np.int64)  # by the top 16 bits of the float32 pattern
        self._buf: dict[str, np.ndarray] = {}

    # ----------------------------------------------------------------- update

    def _buffer(self, name: str, shape: tuple[int, int], dt: Any) -> np.ndarray:
        # Reused work buffers: no page faults from fresh allocations on every chunk.
        n = shape[0] * shape[1]
        b = self._buf.get(name)
        if b is None or b.size < n or b.dtype != dt:
            b = np.empty(n, dtype=dt)
            self._buf[name] = b
        return b[:n].reshape(shape)

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
        if x.dtype == work or _diag_lib(x) is not None:
            xw = x  # the native kernel widens float16 rows in cache: no chunk-sized copy
        else:
            xw = self._buffer("x", x.shape, work)
            xw[...] = x  # exact widening (float16 -> float32, int -> float64)
        with np.errstate(all="ignore"):
            self._update_rows(xw, t)

    def _split_nonfinite(
        self, x: np.ndarray, k: np.ndarray, a: np.ndarray, b: np.ndarray
    ) -> np.ndarray:
        # max propagates NaN (argmax points at the first NaN) and is +inf with any +inf; min is
        # -inf with any -inf: so the bad rows are found from row vectors, then counted exactly.
        bad = ~(np.isfinite(a) & np.isfinite(b))
        if bad.any():
            self._count_bad_rows(x[bad])
        return ~bad

    def _count_bad_rows(self, xb: np.ndarray) -> None:
        # rows left out of every statistic: their NaN / +inf / -inf entries are counted exactly
        self.nan += int(np.count_nonzero(np.isnan(xb)))
        self.posinf += int(np.count_nonzero(xb == np.inf))
        self.neginf += int(np.count_nonzero(xb == -np.inf))
        self.bad_rows += xb.shape[0]

    def _update_rows(self, x: np.ndarray, t: np.ndarray | None) -> None:
        lib = _diag_lib(x)
        got = self._rows_native(lib, x, t) if lib is not None else self._rows_numpy(x, t)
        if got is not None:
            self._accumulate(*got)

    def _rows_numpy(self, x: np.ndarray, t: np.ndarray | None) -> _Rows | None:
        """Per-row sums and the two entry histograms with NumPy (about 20 passes per chunk)."""
        r, V = x.shape
        k = np.argmax(x, axis=1)
        ar = np.arange(r)
        a = x[ar, k]
        b = np.min(x, axis=1)
        ok = self._split_nonfinite(x, k, a, b)
        if not ok.all():
            x, a, b = x[ok], a[ok], b[ok]
            t = None if t is None else t[ok]
            r = x.shape[0]
            if r == 0:
                return None
            ar = np.arange(r)
            k = np.argmax(x, axis=1)
        wd = x.dtype
        # e = x - a <= 0 and w = exp(e) with the one maximal entry excluded (the decomposition of
        # logitlab.special), so that s, 1 - p_max and the entropy carry no cancellation.
        e = self._buffer("e", (r, V), wd)
        np.subtract(x, a[:, None], out=e)
        w = self._buffer("w", (r, V), wd)
        np.exp(e, out=w)
        w[ar, k] = 0
        q = np.empty((_N_ROW, r))
        q[0], q[1] = a, b
        q[2] = w.sum(axis=1, dtype=wd)
        q[3] = -np.einsum("ij,ij->i", e, w)  # sum d_i w_i >= 0
        q[4] = e.sum(axis=1, dtype=wd)
        q[5] = np.einsum("ij,ij->i", e, e)
        # Temperature: softmax(z / T) reuses w: w^2 for T = 1/2, sqrt(w) for T = 2.
        buf = self._buffer("buf", (r, V), wd)
        for j, temp in enumerate(_T_LIST):
            if temp == 0.5:
                np.square(w, out=buf)
            else:
                np.sqrt(w, out=buf)
            q[6 + 2 * j] = buf.sum(axis=1, dtype=wd)
            q[7 + 2 * j] = -np.einsum("ij,ij->i", e, buf) / temp

        # Logit histogram: the top 16 bits of the float32 pattern (sign, exponent, 7 mantissa
        # bits), i.e. bins of relative width 2^-7 that are fixed, exact and mergeable.
        xf = x if wd == np.float32 else x.astype(np.float32)
        self._bincount_into(self.h_logit, xf.view(np.uint32), 16)

        # Gradient p - onehot: exponent histogram of every entry from the bits of p (one multiply
        # and one shift); the caller moves the target entries from the bin of p_t to 1 - p_t.
        ptop = (1 / (1 + q[2])).astype(wd)
        tt = k if t is None else t
        np.multiply(w, ptop[:, None], out=buf)
        buf[ar, k] = ptop
        q[12] = buf[ar, tt]
        if wd == np.float32:
            self._bincount_exp(buf.view(np.uint32), 23, 127)
        else:
            self._bincount_exp(buf.view(np.uint64), 52, 1023)

        # Conditioning: sum p|z| from |x| (reusing e, no longer needed).
        np.abs(x, out=e)
        q[11] = e.min(axis=1)
        q[10] = np.einsum("ij,ij->i", e, w)
        return x, t, k, q

    def _rows_native(self, lib: Any, x: np.ndarray, t: np.ndarray | None) -> _Rows | None:
        """The same per-row sums and histograms from the fused kernel of ``csrc/diag_rows.c``: three
        passes over each row while it is in cache, float16 widened there (no chunk copy)."""
        r, V = x.shape
        q = np.empty((r, _N_ROW))
        k = np.empty(r, dtype=np.int64)
        scratch = self._buffer("scratch", (2, V), np.float32)
        h_exp = np.zeros(256, np.int64)
        tc = None if t is None else np.ascontiguousarray(t, dtype=np.int64)
        lib.logitlab_diag_rows(
            x.ctypes.data,
            int(x.dtype == np.float16),
            None if tc is None else tc.ctypes.data,
            r,
            V,
            x.strides[0] // x.itemsize,
            q.ctypes.data,
            k.ctypes.data,
            scratch.ctypes.data,
            self.h_logit.ctypes.data,
            h_exp.ctypes.data,
        )
        self._add_exp_hist(h_exp, 127)
        ok = k >= 0
        if not ok.all():
            self._count_bad_rows(x[~ok])
            if not ok.any():
                return None
            x, q, k = x[ok], q[ok], k[ok]
            t = None if t is None else t[ok]
        return x, t, k, np.ascontiguousarray(q.T)

    def _accumulate(
        self, x: np.ndarray, t: np.ndarray | None, k: np.ndarray, q: np.ndarray
    ) -> None:
        """Everything after the entry passes: O(rows) work on the per-row sums ``q``."""
        r, V = x.shape
        ar = np.arange(r)
        self.ok_rows += r
        a64, b64, s, edw, sum_e, sum_e2 = q[0], q[1], q[2], q[3], q[4], q[5]
        log1ps = np.log1p(s)
        lse = a64 + log1ps
        gap = s / (1 + s)  # 1 - p_max, exact
        ptop = 1 / (1 + s)
        ent = log1ps + edw / (1 + s)
        for j, temp in enumerate(_T_LIST):
            st, sdw = q[6 + 2 * j], q[7 + 2 * j]
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
        self._exp_move(q[12], -1, wd)
        self._exp_move(g_t, +1, wd)
        self.grad_max = max(self.grad_max, float(g_t.max()))

        # Conditioning
        minabs = q[11]
        spz = (q[10] + np.abs(a64)) / (1 + s)
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

    def _bincount_into(self, hist: np.ndarray, bits: np.ndarray, shift: int) -> None:
        # bincount converts its input to intp: do it in row blocks of ~1M entries (bounded memory).
        step = max(1, (1 << 20) // max(1, bits.shape[1]))
        for i in range(0, bits.shape[0], step):
            hist += np.bincount((bits[i : i + step] >> shift).ravel(), minlength=hist.size)

    def _bincount_exp(self, bits: np.ndarray, shift: int, bias: int) -> None:
        # p >= 0, so the sign bit is 0 and bits >> shift is the biased exponent
        nb = 1 << (bits.dtype.itemsize * 8 - 1 - shift)
        h = np.zeros(nb, np.int64)
        self._bincount_into(h, bits, shift)
        self._add_exp_hist(h, bias)

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


# --------------------------------------------------------------------------- findings


def _findings(rep: LogitReport) -> list[Finding]:
    out: list[Finding] = []
    b = rep.basic
    if b.nonfinite_rows:
        out.append(
            Finding(
                "high",
                "nonfinite",
                f"{b.nonfinite_rows} of {rep.n_rows} rows contain NaN or inf "
                f"(NaN {b.nan_count}, +inf {b.posinf_count}, -inf {b.neginf_count}); they are "
                "excluded from the other statistics",
                "NaN/+inf logits come from an earlier overflow; -inf is usually a mask: make sure "
                "each row keeps a finite entry and use a masked softmax",
            )
        )
    if not b.finite_rows:
        return out
    for name in ("float16", "bfloat16"):
        r = rep.dtypes[name]
        if not r.max_representable:
            out.append(
                Finding(
                    "high",
                    f"{name}-range",
                    f"max |z| = {b.max_abs:.4g} exceeds the largest {name} value "
                    f"({FORMATS[name].max:.5g}): the logits themselves overflow to inf",
                    "keep the output layer in float32 or cap the logits (soft-capping)",
                )
            )
    f16 = rep.dtypes["float16"]
    if f16.naive_overflow_rows:
        bf = rep.dtypes["bfloat16"]
        alt = (
            "use bfloat16 or keep the loss in float32"
            if bf.naive_overflow_rows == 0
            else "compute softmax/cross-entropy in float32 with max subtraction"
        )
        out.append(
            Finding(
                "high",
                "float16-naive-overflow",
                f"float16 softmax overflows on {f16.naive_overflow_fraction:.1%} of rows "
                f"(max logit {b.max:.4g} vs ln 65504 = {f16.exp_limit:.2f}) when exp is taken "
                "without subtracting the row max",
                f"{alt}; logitlab.softmax / cross_entropy subtract the max and compute in float32",
            )
        )
    for name in ("bfloat16", "float32"):
        r = rep.dtypes[name]
        if r.naive_overflow_rows:
            out.append(
                Finding(
                    "high",
                    f"{name}-naive-overflow",
                    f"even {name} naive softmax overflows on {r.naive_overflow_fraction:.1%} of "
                    "rows",
                    "always subtract the row max (log-sum-exp trick)",
                )
            )
    if f16.naive_nan_rows:
        out.append(
            Finding(
                "medium",
                "float16-naive-underflow",
                f"on {f16.naive_nan_rows} rows every float16 exp(z) underflows to 0 (0/0 = NaN "
                "in a naive softmax)",
                "subtract the row max before exp",
            )
        )
    if f16.stable_zero_rows:
        out.append(
            Finding(
                "low",
                "float16-zero-prob",
                f"the stable float16 softmax still rounds some probabilities to exactly 0 on "
                f"{f16.stable_zero_fraction:.1%} of rows: log(p) = -inf there",
                "take log_softmax (never log(softmax)) and compute the loss in float32",
            )
        )
    sat16 = f16.saturated_fraction
    if sat16 > 0.01:
        out.append(
            Finding(
                "medium" if sat16 < 0.5 else "high",
                "saturation",
                f"{sat16:.1%} of rows have top probability > 1 - 2^-10 (float16 eps): softmax - "
                "onehot vanishes there in float16",
                "lower the temperature of the targets (label smoothing), add a z-loss or cap the "
                "logits; check for over-confident training",
            )
        )
    s = rep.saturation
    if s.has_target and s.confident_wrong_rows:
        out.append(
            Finding(
                "medium",
                "confidently-wrong",
                f"{s.confident_wrong_rows} rows ({s.confident_wrong_rows / b.finite_rows:.1%}) "
                f"are wrong with top probability > {_CONF}"
                + (
                    f"; {s.saturated_wrong_rows} of them saturated"
                    if s.saturated_wrong_rows
                    else ""
                ),
                "inspect these rows (label noise?) and calibrate (temperature scaling)",
            )
        )
    mp = rep.mixed_precision
    if mp.subnormal_fraction + mp.zero_fraction > 0.01:
        out.append(
            Finding(
                "low",
                "loss-scale",
                f"{mp.zero_fraction + mp.subnormal_fraction:.1%} of the CE gradients are zero or "
                f"subnormal in float16; a static loss scale of {mp.loss_scale:.0f} leaves "
                f"{mp.scaled_zero_fraction + mp.scaled_subnormal_fraction:.1%}",
                f"use loss scale {mp.loss_scale:.0f} (x N for a mean over N rows) or dynamic "
                "loss scaling; bfloat16 needs none",
            )
        )
    c = rep.conditioning
    if c.ratio_median > 1e3 and c.lse_median < 10:
        out.append(
            Finding(
                "low",
                "kappa-ratio",
                f"the ratio max|z|/min|z| is large (median {c.ratio_median:.3g}) but log-sum-exp "
                f"is well conditioned (median kappa_lse {c.lse_median:.3g})",
                "ignore the ratio: a logit near 0 makes it large without any loss of accuracy",
            )
        )
    if c.loss_median > 1e4:
        out.append(
            Finding(
                "low",
                "kappa-loss",
                f"the loss is ill-conditioned (median kappa {c.loss_median:.3g}): tiny relative "
                "changes of the logits change it a lot; it is near 0 on saturated rows",
                "compute the loss from logits in float32 or float64 (logitlab.cross_entropy)",
            )
        )
    if rep.n_classes > 1 and rep.entropy.normalized_mean < 0.01:
        out.append(
            Finding(
                "medium",
                "collapsed",
                f"mean entropy is {rep.entropy.normalized_mean:.2%} of log V: the distributions "
                "are nearly one-hot",
                "check for logit blow-up (weight decay, z-loss, logit soft-capping)",
            )
        )
    if not out:
        out.append(
            Finding("low", "ok", "no numerical risk found in these logits", "nothing to change")
        )
    order = {"high": 0, "medium": 1, "low": 2}
    return sorted(out, key=lambda f: order[f.severity])


# --------------------------------------------------------------------------- entry points

ProgressFn = Callable[[int, int], None]  # (rows done, total rows)


def _workers(n_chunks: int, workers: int | None) -> int:
    w = workers if workers is not None else min(2, os.cpu_count() or 1)
    return max(1, min(int(w), n_chunks))


def _run_chunks(
    n_rows: int,
    V: int,
    rows_per_chunk: int,
    get: Callable[[int, int], tuple[np.ndarray, np.ndarray | None]],
    make: Callable[[], LogitStats],
    workers: int | None,
    progress: ProgressFn | None,
) -> LogitStats:
    # Worker threads pull chunk indices from a shared counter (NumPy releases the GIL in its
    # loops); each keeps its own accumulator and buffers, merged at the end. Chunks are read by the
    # worker that processes them, so at most `workers` chunks are in memory at once. They are read
    # under the lock, in file order: a sequential source (a compressed .npz member) is then never
    # asked to go back and decompress again from the start. A memory-mapped chunk is only a view
    # there; its pages are read by the update, in parallel.
    starts = list(range(0, n_rows, rows_per_chunk)) or [0]
    nw = _workers(len(starts), workers)
    lock = threading.Lock()
    nxt = iter(starts)
    done = [0]
    errors: list[BaseException] = []
    stats = [make() for _ in range(nw)]

    def work(st: LogitStats) -> None:
        while not errors:
            try:
                with lock:
                    a = next(nxt, None)
                    if a is None:
                        return
                    bnd = min(n_rows, a + rows_per_chunk)
                    x, t = get(a, bnd)
                st.update(x, t)
            except BaseException as exc:  # re-raised in the caller's thread
                errors.append(exc)
                return
            with lock:
                done[0] += bnd - a
                if progress is not None:
                    progress(done[0], n_rows)

    if nw == 1:
        work(stats[0])
    else:
        threads = [threading.Thread(target=work, args=(st,), daemon=True) for st in stats]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
    if errors:
        raise errors[0]
    for st in stats:
        st._buf.clear()
    total = stats[0]
    for st in stats[1:]:
        total.merge(st)
    return total


def _chunk_rows(V: int, chunk_bytes: int) -> int:
    # Four work buffers of 4 or 8 bytes per entry per chunk; chunk_bytes bounds one of them.
    return max(1, chunk_bytes // (8 * max(1, V)))


def diagnose(
    logits: Any,
    target: Any = None,
    *,
    axis: int = -1,
    chunk_bytes: int = 32 << 20,
    workers: int | None = None,
) -> LogitReport:
    r"""Diagnose logits: overflow per dtype, saturation, loss scale, conditioning, entropy.

    Runs :class:`LogitStats` over row chunks of the array (see the module docstring for the exact
    float16/bfloat16 model). Key quantities, per row with :math:`p = \operatorname{softmax}(z)`:

    .. math::

        \text{margin}_D = \ln(\max_D) - \max |z|, \qquad
        \text{saturated}_D \iff 1 - \max_i p_i < \epsilon_D, \qquad
        g = p - \operatorname{onehot}(t), \qquad
        \kappa_{\operatorname{lse}} = \frac{\sum_i p_i |z_i|}{|\operatorname{lse}(z)|} .

    The recommended static loss scale :math:`S = 2^k` is the smallest power of two leaving at most
    1% of the nonzero :math:`|g|` below float16's normal range :math:`2^{-14}`, capped so that
    :math:`S \max|g| \le 65504` (Micikevicius et al. 2018).

    Args:
        logits: real array-like (NumPy, torch, lists) with at least one dimension.
        target: integer class indices with the shape of ``logits`` minus ``axis``; ``None`` uses
            each row's argmax as its target (the gradient of a correct prediction: the smallest
            gradients, so the loss-scale advice errs on the side of more scaling).
        axis: the class axis.
        chunk_bytes: size of one work buffer per chunk (memory bound: about 4x this per worker).
        workers: threads (default ``min(2, cpu_count)``).

    Returns:
        A :class:`LogitReport`.

    Raises:
        TypeError: non-numeric logits or non-integer targets.
        ValueError: a 0-d input, an empty class axis, ``axis`` out of range, targets of the wrong
            shape or out of range.

    Example:
        >>> import numpy as np
        >>> z = np.array([[12.0, 0.0, 0.0], [1.0, 0.0, -1.0]], dtype=np.float16)
        >>> rep = diagnose(z)
        >>> rep.dtypes["float16"].naive_overflow_rows, rep.dtypes["float32"].naive_overflow_rows
        (1, 0)
        >>> round(rep.dtypes["float16"].margin, 3)
        -0.91

    References:
        Micikevicius et al., "Mixed Precision Training", ICLR 2018;
        Blanchard, Higham & Higham, IMA J. Numer. Anal. 41(4), 2021; IEEE 754-2019.
    """
    x = _to_numpy(logits, "logits")
    if x.ndim == 0:
        raise ValueError("logits must have at least one dimension (a class axis), got a scalar")
    from logitlab._checks import normalize_axis

    ax = normalize_axis(axis, x.ndim)
    shape = tuple(x.shape)
    x = np.moveaxis(x, ax, -1)
    V = x.shape[-1]
    if V == 0:
        raise ValueError("the class axis is empty")
    x2 = x.reshape(-1, V)
    t2: np.ndarray | None = None
    if target is not None:
        t = _to_numpy(target, "target")
        if t.shape != x.shape[:-1]:
            raise ValueError(
                f"target shape {t.shape} does not match the logits' rows {x.shape[:-1]}"
            )
        t2 = t.reshape(-1)
    n = x2.shape[0]

    def get(a: int, b: int) -> tuple[np.ndarray, np.ndarray | None]:
        return x2[a:b], None if t2 is None else t2[a:b]

    def make() -> LogitStats:
        st = LogitStats(V, dtype=_dtype_name(logits, x), shape=shape, axis=ax)
        st.has_target = target is not None
        return st

    return _run_chunks(n, V, _chunk_rows(V, chunk_bytes), get, make, workers, None).finalize()


def _dtype_name(orig: Any, x: np.ndarray) -> str:
    dt = getattr(orig, "dtype", None)
    if dt is not None and "bfloat16" in str(dt):
        return "bfloat16"
    return str(x.dtype)


def _to_numpy(a: Any, name: str) -> np.ndarray:
    if type(a).__module__.startswith("torch"):
        import torch

        t = a.detach().cpu()
        if t.dtype == torch.bfloat16:
            t = t.float()  # exact widening: NumPy has no bfloat16
        return np.asarray(t.numpy())
    try:
        x = np.asarray(a)
    except (ValueError, TypeError) as exc:
        raise TypeError(f"{name} must be an array or a nested list of numbers: {exc}") from exc
    if x.dtype.kind not in "biuf":
        raise TypeError(f"{name} must hold real numbers, got dtype {x.dtype}")
    return x


def diagnose_file(
    path: str | os.PathLike[str],
    key: str | None = None,
    axis: int = -1,
    *,
    target_key: str | None = None,
    progress: ProgressFn | None = None,
    chunk_bytes: int = 32 << 20,
    workers: int | None = None,
) -> LogitReport:
    """Diagnose logits stored in a file, streaming row chunks (bounded memory).

    Reads ``.npy`` (memory-mapped), ``.npz``, ``.pt``/``.pth`` (``weights_only=True``) and
    ``.safetensors`` through :func:`logitlab.io.open_array`: nothing in the file is executed.
    Chunks are taken along the first axis; a class ``axis`` other than 0 is moved last inside each
    chunk. ``axis = 0`` of a multi-dimensional array cannot be streamed by rows: such files are read
    whole if they fit in ``chunk_bytes``, otherwise rejected.

    Memory: at most ``workers`` chunks at a time, whatever the file size. float16/float32 rows
    go through the native kernel, which reads a memory-mapped chunk in place: per worker a
    scratch of two rows and 13 doubles per chunk row (about 1 MiB in all by default). Otherwise
    (float64/integer input, no compiler) each chunk has four work buffers of ``chunk_bytes``
    (default 32 MiB: about 256 MiB with two workers). Fixed histograms add under 1 MiB; pages of
    a memory-mapped ``.npy``/``.npz`` are file-backed page cache.

    Args:
        path: the file.
        key: array name inside a container (``None``: the only array).
        axis: the class axis.
        target_key: optional name of an integer target array in the same container.
        progress: callback ``(rows_done, rows_total)`` after each chunk.
        chunk_bytes: bound on one work buffer.
        workers: threads (default ``min(2, cpu_count)``).

    Returns:
        A :class:`LogitReport`.

    Raises:
        logitlab.io.LoadError: unreadable, corrupt, pickled or non-numeric content; unknown key;
            a scalar; an axis that cannot be streamed; a class axis longer than
            :data:`logitlab.io.MAX_ROW_BYTES` allows.
    """
    from logitlab.io import LoadError, check_row_size, open_array

    src = open_array(path, key)
    shape = tuple(src.shape)
    if len(shape) == 0:
        raise LoadError(f"{path}: holds a scalar; logits need a class axis")
    try:
        from logitlab._checks import normalize_axis

        ax = normalize_axis(axis, len(shape))
    except (TypeError, ValueError) as exc:
        raise LoadError(f"{path}: {exc}") from exc
    V = shape[ax]
    if V == 0:
        raise LoadError(f"{path}: the class axis {ax} is empty")
    tgt: np.ndarray | None = None
    if target_key is not None:
        tsrc = open_array(path, target_key)
        # compare the headers first: a target array of the wrong shape is never read
        expect = tuple(s for i, s in enumerate(shape) if i != ax)
        if math.prod(tsrc.shape) != math.prod(expect) or (
            ax != 0 and len(shape) > 1 and tuple(tsrc.shape) != expect
        ):
            raise LoadError(f"{tsrc.where}: target shape {tsrc.shape} does not match {expect}")
        tgt = tsrc.read()
    name = src.source_dtype  # "bfloat16" for such tensors, whose rows arrive widened

    def make() -> LogitStats:
        st = LogitStats(V, dtype=name, shape=shape, axis=ax)
        st.has_target = tgt is not None
        return st

    check_row_size(src, V)  # one distribution (the class axis) is always processed whole
    if len(shape) == 1:
        n_rows, per_row = 1, V
    elif ax == 0:
        if src.nbytes > chunk_bytes:
            raise LoadError(
                f"{path}: the class axis is axis 0 of a {len(shape)}-D array of "
                f"{src.nbytes / 2**20:.0f} MiB, which cannot be streamed by rows; move the class "
                "axis last (np.moveaxis) or pass a smaller array"
            )
        whole = np.moveaxis(src.read(), 0, -1)
        x2 = whole.reshape(-1, V)
        t2 = None if tgt is None else tgt.reshape(-1)
        return _run_chunks(
            x2.shape[0],
            V,
            x2.shape[0] or 1,
            lambda a, b: (x2[a:b], None if t2 is None else t2[a:b]),
            make,
            1,
            progress,
        ).finalize()
    else:
        n_rows = shape[0]
        per_row = math.prod(shape[1:])
    rows = _chunk_rows(per_row, chunk_bytes)

    def get(a: int, b: int) -> tuple[np.ndarray, np.ndarray | None]:
        if len(shape) == 1:
            return src.read()[None, :], None if tgt is None else tgt.reshape(1)
        c = src.rows(a, b)
        if ax != len(shape) - 1:
            c = np.moveaxis(c, ax, -1)
        return c, None if tgt is None else tgt[a:b]

    return _run_chunks(n_rows, V, rows, get, make, workers, progress).finalize()

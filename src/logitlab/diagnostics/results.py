"""The results of :func:`logitlab.diagnostics.diagnose`: :class:`LogitReport` and its parts."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from logitlab._json import to_json

__all__ = [
    "BasicStats",
    "Conditioning",
    "DtypeRisk",
    "EntropyStats",
    "Finding",
    "LogitReport",
    "MixedPrecision",
    "Saturation",
]


@dataclass
class Finding:
    """One diagnostic conclusion: ``severity`` is ``"high"``, ``"medium"`` or ``"low"``."""

    severity: str
    code: str
    message: str
    advice: str


@dataclass
class BasicStats:
    """Counts of non-finite values, where they first are, and moments of the finite rows.

    ``first_*_row``: the first row (the rows in C order of the input with the class axis
    removed; in a file, its rows as stored) holding a NaN, a +inf or a -inf; ``None`` if none.
    """

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
    first_nan_row: int | None = None
    first_posinf_row: int | None = None
    first_neginf_row: int | None = None


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
    """Everything :func:`diagnose` found, as data: ``to_dict`` / ``to_json``.

    Rendering lives in the application layer: :func:`logitlab.report.diagnose.render_terminal`
    (rich tables) and :func:`logitlab.report.diagnose.to_html` (a page with plots).
    """

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
        """Strict JSON of :meth:`to_dict` (non-finite numbers as the strings ``"nan"``,
        ``"inf"``, ``"-inf"``)."""
        return to_json(self.to_dict(), indent=indent)

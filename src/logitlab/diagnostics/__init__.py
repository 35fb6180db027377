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

Moments: each row's mean and standard deviation come from sums centred at the row's own mean
(the corrected two-pass algorithm), in float64 or in float32 blocks added in double, and rows
merge by Chan's parallel update, scaled by a power of two beyond :math:`2^{400}`: exact to a few
ulps of the work dtype for any finite input.

Non-finite values: rows that contain NaN or +-inf (including ``-inf`` masks) are counted exactly
(NaN, +inf, -inf entries and rows), the first row holding each is kept, and they are excluded
from every other statistic.

Modules, one concern each (imports flow down this list; none imports :mod:`logitlab.report`):

* :mod:`~logitlab.diagnostics.runners`: :func:`diagnose`, :func:`diagnose_file`, the chunk and
  thread runner;
* :mod:`~logitlab.diagnostics.stats`: :class:`LogitStats`, the accumulator;
* :mod:`~logitlab.diagnostics.findings`: findings and the loss-scale advice;
* :mod:`~logitlab.diagnostics.rows`: the per-row entry pass (native kernel or NumPy) filling the
  record :data:`~logitlab.diagnostics.rows.ROW_DTYPE`, the C struct ``logitlab_diag_row``;
* :mod:`~logitlab.diagnostics.hist`: the fixed-bin histograms;
* :mod:`~logitlab.diagnostics.state`: declared state fields and their merges;
* :mod:`~logitlab.diagnostics.results`: :class:`LogitReport` and its parts, plain dataclasses
  (``to_dict``, ``to_json``; rendering is :mod:`logitlab.report.diagnose`'s);
* :mod:`~logitlab.diagnostics.formats`: the IEEE formats, rounding and the softmax model.

References:
    P. Micikevicius et al., "Mixed Precision Training", ICLR 2018 (loss scaling).

    P. Blanchard, D. J. Higham, N. J. Higham, "Accurately computing the log-sum-exp and softmax
    functions", IMA J. Numer. Anal. 41(4):2311-2330, 2021 (condition number of lse).

    IEEE Std 754-2019, IEEE Standard for Floating-Point Arithmetic (formats, rounding, subnormals).
"""

from logitlab.diagnostics.formats import FORMATS, Format, round_to_format, simulate_softmax
from logitlab.diagnostics.results import (
    BasicStats,
    Conditioning,
    DtypeRisk,
    EntropyStats,
    Finding,
    LogitReport,
    MixedPrecision,
    Saturation,
)
from logitlab.diagnostics.runners import ProgressFn, diagnose, diagnose_file
from logitlab.diagnostics.stats import LogitStats

__all__ = [
    "FORMATS",
    "BasicStats",
    "Conditioning",
    "DtypeRisk",
    "EntropyStats",
    "Finding",
    "Format",
    "LogitReport",
    "LogitStats",
    "MixedPrecision",
    "ProgressFn",
    "Saturation",
    "diagnose",
    "diagnose_file",
    "round_to_format",
    "simulate_softmax",
]

r"""Training-time logit monitor: a forward hook with cheap running statistics and one-time warnings.

:class:`LogitMonitor` watches the output of a module (typically ``lm_head``) and keeps, without
any extra host synchronisation between checks, the largest ``|z|``, the number of rows whose naive
float16 softmax would overflow and the number of saturated rows. Per call it does one max and one
log-sum-exp over the class axis in the logits' dtype (float32 for float16/bfloat16; float64 stays
float64), :math:`O(V)` per row against :math:`O(dV)` for the matmul that produced the logits,
then compares on the device.

Per row, with :math:`a = \max_i z_i` and :math:`\ell = \operatorname{lse}(z)`:

.. math::

    \text{naive float16 overflow} \iff \ell > \ln(65520), \qquad
    1 - p_{\max} = -\operatorname{expm1}(a - \ell) < \epsilon_{16} = 2^{-10}
    \ \text{(saturated)} .

The overflow test is the analytic criterion of :mod:`logitlab.diagnostics` without its exact band
(rows within a few float16 ulps of the boundary may be classified either way); use
:func:`logitlab.diagnostics.diagnose` on saved logits for exact counts.

References:
    Micikevicius et al., "Mixed Precision Training", ICLR 2018.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any

import torch

from logitlab.diagnostics.formats import FORMATS

__all__ = [
    "LogitMonitor",
    "MonitorStats",
    "LogitWarning",
    "Float16OverflowWarning",
    "SaturationWarning",
]

_F16_OVERFLOW_LOG = FORMATS["float16"].overflow_log  # ln(65520): the float16 sum is inf above
_F16_EPS = FORMATS["float16"].eps


class LogitWarning(UserWarning):
    """Base class of the monitor's warnings (filter them with ``warnings.simplefilter``)."""


class Float16OverflowWarning(LogitWarning):
    """Some rows' naive float16 softmax overflows (log-sum-exp above ln 65520)."""


class SaturationWarning(LogitWarning):
    """Too many rows have top probability above ``1 - 2^-10``: float16 gradients vanish."""


@dataclass
class MonitorStats:
    """Running statistics since the monitor was created (or :meth:`LogitMonitor.reset`)."""

    calls: int
    rows: int
    max_abs: float
    max_logit: float
    f16_overflow_rows: int
    saturated_rows: int
    mean_top_prob: float

    @property
    def f16_overflow_fraction(self) -> float:
        return self.f16_overflow_rows / self.rows if self.rows else math.nan

    @property
    def saturated_fraction(self) -> float:
        return self.saturated_rows / self.rows if self.rows else math.nan


class LogitMonitor:
    """Forward hook on a module that tracks overflow and saturation of its logits.

    Args:
        module: the module whose output holds the logits (a tensor, a tuple whose first item is
            the logits, or an object with a ``.logits`` attribute).
        axis: the class axis.
        overflow_fraction: warn (once) when more than this fraction of the rows seen so far would
            overflow a naive float16 softmax (default 0: any row).
        saturation_fraction: warn (once) when more than this fraction of the rows are saturated.
        check_every: compare with the thresholds every this many calls (each check synchronises
            a GPU once; statistics are still accumulated on every call).

    Example:
        >>> import torch, warnings
        >>> lin = torch.nn.Linear(4, 8)
        >>> with LogitMonitor(lin) as mon:
        ...     _ = lin(torch.zeros(3, 4))
        >>> mon.stats().rows, mon.stats().f16_overflow_rows
        (3, 0)
    """

    def __init__(
        self,
        module: torch.nn.Module,
        *,
        axis: int = -1,
        overflow_fraction: float = 0.0,
        saturation_fraction: float = 0.5,
        check_every: int = 1,
    ) -> None:
        if check_every < 1:
            raise ValueError(f"check_every must be >= 1, got {check_every}")
        self.axis = axis
        self.overflow_fraction = float(overflow_fraction)
        self.saturation_fraction = float(saturation_fraction)
        self.check_every = int(check_every)
        self._warned: set[type[Warning]] = set()
        self._handle: Any = module.register_forward_hook(self._hook)
        self.reset()

    def reset(self) -> None:
        """Forget the statistics (warnings already given stay given)."""
        self._calls = 0
        self._rows = 0
        self._acc: torch.Tensor | None = None  # [max_abs, max_logit, overflow, saturated, top]

    # ------------------------------------------------------------------ hook

    @staticmethod
    def _logits(output: Any) -> torch.Tensor | None:
        if isinstance(output, torch.Tensor):
            return output
        if isinstance(output, tuple | list) and output and isinstance(output[0], torch.Tensor):
            return output[0]
        z = getattr(output, "logits", None)
        return z if isinstance(z, torch.Tensor) else None

    def _hook(self, module: torch.nn.Module, args: Any, output: Any) -> None:
        z = self._logits(output)
        if z is None or z.ndim == 0 or not z.is_floating_point():
            return
        with torch.no_grad():
            x = z.detach().movedim(self.axis, -1)
            if x.dtype in (torch.float16, torch.bfloat16):
                x = x.float()  # exact; half-precision exp and sums would lose the counts
            rows = x.numel() // max(1, x.shape[-1])
            a = x.amax(dim=-1)
            lse = torch.logsumexp(x, dim=-1)
            gap = -torch.expm1(a - lse)  # 1 - p_max without cancellation
            new = torch.stack(
                [
                    # max|z| from the row maxima and one amin: no |x| temporary
                    torch.maximum(a.amax(), -x.amin()) if x.numel() else x.new_zeros(()),
                    a.amax() if a.numel() else x.new_full((), -math.inf),
                    (lse > _F16_OVERFLOW_LOG).sum().float(),
                    (gap < _F16_EPS).sum().float(),
                    torch.exp(a - lse).sum(),
                ]
            ).double()
            if self._acc is None:
                self._acc = new
            else:
                acc = self._acc
                self._acc = torch.cat([torch.maximum(acc[:2], new[:2]), acc[2:] + new[2:]])
        self._calls += 1
        self._rows += rows
        if self._calls % self.check_every == 0:
            self._check()

    def _check(self) -> None:
        st = self.stats()  # one device-to-host copy
        if st.rows == 0:
            return
        if st.f16_overflow_fraction > self.overflow_fraction:
            self._warn(
                Float16OverflowWarning,
                f"logit monitor: a naive float16 softmax overflows on "
                f"{st.f16_overflow_fraction:.2%} of {st.rows} rows (max logit {st.max_logit:.4g} "
                f"> ln 65504 = 11.09): keep softmax/cross-entropy in float32 with max subtraction "
                "or use bfloat16",
            )
        if st.saturated_fraction > self.saturation_fraction:
            self._warn(
                SaturationWarning,
                f"logit monitor: {st.saturated_fraction:.2%} of {st.rows} rows have top "
                "probability > 1 - 2^-10: softmax - onehot vanishes in float16; consider label "
                "smoothing, a z-loss or logit soft-capping",
            )

    def _warn(self, category: type[Warning], message: str) -> None:
        if category in self._warned:
            return
        self._warned.add(category)
        warnings.warn(message, category, stacklevel=3)

    # ------------------------------------------------------------------ API

    def stats(self) -> MonitorStats:
        """Current statistics (synchronises the device once)."""
        if self._acc is None:
            return MonitorStats(self._calls, self._rows, math.nan, math.nan, 0, 0, math.nan)
        v = self._acc.cpu().tolist()
        return MonitorStats(
            calls=self._calls,
            rows=self._rows,
            max_abs=v[0],
            max_logit=v[1],
            f16_overflow_rows=int(v[2]),
            saturated_rows=int(v[3]),
            mean_top_prob=v[4] / self._rows if self._rows else math.nan,
        )

    def remove(self) -> None:
        """Remove the hook (statistics stay readable)."""
        if self._handle is not None:
            self._handle.remove()
            self._handle = None

    def __enter__(self) -> LogitMonitor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()

"""A training-time monitor of a module's output logits (e.g. ``lm_head``).

:class:`LogitMonitor` registers a forward hook that keeps a few running statistics of the logits
(no copy of them is kept, no host sync beyond a handful of scalars per call) and warns once, with
:class:`LogitWarning`, when a float16 overflow or a saturation threshold is crossed.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import torch

__all__ = ["LogitMonitor", "LogitWarning"]

_LN_F16_MAX = math.log(65504.0)


class LogitWarning(RuntimeWarning):
    """Logits that will misbehave in half precision or have saturated."""


class LogitMonitor:
    """Watch the logits a module produces.

    Args:
        module: the module whose output (a tensor, or an object with ``.logits``) is watched.
        saturation_threshold: warn when more than this fraction of rows in a call has a top
            probability above ``1 - 2^-10`` (float16 epsilon: its gradient vanishes in float16).
        every: look at one call in ``every`` (1: all of them).

    Example:
        >>> import torch
        >>> head = torch.nn.Linear(4, 3)
        >>> with LogitMonitor(head) as mon:
        ...     _ = head(torch.randn(2, 4))
        >>> mon.calls, mon.max_abs < 100
        (1, True)
    """

    def __init__(
        self, module: torch.nn.Module, *, saturation_threshold: float = 0.5, every: int = 1
    ) -> None:
        self.saturation_threshold = saturation_threshold
        self.every = max(1, int(every))
        self.calls = 0
        self.rows = 0
        self.max_abs = 0.0
        self.saturated_rows = 0
        self.fp16_overflow_rows = 0
        self._warned: set[str] = set()
        self._handle = module.register_forward_hook(self._hook)

    def _hook(self, module: Any, inputs: Any, output: Any) -> None:
        self.calls += 1
        if (self.calls - 1) % self.every:
            return
        z = getattr(output, "logits", output)
        if not isinstance(z, torch.Tensor) or z.ndim == 0:
            return
        with torch.no_grad():
            z2 = z.detach().reshape(-1, z.shape[-1]).float()
            mx = z2.amax(dim=1)
            # rows whose naive float16 exp(max) overflows: max > ln(65504)
            over = int((mx > _LN_F16_MAX).sum())
            lse = torch.logsumexp(z2, dim=1)
            sat = int(((lse - mx) < 2.0**-10).sum())  # 1 - p_top ~ lse - max when small
            m = float(z2.abs().amax()) if z2.numel() else 0.0
        n = z2.shape[0]
        self.rows += n
        self.max_abs = max(self.max_abs, m)
        self.saturated_rows += sat
        self.fp16_overflow_rows += over
        if over and "fp16" not in self._warned:
            self._warned.add("fp16")
            warnings.warn(
                f"LogitMonitor: {over} of {n} rows have max logit > ln(65504) = 11.09: a naive "
                "float16 softmax overflows; keep the loss in float32 or use bfloat16",
                LogitWarning,
                stacklevel=2,
            )
        if n and sat / n > self.saturation_threshold and "sat" not in self._warned:
            self._warned.add("sat")
            warnings.warn(
                f"LogitMonitor: {sat} of {n} rows are saturated (top probability > 1 - 2^-10): "
                "their float16 gradient vanishes",
                LogitWarning,
                stacklevel=2,
            )

    def remove(self) -> None:
        """Unregister the hook."""
        self._handle.remove()

    def __enter__(self) -> LogitMonitor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()

    def summary(self) -> dict[str, float]:
        return {
            "calls": self.calls,
            "rows": self.rows,
            "max_abs_logit": self.max_abs,
            "saturated_fraction": self.saturated_rows / max(1, self.rows),
            "fp16_overflow_fraction": self.fp16_overflow_rows / max(1, self.rows),
        }

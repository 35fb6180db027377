r"""Temperature scaling: the T > 0 that minimises the mean NLL of ``softmax(logits / T)``.

With :math:`\beta = 1/T` and :math:`p = \mathrm{softmax}(\beta x)`, the mean NLL

.. math::

    f(\beta) = \frac1N \sum_i \big(\operatorname{lse}(\beta x_i) - \beta x_{i, t_i}\big)

is convex, with :math:`f'(\beta) = \frac1N \sum_i (\mathbb E_p[x_i] - x_{i,t_i})` and
:math:`f''(\beta) = \frac1N \sum_i \mathrm{Var}_p(x_i) \ge 0`. Newton's method on :math:`\beta`,
safeguarded by a bracket that every evaluation narrows (a step leaving it is replaced by bisection,
or by doubling while no upper end is known), converges in a handful of passes. Each pass streams
row chunks, so memory stays bounded for millions of rows and 100k classes.

References:
    C. Guo, G. Pleiss, Y. Sun, K. Q. Weinberger, "On calibration of modern neural networks",
    ICML 2017.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from logitlab.metrics._inputs import to_labels
from logitlab.special import logsumexp, softmax

__all__ = ["TemperatureResult", "fit_temperature", "nll_and_derivatives"]

_CHUNK_BYTES = 64 << 20


@dataclass
class TemperatureResult:
    """Fitted temperature with NLL and ECE (top-label, 15 equal-width bins) before and after."""

    temperature: float
    nll_before: float
    nll_after: float
    ece_before: float
    ece_after: float
    iterations: int
    converged: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _rows(n_classes: int) -> int:
    return max(1, _CHUNK_BYTES // (8 * 3 * max(1, n_classes)))


def _source_rows(logits: Any) -> tuple[Any, int, int]:
    if hasattr(logits, "rows") and hasattr(logits, "shape"):  # an io.ArraySource
        n, c = logits.shape
        return logits, n, c
    a = np.asarray(logits.detach().cpu() if hasattr(logits, "detach") else logits)
    if a.ndim != 2:
        raise ValueError(f"logits must have shape (N, C), got {a.shape}")
    if a.shape[0] == 0:
        raise ValueError("logits is empty: no samples")
    return a, a.shape[0], a.shape[1]


def _chunk(src: Any, a: int, b: int) -> np.ndarray:
    c = src.rows(a, b) if hasattr(src, "rows") else src[a:b]
    return np.asarray(c, dtype=np.float64)


def nll_and_derivatives(src: Any, y: np.ndarray, beta: float) -> tuple[float, float, float]:
    """Mean NLL at ``beta = 1/T`` and its first and second derivatives in ``beta`` (one pass)."""
    s, n, c = _source_rows(src)
    step = _rows(c)
    f = d1 = d2 = 0.0
    for a in range(0, n, step):
        x = _chunk(s, a, a + step)
        t = y[a : a + x.shape[0]]
        xt = x[np.arange(x.shape[0]), t]
        z = beta * x
        lse = np.asarray(logsumexp(z, axis=1))
        p = np.asarray(softmax(z, axis=1))
        # E_p[x] and Var_p[x] about the row maximum: centring keeps Var accurate when |x| is large
        m = x.max(axis=1, keepdims=True)
        dx = x - m
        e1 = np.sum(p * dx, axis=1)
        e2 = np.sum(p * dx * dx, axis=1)
        f += float(np.sum(lse - beta * xt))
        d1 += float(np.sum(e1 + m[:, 0] - xt))
        d2 += float(np.sum(np.maximum(e2 - e1 * e1, 0.0)))
    return f / n, d1 / n, d2 / n


def _ece(src: Any, y: np.ndarray, beta: float) -> float:
    from logitlab.metrics.calibration import bin_table, error_from_table

    s, n, c = _source_rows(src)
    step = _rows(c)
    conf = np.empty(n)
    correct = np.empty(n)
    for a in range(0, n, step):
        x = _chunk(s, a, a + step)
        p = np.asarray(softmax(beta * x, axis=1))
        conf[a : a + x.shape[0]] = p.max(axis=1)
        correct[a : a + x.shape[0]] = p.argmax(axis=1) == y[a : a + x.shape[0]]
    return error_from_table(bin_table(conf, correct, 15), "l1")[0]


def fit_temperature(
    logits: Any,
    target: Any,
    *,
    max_iter: int = 100,
    tol: float = 1e-10,
    beta_max: float = 1e6,
) -> TemperatureResult:
    r"""Fit the temperature :math:`T` minimising the mean NLL of ``softmax(logits / T)``.

    Args:
        logits: shape ``(N, C)``: an array, tensor, or :class:`logitlab.io.ArraySource` (streamed).
        target: integer labels, shape ``(N,)``.
        max_iter: iteration limit (each iteration is one pass over the data).
        tol: stop when ``|f'(beta)| <= tol * max(1, f'')`` or the bracket is tighter than
            ``tol * beta``.
        beta_max: largest ``1/T`` searched; separable data (NLL decreasing for all ``beta``) stops
            there with ``converged=False``.

    Returns:
        :class:`TemperatureResult`.

    Raises:
        ValueError: shapes, empty input, labels out of range.

    Example:
        >>> import numpy as np
        >>> rng = np.random.default_rng(0)
        >>> y = rng.integers(0, 5, 2000)
        >>> z = rng.standard_normal((2000, 5)) + 2.0 * np.eye(5)[y]
        >>> r1, r3 = fit_temperature(z, y), fit_temperature(3.0 * z, y)
        >>> round(r3.temperature / r1.temperature, 6), r3.converged, r3.nll_after < r3.nll_before
        (3.0, True, True)

    References:
        Guo et al., ICML 2017.
    """
    src, n, c = _source_rows(logits)
    y = to_labels(target, n, c)
    f0, g, h = nll_and_derivatives(src, y, 1.0)
    lo, hi = 0.0, math.inf
    beta, fb = 1.0, f0
    converged = False
    it = 0
    for it in range(1, max_iter + 1):  # noqa: B007
        if abs(g) <= tol * max(1.0, h):
            converged = True
            break
        if g > 0:
            hi = beta
        else:
            lo = beta
        newton = beta - g / h if h > 0 else math.nan
        if math.isfinite(newton) and lo < newton < hi:
            nb = newton
        elif math.isinf(hi):
            nb = 2 * beta
        else:
            nb = 0.5 * (lo + hi)
        if nb >= beta_max:
            beta = beta_max
            fb, g, h = nll_and_derivatives(src, y, beta)
            break
        if hi - lo <= tol * max(beta, 1e-300):
            converged = True
            break
        beta = nb
        fb, g, h = nll_and_derivatives(src, y, beta)
    return TemperatureResult(
        temperature=1.0 / beta,
        nll_before=f0,
        nll_after=fb,
        ece_before=_ece(src, y, 1.0),
        ece_after=_ece(src, y, beta),
        iterations=it,
        converged=converged,
    )

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
from dataclasses import dataclass
from typing import Any

import numpy as np
from array_api_compat import array_namespace

from logitlab import _rows
from logitlab._array import as_arrays, to_numpy, torch_view
from logitlab._checks import warn_if_probabilities
from logitlab._json import Record
from logitlab.metrics._inputs import check_logit_rows, to_labels, to_probs_and_labels

__all__ = ["TemperatureResult", "fit_temperature", "nll_and_derivatives"]

_CHUNK_BYTES = 64 << 20


@dataclass
class TemperatureResult(Record):
    """Fitted temperature with NLL and ECE (top-label, 15 equal-width bins) before and after."""

    temperature: float
    nll_before: float
    nll_after: float
    ece_before: float
    ece_after: float
    iterations: int
    converged: bool


def _chunk_rows(n_classes: int) -> int:
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


def _block_terms(x: Any, t: Any, beta: float) -> tuple[float, float, float, Any, Any]:
    r"""Sums over one float64 block of ``f``, ``f'``, ``f''`` and the per-row confidence and
    correctness at ``beta``, from one ``exp`` pass (the row engine's
    :func:`~logitlab._rows.block`): with :math:`d = x - \max x \le 0` and
    :math:`w_i = e^{\beta d_i}` over all but one maximal entry, :math:`s = \sum w`,

    * :math:`f_i = \operatorname{log1p}(s) - \beta d_t`,
    * :math:`E_p[d] = \sum w d / (1 + s)`, :math:`E_p[d^2] = \sum w d^2 / (1 + s)`,
      :math:`f'_i = E_p[d] - d_t`, :math:`f''_i = E_p[d^2] - E_p[d]^2`
      (centred at the maximum, so the variance does not cancel for large logits),
    * top-label confidence :math:`1 / (1 + s)`.
    """
    xp = array_namespace(x)
    bl = _rows.block(xp, x, beta)  # masked classes: w = 0 and w d = 0, never 0 * inf
    dt = _rows.gather(xp, x, t) - bl.a  # a masked target keeps d_t = -inf: f = +inf
    wd = bl.w * bl.d
    e1 = _rows.rowsum(xp, wd) / (1.0 + bl.s)
    e2 = _rows.rowdot(xp, wd, bl.d) / (1.0 + bl.s)
    f = xp.log1p(bl.s) - beta * dt
    var = xp.maximum(e2 - e1 * e1, xp.zeros_like(e2))
    sums = to_numpy(xp, xp.stack([xp.sum(f), xp.sum(e1 - dt), xp.sum(var)]))
    conf = to_numpy(xp, 1.0 / (1.0 + bl.s))
    return float(sums[0]), float(sums[1]), float(sums[2]), conf, to_numpy(xp, bl.k == t)


def _passes(
    src: Any, y: np.ndarray, beta: float, check: bool = False
) -> tuple[float, float, float, Any, Any]:
    """One pass over the rows: mean ``f, f', f''`` and per-row confidence and correctness.

    With ``check``, each chunk is validated first (NaN, +inf, a row with no finite logit), with
    errors naming the row in the whole input."""
    s, n, c = _source_rows(src)
    step = _chunk_rows(c)
    torch: Any
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is an optional extra
        torch = None
    f = d1 = d2 = 0.0
    conf = np.empty(n)
    correct = np.empty(n, dtype=bool)
    for a in range(0, n, step):
        x = _chunk(s, a, a + step)
        t = y[a : a + x.shape[0]]
        if check:
            # the NLL is +inf or NaN for every T on such rows: no temperature fits
            check_logit_rows(x, "logits", a)
            masked = np.isneginf(x[np.arange(x.shape[0]), t])
            if masked.any():
                i = int(np.argmax(masked))
                raise ValueError(
                    f"logits[{a + i}, {t[i]}] = -inf masks the target class: the NLL is +inf "
                    "at every temperature"
                )
        # torch's matrix-vector row sums are faster than NumPy's on short rows (zero copy)
        xt, tt = (torch_view(x), torch_view(t)) if torch is not None else (x, t)
        fi, g, h, cf, cr = _block_terms(xt, tt, beta)
        f += fi
        d1 += g
        d2 += h
        conf[a : a + x.shape[0]] = cf
        correct[a : a + x.shape[0]] = cr
    return f / n, d1 / n, d2 / n, conf, correct


def nll_and_derivatives(src: Any, y: np.ndarray, beta: float) -> tuple[float, float, float]:
    """Mean NLL at ``beta = 1/T`` and its first and second derivatives in ``beta`` (one pass).

    Example:
        >>> import numpy as np
        >>> f, g, h = nll_and_derivatives(np.array([[0.0, 1.0]]), np.array([0]), 1.0)
        >>> round(f, 6), round(g, 6), h > 0  # log(1 + e), sigmoid(1) - 0 ... about the max
        (1.313262, 0.731059, True)
    """
    f, g, h, _, _ = _passes(src, y, beta)
    return f, g, h


def _ece_from(conf: np.ndarray, correct: np.ndarray) -> float:
    from logitlab.metrics.calibration import bin_table, error_from_table

    return error_from_table(bin_table(conf, correct.astype(np.float64), 15), "l1")[0]


def _log_probs(probs: Any, target: Any) -> np.ndarray:
    """``log p`` of validated probabilities ``(N, C)``, as logits (``softmax(log p) = p``)."""
    p, y = to_probs_and_labels(probs=probs, target=target, fn="fit_temperature")
    zero = p[np.arange(y.size), y] == 0
    if zero.any():
        i = int(np.argmax(zero))
        raise ValueError(
            f"probs[{i}] gives probability 0 to its label {y[i]}: the NLL is infinite at every "
            "temperature"
        )
    with np.errstate(divide="ignore"):
        return np.log(p)  # p = 0 (not a label): a masked class


def fit_temperature(
    logits: Any = None,
    target: Any = None,
    *,
    probs: Any = None,
    max_iter: int = 100,
    tol: float = 1e-10,
    beta_max: float = 1e6,
) -> TemperatureResult:
    r"""Fit the temperature :math:`T` minimising the mean NLL of ``softmax(logits / T)``.

    Probabilities (``probs=``) are scaled as ``softmax(log(p) / T)``; a label with probability 0
    has infinite NLL at every temperature, which is an error.

    Args:
        logits: shape ``(N, C)``: an array, tensor, or :class:`logitlab.io.ArraySource`
            (streamed); or ``(N,)`` binary logits of class 1 (the rows ``(0, z)``).
        target: integer labels, shape ``(N,)``.
        probs: probabilities ``(N, C)`` instead of ``logits`` (keyword only).
        max_iter: iteration limit (each iteration is one pass over the data).
        tol: stop when ``|f'(beta)| <= tol * max(1, f'')`` or the bracket is tighter than
            ``tol * beta``.
        beta_max: largest ``1/T`` searched; separable data (NLL decreasing for all ``beta``) stops
            there with ``converged=False``.

    Returns:
        :class:`TemperatureResult`.

    Raises:
        ValueError: shapes, empty input, labels out of range, both or neither of
            ``logits``/``probs``, invalid probabilities or a label with probability 0;
            ``logits`` with NaN or ``+inf``, or a row with no finite logit (the message names
            the row).
        TypeError: no ``target``.

    Warns:
        ProbabilitiesAsLogitsWarning: ``logits`` whose rows look like probabilities.

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
    if target is None:
        raise TypeError("fit_temperature() needs target= (integer class labels)")
    if (logits is None) == (probs is None):
        raise ValueError("fit_temperature() takes exactly one of logits or probs=...")
    if probs is not None:
        logits = _log_probs(probs, target)
    elif not (hasattr(logits, "rows") and hasattr(logits, "shape")):  # not a streamed file
        xp, (arr,) = as_arrays(logits, names=["logits"])
        if arr.ndim == 1:
            # binary logits of class 1, as in the other metrics: the rows (0, z), whose softmax at
            # T is sigmoid(z / T)
            arr = xp.stack([xp.zeros_like(arr), arr], axis=1)
            logits = arr
        elif arr.ndim == 2:
            warn_if_probabilities(
                xp, arr, 1, fn="fit_temperature", instead="fit_temperature(probs=...)"
            )
    src, n, c = _source_rows(logits)
    y = to_labels(target, n, c)
    # each pass also returns the per-row confidence/correctness (O(N), like the labels), so the
    # ECE before and after costs no extra pass over the logits
    f0, g, h, conf1, corr1 = _passes(src, y, 1.0, check=True)
    ece0 = _ece_from(conf1, corr1)
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
            fb, g, h, conf1, corr1 = _passes(src, y, beta)
            break
        if hi - lo <= tol * max(beta, 1e-300):
            converged = True
            break
        beta = nb
        fb, g, h, conf1, corr1 = _passes(src, y, beta)
    return TemperatureResult(
        temperature=1.0 / beta,
        nll_before=f0,
        nll_after=fb,
        ece_before=ece0,
        ece_after=_ece_from(conf1, corr1),
        iterations=it,
        converged=converged,
    )

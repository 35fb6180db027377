"""KL and JS divergence terms: non-negative, with relative accuracy as ``p -> q``.

``KL(p || q) = sum_i q_i h(u_i)``, ``u_i = log(p_i / q_i)``, ``h(u) = u e^u - expm1(u) >= 0``
(a power series for ``|u| < 1``), and ``u`` itself from the most accurate difference the inputs
allow (``log1p((p - q) / q)`` near ``p ~ q``; from logits, ``delta - (lse_p - lse_q)``).

References:
    S. Kullback, R. A. Leibler, "On information and sufficiency", Ann. Math. Statist. 22, 1951.

    J. Lin, "Divergence measures based on the Shannon entropy", IEEE Trans. Inf. Theory 37(1),
    1991.
"""

from __future__ import annotations

import math
from typing import Any

from logitlab import _rows
from logitlab._array import Array
from logitlab._formulas.elementwise import log1pexp

__all__ = [
    "divergence",
    "h_series",
    "js",
    "kl",
    "kl_terms",
    "log_half_ratio",
    "log_ratio",
    "log_ratio_probs",
]


# h(u) = u e^u - expm1(u) = sum_{n >= 2} (n - 1) / n! u^n: coefficients fall factorially, so 19
# terms reach float64 precision for |u| < 1, where the closed form cancels (h ~ u^2 / 2).
H_COEFFS = [(n - 1) / math.factorial(n) for n in range(2, 21)]


def h_series(xp: Any, u: Array) -> Array:
    acc = xp.zeros_like(u) + H_COEFFS[-1]
    for c in reversed(H_COEFFS[:-1]):
        acc = acc * u + c
    return acc * u * u


def kl_terms(xp: Any, p: Array, q: Array, u: Array) -> Array:
    r"""Elementwise :math:`q\,h(u) = p \log(p/q) - p + q \ge 0` with :math:`u = \log(p/q)`.

    For ``|u| < 1`` the power series (relative accuracy as ``p -> q``); otherwise
    ``p (u - 1) + q``, whose cancellation is bounded by a factor 3.8. ``u = +inf`` (``q = 0 < p``)
    gives ``inf``; ``p = 0`` gives ``q``. ``u`` may be finite where ``p`` or ``q`` underflowed
    (logits): the terms stay finite and right. Summed over a normalised pair these give KL(p || q).
    """
    small = xp.abs(u) < 1
    u_s = xp.where(small, u, xp.zeros_like(u))
    series = q * h_series(xp, u_s)
    large = p * (u - 1) + q
    out = xp.where(small, series, large)
    out = xp.where(p == 0, q, out)
    out = xp.where(xp.isnan(p) | xp.isnan(q) | xp.isnan(u), xp.full_like(out, math.nan), out)
    return xp.maximum(out, xp.zeros_like(out))


def log_ratio_probs(xp: Any, p: Array, q: Array) -> Array:
    # Near p ~ q: log(p / q) = log1p((p - q) / q), where p - q is exact (Sterbenz: p and q within a
    # factor 2), so u keeps full relative accuracy exactly where KL is tiny. Elsewhere log(p / q),
    # or log p - log q where p / q would overflow or underflow (p / q - 1 would lose a tiny p / q).
    # q = 0 < p gives +inf, p = 0 < q gives -inf, p = q = 0 gives 0.
    near = xp.abs(p - q) <= q / 2
    ratio = p / q
    ok = xp.isfinite(ratio) & (ratio > 0)
    far = xp.where(ok, xp.log(xp.where(ok, ratio, xp.ones_like(ratio))), xp.log(p) - xp.log(q))
    u = xp.where(near, xp.log1p((p - q) / q), far)
    return xp.where((p == 0) & (q == 0), xp.zeros_like(u), u)


def log_ratio(
    xp: Any,
    pp: Array,
    qq: Array,
    lp: Array | None,
    lq: Array | None,
    xa: Array | None,
    xb: Array | None,
    ax: int,
    temperature: float = 1.0,
) -> Array:
    """``u = log(p / q)`` elementwise; ``xa``/``xb`` are the logits of ``p``/``q`` (or None) at
    ``temperature`` (``lp``/``lq`` are then the log-softmax of ``xa / T``/``xb / T``)."""
    if lp is None and lq is None:
        return log_ratio_probs(xp, pp, qq)
    # log-softmax stays finite where a probability underflows, so u stays finite and right there
    lpv = lp if lp is not None else xp.log(pp)
    lqv = lq if lq is not None else xp.log(qq)
    u = lpv - lqv
    u = xp.where((lpv == -math.inf) & (lqv == -math.inf), xp.zeros_like(u), u)
    if xa is None or xb is None:
        return u
    # Both logits: log p - log q carries the absolute error eps * |log p| of each log-softmax,
    # which swamps u when p ~ q. With delta = x_p - x_q (exact when close, Sterbenz),
    #   u = delta - (lse_p - lse_q),   lse_p - lse_q = log1p(sum_j q_j expm1(delta_j)),
    # every piece keeps its relative accuracy. Used on rows with max |delta| <= 1 (no overflow).
    # With a temperature, delta = (x_p - x_q) / T: the difference first, then one rounding
    # (x_p / T - x_q / T would carry eps * |x / T| into a delta that may be 1e-7 of it).
    both = xp.isfinite(xa) & xp.isfinite(xb)
    delta = xp.where(both, xa - xb, xp.zeros_like(xa))
    if temperature != 1.0:
        delta = delta / temperature
    near = xp.all(xp.abs(delta) <= 1, axis=ax, keepdims=True) & xp.all(
        both | ((xa == -math.inf) & (xb == -math.inf)), axis=ax, keepdims=True
    )
    c = xp.log1p(xp.sum(qq * xp.expm1(delta), axis=ax, keepdims=True))
    return xp.where(near & both, delta - c, u)


def kl(xp: Any, pp: Array, qq: Array, u: Array, ax: int) -> Array:
    return xp.sum(kl_terms(xp, pp, qq, u), axis=ax)


def log_half_ratio(xp: Any, u: Array) -> Array:
    """``log(p / m)`` with ``m = (p + q) / 2`` from ``u = log(p / q)``: ``log(2 / (1 + e^-u))``.

    For ``|u| <= 1`` it is ``log1p(tanh(u / 2))`` (relative accuracy as p -> q); beyond, where
    ``1 - tanh`` would round away the small side, ``log 2 - softplus(-u)`` (no cancellation).
    """
    small = xp.abs(u) <= 1
    us = xp.where(small, u, xp.zeros_like(u))
    near = xp.log1p(xp.tanh(us / 2))
    far = math.log(2.0) - log1pexp(xp, -xp.where(small, xp.ones_like(u), u))
    return xp.where(small, near, far)


def js(xp: Any, pp: Array, qq: Array, u: Array, ax: int) -> Array:
    m = (pp + qq) / 2
    up = log_half_ratio(xp, u)
    uq = log_half_ratio(xp, -u)
    return (xp.sum(kl_terms(xp, pp, m, up), axis=ax) + xp.sum(kl_terms(xp, qq, m, uq), axis=ax)) / 2


def divergence(
    xp: Any, a: Array, b: Array, a_logits: bool, b_logits: bool, ax: int, *, jensen: bool
) -> Array:
    """KL(p || q) (or JS) per distribution of two checked arguments of one dtype, each given as
    probabilities or logits (``a_logits``, ``b_logits``): the computation behind
    :func:`logitlab.kl_divergence` / :func:`logitlab.js_divergence` and their autograd forward."""
    pp, lp = (_rows.softmax(xp, a, ax), _rows.log_softmax(xp, a, ax)) if a_logits else (a, None)
    qq, lq = (_rows.softmax(xp, b, ax), _rows.log_softmax(xp, b, ax)) if b_logits else (b, None)
    u = log_ratio(xp, pp, qq, lp, lq, a if a_logits else None, b if b_logits else None, ax)
    return (js if jensen else kl)(xp, pp, qq, u, ax)

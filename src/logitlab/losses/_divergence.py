"""KL and JS divergence of probabilities or logits: checks, the autograd dispatch, and the
non-negative terms of :mod:`logitlab._formulas.divergence`."""

from __future__ import annotations

from typing import Any

from logitlab import _formulas, _grad
from logitlab._array import Array, as_arrays, finish, quiet, result_dtype, to_float, wants_grad
from logitlab._checks import (
    check_base,
    check_probabilities,
    check_reduction,
    input_eps,
    normalize_axis,
)
from logitlab.losses._common import warn_probabilities_as_logits

__all__ = ["divergence", "js_divergence", "kl_divergence"]


def _check_pair(
    p: Array | None,
    q: Array | None,
    p_logits: Array | None,
    q_logits: Array | None,
    axis: int,
) -> tuple[Any, Array, Array, int, Any]:
    """Convert and check a pair of distributions: ``(xp, a, b, axis, out_dtype)``, ``a`` and
    ``b`` the given arrays (probabilities or logits) in one floating dtype."""
    if (p is None) == (p_logits is None) or (q is None) == (q_logits is None):
        raise ValueError("give exactly one of p / p_logits and exactly one of q / q_logits")
    names = ["p", "q", "p_logits", "q_logits"]
    xp, arrs = as_arrays(p, q, p_logits, q_logits, names=names)
    first = next(a for a in arrs if a is not None)
    out_dtype = result_dtype(xp, first)
    eps = [input_eps(arrs[0]), input_eps(arrs[1])]
    arrs = [None if a is None else to_float(xp, a, n) for a, n in zip(arrs, names, strict=True)]
    dt = xp.result_type(*[a for a in arrs if a is not None])
    arrs = [None if a is None else xp.astype(a, dt) for a in arrs]
    a = arrs[0] if arrs[0] is not None else arrs[2]
    b = arrs[1] if arrs[1] is not None else arrs[3]
    if tuple(a.shape) != tuple(b.shape):
        raise ValueError(
            f"the two distributions have different shapes {tuple(a.shape)} and {tuple(b.shape)}"
        )
    ax = normalize_axis(axis, a.ndim)
    for name, given, e in (("p", arrs[0], eps[0]), ("q", arrs[1], eps[1])):
        if given is not None:
            # torch's F.kl_div(input, target) takes log q first and returns KL(target || q): a
            # port of it hands log-probabilities to p
            hint = (
                f"log-probabilities or logits? use {name}_logits=...; kl_divergence(p, q) is "
                "KL(p || q)"
            )
            check_probabilities(xp, given, name, ax, eps=e, hint=hint)
    return xp, a, b, ax, out_dtype


def divergence(
    jensen: bool,
    p: Array | None,
    q: Array | None,
    p_logits: Array | None,
    q_logits: Array | None,
    axis: int,
    base: float | None,
    reduction: str,
) -> Any:
    """The shared body of :func:`kl_divergence` (``jensen=False``) and :func:`js_divergence`."""
    check_reduction(reduction)
    lb = check_base(base)
    fn = "js_divergence" if jensen else "kl_divergence"
    for name, v in (("p_logits", p_logits), ("q_logits", q_logits)):
        if v is not None:
            warn_probabilities_as_logits(v, axis, fn, f"{fn}({name[0]}=...)", name=name)
    xp, a, b, ax, out_dtype = _check_pair(p, q, p_logits, q_logits, axis)
    a_logits, b_logits = p is None, q is None
    if wants_grad(a) or wants_grad(b):
        d = _grad.autograd().divergence_grad(a, b, a_logits, b_logits, ax, jensen=jensen)
    else:
        d = _formulas.divergence(xp, a, b, a_logits, b_logits, ax, jensen=jensen)
    if base is not None:
        d = d / lb
    return finish(xp, _formulas.plus_zero(_formulas.reduce(xp, d, reduction)), out_dtype)


@quiet
def kl_divergence(
    p: Array | None = None,
    q: Array | None = None,
    *,
    p_logits: Array | None = None,
    q_logits: Array | None = None,
    axis: int = -1,
    base: float | None = None,
    reduction: str = "none",
) -> Any:
    r"""Kullback–Leibler divergence KL(p || q): never negative, accurate as p → q.

    .. math::

        \mathrm{KL}(p \| q) = \sum_i p_i \log\frac{p_i}{q_i}
        = \sum_i q_i\, h(u_i), \quad u_i = \log\frac{p_i}{q_i},
        \quad h(u) = u e^u - \operatorname{expm1}(u) \ge 0 .

    Every term is non-negative, so the result is never negative and keeps *relative* accuracy
    when :math:`p \approx q`, where ``sum(p * log(p / q))`` keeps only the digits in which
    ``p / q`` differs from 1 (2e-5 off for a perturbation of ``2**-20``; SciPy's ``rel_entr``
    sum 8e-11). The rewrite adds :math:`\sum_i (q_i - p_i)`: 0 for two distributions; for
    float inputs whose sums differ within rounding, the result is the generalized KL
    :math:`\sum_i p_i \log(p_i/q_i) - p_i + q_i` of the numbers given.

    Args:
        p: probabilities of the first argument, or give ``p_logits``.
        q: probabilities of the reference distribution, or give ``q_logits``.
        p_logits: logits of ``p`` (exactly one of ``p`` / ``p_logits``).
        q_logits: logits of ``q``.
        axis: the class axis.
        base: logarithm base (``None``: nats).
        reduction: ``"none"`` (per distribution), ``"sum"`` or ``"mean"`` over distributions.

    Returns:
        KL per distribution (``axis`` removed) or reduced, in the inputs' namespace and dtype;
        0 over an empty class axis (an empty sum).

    Raises:
        ValueError: not exactly one of each pair given, shapes differ, invalid probabilities.

    Example:
        >>> import numpy as np
        >>> from logitlab import kl_divergence
        >>> p = np.array([0.375 + 2**-20, 0.625 - 2**-20])
        >>> float(kl_divergence(p, np.array([0.375, 0.625])))  # exact: 1.9402547058738959e-12
        1.9402547058738958e-12
        >>> float(kl_divergence(p_logits=[0.0, 0.0], q_logits=[0.0, float("-inf")]))
        inf

    References:
        Kullback & Leibler, Ann. Math. Statist. 22, 1951.
    """
    return divergence(False, p, q, p_logits, q_logits, axis, base, reduction)


@quiet
def js_divergence(
    p: Array | None = None,
    q: Array | None = None,
    *,
    p_logits: Array | None = None,
    q_logits: Array | None = None,
    axis: int = -1,
    base: float | None = None,
    reduction: str = "none",
) -> Any:
    r"""Jensen–Shannon divergence, symmetric and bounded by :math:`\log 2`.

    .. math::

        \mathrm{JS}(p, q) = \tfrac12 \mathrm{KL}(p \| m) + \tfrac12 \mathrm{KL}(q \| m),
        \qquad m = \tfrac12 (p + q),

    computed with the non-negative terms of :func:`kl_divergence`, and
    :math:`\log(p/m) = \operatorname{log1p}((p - q)/(p + q))` for relative accuracy as p → q.

    Args:
        p: probabilities (or ``p_logits``).
        q: probabilities (or ``q_logits``).
        p_logits: logits of ``p``.
        q_logits: logits of ``q``.
        axis: the class axis.
        base: logarithm base (2 gives values in [0, 1]).
        reduction: ``"none"``, ``"sum"`` or ``"mean"``.

    Returns:
        JS per distribution or reduced; 0 over an empty class axis (an empty sum).

    Raises:
        ValueError: as for :func:`kl_divergence`.

    Example:
        >>> from logitlab import js_divergence
        >>> float(js_divergence([1.0, 0.0], [0.0, 1.0], base=2))
        1.0

    References:
        J. Lin, "Divergence measures based on the Shannon entropy", IEEE Trans. Inf. Theory 37(1),
        1991.
    """
    return divergence(True, p, q, p_logits, q_logits, axis, base, reduction)

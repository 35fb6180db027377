"""Cross-entropy coefficients: the per-class target weights ``alpha`` of every cross-entropy form.

``loss_row = sum_c alpha_c (-log p_c)``, so the logit gradient is ``(p sum(alpha) - alpha) / T``:
``alpha`` is the one-hot target (or the probability target), times ``1 - eps`` plus the label
smoothing ``eps`` spread over the classes in the support (a finite logit, or a non-zero
probability), times the class weights; zero on ignored rows.

References:
    C. Szegedy et al., "Rethinking the Inception Architecture for Computer Vision", CVPR 2016.
"""

from __future__ import annotations

import math
from typing import Any

from logitlab import _rows
from logitlab._array import Array
from logitlab._checks import CEOptions
from logitlab._formulas.reduce import reduce
from logitlab._rows import parts
from logitlab._rows.decompose import device_of

__all__ = [
    "ce_coefficients",
    "class_rows",
    "cross_entropy",
    "cross_entropy_probs",
    "target_weights",
]


def ce_coefficients(
    xp: Any,
    x: Array,
    target: Array,
    *,
    soft: bool,
    ignore_index: int,
    label_smoothing: float,
    weight: Array | None,
    temperature: float,
) -> tuple[Array, Array, Array, Array]:
    """Shared by the forward and the analytic backward (class axis last).

    Returns ``(loss_rows, alpha, valid, denom_rows)``: per-row loss, the per-class coefficients
    ``alpha`` with ``loss_row = sum_c alpha_c * (-log p_c)`` (so the logit gradient is
    ``(p * sum(alpha) - alpha) / T``), the mask of non-ignored rows, and the per-row contribution
    to the mean's denominator (``weight[target]`` for class targets, 1 for soft targets).
    """
    p = parts(xp, x, x.ndim - 1, temperature)
    nll = p.d + xp.log1p(p.s)  # -log p_c >= 0; +inf for masked classes
    alpha, valid, denom = target_weights(
        xp,
        x,
        target,
        p.d < math.inf,
        soft=soft,
        ignore_index=ignore_index,
        label_smoothing=label_smoothing,
        weight=weight,
    )
    terms = alpha * xp.where(alpha == 0, xp.zeros_like(nll), nll)
    loss = xp.sum(terms, axis=-1)
    return loss, alpha, valid, denom


def target_weights(
    xp: Any,
    x: Array,
    target: Array,
    support: Array,
    *,
    soft: bool,
    ignore_index: int,
    label_smoothing: float,
    weight: Array | None,
) -> tuple[Array, Array, Array]:
    """``(alpha, valid, denom_rows)`` of :func:`ce_coefficients` for scores ``x`` (class axis
    last; only its shape, dtype and device are used) whose classes in ``support`` (finite logit,
    or non-zero probability) can take label-smoothing mass."""
    n_classes = x.shape[-1]
    if soft:
        valid = xp.ones(tuple(x.shape[:-1]), dtype=xp.bool, device=device_of(x))
        base = target
    else:
        valid = target != ignore_index
        t_safe = xp.where(valid, target, xp.zeros_like(target))
        idx = xp.reshape(xp.arange(n_classes, device=device_of(x)), (1,) * (x.ndim - 1) + (-1,))
        base = xp.astype(idx == xp.expand_dims(t_safe, axis=-1), x.dtype)
    alpha = (1 - label_smoothing) * base if label_smoothing else base
    if label_smoothing:
        # Spread the smoothing mass over the classes with a finite logit only: a masked class
        # (-inf) would otherwise contribute eps/C * inf.
        fin = xp.astype(support, x.dtype)
        n_fin = xp.sum(fin, axis=-1, keepdims=True)
        alpha = alpha + label_smoothing * fin / xp.where(n_fin == 0, xp.ones_like(n_fin), n_fin)
    if weight is not None:
        alpha = alpha * weight
    alpha = xp.where(xp.expand_dims(valid, axis=-1), alpha, xp.zeros_like(alpha))
    if soft:
        denom = xp.ones(tuple(x.shape[:-1]), dtype=x.dtype, device=device_of(x))
    elif weight is not None:
        wt = xp.sum(
            xp.where(base > 0, xp.broadcast_to(weight, base.shape), xp.zeros_like(base)), axis=-1
        )
        denom = xp.where(valid, wt, xp.zeros_like(wt))
    else:
        denom = xp.astype(valid, x.dtype)
    return alpha, valid, denom


def class_rows(
    xp: Any, x: Array, t: Array, w: Array | None, opts: CEOptions
) -> tuple[Array, Array]:
    """``(w_t (d_t + log1p(s)), w_t)`` per row for class targets without smoothing, on the row
    engine's fast path (``x`` must take it along its last axis); ignored rows give 0."""
    valid = t != opts.ignore_index
    t_safe = xp.where(valid, t, xp.zeros_like(t))
    nll = _rows.nll(xp, x, t_safe, opts.temperature)
    wt = xp.ones_like(nll) if w is None else xp.take(w, xp.reshape(t_safe, (-1,)))
    wt = xp.reshape(wt, tuple(nll.shape))
    denom = xp.where(valid, wt, xp.zeros_like(wt))
    return denom * xp.where(denom == 0, xp.zeros_like(nll), nll), denom


def cross_entropy(
    xp: Any, x: Array, t: Array, w: Array | None, soft: bool, opts: CEOptions
) -> Array:
    """The reduced cross-entropy of logits ``x`` (class axis last) and class or probability
    targets ``t``: the computation behind :func:`logitlab.cross_entropy` and its autograd
    Function's forward."""
    if (
        not soft
        and not opts.label_smoothing
        and _rows.backend(x, x.ndim - 1, opts.temperature) != "xp"
    ):
        loss, denom = class_rows(xp, x, t, w, opts)
    else:
        loss, _, _, denom = ce_coefficients(
            xp,
            x,
            t,
            soft=soft,
            ignore_index=opts.ignore_index,
            label_smoothing=opts.label_smoothing,
            weight=w,
            temperature=opts.temperature,
        )
    return reduce(xp, loss, opts.reduction, xp.sum(denom))


def cross_entropy_probs(
    xp: Any, p: Array, t: Array, w: Array | None, soft: bool, opts: CEOptions
) -> Array:
    r"""The reduced cross-entropy :math:`\sum_c \alpha_c (-\log p_c)` of given probabilities
    ``p`` (class axis last).

    Plain array-API operations, so that torch's autograd differentiates it (every order):
    :math:`-\log p_c` is taken of ``p_c`` where :math:`\alpha_c > 0` and of 1 elsewhere, so classes
    without target mass get gradient 0, never ``0 * inf``; classes with ``p_c = 0`` play the part
    of masked logits for label smoothing.
    """
    alpha, _, denom = target_weights(
        xp,
        p,
        t,
        p > 0,
        soft=soft,
        ignore_index=opts.ignore_index,
        label_smoothing=opts.label_smoothing,
        weight=w,
    )
    used = alpha != 0
    nll = -xp.log(xp.where(used, p, xp.ones_like(p)))  # exact for tiny p; p = 0 gives inf
    loss = xp.sum(xp.where(used, alpha * nll, xp.zeros_like(nll)), axis=-1)
    return reduce(xp, loss, opts.reduction, xp.sum(denom))

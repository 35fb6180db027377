"""Binary cross-entropy on probabilities and on logits: checks (shapes, the argument-swap
guard, labels in [0, 1]), the autograd dispatch, and :mod:`logitlab._formulas.binary`."""

from __future__ import annotations

import math
from typing import Any

from logitlab import _formulas, _grad
from logitlab._array import (
    Array,
    as_arrays,
    finish,
    is_floating,
    is_integral,
    quiet,
    result_dtype,
    to_float,
    wants_grad,
)
from logitlab._checks import any_true, check_reduction, first_true, pick
from logitlab._config import validation_enabled

__all__ = ["binary_cross_entropy", "binary_cross_entropy_with_logits"]


def _check_binary(xp: Any, pred: Array, target: Array, pred_name: str, probs: bool) -> None:
    if tuple(pred.shape) != tuple(target.shape):
        raise ValueError(
            f"target has shape {tuple(target.shape)} but {pred_name} has {tuple(pred.shape)}; "
            "they must match (broadcasting here usually hides a bug)"
        )
    if not validation_enabled():
        return
    if any_true(xp, xp.isnan(target)):
        raise ValueError(f"target contains NaN (first at index {first_true(xp, xp.isnan(target))})")
    if probs:
        looks_like_labels = is_integral(xp, pred) or not any_true(xp, (pred != 0) & (pred != 1))
        fractional = any_true(xp, (target != 0) & (target != 1))
        if looks_like_labels and fractional and math.prod(pred.shape):
            raise ValueError(
                "binary_cross_entropy(probs, target): the arguments look swapped: probs holds only "
                "0/1 labels while target holds fractional values. Call "
                "binary_cross_entropy(probs=predictions, target=labels)"
            )
    bad = (target < 0) | (target > 1)
    if any_true(xp, bad):
        i = first_true(xp, bad)
        raise ValueError(f"target must be in [0, 1]; target{list(i)} = {pick(xp, target, i)!r}")


def _bce_prepare(
    pred: Array, target: Array, weight: Array | None, extra: Array | None, names: list[str]
) -> tuple[Any, Array, Array, Array | None, Array | None, Any]:
    """``(xp, pred, target, weight, pos_weight, out_dtype)`` checked and in one floating dtype."""
    xp, (p, y, w, e) = as_arrays(pred, target, weight, extra, names=names)
    out_dtype = result_dtype(xp, p) if is_floating(xp, p) else result_dtype(xp, y)
    p0 = p
    p, y = to_float(xp, p, names[0]), to_float(xp, y, names[1])
    dt = xp.result_type(p, y)
    p, y = xp.astype(p, dt), xp.astype(y, dt)
    _check_binary(xp, p0 if is_integral(xp, p0) else p, y, names[0], names[0] == "probs")
    if w is not None:
        w = xp.astype(to_float(xp, w, names[2]), dt)
    if e is not None:
        e = xp.astype(to_float(xp, e, names[3]), dt)
    return xp, p, y, w, e, out_dtype


def _compute(
    xp: Any,
    pred: Array,
    y: Array,
    w: Array | None,
    pw: Array | None,
    reduction: str,
    from_logits: bool,
) -> Array:
    if any(wants_grad(v) for v in (pred, y, w, pw)):
        return _grad.autograd().bce_grad(pred, y, w, pw, reduction, from_logits=from_logits)
    return _formulas.binary_cross_entropy(xp, pred, y, w, pw, reduction, from_logits=from_logits)


@quiet
def binary_cross_entropy(
    probs: Array,
    target: Array,
    weight: Array | None = None,
    reduction: str = "mean",
) -> Any:
    r"""Binary cross-entropy on probabilities, exact down to subnormal probabilities.

    .. math::

        \ell = -y \log p - (1 - y) \operatorname{log1p}(-p), \qquad 0 \log 0 = 0 .

    No clamping: ``binary_cross_entropy(1e-50, 1) = 115.129...`` (torch clamps to 100). The
    argument order matters (``probs`` first, like ``F.binary_cross_entropy(pred, label)``): when
    ``probs`` holds only 0/1 values and ``target`` fractional ones, a ValueError says they look
    swapped instead of returning a silent wrong number.

    Args:
        probs: predicted probabilities in [0, 1].
        target: labels or soft labels in [0, 1], same shape as ``probs``.
        weight: optional elementwise weights (broadcast to ``probs``).
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.

    Returns:
        The loss in ``probs``' namespace and floating dtype.

    Raises:
        ValueError: shapes differ, values outside [0, 1], NaN target, swapped arguments.

    Example:
        >>> from logitlab import binary_cross_entropy
        >>> float(binary_cross_entropy([1e-50], [1.0]))
        115.12925464970229
        >>> binary_cross_entropy([0.9, 0.2], [1.0, 0.0], reduction="none")
        array([0.10536052, 0.22314355])

    References:
        Goodfellow, Bengio & Courville, *Deep Learning*, section 6.2.2, 2016.
    """

    check_reduction(reduction)
    xp, p, y, w, _, out_dtype = _bce_prepare(
        probs, target, weight, None, ["probs", "target", "weight", "_"]
    )
    if validation_enabled():
        bad = (p < 0) | (p > 1) | xp.isnan(p)
        if any_true(xp, bad):
            i = first_true(xp, bad)
            raise ValueError(
                f"probs must be probabilities in [0, 1]; probs{list(i)} = {pick(xp, p, i)!r} "
                "(for logits use binary_cross_entropy_with_logits)"
            )
    out = _compute(xp, p, y, w, None, reduction, False)
    return finish(xp, _formulas.plus_zero(out), out_dtype)


@quiet
def binary_cross_entropy_with_logits(
    logits: Array,
    target: Array,
    weight: Array | None = None,
    pos_weight: Array | None = None,
    reduction: str = "mean",
) -> Any:
    r"""Binary cross-entropy on logits, exact for every ``|x|`` and ``NaN``-free at ``±inf``.

    .. math::

        \ell = w_+\, y \operatorname{softplus}(-x) + (1 - y) \operatorname{softplus}(x),
        \qquad \operatorname{softplus}(x) = \max(x, 0) + \operatorname{log1p}(e^{-|x|}) .

    Both terms are non-negative, so there is no cancellation: ``x = -40, y = 0`` gives
    ``4.248e-18`` (torch: 0).

    Args:
        logits: real scores :math:`x`.
        target: labels or soft labels in [0, 1], same shape as ``logits``.
        weight: optional elementwise weights.
        pos_weight: weight :math:`w_+` of the positive term (broadcast along the last axis).
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.

    Returns:
        The loss in ``logits``' namespace and floating dtype.

    Raises:
        ValueError: shapes differ, target outside [0, 1] or NaN.

    Example:
        >>> from logitlab import binary_cross_entropy_with_logits as bce
        >>> float(bce([-40.0], [0.0]))
        4.248354255291589e-18
        >>> float(bce([float("inf"), float("-inf")], [1.0, 0.0], reduction="sum"))
        0.0

    References:
        M. Mächler, "Accurately computing log(1 - exp(-|a|))", Rmpfr vignette, 2012.
    """

    check_reduction(reduction)
    xp, x, y, w, pw, out_dtype = _bce_prepare(
        logits, target, weight, pos_weight, ["logits", "target", "weight", "pos_weight"]
    )
    out = _compute(xp, x, y, w, pw, reduction, True)
    return finish(xp, _formulas.plus_zero(out), out_dtype)

r"""Entropy, cross-entropy, binary cross-entropy, KL and JS divergence, perplexity.

Every function here is one implementation over the Python array API built on the decomposition of
:mod:`logitlab.special` (row maximum ``a``, distances ``d_i = a - x_i >= 0``, ``s`` = the sum of
``exp(-d_i)`` over all but one maximal entry). Each quantity is written as a sum of non-negative
terms so that no subtraction can cancel:

* entropy from logits: :math:`H = \operatorname{log1p}(s) + \frac{\sum_i d_i e^{-d_i}}{1 + s}`
  (the textbook ``lse - sum p x`` returns 2.73 instead of 0.582 for ``[1e4, 1e4 - 1]`` in float32)
* cross-entropy: :math:`-\log p_t = d_t + \operatorname{log1p}(s)`
* KL: :math:`\sum_i q_i\, h(u_i)` with :math:`u_i = \log(p_i / q_i)` and
  :math:`h(u) = u e^u - \operatorname{expm1}(u) \ge 0`, summed as a power series for
  :math:`|u| < 1` (relative accuracy when ``p`` is close to ``q``).

torch tensors that require grad go through :mod:`logitlab.torch._autograd`, whose backward passes
use the closed-form gradients (``softmax - target``, ...) with zeros wherever a logit is ``-inf``,
written with differentiable pieces so that ``create_graph=True`` gives exact derivatives of every
order (gradient penalties, Hessian-vector products).

References:
    Blanchard, Higham & Higham, "Accurately computing the log-sum-exp and softmax functions",
    IMA J. Numer. Anal. 41(4), 2021.

    C. E. Shannon, "A mathematical theory of communication", Bell Syst. Tech. J. 27, 1948.

    S. Kullback, R. A. Leibler, "On information and sufficiency", Ann. Math. Statist. 22, 1951.
"""

from __future__ import annotations

import math
from typing import Any

from logitlab import _fast
from logitlab._array import (
    _GUARDED,
    Array,
    any_true,
    as_arrays,
    check_probabilities,
    check_reduction,
    check_temperature,
    first_true,
    input_eps,
    is_floating,
    is_integral,
    normalize_axis,
    pick,
    quiet,
    result_dtype,
    scores_already_guarded,
    to_float,
    warn_if_probabilities,
)
from logitlab._config import validation_enabled
from logitlab.special import (
    _finish,
    _wants_grad,
    log1pexp_impl,
    log_softmax_impl,
    parts,
    softmax_impl,
    xlog1py_impl,
    xlogy_impl,
)

__all__ = [
    "entropy",
    "cross_entropy",
    "binary_cross_entropy",
    "binary_cross_entropy_with_logits",
    "kl_divergence",
    "js_divergence",
    "perplexity",
]


def _log_base(base: float | None) -> float:
    if base is None:
        return 1.0
    b = float(base)
    if not (b > 0 and b != 1 and math.isfinite(b)):
        raise ValueError(f"base must be a positive number other than 1, got {base!r}")
    return math.log(b)


def _plus_zero(x: Array) -> Array:
    """``x + 0``: turns ``-0.0`` into ``+0.0`` and leaves every other value (and gradient) as is.

    Every quantity of this module is >= 0, but a zero reached by a negation (``-sum(p log p)`` with
    ``p`` in {0, 1}, ``-log(1)``), by a division by ``log(base) < 0`` or by a product with a
    ``-0.0`` input would print as ``-0.0``. In round-to-nearest, ``-0 + 0 = +0`` (IEEE 754, 6.3).
    """
    return x + 0.0


def _reduce(xp: Any, loss: Array, reduction: str, denom: Array | float | None = None) -> Array:
    if reduction == "none":
        return loss
    total = xp.sum(loss)
    if reduction == "sum":
        return total
    if denom is None:
        n = math.prod(loss.shape)
        return total / n if n else xp.zeros_like(total)
    # An all-ignored (or zero-weight) batch has mean 0 with zero gradient, not 0/0 = NaN.
    denom = xp.asarray(denom, dtype=total.dtype) if not hasattr(denom, "shape") else denom
    safe = xp.where(denom == 0, xp.ones_like(denom), denom)
    return xp.where(denom == 0, xp.zeros_like(total), total / safe)


# --------------------------------------------------------------------------- entropy


def entropy_logits_impl(xp: Any, x: Array, axis: int) -> Array:
    if _fast.usable(x, axis):
        return _fast.entropy(x, lambda c: _entropy_logits_general(xp, c, 1))
    return _entropy_logits_general(xp, x, axis)


def _entropy_logits_general(xp: Any, x: Array, axis: int) -> Array:
    p = parts(xp, x, axis)
    # d_i * w_i is 0 for masked entries (w = 0, d = inf): never form inf * 0.
    dw = xp.where(p.w > 0, p.d * p.w, xp.zeros_like(p.w))
    h = xp.log1p(p.s) + xp.sum(dw, axis=axis, keepdims=True) / (1 + p.s)
    return xp.squeeze(h, axis=axis)


def entropy_probs_impl(xp: Any, p: Array, axis: int) -> Array:
    return -xp.sum(xlogy_impl(xp, p, p), axis=axis)


@quiet
def entropy(
    probs: Array | None = None,
    qk: Array | None = None,
    base: float | None = None,
    axis: int = -1,
    *,
    logits: Array | None = None,
) -> Any:
    r"""Shannon entropy of categorical distributions, from probabilities or from logits; with
    ``qk``, the relative entropy (KL divergence), as ``scipy.stats.entropy(pk, qk, base, axis)``.

    .. math::

        H(p) = -\sum_i p_i \log p_i, \qquad 0 \log 0 = 0, \qquad 0 \le H \le \log n .

    From logits the terms are all non-negative
    (:math:`H = \operatorname{log1p}(s) + \sum_i d_i e^{-d_i} / (1 + s)`), so near-deterministic
    rows (``[0, -30, -30, -30]``, where torch float32 is 3% off) and huge logits
    (``[1e4, 1e4 - 1]`` in float32) are exact to a few ulps.

    The positional form follows SciPy: ``entropy(p)``, ``entropy(p, base=2)``,
    ``entropy(p, q)`` = :math:`\mathrm{KL}(p \| q)` computed by :func:`kl_divergence` (exact as
    p → q, never negative). Deliberate differences from SciPy: the class axis defaults to the
    last one (SciPy: 0), and probabilities are validated, not renormalised.

    Args:
        probs: probabilities along ``axis`` (must be in [0, 1] and sum to 1); SciPy's ``pk``.
        qk: probabilities of a second distribution: return :math:`\mathrm{KL}(p \| q_k)`.
        base: logarithm base (``None``: nats; 2: bits).
        axis: the class axis.
        logits: unnormalised log-probabilities instead of ``probs`` (keyword only; exactly one of
            ``probs``/``logits``).

    Returns:
        Entropy (or relative entropy) per distribution (``axis`` removed), in the input's
        namespace and floating dtype; 0 over an empty class axis (an empty sum, as
        ``scipy.stats.entropy``).

    Raises:
        ValueError: both or neither of ``probs``/``logits`` given; probabilities outside [0, 1],
            NaN or not summing to 1 (see :func:`logitlab.set_validation`); bad ``base``/``axis``;
            ``qk`` of another shape.

    Warns:
        ProbabilitiesAsLogitsWarning: ``logits`` whose rows look like probabilities.

    Example:
        >>> from logitlab import entropy
        >>> float(entropy([0.5, 0.5], base=2))
        1.0
        >>> float(entropy(logits=[0.0, -30.0, -30.0, -30.0]))
        8.702589361018959e-12
        >>> float(entropy([0.5, 0.5], [0.25, 0.75], 2))  # KL in bits: 1 - log2(3) / 2
        0.2075187496394219

    References:
        C. E. Shannon, Bell Syst. Tech. J. 27, 1948; Blanchard, Higham & Higham 2021;
        SciPy, ``scipy.stats.entropy``.
    """
    if (probs is None) == (logits is None):
        raise ValueError("entropy() takes exactly one of probs=... or logits=...")
    if logits is not None:
        _warn_probabilities_as_logits(logits, axis, "entropy", "entropy(probs=...)")
    if qk is not None:
        with scores_already_guarded():
            return _divergence(False, probs, qk, logits, None, axis, base, "none")
    name = "probs" if logits is None else "logits"
    src: Any = probs if logits is None else logits
    lb = _log_base(base)
    if _wants_grad(src):
        from logitlab.torch._autograd import entropy_grad

        out = entropy_grad(src, axis, from_logits=logits is not None)
        return _plus_zero(out / lb if base is not None else out)
    xp, (arr,) = as_arrays(src, names=[name])
    out_dtype = result_dtype(xp, arr)
    eps = input_eps(arr)  # the tolerance of the dtype given, not of the float32 it is computed in
    arr = to_float(xp, arr, name)
    ax = normalize_axis(axis, arr.ndim, "axis")
    if logits is None:
        check_probabilities(xp, arr, "probs", ax, eps=eps)
        h = entropy_probs_impl(xp, arr, ax)
    else:
        h = entropy_logits_impl(xp, arr, ax)
    if base is not None:
        h = h / lb
    return _finish(xp, _plus_zero(h), out_dtype)


# --------------------------------------------------------------------------- cross-entropy


def _move_last(xp: Any, x: Array, axis: int) -> Array:
    return x if axis == x.ndim - 1 else xp.moveaxis(x, axis, -1)


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
        valid = xp.ones(tuple(x.shape[:-1]), dtype=xp.bool, device=_dev(x))
        base = target
    else:
        valid = target != ignore_index
        t_safe = xp.where(valid, target, xp.zeros_like(target))
        idx = xp.reshape(xp.arange(n_classes, device=_dev(x)), (1,) * (x.ndim - 1) + (-1,))
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
        denom = xp.ones(tuple(x.shape[:-1]), dtype=x.dtype, device=_dev(x))
    elif weight is not None:
        wt = xp.sum(
            xp.where(base > 0, xp.broadcast_to(weight, base.shape), xp.zeros_like(base)), axis=-1
        )
        denom = xp.where(valid, wt, xp.zeros_like(wt))
    else:
        denom = xp.astype(valid, x.dtype)
    return alpha, valid, denom


def _dev(x: Array) -> Any:
    from array_api_compat import device

    return device(x)


def _check_class_target(xp: Any, target: Array, n_classes: int, ignore_index: int) -> None:
    if not validation_enabled():
        return
    bad = (target != ignore_index) & ((target < 0) | (target >= n_classes))
    if any_true(xp, bad):
        i = first_true(xp, bad)
        raise ValueError(
            f"target[{', '.join(map(str, i))}] = {int(pick(xp, target, i))} is not a class index "
            f"in [0, {n_classes}) (and is not ignore_index={ignore_index})"
        )


def prepare_ce(
    logits: Array,
    target: Array,
    axis: int,
    weight: Array | None,
    label_smoothing: float,
    temperature: float,
    ignore_index: int = -100,
    *,
    name: str = "logits",
) -> tuple[Any, Array, Array, Array | None, bool, Any]:
    """Validate and convert cross-entropy inputs (class axis moved last); ``name`` is the
    scores' argument name in messages (``"probs"`` for the probability form)."""
    xp, (x, t, w) = as_arrays(logits, target, weight, names=[name, "target", "weight"])
    if not is_floating(xp, x) and not is_integral(xp, x):
        raise TypeError(f"{name} must be real numbers, got dtype {x.dtype}")
    out_dtype = result_dtype(xp, x)
    x = to_float(xp, x, name)
    ax = normalize_axis(axis, x.ndim)
    n_classes = x.shape[ax]
    x = _move_last(xp, x, ax)
    if not 0.0 <= float(label_smoothing) <= 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1], got {label_smoothing!r}")
    t_val = check_temperature(temperature)
    if not 0 < t_val < math.inf:
        raise ValueError(f"temperature must be positive and finite, got {temperature!r}")
    soft = is_floating(xp, t)
    if soft:
        if t.ndim != x.ndim:
            raise ValueError(
                f"probability target must have the {name}' shape {tuple(_move_back(x, ax))}, "
                f"got {tuple(t.shape)} (class-index targets must be integers)"
            )
        t_eps = input_eps(t)
        t = _move_last(xp, xp.astype(t, x.dtype), ax)
        if tuple(t.shape) != tuple(x.shape):
            raise ValueError(
                f"probability target has shape {tuple(_move_back(t, ax))}, {name} have "
                f"{tuple(_move_back(x, ax))}"
            )
        check_probabilities(xp, t, "target", -1, eps=t_eps)
    else:
        if not is_integral(xp, t) or xp.isdtype(t.dtype, "bool"):
            raise TypeError(
                f"target must hold integer class indices or probabilities, got {t.dtype}"
            )
        if n_classes == 0:
            # torch raises for any target here; an all-ignored batch would be the only valid
            # input, and only a value check could tell it apart (probability targets: the loss is
            # an empty sum, 0)
            raise ValueError(
                f"logits has no classes: its axis {axis} has length 0 (shape "
                f"{tuple(_move_back(x, ax))}), and a class-index target needs at least one class"
            )
        expected = tuple(x.shape[:-1])
        if tuple(t.shape) != expected:
            raise ValueError(
                f"target has shape {tuple(t.shape)}, expected {expected} ({name}' shape without "
                f"the class axis {axis})"
            )
        _check_class_target(xp, t, n_classes, ignore_index)
    if w is not None:
        w = to_float(xp, w, "weight")
        if tuple(w.shape) != (n_classes,):
            raise ValueError(f"weight must have shape ({n_classes},), got {tuple(w.shape)}")
        if validation_enabled() and any_true(xp, (w < 0) | xp.isnan(w)):
            raise ValueError("weight must be non-negative and not NaN")
        w = xp.astype(w, x.dtype)
    return xp, x, t, w, soft, out_dtype


def _move_back(x: Array, ax: int) -> tuple[int, ...]:
    shape = list(x.shape)
    last = shape.pop()
    shape.insert(ax, last)
    return tuple(shape)


@quiet
def cross_entropy(
    logits: Array | None = None,
    target: Array | None = None,
    axis: int = -1,
    ignore_index: int = -100,
    label_smoothing: float = 0.0,
    weight: Array | None = None,
    reduction: str = "mean",
    temperature: float = 1.0,
    *,
    probs: Array | None = None,
) -> Any:
    r"""Cross-entropy between targets and ``softmax(logits / T)`` (or given probabilities), exact
    to a few ulps.

    For a class target :math:`t` with label smoothing :math:`\varepsilon` and class weights
    :math:`w`:

    .. math::

        \ell = (1 - \varepsilon)\, w_t\, (-\log p_t)
             + \frac{\varepsilon}{|F|} \sum_{c \in F} w_c\, (-\log p_c),
        \qquad -\log p_c = \frac{a - x_c}{T} + \operatorname{log1p}(s),

    where :math:`F` is the set of classes with a finite logit (torch spreads :math:`\varepsilon`
    over all classes and returns inf when some are masked with ``-inf``; the two agree when none
    is). Probability targets :math:`y` (soft labels) give :math:`\ell = \sum_c w_c y_c (-\log p_c)`.

    **The probability form** ``cross_entropy(probs=p, target=...)`` takes the predicted
    distribution itself (validated: in [0, 1], rows summing to 1 within the tolerance of its
    dtype) and uses :math:`-\log p_c` as given: no renormalisation, no clamping (``p_t = 1e-300``
    gives 690.78, ``p_t = 0`` gives ``inf``); classes with :math:`p_c = 0` play the part of masked
    logits for label smoothing. Same targets, weights, ``ignore_index``, smoothing and reductions;
    ``temperature`` must be 1. For torch tensors that require grad the gradient is
    :math:`\partial \ell / \partial p_c = -\alpha_c / p_c` (0 where :math:`\alpha_c = 0`),
    through torch's autograd (so double backward works too).

    **Probabilities passed as logits** are a silent wrong number (``softmax(p)`` is not ``p``):
    ``cross_entropy([.7, .2, .1], [.5, .3, .2])`` is 1.038, the cross-entropy of the two
    distributions is 1.122. While validation is on, ``logits`` whose rows all lie in [0, 1] and
    sum to 1 raise a :class:`~logitlab.ProbabilitiesAsLogitsWarning` that names ``probs=``.

    Reductions follow torch: ``"mean"`` divides by :math:`\sum w_{t}` over non-ignored rows (class
    targets) or by the number of rows (probability targets). **An all-ignored batch has mean 0 and
    zero gradient** (torch returns NaN). The gradient with respect to the logits is
    :math:`(p \sum_c \alpha_c - \alpha)/T` with :math:`\alpha` the target weights above: zero on
    masked classes, never NaN.

    Args:
        logits: unnormalised scores, class axis ``axis`` (exactly one of ``logits``/``probs``).
        target: integer class indices (shape of ``logits`` without ``axis``) or probabilities
            (shape of ``logits``).
        axis: the class axis of ``logits``.
        ignore_index: class-index value whose rows contribute nothing.
        label_smoothing: :math:`\varepsilon \in [0, 1]`.
        weight: per-class weights, shape ``(C,)``.
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.
        temperature: divide logits by ``T > 0``.
        probs: predicted probabilities instead of ``logits`` (keyword only).

    Returns:
        The loss (scalar, or per row for ``"none"``) in the scores' namespace and floating dtype.
        Probability targets over an empty class axis give 0 per row (an empty sum).

    Raises:
        ValueError: shape mismatch, class index out of range (index and number of classes are
            reported), class-index targets with an empty class axis, probability targets outside
            [0, 1] or not summing to 1, NaN targets, bad
            ``reduction``/``label_smoothing``/``temperature``; both or neither of
            ``logits``/``probs``; ``probs`` not probabilities.
        TypeError: non-numeric inputs or boolean targets; no ``target``.

    Warns:
        ProbabilitiesAsLogitsWarning: ``logits`` look like probabilities (validation on).

    Example:
        >>> from logitlab import cross_entropy
        >>> float(cross_entropy([[0.0, -40.0]], [0]))
        4.248354255291589e-18
        >>> round(float(cross_entropy(probs=[0.7, 0.2, 0.1], target=[0.5, 0.3, 0.2])), 6)
        1.121685
        >>> float(cross_entropy([[2.0, 0.0, float("-inf")]], [0], label_smoothing=0.1))
        0.2269280110429725
        >>> float(cross_entropy([[1.0, 2.0]], [-100]))
        0.0

    References:
        Szegedy et al., "Rethinking the Inception architecture" (label smoothing), CVPR 2016;
        Blanchard, Higham & Higham 2021.
    """
    check_reduction(reduction)
    if target is None:
        raise TypeError("cross_entropy() needs a target (class indices or probabilities)")
    if (logits is None) == (probs is None):
        raise ValueError("cross_entropy() takes exactly one of logits or probs=...")
    if logits is None:
        return _cross_entropy_probs(
            probs, target, axis, ignore_index, label_smoothing, weight, reduction, temperature
        )
    _warn_probabilities_as_logits(logits, axis, "cross_entropy", "cross_entropy(probs=...)")
    if _wants_grad(logits) and _fused_ok(logits, target, axis):
        # class targets on a 2-D tensor: the fused kernel (loss and gradient in one visit of
        # each row; same semantics)
        from logitlab.torch.cross_entropy import cross_entropy as fused

        w = weight
        if w is not None and not hasattr(w, "dtype"):
            import torch

            w = torch.as_tensor(w, dtype=logits.dtype, device=logits.device)
        return fused(logits, target, axis, ignore_index, label_smoothing, w, reduction, temperature)
    if _wants_grad(logits) or _wants_grad(target) or _wants_grad(weight):
        from logitlab.torch._autograd import cross_entropy_grad

        return cross_entropy_grad(
            logits, target, axis, ignore_index, label_smoothing, weight, reduction, temperature
        )
    xp, x, t, w, soft, out_dtype = prepare_ce(
        logits, target, axis, weight, label_smoothing, temperature, int(ignore_index)
    )
    if not soft and not label_smoothing and _fast.usable(x, x.ndim - 1):
        loss, denom = _ce_class_fast(xp, x, t, w, int(ignore_index), float(temperature))
        return _finish(xp, _plus_zero(_reduce(xp, loss, reduction, xp.sum(denom))), out_dtype)
    loss, _, _, denom = ce_coefficients(
        xp,
        x,
        t,
        soft=soft,
        ignore_index=ignore_index,
        label_smoothing=label_smoothing,
        weight=w,
        temperature=float(temperature),
    )
    out = _reduce(xp, loss, reduction, xp.sum(denom))
    return _finish(xp, _plus_zero(out), out_dtype)


def _warn_probabilities_as_logits(
    logits: Any, axis: int, fn: str, instead: str, name: str = "logits"
) -> None:
    """:func:`~logitlab._array.warn_if_probabilities` on the raw argument (read, never cast)."""
    if not validation_enabled() or logits is None or _GUARDED.get():
        return
    xp, (x,) = as_arrays(logits, names=[name])
    # a bad axis is left to the caller's own check, which names it
    if x.ndim and is_floating(xp, x) and isinstance(axis, int) and -x.ndim <= axis < x.ndim:
        warn_if_probabilities(
            xp, x, normalize_axis(axis, x.ndim), fn=fn, instead=instead, name=name
        )


def _cross_entropy_probs(
    probs: Array,
    target: Array,
    axis: int,
    ignore_index: int,
    label_smoothing: float,
    weight: Array | None,
    reduction: str,
    temperature: float,
) -> Any:
    r"""The probability form of :func:`cross_entropy`: :math:`\sum_c \alpha_c (-\log p_c)`.

    Plain array-API operations, so that torch's autograd differentiates it (first and second
    order): :math:`-\log p_c` is taken of ``p_c`` where :math:`\alpha_c > 0` and of 1 elsewhere,
    so classes without target mass get gradient 0, never ``0 * inf``.
    """
    if float(temperature) != 1.0:
        raise ValueError(
            "temperature scales logits: with probs=... it must be 1 (for softmax(log(p) / T) "
            "pass logits=log(p))"
        )
    eps = input_eps(probs)
    xp, p, t, w, soft, out_dtype = prepare_ce(
        probs, target, axis, weight, label_smoothing, 1.0, int(ignore_index), name="probs"
    )
    check_probabilities(xp, p, "probs", -1, eps=eps)
    alpha, _, denom = target_weights(
        xp,
        p,
        t,
        p > 0,
        soft=soft,
        ignore_index=int(ignore_index),
        label_smoothing=float(label_smoothing),
        weight=w,
    )
    used = alpha != 0
    nll = -xp.log(xp.where(used, p, xp.ones_like(p)))  # exact for tiny p; p = 0 gives inf
    loss = xp.sum(xp.where(used, alpha * nll, xp.zeros_like(nll)), axis=-1)
    out = _reduce(xp, loss, reduction, xp.sum(denom))
    return _finish(xp, _plus_zero(out), out_dtype)


def _ce_class_fast(
    xp: Any, x: Array, t: Array, w: Array | None, ignore_index: int, temperature: float
) -> tuple[Array, Array]:
    """Class-target CE without smoothing on the row-chunked path: ``w_t (d_t + log1p(s))``."""
    valid = t != ignore_index
    t_safe = xp.where(valid, t, xp.zeros_like(t))

    def general(c: Array, tc: Array) -> Array:
        loss, _, _, _ = ce_coefficients(
            xp,
            c,
            tc,
            soft=False,
            ignore_index=-1,
            label_smoothing=0.0,
            weight=None,
            temperature=temperature,
        )
        return loss

    nll = _fast.nll_class(x, t_safe, temperature, general)
    wt = xp.ones_like(nll) if w is None else xp.take(w, xp.reshape(t_safe, (-1,)))
    wt = xp.reshape(wt, tuple(nll.shape))
    denom = xp.where(valid, wt, xp.zeros_like(wt))
    loss = denom * xp.where(denom == 0, xp.zeros_like(nll), nll)
    return loss, denom


def _fused_ok(logits: Any, target: Any, axis: int) -> bool:
    import torch

    return (
        isinstance(target, torch.Tensor)
        and not target.is_floating_point()
        and target.dtype != torch.bool
        and logits.ndim == 2
        and axis in (-1, 1)
        and target.device == logits.device
    )


# --------------------------------------------------------------------------- binary CE


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


def bce_probs_impl(xp: Any, p: Array, y: Array) -> Array:
    # -y log p - (1 - y) log1p(-p): log1p keeps tiny p exact and there is no clamp (torch clamps
    # log at -100, so BCE(1e-50, 1) = 100 instead of 115.13).
    return -xlogy_impl(xp, y, p) - xlog1py_impl(xp, 1 - y, -p)


def bce_logits_impl(xp: Any, x: Array, y: Array, pos_weight: Array | None) -> Array:
    # Two non-negative terms w y softplus(-x) + (1 - y) softplus(x): no cancellation for any x, y
    # in [0, 1]; 0 * inf is taken as 0 so x = +-inf gives 0 or inf, never NaN.
    a = log1pexp_impl(xp, -x)
    b = log1pexp_impl(xp, x)
    pos = y if pos_weight is None else pos_weight * y
    ta = pos * xp.where(pos == 0, xp.zeros_like(a), a)
    tb = (1 - y) * xp.where(y == 1, xp.zeros_like(b), b)
    return ta + tb


def _bce_prepare(
    pred: Array, target: Array, weight: Array | None, extra: Array | None, names: list[str]
) -> tuple[Any, Array, Array, Array | None, Array | None, Any]:
    xp, (p, y, w, e) = as_arrays(pred, target, weight, extra, names=names)
    out_dtype = result_dtype(xp, p) if is_floating(xp, p) else result_dtype(xp, y)
    p0, y0 = p, y
    p, y = to_float(xp, p, names[0]), to_float(xp, y, names[1])
    dt = xp.result_type(p, y)
    p, y = xp.astype(p, dt), xp.astype(y, dt)
    _check_binary(xp, p0 if is_integral(xp, p0) else p, y, names[0], names[0] == "probs")
    del y0
    if w is not None:
        w = xp.astype(to_float(xp, w, names[2]), dt)
    if e is not None:
        e = xp.astype(to_float(xp, e, names[3]), dt)
    return xp, p, y, w, e, out_dtype


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
    if _wants_grad(probs) or _wants_grad(target) or _wants_grad(weight):
        from logitlab.torch._autograd import bce_grad

        return bce_grad(probs, target, weight, None, reduction, from_logits=False)
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
    loss = bce_probs_impl(xp, p, y)
    if w is not None:
        loss = loss * w
    return _finish(xp, _plus_zero(_reduce(xp, loss, reduction)), out_dtype)


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
    if any(_wants_grad(v) for v in (logits, target, weight, pos_weight)):
        from logitlab.torch._autograd import bce_grad

        return bce_grad(logits, target, weight, pos_weight, reduction, from_logits=True)
    xp, x, y, w, pw, out_dtype = _bce_prepare(
        logits, target, weight, pos_weight, ["logits", "target", "weight", "pos_weight"]
    )
    loss = bce_logits_impl(xp, x, y, pw)
    if w is not None:
        loss = loss * w
    return _finish(xp, _plus_zero(_reduce(xp, loss, reduction)), out_dtype)


# --------------------------------------------------------------------------- KL / JS

# h(u) = u e^u - expm1(u) = sum_{n >= 2} (n - 1) / n! u^n: coefficients fall factorially, so 19
# terms reach float64 precision for |u| < 1, where the closed form cancels (h ~ u^2 / 2).
_H_COEFFS = [(n - 1) / math.factorial(n) for n in range(2, 21)]


def _h_series(xp: Any, u: Array) -> Array:
    acc = xp.zeros_like(u) + _H_COEFFS[-1]
    for c in reversed(_H_COEFFS[:-1]):
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
    series = q * _h_series(xp, u_s)
    large = p * (u - 1) + q
    out = xp.where(small, series, large)
    out = xp.where(p == 0, q, out)
    out = xp.where(xp.isnan(p) | xp.isnan(q) | xp.isnan(u), xp.full_like(out, math.nan), out)
    return xp.maximum(out, xp.zeros_like(out))


def _log_ratio_probs(xp: Any, p: Array, q: Array) -> Array:
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


def _dist_input(
    xp: Any,
    probs: Array | None,
    logits: Array | None,
    axis: int,
    name: str,
    eps: float | None = None,
) -> tuple[Array, Array | None]:
    """(probabilities, log-probabilities or None) of one distribution argument (exactly one of
    ``probs`` / ``logits`` is given: :func:`_two_dists` checks it; ``eps``: machine epsilon of
    the dtype the probabilities were given in)."""
    if logits is not None:
        return softmax_impl(xp, logits, axis), log_softmax_impl(xp, logits, axis)
    # torch's F.kl_div(input, target) takes log q first and returns KL(target || q): a port of
    # it hands log-probabilities to p
    hint = f"log-probabilities or logits? use {name}_logits=...; kl_divergence(p, q) is KL(p || q)"
    check_probabilities(xp, probs, name, axis, eps=eps, hint=hint)
    return probs, None


def _two_dists(
    p: Array | None,
    q: Array | None,
    p_logits: Array | None,
    q_logits: Array | None,
    axis: int,
) -> tuple[Any, Array, Array, Array, int, Any]:
    """Convert and check a pair of distributions; returns ``(xp, p, q, u, axis, dtype)``.

    ``u = log(p / q)`` elementwise (0 where either probability is 0), computed as accurately as the
    inputs allow (see :func:`_log_ratio`).
    """
    if (p is None) == (p_logits is None) or (q is None) == (q_logits is None):
        raise ValueError("give exactly one of p / p_logits and exactly one of q / q_logits")
    names = ["p", "q", "p_logits", "q_logits"]
    xp, arrs = as_arrays(p, q, p_logits, q_logits, names=names)
    first = next(a for a in arrs if a is not None)
    out_dtype = result_dtype(xp, first)
    eps_p, eps_q = input_eps(arrs[0]), input_eps(arrs[1])
    arrs = [None if a is None else to_float(xp, a, n) for a, n in zip(arrs, names, strict=True)]
    dt = xp.result_type(*[a for a in arrs if a is not None])
    arrs = [None if a is None else xp.astype(a, dt) for a in arrs]
    given = [a for a in arrs if a is not None]
    if tuple(given[0].shape) != tuple(given[1].shape):
        raise ValueError(
            f"the two distributions have different shapes {tuple(given[0].shape)} and "
            f"{tuple(given[1].shape)}"
        )
    ax = normalize_axis(axis, given[0].ndim)
    pp, lp = _dist_input(xp, arrs[0], arrs[2], ax, "p", eps_p)
    qq, lq = _dist_input(xp, arrs[1], arrs[3], ax, "q", eps_q)
    u = _log_ratio(xp, pp, qq, lp, lq, arrs[2], arrs[3], ax)
    return xp, pp, qq, u, ax, out_dtype


def _log_ratio(
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
        return _log_ratio_probs(xp, pp, qq)
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


def kl_impl(xp: Any, pp: Array, qq: Array, u: Array, ax: int) -> Array:
    return xp.sum(kl_terms(xp, pp, qq, u), axis=ax)


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

    Every term is non-negative (the rewrite adds :math:`\sum q_i - p_i = 0`), so the result is
    never negative and keeps *relative* accuracy when :math:`p \approx q`: a perturbation of
    1e-6 gives the right 1e-13-sized answer, where ``sum(p * log(p / q))`` (and
    ``scipy.stats.entropy(p, q)``) returns rounding noise, sometimes negative.

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
        >>> p = np.array([0.5 + 1e-6, 0.5 - 1e-6])
        >>> float(kl_divergence(p, np.array([0.5, 0.5])))  # exact: 2.0000000000053e-12
        2.0000000000053334e-12
        >>> float(kl_divergence(p_logits=[0.0, 0.0], q_logits=[0.0, float("-inf")]))
        inf

    References:
        Kullback & Leibler, Ann. Math. Statist. 22, 1951.
    """
    return _divergence(False, p, q, p_logits, q_logits, axis, base, reduction)


def _divergence(
    js: bool,
    p: Array | None,
    q: Array | None,
    p_logits: Array | None,
    q_logits: Array | None,
    axis: int,
    base: float | None,
    reduction: str,
) -> Any:
    """The shared body of :func:`kl_divergence` (``js=False``) and :func:`js_divergence`."""
    check_reduction(reduction)
    fn = "js_divergence" if js else "kl_divergence"
    for name, a in (("p_logits", p_logits), ("q_logits", q_logits)):
        if a is not None:
            _warn_probabilities_as_logits(a, axis, fn, f"{fn}({name[0]}=...)", name=name)
    if any(_wants_grad(a) for a in (p, q, p_logits, q_logits)):
        from logitlab.torch._autograd import js_grad, kl_grad

        out = (js_grad if js else kl_grad)(p, q, p_logits, q_logits, axis)
        out = out / _log_base(base) if base is not None else out
        return _plus_zero(_reduce(_torch_xp(), out, reduction))
    xp, pp, qq, u, ax, out_dtype = _two_dists(p, q, p_logits, q_logits, axis)
    d = js_impl(xp, pp, qq, u, ax) if js else kl_impl(xp, pp, qq, u, ax)
    if base is not None:
        d = d / _log_base(base)
    return _finish(xp, _plus_zero(_reduce(xp, d, reduction)), out_dtype)


def _torch_xp() -> Any:
    import array_api_compat.torch as xp

    return xp


def _log_half_ratio(xp: Any, u: Array) -> Array:
    """``log(p / m)`` with ``m = (p + q) / 2`` from ``u = log(p / q)``: ``log(2 / (1 + e^-u))``.

    For ``|u| <= 1`` it is ``log1p(tanh(u / 2))`` (relative accuracy as p -> q); beyond, where
    ``1 - tanh`` would round away the small side, ``log 2 - softplus(-u)`` (no cancellation).
    """
    small = xp.abs(u) <= 1
    us = xp.where(small, u, xp.zeros_like(u))
    near = xp.log1p(xp.tanh(us / 2))
    far = math.log(2.0) - log1pexp_impl(xp, -xp.where(small, xp.ones_like(u), u))
    return xp.where(small, near, far)


def js_impl(xp: Any, pp: Array, qq: Array, u: Array, ax: int) -> Array:
    m = (pp + qq) / 2
    up = _log_half_ratio(xp, u)
    uq = _log_half_ratio(xp, -u)
    return (xp.sum(kl_terms(xp, pp, m, up), axis=ax) + xp.sum(kl_terms(xp, qq, m, uq), axis=ax)) / 2


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
    return _divergence(True, p, q, p_logits, q_logits, axis, base, reduction)


@quiet
def perplexity(
    logits: Array | None = None,
    target: Array | None = None,
    axis: int = -1,
    ignore_index: int = -100,
    temperature: float = 1.0,
    *,
    probs: Array | None = None,
) -> Any:
    r"""Perplexity :math:`\exp(\overline{\mathrm{NLL}})` of class targets under ``softmax(logits)``
    (or under given probabilities).

    .. math::

        \mathrm{PPL} = \exp\Big(\frac{1}{|V|}\sum_{i \in V} -\log p_{i, t_i}\Big),

    over the non-ignored positions :math:`V`, with the exact cross-entropy of
    :func:`cross_entropy`. An all-ignored input gives 1 (mean NLL 0).

    Args:
        logits: scores with the class axis ``axis`` (exactly one of ``logits``/``probs``).
        target: integer class indices (``ignore_index`` rows are skipped).
        axis: the class axis.
        ignore_index: index value to skip.
        temperature: divide logits by ``T > 0``.
        probs: predicted probabilities instead of ``logits`` (keyword only; see
            :func:`cross_entropy`).

    Returns:
        Scalar perplexity in the scores' namespace and floating dtype.

    Raises:
        ValueError: as for :func:`cross_entropy`.

    Warns:
        ProbabilitiesAsLogitsWarning: ``logits`` look like probabilities (validation on).

    Example:
        >>> from logitlab import perplexity
        >>> float(perplexity([[0.0, 0.0, 0.0, 0.0]], [2]))
        4.0
        >>> float(perplexity(probs=[[0.5, 0.25, 0.25]], target=[1]))
        4.0

    References:
        Jelinek et al., "Perplexity — a measure of the difficulty of speech recognition tasks",
        JASA 62(S1), 1977.
    """
    if logits is not None and probs is None:
        _warn_probabilities_as_logits(logits, axis, "perplexity", "perplexity(probs=...)")
    with scores_already_guarded():
        nll = cross_entropy(
            logits,
            target,
            axis=axis,
            ignore_index=ignore_index,
            temperature=temperature,
            probs=probs,
        )
    from array_api_compat import array_namespace

    return array_namespace(nll).exp(nll)

"""Cross-entropy of logits or probabilities against class or probability targets, and
perplexity: argument checks, the autograd dispatch, and the formulas of
:mod:`logitlab._formulas.ce`."""

from __future__ import annotations

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
from logitlab._checks import (
    CEOptions,
    ce_options,
    check_class_indices,
    check_probabilities,
    exactly_one,
    input_eps,
    normalize_axis,
    scores_already_guarded,
)
from logitlab._config import validation_enabled
from logitlab.losses._common import move_back, move_last, warn_probabilities_as_logits

__all__ = ["cross_entropy", "perplexity", "prepare_ce"]


def prepare_ce(
    scores: Array,
    target: Array,
    axis: int,
    weight: Array | None,
    opts: CEOptions,
    *,
    name: str = "logits",
) -> tuple[Any, Array, Array, Array | None, bool, Any]:
    """Check and convert cross-entropy inputs: ``(xp, scores, target, weight, soft, out_dtype)``
    with the class axis moved last, in the compute dtype; ``soft``: probability targets.
    ``name`` is the scores' argument name in messages (``"probs"`` for the probability form).

    Raises:
        TypeError: non-numeric scores, boolean or non-integer class targets.
        ValueError: shapes that do not fit, class indices out of range, probability targets that
            are not distributions, class-index targets over zero classes, negative or NaN weights.
    """
    xp, (x, t, w) = as_arrays(scores, target, weight, names=[name, "target", "weight"])
    if not is_floating(xp, x) and not is_integral(xp, x):
        raise TypeError(f"{name} must be real numbers, got dtype {x.dtype}")
    out_dtype = result_dtype(xp, x)
    whole = is_integral(xp, x)
    x = to_float(xp, x, name)
    ax = normalize_axis(axis, x.ndim)
    n_classes = x.shape[ax]
    x = move_last(xp, x, ax)
    soft = is_floating(xp, t)
    if soft:
        if x.ndim == 1 and t.ndim == 2 and (whole or bool(xp.all(x == xp.round(x)))):
            # cross_entropy(labels, logits): the order of scikit-learn's log_loss(y_true, ...)
            raise ValueError(
                f"cross_entropy({name}, target): the arguments look swapped: {name} holds only "
                f"whole numbers, shape {tuple(x.shape)}, while target holds scores, shape "
                f"{tuple(t.shape)}. logitlab takes the scores first, like torch: "
                f"cross_entropy({name}, target)"
            )
        if t.ndim != x.ndim:
            raise ValueError(
                f"probability target must have the {name}' shape {move_back(x, ax)}, "
                f"got {tuple(t.shape)} (class-index targets must be integers)"
            )
        t_eps = input_eps(t)
        t = move_last(xp, xp.astype(t, x.dtype), ax)
        if tuple(t.shape) != tuple(x.shape):
            raise ValueError(
                f"probability target has shape {move_back(t, ax)}, {name} have {move_back(x, ax)}"
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
                f"{name} has no classes: its axis {axis} has length 0 (shape "
                f"{move_back(x, ax)}), and a class-index target needs at least one class"
            )
        expected = tuple(x.shape[:-1])
        if tuple(t.shape) != expected:
            raise ValueError(
                f"target has shape {tuple(t.shape)}, expected {expected} ({name}' shape without "
                f"the class axis {axis})"
            )
        # one index dtype for every backend: torch's gather wants int64, and uint8 would not
        # even compare with a negative ignore_index on array-api-strict
        if t.dtype != xp.int64:
            t = xp.astype(t, xp.int64)
        check_class_indices(xp, t, n_classes, opts.ignore_index)
    if w is not None:
        w = to_float(xp, w, "weight")
        if tuple(w.shape) != (n_classes,):
            raise ValueError(f"weight must have shape ({n_classes},), got {tuple(w.shape)}")
        if validation_enabled() and bool(xp.any((w < 0) | xp.isnan(w))):
            raise ValueError("weight must be non-negative and not NaN")
        w = xp.astype(w, x.dtype)
    return xp, x, t, w, soft, out_dtype


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

    opts = ce_options(
        ignore_index=ignore_index,
        label_smoothing=label_smoothing,
        temperature=temperature,
        reduction=reduction,
    )
    if target is None:
        raise TypeError("cross_entropy() needs a target (class indices or probabilities)")
    if exactly_one("cross_entropy", logits=logits, probs=probs) == "probs":
        if opts.temperature != 1.0:
            raise ValueError(
                "temperature scales logits: with probs=... it must be 1 (for softmax(log(p) / T) "
                "pass logits=log(p))"
            )
        eps = input_eps(probs)
        xp, p, t, w, soft, out_dtype = prepare_ce(probs, target, axis, weight, opts, name="probs")
        check_probabilities(xp, p, "probs", -1, eps=eps)
        out = _formulas.cross_entropy_probs(xp, p, t, w, soft, opts)
        return finish(xp, _formulas.plus_zero(out), out_dtype)
    warn_probabilities_as_logits(logits, axis, "cross_entropy", "cross_entropy(probs=...)")
    xp, x, t, w, soft, out_dtype = prepare_ce(logits, target, axis, weight, opts)
    if wants_grad(x) or wants_grad(t) or wants_grad(w):
        out = _grad.autograd().cross_entropy_grad(x, t, w, soft, opts)
    else:
        out = _formulas.cross_entropy(xp, x, t, w, soft, opts)
    return finish(xp, _formulas.plus_zero(out), out_dtype)


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
        warn_probabilities_as_logits(logits, axis, "perplexity", "perplexity(probs=...)")
    with scores_already_guarded():
        nll = cross_entropy(
            logits,
            target,
            axis=axis,
            ignore_index=ignore_index,
            temperature=temperature,
            probs=probs,
        )
    xp, (v,) = as_arrays(nll, names=["nll"])
    return xp.exp(v)

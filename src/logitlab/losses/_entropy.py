"""Shannon entropy from probabilities or from logits (SciPy's positional form with ``qk``)."""

from __future__ import annotations

from typing import Any

from logitlab import _formulas, _grad, _rows
from logitlab._array import Array, as_arrays, finish, quiet, result_dtype, to_float, wants_grad
from logitlab._checks import (
    check_base,
    check_probabilities,
    exactly_one,
    input_eps,
    normalize_axis,
    scores_already_guarded,
)
from logitlab.losses._common import warn_probabilities_as_logits

__all__ = ["entropy"]


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

    from_logits = exactly_one("entropy", probs=probs, logits=logits) == "logits"
    if from_logits:
        warn_probabilities_as_logits(logits, axis, "entropy", "entropy(probs=...)")
    if qk is not None:
        from logitlab.losses._divergence import divergence

        with scores_already_guarded():
            return divergence(False, probs, qk, logits, None, axis, base, "none")
    lb = check_base(base)
    name = "logits" if from_logits else "probs"
    xp, (arr,) = as_arrays(logits if from_logits else probs, names=[name])
    out_dtype = result_dtype(xp, arr)
    eps = input_eps(arr)  # the tolerance of the dtype given, not of the float32 it is computed in
    arr = to_float(xp, arr, name)
    ax = normalize_axis(axis, arr.ndim, "axis")
    if not from_logits:
        check_probabilities(xp, arr, "probs", ax, eps=eps)
    if wants_grad(arr):
        h = _grad.autograd().entropy_grad(arr, ax, from_logits=from_logits)
    elif from_logits:
        h = _rows.entropy(xp, arr, ax)
    else:
        h = _formulas.entropy_probs(xp, arr, ax)
    if base is not None:
        h = h / lb
    return finish(xp, _formulas.plus_zero(h), out_dtype)

"""Log-sum-exp, softmax, log-softmax and the small stable helpers (softplus, log1mexp, xlogy).

One implementation over the Python array API: NumPy arrays, torch tensors (CPU and CUDA), any
array-API array, and Python lists/scalars all go through the same code, and the result has the
input's namespace, device and (floating) dtype. torch tensors that require grad are routed through
:mod:`logitlab.torch._autograd`, whose backward passes use the closed-form gradients below (never
``0 * inf``), written with differentiable pieces: ``create_graph=True`` gives exact derivatives of
every order.

The shared decomposition
------------------------
For one row ``x`` with maximum ``a`` at index ``k``, let ``d_i = (a - x_i) / T >= 0`` and
``w_i = exp(-d_i)``, and let ``s = sum_{i != k} w_i`` exclude exactly one maximal entry (other ties
contribute ``exp(0) = 1``). Then, with no cancellation anywhere,

* ``lse(x / T) = a / T + log1p(s)``
* ``softmax_i = w_i / (1 + s)``  (``w_k = 1``)
* ``log_softmax_i = -d_i - log1p(s)``

``log1p(s)`` keeps ``s`` when ``s < eps``: ``lse([0, -40]) = 4.248e-18``, where
``log(sum(exp(x - a)))`` returns 0. This is the algorithm of Blanchard, Higham & Higham (2021).

Non-finite rows: a row whose maximum is ``+inf`` behaves as the limit (its ``+inf`` entries share
the mass equally); a row of only ``-inf`` has ``lse = -inf`` and behaves like a row of equal logits
(uniform softmax) so that fully masked rows never produce NaN; a NaN anywhere in a row makes the
row's results NaN.

References:
    P. Blanchard, D. J. Higham, N. J. Higham, "Accurately computing the log-sum-exp and softmax
    functions", IMA J. Numer. Anal. 41(4):2311-2330, 2021. https://doi.org/10.1093/imanum/draa038

    M. Mächler, "Accurately computing log(1 - exp(-|a|)) assessed by the Rmpfr package", 2012.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

from logitlab import _formulas, _grad, _rows
from logitlab._array import (
    Array,
    as_arrays,
    finish,
    is_half,
    quiet,
    result_dtype,
    to_float,
    wants_grad,
)
from logitlab._checks import check_temperature, normalize_axes
from logitlab._config import validation_enabled

__all__ = [
    "logsumexp",
    "softmax",
    "log_softmax",
    "log1pexp",
    "log1mexp",
    "xlogy",
    "xlog1py",
]


# --------------------------------------------------------------------------- shared numerics


def _prepare(x: object, name: str) -> tuple[Any, Array, Any]:
    xp, (arr,) = as_arrays(x, names=[name])
    out_dtype = result_dtype(xp, arr)
    return xp, to_float(xp, arr, name), out_dtype


Axis = int | tuple[int, ...] | None


class Merged(NamedTuple):
    """An input with the axes of a reduction moved last and merged into one (see
    :func:`merge_axes`)."""

    x: Array  # the input, reshaped (or the input itself for a single axis)
    axis: int  # the one axis of ``x`` that stands for the reduced axes
    kept: tuple[int, ...]  # the input's shape with the reduced axes set to 1 (keepdims)
    perm: tuple[int, ...] | None  # the permutation applied; None when ``x`` is the input
    moved: tuple[int, ...]  # the permuted shape before merging

    def restore(self, xp: Any, y: Array) -> Array:
        """An output shaped like ``x`` (softmax) back to the input's layout."""
        if self.perm is None:
            return y
        y = xp.reshape(y, self.moved)
        inv = tuple(sorted(range(len(self.perm)), key=self.perm.__getitem__))
        return y if inv == tuple(range(len(inv))) else xp.permute_dims(y, inv)

    def reduced(self, xp: Any, y: Array, keepdims: bool) -> Array:
        """A reduction of ``x`` along ``axis`` (axis dropped) in the caller's layout."""
        return xp.reshape(y, self.kept) if keepdims else y


def merge_axes(xp: Any, x: Array, axis: Axis) -> Merged:
    """Reduce a reduction over several axes to one over a single axis.

    One axis (an int or a 1-tuple) is used in place. Several axes, ``()`` or ``None`` are moved
    last, in increasing order, and merged into one (``()`` merges nothing into a new axis of
    length 1, so each element is its own row). Both steps are ``permute_dims`` and ``reshape``:
    differentiable for torch tensors, so a caller can merge before the autograd dispatch and the
    autograd Functions keep taking one int axis. The kept axes stay in their order, so a
    reduction of the merged array over its last axis is already in the caller's layout.

    A 0-d input is one element along its only axis (``0``, ``-1``, ``None``): torch's
    convention, so that ``softmax(x, axis=0)`` of a 0-d ``x`` is 1 and ``logsumexp`` is ``x``.

    Raises:
        TypeError, ValueError: as :func:`logitlab._checks.normalize_axes`.
    """
    if x.ndim == 0 and axis is not None:
        # a 0-d input is one element along its only axis, 0 or -1 (torch's convention)
        if axis not in (0, -1, (0,), (-1,), ()):
            normalize_axes(axis, 1)  # the out-of-range error, naming the axis
        axes: tuple[int, ...] = ()
    else:
        axes = normalize_axes(axis, x.ndim)
    shape = tuple(x.shape)
    kept = tuple(1 if i in axes else k for i, k in enumerate(shape))
    if len(axes) == 1:
        return Merged(x, axes[0], kept, None, shape)
    rest = tuple(i for i in range(x.ndim) if i not in axes)
    perm = rest + axes
    moved = tuple(shape[i] for i in perm)
    xm = x if perm == tuple(range(x.ndim)) else xp.permute_dims(x, perm)
    xm = xp.reshape(xm, (*moved[: len(rest)], math.prod(moved[len(rest) :])))
    return Merged(xm, len(rest), kept, perm, moved)


# --------------------------------------------------------------------------- logsumexp


@quiet
def logsumexp(
    x: Array,
    axis: Axis = -1,
    keepdims: bool = False,
    b: Array | None = None,
    return_sign: bool = False,
) -> Any:
    r"""Log of the sum of exponentials, accurate to a few ulps for every input.

    .. math::

        \operatorname{lse}(x) = \log \sum_i b_i e^{x_i}
        = a + \operatorname{log1p}\Big(\sum_{i \ne k} e^{x_i - a}\Big),
        \quad a = x_k = \max_i x_i .

    Excluding one maximal term from the sum and using ``log1p`` keeps the contribution of
    dominated entries: ``logsumexp([0, -40]) = 4.248e-18`` (``torch.logsumexp`` and the
    textbook shifted formula return 0). Rows of only ``-inf`` give ``-inf`` (no NaN), any ``+inf``
    gives ``+inf``. An empty sum (a reduced axis of length 0) is 0, so its log-sum-exp is
    ``-inf`` with sign 0, as in SciPy and ``torch.logsumexp``.

    The axes follow :func:`scipy.special.logsumexp`: ``axis`` may be one axis, a tuple of axes
    (negative ones count from the end; naming one twice is an error) or ``None`` for all of them;
    ``keepdims`` keeps every reduced axis with length 1; ``x`` and ``b`` are broadcast against
    each other and the result has the broadcast shape without the reduced axes.

    Args:
        x: logits of any shape; lists and scalars are accepted.
        axis: the axis or tuple of axes to reduce, or ``None`` for all axes (default: the last).
        keepdims: keep the reduced axes with length 1.
        b: optional scaling factors, broadcast with ``x`` (may be negative; entries with
            ``b == 0`` are ignored, whatever ``x`` holds there).
        return_sign: also return the sign of the sum (needed when ``b`` has negative entries).

    Returns:
        The log-sum-exp, in ``x``'s namespace, device and floating dtype (integers give the compute
        dtype; ``b`` is cast to it); with ``return_sign`` a pair ``(lse, sign)``, the sign being
        1, -1, or 0 for a zero sum. A negative sum without ``return_sign`` gives NaN, as in SciPy.

    Raises:
        ValueError: an axis out of range or repeated, or ``x`` and ``b`` not broadcastable.
        TypeError: ``x`` or ``b`` is not numeric, or ``axis`` is not an int, tuple or None.

    Example:
        >>> import numpy as np
        >>> from logitlab import logsumexp
        >>> float(logsumexp([0.0, -40.0]))
        4.248354255291589e-18
        >>> logsumexp(np.array([[0.0, 0.0], [1000.0, -np.inf], [-np.inf, -np.inf]])).tolist()
        [0.6931471805599453, 1000.0, -inf]
        >>> logsumexp([1.0, 2.0], b=[1.0, -1.0], return_sign=True)
        (array(1.54132485), array(-1.))
        >>> logsumexp(np.zeros((2, 3, 4)), axis=(0, 2), keepdims=True).shape
        (1, 3, 1)
        >>> logsumexp(np.zeros((3, 0)), axis=1).tolist()
        [-inf, -inf, -inf]

    References:
        Blanchard, Higham & Higham, "Accurately computing the log-sum-exp and softmax
        functions", IMA J. Numer. Anal. 41(4), 2021.
    """
    xp, (xa, ba) = as_arrays(x, b, names=["x", "b"])
    out_dtype = result_dtype(xp, xa)
    xa = to_float(xp, xa, "x")
    if ba is not None:
        ba = xp.astype(to_float(xp, ba, "b"), xa.dtype)
        try:
            xa, ba = xp.broadcast_arrays(xa, ba)
        except (ValueError, RuntimeError) as exc:
            raise ValueError(
                f"b with shape {tuple(ba.shape)} cannot be broadcast with x's shape "
                f"{tuple(xa.shape)}"
            ) from exc
    m = merge_axes(xp, xa, axis)
    mb = None if ba is None else merge_axes(xp, ba, axis).x
    if wants_grad(xa) or wants_grad(ba):
        ag = _grad.autograd()
        if mb is None and not return_sign:
            out = ag.logsumexp_grad(m.x, m.axis, False)
            return finish(xp, m.reduced(xp, out, keepdims), out_dtype)
        out, sgn = ag.logsumexp_b_grad(m.x, m.axis, False, mb, return_sign)
    elif mb is None:
        out = _rows.lse(xp, m.x, m.axis)
        sgn = xp.where(out == -math.inf, xp.zeros_like(out), xp.ones_like(out))
    else:
        out, sgn = _rows.lse_weighted(xp, m.x, mb, m.axis, False)
        if not return_sign:
            out = xp.where(sgn < 0, xp.full_like(out, math.nan), out)
    # a NaN sum has no sign (SciPy: NaN); a sign of +-1 beside a NaN value would be a wrong number
    sgn = xp.where(xp.isnan(out), xp.full_like(sgn, math.nan), sgn)
    out, sgn = m.reduced(xp, out, keepdims), m.reduced(xp, sgn, keepdims)
    out, sgn = finish(xp, out, out_dtype), finish(xp, sgn, out_dtype)
    return (out, sgn) if return_sign else out


# --------------------------------------------------------------------------- softmax


@quiet
def softmax(x: Array, axis: Axis = -1, temperature: float = 1.0) -> Any:
    r"""Softmax with temperature, in the division form that has the smallest error bound.

    .. math::

        \operatorname{softmax}(x / T)_i
        = \frac{e^{(x_i - a)/T}}{1 + \sum_{j \ne k} e^{(x_j - a)/T}},
        \quad a = x_k = \max_j x_j .

    ``T = 0`` gives the argmax one-hot (ties share equally), ``T = inf`` the uniform distribution
    over entries that are not ``-inf``. A row of only ``-inf`` (fully masked) gives the uniform
    distribution instead of NaN; a row with ``+inf`` entries shares the mass among them. An empty
    input (a zero-length axis, reduced or not) gives an empty output of the same shape, as
    ``torch.softmax`` does.

    ``axis`` may be a tuple of axes or ``None`` (all axes), as in :func:`scipy.special.softmax`:
    the distribution is then taken over all the entries those axes span together.

    Args:
        x: logits; lists are accepted.
        axis: the class axis, a tuple of axes spanning the classes, or ``None`` for all axes.
        temperature: ``T >= 0``; ``T = 0`` and ``T = inf`` are the limits above.

    Returns:
        Probabilities with ``x``'s shape, namespace, device and floating dtype.

    Raises:
        ValueError: ``temperature`` negative or NaN, an axis out of range or repeated.
        TypeError: non-numeric input, or ``axis`` not an int, tuple of ints or None.

    Example:
        >>> from logitlab import softmax
        >>> softmax([1000.0, 0.0])
        array([1., 0.])
        >>> softmax([1.0, 2.0, 2.0], temperature=0)
        array([0. , 0.5, 0.5])
        >>> softmax([1.0, 2.0, float("-inf")], temperature=float("inf"))
        array([0.5, 0.5, 0. ])
        >>> softmax([[0.0, 0.0], [0.0, 0.0]], axis=None)
        array([[0.25, 0.25],
               [0.25, 0.25]])

    References:
        Blanchard, Higham & Higham, IMA J. Numer. Anal. 41(4), 2021, section 4.
    """
    return _softmax_entry(x, axis, temperature, log=False)


def _softmax_entry(x: Array, axis: Axis, temperature: float, *, log: bool) -> Any:
    """The body of :func:`softmax` and :func:`log_softmax`: argument checks, axis merging and
    the autograd dispatch."""
    t = check_temperature(temperature)
    xp, (arr,) = as_arrays(x, names=["x"])
    out_dtype = result_dtype(xp, arr)
    m = merge_axes(xp, to_float(xp, arr, "x"), axis)
    if wants_grad(arr):
        y = _grad.autograd().softmax_grad(m.x, m.axis, t, log=log)
    else:
        y = (_rows.log_softmax if log else _rows.softmax)(xp, m.x, m.axis, t)
    return finish(xp, m.restore(xp, y), out_dtype)


@quiet
def log_softmax(x: Array, axis: Axis = -1, temperature: float = 1.0) -> Any:
    r"""Log-softmax with temperature, keeping the tiny negative value of the dominant entry.

    .. math::

        \log \operatorname{softmax}(x / T)_i = -\frac{a - x_i}{T}
        - \operatorname{log1p}\Big(\sum_{j \ne k} e^{(x_j - a)/T}\Big).

    For ``x = [0, -40]`` the first entry is ``-4.248e-18``, not the 0 that ``x - lse(x)`` gives.
    Axes (a tuple, or ``None`` for all) and empty inputs as in :func:`softmax`.

    Args:
        x: logits; lists are accepted.
        axis: the class axis, a tuple of axes spanning the classes, or ``None`` for all axes.
        temperature: ``T >= 0`` (limits as in :func:`softmax`; ``-inf`` where the limit is 0).

    Returns:
        Log-probabilities with ``x``'s shape, namespace, device and floating dtype.

    Raises:
        ValueError: ``temperature`` negative or NaN, an axis out of range or repeated.
        TypeError: non-numeric input, or ``axis`` not an int, tuple of ints or None.

    Example:
        >>> from logitlab import log_softmax
        >>> log_softmax([0.0, -40.0])
        array([-4.24835426e-18, -4.00000000e+01])
        >>> log_softmax([[0.0, 0.0], [0.0, 0.0]], axis=(0, 1))
        array([[-1.38629436, -1.38629436],
               [-1.38629436, -1.38629436]])

    References:
        Blanchard, Higham & Higham, IMA J. Numer. Anal. 41(4), 2021.
    """
    return _softmax_entry(x, axis, temperature, log=True)


# --------------------------------------------------------------------------- scalar helpers


@quiet
def log1pexp(x: Array) -> Any:
    r"""Softplus :math:`\log(1 + e^x)`, accurate for every ``x`` (elementwise).

    Computed as :math:`\max(x, 0) + \operatorname{log1p}(e^{-|x|})`: for ``x = -40`` this is
    ``4.248e-18`` (``log(1 + exp(x))`` gives 0) and for ``x = 800`` it is 800 (no overflow).

    Args:
        x: any real array, list or scalar.

    Returns:
        Elementwise softplus in ``x``'s namespace and floating dtype.

    Example:
        >>> from logitlab import log1pexp
        >>> log1pexp([-40.0, 0.0, 800.0])
        array([4.24835426e-18, 6.93147181e-01, 8.00000000e+02])

    References:
        M. Mächler, "Accurately computing log(1 - exp(-|a|))", Rmpfr vignette, 2012.
    """
    xp, arr, out_dtype = _prepare(x, "x")
    return finish(xp, _formulas.log1pexp(xp, arr), out_dtype)


@quiet
def log1mexp(x: Array) -> Any:
    r""":math:`\log(1 - e^{x})` for ``x <= 0``, accurate near 0 and near ``-inf`` (elementwise).

    .. math::

        \operatorname{log1mexp}(x) = \begin{cases}
        \log(-\operatorname{expm1}(x)) & x > -\ln 2 \\
        \operatorname{log1p}(-e^{x}) & x \le -\ln 2
        \end{cases}

    Args:
        x: non-positive reals. ``x = 0`` gives ``-inf``.

    Returns:
        Elementwise values in ``x``'s namespace and floating dtype.

    Raises:
        ValueError: some ``x > 0`` (the logarithm of a negative number); checked when validation
            is on.

    Example:
        >>> from logitlab import log1mexp
        >>> log1mexp([-1e-20, -1.0, -50.0])
        array([-4.60517019e+01, -4.58675145e-01, -1.92874985e-22])

    References:
        M. Mächler, "Accurately computing log(1 - exp(-|a|))", Rmpfr vignette, 2012.
    """
    xp, arr, out_dtype = _prepare(x, "x")
    if validation_enabled() and bool(xp.any(arr > 0)):
        raise ValueError("log1mexp(x) needs x <= 0 (log of 1 - e^x < 0 is undefined)")
    return finish(xp, _formulas.log1mexp(xp, arr), out_dtype)


def _binary(x: object, y: object, fn: Any) -> Any:
    xp, (xa, ya) = as_arrays(x, y, names=["x", "y"])
    out_dtype = (
        result_dtype(xp, xa) if xp.isdtype(xa.dtype, "real floating") else result_dtype(xp, ya)
    )
    xa, ya = to_float(xp, xa, "x"), to_float(xp, ya, "y")
    dt = xp.result_type(xa, ya)
    xa, ya = xp.broadcast_arrays(xp.astype(xa, dt), xp.astype(ya, dt))
    if is_half(xp, out_dtype):
        return finish(xp, fn(xp, xa, ya), out_dtype)
    return fn(xp, xa, ya)


@quiet
def xlogy(x: Array, y: Array) -> Any:
    r""":math:`x \log y` with :math:`0 \log 0 = 0` (elementwise, broadcasting).

    Args:
        x: multiplier.
        y: argument of the logarithm.

    Returns:
        ``x * log(y)``, and 0 wherever ``x == 0`` (unless ``y`` is NaN).

    Example:
        >>> from logitlab import xlogy
        >>> xlogy([0.0, 0.5], [0.0, 0.25])
        array([ 0.        , -0.69314718])
    """
    return _binary(x, y, _formulas.xlogy)


@quiet
def xlog1py(x: Array, y: Array) -> Any:
    r""":math:`x \operatorname{log1p}(y)` with value 0 wherever ``x == 0`` (elementwise).

    The stable form of :math:`(1 - t) \log(1 - p)` in binary cross-entropy: ``xlog1py(1 - t, -p)``
    is exact for tiny ``p``.

    Args:
        x: multiplier.
        y: argument of ``log1p``.

    Returns:
        ``x * log1p(y)``, and 0 wherever ``x == 0`` (unless ``y`` is NaN).

    Example:
        >>> from logitlab import xlog1py
        >>> xlog1py([1.0, 0.0], [-1e-30, -1.0])
        array([-1.e-30,  0.e+00])
    """
    return _binary(x, y, _formulas.xlog1py)

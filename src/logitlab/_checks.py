"""Every argument check of logitlab, written once: types raise TypeError, values ValueError,
and every message names the argument.

Checks of shapes and types always run (they cost nothing); checks that read array values (class
indices in range, probabilities in [0, 1] summing to one, NaN, the probabilities-as-logits
guard) run only while validation is on (:func:`logitlab.set_validation`), because on a GPU they
force a device-to-host synchronisation.

The options of the cross-entropy family are checked once into a frozen :class:`CEOptions`, which
the formulas, the autograd Functions and the fused kernels take instead of loose arguments or
string-keyed dicts.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
import os
import sys
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from array_api_compat import array_namespace

from logitlab._array import Array, is_floating, is_torch_array, to_numpy
from logitlab._config import validation_enabled

_EPS32 = 2.0**-23


def _is_int(v: object) -> bool:
    return isinstance(v, int | np.integer) and not isinstance(v, bool | np.bool_)


def normalize_axis(axis: int, ndim: int, name: str = "axis") -> int:
    """``axis`` as a non-negative index into ``ndim`` dimensions.

    Raises:
        TypeError: ``axis`` is not an integer (``bool`` included).
        ValueError: ``axis`` out of range, or ``ndim == 0``.
    """
    if not _is_int(axis):
        raise TypeError(f"{name} must be an int, got {type(axis).__name__}")
    if ndim == 0:
        raise ValueError(f"{name}={axis} needs an input with at least one dimension, got a scalar")
    if not -ndim <= axis < ndim:
        raise ValueError(f"{name}={axis} is out of range for an input with {ndim} dimensions")
    return int(axis) % ndim


def normalize_axes(
    axis: int | tuple[int, ...] | None, ndim: int, name: str = "axis"
) -> tuple[int, ...]:
    """``axis`` (an int, a tuple of ints, or ``None`` for all axes) as sorted non-negative indices.

    The semantics of NumPy's and SciPy's reductions: negative axes count from the end, ``()``
    reduces nothing, ``None`` reduces every axis (``()`` for a 0-d input), and an axis named twice
    (``(0, 0)``, or ``(1, -1)`` of a 2-D input) is an error.

    Raises:
        TypeError: ``axis`` is neither an int, a tuple of ints, nor ``None``.
        ValueError: an axis out of range or repeated; an int axis of a 0-d input.
    """
    if axis is None:
        return tuple(range(ndim))
    if not isinstance(axis, tuple):
        if not _is_int(axis):
            raise TypeError(
                f"{name} must be an int, a tuple of ints or None, got {type(axis).__name__}"
            )
        return (normalize_axis(axis, ndim, name),)
    bad = [v for v in axis if not _is_int(v)]
    if bad:
        raise TypeError(f"{name}={axis!r} must hold ints only, got {type(bad[0]).__name__}")
    out: list[int] = []
    for v in axis:
        if not -ndim <= v < ndim:
            raise ValueError(f"{name}={axis!r} is out of range for an input with {ndim} dimensions")
        i = int(v) % ndim
        if i in out:
            raise ValueError(f"{name}={axis!r} names dimension {i} twice")
        out.append(i)
    return tuple(sorted(out))


def real_number(value: object, name: str) -> float:
    """``value`` (a Python, NumPy or 0-d array number; not a ``bool``) as a float.

    Raises:
        TypeError: not a real number.
    """
    if isinstance(value, bool | str | bytes) or getattr(value, "shape", ()) != ():
        raise TypeError(f"{name} must be a real number, got {value!r}")
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a real number, got {value!r}") from None


def check_temperature(temperature: float, *, limits: bool = True) -> float:
    """A temperature ``T >= 0`` (``limits``: 0 and inf allowed, the argmax and uniform limits),
    else ``0 < T < inf``.

    Raises:
        TypeError: not a real number.
        ValueError: negative, NaN, or (without ``limits``) 0 or inf.
    """
    t = real_number(temperature, "temperature")
    if limits:
        if not t >= 0:  # also catches NaN
            raise ValueError(
                f"temperature must be >= 0 (0 = argmax, inf = uniform), got {temperature!r}"
            )
    elif not 0 < t < math.inf:
        raise ValueError(f"temperature must be positive and finite, got {temperature!r}")
    return t


def check_choice(value: object, name: str, allowed: Sequence[str]) -> str:
    """``value`` if it is one of ``allowed`` (strings).

    Raises:
        ValueError: anything else (the message lists the choices).
    """
    if not isinstance(value, str) or value not in allowed:
        opts = ", ".join(repr(a) for a in allowed[:-1]) + f" or {allowed[-1]!r}"
        raise ValueError(f"{name} must be {opts}, got {value!r}")
    return value


def check_reduction(reduction: str, allowed: Sequence[str] = ("mean", "sum", "none")) -> str:
    """A reduction name (``"mean"``, ``"sum"``, ``"none"``, or the subset ``allowed``)."""
    return check_choice(reduction, "reduction", allowed)


def check_unit(value: float, name: str) -> float:
    """A real number in [0, 1] (label smoothing).

    Raises:
        TypeError: not a real number.
        ValueError: outside [0, 1] or NaN.
    """
    v = real_number(value, name)
    if not 0.0 <= v <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {value!r}")
    return v


def check_finite(value: float, name: str, *, positive: bool = False) -> float:
    """A finite real number ``>= 0`` (``positive``: ``> 0``).

    Raises:
        TypeError: not a real number.
        ValueError: negative (or 0 when ``positive``), infinite or NaN.
    """
    v = real_number(value, name)
    ok = math.isfinite(v) and (v > 0 if positive else v >= 0)
    if not ok:
        raise ValueError(
            f"{name} must be finite and {'> 0' if positive else '>= 0'}, got {value!r}"
        )
    return v


def check_base(base: float | None) -> float:
    """``log(base)`` of a logarithm base (``None``: nats, 1.0).

    Raises:
        TypeError: not a real number.
        ValueError: not positive, 1, or not finite.
    """
    if base is None:
        return 1.0
    b = real_number(base, "base")
    if not (b > 0 and b != 1 and math.isfinite(b)):
        raise ValueError(f"base must be a positive number other than 1, got {base!r}")
    return math.log(b)


def check_positive_int(value: object, name: str, *, optional: bool = True) -> int | None:
    """A positive ``int`` (or ``None`` when ``optional``).

    Raises:
        TypeError: not an int.
        ValueError: not positive.
    """
    if value is None and optional:
        return None
    if not _is_int(value):
        raise TypeError(
            f"{name} must be a positive int{' or None' if optional else ''}, got {value!r}"
        )
    if int(value) < 1:  # type: ignore[call-overload]
        raise ValueError(
            f"{name} must be a positive int{' or None' if optional else ''}, got {value!r}"
        )
    return int(value)  # type: ignore[call-overload]


def exactly_one(fn: str, **given: object) -> str:
    """The name of the one argument of ``given`` that is not ``None``.

    Raises:
        ValueError: none or several are given (the message names them all).
    """
    names = [k for k, v in given.items() if v is not None]
    if len(names) != 1:
        opts = " or ".join(f"{k}=..." for k in given)
        raise ValueError(
            f"{fn}() takes exactly one of {opts}" + (f"; got {', '.join(names)}" if names else "")
        )
    return names[0]


def check_class_indices(
    xp: Any, target: Array, n_classes: int, ignore_index: int | None = None, name: str = "target"
) -> None:
    """Raise ValueError naming ``name`` and the first index whose value is not a class index in
    ``[0, n_classes)`` (``ignore_index`` aside). A value check: only while validation is on."""
    if not validation_enabled() or math.prod(target.shape) == 0:
        return
    bad = (target < 0) | (target >= n_classes)
    if ignore_index is not None:
        bad = bad & (target != ignore_index)
    if any_true(xp, bad):
        i = first_true(xp, bad)
        extra = "" if ignore_index is None else f" (and is not ignore_index={ignore_index})"
        raise ValueError(
            f"{name}[{', '.join(map(str, i))}] = {int(pick(xp, target, i))} is not a class index "
            f"in [0, {n_classes}){extra}"
        )


@dataclass(frozen=True)
class CEOptions:
    """The checked options of a cross-entropy (:func:`ce_options`): what the formulas, the
    autograd Functions and the fused kernels take."""

    ignore_index: int = -100
    label_smoothing: float = 0.0
    temperature: float = 1.0
    reduction: str = "mean"
    z_loss: float = 0.0
    softcap: float | None = None


def ce_options(
    *,
    ignore_index: int = -100,
    label_smoothing: float = 0.0,
    temperature: float = 1.0,
    reduction: str = "mean",
    z_loss: float = 0.0,
    softcap: float | None = None,
) -> CEOptions:
    """Check the options of a cross-entropy and freeze them.

    Raises:
        TypeError: an option of the wrong type (named).
        ValueError: an option out of range (named).

    Example:
        >>> ce_options(label_smoothing=0.1).label_smoothing
        0.1
        >>> ce_options(reduction="avg")
        Traceback (most recent call last):
        ValueError: reduction must be 'mean', 'sum' or 'none', got 'avg'
    """
    if not _is_int(ignore_index):
        raise TypeError(f"ignore_index must be an int, got {ignore_index!r}")
    return CEOptions(
        ignore_index=int(ignore_index),
        label_smoothing=check_unit(label_smoothing, "label_smoothing"),
        temperature=check_temperature(temperature, limits=False),
        reduction=check_reduction(reduction),
        z_loss=check_finite(z_loss, "z_loss"),
        softcap=None if softcap is None else check_finite(softcap, "softcap", positive=True),
    )


def any_true(xp: Any, cond: Array) -> bool:
    """Host-side ``bool(any(cond))`` (syncs a GPU; only used by validation)."""
    return bool(xp.any(cond))


def first_true(xp: Any, cond: Array) -> tuple[int, ...]:
    """Index of the first True of ``cond`` (for error messages)."""
    flat = np.asarray(to_numpy(xp, xp.reshape(cond, (-1,))))
    i = int(np.argmax(flat))
    return tuple(int(v) for v in np.unravel_index(i, tuple(cond.shape)))


def pick(xp: Any, x: Array, idx: tuple[int, ...]) -> float:
    return float(to_numpy(xp, x)[idx])


def probability_tolerance(n: int, eps: float) -> float:
    r"""How far from 1 the sum of ``n`` probabilities held with machine epsilon ``eps`` may be.

    .. math::

        \tau = 4\,\big(\varepsilon + n\,\min(\varepsilon, \varepsilon_{32})\big)

    A softmax rounds each output to the input dtype (relative error ``eps / 2`` per entry, at most
    ``eps / 2`` on the sum of entries that sum to 1) after a normalisation whose error grows at
    worst like ``n`` ulps of the dtype it runs in: the input's own for float32/float64, at least
    float32 for float16/bfloat16 (every framework, and logitlab, computes half-precision softmax
    in float32). The factor 4 ("a few ulps") covers naive summation; measured errors of torch and
    SciPy softmax are below ``eps * (2 + n / 500)`` for ``n`` up to 3e5. Logits in [0, 1] and
    unnormalised scores (sigmoid outputs, ``p / 2``) are off by far more: float64 with ``n = 1e5``
    gives ``tau = 8.9e-11``, float32 ``0.048``, bfloat16 ``0.079``.

    Example:
        >>> [f"{probability_tolerance(n, 2.0**-52):.2g}" for n in (2, 100_000)]  # float64
        ['2.7e-15', '8.9e-11']
    """
    return 4.0 * (eps + n * min(eps, _EPS32))


def _row_sums(xp: Any, p: Array, axis: int) -> Array:
    """Sums along ``axis`` accumulated in float64 (float32 where the device has no float64), so
    that the check's own rounding stays far below :func:`probability_tolerance`."""
    try:
        return xp.sum(p, axis=axis, dtype=xp.float64)
    except (TypeError, RuntimeError):  # e.g. Apple MPS tensors have no float64
        return xp.sum(p, axis=axis)


def check_probabilities(
    xp: Any,
    p: Array,
    name: str,
    axis: int | None = -1,
    *,
    normalized: bool = True,
    eps: float | None = None,
    hint: str = "did you pass logits? use logits=...",
) -> None:
    """Raise ValueError if ``p`` has NaN, values outside [0, 1], or rows not summing to 1.

    The row-sum tolerance is :func:`probability_tolerance` of the row length and of the machine
    epsilon ``eps`` of the dtype the caller *received* the probabilities in (``p`` may already be
    cast to a wider compute dtype; by default ``p``'s own floating dtype, or float64 for integers).
    It accepts the softmax output of any floating dtype and rejects logits and unnormalised scores.
    ``hint`` ends the message for values outside [0, 1] (what the caller was probably given).

    Only done while validation is on (:func:`set_validation`).

    Example:
        >>> import numpy as np
        >>> check_probabilities(np, np.array([[0.2, 0.3]]), "probs", -1)
        Traceback (most recent call last):
        ValueError: probs must sum to 1 along axis -1 (tolerance 2.7e-15); row (0,) sums to 0.5
        >>> p = np.array([[0.1, 0.2, 0.7]], np.float32).astype(np.float64)  # float32 values
        >>> check_probabilities(np, p, "probs", -1, eps=2.0**-23)  # received as float32: accepted
    """
    if not validation_enabled():
        return
    bad = xp.isnan(p)
    if any_true(xp, bad):
        raise ValueError(f"{name} contains NaN (first at index {first_true(xp, bad)})")
    bad = (p < 0) | (p > 1)
    if any_true(xp, bad):
        i = first_true(xp, bad)
        raise ValueError(
            f"{name} must be probabilities in [0, 1]; {name}[{', '.join(map(str, i))}] = "
            f"{pick(xp, p, i)!r}" + (f" ({hint})" if normalized else "")
        )
    if normalized and axis is not None and p.ndim > 0 and p.shape[axis] > 0:
        if eps is None:
            eps = float(xp.finfo(p.dtype).eps) if is_floating(xp, p) else float(np.finfo(float).eps)
        tol = probability_tolerance(int(p.shape[axis]), eps)
        total = _row_sums(xp, p, axis)
        bad = xp.abs(total - 1) > tol
        if any_true(xp, bad):
            i = first_true(xp, bad)
            got = pick(xp, total, i)
            hint = ""
            if eps < _EPS32 and abs(got - 1) <= probability_tolerance(int(p.shape[axis]), _EPS32):
                hint = (
                    " (that is float32 rounding: if they were computed in float32, pass them as "
                    "float32 and the tolerance follows)"
                )
            where = f"row {i} sums" if i != () else "it sums"  # () : a single distribution
            raise ValueError(
                f"{name} must sum to 1 along axis {axis} (tolerance {tol:.2g}); "
                f"{where} to {got!r}{hint}"
            )


class ProbabilitiesAsLogitsWarning(UserWarning):
    """Scores given as logits look like probabilities (every row in [0, 1] and summing to 1).

    A function that takes logits applies a softmax: ``softmax(p)`` is not ``p``, so probabilities
    passed as logits give a silent wrong number (``cross_entropy([.7, .2, .1], [.5, .3, .2])`` is
    1.038 instead of the 1.122 of ``cross_entropy(probs=...)``). Issued only while validation is
    on; silence it with ``warnings.filterwarnings("ignore", category=...)`` for logits that really
    are in [0, 1] and sum to 1.
    """


def _rows_view(xp: Any, x: Array, axis: int) -> Array:
    """``x`` as ``(rows, classes)`` with the class axis last (a detached view for torch)."""
    if is_torch_array(x):
        x = x.detach()
    if axis != x.ndim - 1:
        x = xp.moveaxis(x, axis, -1)
    return xp.reshape(x, (-1, x.shape[-1]))


def _all_rows_are_distributions(xp: Any, rows: Array, eps: float) -> bool:
    if any_true(xp, (rows < 0) | (rows > 1) | xp.isnan(rows)):
        return False
    tol = probability_tolerance(int(rows.shape[-1]), eps)
    return not any_true(xp, xp.abs(_row_sums(xp, rows, -1) - 1) > tol)


def looks_like_probabilities(xp: Any, x: Array, axis: int, eps: float | None = None) -> bool:
    """Whether every row of ``x`` along ``axis`` (at least 2 classes) is in [0, 1] and sums to 1.

    Row 0 is tested first, so that real logits cost one row; only a batch whose first row is a
    distribution is read in full. ``eps``: machine epsilon of the dtype ``x`` was given in.

    Example:
        >>> import numpy as np
        >>> looks_like_probabilities(np, np.array([[0.7, 0.2, 0.1]]), -1)
        True
        >>> looks_like_probabilities(np, np.array([[0.7, 0.2, 0.1], [2.0, 0.0, -1.0]]), -1)
        False
    """
    if x.ndim == 0 or math.prod(x.shape) == 0:
        return False
    ax = normalize_axis(axis, x.ndim)
    if x.shape[ax] < 2 or not is_floating(xp, x):
        return False
    rows = _rows_view(xp, x, ax)
    e = float(xp.finfo(x.dtype).eps) if eps is None else eps
    return _all_rows_are_distributions(xp, rows[:1, :], e) and _all_rows_are_distributions(
        xp, rows, e
    )


def warn_if_probabilities(
    xp: Any,
    x: Array,
    axis: int,
    *,
    fn: str,
    instead: str,
    eps: float | None = None,
    name: str = "logits",
) -> None:
    """Issue :class:`ProbabilitiesAsLogitsWarning` if ``x``, given as ``name`` to ``fn``, looks
    like probabilities (see :func:`looks_like_probabilities`); ``instead`` names the call to make.
    Only while validation is on, and not inside :func:`scores_already_guarded`. The warning
    points at the caller's line outside logitlab."""
    if _GUARDED.get() or not validation_enabled():
        return
    if looks_like_probabilities(xp, x, axis, eps):
        warnings.warn(
            f"{fn}: every row of {name} is in [0, 1] and sums to 1: these look like "
            f"probabilities, which {fn} would treat as logits (softmax(p) is not p). Pass them "
            f"as {instead}; if they really are logits, filter "
            "logitlab.ProbabilitiesAsLogitsWarning",
            ProbabilitiesAsLogitsWarning,
            stacklevel=_user_stacklevel(),
        )


_GUARDED: contextvars.ContextVar[bool] = contextvars.ContextVar("logitlab_guarded", default=False)


@contextlib.contextmanager
def scores_already_guarded() -> Iterator[None]:
    """Inside, :func:`warn_if_probabilities` is silent: for a public function that has checked
    its own argument (and named its own ``probs=``) before calling another one."""
    token = _GUARDED.set(True)
    try:
        yield
    finally:
        _GUARDED.reset(token)


_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


def _user_stacklevel() -> int:
    """The ``stacklevel`` of the first frame outside the logitlab package, as seen from the
    ``warnings.warn`` call in the function that calls this one."""
    frame = sys._getframe(2)  # the caller of the function that calls this one
    level = 2
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(_PACKAGE_DIR):
        frame = frame.f_back  # type: ignore[assignment]
        level += 1
    return level


def input_eps(x: Any) -> float | None:
    """Machine epsilon of ``x``'s floating dtype (NumPy, torch or array API), else ``None``."""
    dt = getattr(x, "dtype", None)
    if dt is None:
        return None
    if is_torch_array(x):
        import torch

        return float(torch.finfo(dt).eps) if x.is_floating_point() else None
    try:
        xp = array_namespace(x)
        return float(xp.finfo(dt).eps) if xp.isdtype(dt, "real floating") else None
    except TypeError:
        return None

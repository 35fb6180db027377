"""Array-namespace dispatch, dtype promotion and input validation shared by every module.

Everything numerical in logitlab is written once against the Python array API standard; this module
turns whatever the user passed (NumPy arrays, torch tensors, any array-API array, Python lists,
tuples and scalars) into arrays of one namespace, picks the dtype the computation runs in, and
produces the error messages.

Numerical choices
-----------------
* float16 and bfloat16 inputs are computed in float32 and rounded once at the end: half-precision
  ``exp`` overflows at ``x > 11.09`` (float16) and its 8 (bfloat16) or 11 (float16) significand bits
  cannot hold the intermediate sums. One final rounding keeps the result within 1 ulp of the output
  dtype.
* Integer and boolean inputs are computed in float64 (NumPy's promotion rule), except torch
  tensors, which follow ``torch.get_default_dtype()``.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import math
import os
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeGuard, TypeVar, cast

import numpy as np
from array_api_compat import array_namespace, device, is_array_api_obj
from array_api_compat import is_torch_array as _compat_is_torch_array

from logitlab._config import validation_enabled

__all__ = [
    "Array",
    "as_arrays",
    "compute_dtype",
    "ProbabilitiesAsLogitsWarning",
]

Array = Any  # any array-API array (NumPy, torch, array_api_strict, CuPy, JAX ...)


def is_torch_array(x: object) -> TypeGuard[Any]:
    """Whether ``x`` is a torch tensor, without importing torch.

    No tensor exists before torch is imported, and ``sys.modules['torch'] = None`` (an import
    blocked on purpose) counts as not imported; array_api_compat's own check raises
    AttributeError on that entry, which would make every NumPy call fail.
    """
    if sys.modules.get("torch") is None:
        return False
    return bool(_compat_is_torch_array(x))


F = TypeVar("F", bound=Callable[..., Any])


def quiet(fn: F) -> F:
    """Run ``fn`` under ``np.errstate(all="ignore")``.

    Intermediate infinities are deliberate in this library (``exp(-inf) = 0`` for masked classes,
    ``log(0) = -inf`` for a zero-temperature log-softmax); every result is made finite or set to
    its documented limit explicitly, so NumPy's floating-point warnings would only be noise.
    """

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with np.errstate(all="ignore"):
            return fn(*args, **kwargs)

    return cast(F, wrapper)


def _is_array(x: object) -> bool:
    return is_array_api_obj(x) and not isinstance(x, np.generic)


def as_arrays(*args: object, names: Sequence[str]) -> tuple[Any, list[Any]]:
    """Return ``(xp, arrays)``: every non-None argument as an array of one namespace.

    Lists, tuples, scalars and NumPy scalars are converted with NumPy, then moved into the
    namespace (and onto the device) of the first real array argument, so that
    ``cross_entropy(torch_logits, [1, 2])`` works.

    Raises:
        TypeError: an argument is neither an array nor convertible to one, or arrays of two
            different libraries are mixed.
    """
    real = [a for a in args if a is not None and _is_array(a)]
    if real:
        try:
            xp = array_namespace(*real)
        except TypeError as exc:
            kinds = ", ".join(
                f"{n}: {type(a).__module__}.{type(a).__name__}"
                for n, a in zip(names, args, strict=False)
                if a is not None
            )
            raise TypeError(f"arrays from different libraries cannot be mixed ({kinds})") from exc
        dev = device(real[0])
    else:
        xp = array_namespace(np.empty(0))
        dev = None
    out: list[Any] = []
    for name, a in zip(names, args, strict=True):
        if a is None or _is_array(a):
            out.append(a)
            continue
        try:
            arr = np.asarray(a)
        except (ValueError, TypeError) as exc:
            raise TypeError(f"{name} must be an array or a nested list of numbers: {exc}") from exc
        if arr.dtype == object or arr.dtype.kind not in "biuf":
            raise TypeError(
                f"{name} must hold real numbers, got {type(a).__name__} with dtype {arr.dtype}"
            )
        if real and is_torch_array(real[0]):
            import torch

            t = torch.from_numpy(np.ascontiguousarray(arr))
            if t.is_floating_point() and real[0].is_floating_point():
                t = t.to(real[0].dtype)
            out.append(t.to(real[0].device))
        elif real:
            out.append(xp.asarray(arr, device=dev))
        else:
            out.append(arr)
    return xp, out


def is_floating(xp: Any, x: Array) -> bool:
    return bool(xp.isdtype(x.dtype, "real floating"))


def is_integral(xp: Any, x: Array) -> bool:
    return bool(xp.isdtype(x.dtype, ("integral", "bool")))


def is_half(xp: Any, dtype: Any) -> bool:
    """float16 or bfloat16 (anything floating narrower than 32 bits)."""
    return bool(xp.isdtype(dtype, "real floating")) and xp.finfo(dtype).bits < 32


def compute_dtype(xp: Any, x: Array) -> Any:
    """The dtype a computation on ``x`` runs in (see module docstring)."""
    if xp.isdtype(x.dtype, "real floating"):
        return xp.float32 if is_half(xp, x.dtype) else x.dtype
    if xp.isdtype(x.dtype, "complex floating"):
        raise TypeError("complex inputs are not supported")
    if is_torch_array(x):
        import torch

        return torch.get_default_dtype()
    return xp.float64


def result_dtype(xp: Any, x: Array) -> Any:
    """The dtype returned for input ``x``: its own if floating, else the compute dtype."""
    return x.dtype if xp.isdtype(x.dtype, "real floating") else compute_dtype(xp, x)


def to_float(xp: Any, x: Array, name: str) -> Array:
    """Cast ``x`` to its compute dtype, with a clear error for non-numeric input."""
    try:
        dt = compute_dtype(xp, x)
    except TypeError as exc:
        raise TypeError(f"{name}: {exc}") from exc
    return x if x.dtype == dt else xp.astype(x, dt)


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


def check_temperature(temperature: float) -> float:
    try:
        t = float(temperature)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"temperature must be a real number, got {temperature!r}") from exc
    if not t >= 0:  # also catches NaN
        raise ValueError(
            f"temperature must be >= 0 (0 = argmax, inf = uniform), got {temperature!r}"
        )
    return t


def check_reduction(reduction: str) -> str:
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
    return reduction


def any_true(xp: Any, cond: Array) -> bool:
    """Host-side ``bool(any(cond))`` (syncs a GPU; only used by validation)."""
    return bool(xp.any(cond))


def first_true(xp: Any, cond: Array) -> tuple[int, ...]:
    """Index of the first True of ``cond`` (for error messages)."""
    flat = np.asarray(to_numpy(xp, xp.reshape(cond, (-1,))))
    i = int(np.argmax(flat))
    return tuple(int(v) for v in np.unravel_index(i, tuple(cond.shape)))


def to_numpy(xp: Any, x: Array) -> np.ndarray:
    if is_torch_array(x):
        return x.detach().cpu().numpy()
    return np.asarray(x)


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


_EPS32 = 2.0**-23


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
            raise ValueError(
                f"{name} must sum to 1 along axis {axis} (tolerance {tol:.2g}); "
                f"row {i} sums to {got!r}{hint}"
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


def torch_view(arr: np.ndarray) -> Any:
    """A zero-copy torch tensor over a NumPy array that logitlab only reads.

    Memory-mapped inputs are read-only; ``torch.from_numpy`` warns about them because the tensor
    could be written. Every caller of this helper reads only, so the warning is silenced here.
    """
    import warnings

    import torch

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(np.ascontiguousarray(arr))

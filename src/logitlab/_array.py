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

import functools
import sys
import warnings
from collections.abc import Callable, Sequence
from typing import Any, TypeGuard, TypeVar, cast

import numpy as np
from array_api_compat import array_namespace, device, is_array_api_obj
from array_api_compat import is_torch_array as _compat_is_torch_array

__all__ = [
    "Array",
    "as_arrays",
    "compute_dtype",
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


def to_numpy(xp: Any, x: Array) -> np.ndarray:
    """``x`` as a NumPy array on the host (detached, copied off its device when it has one).

    NumPy has no bfloat16: bfloat16 arrays (torch's, or ``ml_dtypes``' from other libraries)
    come widened to float32, which is exact (a bfloat16 is the upper half of a float32). Every
    other dtype keeps its own, float16 included.
    """
    if is_torch_array(x):
        t = x.detach()
        if str(t.dtype) == "torch.bfloat16":
            t = t.float()
        return t.cpu().numpy()
    a = np.asarray(x)
    return a.astype(np.float32) if a.dtype.name == "bfloat16" else a


def torch_view(arr: np.ndarray) -> Any:
    """A zero-copy torch tensor over a NumPy array that logitlab only reads.

    Memory-mapped inputs are read-only; ``torch.from_numpy`` warns about them because the tensor
    could be written. Every caller of this helper reads only, so the warning is silenced here.
    """

    import torch

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(np.ascontiguousarray(arr))


def finish(xp: Any, y: Array, dtype: Any) -> Array:
    """``y`` in the result ``dtype`` (one rounding of a half input computed in float32)."""
    return y if y.dtype == dtype else xp.astype(y, dtype)


def wants_grad(x: object) -> bool:
    """Whether ``x`` is a torch tensor that autograd will differentiate in this context."""
    if not is_torch_array(x):
        return False
    import torch

    return bool(torch.is_grad_enabled() and x.requires_grad)

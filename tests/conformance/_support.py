"""Labels and small helpers shared by the conformance modules.

Every case is one of:

* a plain case: logitlab agrees with the peer (its test's expected value, the peer function run
  here on the same input, or an independent mpmath/NumPy computation of the peer's definition);
* a **deliberate difference** (``@DELIBERATE("why")``): logitlab differs on purpose and documents
  it; the case asserts logitlab's documented behaviour *and* that the peer behaves differently
  where the peer is installed, so the count of differences stays honest;
* an expected failure: ``ISSUE13(n, "why")`` for a bug listed in issue 13 (being fixed in
  parallel; strict, so the case turns red, not silently green, when the fix lands), ``ISSUE14``
  for the empty-reduction semantics being decided under issue 14, and ``NEW("why")`` for a
  failure no issue lists yet.

``benchmarks/conformance_summary.py`` counts these per peer.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest

BACKEND_NAMES = ("numpy", "torch", "array_api_strict")


Raises = type[BaseException] | tuple[type[BaseException], ...] | None


def _xfail(reason: str, raises: Raises) -> pytest.MarkDecorator:
    # ``raises`` pins the failure to the bug's symptom: any other exception is a real failure
    if raises is None:
        return pytest.mark.xfail(strict=True, reason=reason)
    return pytest.mark.xfail(strict=True, reason=reason, raises=raises)


def ISSUE13(item: int, why: str, raises: Raises = None) -> pytest.MarkDecorator:  # noqa: N802
    return _xfail(f"issue 13 item {item}: {why}", raises)


def ISSUE14(why: str, raises: Raises = None) -> pytest.MarkDecorator:  # noqa: N802
    return _xfail(f"issue 14 (empty reduced axis): {why}", raises)


def NEW(why: str, raises: Raises = None) -> pytest.MarkDecorator:  # noqa: N802
    return _xfail(f"NEW: {why}", raises)


def DELIBERATE(why: str) -> pytest.MarkDecorator:  # noqa: N802
    return pytest.mark.deliberate_difference(why)


def backends(**marks: Any) -> pytest.MarkDecorator:
    """Parametrize the ``backend`` fixture of ``tests/conftest.py`` over every backend, with
    marks (an expected failure, say) for some of them: ``@backends(torch=ISSUE13(3, "..."))``.
    """
    params = []
    for name in BACKEND_NAMES:
        m = marks.get(name, ())
        params.append(pytest.param(name, marks=m if isinstance(m, list | tuple) else (m,), id=name))
    return pytest.mark.parametrize("backend", params, indirect=True)


def on(backend: Any, a: Any, dtype: Any = None) -> Any:
    """``backend.asarray`` that keeps a 0-d input 0-d on torch (tests/conftest.py's helper goes
    through ``np.ascontiguousarray``, which makes it 1-d)."""
    arr = np.asarray(a, dtype=dtype)
    if backend.name == "torch" and arr.ndim == 0:
        return backend.mod.from_numpy(arr.copy())
    return backend.asarray(arr)


def to_np(a: Any) -> np.ndarray:
    """A NumPy copy of a NumPy/torch/array-API result (or a Python scalar)."""
    if hasattr(a, "detach"):
        a = a.detach().cpu()
        return (a.float() if str(a.dtype) == "torch.bfloat16" else a).numpy()
    if hasattr(a, "_array"):  # array_api_strict keeps a NumPy array inside
        return np.asarray(a._array)
    return np.asarray(a)


def _name(dtype: Any) -> str:
    if isinstance(dtype, type):  # np.float64 and friends
        return np.dtype(dtype).name
    return str(dtype).rsplit(".", 1)[-1]  # torch.float64, array_api_strict.float64, np.dtype


def eps(dtype: Any) -> float:
    """Machine epsilon of a NumPy/torch/array-API floating dtype."""
    name = _name(dtype)
    return float(np.finfo(np.dtype(name)).eps) if name != "bfloat16" else 2.0**-7


def dtype_name(a: Any) -> str:
    """The bare name (``"float32"``) of an array's dtype, whatever its library."""
    return _name(a.dtype)


def close(
    actual: Any,
    expected: Any,
    rtol: float,
    atol: float = 0.0,
    *,
    shape: Sequence[int] | None = None,
) -> None:
    """``actual`` (any backend) equals ``expected`` within ``rtol``/``atol``; infinities and NaN
    must match exactly, and the shape too."""
    got = to_np(actual).astype(np.float64)
    exp = np.asarray(expected, dtype=np.float64)
    want_shape = tuple(shape) if shape is not None else exp.shape
    assert got.shape == want_shape, f"shape {got.shape}, expected {want_shape}"
    np.testing.assert_allclose(got, np.broadcast_to(exp, got.shape), rtol=rtol, atol=atol)


def close_normwise(actual: Any, expected: Any, rtol: float = 1e-13) -> None:
    """Agreement to ``rtol`` relative to the largest magnitude of ``expected`` (plus ``rtol``
    elementwise): the right test against a peer whose own result carries an absolute error of a
    few ulps of that magnitude (torch's ``x - lse`` near 0, a softmax gradient that cancels)."""
    exp = to_np(expected).astype(np.float64)
    finite = exp[np.isfinite(exp)]
    scale = float(np.max(np.abs(finite))) if finite.size else 0.0
    close(actual, exp, rtol, atol=rtol * scale)


def rel(dtype: Any, ulps: float = 4.0) -> float:
    """A relative tolerance of a few units in the last place of ``dtype``."""
    return ulps * eps(dtype)

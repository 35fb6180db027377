"""SciPy conformance: ``logsumexp``, ``softmax`` and ``log_softmax``.

Source of the cases: SciPy 1.17.1, ``scipy/special/tests/test_logsumexp.py`` (classes
``TestLogSumExp``, ``TestSoftmax``, ``TestLogSoftmax``; the same file as github.com/scipy/scipy at
that release, shipped inside the installed wheel). Each test names the SciPy test it transcribes.
Expected values are SciPy's own (its mpmath constants, or ``scipy.special`` run here on the same
input) and, where logitlab promises a few ulps, the 60-digit mpmath reference of
``tests/reference.py``. Every case runs on the NumPy, torch and array-api-strict backends.

SciPy's tolerance in this file is ``rtol=1e-13`` for the mpmath constants and its
``xp_assert_close`` default (about 1e-7) elsewhere; logitlab is held to ``rtol=1e-13`` or a few
ulps throughout.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.special as sp
from tests import reference as R
from tests.conformance._support import (
    DELIBERATE,
    backends,
    close,
    dtype_name,
    rel,
    to_np,
)
from tests.conftest import Backend

import logitlab as ll

INF = math.inf
NAN = math.nan
TIGHT = 1e-13  # SciPy's rtol for its mpmath constants in this file


def _default_float(backend: Backend) -> str:
    """The dtype integer input is computed in (SciPy: ``xp.asarray(1.).dtype``)."""
    if backend.name == "torch":
        return str(backend.mod.get_default_dtype()).rsplit(".", 1)[-1]
    return "float64"


# --------------------------------------------------------------------------- logsumexp


@backends()
def test_logsumexp_large_inputs(backend: Backend) -> None:
    # TestLogSumExp.test_logsumexp: "correctly handles large inputs", a = arange(200.)
    a = np.arange(200.0)
    res = ll.logsumexp(backend.asarray(a))
    close(res, sp.logsumexp(a), TIGHT)
    assert R.ulp_error(float(to_np(res)), R.lse(a.tolist()), np.float64) <= 2


@backends()
def test_logsumexp_equal_large_numbers(backend: Backend) -> None:
    # TestLogSumExp.test_logsumexp: [1000., 1000.] -> 1000 + log 2; full((1000,), 10000) (ints)
    close(ll.logsumexp(backend.asarray([1000.0, 1000.0])), 1000.0 + math.log(2.0), TIGHT)
    res = ll.logsumexp(backend.asarray(np.full((1000,), 10000)))
    assert dtype_name(res) == _default_float(backend)
    close(res, 10000.0 + math.log(1000), rel(res.dtype))


@pytest.mark.parametrize("axis", [None, 0, 1])
@backends()
def test_logsumexp_many_tiny_terms(backend: Backend, axis: int | None) -> None:
    # TestLogSumExp.test_logsumexp: exp(logsumexp(log X)) == sum(X) for X = [1e-40] * n, stacked
    # twice. n = 10**4 here (SciPy: 10**6) to keep the suite fast; same property.
    x = np.full(10**4, 1e-40)
    big_x, log_x = np.stack([x, x]), np.log(np.stack([x, x]))
    res = ll.logsumexp(backend.asarray(log_x), axis=axis)
    close(np.exp(to_np(res)), np.sum(big_x, axis=axis), TIGHT)


SPECIAL_VALUES = [
    # TestLogSumExp.test_logsumexp, "Handling special values properly"
    ([INF], INF),
    ([-INF], -INF),
    ([NAN], NAN),
    ([-INF, -INF], -INF),
    # TestLogSumExp.test_gh22601_infinite_elements, the real pairs: log(sum(exp([x, y])))
    ([-INF, INF], INF),
    ([INF, -INF], INF),
    ([INF, INF], INF),
]


@pytest.mark.parametrize("x, expected", SPECIAL_VALUES, ids=[str(c[0]) for c in SPECIAL_VALUES])
@backends()
def test_logsumexp_special_values(backend: Backend, x: list[float], expected: float) -> None:
    res = to_np(ll.logsumexp(backend.asarray(x)))
    np.testing.assert_array_equal(res, expected)
    np.testing.assert_array_equal(res, sp.logsumexp(np.asarray(x)))


@backends()
def test_logsumexp_mixed_magnitudes_and_keepdims(backend: Backend) -> None:
    # TestLogSumExp.test_logsumexp: "an array with different magnitudes on the axes", keepdims
    a = backend.asarray([[1e10, 1e-10], [-1e10, -INF]])
    close(ll.logsumexp(a, axis=-1), [1e10, -1e10], TIGHT)
    close(ll.logsumexp(a, axis=-1, keepdims=True), [[1e10], [-1e10]], TIGHT)


@backends()
def test_logsumexp_multiple_axes(backend: Backend) -> None:
    # TestLogSumExp.test_logsumexp: "Test multiple axes", axis=(-1, -2) -> 1e10
    a = backend.asarray([[1e10, 1e-10], [-1e10, -INF]])
    close(ll.logsumexp(a, axis=(-1, -2)), 1e10, TIGHT)


@backends()
def test_logsumexp_b_weights(backend: Backend) -> None:
    # TestLogSumExp.test_logsumexp_b: a = arange(200.), b = arange(200., 0., -1.); and
    # a = [1000, 1000], b = [1.2, 1.2] -> 1000 + log(2.4)
    a, b = np.arange(200.0), np.arange(200.0, 0.0, -1.0)
    res = ll.logsumexp(backend.asarray(a), b=backend.asarray(b))
    close(res, sp.logsumexp(a, b=b), TIGHT)
    exact, sign = R.lse_b(a.tolist(), b.tolist())
    assert sign == 1 and R.ulp_error(float(to_np(res)), exact, np.float64) <= 4
    res = ll.logsumexp(backend.asarray([1000.0, 1000.0]), b=backend.asarray([1.2, 1.2]))
    close(res, 1000 + math.log(2 * 1.2), TIGHT)


@pytest.mark.parametrize("axis", [None, 0, 1])
@backends()
def test_logsumexp_b_many_tiny_terms(backend: Backend, axis: int | None) -> None:
    # TestLogSumExp.test_logsumexp_b: x = [1e-40] * 100000, b = linspace(1, 1000, 100000);
    # n = 10**4 here to keep the suite fast, same property
    x = np.full(10**4, 1e-40)
    b = np.linspace(1, 1000, 10**4)
    big_x, log_x, big_b = np.stack((x, x)), np.log(np.stack((x, x))), np.stack((b, b))
    res = ll.logsumexp(backend.asarray(log_x), b=backend.asarray(big_b), axis=axis)
    close(np.exp(to_np(res)), np.sum(big_b * big_x, axis=axis), TIGHT)


@backends()
def test_logsumexp_return_sign(backend: Backend) -> None:
    # TestLogSumExp.test_logsumexp_sign: a = [1, 1, 1], b = [1, -1, -1] -> (1, -1)
    r, s = ll.logsumexp(
        backend.asarray([1, 1, 1]), b=backend.asarray([1, -1, -1]), return_sign=True
    )
    close(r, 1.0, rel(r.dtype))
    np.testing.assert_array_equal(to_np(s), -1.0)


@backends()
def test_logsumexp_return_sign_zero(backend: Backend) -> None:
    # TestLogSumExp.test_logsumexp_sign_zero: a = [1, 1], b = [1, -1]: r = -inf, sign 0
    r, s = ll.logsumexp(backend.asarray([1, 1]), b=backend.asarray([1, -1]), return_sign=True)
    np.testing.assert_array_equal(to_np(r), -INF)
    np.testing.assert_array_equal(to_np(s), 0.0)


@backends()
def test_logsumexp_shapes_single_axis(backend: Backend) -> None:
    # TestLogSumExp.test_logsumexp_sign_shape and test_logsumexp_shape, axis=2
    a = backend.asarray(np.ones((1, 2, 3, 4)))
    b = backend.asarray(np.ones((1, 2, 3, 4)))
    r, s = ll.logsumexp(a, axis=2, b=b, return_sign=True)
    assert tuple(r.shape) == tuple(s.shape) == (1, 2, 4)
    assert tuple(ll.logsumexp(a, axis=2, b=b).shape) == (1, 2, 4)


@backends()
def test_logsumexp_shapes_tuple_axis(backend: Backend) -> None:
    # TestLogSumExp.test_logsumexp_sign_shape and test_logsumexp_shape, axis=(1, 3)
    a = backend.asarray(np.ones((1, 2, 3, 4)))
    b = backend.asarray(np.ones((1, 2, 3, 4)))
    r, s = ll.logsumexp(a, axis=(1, 3), b=b, return_sign=True)
    assert tuple(r.shape) == tuple(s.shape) == (1, 3)
    assert tuple(ll.logsumexp(a, axis=(1, 3), b=b).shape) == (1, 3)


@backends()
def test_logsumexp_b_zero_drops_the_term(backend: Backend) -> None:
    # TestLogSumExp.test_logsumexp_b_zero: a = [1, 10000], b = [1, 0] -> 1
    res = ll.logsumexp(backend.asarray([1, 10000]), b=backend.asarray([1, 0]))
    close(res, 1.0, rel(res.dtype))


@backends()
def test_logsumexp_b_broadcasts_against_a(backend: Backend) -> None:
    # TestLogSumExp.test_logsumexp_b_shape: a (4, 1, 2, 1) and b (3, 1, 5) broadcast to
    # (4, 3, 2, 5); SciPy reduces over all axes by default (log 120 for zeros and ones).
    a, b = np.zeros((4, 1, 2, 1)), np.ones((3, 1, 5))
    res = ll.logsumexp(backend.asarray(a), b=backend.asarray(b), axis=None)
    close(res, sp.logsumexp(a, b=b), TIGHT)
    close(res, math.log(120), TIGHT)


@pytest.mark.parametrize("arg", [1, [1, 2, 3], [1000, 1000]], ids=["scalar", "list", "list1000"])
def test_logsumexp_scalars_and_lists(arg: object) -> None:
    # TestLogSumExp.test_xp_invalid_input (1, [1, 2, 3]) and test_array_like ([1000, 1000]):
    # Python input behaves as the NumPy array of it (axis=None: SciPy's default axis).
    res = ll.logsumexp(arg, axis=None)
    assert isinstance(res, np.ndarray) and res.dtype == np.float64
    close(res, sp.logsumexp(np.atleast_1d(np.asarray(arg))), TIGHT)


@pytest.mark.parametrize("dtype", ["float32", "float64", "int32", "int64"])
@backends()
def test_logsumexp_dtypes_a(backend: Backend, dtype: str) -> None:
    # TestLogSumExp.test_dtypes_a (real dtypes): [1000, 1000] -> 1000 + log 2 in a's floating
    # dtype, integers in the default floating dtype
    a = backend.asarray(np.array([1000.0, 1000.0]).astype(dtype))
    res = ll.logsumexp(a)
    want = dtype if dtype.startswith("float") else _default_float(backend)
    assert dtype_name(res) == want
    close(res, 1000.0 + math.log(2.0), rel(res.dtype))


def _scipy_dtype_ab(backend: str, da: str, db: str) -> str:
    """The result dtype ``test_dtypes_ab`` expects (its own rule, transcribed)."""
    is_int = {d: d.startswith("int") for d in (da, db)}
    if backend == "array_api_strict":
        floats = [d for d in (da, db) if not is_int[d]]
        if len(floats) < 2:
            floats.append("float64")
        return "float64" if "float64" in floats else "float32"
    if backend == "torch":  # torch.result_type, integers -> default float32
        if is_int[da] and is_int[db]:
            return "float32"
        return "float64" if "float64" in (da, db) else "float32"
    promoted = np.result_type(np.dtype(da), np.dtype(db))
    return "float64" if promoted.kind in "iu" else promoted.name  # integral -> default float


def _logitlab_dtype_ab(backend: str, da: str) -> str:
    """logitlab's documented rule: the result has ``x``'s floating dtype (integers: float64, or
    torch's default dtype)."""
    if da.startswith("float"):
        return da
    return "float32" if backend == "torch" else "float64"


def _dtype_ab_params() -> list[object]:
    out = []
    for bk in ("numpy", "torch", "array_api_strict"):
        for da in ("float32", "float64", "int32", "int64"):
            for db in ("float32", "float64", "int32", "int64"):
                same = _scipy_dtype_ab(bk, da, db) == _logitlab_dtype_ab(bk, da)
                marks = () if same else DELIBERATE("the result takes x's dtype, b is cast to it")
                out.append(pytest.param(bk, da, db, marks=marks, id=f"{bk}-{da}-{db}"))
    return out


@pytest.mark.parametrize("backend, dtype_a, dtype_b", _dtype_ab_params(), indirect=["backend"])
def test_logsumexp_dtypes_ab(backend: Backend, dtype_a: str, dtype_b: str) -> None:
    # TestLogSumExp.test_dtypes_ab (real dtypes): a = [2, 1], b = [1, -1] -> log(e^2 - e).
    # Where SciPy promotes a with b and logitlab keeps a's dtype (documented: "in x's ...
    # floating dtype"), the case is a deliberate difference and asserts logitlab's rule.
    a = backend.asarray(np.array([2, 1]).astype(dtype_a))
    b = backend.asarray(np.array([1, -1]).astype(dtype_b))
    res = ll.logsumexp(a, b=b)
    assert dtype_name(res) == _logitlab_dtype_ab(backend.name, dtype_a)
    close(res, math.log(math.exp(2) - math.exp(1)), rel(res.dtype))


@DELIBERATE("complex input is not supported (TypeError); SciPy supports complex logsumexp")
def test_logsumexp_complex_rejected() -> None:
    # TestLogSumExp.test_logsumexp_complex_sign / test_gh21610: complex input
    a = np.array([1 + 1j, 2 - 1j, -2 + 3j])
    with pytest.raises(TypeError, match="complex"):
        ll.logsumexp(a)
    assert np.iscomplexobj(sp.logsumexp(a))


@backends()
def test_logsumexp_gh18295_dominated_term(backend: Backend) -> None:
    # TestLogSumExp.test_gh18295: [0, -40] keeps the dominated term (== logaddexp)
    res = ll.logsumexp(backend.asarray([0.0, -40.0]))
    close(res, np.logaddexp(0.0, -40.0), TIGHT)
    assert R.ulp_error(float(to_np(res)), R.lse([0.0, -40.0]), np.float64) <= 1


@backends()
def test_logsumexp_no_writeback(backend: Backend) -> None:
    # TestLogSumExp.test_no_writeback
    a, b = backend.asarray([5.0, 4.0]), backend.asarray([3.0, 2.0])
    ll.logsumexp(a)
    ll.logsumexp(a, b=b)
    np.testing.assert_array_equal(to_np(a), [5.0, 4.0])
    np.testing.assert_array_equal(to_np(b), [3.0, 2.0])


@backends()
def test_logsumexp_gh22903_negative_weight_on_the_max(backend: Backend) -> None:
    # TestLogSumExp.test_gh22903: a negative weight on the largest element must not give NaN when
    # the sum is positive; NaN when it is negative (no return_sign)
    a = [3.06409428, 0.37251854, 3.87471931]
    b = [1.88190708, 2.84174795, -0.85016884]
    res = ll.logsumexp(backend.asarray(a), b=backend.asarray(b))
    r_signed, s = ll.logsumexp(backend.asarray(a), b=backend.asarray(b), return_sign=True)
    close(res, to_np(r_signed), TIGHT)
    close(res, sp.logsumexp(np.array(a), b=np.array(b)), TIGHT)
    exact, sign = R.lse_b(a, b)
    assert sign == 1 and float(to_np(s)) == 1.0
    assert R.ulp_error(float(to_np(res)), exact, np.float64) <= 4
    b_neg = [1.88190708, 2.84174795, -3.85016884]
    res = ll.logsumexp(backend.asarray(a), b=backend.asarray(b_neg))
    assert np.isnan(to_np(res))


@pytest.mark.parametrize(
    "a, b, sign_ref", [([INF], None, 1.0), ([INF], [-1.0], -1.0)], ids=["b=None", "b=-1"]
)
@backends()
def test_logsumexp_gh23548_sign_of_infinity(
    backend: Backend, a: list[float], b: list[float] | None, sign_ref: float
) -> None:
    # TestLogSumExp.test_gh23548: return_sign with an infinite element gives a real sign
    val, sign = ll.logsumexp(
        backend.asarray(a), b=None if b is None else backend.asarray(b), return_sign=True
    )
    assert np.isinf(to_np(val))
    np.testing.assert_array_equal(to_np(sign), sign_ref)


@backends()
def test_logsumexp_inf_minus_inf_is_nan(backend: Backend) -> None:
    # Same family as TestLogSumExp.test_gh22601_infinite_elements / test_gh23548, with weights of
    # both signs on two infinite elements; expected: SciPy 1.17.1 on the same input.
    a, b = np.array([INF, INF]), np.array([1.0, -1.0])
    r, s = ll.logsumexp(backend.asarray(a), b=backend.asarray(b), return_sign=True)
    r_ref, s_ref = sp.logsumexp(a, b=b, return_sign=True)
    assert np.isnan(r_ref) and np.isnan(s_ref)
    np.testing.assert_array_equal(to_np(r), r_ref)
    np.testing.assert_array_equal(to_np(s), s_ref)
    np.testing.assert_array_equal(
        to_np(ll.logsumexp(backend.asarray(a), b=backend.asarray(b))), NAN
    )


@pytest.mark.parametrize(
    "a, b",
    [([NAN, 0.0], None), ([NAN, 0.0], [1.0, 1.0]), ([0.0, 1.0], [NAN, 1.0])],
    ids=["nan-in-a", "nan-in-a-with-b", "nan-in-b"],
)
@backends()
def test_logsumexp_sign_of_nan_is_nan(backend: Backend, a: list, b: list | None) -> None:
    # TestLogSumExp.test_logsumexp's NaN case with return_sign=True; expected: SciPy 1.17.1.
    r, s = ll.logsumexp(
        backend.asarray(a), b=None if b is None else backend.asarray(b), return_sign=True
    )
    r_ref, s_ref = sp.logsumexp(np.array(a), b=None if b is None else np.array(b), return_sign=True)
    assert np.isnan(r_ref) and np.isnan(s_ref)
    np.testing.assert_array_equal(to_np(r), r_ref)
    np.testing.assert_array_equal(to_np(s), s_ref)


@backends()
def test_logsumexp_empty_is_minus_inf(backend: Backend) -> None:
    # TestLogSumExp.test_logsumexp: "Test with zero-size array", logsumexp([]) == -inf
    res = ll.logsumexp(backend.asarray(np.array([], dtype=np.float64)))
    np.testing.assert_array_equal(to_np(res), -INF)


# --------------------------------------------------------------------------- softmax


SOFTMAX_ARANGE4 = [
    0.03205860328008499,
    0.08714431874203256,
    0.23688281808991013,
    0.6439142598879722,
]
LOG_SOFTMAX_ARANGE4 = [
    -3.4401896985611953,
    -2.4401896985611953,
    -1.4401896985611953,
    -0.44018969856119533,
]


@backends()
def test_softmax_fixtures(backend: Backend) -> None:
    # TestSoftmax.test_softmax_fixtures (the 1-D parts; SciPy's constants from mpmath, dps=200)
    close(ll.softmax(backend.asarray([1000.0, 0.0, 0.0, 0.0])), [1, 0, 0, 0], TIGHT)
    close(ll.softmax(backend.asarray([1.0, 1.0])), [0.5, 0.5], TIGHT)
    close(ll.softmax(backend.asarray([0.0, 1.0])), np.array([1, np.e]) / (1 + np.e), TIGHT)
    x = np.arange(4.0)
    close(ll.softmax(backend.asarray(x)), SOFTMAX_ARANGE4, rel(np.float64))
    # translation property
    close(ll.softmax(backend.asarray(x + 100)), SOFTMAX_ARANGE4, rel(np.float64))


@DELIBERATE("the default axis is -1 (torch's convention); SciPy's softmax reduces over all axes")
@pytest.mark.parametrize("fn", ["softmax", "log_softmax", "logsumexp"])
@backends()
def test_default_axis_is_last_not_all(backend: Backend, fn: str) -> None:
    # TestSoftmax.test_softmax_fixtures / TestLogSoftmax.test_log_softmax_noneaxis: "When
    # axis=None, softmax operates on the entire array": that is SciPy's default, not logitlab's.
    x = np.arange(4.0).reshape(2, 2)
    ours = getattr(ll, fn)(backend.asarray(x))
    theirs = getattr(sp, fn)(x)
    close(ours, getattr(sp, fn)(x, axis=-1), TIGHT)
    assert to_np(ours).shape != np.shape(theirs) or not np.allclose(to_np(ours), theirs)


@pytest.mark.parametrize("fn", ["softmax", "log_softmax"])
@backends()
def test_softmax_axis_none_whole_array(backend: Backend, fn: str) -> None:
    # TestSoftmax.test_softmax_fixtures / TestLogSoftmax.test_log_softmax_noneaxis with the axis
    # given explicitly: axis=None normalises over the whole array and keeps the shape.
    expected = SOFTMAX_ARANGE4 if fn == "softmax" else LOG_SOFTMAX_ARANGE4
    x = backend.asarray(np.arange(4.0).reshape(2, 2))
    close(getattr(ll, fn)(x, axis=None), np.reshape(expected, (2, 2)), TIGHT)


@pytest.mark.parametrize("fn, expected", [("softmax", 1.0), ("log_softmax", 0.0)])
def test_softmax_scalar(fn: str, expected: float) -> None:
    # TestSoftmax.test_softmax_scalar (softmax(1000) == 1) and TestLogSoftmax.test_log_softmax_
    # scalar (log_softmax(1.0) == 0), with SciPy's default axis=None given explicitly
    close(getattr(ll, fn)(1000.0, axis=None), expected, TIGHT)


@backends()
def test_softmax_multi_axes(backend: Backend) -> None:
    # TestSoftmax.test_softmax_multi_axes (2-D parts)
    x2 = backend.asarray([[1000.0, 0.0], [1000.0, 0.0]])
    close(ll.softmax(x2, axis=0), [[0.5, 0.5], [0.5, 0.5]], TIGHT)
    close(ll.softmax(x2, axis=1), [[1.0, 0.0], [1.0, 0.0]], TIGHT)
    x = np.array([[-25.0, 0.0, 25.0, 50.0], [1.0, 325.0, 749.0, 750.0]])
    expected = np.array(
        [
            [
                2.678636961770877e-33,
                1.9287498479371314e-22,
                1.3887943864771144e-11,
                0.999999999986112,
            ],
            [0.0, 1.9444526359919372e-185, 0.2689414213699951, 0.7310585786300048],
        ]
    )
    close(ll.softmax(backend.asarray(x), axis=1), expected, TIGHT)
    close(ll.softmax(backend.asarray(x.T), axis=0), expected.T, TIGHT)


@backends()
def test_softmax_tuple_axis(backend: Backend) -> None:
    # TestSoftmax.test_softmax_multi_axes: "3-d input, with a tuple for the axis"
    x = np.array([[-25.0, 0.0, 25.0, 50.0], [1.0, 325.0, 749.0, 750.0]])
    expected = sp.softmax(x, axis=1)
    close(
        ll.softmax(backend.asarray(x.reshape(2, 2, 2)), axis=(1, 2)),
        expected.reshape(2, 2, 2),
        TIGHT,
    )


@backends()
def test_softmax_int_and_list_input(backend: Backend) -> None:
    # TestSoftmax.test_softmax_int_array and test_softmax_array_like
    res = ll.softmax(backend.asarray([1000, 0, 0, 0]))
    assert dtype_name(res) == _default_float(backend)
    close(res, [1.0, 0.0, 0.0, 0.0], TIGHT)
    close(ll.softmax([1000, 0, 0, 0]), [1.0, 0.0, 0.0, 0.0], TIGHT)


# --------------------------------------------------------------------------- log_softmax


@backends()
def test_log_softmax_basic_int_and_list(backend: Backend) -> None:
    # TestLogSoftmax.test_log_softmax_basic, test_log_softmax_int_array, _array_like
    close(ll.log_softmax(backend.asarray([1000.0, 1.0])), [0.0, -999.0], TIGHT)
    res = ll.log_softmax(backend.asarray([1000, 1]))
    assert dtype_name(res) == _default_float(backend)
    close(res, [0.0, -999.0], TIGHT)
    close(ll.log_softmax([1000, 1]), [0.0, -999.0], TIGHT)


@pytest.mark.parametrize("offset", [0, 100])
@backends()
def test_log_softmax_translation(backend: Backend, offset: int) -> None:
    # TestLogSoftmax.test_log_softmax_translation (data_1d, SciPy's mpmath constants)
    x = np.arange(4.0) + offset
    close(ll.log_softmax(backend.asarray(x)), LOG_SOFTMAX_ARANGE4, rel(np.float64))


@pytest.mark.parametrize(
    "axis, expected",
    [(0, np.log(0.5) * np.ones((2, 2))), (1, [[0.0, -999.0], [0.0, -999.0]])],
    ids=["axis0", "axis1"],
)
@backends()
def test_log_softmax_axes(backend: Backend, axis: int, expected: object) -> None:
    # TestLogSoftmax.test_axes
    x = backend.asarray([[1000.0, 1.0], [1000.0, 1.0]])
    close(ll.log_softmax(x, axis=axis), expected, TIGHT)


@backends()
def test_log_softmax_2d(backend: Backend) -> None:
    # TestLogSoftmax.test_log_softmax_2d_axis1 and test_log_softmax_2d_axis0 (data_2d)
    x = np.arange(8.0).reshape(2, 4)
    expected = np.array([LOG_SOFTMAX_ARANGE4, LOG_SOFTMAX_ARANGE4])
    close(ll.log_softmax(backend.asarray(x), axis=1), expected, rel(np.float64))
    close(ll.log_softmax(backend.asarray(x.T), axis=0), expected.T, rel(np.float64))


@backends()
def test_log_softmax_3d_tuple_axis(backend: Backend) -> None:
    # TestLogSoftmax.test_log_softmax_3d: "3D input, with a tuple for the axis"
    x = np.arange(8.0).reshape(2, 2, 2)
    expected = np.reshape([LOG_SOFTMAX_ARANGE4, LOG_SOFTMAX_ARANGE4], (2, 2, 2))
    close(ll.log_softmax(backend.asarray(x), axis=(1, 2)), expected, TIGHT)


@DELIBERATE(
    "a row of only -inf (fully masked) gives the uniform distribution and lse -inf; "
    "SciPy's softmax/log_softmax give NaN there"
)
@backends()
def test_fully_masked_row_is_uniform(backend: Backend) -> None:
    x = np.array([[-INF, -INF, -INF], [0.5, -INF, 1.0]])
    with np.errstate(invalid="ignore"):
        assert np.isnan(sp.softmax(x, axis=1)[0]).all()
        assert np.isnan(sp.log_softmax(x, axis=1)[0]).all()
    close(to_np(ll.softmax(backend.asarray(x), axis=1))[0], [1 / 3] * 3, TIGHT)
    close(to_np(ll.log_softmax(backend.asarray(x), axis=1))[0], [-math.log(3)] * 3, TIGHT)
    close(to_np(ll.softmax(backend.asarray(x), axis=1))[1], sp.softmax(x[1]), TIGHT)
    np.testing.assert_array_equal(to_np(ll.logsumexp(backend.asarray(x), axis=1))[0], -INF)


@DELIBERATE(
    "a row whose maximum is +inf shares the mass equally among its +inf entries (the limit); "
    "SciPy gives NaN"
)
@backends()
def test_plus_inf_entries_share_the_mass(backend: Backend) -> None:
    x = np.array([INF, 0.0, INF])
    with np.errstate(invalid="ignore"):
        assert np.isnan(sp.softmax(x)).all()
    close(ll.softmax(backend.asarray(x)), [0.5, 0.0, 0.5], TIGHT)
    close(ll.log_softmax(backend.asarray(x)), [-math.log(2), -INF, -math.log(2)], TIGHT)

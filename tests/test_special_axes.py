"""``axis=None``, tuple axes, ``keepdims`` and ``b`` broadcasting of logsumexp, softmax and
log_softmax, with the semantics of :func:`scipy.special.logsumexp` / ``softmax`` /
``log_softmax``.

Truths: SciPy's own results and its test cases (``scipy/special/tests/test_logsumexp.py``), the
mpmath references of tests/reference.py, and for gradients the closed forms evaluated on SciPy's
softmax. Each deliberate difference from SciPy is an asserted case at the end.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from typing import Any

import numpy as np
import pytest
import scipy.special as ss
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from tests import reference as R
from tests.conftest import Backend

import logitlab as ll

INF = math.inf
RTOL = 1e-13  # float64, well-conditioned inputs (SciPy's own tolerance in its tests)

AXES: list[Any] = [None, 0, -1, (0,), (1, 3), (3, 1), (-1, -2), (0, 2), (0, 1, 2, 3), ()]


def _ids(v: Any) -> str:
    return "none" if v is None else str(v).replace(" ", "")


@pytest.fixture(scope="module")
def x4() -> np.ndarray:
    return np.random.default_rng(7).standard_normal((2, 3, 4, 5)) * 3


@pytest.mark.parametrize("keepdims", [False, True], ids=["drop", "keep"])
@pytest.mark.parametrize("axis", AXES, ids=_ids)
def test_logsumexp_axes_match_scipy(
    backend: Backend, x4: np.ndarray, axis: Any, keepdims: bool
) -> None:
    got = backend.to_numpy(ll.logsumexp(backend.asarray(x4), axis=axis, keepdims=keepdims))
    ref = np.asarray(ss.logsumexp(x4, axis=axis, keepdims=keepdims))
    assert got.shape == ref.shape
    np.testing.assert_allclose(got, ref, rtol=RTOL, atol=0)


@pytest.mark.parametrize("keepdims", [False, True], ids=["drop", "keep"])
@pytest.mark.parametrize("axis", AXES, ids=_ids)
def test_logsumexp_b_broadcast_and_sign_match_scipy(
    backend: Backend, axis: Any, keepdims: bool
) -> None:
    # a and b broadcast against each other: (2, 3, 1, 5) with (3, 4, 1) -> (2, 3, 4, 5)
    rng = np.random.default_rng(11)
    a = rng.standard_normal((2, 3, 1, 5))
    b = rng.standard_normal((3, 4, 1))
    out, sgn = ll.logsumexp(
        backend.asarray(a), axis=axis, keepdims=keepdims, b=backend.asarray(b), return_sign=True
    )
    r_out, r_sgn = ss.logsumexp(a, axis=axis, keepdims=keepdims, b=b, return_sign=True)
    out, sgn = backend.to_numpy(out), backend.to_numpy(sgn)
    assert out.shape == sgn.shape == np.shape(r_out)
    np.testing.assert_array_equal(sgn, r_sgn)
    # relative to the largest term: the sum of terms of both signs may cancel
    scale = ss.logsumexp(a + np.log(np.abs(b)), axis=axis, keepdims=keepdims)
    np.testing.assert_allclose(np.exp(out - scale), np.exp(r_out - scale), rtol=0, atol=1e-13)
    # without return_sign a negative sum is NaN, as in SciPy
    plain = backend.to_numpy(
        ll.logsumexp(backend.asarray(a), axis=axis, keepdims=keepdims, b=backend.asarray(b))
    )
    np.testing.assert_array_equal(np.isnan(plain), r_sgn < 0)


def test_b_broadcasts_x(backend: Backend) -> None:
    """``b`` may have more dimensions than ``x``: the result has the broadcast shape."""
    a = np.array([[0.5], [-1.0], [2.0]])  # (3, 1)
    b = np.array([[1.0, 2.0, 0.5, 3.0]])  # (1, 4)
    for axis in (0, 1, None, (0, 1)):
        got = backend.to_numpy(ll.logsumexp(backend.asarray(a), axis=axis, b=backend.asarray(b)))
        ref = np.asarray(ss.logsumexp(a, axis=axis, b=b))
        assert got.shape == ref.shape
        np.testing.assert_allclose(got, ref, rtol=RTOL, atol=0)
    with pytest.raises(ValueError, match=r"b with shape \(4,\) cannot be broadcast"):
        ll.logsumexp(backend.asarray(np.zeros((2, 3))), b=backend.asarray(np.ones(4)))


@pytest.mark.parametrize("axis", [a for a in AXES if a != ()], ids=_ids)
def test_softmax_and_log_softmax_axes_match_scipy(
    backend: Backend, x4: np.ndarray, axis: Any
) -> None:
    x = backend.asarray(x4)
    p = backend.to_numpy(ll.softmax(x, axis=axis))
    lp = backend.to_numpy(ll.log_softmax(x, axis=axis))
    assert p.shape == lp.shape == x4.shape
    np.testing.assert_allclose(p, ss.softmax(x4, axis=axis), rtol=RTOL, atol=0)
    # SciPy's log_softmax loses the relative accuracy of the dominant entry (x - a - log(s), with
    # s = 1 + tiny rounded): mpmath is the truth for the values
    ref = _mp_rows(x4, axis, R.log_softmax)
    assert (
        max(
            R.ulp_error(float(v), r, np.float64)
            for v, r in zip(lp.ravel(), ref.ravel(), strict=True)
        )
        <= 2
    )
    t = backend.to_numpy(ll.softmax(x, axis=axis, temperature=0.5))
    np.testing.assert_allclose(t, ss.softmax(x4 / 0.5, axis=axis), rtol=RTOL, atol=0)


def test_empty_tuple_reduces_nothing(backend: Backend, x4: np.ndarray) -> None:
    """``axis=()``: every element is its own distribution (SciPy/NumPy: a reduction over no
    axes)."""
    x = backend.asarray(x4)
    np.testing.assert_array_equal(backend.to_numpy(ll.logsumexp(x, axis=())), x4)
    np.testing.assert_array_equal(backend.to_numpy(ll.softmax(x, axis=())), ss.softmax(x4, ()))
    np.testing.assert_array_equal(backend.to_numpy(ll.log_softmax(x, axis=())), np.zeros_like(x4))


def test_temperature_limits_over_tuple_axes(backend: Backend) -> None:
    x = np.array([[[1.0, 3.0], [3.0, -INF]], [[0.0, 0.0], [0.0, 0.0]]])
    got0 = backend.to_numpy(ll.softmax(backend.asarray(x), axis=(1, 2), temperature=0))
    np.testing.assert_array_equal(got0, [[[0, 0.5], [0.5, 0]], [[0.25, 0.25], [0.25, 0.25]]])
    got_inf = backend.to_numpy(ll.softmax(backend.asarray(x), axis=(1, 2), temperature=INF))
    third = 1 / 3
    np.testing.assert_array_equal(got_inf[0], [[third, third], [third, 0]])


# --------------------------------------------------------------------------- SciPy's own cases


def test_scipy_cases(backend: Backend) -> None:
    """Inputs and expected values of scipy/special/tests/test_logsumexp.py (SciPy 1.17)."""
    f = backend.to_numpy
    a = backend.asarray([[1e10, 1e-10], [-1e10, -INF]])
    np.testing.assert_allclose(f(ll.logsumexp(a, axis=-1)), [1e10, -1e10], rtol=RTOL)
    np.testing.assert_allclose(f(ll.logsumexp(a, axis=-1, keepdims=True)), [[1e10], [-1e10]])
    np.testing.assert_allclose(f(ll.logsumexp(a, axis=(-1, -2))), 1e10, rtol=RTOL)
    ones = backend.asarray(np.ones((1, 2, 3, 4)))
    r, s = ll.logsumexp(ones, axis=2, b=ones, return_sign=True)
    assert tuple(r.shape) == tuple(s.shape) == (1, 2, 4)
    r, s = ll.logsumexp(ones, axis=(1, 3), b=ones, return_sign=True)
    assert tuple(r.shape) == tuple(s.shape) == (1, 3)
    assert tuple(ll.logsumexp(ones, axis=(1, 3), b=ones).shape) == (1, 3)
    # test_logsumexp_b_shape: a (4, 1, 2, 1) and b (3, 1, 5) broadcast to (4, 3, 2, 5)
    got = ll.logsumexp(
        backend.asarray(np.zeros((4, 1, 2, 1))), axis=None, b=backend.asarray(np.ones((3, 1, 5)))
    )
    np.testing.assert_allclose(f(got), math.log(4 * 3 * 2 * 5), rtol=RTOL)
    # test_softmax_multi_axes (expected values: SciPy's mpmath at 200 digits)
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
    x3d = backend.asarray(x.reshape(2, 2, 2))
    np.testing.assert_allclose(
        f(ll.softmax(x3d, axis=(1, 2))), expected.reshape(2, 2, 2), rtol=RTOL
    )
    # test_log_softmax_3d and test_log_softmax_noneaxis
    row = [-3.4401896985611953, -2.4401896985611953, -1.4401896985611953, -0.44018969856119533]
    x8 = backend.asarray(np.arange(8.0).reshape(2, 2, 2))
    np.testing.assert_allclose(
        f(ll.log_softmax(x8, axis=(1, 2))), np.array([row, row]).reshape(2, 2, 2), rtol=RTOL
    )
    x4_ = backend.asarray(np.arange(4.0).reshape(2, 2))
    np.testing.assert_allclose(
        f(ll.log_softmax(x4_, axis=None)), np.array(row).reshape(2, 2), rtol=RTOL
    )


def test_scalar_input_with_axis_none() -> None:
    assert float(ll.softmax(1000.0, axis=None)) == 1.0  # test_softmax_scalar
    assert float(ll.log_softmax(1.0, axis=None)) == 0.0  # test_log_softmax_scalar
    assert float(ll.logsumexp(3.0, axis=None)) == 3.0


# --------------------------------------------------------------------------- mpmath


def _mp_rows(x: np.ndarray, axis: Any, fn: Any) -> np.ndarray:
    """``fn`` (a row function of tests/reference.py) applied over ``axis`` of ``x``, in ``x``'s
    layout (an object array of mpmath numbers)."""
    axes = tuple(range(x.ndim)) if axis is None else (axis if isinstance(axis, tuple) else (axis,))
    axes = tuple(sorted(a % x.ndim for a in axes))
    rest = [i for i in range(x.ndim) if i not in axes]
    order = rest + list(axes)
    xm = np.moveaxis(x, order, range(x.ndim))
    moved = xm.shape
    rows = xm.reshape(-1, math.prod(moved[len(rest) :]))
    out = np.array([fn(list(r)) for r in rows], dtype=object).reshape(moved)
    return np.moveaxis(out, range(x.ndim), order)


def _mp_lse_over(x: np.ndarray, axes: tuple[int, ...], b: np.ndarray | None = None) -> np.ndarray:
    """mpmath log-sum-exp (and sign) over ``axes`` of ``x`` (``b``: weights of x's shape)."""
    rest = [i for i in range(x.ndim) if i not in axes]
    xm = np.moveaxis(x, rest + list(axes), range(x.ndim))
    lead = xm.shape[: len(rest)]
    xm = xm.reshape(*lead, -1)
    bm = None if b is None else np.moveaxis(b, rest + list(axes), range(x.ndim)).reshape(xm.shape)
    out = np.empty(lead, dtype=object)
    for idx in np.ndindex(*lead):
        if bm is None:
            out[idx] = (R.lse(list(xm[idx])), 1)
        else:
            out[idx] = R.lse_b(list(xm[idx]), list(bm[idx]))
    return out


@pytest.mark.parametrize("axis", [(0, 2), (2, 0), None, (-1, -3)], ids=_ids)
def test_tuple_axis_logsumexp_against_mpmath(backend: Backend, axis: Any) -> None:
    """Dominated terms spread over several axes: the sum of them must not be rounded away."""
    x = np.full((2, 3, 4), -60.0)
    x[0, :, 0] = 0.0  # one maximal entry per column of the reduction
    x[1, :, 3] = -38.5  # terms 1e-17 below it, spread across the reduced axes
    x[1, 1, 1] = -36.0
    x[0, 2, 2] = 700.0
    x[1, 2, 1] = 699.0
    axes = tuple(range(3)) if axis is None else tuple(a % 3 for a in axis)
    got = backend.to_numpy(ll.logsumexp(backend.asarray(x), axis=axis))
    ref = _mp_lse_over(x, axes)
    for idx in np.ndindex(*ref.shape):
        assert R.ulp_error(float(got[idx]), ref[idx][0], np.float64) <= 2, idx


def test_tuple_axis_logsumexp_with_b_against_mpmath(backend: Backend) -> None:
    rng = np.random.default_rng(5)
    x = rng.standard_normal((3, 2, 4)) * 4
    b = rng.uniform(0.5, 2.0, (3, 2, 4)) * np.where(rng.random((3, 2, 4)) < 0.3, -1, 1)
    out, sgn = ll.logsumexp(backend.asarray(x), axis=(0, 2), b=backend.asarray(b), return_sign=True)
    out, sgn = backend.to_numpy(out), backend.to_numpy(sgn)
    ref = _mp_lse_over(x, (0, 2), b)
    for i in range(2):
        val, sign = ref[i]
        assert sgn[i] == sign
        # |sum| may cancel: the error is relative to the largest term, not to the result
        big = max(
            abs(bb) * math.exp(v) for bb, v in zip(b[:, i].ravel(), x[:, i].ravel(), strict=True)
        )
        assert abs(math.exp(out[i]) - float(R.mpmath.exp(val))) <= 1e-14 * big


# --------------------------------------------------------------------------- gradients (torch)


@pytest.mark.parametrize("axis", [None, (0, 2), (2, 0), (1,), (), (-1, -3)], ids=_ids)
def test_tuple_axis_gradients(axis: Any) -> None:
    """d lse / dx = softmax over the same axes (SciPy's softmax as the truth); the softmax and
    log-softmax VJPs from their closed forms on SciPy's probabilities; gradcheck in float64."""
    torch = pytest.importorskip("torch")
    xn = np.random.default_rng(2).standard_normal((2, 3, 4))
    gn = np.random.default_rng(3).standard_normal((2, 3, 4))
    x = torch.tensor(xn, requires_grad=True)
    g = torch.tensor(gn)
    p = ss.softmax(xn, axis=axis)
    ax = axis if axis is not None else (0, 1, 2)

    ll.logsumexp(x, axis=axis).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), p, rtol=RTOL, atol=0)
    x.grad = None
    ll.logsumexp(x, axis=axis, keepdims=True).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), p, rtol=RTOL, atol=0)

    x.grad = None
    ll.softmax(x, axis=axis).backward(g)
    want = p * (gn - np.sum(gn * p, axis=ax, keepdims=True))
    np.testing.assert_allclose(x.grad.numpy(), want, rtol=1e-12, atol=1e-15)

    x.grad = None
    ll.log_softmax(x, axis=axis).backward(g)
    want = gn - p * np.sum(gn, axis=ax, keepdims=True)
    np.testing.assert_allclose(x.grad.numpy(), want, rtol=1e-12, atol=1e-15)

    for fn in (
        lambda v: ll.logsumexp(v, axis=axis, keepdims=True),
        lambda v: ll.softmax(v, axis=axis, temperature=0.7),
        lambda v: ll.log_softmax(v, axis=axis),
    ):
        assert torch.autograd.gradcheck(fn, (x.detach().requires_grad_(),))


def test_tuple_axes_use_the_closed_form_functions() -> None:
    """The merged input goes through the library's autograd Functions (one int axis), not
    through autograd of the array-API forward."""
    torch = pytest.importorskip("torch")
    x = torch.randn(2, 3, 4, dtype=torch.float64, requires_grad=True)

    def names(t: Any) -> set[str]:
        seen, todo = set(), [t.grad_fn]
        while todo:
            fn = todo.pop()
            if fn is None:
                continue
            seen.add(type(fn).__name__)
            todo.extend(f for f, _ in fn.next_functions)
        return seen

    assert "_LogSumExpBackward" in names(ll.logsumexp(x, axis=(0, 2)))
    assert "_SoftmaxBackward" in names(ll.softmax(x, axis=None))
    assert "_SoftmaxBackward" in names(ll.log_softmax(x, axis=(2, 1)))


# --------------------------------------------------------------------------- property


@pytest.mark.parametrize("name", ["numpy", "torch"])
@given(data=st.data())
def test_softmax_matches_scipy_on_random_shapes_and_axes(name: str, data: st.DataObject) -> None:
    backend = Backend(name)
    shape = data.draw(hnp.array_shapes(min_dims=1, max_dims=4, min_side=1, max_side=4))
    x = data.draw(hnp.arrays(np.float64, shape, elements=st.floats(-30, 30)))
    nd = len(shape)
    axis = data.draw(
        st.one_of(
            st.none(),
            st.integers(-nd, nd - 1),
            st.lists(st.integers(0, nd - 1), min_size=1, max_size=nd, unique=True).flatmap(
                lambda axes: st.tuples(*[st.sampled_from([a, a - nd]) for a in axes])
            ),
        )
    )
    got = backend.to_numpy(ll.softmax(backend.asarray(x), axis=axis))
    np.testing.assert_allclose(got, ss.softmax(x, axis=axis), rtol=1e-12, atol=0)
    lse = backend.to_numpy(ll.logsumexp(backend.asarray(x), axis=axis))
    # lse near 0 is ill-conditioned (a + log1p(s) cancels): a few ulps of the inputs' scale (30)
    np.testing.assert_allclose(lse, ss.logsumexp(x, axis=axis), rtol=1e-12, atol=1e-13)


# --------------------------------------------------------------------------- bad axes


@pytest.mark.parametrize(
    ("axis", "exc", "match"),
    [
        ((0, 0), ValueError, r"axis=\(0, 0\) names dimension 0 twice"),
        ((1, -1), ValueError, r"axis=\(1, -1\) names dimension 1 twice"),
        ((0, 2), ValueError, r"axis=\(0, 2\) is out of range for an input with 2 dim"),
        (2, ValueError, r"axis=2 is out of range"),
        ((0, 1.0), TypeError, r"axis=\(0, 1.0\) must hold ints only, got float"),
        ((True,), TypeError, r"must hold ints only, got bool"),
        ([0, 1], TypeError, r"axis must be an int, a tuple of ints or None, got list"),
        ("0", TypeError, r"got str"),
    ],
)
def test_bad_axes(axis: Any, exc: type[Exception], match: str) -> None:
    x = np.zeros((2, 3))
    for fn in (ll.softmax, ll.log_softmax, ll.logsumexp):
        with pytest.raises(exc, match=match):
            fn(x, axis=axis)
    torch = pytest.importorskip("torch")
    xt = torch.zeros(2, 3, requires_grad=True)  # the same checks before the autograd dispatch
    for fn in (ll.softmax, ll.log_softmax, ll.logsumexp):
        with pytest.raises(exc, match=match):
            fn(xt, axis=axis)


def test_axis_none_without_asserts() -> None:
    """``python -O`` strips asserts: axis=None must not depend on one (it failed on an assert)."""
    code = (
        "import numpy as np, scipy.special as ss, logitlab as ll\n"
        "x = np.arange(6.0).reshape(2, 3)\n"
        "for f, g in ((ll.softmax, ss.softmax), (ll.log_softmax, ss.log_softmax)):\n"
        "    np.testing.assert_allclose(f(x, axis=None), g(x, axis=None), rtol=1e-13)\n"
        "print('ok')\n"
    )
    env = dict(os.environ)
    src = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")
    env["PYTHONPATH"] = os.pathsep.join([src, env.get("PYTHONPATH", "")])
    out = subprocess.run(
        [sys.executable, "-O", "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


# --------------------------------------------------------------------------- documented differences


def test_documented_differences_from_scipy() -> None:
    # keepdims of a 0-d input keeps no axis (NumPy's rule); SciPy makes the input 1-D first
    assert np.shape(ll.logsumexp(3.0, axis=None, keepdims=True)) == ()
    assert np.shape(ss.logsumexp(3.0, keepdims=True)) == (1,)
    # the sign of an empty sum is 0, as SciPy gives for b == 0 (SciPy: -1 for an empty input)
    assert ll.logsumexp(np.zeros((2, 0)), axis=1, return_sign=True)[1].tolist() == [0.0, 0.0]
    assert ss.logsumexp(np.zeros((2, 0)), axis=1, return_sign=True)[1].tolist() == [-1.0, -1.0]
    # +inf entries share the mass (the limit); SciPy's exp(inf - inf) gives NaN
    np.testing.assert_array_equal(ll.softmax([[INF, INF], [1.0, 2.0]], axis=None)[0], [0.5, 0.5])
    with np.errstate(invalid="ignore"):
        assert np.isnan(ss.softmax([[INF, INF], [1.0, 2.0]], axis=None)).all()
    # the default axis is the last one (SciPy: all axes)
    assert ll.softmax(np.zeros((2, 2))).tolist() == [[0.5, 0.5], [0.5, 0.5]]

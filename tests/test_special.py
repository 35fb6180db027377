"""logsumexp, softmax, log_softmax and the scalar helpers: semantics, limits and type handling.

Expected values come from the issue or from the mpmath reference (tests/reference.py).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.special as ss
from tests import reference as R
from tests.conftest import Backend

import logitlab as ll

INF = math.inf
DT = [np.float64, np.float32]


def _ulps(got: float, exact: object, dtype: type = np.float64) -> float:
    return R.ulp_error(float(got), exact, dtype)  # type: ignore[arg-type]


def test_issue_values() -> None:
    assert float(ll.logsumexp([0.0, -40.0])) == pytest.approx(4.248e-18, rel=1e-3)
    assert _ulps(ll.logsumexp([0.0, -40.0]), R.lse([0.0, -40.0])) <= 1
    lp = np.asarray(ll.log_softmax([0.0, -40.0]))
    assert lp[0] < 0 and _ulps(lp[0], R.log_softmax([0.0, -40.0])[0]) <= 1


@pytest.mark.parametrize("dtype", DT, ids=["f64", "f32"])
def test_type_dtype_device_preserved(backend: Backend, dtype: type) -> None:
    x = backend.asarray([[0.5, -1.0, 2.0], [0.0, 0.0, -3.0]], dtype)
    outs = [
        ll.logsumexp(x),
        ll.softmax(x),
        ll.log_softmax(x, temperature=0.5),
        ll.log1pexp(x),
        ll.log1mexp(-ll.log1pexp(x)),
        ll.xlogy(x, ll.softmax(x)),
        ll.xlog1py(x, ll.softmax(x)),
    ]
    for out in outs:
        assert type(out) is type(x)
        assert out.dtype == x.dtype
        if backend.name == "torch":
            assert out.device == x.device
    assert tuple(outs[0].shape) == (2,)
    assert tuple(outs[1].shape) == (2, 3)


def test_lists_tuples_scalars_and_ints() -> None:
    np.testing.assert_array_equal(ll.softmax((1.0, 1.0)), [0.5, 0.5])
    assert ll.logsumexp([[1, 2], [3, 4]]).dtype == np.float64  # integers: computed in float64
    assert float(ll.log1pexp(0.0)) == pytest.approx(math.log(2), rel=1e-15)
    assert float(ll.xlogy(0, 0)) == 0.0
    torch = pytest.importorskip("torch")
    assert ll.logsumexp(torch.tensor([1, 2])).dtype == torch.get_default_dtype()


@pytest.mark.parametrize("dtype", DT, ids=["f64", "f32"])
def test_nonfinite_rows(backend: Backend, dtype: type) -> None:
    x = backend.asarray(
        [[-INF, -INF, -INF], [INF, 1.0, -INF], [INF, INF, 0.0], [np.nan, 0.0, 1.0]], dtype
    )
    lse = backend.to_numpy(ll.logsumexp(x))
    assert lse[0] == -INF and lse[1] == INF and lse[2] == INF and np.isnan(lse[3])
    p = backend.to_numpy(ll.softmax(x))
    np.testing.assert_array_equal(p[0], np.full(3, 1 / 3, dtype))  # fully masked: uniform
    np.testing.assert_array_equal(p[1], [1, 0, 0])
    np.testing.assert_array_equal(p[2], [0.5, 0.5, 0])
    assert np.isnan(p[3]).all()
    lp = backend.to_numpy(ll.log_softmax(x))
    assert not np.isnan(lp[:3]).any() and np.isnan(lp[3]).all()


def test_temperature_limits(backend: Backend) -> None:
    x = backend.asarray([[1.0, 3.0, 3.0, -INF], [0.0, 0.0, 0.0, 0.0]], np.float64)
    np.testing.assert_array_equal(
        backend.to_numpy(ll.softmax(x, temperature=0)), [[0, 0.5, 0.5, 0], [0.25] * 4]
    )
    np.testing.assert_array_equal(
        backend.to_numpy(ll.softmax(x, temperature=INF)), [[1 / 3, 1 / 3, 1 / 3, 0], [0.25] * 4]
    )
    lp = backend.to_numpy(ll.log_softmax(x, temperature=0))
    assert lp[0, 0] == -INF and lp[0, 1] == pytest.approx(-math.log(2), rel=1e-15)
    # approaching the limits continuously
    near0 = backend.to_numpy(ll.softmax(x, temperature=1e-3))
    np.testing.assert_allclose(near0[0], [0, 0.5, 0.5, 0], atol=1e-300)


@pytest.mark.parametrize("bad", [-1.0, -INF, math.nan])
def test_bad_temperature(bad: float) -> None:
    with pytest.raises(ValueError, match="temperature"):
        ll.softmax([1.0, 2.0], temperature=bad)
    with pytest.raises(ValueError, match="temperature"):
        ll.log_softmax([1.0, 2.0], temperature=bad)


def test_axis_keepdims_and_all_axes(backend: Backend) -> None:
    rng = np.random.default_rng(3)
    xn = rng.standard_normal((3, 4, 5))
    x = backend.asarray(xn, np.float64)
    for axis in (0, 1, -1):
        for keep in (False, True):
            got = backend.to_numpy(ll.logsumexp(x, axis=axis, keepdims=keep))
            np.testing.assert_allclose(got, ss.logsumexp(xn, axis=axis, keepdims=keep), rtol=1e-14)
        np.testing.assert_allclose(
            backend.to_numpy(ll.softmax(x, axis=axis)), ss.softmax(xn, axis=axis), rtol=1e-14
        )
    got = backend.to_numpy(ll.logsumexp(x, axis=None, keepdims=True))
    assert got.shape == (1, 1, 1)
    np.testing.assert_allclose(got.reshape(()), ss.logsumexp(xn), rtol=1e-14)


def test_logsumexp_b_and_sign(backend: Backend) -> None:
    x = backend.asarray([[1.0, 2.0], [1.0, 2.0], [3.0, 3.0]], np.float64)
    b = backend.asarray([[1.0, -1.0], [0.0, 2.0], [1.0, -1.0]], np.float64)
    out, sgn = ll.logsumexp(x, b=b, return_sign=True)
    out, sgn = backend.to_numpy(out), backend.to_numpy(sgn)
    assert list(sgn) == [-1.0, 1.0, 0.0]
    assert _ulps(out[0], R.lse_b([1.0, 2.0], [1.0, -1.0])[0]) <= 1
    assert _ulps(out[1], R.lse_b([1.0, 2.0], [0.0, 2.0])[0]) <= 1
    assert out[2] == -INF
    assert np.isnan(backend.to_numpy(ll.logsumexp(x, b=b))[0])  # negative sum without sign: NaN
    with pytest.raises(ValueError, match="cannot be broadcast"):
        ll.logsumexp(np.zeros((2, 3)), b=np.ones(4))


def test_helpers_edges() -> None:
    assert float(ll.log1pexp(-INF)) == 0.0 and float(ll.log1pexp(INF)) == INF
    assert float(ll.log1mexp(0.0)) == -INF and float(ll.log1mexp(-INF)) == 0.0
    assert _ulps(ll.log1mexp(-1e-20), R.log1mexp(-1e-20)) <= 1
    assert np.isnan(float(ll.xlogy(0.0, math.nan)))  # NaN still propagates
    assert float(ll.xlog1py(0.0, -1.0)) == 0.0
    assert float(ll.xlogy(1.0, 0.0)) == -INF
    got = np.asarray(ll.xlogy([[0.5], [2.0]], [0.25, 4.0]))  # broadcasting
    assert got.shape == (2, 2)


def test_half_inputs_return_half() -> None:
    torch = pytest.importorskip("torch")
    for dt in (torch.float16, torch.bfloat16):
        x = torch.tensor([[0.0, -30.0, -30.0, 20.0]], dtype=dt)
        for out in (ll.logsumexp(x), ll.softmax(x), ll.log_softmax(x), ll.log1pexp(x)):
            assert out.dtype == dt and torch.isfinite(out).all()
    # float16 exp overflows at 11.09: the float32 computation does not
    assert float(ll.logsumexp(torch.tensor([12.0, 12.0], dtype=torch.float16))) == pytest.approx(
        12.69, abs=0.01
    )


def test_native_and_fallback_paths_agree_bitwise_on_finite_rows() -> None:
    """The fused float32 kernel (``csrc/lsm_rows.c``) computes the NumPy path's formulas."""
    import os
    import subprocess
    import sys

    code = (
        "import numpy as np, logitlab as ll\n"
        "x = (np.random.default_rng(0).standard_normal((64, 1000)) * 8).astype(np.float32)\n"
        "x[3, :] = -np.inf\n"
        "x[5, 7] = np.inf\n"
        "np.save('OUT', np.stack([ll.log_softmax(x), "
        "np.broadcast_to(ll.logsumexp(x)[:, None], x.shape)]))\n"
    )
    outs = []
    for native in ("1", "0"):
        out = f"/tmp/logitlab_native_{native}_{os.getpid()}.npy"
        env = dict(os.environ, LOGITLAB_NATIVE=native)
        subprocess.run([sys.executable, "-c", code.replace("OUT", out)], env=env, check=True)
        outs.append(np.load(out))
        os.unlink(out)
    a, b = outs
    finite = np.isfinite(a) & np.isfinite(b)
    # float32 results: the kernel's exp differs from libm's by < 2 ulp in single terms of s, and
    # s is summed in double there: allow 2 ulps of the result, demand identical non-finite values
    np.testing.assert_array_equal(np.isfinite(a), np.isfinite(b))
    np.testing.assert_allclose(a[finite], b[finite], rtol=3e-7, atol=0)

"""Inputs without elements: an empty batch, and an empty reduced (class) axis.

What each function returns for a reduced axis of length 0 (decided with the peers, checked here
against them):

* softmax / log_softmax: an empty output of the input's shape (``torch.softmax``; SciPy raises
  NumPy's "zero-size array to reduction operation maximum").
* logsumexp: ``-inf``, the log of an empty sum (SciPy and ``torch.logsumexp``), sign 0.
* entropy (probabilities or logits), KL, JS: 0, an empty sum (``scipy.stats.entropy``,
  ``torch.distributions.Categorical(...).entropy()``, ``sum(rel_entr)``,
  ``scipy.spatial.distance.jensenshannon``, ``F.kl_div``).
* cross_entropy with probability targets: 0 per row (``F.cross_entropy(..., reduction="none")``).
* cross_entropy with class-index targets: ValueError naming ``logits`` and the axis (torch raises
  "Target 0 is out of bounds"; no class index can be valid).

An empty batch (a length-0 axis that is not reduced) gives empty results on every backend and
every path (general, row-chunked, native float32 kernels, the fused torch cross-entropy).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import scipy.special as ss
import scipy.stats as sst
from scipy.spatial.distance import jensenshannon
from tests.conftest import Backend

import logitlab as ll

INF = math.inf
DT = [np.float64, np.float32]


def _torch() -> Any:
    return pytest.importorskip("torch")


# (shape, axis) pairs: empty batches and empty class axes, 2-D and 3-D
CASES = [
    ((0, 10), 0),
    ((0, 10), 1),
    ((0, 10), -1),
    ((3, 0), 1),
    ((3, 0), 0),
    ((0, 0), 1),
    ((2, 0, 5), -1),
    ((2, 0, 5), 1),
    ((2, 4, 0), -1),
]


def _ids(c: Any) -> str:
    return f"{c[0]}-ax{c[1]}".replace(" ", "")


@pytest.mark.parametrize("dtype", DT, ids=["f64", "f32"])
@pytest.mark.parametrize("case", CASES, ids=[_ids(c) for c in CASES])
def test_softmax_family_on_empty_inputs(backend: Backend, case: Any, dtype: type) -> None:
    torch = _torch()
    shape, axis = case
    x = backend.asarray(np.zeros(shape), dtype)
    xt = torch.zeros(shape, dtype=torch.float64)
    for t in (1.0, 0.5, 0.0, INF):
        for fn in (ll.softmax, ll.log_softmax):
            out = fn(x, axis=axis, temperature=t)
            assert type(out) is type(x) and out.dtype == x.dtype
            assert tuple(out.shape) == tuple(torch.softmax(xt, dim=axis).shape) == shape
    lse = ll.logsumexp(x, axis=axis)
    ref = torch.logsumexp(xt, dim=axis).numpy()
    assert lse.dtype == x.dtype
    np.testing.assert_array_equal(backend.to_numpy(lse), ref)  # -inf where the axis is empty
    np.testing.assert_array_equal(backend.to_numpy(lse), ss.logsumexp(np.zeros(shape), axis=axis))
    keep = backend.to_numpy(ll.logsumexp(x, axis=axis, keepdims=True))
    np.testing.assert_array_equal(keep, torch.logsumexp(xt, dim=axis, keepdim=True).numpy())
    out, sgn = ll.logsumexp(
        x, axis=axis, b=backend.asarray(np.ones(shape), dtype), return_sign=True
    )
    np.testing.assert_array_equal(backend.to_numpy(out), ref)
    np.testing.assert_array_equal(backend.to_numpy(sgn), np.zeros(ref.shape))


def test_logsumexp_of_nothing(backend: Backend) -> None:
    """SciPy's test_logsumexp: ``logsumexp([]) == -inf``; also over a tuple of axes and all."""
    empty = backend.asarray(np.zeros(0))
    assert float(backend.to_numpy(ll.logsumexp(empty))) == -INF
    z = backend.asarray(np.zeros((2, 0, 3)))
    assert float(backend.to_numpy(ll.logsumexp(z, axis=None))) == -INF
    got = backend.to_numpy(ll.logsumexp(z, axis=(1, 2), keepdims=True))
    np.testing.assert_array_equal(got, np.full((2, 1, 1), -INF))
    assert tuple(ll.softmax(z, axis=(0, 1)).shape) == (2, 0, 3)
    assert tuple(ll.log_softmax(z, axis=None).shape) == (2, 0, 3)


@pytest.mark.parametrize("case", CASES, ids=[_ids(c) for c in CASES])
def test_entropy_kl_js_on_empty_inputs(backend: Backend, case: Any) -> None:
    shape, axis = case
    zn = np.zeros(shape)
    z = backend.asarray(zn)
    want = sst.entropy(np.ones(shape), axis=axis)  # probabilities over no classes: 0
    np.testing.assert_array_equal(backend.to_numpy(ll.entropy(probs=z, axis=axis)), want)
    np.testing.assert_array_equal(backend.to_numpy(ll.entropy(logits=z, axis=axis)), want)
    np.testing.assert_array_equal(backend.to_numpy(ll.kl_divergence(z, z, axis=axis)), want)
    np.testing.assert_array_equal(
        backend.to_numpy(ll.kl_divergence(p_logits=z, q_logits=z, axis=axis)),
        np.sum(ss.rel_entr(zn, zn), axis=axis),
    )
    np.testing.assert_array_equal(
        backend.to_numpy(ll.js_divergence(z, z, axis=axis)), jensenshannon(zn, zn, axis=axis)
    )
    np.testing.assert_array_equal(
        backend.to_numpy(ll.js_divergence(p_logits=z, q_logits=z, axis=axis)), want
    )


def test_categorical_entropy_over_no_classes_is_zero() -> None:
    torch = _torch()
    cat = torch.distributions.Categorical(logits=torch.zeros(3, 0, dtype=torch.float64))
    np.testing.assert_array_equal(cat.entropy().numpy(), [0.0, 0.0, 0.0])
    np.testing.assert_array_equal(ll.entropy(logits=np.zeros((3, 0))), [0.0, 0.0, 0.0])


@pytest.mark.parametrize("dtype", DT, ids=["f64", "f32"])
def test_cross_entropy_on_empty_batch(backend: Backend, dtype: type) -> None:
    torch = _torch()
    x = backend.asarray(np.zeros((0, 10)), dtype)
    t = backend.asarray(np.zeros(0, dtype=np.int64))
    none = ll.cross_entropy(x, t, reduction="none")
    assert tuple(none.shape) == (0,) and none.dtype == x.dtype
    assert float(backend.to_numpy(ll.cross_entropy(x, t, reduction="sum"))) == 0.0
    ref_sum = torch.nn.functional.cross_entropy(
        torch.zeros(0, 10), torch.zeros(0, dtype=torch.long), reduction="sum"
    )
    assert float(ref_sum) == 0.0
    # mean over no rows: 0, the library's all-ignored convention (torch: NaN)
    assert float(backend.to_numpy(ll.cross_entropy(x, t))) == 0.0
    soft = backend.asarray(np.zeros((0, 10)), dtype)
    assert float(backend.to_numpy(ll.cross_entropy(x, soft))) == 0.0
    x3 = backend.asarray(np.zeros((2, 0, 4)), dtype)  # class axis last, batch (2, 0)
    t3 = backend.asarray(np.zeros((2, 0), dtype=np.int64))
    assert tuple(ll.cross_entropy(x3, t3, reduction="none").shape) == (2, 0)
    x4 = backend.asarray(np.zeros((0, 4, 2)), dtype)  # class axis 1, batch (0, 2)
    t4 = backend.asarray(np.zeros((0, 2), dtype=np.int64))
    assert tuple(ll.cross_entropy(x4, t4, axis=1, reduction="none").shape) == (0, 2)


def test_cross_entropy_over_no_classes(backend: Backend) -> None:
    torch = _torch()
    F = torch.nn.functional
    x = backend.asarray(np.zeros((3, 0)))
    # probability targets: an empty sum per row, as F.cross_entropy(reduction="none")
    want = F.cross_entropy(
        torch.zeros(3, 0, dtype=torch.float64),
        torch.zeros(3, 0, dtype=torch.float64),
        reduction="none",
    ).numpy()
    got = backend.to_numpy(ll.cross_entropy(x, backend.asarray(np.zeros((3, 0))), reduction="none"))
    np.testing.assert_array_equal(got, want)
    assert float(backend.to_numpy(ll.cross_entropy(x, backend.asarray(np.zeros((3, 0)))))) == 0.0
    # class targets: no index can be valid (torch: "Target 0 is out of bounds")
    with pytest.raises(IndexError, match="out of bounds"):
        F.cross_entropy(torch.zeros(3, 0), torch.zeros(3, dtype=torch.long))
    for t in ([0, 0, 0], [-100, -100, -100]):
        tt = backend.asarray(np.array(t, dtype=np.int64))
        with pytest.raises(ValueError, match=r"logits has no classes: its axis -1 has length 0"):
            ll.cross_entropy(x, tt)
        with ll.validation(False), pytest.raises(ValueError, match="logits has no classes"):
            ll.cross_entropy(x, tt)
    with pytest.raises(ValueError, match=r"its axis 0 has length 0 \(shape \(0, 3\)\)"):
        ll.perplexity(
            backend.asarray(np.zeros((0, 3))), backend.asarray(np.zeros(3, np.int64)), axis=0
        )


@pytest.mark.parametrize("dtype", DT, ids=["f64", "f32"])
@pytest.mark.parametrize("shape", [(0, 7), (2, 0, 7), (0, 3, 7)], ids=str)
def test_row_chunked_and_native_paths_on_empty_batches(shape: tuple[int, ...], dtype: type) -> None:
    """Last-axis reductions of contiguous float32/float64 input take the row engine's chunked
    backend (and the native float32 kernels) when there are rows; an empty batch must give empty
    results there too."""
    torch = _torch()
    for x in (
        np.zeros(shape, dtype),
        torch.zeros(shape, dtype=torch.float32 if dtype == np.float32 else torch.float64),
    ):
        assert tuple(ll.softmax(x).shape) == shape
        assert tuple(ll.log_softmax(x).shape) == shape
        assert tuple(ll.logsumexp(x).shape) == shape[:-1]
        assert tuple(ll.entropy(logits=x).shape) == shape[:-1]
        t = np.zeros(shape[:-1], dtype=np.int64)
        tt = t if isinstance(x, np.ndarray) else torch.from_numpy(t)
        assert tuple(ll.cross_entropy(x, tt, reduction="none").shape) == shape[:-1]


@pytest.mark.parametrize("shape", [(0, 6), (3, 0), (0, 0)], ids=str)
def test_gradients_on_empty_inputs(shape: tuple[int, ...]) -> None:
    torch = _torch()
    fns = {
        "softmax": lambda v, a: ll.softmax(v, axis=a),
        "log_softmax": lambda v, a: ll.log_softmax(v, axis=a),
        "logsumexp": lambda v, a: ll.logsumexp(v, axis=a),
        "entropy": lambda v, a: ll.entropy(logits=v, axis=a),
        "kl": lambda v, a: ll.kl_divergence(p_logits=v, q_logits=v.detach() + 1, axis=a),
        "ce_soft": lambda v, a: ll.cross_entropy(v, torch.zeros_like(v.detach()), axis=a),
    }
    for axis in (0, 1):
        for fn in fns.values():
            x = torch.zeros(shape, dtype=torch.float64, requires_grad=True)
            fn(x, axis).sum().backward()
            assert x.grad is not None and tuple(x.grad.shape) == shape


def test_fused_cross_entropy_on_empty_inputs() -> None:
    """Class targets on a 2-D tensor that requires grad take the fused kernel
    (logitlab.torch.cross_entropy)."""
    torch = _torch()
    import logitlab.torch as lt

    for fn in (ll.cross_entropy, lt.cross_entropy):
        x = torch.zeros(0, 5, requires_grad=True)
        out = fn(x, torch.zeros(0, dtype=torch.long))
        out.backward()
        assert float(out.detach()) == 0.0 and tuple(x.grad.shape) == (0, 5)
        x = torch.zeros(3, 0, requires_grad=True)
        with pytest.raises(ValueError, match=r"logits has no classes: its axis -1 has length 0"):
            fn(x, torch.full((3,), -100, dtype=torch.long))


def test_lists() -> None:
    np.testing.assert_array_equal(ll.logsumexp([[], [], []]), [-INF, -INF, -INF])
    assert ll.softmax([[], []]).shape == (2, 0)
    assert ll.log_softmax([], axis=0).shape == (0,)
    np.testing.assert_array_equal(ll.entropy(probs=[[], []]), [0.0, 0.0])
    assert float(ll.logsumexp([], axis=None)) == -INF

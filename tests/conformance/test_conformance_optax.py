"""optax conformance: the classification losses logitlab also has.

Sources (github.com/google-deepmind/optax, read with the search tools; optax/jax are not installed
here, so expected values are optax's own constants, transcribed, and independent mpmath
computations of the definitions in ``optax/losses/_classification.py``):

* ``optax/losses/_classification_test.py``: ``SoftmaxCrossEntropyTest``,
  ``SafeSoftmaxCrossEntropyTest``, ``SoftmaxCrossEntropyWithIntegerLabelsTest``,
  ``SigmoidCrossEntropyTest``, ``PolyLossTest.test_equals_to_cross_entropy_when_eps0`` (its inputs,
  for cross-entropy), ``KLDivergenceTest``, ``KLDivergenceWithLogTargetsTest``,
  ``GeneralizedKLDivergenceTest`` (``convex_kl_divergence``);
* ``optax/losses/_classification_stability_test.py``: ``IntegerCrossEntropyStabilityTest``
  (extreme logits).

Mapping: ``softmax_cross_entropy(logits, labels)`` is ``cross_entropy(logits, labels,
reduction="none")`` with probability labels; ``..._with_integer_labels`` the same with class
indices; ``sigmoid_binary_cross_entropy`` is ``binary_cross_entropy_with_logits(...,
reduction="none")``; ``kl_divergence(log_predictions, targets)`` is KL(targets || predictions) =
``kl_divergence(targets, q_logits=log_predictions)``; ``kl_divergence_with_log_targets`` is
``kl_divergence(p_logits=log_targets, q_logits=log_predictions)``. optax's ``where=`` masks have no
logitlab argument: a masked class is a ``-inf`` logit, a masked row is an ``ignore_index`` row (the
adaptation is stated in each case). optax's tolerance is mostly ``atol=1e-4`` (float32); logitlab
is also held to the mpmath value at a few ulps.
"""

from __future__ import annotations

import math

import mpmath
import numpy as np
import pytest
from tests import reference as R
from tests.conformance._support import (
    DELIBERATE,
    backends,
    close,
    dtype_name,
    eps,
    on,
    rel,
    to_np,
)
from tests.conftest import Backend

import logitlab as ll

INF = math.inf
F32 = np.float32

YS = np.array([[10.0, 1.0, -2.0], [1.0, 4.0, 0.2]], dtype=F32)
TS = np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]], dtype=F32)
EXP_SCE = np.array([9.00013, 3.0696733], dtype=F32)


def _ce_soft_exact(x: np.ndarray, y: np.ndarray) -> list[float]:
    return [float(R.ce_soft(xr.tolist(), yr.tolist())) for xr, yr in zip(x, y, strict=True)]


# --------------------------------------------------------------------------- softmax CE


@backends()
def test_softmax_cross_entropy_scalar_and_batched(backend: Backend) -> None:
    # SoftmaxCrossEntropyTest.test_scalar and .test_batched
    one = ll.cross_entropy(backend.asarray(YS[0]), backend.asarray(TS[0]), reduction="none")
    close(one, EXP_SCE[0], 0, atol=1e-4)
    res = ll.cross_entropy(backend.asarray(YS), backend.asarray(TS), reduction="none")
    assert dtype_name(res) == "float32"
    close(res, EXP_SCE, 0, atol=1e-4)
    close(res, _ce_soft_exact(YS, TS), rel(F32, 2))


@pytest.mark.parametrize("size", [5, 10])
@backends()
def test_softmax_cross_entropy_mask(backend: Backend, size: int) -> None:
    # SoftmaxCrossEntropyTest.test_mask: computing on the kept classes only == masking the others.
    # Adapted: optax's where= masks classes; here a masked class is a -inf logit, and the target
    # is renormalised over the kept classes (logitlab validates probability targets).
    rng = np.random.default_rng(size)
    preds = rng.normal(size=size)
    mask = rng.integers(2, size=size).astype(bool)
    mask[0] = True
    targets = rng.dirichlet(np.ones(size)) * mask
    targets /= targets.sum()
    x = ll.cross_entropy(backend.asarray(preds[mask]), backend.asarray(targets[mask]))
    y = ll.cross_entropy(backend.asarray(np.where(mask, preds, -INF)), backend.asarray(targets))
    close(x, to_np(y), 1e-15)


@pytest.mark.parametrize("axis", [0, 1, 2])
@backends()
def test_softmax_cross_entropy_axis(backend: Backend, axis: int) -> None:
    # SoftmaxCrossEntropyTest.test_axis (shape [4, 5, 6]): the class axis can be any axis.
    # Adapted: the targets are Dirichlet draws along the tested axis (optax draws them along the
    # last one, so along axes 0 and 1 they are not distributions, which logitlab refuses).
    rng = np.random.default_rng(axis)
    preds = rng.normal(size=(4, 5, 6))
    shape = [4, 5, 6]
    n = shape.pop(axis)
    targets = np.moveaxis(rng.dirichlet(np.ones(n), size=shape), -1, axis)
    x = ll.cross_entropy(
        backend.asarray(preds), backend.asarray(targets), axis=axis, reduction="none"
    )
    y = ll.cross_entropy(
        backend.asarray(np.moveaxis(preds, axis, -1).copy()),
        backend.asarray(np.moveaxis(targets, axis, -1).copy()),
        reduction="none",
    )
    close(x, to_np(y), 1e-14)


SAFE_YS = np.array(
    [
        [10.0, 1.0, -2.0],
        [1.0, 4.0, 0.2],
        [-INF, 0.0, 0.0],
        [-INF, 0.0, 0.0],
        [-INF, 0.0, -INF],
    ],
    dtype=F32,
)
SAFE_TS = np.array(
    [[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.5, 0.5], [0.4, 0.3, 0.3], [0.0, 1.0, 0.0]],
    dtype=F32,
)


@backends()
def test_safe_softmax_cross_entropy(backend: Backend) -> None:
    # SafeSoftmaxCrossEntropyTest.test_batched: -inf logits with zero target mass cost nothing,
    # with positive target mass cost inf; expected [9.00013, 3.0696733, 0.693147, inf, 0.0]
    res = ll.cross_entropy(backend.asarray(SAFE_YS), backend.asarray(SAFE_TS), reduction="none")
    close(res, [9.00013, 3.0696733, 0.693147, INF, 0.0], 0, atol=1e-4)


def test_safe_softmax_cross_entropy_gradient() -> None:
    # SafeSoftmaxCrossEntropyTest.test_gradient / .test_against_plain_implementation: the
    # gradient is softmax - target, finite, 0 on -inf logits (rows with finite loss)
    torch = pytest.importorskip("torch")
    x = torch.tensor(SAFE_YS[[0, 1, 2, 4]], dtype=torch.float64, requires_grad=True)
    t = torch.tensor(SAFE_TS[[0, 1, 2, 4]], dtype=torch.float64)
    ll.cross_entropy(x, t, reduction="sum").backward()
    expected = torch.softmax(x.detach(), -1) - t
    assert bool(torch.isfinite(x.grad).all())
    close(x.grad, expected.numpy(), 0, atol=4e-16)
    assert x.grad[2, 0].item() == 0.0 and x.grad[3, 0].item() == x.grad[3, 2].item() == 0.0


# --------------------------------------------------------------------------- integer labels

LABELS = np.array([1, 0], dtype=np.int32)


@backends()
def test_integer_labels_consistent_with_one_hot(backend: Backend) -> None:
    # SoftmaxCrossEntropyWithIntegerLabelsTest.test_consistent_with_softmax_cross_entropy_scalar
    # and _batched (optax: rtol 1e-6)
    a = ll.cross_entropy(backend.asarray(YS), backend.asarray(LABELS), reduction="none")
    b = ll.cross_entropy(
        backend.asarray(YS), backend.asarray(np.eye(3, dtype=F32)[LABELS]), reduction="none"
    )
    close(a, to_np(b), rel(F32, 2))
    close(a, [float(R.nll(YS[i].tolist(), int(LABELS[i]))) for i in range(2)], rel(F32, 2))
    s = ll.cross_entropy(backend.asarray(YS[0]), on(backend, LABELS[0]), reduction="none")
    close(s, to_np(a)[0], rel(F32, 2))


@pytest.mark.parametrize("axis", [0, 1, 2])
@backends()
def test_integer_labels_axis(backend: Backend, axis: int) -> None:
    # SoftmaxCrossEntropyWithIntegerLabelsTest.test_axis (shape [4, 5, 6])
    rng = np.random.default_rng(10 + axis)
    shape = [4, 5, 6]
    preds = rng.normal(size=shape)
    targets = rng.integers(shape[axis], size=shape[:axis] + shape[axis + 1 :])
    x = ll.cross_entropy(
        backend.asarray(preds), backend.asarray(targets), axis=axis, reduction="none"
    )
    y = ll.cross_entropy(
        backend.asarray(np.moveaxis(preds, axis, -1).copy()),
        backend.asarray(targets),
        reduction="none",
    )
    close(x, to_np(y), 1e-14)


@DELIBERATE(
    "the class axis is a single int (documented); optax's softmax_cross_entropy_with_integer_"
    "labels also takes a tuple of axes (classes flattened): flatten them before the call"
)
@backends()
def test_diff_integer_labels_tuple_axes(backend: Backend) -> None:
    # SoftmaxCrossEntropyWithIntegerLabelsTest.test_axes, axis=(1, 3) of shape (2, 3, 4, 5)
    rng = np.random.default_rng(12)
    logits = rng.uniform(size=(2, 4, 15))
    labels = rng.integers(0, 14, size=(2, 4))
    desired = ll.cross_entropy(backend.asarray(logits), backend.asarray(labels), reduction="none")
    # labels_shape (2, 4) + logits_shape (3, 5) -> (2, 3, 4, 5), as optax builds it
    arranged = logits.reshape(2, 4, 3, 5).transpose(0, 2, 1, 3)
    with pytest.raises(TypeError, match="axis"):
        ll.cross_entropy(backend.asarray(arranged), backend.asarray(labels), axis=(1, 3))  # type: ignore[arg-type]
    flat = arranged.transpose(0, 2, 1, 3).reshape(2, 4, 15)
    close(
        ll.cross_entropy(backend.asarray(flat), backend.asarray(labels), reduction="none"),
        to_np(desired),
        0,
    )


def test_integer_labels_gradient_finite_with_row_mask() -> None:
    # SoftmaxCrossEntropyWithIntegerLabelsTest.test_gradient: "check if the gradients are
    # finite when a mask is present" (where=[True, False]: the second row is ignore_index here)
    torch = pytest.importorskip("torch")
    x = torch.tensor(YS, dtype=torch.float64, requires_grad=True)
    ll.cross_entropy(x, torch.tensor([1, -100]), reduction="sum").backward()
    assert bool(torch.isfinite(x.grad).all())
    assert x.grad[1].tolist() == [0.0, 0.0, 0.0]
    assert torch.autograd.gradcheck(lambda z: ll.cross_entropy(z, torch.tensor([1, 0])), (x,))


# --------------------------------------------------------------------------- stability


def _stability_params() -> list[object]:
    # IntegerCrossEntropyStabilityTest.test_uniform_logits_keep_nonzero_loss:
    # (float32, 1e6), (float32, 1e8), (float16, 4096), (bfloat16, 256), signs -1 and 1
    out = []
    for bk in ("numpy", "torch", "array_api_strict"):
        for dtype, offset in (
            ("float32", 1e6),
            ("float32", 1e8),
            ("float16", 4096.0),
            ("bfloat16", 256.0),
        ):
            if dtype == "bfloat16" and bk != "torch":
                continue  # NumPy and array-api-strict have no bfloat16
            if dtype == "float16" and bk == "array_api_strict":
                continue  # nor float16
            for sign in (-1, 1):
                out.append(
                    pytest.param(bk, dtype, offset, sign, id=f"{bk}-{dtype}-{sign * offset:g}")
                )
    return out


@pytest.mark.parametrize("backend, dtype, offset, sign", _stability_params(), indirect=["backend"])
def test_uniform_extreme_logits_keep_the_loss(
    backend: Backend, dtype: str, offset: float, sign: int
) -> None:
    # uniform rows at +-offset: the loss is log 3 in the logits' dtype (rtol 2 eps of the dtype)
    if backend.name == "torch":
        logits = backend.mod.full((2, 3), sign * offset, dtype=getattr(backend.mod, dtype))
        labels = backend.mod.tensor([0, 2])
    else:
        logits = backend.asarray(np.full((2, 3), sign * offset, dtype=dtype))
        labels = backend.asarray(np.array([0, 2]))
    res = ll.cross_entropy(logits, labels, reduction="none")
    assert dtype_name(res) == dtype
    close(res, [math.log(3)] * 2, 2 * eps(dtype))


@pytest.mark.parametrize("axis", [-1, 1])
@backends()
def test_nonuniform_loss_preserves_shift(backend: Backend, axis: int) -> None:
    # IntegerCrossEntropyStabilityTest.test_nonuniform_loss_and_gradient_preserve_shift (the
    # int axes; the tuple axes are test_diff_integer_labels_tuple_axes): + 1e6 changes nothing
    logits = np.arange(24, dtype=F32).reshape(2, 3, 4) / 8
    ax = axis % 3
    labels = np.ones([s for i, s in enumerate(logits.shape) if i != ax], dtype=np.int32)
    base = ll.cross_entropy(
        backend.asarray(logits), backend.asarray(labels), axis=axis, reduction="none"
    )
    shifted = ll.cross_entropy(
        backend.asarray(logits + F32(1e6)), backend.asarray(labels), axis=axis, reduction="none"
    )
    close(shifted, to_np(base), 1e-6)


@pytest.mark.parametrize("axis", [-1, 1])
def test_nonuniform_gradient_preserves_shift(axis: int) -> None:
    # ..._preserve_shift, the gradient part (optax: atol 1e-7)
    torch = pytest.importorskip("torch")
    logits = torch.arange(24, dtype=torch.float32).reshape(2, 3, 4) / 8
    ax = axis % 3
    labels = torch.ones([s for i, s in enumerate(logits.shape) if i != ax], dtype=torch.int64)

    def grad(x: object) -> object:
        x = x.clone().requires_grad_()  # type: ignore[attr-defined]
        ll.cross_entropy(x, labels, axis=axis, reduction="sum").backward()
        return x.grad

    close(grad(logits + 1e6), grad(logits).numpy(), 0, atol=1e-7)


@backends()
def test_masked_large_logit_does_not_set_the_shift(backend: Backend) -> None:
    # IntegerCrossEntropyStabilityTest.test_masked_large_logit_does_not_set_the_shift: logits
    # [[0, 0, 1e8]], class 2 masked (here: a -inf logit) -> log 2, gradient [-0.5, 0.5, 0]
    res = ll.cross_entropy(
        backend.asarray(np.array([[0.0, 0.0, -INF]], dtype=F32)),
        backend.asarray(np.array([0])),
        reduction="none",
    )
    close(res, [math.log(2)], 1e-6)
    if backend.name == "torch":
        x = backend.mod.tensor([[0.0, 0.0, -INF]], requires_grad=True)
        ll.cross_entropy(x, backend.mod.tensor([0]), reduction="sum").backward()
        close(x.grad, [[-0.5, 0.5, 0.0]], 0, atol=0)


@backends()
def test_all_masked_rows_keep_zero_loss_and_gradient(backend: Backend) -> None:
    # IntegerCrossEntropyStabilityTest.test_all_masked_rows_keep_zero_loss_and_gradient: logits
    # 1e8, where=[False, False] (here: both rows ignore_index) -> loss [0, 0], gradient 0
    logits = np.full((2, 3), 1e8)
    res = ll.cross_entropy(
        backend.asarray(logits), backend.asarray(np.array([-100, -100])), reduction="none"
    )
    np.testing.assert_array_equal(to_np(res), [0.0, 0.0])
    if backend.name == "torch":
        x = backend.mod.full((2, 3), 1e8, dtype=backend.mod.float64, requires_grad=True)
        ll.cross_entropy(x, backend.mod.tensor([-100, -100]), reduction="sum").backward()
        np.testing.assert_array_equal(x.grad.numpy(), np.zeros((2, 3)))


@backends()
def test_negative_infinite_non_target_logit(backend: Backend) -> None:
    # IntegerCrossEntropyStabilityTest.test_negative_infinite_non_target_logit -> log 2
    res = ll.cross_entropy(
        backend.asarray(np.array([[1e8, -INF, 1e8]], dtype=F32)),
        backend.asarray(np.array([0])),
        reduction="none",
    )
    close(res, [math.log(2)], 1e-6)


# --------------------------------------------------------------------------- sigmoid BCE

SIGMOID_CASES = [
    # SigmoidCrossEntropyTest.test_sigmoid_cross_entropy: (preds, labels, expected mean)
    ([-1e09, -1e-09], [1.0, 0.0], 5e08),
    ([-1e09, -1e-09], [0.0, 1.0], 0.3465736),
    ([1e09, 1e-09], [1.0, 0.0], 0.3465736),
    ([1e09, 1e-09], [0.0, 1.0], 5e08),
    ([-1e09, 1e-09], [1.0, 0.0], 5e08),
    ([-1e09, 1e-09], [0.0, 1.0], 0.3465736),
    ([1e09, -1e-09], [1.0, 0.0], 0.3465736),
    ([1e09, -1e-09], [0.0, 1.0], 5e08),
    ([0.0, 0.0], [1.0, 0.0], 0.6931472),
    ([0.0, 0.0], [0.0, 1.0], 0.6931472),
]


@pytest.mark.parametrize("preds, labels, expected", SIGMOID_CASES)
@backends()
def test_sigmoid_binary_cross_entropy(
    backend: Backend, preds: list, labels: list, expected: float
) -> None:
    res = ll.binary_cross_entropy_with_logits(backend.asarray(preds), backend.asarray(labels))
    close(res, expected, 1e-6, atol=1e-6)  # optax's tolerances
    exact = mpmath.fsum(R.bce_logits(x, y) for x, y in zip(preds, labels, strict=True)) / 2
    close(res, float(exact), rel(np.float64))


# --------------------------------------------------------------------------- poly loss inputs

POLY_INPUTS = [
    # PolyLossTest.test_equals_to_cross_entropy_when_eps0: the inputs on which poly loss with
    # epsilon 0 equals softmax_cross_entropy (logitlab has the cross-entropy)
    (
        [[4.0, 2.0, 1.0], [0.0, 5.0, 1.0], [0.134, 1.234, 3.235]],
        [[1.0, 0.0, 0.0], [0.0, 0.8, 0.2], [0.34, 0.33, 0.33]],
    ),
    ([[4.0, 2.0, 1.0], [0.0, 5.0, 1.0]], [[1.0, 0.0, 0.0], [0.0, 0.8, 0.2]]),
    (
        [[4.0, 2.0, 1.0, 0.134, 1.3515], [0.0, 5.0, 1.0, 0.5215, 5.616]],
        [[0.5, 0.0, 0.0, 0.0, 0.5], [0.0, 0.12, 0.2, 0.56, 0.12]],
    ),
    ([[1.89, 2.39]], [[0.34, 0.66]]),
    ([[0.314]], [[1.0]]),
]


@pytest.mark.parametrize("logits, labels", POLY_INPUTS, ids=[str(i) for i in range(5)])
@backends()
def test_cross_entropy_on_poly_loss_inputs(backend: Backend, logits: list, labels: list) -> None:
    x, y = np.array(logits), np.array(labels)
    res = ll.cross_entropy(backend.asarray(x), backend.asarray(y), reduction="none")
    close(res, _ce_soft_exact(x, y), rel(np.float64), atol=1e-300)


# --------------------------------------------------------------------------- KL

LOG_PS = np.array(
    [
        [-2.9957, -3.5066, -3.9120, -1.2040, -0.6931, -2.3026],
        [-1.6094, -1.6094, -1.6094, -2.3026, -1.8971, -1.8971],
    ]
)
QS = np.array([[0.2, 0.2, 0.2, 0.1, 0.15, 0.15], [0.05, 0.03, 0.02, 0.3, 0.5, 0.0]])
QS_LOG = np.array(
    [
        [-1.6094, -1.6094, -1.6094, -2.3026, -1.8971, -1.8971],
        [-2.9957, -3.5066, -3.9120, -1.2040, -0.6931, -2.3026],
    ]
)


def _kl_exact(p: list[float], log_q_unnormalised: list[float]) -> float:
    """KL(p || softmax(log_q)) at 60 digits (logitlab normalises the logits; optax's rounded
    log-probabilities sum to 1 +- 3e-5, which moves its constants by about that)."""
    lq = R.log_softmax(log_q_unnormalised)
    return float(
        mpmath.fsum(
            mpmath.mpf(a) * (mpmath.log(mpmath.mpf(a)) - b)
            for a, b in zip(p, lq, strict=True)
            if a > 0
        )
    )


@backends()
def test_kl_divergence(backend: Backend) -> None:
    # KLDivergenceTest.test_scalar (optax: 0.8875577, atol 1e-4) and
    # GeneralizedKLDivergenceTest.test_scalar (0.88757247): row 0, whose targets sum to 1
    d = ll.kl_divergence(backend.asarray(QS[0]), q_logits=backend.asarray(LOG_PS[0]))
    close(d, 0.8875577, 0, atol=1e-4)
    close(d, 0.88757247, 0, atol=1e-4)
    close(d, _kl_exact(QS[0].tolist(), LOG_PS[0].tolist()), 1e-14)


@backends()
def test_kl_divergence_with_log_targets(backend: Backend) -> None:
    # KLDivergenceWithLogTargetsTest.test_batched: expected [0.8875625, 0.7187435584901326]
    d = ll.kl_divergence(p_logits=backend.asarray(QS_LOG), q_logits=backend.asarray(LOG_PS))
    close(d, [0.8875625, 0.7187435584901326], 0, atol=1e-4)
    exact = [float(R.kl_logits(QS_LOG[i].tolist(), LOG_PS[i].tolist())) for i in range(2)]
    close(d, exact, 1e-14)


@pytest.mark.parametrize("axis", [0, 1, 2])
@backends()
def test_kl_divergence_axis(backend: Backend, axis: int) -> None:
    # KLDivergenceTest.test_axis / KLDivergenceWithLogTargetsTest.test_axis (shape [4, 5, 6]);
    # the targets are Dirichlet draws along the tested axis (see test_softmax_cross_entropy_axis)
    rng = np.random.default_rng(20 + axis)
    preds = rng.normal(size=(4, 5, 6))
    shape = [4, 5, 6]
    n = shape.pop(axis)
    targets = np.moveaxis(rng.dirichlet(np.ones(n), size=shape), -1, axis)
    x = ll.kl_divergence(backend.asarray(targets), q_logits=backend.asarray(preds), axis=axis)
    y = ll.kl_divergence(
        backend.asarray(np.moveaxis(targets, axis, -1).copy()),
        q_logits=backend.asarray(np.moveaxis(preds, axis, -1).copy()),
    )
    close(x, to_np(y), 1e-14)
    lx = ll.kl_divergence(
        p_logits=backend.asarray(np.log(targets)), q_logits=backend.asarray(preds), axis=axis
    )
    close(lx, to_np(x), 1e-12)


@DELIBERATE(
    "KL arguments are validated distributions: optax's kl_divergence / convex_kl_divergence "
    "accept targets summing to 0.9 (KLDivergenceTest row 1: 0.7592807, generalized: 0.859308); "
    "logitlab raises ValueError naming the argument"
)
@backends()
def test_diff_kl_unnormalised_targets(backend: Backend) -> None:
    assert abs(QS[1].sum() - 0.9) < 1e-12
    with pytest.raises(ValueError, match="p must sum to 1"):
        ll.kl_divergence(backend.asarray(QS[1]), q_logits=backend.asarray(LOG_PS[1]))

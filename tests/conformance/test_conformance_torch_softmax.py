"""PyTorch conformance: ``softmax``, ``log_softmax``, ``logsumexp`` (values, gradients, masked rows,
empty tensors, dims, half precision).

Sources (PyTorch 2.13; cited by file and test name, read from github.com/pytorch/pytorch):

* ``torch/testing/_internal/common_methods_invocations.py``: ``sample_inputs_logsumexp`` and
  ``reference_inputs_logsumexp`` (shipped with the installed torch);
* ``test/test_nn.py``, ``TestNNDeviceType``: ``test_softmax_results``,
  ``_test_masked_softmax_helper``/``test_masked_softmax_grad``, ``test_log_softmax_big``,
  ``test_log_softmax_cpu``, ``test_softmax_cpu``.

The reference is torch itself on the same float64 input (torch's float64 softmax family is
accurate to a few ulps on these well-conditioned inputs), run here. Values run on every backend;
gradients on torch.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from tests.conformance._support import (
    DELIBERATE,
    backends,
    close,
    close_normwise,
    dtype_name,
    rel,
    to_np,
)
from tests.conftest import Backend

import logitlab as ll

torch = pytest.importorskip("torch")
F = torch.nn.functional

D = torch.float64
INF = math.inf
TIGHT = 1e-13
S = 5  # common_methods_invocations' S


def _gen(seed: int) -> Any:
    return torch.Generator().manual_seed(seed)


def _uniform(shape: tuple[int, ...], low: float, high: float, seed: int) -> Any:
    """``make_tensor``'s float64 default: uniform in [low, high) (here seeded)."""
    return torch.rand(shape, dtype=D, generator=_gen(seed)) * (high - low) + low


# --------------------------------------------------------------------------- logsumexp


LSE_SAMPLES = [
    # sample_inputs_logsumexp: (shape, dim, keepdim), each at lows None (-9..9), 1e3 and 1e6
    ((S, S), 1, True),
    ((S, S), 1, False),
    ((S, S), -2, False),
]


@pytest.mark.parametrize("low", [None, 1e3, 1e6], ids=["default", "1e3", "1e6"])
@pytest.mark.parametrize("shape, dim, keepdim", LSE_SAMPLES, ids=["1-keep", "1", "-2"])
@backends()
def test_logsumexp_sample_inputs(
    backend: Backend, shape: tuple[int, ...], dim: int, keepdim: bool, low: float | None
) -> None:
    lo, hi = (-9.0, 9.0) if low is None else (low, 2 * low)
    t = _uniform(shape, lo, hi, seed=int(lo) % 997)
    res = ll.logsumexp(backend.asarray(t.numpy()), axis=dim, keepdims=keepdim)
    close(res, torch.logsumexp(t, dim, keepdim).numpy(), TIGHT)


@backends()
def test_logsumexp_sample_inputs_two_dims(backend: Backend) -> None:
    # sample_inputs_logsumexp: ((S, S), (0, 1), False)
    t = _uniform((S, S), -9.0, 9.0, seed=1)
    close(ll.logsumexp(backend.asarray(t.numpy()), axis=(0, 1)), torch.logsumexp(t, (0, 1)), TIGHT)


@backends()
def test_logsumexp_reference_inputs_gh91843(backend: Backend) -> None:
    # reference_inputs_logsumexp: tensor([20, 30, 100]) over dim 0 (pytorch issue 91843)
    t = torch.tensor([20.0, 30.0, 100.0], dtype=D)
    close(ll.logsumexp(backend.asarray(t.numpy()), axis=0), torch.logsumexp(t, 0), TIGHT)


@backends()
def test_logsumexp_reference_inputs_empty(backend: Backend) -> None:
    # reference_inputs_logsumexp: tensor(()) over dim 0 -> -inf
    t = torch.tensor((), dtype=D)
    assert torch.logsumexp(t, 0).item() == -INF
    np.testing.assert_array_equal(to_np(ll.logsumexp(backend.asarray(t.numpy()), axis=0)), -INF)


@pytest.mark.parametrize("value", [INF, 1.5], ids=["inf", "1.5"])
def test_logsumexp_zero_dim_tensor(value: float) -> None:
    # reference_inputs_logsumexp: tensor(inf) over dim 0 with keepdim=True ("tests masking",
    # pytorch PR 91860); sample_inputs_logsumexp: a () tensor over dim 0 with keepdim=True
    t = torch.tensor(value, dtype=D)
    close(ll.logsumexp(t, axis=0, keepdims=True), torch.logsumexp(t, 0, True), TIGHT, shape=())


@pytest.mark.parametrize("fn", ["softmax", "log_softmax"])
def test_softmax_zero_dim_tensor(fn: str) -> None:
    # torch's softmax/log_softmax accept a 0-d tensor with dim=0 (the OpInfo samples
    # sample_inputs_softmax_variant include shape ())
    t = torch.tensor(3.0, dtype=D)
    close(getattr(ll, fn)(t, axis=0), getattr(F, fn)(t, 0), TIGHT, shape=())


# --------------------------------------------------------------------------- test_softmax_results

SIZES = [(0, 10), (10, 0), (31, 20), (32, 21), (31, 23)]  # test_softmax_results (the small ones)
SHIFTS = [(0, 0), (1, 1)]


def _results_params() -> list[Any]:
    return [
        pytest.param(size, shift, dim, fn, id=f"{fn}-{size}-{shift}-{dim}")
        for size in SIZES
        for shift in SHIFTS
        for dim in (0, 1)
        for fn in ("softmax", "log_softmax")
    ]


def _results_input(size: tuple[int, int], shift: tuple[int, int]) -> Any:
    x = torch.rand(size, dtype=D, generator=_gen(size[0] * 100 + size[1]))
    return x[shift[0] :, shift[1] :].detach()


@pytest.mark.parametrize("size, shift, dim, fn", _results_params())
def test_softmax_results_values_and_gradients(
    size: tuple[int, int], shift: tuple[int, int], dim: int, fn: str
) -> None:
    # test_nn.py::TestNNDeviceType::test_softmax_results: output and grad_input agree with the
    # reference for sizes with empty axes and shifted (non-contiguous) views, both dims
    x = _results_input(size, shift).requires_grad_()
    ref_x = x.detach().clone().requires_grad_()
    go = torch.rand(x.shape, dtype=D, generator=_gen(7))
    out, ref = getattr(ll, fn)(x, axis=dim), getattr(F, fn)(ref_x, dim)
    close_normwise(out, ref.detach())
    (g,) = torch.autograd.grad(out, x, go)
    (ref_g,) = torch.autograd.grad(ref, ref_x, go)
    close_normwise(g, ref_g)


@pytest.mark.parametrize("size, shift, dim, fn", _results_params())
def test_softmax_results_double_backward(
    size: tuple[int, int], shift: tuple[int, int], dim: int, fn: str
) -> None:
    # test_nn.py::TestNNDeviceType::test_softmax_results: grad_input is taken with
    # create_graph=True, then backpropagated (a second derivative). The peer backpropagates
    # grad_input.sum(), which is identically 0 for softmax and log_softmax (the rows of their
    # Jacobians sum to 0), so only rounding noise is compared there; here grad_input is weighted
    # by a random v first, which makes the second derivative non-trivial.
    x = _results_input(size, shift).requires_grad_()
    ref_x = x.detach().clone().requires_grad_()
    go = torch.rand(x.shape, dtype=D, generator=_gen(7))
    v = torch.randn(x.shape, dtype=D, generator=_gen(8))
    (g,) = torch.autograd.grad(getattr(ll, fn)(x, axis=dim), x, go, create_graph=True)
    (ref_g,) = torch.autograd.grad(getattr(F, fn)(ref_x, dim), ref_x, go, create_graph=True)
    (g * v).sum().backward()
    (ref_g * v).sum().backward()
    close_normwise(x.grad, ref_x.grad, 1e-12)


@backends()
def test_softmax_results_values_other_backends(backend: Backend) -> None:
    # test_softmax_results' values on the other backends (the shifted view, both dims)
    x = _results_input((31, 23), (1, 1))
    for fn in ("softmax", "log_softmax"):
        for dim in (0, 1):
            res = getattr(ll, fn)(backend.asarray(x.numpy()), axis=dim)
            close_normwise(res, getattr(F, fn)(x, dim))


@pytest.mark.parametrize("dim", [0, 1, 2, -1])
@pytest.mark.parametrize("fn", ["softmax", "log_softmax", "logsumexp"])
def test_three_dim_inputs_every_dim(fn: str, dim: int) -> None:
    # sample_inputs_softmax_variant (opinfo/definitions/_masked.py and common_methods_invocations):
    # (S, S, S) inputs over each dim; values and gradients against torch
    x = _uniform((S, S, S), -9.0, 9.0, seed=3).requires_grad_()
    ref_x = x.detach().clone().requires_grad_()
    ref = torch.logsumexp(ref_x, dim) if fn == "logsumexp" else getattr(F, fn)(ref_x, dim)
    out = getattr(ll, fn)(x, axis=dim)
    close_normwise(out, ref.detach())
    go = torch.rand(ref.shape, dtype=D, generator=_gen(11))
    close_normwise(torch.autograd.grad(out, x, go)[0], torch.autograd.grad(ref, ref_x, go)[0])


# --------------------------------------------------------------------------- masked rows


def _masked_input(seed: int) -> tuple[Any, Any]:
    x = torch.randn((6, 7), dtype=D, generator=_gen(seed))
    mask = torch.rand((6, 7), generator=_gen(seed + 1)) < 0.5
    mask[0] = True  # one fully masked row
    mask[1] = False  # one row without a mask
    mask[2, :-1] = True  # one row with a single unmasked entry
    return x, mask


@pytest.mark.parametrize("dim", [0, 1])
def test_masked_softmax_partially_masked_rows(dim: int) -> None:
    # test_nn.py::TestNNDeviceType::_test_masked_softmax_helper (test_masked_softmax_grad): the
    # result of softmax(x.masked_fill(mask, -inf)) agrees with torch's on every row that is not
    # fully masked, and the gradient is zero on the masked entries
    x, mask = _masked_input(5)
    full = mask.all(dim, keepdim=True).expand(mask.shape)
    xin = x.clone().requires_grad_()
    ref_in = x.clone().requires_grad_()
    out = ll.softmax(xin.masked_fill(mask, -INF), axis=dim)
    ref = torch.softmax(ref_in.masked_fill(mask, -INF), dim)
    close(out.masked_fill(full, 0), ref.masked_fill(full, 0).detach().numpy(), TIGHT)
    go = torch.randn(x.shape, dtype=D, generator=_gen(9))
    out.backward(go)
    ref.backward(go)
    g, ref_g = xin.grad, torch.nan_to_num(ref_in.grad)
    close(g.masked_fill(full, 0), ref_g.masked_fill(full, 0).numpy(), TIGHT, atol=1e-16)
    assert bool((g[mask & ~full] == 0).all())


@pytest.mark.parametrize("fn", ["softmax", "log_softmax", "logsumexp"])
def test_masked_rows_fully_masked_gradient_is_zero(fn: str) -> None:
    # _test_masked_softmax_helper: input.grad == nan_to_num(reference grad), i.e. 0 on a fully
    # masked row; issue 13's repro: x = [[-inf]*3, [0.5, -inf, 1.0]], grad_output [1, 2, 4]
    x = torch.tensor([[-INF, -INF, -INF], [0.5, -INF, 1.0]], dtype=D, requires_grad=True)
    out = getattr(ll, fn)(x, axis=1)
    go = torch.tensor([[1.0, 2.0, 4.0]] * 2, dtype=D) if out.dim() == 2 else torch.ones(2, dtype=D)
    out.backward(go)
    np.testing.assert_array_equal(x.grad[0].numpy(), [0.0, 0.0, 0.0])


@pytest.mark.parametrize("fn", ["entropy", "cross_entropy"])
def test_masked_rows_fully_masked_gradient_zero_in_losses(fn: str) -> None:
    # the same fully masked row through entropy(logits=) and an ignored cross-entropy row: the
    # gradient is exactly zero there (torch: NaN)
    x = torch.tensor([[-INF, -INF, -INF], [0.5, -INF, 1.0]], dtype=D, requires_grad=True)
    if fn == "entropy":
        out = ll.entropy(logits=x, axis=1).sum()
    else:
        out = ll.cross_entropy(x, torch.tensor([-100, 0]))
    out.backward()
    np.testing.assert_array_equal(x.grad[0].numpy(), [0.0, 0.0, 0.0])
    assert bool(torch.isfinite(x.grad).all())


@DELIBERATE(
    "softmax/log_softmax of a fully masked row is uniform (lse -inf); torch gives NaN (and its "
    "masked-softmax tests leave that row unspecified)"
)
@backends()
def test_diff_fully_masked_row_forward(backend: Backend) -> None:
    x = torch.tensor([[-INF, -INF, -INF], [0.5, -INF, 1.0]], dtype=D)
    assert bool(torch.isnan(F.softmax(x, 1)[0]).all())
    close(to_np(ll.softmax(backend.asarray(x.numpy()), axis=1))[0], [1 / 3] * 3, TIGHT)
    close(to_np(ll.log_softmax(backend.asarray(x.numpy()), axis=1))[0], [-math.log(3)] * 3, TIGHT)
    close(to_np(ll.softmax(backend.asarray(x.numpy()), axis=1))[1], F.softmax(x, 1)[1], TIGHT)


@DELIBERATE("a row whose maximum is +inf shares the mass among its +inf entries; torch: NaN")
@backends()
def test_diff_plus_inf_row(backend: Backend) -> None:
    x = torch.tensor([[INF, 0.0, INF]], dtype=D)
    assert bool(torch.isnan(F.softmax(x, 1)).all())
    close(ll.softmax(backend.asarray(x.numpy()), axis=1), [[0.5, 0.0, 0.5]], TIGHT)


# --------------------------------------------------------------------------- precision


@backends()
def test_log_softmax_big_offset(backend: Backend) -> None:
    # test_nn.py::TestNNDeviceType::test_log_softmax_big (float32): integers below 100 and the
    # same + 1e7 (exactly representable) have the same log-softmax
    x_small = torch.randint(100, (16, 4), generator=_gen(2)).to(torch.float32)
    x_big = x_small + 1e7
    small = ll.log_softmax(backend.asarray(x_small.numpy()), axis=-1)
    big = ll.log_softmax(backend.asarray(x_big.numpy()), axis=-1)
    assert dtype_name(small) == dtype_name(big) == "float32"
    close(big, to_np(small), rel(np.float32))
    close(small, F.log_softmax(x_small.double(), -1).numpy(), rel(np.float32), atol=1e-6)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("fn, atol", [("log_softmax", 0.1), ("softmax", 1e-3)])
@pytest.mark.parametrize("dim", [0, 1])
def test_half_precision_cpu(dtype: str, fn: str, atol: float, dim: int) -> None:
    # test_nn.py::TestNNDeviceType::test_log_softmax_cpu and test_softmax_cpu (bf16/half against
    # float32; torch's tolerances atol 0.1 / 1e-3). logitlab computes in float32 and rounds once,
    # so it is also held to one ulp of the half dtype against the float32 result.
    dt = getattr(torch, dtype)
    inputf = torch.rand(40, 40, generator=_gen(4)).requires_grad_()
    inp = inputf.detach().to(dt).requires_grad_()
    out = getattr(ll, fn)(inp, axis=dim)
    outf = getattr(F, fn)(inputf, dim)
    assert out.dtype == dt
    close(out.float(), outf.to(dt).float().detach().numpy(), 0, atol=atol)
    exact = getattr(F, fn)(inp.detach().float(), dim)
    half_ulp = 2.0 ** (-10 if dtype == "float16" else -7)
    close(out.float(), exact.numpy(), half_ulp, atol=half_ulp * 1e-3)
    out.sum().backward()
    outf.sum().backward()
    close(inp.grad.float(), inputf.grad.to(dt).float().numpy(), 0, atol=atol)

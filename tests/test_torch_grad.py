"""PyTorch autograd through the exact core: gradcheck in float64, agreement with torch where torch
is accurate, and finite (zero) gradients at masked classes and zero probabilities."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

import logitlab as ll

torch = pytest.importorskip("torch")
F = torch.nn.functional
from torch.autograd import gradcheck  # noqa: E402

g = torch.Generator().manual_seed(0)


def _x(*shape: int) -> Any:
    return torch.randn(*shape, dtype=torch.float64, generator=g).requires_grad_()


def _p(*shape: int) -> Any:
    return torch.softmax(torch.randn(*shape, dtype=torch.float64, generator=g), -1).requires_grad_()


T = torch.randint(0, 6, (4,), generator=g)
W = torch.rand(6, dtype=torch.float64, generator=g) + 0.1

CASES: list[tuple[str, Callable[..., Any], Callable[[], tuple[Any, ...]]]] = [
    ("logsumexp", lambda x: ll.logsumexp(x), lambda: (_x(4, 6),)),
    ("logsumexp-keepdims-axis0", lambda x: ll.logsumexp(x, 0, True), lambda: (_x(4, 6),)),
    ("logsumexp-all", lambda x: ll.logsumexp(x, axis=None), lambda: (_x(4, 6),)),
    ("softmax-T2", lambda x: ll.softmax(x, 0, 2.0), lambda: (_x(4, 6),)),
    ("log_softmax-T0.5", lambda x: ll.log_softmax(x, temperature=0.5), lambda: (_x(4, 6),)),
    ("entropy-logits", lambda x: ll.entropy(logits=x), lambda: (_x(4, 6),)),
    ("entropy-probs", lambda p: ll.entropy(probs=p, base=2), lambda: (_p(4, 6),)),
    (
        "ce-all-options",
        lambda x: ll.cross_entropy(x, T, weight=W, label_smoothing=0.3, temperature=1.5),
        lambda: (_x(4, 6),),
    ),
    (
        "ce-soft",
        lambda x, y: ll.cross_entropy(x, y, weight=W, label_smoothing=0.2, reduction="none"),
        lambda: (_x(4, 6), _p(4, 6)),
    ),
    (
        "ce-axis0-sum",
        lambda x: ll.cross_entropy(x.T, T, axis=0, reduction="sum"),
        lambda: (_x(4, 6),),
    ),
    (
        "bce-logits",
        lambda x, y: ll.binary_cross_entropy_with_logits(
            x, y, pos_weight=torch.full((6,), 2.0, dtype=torch.float64)
        ),
        lambda: (_x(4, 6), torch.rand(4, 6, dtype=torch.float64, generator=g).requires_grad_()),
    ),
    (
        "bce-probs",
        lambda p, y: ll.binary_cross_entropy(p, y, reduction="sum"),
        lambda: (
            torch.sigmoid(torch.randn(4, 6, dtype=torch.float64, generator=g)).requires_grad_(),
            torch.rand(4, 6, dtype=torch.float64, generator=g).requires_grad_(),
        ),
    ),
    (
        "kl-logits",
        lambda a, b: ll.kl_divergence(p_logits=a, q_logits=b),
        lambda: (_x(4, 6), _x(4, 6)),
    ),
    (
        "kl-probs",
        lambda a, b: ll.kl_divergence(a, b, reduction="mean"),
        lambda: (_p(4, 6), _p(4, 6)),
    ),
    ("kl-mixed", lambda a, b: ll.kl_divergence(a, q_logits=b), lambda: (_p(4, 6), _x(4, 6))),
    (
        "js-logits",
        lambda a, b: ll.js_divergence(p_logits=a, q_logits=b),
        lambda: (_x(4, 6), _x(4, 6)),
    ),
    ("js-probs", lambda a, b: ll.js_divergence(a, b), lambda: (_p(4, 6), _p(4, 6))),
]


@pytest.mark.parametrize(("name", "fn", "make"), CASES, ids=[c[0] for c in CASES])
def test_gradcheck_float64(name: str, fn: Callable[..., Any], make: Callable[[], Any]) -> None:
    # gradcheck perturbs probabilities off the simplex: value checks off for this test only
    with ll.validation(False):
        assert gradcheck(fn, make(), eps=1e-6, atol=1e-7, rtol=1e-5)


def test_cross_entropy_gradient_matches_torch() -> None:
    x = _x(8, 11)
    t = torch.randint(0, 11, (8,), generator=g)
    t[2] = -100
    w = torch.rand(11, dtype=torch.float64, generator=g)
    for kw in (
        {},
        {"weight": w},
        {"label_smoothing": 0.2},
        {"weight": w, "label_smoothing": 0.1},
        {"reduction": "sum"},
    ):
        ours = torch.autograd.grad(ll.cross_entropy(x, t, **kw), x)[0]
        ref = torch.autograd.grad(F.cross_entropy(x, t, **kw), x)[0]
        torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-15)


def test_masked_classes_get_zero_gradient_not_nan() -> None:
    x = torch.tensor([[0.0, float("-inf"), 1.0], [2.0, -1.0, float("-inf")]], requires_grad=True)
    t = torch.tensor([0, 1])
    fns = [
        lambda v: ll.logsumexp(v).sum(),
        lambda v: ll.entropy(logits=v).sum(),
        lambda v: ll.cross_entropy(v, t, label_smoothing=0.1),
        lambda v: ll.softmax(v)[:, 0].sum(),
        lambda v: ll.kl_divergence(p_logits=v, q_logits=torch.zeros(2, 3)).sum(),
        lambda v: ll.js_divergence(p_logits=v, q_logits=torch.zeros(2, 3)).sum(),
    ]
    for fn in fns:
        (grad,) = torch.autograd.grad(fn(x), x)
        assert torch.isfinite(grad).all()
        assert grad[0, 1] == 0 and grad[1, 2] == 0


def test_entropy_gradient_finite_at_zero_probability() -> None:
    p = torch.tensor([[0.5, 0.0, 0.5]], dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(ll.entropy(probs=p).sum(), p)
    assert torch.isfinite(grad).all() and grad[0, 1] == 0
    torch.testing.assert_close(grad[0, 0], -(torch.log(torch.tensor(0.5, dtype=torch.float64)) + 1))


def test_all_ignored_batch_zero_loss_zero_gradient() -> None:
    x = _x(3, 5)
    loss = ll.cross_entropy(x, torch.full((3,), -100))
    assert float(loss.detach()) == 0.0
    (grad,) = torch.autograd.grad(loss, x)
    assert torch.equal(grad, torch.zeros_like(grad))
    assert torch.isnan(F.cross_entropy(x.detach(), torch.full((3,), -100)))


def test_saturated_logits_keep_exact_gradient() -> None:
    x = torch.tensor([[0.0, -40.0]], dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(ll.cross_entropy(x, torch.tensor([0])), x)
    p1 = float(np.exp(-40) / (1 + np.exp(-40)))
    # abs=0: pytest.approx's default absolute tolerance (1e-12) would accept 0 for -4.2e-18
    assert grad[0, 1].item() == pytest.approx(p1, rel=1e-15, abs=0)
    assert grad[0, 0].item() == pytest.approx(-p1, rel=1e-15, abs=0)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_precision_gradients(dtype: str) -> None:
    dt = getattr(torch, dtype)
    x = (torch.randn(4, 7, generator=g) * 3).to(dt).requires_grad_()
    t = torch.randint(0, 7, (4,), generator=g)
    loss = ll.cross_entropy(x, t)
    assert loss.dtype == dt
    loss.backward()
    assert x.grad is not None and x.grad.dtype == dt
    x32 = x.detach().float().requires_grad_()
    ll.cross_entropy(x32, t).backward()
    torch.testing.assert_close(x.grad.float(), x32.grad.to(dt).float(), rtol=0, atol=0)


def test_lists_as_targets_with_tensors() -> None:
    x = _x(2, 3)
    loss = ll.cross_entropy(x, [0, 2])
    loss.backward()
    assert x.grad is not None and loss.dtype == torch.float64


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_device_preserved() -> None:  # pragma: no cover - exercised on GPU machines only
    x = torch.randn(4, 10, device="cuda", requires_grad=True)
    out = ll.cross_entropy(x, torch.randint(0, 10, (4,), device="cuda"), label_smoothing=0.1)
    out.backward()
    assert out.device.type == "cuda" and x.grad is not None and x.grad.device.type == "cuda"
    assert ll.logsumexp(x.detach()).device.type == "cuda"

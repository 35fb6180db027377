"""Second derivatives of the fused losses (``create_graph=True``): ``gradcheck`` and
``gradgradcheck`` in float64 for every option, agreement of the double backward with the unfused
``F.cross_entropy`` composition, and the clear errors where no clean route exists
(``inplace_backward=True``, ``process_group``)."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from typing import Any

import pytest

import logitlab as ll

torch = pytest.importorskip("torch")
F = torch.nn.functional
from torch.autograd import gradcheck, gradgradcheck  # noqa: E402

from logitlab.torch import (  # noqa: E402
    CrossEntropy,
    LinearCrossEntropy,
    LinearKLDivergence,
    cross_entropy,
    linear_cross_entropy,
    linear_kl_divergence,
)

D = torch.float64
g = torch.Generator().manual_seed(7)


def _r(*shape: int, scale: float = 1.0) -> Any:
    return (scale * torch.randn(*shape, dtype=D, generator=g)).requires_grad_()


T5 = torch.tensor([0, 3, -100, 2, 4])
W6 = torch.tensor([0.5, 1.5, 1.0, 2.0, 0.7, 1.2], dtype=D)
TL = torch.tensor([1, 6, -100, 0, 3])  # targets into a vocabulary of 7

Case = tuple[str, Callable[..., Any], Callable[[], tuple[Any, ...]]]

FUSED: list[Case] = [
    ("ce", lambda x: cross_entropy(x, T5), lambda: (_r(5, 6),)),
    (
        "ce-all-options",
        lambda x: cross_entropy(
            x, T5, weight=W6, label_smoothing=0.2, temperature=0.8, reduction="mean"
        ),
        lambda: (_r(5, 6),),
    ),
    (
        "ce-sum-T",
        lambda x: cross_entropy(x, T5, reduction="sum", temperature=2.0),
        lambda: (_r(5, 6),),
    ),
    (
        "ce-none-smooth",
        lambda x: cross_entropy(x, T5, reduction="none", label_smoothing=0.1),
        lambda: (_r(5, 6),),
    ),
    ("ce-axis0", lambda x: cross_entropy(x.T, T5, axis=0, weight=W6), lambda: (_r(5, 6),)),
    (
        "ce-3d-axis1",
        lambda x: cross_entropy(x, torch.tensor([[0, 2], [-100, 1]]), axis=1, label_smoothing=0.1),
        lambda: (_r(2, 3, 2),),
    ),
    (
        "ce-weight-grad",
        lambda x, w: cross_entropy(x, T5, weight=w),
        lambda: (_r(5, 6), W6.clone().requires_grad_()),
    ),
    (
        "ce-module",
        lambda x: CrossEntropy(weight=W6, label_smoothing=0.1)(x, T5),
        lambda: (_r(5, 6),),
    ),
    (
        "lce",
        lambda h, w: linear_cross_entropy(h, w, TL, chunk_size=2),
        lambda: (_r(5, 4), _r(7, 4)),
    ),
    (
        "lce-all-options",
        lambda h, w, b: linear_cross_entropy(
            h,
            w,
            TL,
            bias=b,
            label_smoothing=0.2,
            z_loss=0.05,
            softcap=2.5,
            temperature=1.4,
            chunk_size=3,
        ),
        lambda: (_r(5, 4), _r(7, 4), _r(7)),
    ),
    (
        "lce-none",
        lambda h, w: linear_cross_entropy(h, w, TL, reduction="none", z_loss=0.1, chunk_size=2),
        lambda: (_r(5, 4), _r(7, 4)),
    ),
    (
        "lce-sum-3d",
        lambda h, w: linear_cross_entropy(h, w, TL[:4].reshape(2, 2), reduction="sum"),
        lambda: (_r(2, 2, 4), _r(7, 4)),
    ),
    (
        "lce-stats",
        lambda h, w: linear_cross_entropy(h, w, TL, return_stats=True, softcap=3.0)[0],
        lambda: (_r(5, 4), _r(7, 4)),
    ),
    (
        "lce-module",
        lambda h, w: LinearCrossEntropy(z_loss=1e-2, label_smoothing=0.1, chunk_size=2)(h, w, TL),
        lambda: (_r(5, 4), _r(7, 4)),
    ),
    (
        "lkl",
        lambda h, w: linear_kl_divergence(h, w, TEACHER, chunk_size=2),
        lambda: (_r(5, 4), _r(7, 4)),
    ),
    (
        "lkl-reverse-bias-T-mask",
        lambda h, w, b: linear_kl_divergence(
            h,
            w,
            TEACHER,
            bias=b,
            temperature=1.7,
            direction="reverse",
            mask=torch.tensor([True, False, True, True, True]),
            chunk_size=3,
        ),
        lambda: (_r(5, 4), _r(7, 4), _r(7)),
    ),
    (
        "lkl-teacher-head-sum",
        lambda h, w: linear_kl_divergence(
            h,
            w,
            teacher_hidden=TH,
            teacher_weight=TW,
            reduction="sum",
            direction="reverse",
        ),
        lambda: (_r(5, 4), _r(7, 4)),
    ),
    (
        "lkl-module",
        lambda h, w: LinearKLDivergence(temperature=2.0)(h, w, teacher_logits=TEACHER),
        lambda: (_r(5, 4), _r(7, 4)),
    ),
]
TEACHER = torch.randn(5, 7, dtype=D, generator=g)
TH, TW = torch.randn(5, 3, dtype=D, generator=g), torch.randn(7, 3, dtype=D, generator=g)


@pytest.mark.parametrize(("name", "fn", "make"), FUSED, ids=[c[0] for c in FUSED])
def test_fused_gradcheck_and_gradgradcheck(
    name: str, fn: Callable[..., Any], make: Callable[[], tuple[Any, ...]]
) -> None:
    inputs = make()
    assert gradcheck(fn, inputs, eps=1e-6, atol=1e-8, rtol=1e-6, fast_mode=True)
    assert gradgradcheck(fn, inputs, eps=1e-6, atol=1e-7, rtol=1e-5, fast_mode=True)


def _penalty_grad(loss_fn: Callable[[Any], Any], x0: Any) -> Any:
    """The issue's gradient penalty: d/dx (loss + |d loss / dx|^2)."""
    x = x0.clone().requires_grad_()
    loss = loss_fn(x)
    (gx,) = torch.autograd.grad(loss, x, create_graph=True)
    (loss + (gx**2).sum()).backward()
    return x.grad


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("native", ["1", "0"])
def test_gradient_penalty_matches_torch(
    dtype: Any, native: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # both first-order routes (native float32 kernel, torch fallback) hand over to the same
    # differentiable route under create_graph
    monkeypatch.setenv("LOGITLAB_NATIVE", native)
    x0 = torch.randn(6, 9, generator=g).to(dtype)
    t = torch.tensor([0, 8, -100, 3, 3, 1])
    for kw in ({}, {"label_smoothing": 0.1, "weight": W6.new_ones(9).to(dtype) * 0.7}):
        ours = _penalty_grad(lambda x, kw=kw: cross_entropy(x, t, **kw), x0)
        ref = _penalty_grad(lambda x, kw=kw: F.cross_entropy(x, t, **kw), x0)
        tol = dict(rtol=1e-12, atol=1e-14) if dtype == D else dict(rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(ours, ref, **tol)


def test_linear_ce_hvp_matches_unfused() -> None:
    h, w, b = _r(6, 5), _r(11, 5), _r(11)
    t = torch.tensor([1, 10, -100, 0, 3, 3])
    v = [torch.randn_like(a) for a in (h, w, b)]
    kw: dict[str, Any] = dict(label_smoothing=0.1, temperature=1.3)

    def hvp(loss: Any) -> list[Any]:
        grads = torch.autograd.grad(loss, (h, w, b), create_graph=True)
        dot = sum((gi * vi).sum() for gi, vi in zip(grads, v, strict=True))
        return list(torch.autograd.grad(dot, (h, w, b)))

    ours = hvp(linear_cross_entropy(h, w, t, bias=b, chunk_size=4, **kw))
    logits = (h @ w.T + b) / kw["temperature"]
    ref = hvp(F.cross_entropy(logits, t, label_smoothing=kw["label_smoothing"]))
    for a, r in zip(ours, ref, strict=True):
        torch.testing.assert_close(a, r, rtol=1e-12, atol=1e-14)


def test_inplace_backward_refuses_create_graph() -> None:
    x = torch.randn(4, 5, dtype=D, requires_grad=True)
    y = x * 1.0  # a non-leaf: in-place writes over it are allowed
    loss = cross_entropy(y, torch.tensor([0, 1, 2, 3]), inplace_backward=True)
    with pytest.raises(
        RuntimeError,
        match=r"inplace_backward=True.*create_graph=True.*"
        r"inplace_backward=False",
    ):
        torch.autograd.grad(loss, x, create_graph=True)


def test_inplace_backward_first_order_unchanged() -> None:
    x0 = torch.randn(4, 5, dtype=D)
    t = torch.tensor([0, 1, 2, 3])
    x = x0.clone().requires_grad_()
    y = x * 1.0
    cross_entropy(y, t, inplace_backward=True).backward()
    xr = x0.clone().requires_grad_()
    F.cross_entropy(xr, t).backward()
    torch.testing.assert_close(x.grad, xr.grad, rtol=1e-12, atol=1e-15)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_vocab_parallel_refuses_create_graph() -> None:
    dist = pytest.importorskip("torch.distributed")
    if not dist.is_available() or not dist.is_gloo_available() or dist.is_initialized():
        pytest.skip("needs torch.distributed with gloo and no process group yet")
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{_free_port()}", rank=0, world_size=1
    )
    try:
        h, w = _r(3, 4), _r(5, 4)
        loss = linear_cross_entropy(h, w, torch.tensor([0, 4, 2]), process_group=dist.group.WORLD)
        with pytest.raises(RuntimeError, match=r"process_group.*create_graph=True.*cross_entropy"):
            torch.autograd.grad(loss, h, create_graph=True)
        # first order is unaffected
        (gh,) = torch.autograd.grad(
            linear_cross_entropy(h, w, torch.tensor([0, 4, 2]), process_group=dist.group.WORLD),
            h,
        )
        assert gh.shape == h.shape and not gh.requires_grad
    finally:
        dist.destroy_process_group()


def test_core_cross_entropy_routes_to_fused_and_supports_create_graph() -> None:
    x = _r(4, 6)
    t = torch.tensor([1, 2, 3, -100])
    (gx,) = torch.autograd.grad(ll.cross_entropy(x, t), x, create_graph=True)
    assert gx.requires_grad


@pytest.mark.parametrize("native", ["1", "0"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_temperature_leaves_the_logits_alone(
    native: str, dtype: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The torch row kernel leaves x / T in its buffer; the forward's read-only visit (no grad,
    # reduction="none", inplace_backward) handed it the caller's logits, which came back divided
    # by T: a second call gave another loss, and the gradient (and create_graph's) used x / T.
    monkeypatch.setenv("LOGITLAB_NATIVE", native)
    x0 = torch.randn(5, 6, generator=g).to(dtype)
    t = torch.tensor([0, 3, -100, 2, 4])
    x = x0.clone()
    with torch.no_grad():
        first = cross_entropy(x, t, temperature=1.7)
    assert torch.equal(x, x0)
    torch.testing.assert_close(first, F.cross_entropy(x0 / 1.7, t))
    for kw in ({"reduction": "none"}, {"inplace_backward": True}):
        xa = x0.clone().requires_grad_()
        xr = x0.clone().requires_grad_()
        loss = cross_entropy(xa * 1.0, t, temperature=1.7, **kw)
        ref = F.cross_entropy(xr / 1.7, t, reduction=kw.get("reduction", "mean"))
        up = torch.rand(loss.shape, generator=g, dtype=dtype) + 0.5
        loss.backward(up)
        ref.backward(up)
        tol = dict(rtol=1e-12, atol=1e-15) if dtype == D else dict(rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(xa.grad, xr.grad, **tol)

"""The fused losses' gradients as differentiable expressions, for ``create_graph=True``.

The fused kernels form the gradient inside the forward (or write it in one pass in the backward)
with in-place and native operations that autograd does not record: to autograd that gradient is a
constant. When a backward runs with grad mode on (``create_graph=True``: double backward,
gradient penalties, Hessian-vector products), the fused losses call these functions instead. They
recompute the same closed form, chunk by chunk, from the core's exact softmax, log-softmax and
log-sum-exp Functions (:mod:`logitlab.torch._functions`), whose own backward passes are closed-form
at every order. The price is the memory of an unfused computation: the graph keeps each chunk's
``chunk x V`` tensors until it is freed.
"""

from __future__ import annotations

import math
from typing import Any

import torch

# isort: split
from logitlab.torch._ce_grads import ce_alpha
from logitlab.torch._common import LinearCEConfig, LinearKLConfig
from logitlab.torch._functions import (
    log_softmax_fn,
    log_softmax_vjp,
    logsumexp_fn,
    softmax_fn,
    softmax_vjp,
)

__all__ = ["linear_ce_graph_grads", "linear_kl_graph_grads"]

_NEG = -math.inf


def _cdt(dt: torch.dtype) -> torch.dtype:
    return torch.float64 if dt == torch.float64 else torch.float32


def _head_grads(
    gz: torch.Tensor,
    hc: torch.Tensor,
    w: torch.Tensor,
    need: tuple[bool, ...],
    acc: list[Any],
    has_bias: bool,
) -> None:
    """Accumulate one chunk's ``(d/dh rows, d/dW, d/db)`` into ``acc`` from ``gz = d/dz``."""
    gd = gz.to(hc.dtype)
    if need[0]:
        acc[0].append(gd @ w)
    if need[1]:
        part = (gd.t() @ hc).to(_cdt(w.dtype))
        acc[1] = part if acc[1] is None else acc[1] + part
    if need[2] and has_bias:
        part = gz.sum(0)
        acc[2] = part if acc[2] is None else acc[2] + part


def _finish(
    acc: list[Any], h: torch.Tensor, w: torch.Tensor, b: Any, need: tuple[bool, ...]
) -> tuple[Any, Any, Any]:
    gh = None if acc[0] is None else torch.cat(acc[0]) if acc[0] else torch.zeros_like(h)
    gw = acc[1] if acc[1] is not None or not need[1] else torch.zeros_like(w)
    gb = acc[2] if acc[2] is not None or not need[2] or b is None else torch.zeros_like(b)
    return (
        gh,
        None if gw is None else gw.to(w.dtype),
        None if gb is None or b is None else gb.to(b.dtype),
    )


def linear_ce_graph_grads(
    h: torch.Tensor,
    w: torch.Tensor,
    b: torch.Tensor | None,
    t: torch.Tensor,
    cfg: LinearCEConfig,
    g_out: torch.Tensor,
    need: tuple[bool, ...],
    chunk: int,
) -> tuple[Any, Any, Any]:
    r"""``(d/dh, d/dW, d/db)`` of :func:`~logitlab.torch.linear_cross_entropy`, differentiable.

    Per token, with :math:`y = \operatorname{softcap}(W h + b)` and :math:`p =
    \operatorname{softmax}(y / T)`: :math:`\partial \ell / \partial y = s\,((\sum_c \alpha_c +
    2\zeta\operatorname{lse}) p - \alpha) / T` (``s`` the token's reduction scale times the
    upstream gradient, ``alpha`` the smoothed one-hot target), times :math:`1 - \tanh^2` under
    softcap; then ``G W``, ``G^T h`` and ``sum(G)``.

    Raises:
        RuntimeError: with a ``process_group`` (the vocabulary-parallel gradient is formed with
            all-reduces that autograd does not record).
    """
    if cfg.group is not None:
        raise RuntimeError(
            "linear_cross_entropy(process_group=...) cannot build the graph of its gradient "
            "(create_graph=True): the vocabulary-parallel statistics are all-reduced outside "
            "autograd. For double backward, gather the logits and use logitlab.cross_entropy."
        )
    n = h.shape[0]
    cdt = _cdt(h.dtype)
    o = cfg.loss
    ii, red = o.ignore_index, o.reduction
    temp, cap, zl, eps = o.temperature, o.softcap, o.z_loss, o.label_smoothing
    valid = t != ii
    s = valid.to(cdt)
    if red == "mean":
        s = s / valid.sum().clamp_min(1).to(cdt)
    s = s * (g_out.reshape(-1) if red == "none" else g_out).to(cdt)
    acc: list[Any] = [[] if need[0] else None, None, None]
    for i in range(0, n, chunk):
        j = min(i + chunk, n)
        hc = h[i:j]
        z = (hc @ w.t() if b is None else torch.addmm(b, hc, w.t())).to(cdt)
        th = None
        if cap:
            th = torch.tanh(z / cap)
            x = cap * th
        else:
            x = z
        lp = log_softmax_fn(x, -1, temp)
        alpha, _, _ = ce_alpha(lp, t[i:j], None, soft=False, ignore_index=ii, label_smoothing=eps)
        p = softmax_fn(x, -1, temp)
        gx = log_softmax_vjp(p, -alpha, -1)
        if zl:
            gx = gx + 2 * zl * logsumexp_fn(x / temp if temp != 1.0 else x, -1, True) * p
        gx = gx * s[i:j].unsqueeze(1)
        gx = torch.where(lp == _NEG, 0.0, gx)
        if temp != 1.0:
            gx = gx / temp
        gz = gx * (1 - th * th) if th is not None else gx
        _head_grads(gz, hc, w, need, acc, b is not None)
    return _finish(acc, h, w, b, need)


def linear_kl_graph_grads(
    h: torch.Tensor,
    w: torch.Tensor,
    b: torch.Tensor | None,
    teacher: Any,
    mask: torch.Tensor,
    cfg: LinearKLConfig,
    g_out: torch.Tensor,
    need: tuple[bool, ...],
    chunk: int,
) -> tuple[Any, Any, Any]:
    r"""``(d/dh, d/dW, d/db)`` of :func:`~logitlab.torch.linear_kl_divergence`, differentiable.

    With the student :math:`q = \operatorname{softmax}(z_s / T)` and the (constant) teacher
    :math:`p`: forward KL :math:`(q - p) / T`; reverse KL :math:`q \odot (\log q - \log p -
    \mathrm{KL}) / T`, 0 where :math:`q = 0`; times the token's reduction scale and the upstream
    gradient, then ``G W``, ``G^T h`` and ``sum(G)``.
    """
    n = h.shape[0]
    cdt = _cdt(h.dtype)
    temp = cfg.temperature
    m = mask.to(cdt)
    if cfg.reduction == "mean":
        m = m / m.sum().clamp_min(1.0)
    s = m * g_out.to(cdt)
    acc: list[Any] = [[] if need[0] else None, None, None]
    for i in range(0, n, chunk):
        j = min(i + chunk, n)
        hc = h[i:j]
        zs = (hc @ w.t() if b is None else torch.addmm(b, hc, w.t())).to(cdt)
        if teacher[0] is not None:
            zt = teacher[0][i:j].to(cdt)
        else:
            th, tw, tb = teacher[1:]
            zt = (th[i:j] @ tw.t() if tb is None else torch.addmm(tb, th[i:j], tw.t())).to(cdt)
        q = softmax_fn(zs, -1, temp)
        if cfg.direction == "forward":
            with torch.no_grad():
                pt = softmax_fn(zt, -1, temp)
            gx = q - pt
        else:
            with torch.no_grad():
                lt = log_softmax_fn(zt, -1, temp)
            zq = q == 0
            u = torch.where(zq, 0.0, log_softmax_fn(zs, -1, temp) - lt)
            gx = torch.where(zq, 0.0, softmax_vjp(q, u, -1))  # q (u - KL)
        gx = gx * (s[i:j].unsqueeze(1) / temp)
        _head_grads(gx, hc, w, need, acc, b is not None)
    return _finish(acc, h, w, b, need)

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
from collections.abc import Callable
from typing import Any

import torch

# isort: split
from logitlab.torch._ce_grads import ce_alpha
from logitlab.torch._common import KLTargets, LinearCEConfig, LinearKLConfig, head_logits
from logitlab.torch._functions import (
    log_softmax_fn,
    log_softmax_vjp,
    logsumexp_fn,
    softmax_fn,
    softmax_vjp,
)

__all__ = ["ce_dlogits", "head_graph_grads", "kl_dlogits"]

_NEG = -math.inf


def _cdt(dt: torch.dtype) -> torch.dtype:
    return torch.float64 if dt == torch.float64 else torch.float32


ChunkGrad = Callable[[int, int, torch.Tensor], torch.Tensor]


def head_graph_grads(
    h: torch.Tensor,
    w: torch.Tensor,
    b: torch.Tensor | None,
    need: tuple[bool, ...],
    chunk: int,
    dlogits: ChunkGrad,
) -> tuple[Any, Any, Any]:
    """``(d/dh, d/dW, d/db)`` of a loss of the head ``z = h W^T + b``, differentiable: per chunk
    of tokens ``[i, j)``, ``G = dlogits(i, j, z)`` (the loss's gradient in ``z``, built from
    recorded operations), then ``G W``, ``G^T h`` and ``sum(G)``; ``None`` where not ``need``."""
    n = h.shape[0]
    cdt = _cdt(h.dtype)
    rows: list[torch.Tensor] = []
    gw: Any = None
    gb: Any = None
    for i in range(0, n, chunk):
        j = min(i + chunk, n)
        hc = h[i:j]
        gz = dlogits(i, j, head_logits(hc, w, b).to(cdt))
        gd = gz.to(hc.dtype)
        if need[0]:
            rows.append(gd @ w)
        if need[1]:
            part = (gd.t() @ hc).to(_cdt(w.dtype))
            gw = part if gw is None else gw + part
        if need[2] and b is not None:
            part = gz.sum(0)
            gb = part if gb is None else gb + part
    gh = (torch.cat(rows) if rows else torch.zeros_like(h)) if need[0] else None
    if need[1] and gw is None:
        gw = torch.zeros_like(w)
    if need[2] and b is not None and gb is None:
        gb = torch.zeros_like(b)
    return (
        gh,
        None if gw is None else gw.to(w.dtype),
        None if gb is None or b is None else gb.to(b.dtype),
    )


def ce_dlogits(t: torch.Tensor, cfg: LinearCEConfig, g_out: torch.Tensor) -> ChunkGrad:
    r"""The chunk gradient of :func:`~logitlab.torch.linear_cross_entropy` for
    :func:`head_graph_grads`.

    Per token, with :math:`y = \operatorname{softcap}(z)` and :math:`p =
    \operatorname{softmax}(y / T)`: :math:`\partial \ell / \partial y = s\,((\sum_c \alpha_c +
    2\zeta\operatorname{lse}) p - \alpha) / T` (``s`` the token's reduction scale times the
    upstream gradient, ``alpha`` the smoothed one-hot target), times :math:`1 - \tanh^2` under
    softcap.

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
    o = cfg.loss
    temp, cap, zl = o.temperature, o.softcap, o.z_loss
    valid = t != o.ignore_index
    cdt = _cdt(g_out.dtype)  # the loss's dtype, that of h
    s = valid.to(cdt)
    if o.reduction == "mean":
        s = s / valid.sum().clamp_min(1).to(cdt)
    s = s * (g_out.reshape(-1) if o.reduction == "none" else g_out).to(cdt)

    def dlogits(i: int, j: int, z: torch.Tensor) -> torch.Tensor:
        th = None
        x = z
        if cap:
            th = torch.tanh(z / cap)
            x = cap * th
        lp = log_softmax_fn(x, -1, temp)
        alpha, _, _ = ce_alpha(
            lp,
            t[i:j],
            None,
            soft=False,
            ignore_index=o.ignore_index,
            label_smoothing=o.label_smoothing,
        )
        p = softmax_fn(x, -1, temp)
        gx = log_softmax_vjp(p, -alpha, -1)
        if zl:
            gx = gx + 2 * zl * logsumexp_fn(x / temp if temp != 1.0 else x, -1, True) * p
        gx = gx * s[i:j].unsqueeze(1)
        gx = torch.where(lp == _NEG, 0.0, gx)
        if temp != 1.0:
            gx = gx / temp
        return gx * (1 - th * th) if th is not None else gx

    return dlogits


def kl_dlogits(targets: KLTargets, cfg: LinearKLConfig, g_out: torch.Tensor) -> ChunkGrad:
    r"""The chunk gradient of :func:`~logitlab.torch.linear_kl_divergence` for
    :func:`head_graph_grads`.

    With the student :math:`q = \operatorname{softmax}(z_s / T)` and the (constant) teacher
    :math:`p`: forward KL :math:`(q - p) / T`; reverse KL :math:`q \odot (\log q - \log p -
    \mathrm{KL}) / T`, 0 where :math:`q = 0`; times the token's reduction scale and the upstream
    gradient.
    """
    temp = cfg.temperature
    cdt = _cdt(g_out.dtype)  # the loss's dtype, that of h
    m = targets.mask.to(cdt)
    if cfg.reduction == "mean":
        m = m / m.sum().clamp_min(1.0)
    s = m * g_out.to(cdt)

    def dlogits(i: int, j: int, zs: torch.Tensor) -> torch.Tensor:
        zt = targets.chunk(i, j, zs.dtype)
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
        return gx * (s[i:j].unsqueeze(1) / temp)

    return dlogits

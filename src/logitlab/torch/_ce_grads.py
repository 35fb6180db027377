"""The gradient of cross-entropy with respect to logits, targets and class weights, written with
the differentiable primitives of :mod:`logitlab.torch._functions`: shared by the core's autograd
Function, the fused kernel's ``create_graph`` route and the linear losses' graph gradients."""

from __future__ import annotations

import math
from typing import Any

import torch

from logitlab.torch._functions import (
    _NEG,
    _dead,
    _up,
    log_softmax_fn,
    log_softmax_vjp,
    softmax_fn,
)

__all__ = ["ce_alpha", "ce_grads"]


def ce_alpha(
    lp: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None,
    *,
    soft: bool,
    ignore_index: int,
    label_smoothing: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(alpha, beta, base)`` of cross-entropy, class axis last, differentiable in the target
    and the weights: ``loss_row = sum_c alpha_c (-log p_c)`` with ``alpha = w * beta``,
    ``beta = (1 - eps) base + eps 1_F / |F|`` on non-ignored rows (0 on ignored ones), ``base``
    the one-hot of the class target (0 on ignored rows) or the probability target, and ``F`` the
    classes with non-zero probability (``lp > -inf``), as in
    :func:`logitlab.losses.ce_coefficients`.
    """
    n_cls = lp.shape[-1]
    if soft:
        base = target.to(lp.dtype)
        valid = None
    else:
        valid = (target != ignore_index).unsqueeze(-1)
        idx = torch.where(valid.squeeze(-1), target, 0).long()
        base = torch.nn.functional.one_hot(idx, n_cls).to(lp.dtype) * valid
    eps = float(label_smoothing)
    beta = (1 - eps) * base if eps else base
    if eps:
        fin = (lp > _NEG).to(lp.dtype)
        n_fin = fin.sum(-1, keepdim=True)
        smooth = eps * fin / torch.where(n_fin == 0, 1.0, n_fin)
        beta = beta + (smooth * valid if valid is not None else smooth)
    alpha = beta * weight if weight is not None else beta
    return alpha, beta, base


def ce_grads(
    x: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None,
    g: torch.Tensor,
    out: torch.Tensor,
    *,
    ignore_index: int,
    label_smoothing: float,
    reduction: str,
    temperature: float,
    need: tuple[bool, bool, bool],
) -> tuple[Any, Any, Any]:
    r"""Derivatives of :func:`logitlab.cross_entropy` w.r.t. (logits, target, weight), written
    with differentiable operations (class axis last; ``x`` float32/float64).

    With :math:`\ell = \operatorname{red}(\sum_c \alpha_c (-\log p_c))`, ``s`` the reduction's
    scale (``g``, or ``g / D`` for ``"mean"`` with :math:`D = \sum_n w_{t_n}` over non-ignored
    rows, or the number of rows for probability targets):

    * logits: :math:`s\,(p \sum_c \alpha_c - \alpha) / T`, 0 on masked classes;
    * probability target: :math:`s\,(1 - \varepsilon) w_c (-\log p_c)`;
    * weights: :math:`\sum_n s_n \beta_{nc} (-\log p_{nc})`, minus :math:`s\,\ell \sum_n
      \mathrm{base}_{nc}` for ``"mean"`` over class targets (the weights are in :math:`D` too).

    ``out`` is the forward value (differentiable: under ``create_graph`` its derivative is the
    Function's own backward again). Returns None for what ``need`` does not ask for.
    """
    soft = target.is_floating_point()
    lp = log_softmax_fn(x, -1, temperature)
    w = None if weight is None else _up(weight).to(x.dtype)
    alpha, beta, base = ce_alpha(
        lp,
        target,
        w,
        soft=soft,
        ignore_index=ignore_index,
        label_smoothing=label_smoothing,
    )
    gg = g.to(x.dtype)
    if reduction == "none":
        scale = gg.unsqueeze(-1)
    elif reduction == "sum":
        scale = gg
    else:
        if soft:
            total = torch.tensor(float(math.prod(x.shape[:-1])), dtype=x.dtype, device=x.device)
        elif w is not None:
            total = (base * w).sum()
        else:
            total = base.sum()
        scale = torch.where(total == 0, 0.0, gg / torch.where(total == 0, 1.0, total))
    gx = gt = gw = None
    if need[0]:
        p = softmax_fn(x, -1, temperature)
        zero = (lp == _NEG) | _dead(x, -1)
        gx = torch.where(zero, 0.0, log_softmax_vjp(p, -alpha, -1) * scale)
        if temperature != 1.0:
            gx = gx / temperature
    if need[1] and soft:
        c = (1 - label_smoothing) * (w if w is not None else torch.ones_like(lp[..., :1]))
        c = c.expand(lp.shape)
        gt = torch.where(c == 0, 0.0, c * -lp) * scale
    if need[2] and w is not None:
        n_cls = x.shape[-1]
        nll = torch.where(beta == 0, 0.0, beta * -lp)
        gw = (nll * scale).reshape(-1, n_cls).sum(0)
        if reduction == "mean" and not soft:
            gw = gw - scale * out.to(x.dtype) * base.reshape(-1, n_cls).sum(0)
    return gx, gt, gw

"""Chunked fused linear + KL divergence for distillation (soft targets)."""

from __future__ import annotations

from typing import Any

import torch

# isort: split
from logitlab import _formulas, _rows
from logitlab._checks import (
    check_choice,
    check_positive_int,
    check_reduction,
    check_temperature,
)
from logitlab.torch._common import (
    KLTargets,
    LinearKLConfig,
    check_float,
    check_same_device,
    head_logits,
)
from logitlab.torch._graph_grads import head_graph_grads, kl_dlogits
from logitlab.torch._linear_ce import default_chunk_size

__all__ = ["linear_kl_divergence"]


def _kl_rows(
    zs: torch.Tensor, zt: torch.Tensor, temperature: float, reverse: bool, grad: bool
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Row KL of student logits ``zs`` and teacher logits ``zt`` (rows x classes, both at
    ``temperature``) and, if ``grad``, ``d KL / d zs``.

    The core's formulas (:mod:`logitlab.losses`): ``u = log p - log q`` from the logit
    difference (``delta - (lse_p - lse_q)`` with ``delta = (z_t - z_s) / T``, relative accuracy
    as p -> q, where ``log p - log q`` would keep only ``eps * |log p|``), and the non-negative
    terms ``q h(u)`` of ``KL(p || q)`` (``p h(-u)`` of ``KL(q || p)``). The textbook
    ``sum p (log p - log q)`` cancels: 4% off in float64 for teacher ~ student (issue 13).
    Gradients: forward ``q - p = -q expm1(u)`` (the same relative accuracy; ``q - p`` itself
    where ``|u| > 1``, no cancellation there); reverse ``q (-u - KL)``; both divided by ``T``.
    """
    import array_api_compat.torch as xp

    t = temperature
    q, lq = _rows.softmax(xp, zs, 1, t), _rows.log_softmax(xp, zs, 1, t)
    p, lp = _rows.softmax(xp, zt, 1, t), _rows.log_softmax(xp, zt, 1, t)
    u = _formulas.log_ratio(xp, p, q, lp, lq, zt, zs, 1, temperature=t)
    del lp, lq
    if not reverse:
        kl = _formulas.kl_terms(xp, p, q, u).sum(1)
        if not grad:
            return kl, None
        g = torch.where(u.abs() <= 1, -q * torch.expm1(u), q - p)
    else:
        kl = _formulas.kl_terms(xp, q, p, -u).sum(1)
        if not grad:
            return kl, None
        # d/dz_s sum q (log q - log p) = q (log q - log p - KL); 0 where q = 0
        g = torch.where(q > 0, q * (-u - kl.unsqueeze(1)), torch.zeros_like(q))
    return kl, g.div_(t) if t != 1.0 else g


class _LinearKL(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        h: torch.Tensor,
        w: torch.Tensor,
        b: torch.Tensor | None,
        targets: KLTargets,
        cfg: LinearKLConfig,
    ) -> torch.Tensor:
        need = tuple(ctx.needs_input_grad[:3])
        out, grads = _kl_run(h, w, b, targets, cfg, need)
        ctx.grads = grads
        ctx.dtypes = (h.dtype, w.dtype, None if b is None else b.dtype)
        ctx.args = (h, w, b, targets, cfg, need)
        return out

    @staticmethod
    def backward(ctx: Any, g_out: torch.Tensor) -> tuple[Any, ...]:
        if torch.is_grad_enabled() and any(ctx.needs_input_grad[:3]):
            # create_graph=True: the chunk gradients are constants to autograd; recompute them
            # as a differentiable expression of h, W, b and g_out (see _graph_grads)
            ctx.grads = None
            h, w, b, targets, cfg, need = ctx.args
            chunk = cfg.chunk_size or max(1, default_chunk_size(h.shape[0], w.shape[0]) // 2)
            dlogits = kl_dlogits(targets, cfg, g_out)
            gh, gw, gb = head_graph_grads(h, w, b, need, chunk, dlogits)
            return gh, gw, gb, None, None
        if ctx.grads is None:
            # a second backward through the same graph: the first took the gradients, recompute
            ctx.grads = _kl_run(*ctx.args)[1]
        grads, ctx.grads = ctx.grads, None
        out: list[Any] = []
        for gr, dt in zip(grads, ctx.dtypes, strict=True):
            if gr is None:
                out.append(None)
                continue
            gr = gr.mul_(g_out.to(gr.dtype))
            out.append(gr if gr.dtype == dt else gr.to(dt))
        return out[0], out[1], out[2], None, None


def _kl_run(
    h: torch.Tensor,
    w: torch.Tensor,
    b: torch.Tensor | None,
    targets: KLTargets,
    cfg: LinearKLConfig,
    need: tuple[bool, ...],
) -> tuple[torch.Tensor, list[Any]]:
    n, _ = h.shape
    v = w.shape[0]
    dt = h.dtype
    cdt = torch.float64 if dt == torch.float64 else torch.float32
    grads = any(need)
    # a quarter of linear_cross_entropy's buffer: the KL formulas hold a few more chunk-sized
    # temporaries (p, q, u, the terms) than the cross-entropy row kernel
    c = cfg.chunk_size or max(1, default_chunk_size(n, v) // 4)
    mask = targets.mask
    m = mask.to(cdt)
    if cfg.reduction == "mean":
        m = m / m.sum().clamp_min(1.0)
    kl = torch.empty(n, dtype=cdt, device=h.device)
    gh = torch.empty_like(h) if need[0] else None
    gw = torch.zeros(w.shape, dtype=cdt, device=w.device) if need[1] else None
    gb = torch.zeros(v, dtype=cdt, device=w.device) if need[2] and b is not None else None
    for i in range(0, n, c):
        j = min(i + c, n)
        hc = h[i:j]
        zs = head_logits(hc, w, b).to(cdt)
        zt = targets.chunk(i, j, cdt)
        reverse = cfg.direction == "reverse"
        kl[i:j], g = _kl_rows(zs, zt, cfg.temperature, reverse, grads)
        del zs, zt
        if g is None:
            continue
        # where, not a product: a masked-out token with an infinite KL (and NaN gradient)
        # contributes 0, not 0 * NaN
        mc = m[i:j].unsqueeze(1)
        g = torch.where(mc != 0, g * mc, torch.zeros_like(g))
        gd = g if dt == cdt else g.to(dt)
        if gh is not None:
            gh[i:j] = torch.mm(gd, w)
        if gw is not None:
            gw.add_(torch.mm(gd.t(), hc).to(cdt))
        if gb is not None:
            gb.add_(g.sum(0))
    kl = torch.where(mask, kl, torch.zeros_like(kl))
    red = cfg.reduction
    if red == "mean":
        out = kl.sum() / mask.sum().clamp_min(1)
    elif red == "sum":
        out = kl.sum()
    else:
        out = kl
    return out.to(dt), [gh, gw, gb]


@torch.compiler.disable
def linear_kl_divergence(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    teacher_logits: torch.Tensor | None = None,
    *,
    teacher_hidden: torch.Tensor | None = None,
    teacher_weight: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    teacher_bias: torch.Tensor | None = None,
    temperature: float = 1.0,
    direction: str = "forward",
    mask: torch.Tensor | None = None,
    reduction: str = "mean",
    chunk_size: int | None = None,
) -> torch.Tensor:
    r"""KL divergence between a teacher and the student head ``hidden @ weight.T``, chunked.

    With :math:`q = \operatorname{softmax}(z_s / T)` (student, :math:`z_s = W h + b`) and
    :math:`p = \operatorname{softmax}(z_t / T)` (teacher: given logits, or
    ``teacher_hidden @ teacher_weight.T + teacher_bias``), per token

    .. math::

        \text{forward: } \mathrm{KL}(p \,\|\, q) = \sum_c p_c (\log p_c - \log q_c), \qquad
        \frac{\partial}{\partial z_s} = \frac{q - p}{T};

        \text{reverse: } \mathrm{KL}(q \,\|\, p) = \sum_c q_c (\log q_c - \log p_c), \qquad
        \frac{\partial}{\partial z_s} = \frac{q \odot (\log q - \log p - \mathrm{KL})}{T}.

    Terms with zero weight (:math:`p_c = 0` forward, :math:`q_c = 0` reverse) are 0, never
    ``0 * inf``. The teacher receives no gradient. No :math:`T^2` factor is applied (multiply
    the result yourself for Hinton-style distillation). The student gradient is formed in the
    forward, chunk by chunk, as in :func:`~logitlab.torch.linear_cross_entropy`. With
    ``create_graph=True`` the backward recomputes it as a differentiable expression of
    ``hidden``, ``weight`` and ``bias`` from the core's exact softmax Functions, so higher-order
    derivatives are exact (the graph then holds each chunk's logits).

    Computed with the core's non-negative terms (:func:`logitlab.losses.kl_terms`) and
    :math:`\log(p/q)` from the logit difference, so the result keeps its relative accuracy as
    the student approaches the teacher (within 4 ulps of mpmath, value and gradient, where the
    textbook :math:`\sum p (\log p - \log q)` was 4% off in float64); the forward gradient is
    formed as :math:`-q \operatorname{expm1}(\log(p/q)) / T`.

    Args:
        hidden: ``(..., d)`` student activations.
        weight: ``(V, d)`` student head.
        teacher_logits: ``(..., V)`` teacher logits, or None to use ``teacher_hidden`` and
            ``teacher_weight`` (the teacher's logits are then also never materialised in full).
        teacher_hidden: ``(..., d_t)`` teacher activations.
        teacher_weight: ``(V, d_t)`` teacher head.
        bias: optional student bias ``(V,)``.
        teacher_bias: optional teacher bias ``(V,)``.
        temperature: :math:`T > 0`, applied to both.
        direction: ``"forward"`` (:math:`\mathrm{KL}(p\|q)`) or ``"reverse"``.
        mask: optional boolean ``(...)``; tokens where it is False contribute nothing.
        reduction: ``"mean"`` (over the tokens kept by ``mask``; 0 if none) or ``"sum"``.
        chunk_size: tokens per chunk.

    Returns:
        Scalar loss in ``hidden``'s dtype.

    Raises:
        TypeError: non-floating or mismatched dtypes.
        ValueError: both or neither teacher forms given, shapes that do not fit, bad options.

    Example:
        >>> import torch
        >>> import torch.nn.functional as F
        >>> from logitlab.torch import linear_kl_divergence
        >>> g = torch.Generator().manual_seed(0)
        >>> h, w = torch.randn(5, 4, generator=g), torch.randn(7, 4, generator=g)
        >>> tl = torch.randn(5, 7, generator=g)
        >>> kl = linear_kl_divergence(h, w, tl)
        >>> ref = F.kl_div(F.log_softmax(h @ w.T, -1), F.log_softmax(tl, -1), log_target=True,
        ...                reduction="batchmean")
        >>> bool(torch.allclose(kl, ref))
        True

    References:
        G. Hinton, O. Vinyals, J. Dean, "Distilling the Knowledge in a Neural Network", 2015.
        E. Wijmans et al., "Cut Your Losses in Large-Vocabulary Language Models", ICLR 2025.
    """
    check_float(hidden, "hidden")
    check_float(weight, "weight")
    check_reduction(reduction, ("mean", "sum"))
    check_choice(direction, "direction", ("forward", "reverse"))
    temp = check_temperature(temperature, limits=False)
    chunk = check_positive_int(chunk_size, "chunk_size")
    if weight.dim() != 2 or hidden.shape[-1] != weight.shape[1]:
        raise ValueError(
            f"hidden's last dimension ({hidden.shape[-1]}) must equal weight's second "
            f"dimension (weight shape {tuple(weight.shape)})"
        )
    if weight.dtype != hidden.dtype:
        raise TypeError(f"weight dtype {weight.dtype} differs from hidden dtype {hidden.dtype}")
    check_same_device(hidden, weight, "weight", "hidden")
    lead = tuple(hidden.shape[:-1])
    v = weight.shape[0]
    h2 = hidden.reshape(-1, hidden.shape[-1]).contiguous()
    if (teacher_logits is None) == (teacher_hidden is None or teacher_weight is None):
        raise ValueError("give either teacher_logits or both teacher_hidden and teacher_weight")
    if teacher_logits is not None:
        check_float(teacher_logits, "teacher_logits")
        check_same_device(hidden, teacher_logits, "teacher_logits", "hidden")
        if tuple(teacher_logits.shape) != (*lead, v):
            raise ValueError(
                f"teacher_logits shape {tuple(teacher_logits.shape)} must be {(*lead, v)}"
            )
        teacher: dict[str, Any] = dict(logits=teacher_logits.detach().reshape(-1, v))
    else:
        assert teacher_hidden is not None and teacher_weight is not None
        check_float(teacher_hidden, "teacher_hidden")
        check_float(teacher_weight, "teacher_weight")
        check_same_device(hidden, teacher_hidden, "teacher_hidden", "hidden")
        check_same_device(hidden, teacher_weight, "teacher_weight", "hidden")
        if teacher_weight.dim() != 2 or teacher_weight.shape[0] != v:
            raise ValueError(f"teacher_weight must have shape ({v}, d_t)")
        if tuple(teacher_hidden.shape) != (*lead, teacher_weight.shape[1]):
            raise ValueError(
                f"teacher_hidden shape {tuple(teacher_hidden.shape)} must be "
                f"{(*lead, teacher_weight.shape[1])}"
            )
        tb = None if teacher_bias is None else teacher_bias.detach()
        th = teacher_hidden.detach().reshape(-1, teacher_weight.shape[1])
        teacher = dict(hidden=th, weight=teacher_weight.detach(), bias=tb)
    if mask is None:
        m = torch.ones(h2.shape[0], dtype=torch.bool, device=hidden.device)
    else:
        if tuple(mask.shape) != lead:
            raise ValueError(f"mask shape {tuple(mask.shape)} must equal {lead}")
        m = mask.reshape(-1).to(torch.bool)
    cfg = LinearKLConfig(
        temperature=temp, direction=direction, reduction=reduction, chunk_size=chunk
    )
    out: torch.Tensor = _LinearKL.apply(h2, weight, bias, KLTargets(m, **teacher), cfg)
    return out

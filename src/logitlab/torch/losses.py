r"""Fused, chunked cross-entropy for PyTorch: in memory, and linear (never building N x V logits).

Both compute the loss and the gradient with respect to the logits in the forward pass, one block
of rows at a time (:func:`logitlab.torch._kernels.ce_chunk`): the backward is a scaling (in-memory)
or nothing at all (linear: ``grad_hidden``, ``grad_weight`` and ``grad_bias`` are accumulated with
matmuls during the forward). Accumulation is in float32 for float16/bfloat16 inputs.

.. math::

    \ell_i = (1 - \varepsilon)\, w_{t_i} \big(-\log p_{i t_i}\big)
    + \frac{\varepsilon}{|F_i|} \sum_{c \in F_i} w_c \big(-\log p_{ic}\big)
    + \lambda_z \operatorname{lse}(z_i)^2,
    \qquad z_i = \frac{\mathrm{cap}(h_i W^\top + b)}{T}, \quad
    \mathrm{cap}(x) = c \tanh(x / c) .

References:
    E. Wijmans, B. Huval, A. Hertzberg, V. Koltun, P. Krähenbühl, "Cut your losses in
    large-vocabulary language models", ICLR 2025.

    P.-L. Hsu et al., "Liger Kernel: efficient Triton kernels for LLM training", 2024.

    A. Chowdhery et al., "PaLM: scaling language modeling with pathways" (z-loss), JMLR 2023.

    Gemma Team, "Gemma 2: improving open language models at a practical size" (soft-capping), 2024.

    M. Shoeybi et al., "Megatron-LM: training multi-billion parameter language models using model
    parallelism" (vocab-parallel cross-entropy), 2019.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from logitlab.torch._kernels import ce_chunk, check_targets, rows_per_chunk

__all__ = [
    "cross_entropy",
    "linear_cross_entropy",
    "LinearCrossEntropy",
    "LossStats",
    "linear_kl_divergence",
]

_HALF = (torch.float16, torch.bfloat16)


@dataclass
class LossStats:
    """Per-token statistics from the same pass as the loss (``return_stats=True``)."""

    lse: torch.Tensor
    entropy: torch.Tensor
    accuracy: torch.Tensor  # argmax == target (bool); False for ignored tokens


def _check_common(reduction: str, label_smoothing: float, temperature: float) -> None:
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1], got {label_smoothing!r}")
    if not (temperature > 0 and math.isfinite(temperature)):
        raise ValueError(f"temperature must be positive and finite, got {temperature!r}")


def _scale(reduction: str, denom: torch.Tensor) -> torch.Tensor:
    if reduction == "mean":
        # all-ignored batch: mean 0 and zero gradient (torch gives NaN)
        return torch.where(denom > 0, 1.0 / denom.clamp_min(1e-38), torch.zeros_like(denom))
    return torch.ones_like(denom)


def _reduce(loss: torch.Tensor, reduction: str, denom: torch.Tensor) -> torch.Tensor:
    if reduction == "none":
        return loss
    total = loss.sum()
    return total if reduction == "sum" else total * _scale("mean", denom)


class _FusedCE(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any,
        logits: torch.Tensor,
        target: torch.Tensor,
        weight: Any,
        ignore_index: int,
        ls: float,
        reduction: str,
        t: float,
        inplace: bool,
        chunk: int,
    ) -> torch.Tensor:
        n, v = logits.shape
        need_grad = ctx.needs_input_grad[0]
        out_dtype = logits.dtype
        acc = torch.float64 if logits.dtype == torch.float64 else torch.float32
        work_in_place = inplace and logits.dtype == acc and logits.is_contiguous()
        g = logits.detach() if work_in_place else None
        if g is None and need_grad:
            g = torch.empty(n, v, dtype=acc, device=logits.device)
        buf = None
        if g is None:
            buf = torch.empty(min(chunk, n), v, dtype=acc, device=logits.device)
        losses = torch.empty(n, dtype=acc, device=logits.device)
        denom = torch.zeros((), dtype=acc, device=logits.device)
        w = None if weight is None else weight.to(acc)
        for a in range(0, n, chunk):
            b = min(n, a + chunk)
            zc = g[a:b] if g is not None else buf[: b - a]  # type: ignore[index]
            if zc.data_ptr() != logits[a:b].data_ptr():
                zc.copy_(logits[a:b])
            if t != 1.0:
                zc.div_(t)
            out = ce_chunk(
                zc,
                target[a:b],
                ignore_index=ignore_index,
                label_smoothing=ls,
                weight=w,
                z_loss=0.0,
                stats=False,
                grad=need_grad,
            )
            losses[a:b] = out.loss
            denom += out.denom.sum()
        scale = _scale(reduction, denom)
        if g is not None:
            ctx.save_for_backward(g, scale)
        ctx.reduction, ctx.t, ctx.out_dtype = reduction, t, out_dtype
        ctx.inplace = work_in_place
        res = _reduce(losses, reduction, denom)
        return res.to(out_dtype)

    @staticmethod
    def backward(ctx: Any, go: torch.Tensor) -> tuple[Any, ...]:
        g, scale = ctx.saved_tensors
        if ctx.reduction == "none":
            f = go.to(g.dtype).unsqueeze(1) / ctx.t
        else:
            f = (go.to(g.dtype) * scale / ctx.t).reshape(())
        if ctx.reduction != "none" and float(f) == 1.0:
            grad = g
        else:
            # in place only when the caller opted in (the buffer is then the logits' storage and
            # a second backward through this graph is impossible); otherwise a fresh product,
            # so that backward can run again (gradcheck, retain_graph)
            grad = g.mul_(f) if ctx.inplace else g * f
        return grad.to(ctx.out_dtype), None, None, None, None, None, None, None, None


def cross_entropy(
    logits: torch.Tensor,
    target: torch.Tensor,
    *,
    ignore_index: int = -100,
    label_smoothing: float = 0.0,
    weight: torch.Tensor | None = None,
    reduction: str = "mean",
    temperature: float = 1.0,
    inplace_backward: bool = False,
    chunk_rows: int | None = None,
) -> torch.Tensor:
    r"""Fused cross-entropy on in-memory logits ``(N, V)`` with class targets.

    Forward and gradient in one pass over the logits, block by block in cache; with
    ``inplace_backward=True`` (float32 contiguous logits) the gradient is written into the logits'
    own storage, so no second ``N x V`` buffer exists (the logits' values are destroyed: do not
    read them after the call). Same semantics as :func:`logitlab.cross_entropy`.

    Args:
        logits: ``(N, V)`` scores (float32/float16/bfloat16/float64).
        target: ``(N,)`` integer classes.
        ignore_index: rows with this target contribute nothing.
        label_smoothing: spread over the classes with a finite logit.
        weight: per-class weights ``(V,)``.
        reduction: ``"mean"`` (over ``sum(weight[target])``), ``"sum"`` or ``"none"``.
        temperature: divide the logits by ``T``.
        inplace_backward: write the gradient into ``logits``.
        chunk_rows: rows per block (default: about 2 MiB of float32).

    Returns:
        The loss, in the logits' dtype.

    Raises:
        ValueError/TypeError: bad shapes, targets out of range, bad options.

    Example:
        >>> import torch
        >>> z = torch.randn(4, 10, requires_grad=True)
        >>> t = torch.tensor([1, 2, 3, -100])
        >>> loss = cross_entropy(z, t)
        >>> torch.allclose(loss, torch.nn.functional.cross_entropy(z, t))
        True

    References:
        Dao et al., flash-attention's fused cross-entropy (in-place backward), 2023.
    """
    _check_common(reduction, label_smoothing, temperature)
    if logits.ndim != 2:
        raise ValueError(f"logits must have shape (N, V), got {tuple(logits.shape)}")
    if target.shape != logits.shape[:1]:
        raise ValueError(f"target has shape {tuple(target.shape)}, expected ({logits.shape[0]},)")
    if not logits.is_floating_point():
        raise TypeError(f"logits must be floating point, got {logits.dtype}")
    check_targets(target, logits.shape[1], ignore_index)
    if weight is not None and weight.shape != (logits.shape[1],):
        raise ValueError(f"weight must have shape ({logits.shape[1]},), got {tuple(weight.shape)}")
    chunk = chunk_rows or rows_per_chunk(logits.shape[1])
    return _FusedCE.apply(
        logits,
        target,
        weight,
        ignore_index,
        float(label_smoothing),
        reduction,
        float(temperature),
        bool(inplace_backward),
        chunk,
    )


# --------------------------------------------------------------------------- linear CE


def _check_linear(
    hidden: torch.Tensor, weight: torch.Tensor, target: torch.Tensor, bias: torch.Tensor | None
) -> None:
    if hidden.ndim != 2:
        raise ValueError(f"hidden must have shape (N, d), got {tuple(hidden.shape)}")
    if weight.ndim != 2 or weight.shape[1] != hidden.shape[1]:
        raise ValueError(
            f"weight must have shape (V, {hidden.shape[1]}) to match hidden's d, "
            f"got {tuple(weight.shape)}"
        )
    if target.shape != hidden.shape[:1]:
        raise ValueError(f"target has shape {tuple(target.shape)}, expected ({hidden.shape[0]},)")
    for name, x in (("hidden", hidden), ("weight", weight), ("bias", bias)):
        if x is not None and not x.is_floating_point():
            raise TypeError(f"{name} must be floating point, got {x.dtype}")
        if x is not None and x.device != hidden.device:
            raise ValueError(f"{name} is on {x.device} but hidden is on {hidden.device}")
    if target.device != hidden.device:
        raise ValueError(f"target is on {target.device} but hidden is on {hidden.device}")
    if weight.dtype != hidden.dtype:
        raise TypeError(f"weight dtype {weight.dtype} differs from hidden dtype {hidden.dtype}")
    if bias is not None and bias.shape != (weight.shape[0],):
        raise ValueError(f"bias must have shape ({weight.shape[0]},), got {tuple(bias.shape)}")


def _vocab_parallel(pg: Any) -> tuple[int, int]:
    import torch.distributed as dist

    return dist.get_rank(pg), dist.get_world_size(pg)


class _LinearCE(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any,
        hidden: torch.Tensor,
        weight: torch.Tensor,
        bias: Any,
        target: torch.Tensor,
        opts: dict[str, Any],
    ) -> Any:
        n, d = hidden.shape
        v = weight.shape[0]
        pg = opts["process_group"]
        want = ctx.needs_input_grad
        acc = torch.float64 if hidden.dtype == torch.float64 else torch.float32
        h32 = hidden if hidden.dtype == acc else hidden.to(acc)
        w32 = weight if weight.dtype == acc else weight.to(acc)
        b32 = None if bias is None else bias.to(acc)
        gh = torch.zeros(n, d, dtype=acc, device=hidden.device) if want[0] else None
        gw = torch.zeros(v, d, dtype=acc, device=hidden.device) if want[1] else None
        gb = (
            torch.zeros(v, dtype=acc, device=hidden.device)
            if (bias is not None and want[2])
            else None
        )
        grad = any(want[:3])
        chunk = opts["chunk_size"] or max(1, min(n, (8 << 20) // max(1, v)))
        losses = torch.empty(n, dtype=acc, device=hidden.device)
        lses = torch.empty(n, dtype=acc, device=hidden.device)
        ents = torch.empty(n, dtype=acc, device=hidden.device) if opts["return_stats"] else None
        accs = torch.zeros(n, dtype=torch.bool, device=hidden.device)
        denom = torch.zeros((), dtype=acc, device=hidden.device)
        t, cap = opts["temperature"], opts["softcap"]
        offset = 0
        if pg is not None:
            rank, world = _vocab_parallel(pg)
            import torch.distributed as dist

            sizes = torch.tensor([v], device=hidden.device)
            all_sizes = [torch.zeros_like(sizes) for _ in range(world)]
            dist.all_gather(all_sizes, sizes, group=pg)
            offset = int(sum(int(s) for s in all_sizes[:rank]))
        cw = None if opts["class_weight"] is None else opts["class_weight"].to(acc)
        for a in range(0, n, chunk):
            b = min(n, a + chunk)
            hc = h32[a:b]
            z = hc @ w32.T
            if b32 is not None:
                z += b32
            th = None
            if cap is not None:
                z.div_(cap).tanh_()
                th = z.clone() if grad else None
                z.mul_(cap)
            if t != 1.0:
                z.div_(t)
            tc = target[a:b]
            if pg is None:
                out = ce_chunk(
                    z,
                    tc,
                    ignore_index=opts["ignore_index"],
                    label_smoothing=opts["label_smoothing"],
                    weight=cw,
                    z_loss=opts["z_loss"],
                    stats=opts["return_stats"],
                    grad=grad,
                )
            else:
                out = _vp_chunk(z, tc, offset, opts, pg, grad)
            losses[a:b] = out.loss
            lses[a:b] = out.lse
            if ents is not None and out.entropy is not None:
                ents[a:b] = out.entropy
            if out.correct is not None:
                accs[a:b] = out.correct
            denom += out.denom.sum()
            if grad:
                g = z.div_(t) if t != 1.0 else z  # chain rule of z / T
                if th is not None:
                    g.mul_(1 - th * th)  # d/dx c tanh(x / c) = 1 - tanh^2
                if gh is not None:
                    gh[a:b] = g @ w32
                if gw is not None:
                    gw.addmm_(g.T, hc)
                if gb is not None:
                    gb += g.sum(0)
        if pg is not None:
            import torch.distributed as dist

            if gh is not None:
                dist.all_reduce(gh, group=pg)  # each rank holds the part of dL/dh from its shard
        red = opts["reduction"]
        scale = _scale(red, denom)
        ctx.save_for_backward(gh, gw, gb, scale)
        ctx.red = red
        ctx.dtypes = (hidden.dtype, weight.dtype, None if bias is None else bias.dtype)
        loss = _reduce(losses, red, denom).to(hidden.dtype)
        if opts["return_stats"]:
            return loss, lses, ents, accs
        return loss

    @staticmethod
    def backward(ctx: Any, go: torch.Tensor, *rest: Any) -> tuple[Any, ...]:
        gh, gw, gb, scale = ctx.saved_tensors
        if ctx.red == "none":
            gof = go.to(scale.dtype)
            # per-token weights: rescale rows of grad_hidden; grad_weight needs them per token,
            # which the fused forward did not keep: only uniform grad_output is exact here.
            if gh is not None and not bool((gof == gof.flatten()[0]).all()):
                raise RuntimeError(
                    "linear_cross_entropy(reduction='none') supports only a uniform gradient of "
                    "the per-token losses (e.g. loss.sum() or loss.mean()); use 'sum' with "
                    "per-token weights folded into class weights instead"
                )
            f = gof.flatten()[0] if gof.numel() else torch.zeros((), dtype=scale.dtype)
        else:
            f = go.to(scale.dtype) * scale
        hd, wd, bd = ctx.dtypes
        return (
            None if gh is None else (gh * f).to(hd),
            None if gw is None else (gw * f).to(wd),
            None if gb is None else (gb * f).to(bd),
            None,
            None,
        )


def _vp_chunk(
    z: torch.Tensor, t: torch.Tensor, offset: int, opts: dict[str, Any], pg: Any, grad: bool
) -> Any:
    """Vocab-parallel block: this rank holds classes ``offset .. offset + V_local``."""
    import torch.distributed as dist

    from logitlab.torch._kernels import ChunkOut

    if opts["label_smoothing"] or opts["class_weight"] is not None or opts["z_loss"]:
        raise NotImplementedError(
            "vocab-parallel linear_cross_entropy supports plain CE and "
            "ignore_index (no smoothing, class weights or z-loss yet)"
        )
    vloc = z.shape[1]
    valid = t != opts["ignore_index"]
    local_t = t - offset
    mine = valid & (local_t >= 0) & (local_t < vloc)
    m = z.amax(1, keepdim=True)
    dist.all_reduce(m, op=dist.ReduceOp.MAX, group=pg)
    xt = torch.where(
        mine,
        z.gather(1, local_t.clamp(0, vloc - 1).unsqueeze(1)).squeeze(1),
        torch.zeros_like(m.squeeze(1)),
    )
    dist.all_reduce(xt, group=pg)
    z.sub_(m).exp_()
    s = z.sum(1, keepdim=True)  # includes exp(0) = 1 on the rank holding the maximum
    dist.all_reduce(s, group=pg)
    lse = m + torch.log(s)
    loss = torch.where(valid, lse.squeeze(1) - xt, torch.zeros_like(xt))
    if grad:
        z.div_(s)
        rows = mine.nonzero().squeeze(1)
        z[rows, local_t[rows]] -= 1.0
        z.masked_fill_(~valid.unsqueeze(1), 0.0)
    denom = valid.to(z.dtype)
    return ChunkOut(loss, lse.squeeze(1), None, None, denom)


def linear_cross_entropy(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    target: torch.Tensor,
    *,
    bias: torch.Tensor | None = None,
    ignore_index: int = -100,
    label_smoothing: float = 0.0,
    class_weight: torch.Tensor | None = None,
    z_loss: float = 0.0,
    softcap: float | None = None,
    temperature: float = 1.0,
    reduction: str = "mean",
    chunk_size: int | None = None,
    return_stats: bool = False,
    process_group: Any = None,
) -> Any:
    r"""Cross-entropy of ``hidden @ weight.T (+ bias)`` without materialising the N x V logits.

    Token chunks of ``chunk_size`` rows are multiplied by the weight, their loss and logit
    gradient computed in place (see the module docstring), and ``grad_hidden``, ``grad_weight``,
    ``grad_bias`` accumulated with matmuls inside the forward; the backward only scales them.

    Args:
        hidden: ``(N, d)`` activations.
        weight: ``(V, d)`` output embedding (or this rank's shard with ``process_group``).
        target: ``(N,)`` token ids.
        bias: optional ``(V,)``.
        ignore_index: tokens with this target are skipped.
        label_smoothing: :math:`\varepsilon`, spread over classes with a finite logit.
        class_weight: per-class weights ``(V,)`` (torch's ``weight``).
        z_loss: coefficient of :math:`\operatorname{lse}^2` (PaLM).
        softcap: :math:`c` of :math:`c \tanh(x / c)` (Gemma 2), with its exact gradient.
        temperature: divide the logits by ``T``.
        reduction: ``"mean"``, ``"sum"`` or ``"none"`` (``"none"``: backward supports a uniform
            gradient of the per-token losses, e.g. ``loss.sum()``).
        chunk_size: tokens per chunk (default: about 32 MiB of float32 logits).
        return_stats: also return per-token ``LossStats(lse, entropy, accuracy)``.
        process_group: vocab-parallel ``torch.distributed`` group (``weight`` sharded along V).

    Returns:
        The loss (in ``hidden``'s dtype), and ``LossStats`` with ``return_stats``.

    Raises:
        ValueError/TypeError: mismatched shapes, dtypes or devices (naming the argument), targets
            out of range.

    Example:
        >>> import torch
        >>> h, w = torch.randn(6, 8), torch.randn(11, 8)
        >>> y = torch.tensor([0, 3, 10, -100, 5, 5])
        >>> ref = torch.nn.functional.cross_entropy(h @ w.T, y)
        >>> torch.allclose(linear_cross_entropy(h, w, y, chunk_size=4), ref, atol=1e-6)
        True

    References:
        Wijmans et al. 2025; Hsu et al. 2024; Chowdhery et al. 2023; Gemma Team 2024;
        Shoeybi et al. 2019.
    """
    _check_common(reduction, label_smoothing, temperature)
    _check_linear(hidden, weight, target, bias)
    if softcap is not None and not softcap > 0:
        raise ValueError(f"softcap must be positive, got {softcap!r}")
    v_total = weight.shape[0]
    if process_group is not None:
        import torch.distributed as dist

        vt = torch.tensor([weight.shape[0]], device=hidden.device)
        dist.all_reduce(vt, group=process_group)
        v_total = int(vt)
    check_targets(target, v_total, ignore_index)
    if class_weight is not None and class_weight.shape != (weight.shape[0],):
        raise ValueError(
            f"class_weight must have shape ({weight.shape[0]},), got {tuple(class_weight.shape)}"
        )
    opts = dict(
        ignore_index=ignore_index,
        label_smoothing=float(label_smoothing),
        class_weight=class_weight,
        z_loss=float(z_loss),
        softcap=softcap,
        temperature=float(temperature),
        reduction=reduction,
        chunk_size=chunk_size,
        return_stats=return_stats,
        process_group=process_group,
    )
    if hidden.shape[0] == 0:
        loss = hidden.sum() * 0.0 + (weight.sum() * 0.0)
        if return_stats:
            e = hidden.new_zeros(0)
            return (loss if reduction != "none" else e), LossStats(e, e, e.bool())
        return loss if reduction != "none" else hidden.new_zeros(0)
    out = _LinearCE.apply(hidden, weight, bias, target, opts)
    if return_stats:
        loss, lse, ent, acc = out
        return loss, LossStats(lse, ent, acc)
    return out


class LinearCrossEntropy(torch.nn.Module):
    """Module form of :func:`linear_cross_entropy` (options fixed at construction).

    Example:
        >>> import torch
        >>> head = torch.nn.Linear(8, 11, bias=False)
        >>> lce = LinearCrossEntropy(label_smoothing=0.1)
        >>> h, y = torch.randn(5, 8, requires_grad=True), torch.randint(0, 11, (5,))
        >>> lce(h, head.weight, y).backward()
        >>> h.grad.shape
        torch.Size([5, 8])
    """

    def __init__(self, **options: Any) -> None:
        super().__init__()
        self.options = options

    def forward(
        self,
        hidden: torch.Tensor,
        weight: torch.Tensor,
        target: torch.Tensor,
        bias: torch.Tensor | None = None,
    ) -> Any:
        return linear_cross_entropy(hidden, weight, target, bias=bias, **self.options)


def linear_kl_divergence(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    *,
    teacher_logits: torch.Tensor | None = None,
    teacher_hidden: torch.Tensor | None = None,
    teacher_weight: torch.Tensor | None = None,
    temperature: float = 1.0,
    direction: str = "forward",
    reduction: str = "mean",
    chunk_size: int | None = None,
) -> torch.Tensor:
    r"""Distillation loss between a teacher and the student ``hidden @ weight.T``, chunked.

    ``direction="forward"``: :math:`\mathrm{KL}(p_T \| p_S)`; ``"reverse"``:
    :math:`\mathrm{KL}(p_S \| p_T)`, with :math:`p = \mathrm{softmax}(z / T)`, scaled by
    :math:`T^2` (Hinton et al. 2015). The teacher is given as logits or as its own hidden states
    and weight (then its logits are built one chunk at a time too). Gradients flow to the student
    (hidden and weight); the teacher is treated as constant.

    Example:
        >>> import torch
        >>> h, w, t = torch.randn(4, 6), torch.randn(9, 6), torch.randn(4, 9)
        >>> ref = torch.nn.functional.kl_div(torch.log_softmax(h @ w.T, -1),
        ...                                   torch.log_softmax(t, -1), log_target=True,
        ...                                   reduction="batchmean")
        >>> torch.allclose(linear_kl_divergence(h, w, teacher_logits=t), ref, atol=1e-6)
        True

    References:
        G. Hinton, O. Vinyals, J. Dean, "Distilling the knowledge in a neural network", 2015.
    """
    if direction not in ("forward", "reverse"):
        raise ValueError(f"direction must be 'forward' or 'reverse', got {direction!r}")
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
    if (teacher_logits is None) == (teacher_hidden is None or teacher_weight is None):
        raise ValueError("give teacher_logits, or teacher_hidden and teacher_weight")
    if not temperature > 0:
        raise ValueError(f"temperature must be positive, got {temperature!r}")
    n = hidden.shape[0]
    chunk = chunk_size or max(1, min(n, (8 << 20) // max(1, weight.shape[0])))
    parts = []
    for a in range(0, n, chunk):
        b = min(n, a + chunk)
        if teacher_logits is not None:
            teacher: tuple[Any, ...] = (teacher_logits[a:b],)
        else:
            assert teacher_hidden is not None
            teacher = (teacher_hidden[a:b], teacher_weight)
        # each chunk is checkpointed with its matmuls inside: student and teacher logits are
        # recomputed in backward, so no N x V tensor is ever kept
        parts.append(
            torch.utils.checkpoint.checkpoint(
                _kl_rows,
                hidden[a:b],
                weight,
                float(temperature),
                direction,
                *teacher,
                use_reentrant=False,
            )
        )
    kl = torch.cat(parts) * temperature**2
    if reduction == "none":
        return kl.to(hidden.dtype)
    total = kl.sum()
    return (total / max(1, n) if reduction == "mean" else total).to(hidden.dtype)


def _kl_rows(
    h: torch.Tensor, w: torch.Tensor, temperature: float, direction: str, *teacher: torch.Tensor
) -> torch.Tensor:
    from logitlab.losses import kl_divergence

    zs = (h @ w.T).float() / temperature
    with torch.no_grad():
        tz = teacher[0] if len(teacher) == 1 else teacher[0] @ teacher[1].T
        zt = tz.float() / temperature
    if direction == "forward":
        return kl_divergence(p_logits=zt, q_logits=zs)
    return kl_divergence(p_logits=zs, q_logits=zt)

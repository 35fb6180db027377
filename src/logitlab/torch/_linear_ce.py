"""Chunked fused linear + cross-entropy: the N x V logits never exist.

Per chunk of tokens the logits are formed by one GEMM into a reused float32 buffer, a native
kernel (:mod:`logitlab._rows.fused`) turns them into the loss, the statistics and the gradient
with respect to the logits, written over them; two more GEMMs then accumulate
``grad_hidden = G W`` and ``grad_weight += G^T h``. The backward only rescales the stored
gradients by the incoming scalar, so the whole step costs the three GEMMs of the naive version
(6 N d V FLOPs) plus two or three passes over the chunk, and the extra memory is one
``chunk x V`` buffer instead of several ``N x V`` tensors.

Plain float32 cross-entropy on CPU (with z-loss and statistics) forms short chunks (large
vocabularies) class-major, ``z^T = W h^T``, which MKL computes faster there, and uses the column
kernel ``ce_cols``; longer chunks and the other options use token-major chunks and the row
kernel ``ce_rows`` (see :func:`_class_major`).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import array_api_compat.torch as torch_xp
import torch

# isort: split
from logitlab._checks import CEOptions, ce_options, check_class_indices, check_positive_int
from logitlab._config import current
from logitlab._rows.fused import RowOut, ce_cols, ce_rows, native_available
from logitlab.torch._common import (
    LinearCEConfig,
    check_float,
    check_same_device,
    check_target,
    empty_scratch,
    head_logits,
)
from logitlab.torch._graph_grads import ce_dlogits, head_graph_grads

__all__ = ["LinearCEStats", "linear_cross_entropy", "default_chunk_size"]

_HALF = (torch.float16, torch.bfloat16)
# Bytes of the float32 chunk buffer. On CPU the GEMMs reach full speed only from ~512-1024
# tokens per chunk (measured: 2048x512x128256 runs at ~110 GFLOP/s with 256-token chunks and
# ~150-170 with 1024); 256 MiB keeps the buffer a small fraction of the naive N x V tensors and
# constant in V once V > 64k (the chunk shrinks as V grows). Fewer, larger chunks also mean fewer
# read-modify-write passes over grad_weight (one per chunk): interleaved on 4096x1024x32000,
# 1536-token chunks tied with PyTorch's compact path where 1024-token chunks were 5-8% slower.
_BUFFER_BYTES = 256 * 2**20
_MAX_CHUNK = 1536
# LOGITLAB_CHUNK_LAYOUT (read per call, see logitlab._config): "auto", class-major chunks
# (z^T = W h^T, see _class_major) for chunks of at most _COLS_MAX_CHUNK tokens where the native
# kernel takes them, token-major otherwise; "cols": class-major wherever the native kernel takes
# them; "rows": token-major chunks and the row kernel always (the tests run "cols" and "rows").
_COLS_MAX_CHUNK = 768


class LinearCEStats(NamedTuple):
    """Per-token statistics returned with ``return_stats=True`` (shape of ``target``)."""

    lse: torch.Tensor
    """log-sum-exp of the final logits (after softcap and temperature), float32 (float64 for
    float64 inputs)."""
    entropy: torch.Tensor
    """entropy of the predicted distribution, float32 (float64 for float64 inputs)."""
    correct: torch.Tensor
    """``argmax == target`` (first maximum, as :func:`torch.argmax`), bool; False if ignored."""


def default_chunk_size(n_tokens: int, vocab: int) -> int:
    """Tokens per chunk: a float32 buffer of at most 256 MiB and at most 1536 tokens, the tokens
    split into equal chunks (a multiple of 64) rather than full chunks plus a small remainder,
    whose GEMMs would run slower.

    Example:
        >>> from logitlab.torch import default_chunk_size
        >>> [default_chunk_size(4096, 32000), default_chunk_size(2048, 32000)]
        [1408, 1024]
        >>> default_chunk_size(4096, 128256)
        512
        >>> default_chunk_size(10, 97)
        10
    """
    c_max = max(64, min(_MAX_CHUNK, _BUFFER_BYTES // (4 * max(vocab, 1)) // 64 * 64))
    if n_tokens <= c_max:
        return max(1, n_tokens)
    k = -(-n_tokens // c_max)  # number of chunks
    per = -(-n_tokens // k)
    return min(c_max, -(-per // 64) * 64)


def _vocab_layout(weight: torch.Tensor, group: Any) -> tuple[int, int]:
    """(offset of this rank's shard, total vocabulary) for a weight sharded along V."""
    if group is None:
        return 0, weight.shape[0]
    import torch.distributed as dist

    sizes = torch.zeros(dist.get_world_size(group), dtype=torch.int64)
    mine = torch.tensor([weight.shape[0]], dtype=torch.int64)
    parts = list(sizes.chunk(sizes.numel()))
    dist.all_gather(parts, mine, group=group)
    sizes = torch.cat(parts)
    rank = dist.get_rank(group)
    return int(sizes[:rank].sum()), int(sizes.sum())


def _near_certain_rows(
    r: RowOut,
    h: torch.Tensor,
    w: torch.Tensor,
    b: torch.Tensor | None,
    t: torch.Tensor,
    i: int,
    j: int,
    o: CEOptions,
) -> None:
    """Redo, with the row kernel, the rows of a class-major chunk whose loss is below 2^-80.

    The class-major kernel's exp flushes terms below e^-87 (float32's normal range), harmless
    beside any loss above ~1e-24 but not on a near-certain row (the loss of [88, 0 x 8] read 0
    instead of 4.8e-38). Such rows (every other class some 55 nats down) are rare: their logits
    are formed again, one row each, for the loss, lse and entropy; their gradient entries are
    below the normal range either way.
    """
    tiny = (r.loss < 2.0**-80) & (t[i:j] != o.ignore_index)
    if not bool(tiny.any()):
        return
    idx = tiny.nonzero().squeeze(1)
    hc = h[i:j][idx].float()
    z = head_logits(hc, w.float(), None if b is None else b.float())
    again = ce_rows(
        z, t[i:j][idx], ignore_index=o.ignore_index, z_loss=o.z_loss, stats=r.entropy is not None
    )
    r.loss[idx] = again.loss
    r.lse[idx] = again.lse
    if r.entropy is not None and again.entropy is not None:
        r.entropy[idx] = again.entropy


def _class_major(h: torch.Tensor, cfg: LinearCEConfig, chunk: int) -> bool:
    """Whether chunks of ``chunk`` tokens are formed class-major, ``z^T = W h^T`` (classes x
    tokens), rather than token-major, ``z = h W^T``.

    For short chunks MKL runs the class-major product faster (512-token chunks of
    2048x512x128256: 77.3 against 72.6 GFLOP/s on a 2-core VM, benchmarks/gemm_shapes.py; the
    grad GEMMs run at the same speed either way) and the column kernel (``ce_cols``) matches
    the row kernel. For longer chunks the two products are within 2% (1408x1024x32000: 79.6
    and 80.9 GFLOP/s) and the row kernel, since it was specialised for the plain
    case and prefetches the next row, is the faster kernel. Paired full steps against PyTorch's
    compact path (benchmarks/ab_linear_ce.py, class-major vs token-major): 2048x512x128256
    (512-token chunks) 0.968 vs 0.994; 2048x512x32000 (1024) 0.994 vs 0.967 and 1.000 vs 0.965;
    2048x512x64000 (1024) 1.000 vs 0.977; 4096x1024x32000 (1408) 1.006 vs 0.998. Hence
    class-major up to ``_COLS_MAX_CHUNK`` = 768 tokens, between the two measured regimes.
    It covers plain cross-entropy with z-loss and the statistics; softcap, temperature,
    smoothing, half inputs and vocab-parallel shards keep token-major chunks.
    """
    if cfg.layout == "rows" or (cfg.layout == "auto" and chunk > _COLS_MAX_CHUNK):
        return False
    return (
        h.dtype == torch.float32
        and h.device.type == "cpu"
        and cfg.group is None
        and cfg.loss.softcap is None
        and cfg.loss.temperature == 1.0
        and cfg.loss.label_smoothing == 0.0
        and native_available()
    )


def _run(
    h: torch.Tensor,
    w: torch.Tensor,
    b: torch.Tensor | None,
    t: torch.Tensor,
    cfg: LinearCEConfig,
    gs: torch.Tensor | None,
    need: tuple[bool, bool, bool],
) -> tuple[Any, ...]:
    """Loop over token chunks. ``gs`` (one gradient factor per token) or None for no gradient."""
    n, d = h.shape
    v = w.shape[0]
    dt = h.dtype
    cdt = _compute_dtype(dt)
    c = cfg.chunk_size or default_chunk_size(n, v)
    group, offset = cfg.group, cfg.offset
    stats = cfg.stats
    loss = torch.empty(n, dtype=cdt, device=h.device)
    lse = torch.empty(n, dtype=cdt, device=h.device)
    ent = torch.empty(n, dtype=cdt, device=h.device) if stats else None
    amax = torch.empty(n, dtype=torch.int64, device=h.device) if stats else None
    grads = gs is not None
    gh = empty_scratch(tuple(h.shape), dt, h.device) if grads and need[0] else None
    # float32 accumulators for half weights: the sum over chunks must not round at every step.
    # Not zero-filled: the first chunk's GEMM writes it (beta = 0), which saves a pass over V x d.
    gw = empty_scratch(tuple(w.shape), cdt, w.device) if grads and need[1] else None
    gw_empty = True
    gb = torch.zeros(v, dtype=cdt, device=w.device) if grads and need[2] and b is not None else None
    rows_per_chunk = min(c, max(n, 1))
    cols = _class_major(h, cfg, rows_per_chunk)
    buf = empty_scratch((rows_per_chunk * v,), cdt, h.device)
    wt = w.t()
    o = cfg.loss
    for i in range(0, n, c):
        j = min(i + c, n)
        hc = h[i:j]
        g_rows = gs[i:j] if gs is not None else None
        if cols:
            zt = buf[: (j - i) * v].view(v, j - i)
            if b is None:
                torch.mm(w, hc.t(), out=zt)
            else:
                torch.addmm(b.unsqueeze(1), w, hc.t(), out=zt)
            r = ce_cols(
                zt, t[i:j], ignore_index=o.ignore_index, grad_scale=g_rows, z_loss=o.z_loss,
                stats=stats,
            )  # fmt: skip
            _near_certain_rows(r, h, w, b, t, i, j, o)
            z = zt.t()  # tokens x classes, like the token-major buffer
        else:
            z = buf[: (j - i) * v].view(j - i, v)
            if dt == cdt:
                if b is None:
                    torch.mm(hc, wt, out=z)
                else:
                    torch.addmm(b, hc, wt, out=z)
            else:
                # the GEMM runs (and rounds) in the input dtype, exactly like F.linear
                z.copy_(torch.mm(hc, wt) if b is None else torch.addmm(b, hc, wt))
            r = ce_rows(
                z, t[i:j], ignore_index=o.ignore_index, grad_scale=g_rows,
                temperature=o.temperature, softcap=o.softcap,
                label_smoothing=o.label_smoothing, z_loss=o.z_loss,
                stats=stats, group=group, offset=offset,
            )  # fmt: skip
        loss[i:j] = r.loss
        lse[i:j] = r.lse
        if stats:
            assert ent is not None and amax is not None and r.entropy is not None
            ent[i:j] = r.entropy
            amax[i:j] = r.argmax if r.argmax is not None else 0
        if not grads:
            continue
        g = z if dt == cdt else z.to(dt)
        if gh is not None:
            if dt == cdt:
                torch.mm(g, w, out=gh[i:j])
            else:
                gh[i:j] = torch.mm(g, w)
        if gw is not None:
            if dt == cdt:
                if gw_empty:
                    torch.mm(g.t(), hc, out=gw)
                else:
                    gw.addmm_(g.t(), hc)
            elif gw_empty:
                gw.copy_(torch.mm(g.t(), hc))
            else:
                gw.add_(torch.mm(g.t(), hc))
            gw_empty = False
        if gb is not None:
            gb.add_(z.sum(0))
    if gw is not None and gw_empty:
        gw.zero_()
    if gh is not None and group is not None:
        import torch.distributed as dist

        # each rank holds the contribution of its vocabulary shard: d loss / d h = sum over shards
        dist.all_reduce(gh, group=group)
    return loss, lse, ent, amax, gh, gw, gb


def _compute_dtype(dt: torch.dtype) -> torch.dtype:
    """float64 stays float64 end to end (gradcheck); every other dtype is computed in float32."""
    return torch.float64 if dt == torch.float64 else torch.float32


def _token_scale(
    t: torch.Tensor, ignore_index: int, reduction: str, dtype: torch.dtype
) -> torch.Tensor:
    """Per-token gradient factor (1 / #valid for "mean") in the compute dtype: built in float32,
    1 / 37 would carry its 3e-9 relative rounding into every float64 gradient."""
    valid = (t != ignore_index).to(dtype)
    if reduction == "mean":
        # an all-ignored batch: mean 0 and zero gradient instead of torch's 0/0
        valid = valid / valid.sum().clamp_min(1.0)
    return valid


class _LinearCE(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        h: torch.Tensor,
        w: torch.Tensor,
        b: torch.Tensor | None,
        t: torch.Tensor,
        cfg: LinearCEConfig,
    ) -> tuple[torch.Tensor, ...]:
        need = (ctx.needs_input_grad[0], ctx.needs_input_grad[1], ctx.needs_input_grad[2])
        red = cfg.loss.reduction
        early = any(need) and red != "none"
        cdt = _compute_dtype(h.dtype)
        gs = _token_scale(t, cfg.loss.ignore_index, red, cdt) if early else None
        loss, lse, ent, amax, gh, gw, gb = _run(h, w, b, t, cfg, gs, need)
        valid = t != cfg.loss.ignore_index
        if red == "mean":
            out = loss.sum() / valid.sum().clamp_min(1).to(loss.dtype)
        elif red == "sum":
            out = loss.sum()
        else:
            out = loss
        out = out.to(h.dtype)
        ctx.cfg = cfg
        ctx.grads = [gh, gw, gb] if early else None
        ctx.dtypes = (h.dtype, w.dtype, None if b is None else b.dtype)
        if any(need):
            ctx.save_for_backward(h, w, b, t)
        if cfg.stats:
            assert ent is not None and amax is not None
            correct = (amax == t) & valid
            ctx.mark_non_differentiable(lse, ent, correct)
            return out, lse.to(cdt), ent.to(cdt), correct
        return (out,)

    @staticmethod
    def backward(ctx: Any, g_out: torch.Tensor, *_: Any) -> tuple[Any, ...]:
        need = ctx.needs_input_grad[:3]
        if torch.is_grad_enabled() and any(need):
            # create_graph=True: the chunk gradients are constants to autograd; recompute them
            # as a differentiable expression of h, W, b and g_out (see _graph_grads)
            ctx.grads = None
            h, w, b, t = ctx.saved_tensors
            chunk = ctx.cfg.chunk_size or default_chunk_size(h.shape[0], w.shape[0])
            gh, gw, gb = head_graph_grads(h, w, b, need, chunk, ce_dlogits(t, ctx.cfg, g_out))
            return gh, gw, gb, None, None
        if ctx.grads is not None:
            grads, ctx.grads = ctx.grads, None
            g = g_out.to(_compute_dtype(ctx.dtypes[0]))
        else:
            # reduction="none", or a second backward through the same graph (retain_graph,
            # gradcheck): the gradients were handed over, so recompute them chunk by chunk
            h, w, b, t = ctx.saved_tensors
            cdt = _compute_dtype(h.dtype)
            red = ctx.cfg.loss.reduction
            scale = _token_scale(t, ctx.cfg.loss.ignore_index, red, cdt)
            gs = scale * (g_out.reshape(-1) if red == "none" else g_out).to(cdt)
            grads = list(_run(h, w, b, t, ctx.cfg, gs, tuple(need))[4:])
            g = None
        out: list[Any] = []
        for k, (gr, dt) in enumerate(zip(grads, ctx.dtypes, strict=True)):
            if gr is None or not need[k]:
                out.append(None)
                continue
            if g is not None and (g.device.type != "cpu" or float(g) != 1.0):
                # the stored gradients are ours alone: scale in place, no second V x d buffer
                gr = gr.mul_(g.to(gr.dtype))
            out.append(gr if gr.dtype == dt else gr.to(dt))
        return out[0], out[1], out[2], None, None


@torch.compiler.disable
def linear_cross_entropy(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    target: torch.Tensor,
    *,
    bias: torch.Tensor | None = None,
    ignore_index: int = -100,
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
    softcap: float | None = None,
    temperature: float = 1.0,
    reduction: str = "mean",
    chunk_size: int | None = None,
    return_stats: bool = False,
    process_group: Any = None,
) -> Any:
    r"""Cross-entropy of ``softmax(y)`` with ``y = softcap(hidden @ weight.T + bias) / T``, chunked.

    For token :math:`n` with target :math:`t`, logits
    :math:`y = \operatorname{softcap}(W h_n + b) / T` where
    :math:`\operatorname{softcap}(x) = c \tanh(x / c)` (identity when ``softcap`` is None),
    :math:`\operatorname{lse} = \log \sum_c e^{y_c}` and :math:`F` the classes with finite
    :math:`y`:

    .. math::

        \ell_n = (1 - \varepsilon)(\operatorname{lse} - y_t)
            + \frac{\varepsilon}{|F|} \sum_{c \in F} (\operatorname{lse} - y_c)
            + \zeta \operatorname{lse}^2,

    and :math:`\partial \ell_n / \partial y = (1 + 2\zeta\,\operatorname{lse})\,p - q` with
    :math:`p = \operatorname{softmax}(y)`, :math:`q` the smoothed one-hot target. The chain rule
    multiplies by :math:`\operatorname{sech}^2(x/c) / T` (formed as :math:`4e / (1 + e)^2`,
    :math:`e = e^{-2|x/c|}`, without the cancellation of :math:`1 - \tanh^2`; the temperature
    divides the differences :math:`\max y - y_c`, not the logits). This gradient is computed
    inside the forward, chunk by chunk, and folded into ``grad_hidden`` and ``grad_weight`` by
    GEMMs: the :math:`N \times V` logits are never stored and the backward only rescales.

    ``reduction="mean"`` divides by the number of non-ignored tokens; an all-ignored (or empty)
    batch gives 0 and zero gradients. ``reduction="none"`` recomputes the chunks in the backward
    (the per-token upstream gradient is needed before accumulating ``grad_weight``).

    **Higher-order derivatives.** With ``create_graph=True`` the backward recomputes the
    gradients chunk by chunk as a differentiable expression of ``hidden``, ``weight`` and ``bias``
    (the same closed form, from the core's exact softmax and log-sum-exp Functions), so double
    backward, gradient penalties and Hessian-vector products are exact; the graph then holds
    each chunk's logits, like an unfused loss. With ``process_group`` this is not supported (the
    statistics are all-reduced outside autograd) and raises a ``RuntimeError``.

    Args:
        hidden: ``(..., d)`` activations (float16/bfloat16/float32/float64).
        weight: ``(V, d)`` projection (``V`` = this rank's shard with ``process_group``), same
            dtype and device as ``hidden``.
        target: ``(...)`` integer class indices (global indices with ``process_group``).
        bias: optional ``(V,)`` bias.
        ignore_index: target value that contributes nothing.
        label_smoothing: :math:`\varepsilon`, spread over the classes with finite logits.
        z_loss: :math:`\zeta`, coefficient of the PaLM auxiliary loss :math:`\operatorname{lse}^2`.
        softcap: :math:`c` of Gemma 2's logit soft-capping, or None.
        temperature: :math:`T > 0` dividing the (capped) logits.
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.
        chunk_size: tokens per chunk (default: :func:`default_chunk_size`, a float32 buffer of
            at most 256 MiB). Results agree across
            chunk sizes to float32 rounding of the GEMMs.
        return_stats: also return per-token :class:`LinearCEStats` (``lse``, ``entropy``,
            ``correct``), computed in the same pass.
        process_group: a ``torch.distributed`` group over which ``weight`` (and ``bias``) are
            sharded along V (Megatron-style); ranks hold identical ``hidden`` and ``target``.
            Loss and gradients equal the unsharded computation; ``grad_hidden`` is all-reduced.

    Accuracy (tested against mpmath, docs/torch.md): per-token loss within
    :math:`4 + \bar d / 2` ulps and each logit's gradient within :math:`4 + d_c / 2` ulps of its
    size, :math:`d_c` the distance of class :math:`c` below the row maximum; float64 is float64
    end to end.

    Returns:
        The loss in ``hidden``'s dtype (scalar, or shaped like ``target`` for ``"none"``), or
        ``(loss, LinearCEStats)`` with ``return_stats=True``.

    Raises:
        TypeError: non-tensor inputs, non-floating ``hidden``/``weight``/``bias``, non-integer
            ``target``, or ``hidden``/``weight``/``bias`` dtypes that differ.
        ValueError: shapes that do not fit (``hidden``'s last dim vs ``weight``'s second,
            ``target`` vs ``hidden``), devices that differ, a ``target`` outside ``[0, V)`` that is
            not ``ignore_index``, or bad option values.
        RuntimeError: (in the backward) ``create_graph=True`` with ``process_group``.

    Example:
        >>> import torch
        >>> import torch.nn.functional as F
        >>> from logitlab.torch import linear_cross_entropy
        >>> g = torch.Generator().manual_seed(0)
        >>> h = torch.randn(6, 8, generator=g, requires_grad=True)
        >>> w = torch.randn(11, 8, generator=g, requires_grad=True)
        >>> t = torch.tensor([1, 5, -100, 10, 0, 3])
        >>> loss = linear_cross_entropy(h, w, t, chunk_size=4)
        >>> ref = F.cross_entropy(F.linear(h, w), t)
        >>> bool(torch.allclose(loss, ref))
        True
        >>> loss.backward()
        >>> bool(torch.allclose(h.grad, torch.autograd.grad(ref, h)[0], atol=1e-6))
        True

    References:
        E. Wijmans et al., "Cut Your Losses in Large-Vocabulary Language Models", ICLR 2025.
        P.-L. Hsu et al., "Liger Kernel: Efficient Triton Kernels for LLM Training", 2024.
        A. Chowdhery et al., "PaLM: Scaling Language Modeling with Pathways", 2022 (z-loss).
        Gemma Team, "Gemma 2: Improving Open Language Models at a Practical Size", 2024
        (logit soft-capping).
        M. Shoeybi et al., "Megatron-LM: Training Multi-Billion Parameter Language Models Using
        Model Parallelism", 2019 (vocabulary-parallel cross-entropy).
    """
    opts = ce_options(
        ignore_index=ignore_index,
        label_smoothing=label_smoothing,
        temperature=temperature,
        reduction=reduction,
        z_loss=z_loss,
        softcap=softcap,
    )
    chunk = check_positive_int(chunk_size, "chunk_size")
    check_float(hidden, "hidden")
    check_float(weight, "weight")
    check_target(target)
    if weight.dim() != 2:
        raise ValueError(f"weight must be 2-D (V, d), got shape {tuple(weight.shape)}")
    if hidden.dim() < 1 or hidden.shape[-1] != weight.shape[1]:
        raise ValueError(
            f"hidden's last dimension ({hidden.shape[-1] if hidden.dim() else None}) must equal "
            f"weight's second dimension ({weight.shape[1]})"
        )
    if tuple(target.shape) != tuple(hidden.shape[:-1]):
        raise ValueError(
            f"target shape {tuple(target.shape)} must equal hidden's leading shape "
            f"{tuple(hidden.shape[:-1])}"
        )
    if weight.dtype != hidden.dtype:
        raise TypeError(f"weight dtype {weight.dtype} differs from hidden dtype {hidden.dtype}")
    if bias is not None:
        check_float(bias, "bias")
        if bias.dtype != hidden.dtype:
            raise TypeError(f"bias dtype {bias.dtype} differs from hidden dtype {hidden.dtype}")
        if tuple(bias.shape) != (weight.shape[0],):
            raise ValueError(f"bias must have shape ({weight.shape[0]},), got {tuple(bias.shape)}")
    check_same_device(hidden, weight, "weight", "hidden")
    check_same_device(hidden, target, "target", "hidden")
    check_same_device(hidden, bias, "bias", "hidden")
    offset, vocab = _vocab_layout(weight, process_group)
    check_class_indices(torch_xp, target, vocab, opts.ignore_index)
    h2 = hidden.reshape(-1, hidden.shape[-1])
    if h2.stride(-1) != 1:
        h2 = h2.contiguous()
    t2 = target.reshape(-1)
    cfg = LinearCEConfig(
        loss=opts,
        chunk_size=chunk,
        stats=bool(return_stats),
        group=process_group,
        offset=offset,
        layout=current().chunk_layout,
    )
    w2 = weight if weight.stride(-1) == 1 else weight.contiguous()
    outs = _LinearCE.apply(h2, w2, bias, t2, cfg)
    loss = outs[0]
    if opts.reduction == "none":
        loss = loss.reshape(target.shape)
    if not return_stats:
        return loss
    shp = target.shape
    return loss, LinearCEStats(outs[1].reshape(shp), outs[2].reshape(shp), outs[3].reshape(shp))

"""In-memory fused cross-entropy: loss and gradient from one visit of each row of the logits."""

from __future__ import annotations

import math
from typing import Any

import array_api_compat.torch as torch_xp
import torch

# isort: split
from logitlab._checks import CEOptions, ce_options, check_class_indices, normalize_axis
from logitlab._rows.fused import RowOut, ce_grad_rows, ce_rows, native_available
from logitlab.torch._ce_grads import ce_grads
from logitlab.torch._common import (
    check_float,
    check_same_device,
    check_target,
    empty_scratch,
)

__all__ = ["cross_entropy", "fused_cross_entropy"]


def _rows(x: torch.Tensor, axis: int) -> torch.Tensor:
    """(rows, classes) view of ``x`` with the class axis last (a copy only if it is not)."""
    x = x.movedim(axis, -1) if x.dim() > 1 else x.unsqueeze(0)
    x2 = x.reshape(-1, x.shape[-1])
    return x2 if x2.stride(-1) == 1 else x2.contiguous()


# The one-pass backward forms exp(z / T - lse) from the float32 lse saved by the forward. Its
# rounding, half an ulp of |lse| (at most |lse| / 2 float32 ulps), enters every gradient entry:
# up to 32 ulps below this bound, the order of the |d| / 2 ulps that rounding z - max costs any
# float32 softmax 64 nats down; 5e-4 relative for logits of 1e4. Batches with a larger |lse|
# take the row kernel (ce_rows), which forms p = exp(-d) / (1 + s) within the row.
_ONE_PASS_MAX_LSE = 64.0


def _lse_small(lse: torch.Tensor) -> bool:
    """Whether the one-pass backward (native, CPU only) may use this saved lse."""
    if lse.device.type != "cpu":
        return False
    fin = lse[torch.isfinite(lse)]
    return fin.numel() == 0 or float(fin.abs().max()) <= _ONE_PASS_MAX_LSE


def _rows_of(
    z: torch.Tensor,
    t: torch.Tensor,
    opts: CEOptions,
    w: torch.Tensor | None,
    scale: torch.Tensor | None,
) -> RowOut:
    """:func:`~logitlab._rows.fused.ce_rows` of ``z`` with this loss's options."""
    return ce_rows(
        z, t, ignore_index=opts.ignore_index, class_weight=w, grad_scale=scale,
        temperature=opts.temperature, label_smoothing=opts.label_smoothing,
    )  # fmt: skip


class _CE(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        logits: torch.Tensor,
        x: torch.Tensor,
        t: torch.Tensor,
        w: torch.Tensor | None,
        opts: CEOptions,
        axis: int,
        inplace_backward: bool,
    ) -> torch.Tensor:
        red = opts.reduction
        ctx.dtype_out = logits.dtype
        cdt = torch.float64 if x.dtype == torch.float64 else torch.float32
        valid = t != opts.ignore_index
        if w is None:
            wt = valid.to(cdt)
        else:
            wt = torch.where(valid, w.to(cdt)[torch.where(valid, t, 0)], 0.0)
        total = wt.sum()
        denom = total.clamp_min(torch.finfo(cdt).tiny)
        inplace = inplace_backward and x.dtype == cdt and x.data_ptr() == logits.data_ptr()
        ctx.inplace = inplace
        ctx.consumed = False
        ctx.opts = opts
        ctx.weight = w
        ctx.shape = (logits.shape, axis)
        need = ctx.needs_input_grad[0]
        if red == "mean":
            # the mean of an all-ignored batch is 0 (not 0/0): every row scale is 0 then
            gs = valid.to(cdt) / denom if bool(total > 0) else torch.zeros_like(wt)
        else:
            gs = valid.to(cdt)
        # one-pass backward from the saved lse (native kernel, no smoothing): the forward only
        # reads the logits and the backward writes the gradient once, into a fresh buffer or,
        # with inplace_backward, over the logits
        one_pass = (
            opts.label_smoothing == 0.0
            and x.dtype == torch.float32
            and x.device.type == "cpu"
            and native_available()
        )
        if need and red != "none" and not inplace and not one_pass:
            # gradient into a fresh buffer (which becomes the returned gradient itself)
            buf = x.to(cdt, copy=True)
            r = _rows_of(buf, t, opts, w, gs)
            ctx.grad = buf
            ctx.prebuilt = True
        else:
            # read-only visit: the native kernel leaves x untouched when no gradient is requested;
            # the torch one leaves x / T in its buffer, which must then not be the caller's logits
            xin = x if x.dtype == cdt else x.to(cdt)
            native = x.dtype == torch.float32 and x.device.type == "cpu" and native_available()
            if xin is x and opts.temperature != 1.0 and not native:
                xin = x.clone()
            r = _rows_of(xin, t, opts, w, None)
            ctx.grad = None
            ctx.prebuilt = False
        ctx.red = red
        loss = r.loss
        if red == "mean":
            out = loss.sum() / denom if bool(total > 0) else loss.sum() * 0.0
        elif red == "sum":
            out = loss.sum()
        else:
            out = loss
        out = out.to(logits.dtype)
        if need or ctx.needs_input_grad[3]:
            # logits (the graph-connected input) and the output serve the differentiable
            # backward of create_graph=True and the class weights' gradient; not with
            # inplace_backward, whose backward overwrites the logits (and refuses create_graph)
            keep = None if inplace else logits
            ctx.save_for_backward(x, t, gs, r.lse, keep, w, out)
        return out

    @staticmethod
    def backward(ctx: Any, g_out: torch.Tensor) -> tuple[Any, ...]:
        need_x, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[3]
        if not (need_x or need_w):
            return None, None, None, None, None, None, None
        if torch.is_grad_enabled():
            # create_graph=True: the kernels' gradient is a constant to autograd, so the
            # gradient is recomputed with the core's differentiable closed form instead
            return _CE.graph_backward(ctx, g_out)
        g = gw = None
        if need_w:
            gw = _CE.weight_grad(ctx, g_out)
        if need_x:
            g = _CE.logit_grad(ctx, g_out)
        return g, None, None, gw, None, None, None

    @staticmethod
    def logit_grad(ctx: Any, g_out: torch.Tensor) -> torch.Tensor:
        """First-order gradient w.r.t. the logits from the kernels (no graph)."""
        shape, axis = ctx.shape
        if ctx.grad is not None:
            g, ctx.grad = ctx.grad, None
            # loss.backward() passes exactly 1: skip a full pass over the gradient (CPU only,
            # where reading the value costs no device synchronisation)
            if g_out.device.type != "cpu" or g_out.numel() != 1 or float(g_out) != 1.0:
                g.mul_(g_out.to(g.dtype))
        else:
            if ctx.inplace and ctx.consumed:
                raise RuntimeError(
                    "cross_entropy: backward called twice with inplace_backward=True; the first "
                    "one overwrote the logits with their gradient"
                )
            ctx.consumed = True
            x, t, gs, lse = ctx.saved_tensors[:4]
            cdt = gs.dtype
            # A second backward (retain_graph) after the forward built the gradient scales it
            # the same way, (grad * gs) * g_out, so that both give the same bits.
            late = ctx.prebuilt and ctx.red != "none"
            if late or ctx.red != "none":
                scale = gs if late else gs * g_out.to(cdt)
            else:
                scale = gs * g_out.reshape(-1).to(cdt)
            # inplace_backward: the gradient overwrites the logits buffer, no second N x V tensor
            opts, w = ctx.opts, ctx.weight
            g = x if ctx.inplace else empty_scratch(tuple(x.shape), cdt, x.device)
            one_pass = (
                opts.label_smoothing == 0.0
                and _lse_small(lse)
                and ce_grad_rows(
                    g,
                    x,
                    t,
                    lse,
                    scale,
                    ignore_index=opts.ignore_index,
                    class_weight=w,
                    temperature=opts.temperature,
                )
            )
            if not one_pass:
                if not ctx.inplace:
                    g.copy_(x)
                _rows_of(g, t, opts, w, scale)
            if late and (g_out.device.type != "cpu" or float(g_out) != 1.0):
                g.mul_(g_out.to(g.dtype))
            if ctx.inplace:
                # The kernels write through a raw pointer, which autograd does not see. Count
                # it as the in-place write it is: a node that saved these logits and runs after
                # this one (a second loss on the same logits) then raises autograd's "modified
                # by an inplace operation" instead of differentiating the gradient's values.
                torch.autograd.graph.increment_version(x)
        # back to the caller's layout: (rows, C) -> moved shape -> original axis order
        if len(shape) > 1:
            moved = list(shape)
            c = moved.pop(axis)
            g = g.reshape(*moved, c).movedim(-1, axis)
        else:
            g = g.reshape(shape)
        return g.to(ctx.dtype_out) if g.dtype != ctx.dtype_out else g

    @staticmethod
    def core_grads(
        ctx: Any, g_out: torch.Tensor, logits: torch.Tensor, need: tuple[bool, bool, bool]
    ) -> tuple[Any, Any]:
        """(d/d logits, d/d weight) by the core's differentiable formulas
        (:func:`logitlab.torch._ce_grads.ce_grads`), in the caller's layout."""
        shape, axis = ctx.shape
        _, t, _, _, _, w, out = ctx.saved_tensors
        x = logits if logits.dtype in (torch.float32, torch.float64) else logits.float()
        x = x.movedim(axis, -1)
        opts = ctx.opts
        gx, _, gw = ce_grads(
            x,
            t.reshape(x.shape[:-1]),
            w,
            g_out.reshape(x.shape[:-1]) if ctx.red == "none" else g_out,
            out,
            ignore_index=opts.ignore_index,
            label_smoothing=opts.label_smoothing,
            reduction=ctx.red,
            temperature=opts.temperature,
            need=need,
        )
        if gx is not None:
            # rows the forward gives NaN (a +inf or NaN maximum, not ignored): NaN gradient, as
            # the kernels' first-order one
            top = x.detach().amax(-1, keepdim=True)
            bad = ~(top < math.inf) & (t.reshape(x.shape[:-1]) != opts.ignore_index).unsqueeze(-1)
            gx = torch.where(bad, math.nan, gx).movedim(-1, axis).to(ctx.dtype_out)
        if gw is not None:
            gw = gw.to(w.dtype)
        return gx, gw

    @staticmethod
    def weight_grad(ctx: Any, g_out: torch.Tensor) -> torch.Tensor:
        """First-order gradient w.r.t. the class weights (a tensor op pass over the logits)."""
        x = ctx.saved_tensors[0]
        shape, axis = ctx.shape
        moved = list(shape)
        c = moved.pop(axis) if len(shape) > 1 else shape[0]
        logits = x.reshape(*moved, c).movedim(-1, axis) if len(shape) > 1 else x.reshape(shape)
        return _CE.core_grads(ctx, g_out, logits, (False, False, True))[1]

    @staticmethod
    def graph_backward(ctx: Any, g_out: torch.Tensor) -> tuple[Any, ...]:
        if ctx.inplace:
            raise RuntimeError(
                "cross_entropy(inplace_backward=True) cannot build the graph of its gradient "
                "(create_graph=True): its backward overwrites the logits with their gradient. "
                "Use inplace_backward=False (the default) for double backward, gradient "
                "penalties or Hessian-vector products."
            )
        ctx.grad = None  # the kernels' buffer is not used: free it
        logits = ctx.saved_tensors[4]
        need = (ctx.needs_input_grad[0], False, ctx.needs_input_grad[3])
        gx, gw = _CE.core_grads(ctx, g_out, logits, need)
        return gx, None, None, gw, None, None, None


@torch.compiler.disable
def cross_entropy(
    logits: torch.Tensor,
    target: torch.Tensor,
    axis: int = -1,
    ignore_index: int = -100,
    label_smoothing: float = 0.0,
    weight: torch.Tensor | None = None,
    reduction: str = "mean",
    temperature: float = 1.0,
    *,
    inplace_backward: bool = False,
) -> torch.Tensor:
    r"""Cross-entropy of class targets with the gradient formed in the same visit of each row.

    With :math:`z = x / T`, row max :math:`a` (first index :math:`k`), :math:`d_i = a - z_i` and
    :math:`s = \sum_{i \ne k} e^{-d_i}`:

    .. math::

        \ell = (1 - \varepsilon)\, w_t\, (d_t + \operatorname{log1p}(s))
             + \frac{\varepsilon}{|F|} \sum_{c \in F} w_c\, (d_c + \operatorname{log1p}(s)),
        \qquad
        \frac{\partial \ell}{\partial x} = \frac{1}{T}\Big(p \sum_c \alpha_c - \alpha\Big),

    with :math:`F` the classes whose logit is finite (masked ``-inf`` classes get no smoothing
    mass and exactly zero gradient), :math:`\alpha_c = (1-\varepsilon) w_t [c = t] +
    \frac{\varepsilon}{|F|} w_c [c \in F]` and :math:`p = e^{-d} / (1 + s)`. ``"mean"`` divides
    by :math:`\sum w_{t}` over the non-ignored rows, like torch; an all-ignored batch gives 0 and
    a zero gradient (torch: NaN). Agrees with :func:`torch.nn.functional.cross_entropy` when no
    class is masked.

    Without ``inplace_backward`` the forward writes the gradient into one new buffer, which the
    backward hands over after scaling (one ``N x C`` buffer in all). With
    ``inplace_backward=True`` the forward only reads the logits and the backward overwrites the
    **logits tensor itself** with its gradient (as flash-attention's cross-entropy does): no
    second ``N x C`` buffer, but ``logits`` must not be read after ``backward``. That write
    counts as an in-place operation on ``logits`` for autograd: another backward node that
    saved ``logits`` and runs after this one raises a ``RuntimeError`` rather than using the
    overwritten values (use ``inplace_backward=False`` when the logits feed a second loss).

    **Higher-order derivatives.** With ``create_graph=True`` (double backward, gradient
    penalties, Hessian-vector products) the backward does not use the kernels, whose gradient is
    a constant to autograd: it recomputes the gradient with the core's differentiable closed
    form (:func:`logitlab.cross_entropy`'s, from the exact softmax Functions), so derivatives of
    every order are exact; this materialises the softmax like an unfused loss. With
    ``inplace_backward=True`` that is impossible (the logits are overwritten) and a
    ``RuntimeError`` says so. ``weight`` may require grad: its gradient is computed by the same
    closed form.

    Args:
        logits: scores, class axis ``axis`` (float16/bfloat16/float32/float64).
        target: integer class indices, the shape of ``logits`` without ``axis``.
        axis: the class axis (a non-last axis costs one transposed copy).
        ignore_index: target value whose rows contribute nothing.
        label_smoothing: :math:`\varepsilon \in [0, 1]`.
        weight: per-class weights :math:`w`, shape ``(C,)``.
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.
        temperature: :math:`T > 0`.
        inplace_backward: write the gradient over ``logits`` in the backward.

    Returns:
        The loss in ``logits``' dtype: a scalar, or shaped like ``target`` for ``"none"``.

    Raises:
        TypeError: non-floating ``logits``/``weight`` or non-integer ``target``.
        ValueError: shapes that do not fit, devices that differ, class index out of range, bad
            option values.
        RuntimeError: (in the backward) ``create_graph=True`` with ``inplace_backward=True``, or a
            second backward with ``inplace_backward=True``.

    Example:
        >>> import torch
        >>> import torch.nn.functional as F
        >>> from logitlab.torch import cross_entropy
        >>> x = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 3.0]], requires_grad=True)
        >>> t = torch.tensor([0, 1])
        >>> loss = cross_entropy(x, t, label_smoothing=0.1)
        >>> round(loss.item(), 6) == round(F.cross_entropy(x, t, label_smoothing=0.1).item(), 6)
        True
        >>> float(cross_entropy(x.detach(), torch.tensor([-100, -100])))
        0.0

    References:
        C. Szegedy et al., "Rethinking the Inception Architecture for Computer Vision", CVPR 2016
        (label smoothing). P. Blanchard, D. J. Higham, N. J. Higham, "Accurately computing the
        log-sum-exp and softmax functions", IMA J. Numer. Anal., 2021. T. Dao, flash-attention
        ``ops/triton/cross_entropy.py`` (in-place backward).
    """
    opts = ce_options(
        ignore_index=ignore_index,
        label_smoothing=label_smoothing,
        temperature=temperature,
        reduction=reduction,
    )
    check_float(logits, "logits")
    check_target(target)
    check_same_device(logits, target, "target", "logits")
    if logits.dim() == 0:
        raise ValueError("logits must have at least one dimension (the classes)")
    ax = normalize_axis(axis, logits.dim())
    n_classes = logits.shape[ax]
    if n_classes == 0:
        raise ValueError(
            f"logits has no classes: its axis {axis} has length 0 (shape "
            f"{tuple(logits.shape)}), and a class-index target needs at least one class"
        )
    expect = tuple(s for i, s in enumerate(logits.shape) if i != ax)
    if tuple(target.shape) != expect:
        raise ValueError(
            f"target shape {tuple(target.shape)} must equal logits' shape without axis {axis}, "
            f"{expect}"
        )
    if weight is not None:
        check_float(weight, "weight")
        check_same_device(logits, weight, "weight", "logits")
        if tuple(weight.shape) != (n_classes,):
            raise ValueError(f"weight must have shape ({n_classes},), got {tuple(weight.shape)}")
    check_class_indices(torch_xp, target, n_classes, opts.ignore_index)
    return fused_cross_entropy(
        logits, target, weight, opts, axis=ax, inplace_backward=inplace_backward
    )


def fused_cross_entropy(
    logits: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None,
    opts: CEOptions,
    *,
    axis: int,
    inplace_backward: bool,
) -> torch.Tensor:
    """:func:`cross_entropy` of checked arguments (``axis`` non-negative): the entry of
    :func:`logitlab.cross_entropy` for 2-D class targets that autograd differentiates."""
    x = _rows(logits, axis)
    t = target.reshape(-1)
    if t.dtype != torch.int64:
        t = t.long()
    out: torch.Tensor = _CE.apply(logits, x.detach(), t, weight, opts, axis, inplace_backward)
    if opts.reduction == "none":
        out = out.reshape(target.shape)
    return out

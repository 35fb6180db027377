"""torch.autograd Functions for the exact core: exact forward, closed-form stable backward.

Autograd through the array-API forward would differentiate ``max``, ``where`` and the excluded
maximal entry; that gives wrong gradients at ties and ``0 * inf = NaN`` at masked classes. Each
Function here computes its forward with the public (exact) function on detached inputs, and its
backward from the closed forms

* ``d lse / dx = softmax(x)``
* ``d softmax / dx``: ``y * (g - sum(g y))``; ``d log_softmax / dx``: ``g - p * sum(g)``
* ``d H / dx = -p (log p + H)`` (logits), ``-(log p + 1)`` (probabilities)
* ``d CE / dx = (p * sum(alpha) - alpha) / T``  (``alpha``: target weights, see losses.py)
* ``d BCE / dx = (1 - y) sigmoid(x) - w y sigmoid(-x)``
* ``d KL / dx_p = p (u - KL)``, ``d KL / dx_q = q - p``  (``u = log p - log q``); for
  probability arguments ``d KL / dp = u`` and ``d KL / dq = 1 - p / q``

written so that a masked entry (``-inf`` logit, zero probability) gets gradient 0, never NaN.
Conventions where the one-sided derivative is infinite (a probability exactly 0 in
``entropy(probs=...)``, ``kl_divergence(p, ...)`` or ``js_divergence``): the gradient there is
0, i.e. zero-probability classes are treated as outside the support, like masked logits.

Half-precision inputs get their gradient computed in float32 and rounded once. Double backward is
not supported (these Functions are first-order only).
"""

from __future__ import annotations

import math
from typing import Any

import array_api_compat.torch as xp
import torch

from logitlab._array import normalize_axis, validation
from logitlab.losses import (
    _log_ratio_probs,
    binary_cross_entropy,
    binary_cross_entropy_with_logits,
    ce_coefficients,
    cross_entropy,
    entropy,
    js_divergence,
    kl_divergence,
    prepare_ce,
)
from logitlab.special import log_softmax_impl, logsumexp, softmax, softmax_impl

__all__ = [
    "logsumexp_grad",
    "softmax_grad",
    "entropy_grad",
    "cross_entropy_grad",
    "bce_grad",
    "kl_grad",
    "js_grad",
]


def _up(x: torch.Tensor) -> torch.Tensor:
    """The dtype gradients are computed in (float32 for half inputs)."""
    if x.dtype in (torch.float16, torch.bfloat16):
        return x.float()
    if not x.is_floating_point():
        return x.to(torch.get_default_dtype())
    return x


def _zero_where(mask: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return torch.where(mask, torch.zeros_like(v), v)


def _as_tensor(v: Any, like: torch.Tensor) -> Any:
    if v is None or isinstance(v, torch.Tensor):
        return v
    return torch.as_tensor(v, device=like.device)


# --------------------------------------------------------------------------- lse / softmax


class _LogSumExp(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, axis: int | None, keepdims: bool) -> torch.Tensor:
        ctx.save_for_backward(x)
        ctx.axis, ctx.keepdims = axis, keepdims
        return logsumexp(x.detach(), axis, keepdims)

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple[Any, ...]:
        (x,) = ctx.saved_tensors
        xc = _up(x)
        if ctx.axis is None:
            p = softmax_impl(xp, xc.reshape(-1), 0).reshape(x.shape)
            grad = _up(g).reshape((1,) * x.ndim) * p if x.ndim else _up(g) * p
        else:
            ax = normalize_axis(ctx.axis, x.ndim)
            p = softmax_impl(xp, xc, ax)
            gg = _up(g) if ctx.keepdims else _up(g).unsqueeze(ax)
            grad = gg * p
        return grad.to(x.dtype), None, None


def logsumexp_grad(x: torch.Tensor, axis: int | None, keepdims: bool) -> torch.Tensor:
    return _LogSumExp.apply(x, axis, keepdims)


class _Softmax(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, axis: int, t: float, log: bool) -> torch.Tensor:
        ctx.save_for_backward(x)
        ctx.axis, ctx.t, ctx.log = axis, t, log
        from logitlab.special import log_softmax

        fn = log_softmax if log else softmax
        return fn(x.detach(), axis, t)

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple[Any, ...]:
        (x,) = ctx.saved_tensors
        t = ctx.t
        if t == 0.0 or t == math.inf:  # the limits are piecewise constant in x
            return torch.zeros_like(x), None, None, None
        ax = normalize_axis(ctx.axis, x.ndim)
        xc, gc = _up(x), _up(g)
        p = softmax_impl(xp, xc, ax, t)
        if ctx.log:
            # entries where the output is -inf have g possibly inf/NaN-free; p = 0 there
            grad = gc - p * gc.sum(dim=ax, keepdim=True)
        else:
            gc = _zero_where(p == 0, gc)
            grad = p * (gc - (gc * p).sum(dim=ax, keepdim=True))
        return (grad / t).to(x.dtype), None, None, None


def softmax_grad(x: torch.Tensor, axis: int, t: float, *, log: bool) -> torch.Tensor:
    return _Softmax.apply(x, axis, t, log)


# --------------------------------------------------------------------------- entropy


class _Entropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, src: torch.Tensor, axis: int, from_logits: bool) -> torch.Tensor:
        if from_logits:
            out = entropy(logits=src.detach(), axis=axis)
        else:
            out = entropy(probs=src.detach(), axis=axis)
        ctx.save_for_backward(src, out)
        ctx.axis, ctx.from_logits = axis, from_logits
        return out

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple[Any, ...]:
        src, h = ctx.saved_tensors
        ax = normalize_axis(ctx.axis, src.ndim)
        sc, hc = _up(src), _up(h).unsqueeze(ax)
        gc = _up(g).unsqueeze(ax)
        if ctx.from_logits:
            p = softmax_impl(xp, sc, ax)
            logp = log_softmax_impl(xp, sc, ax)
            grad = _zero_where(p == 0, -p * (_zero_where(p == 0, logp) + hc))
        else:
            safe = torch.where(sc > 0, sc, torch.ones_like(sc))
            grad = _zero_where(sc == 0, -(torch.log(safe) + 1))
        return (gc * grad).to(src.dtype), None, None


def entropy_grad(src: torch.Tensor, axis: int, *, from_logits: bool) -> torch.Tensor:
    return _Entropy.apply(src, axis, from_logits)


# --------------------------------------------------------------------------- cross-entropy


class _CrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any,
        logits: torch.Tensor,
        target: torch.Tensor,
        weight: torch.Tensor | None,
        axis: int,
        ignore_index: int,
        ls: float,
        reduction: str,
        t: float,
    ) -> torch.Tensor:
        out = cross_entropy(
            logits.detach(),
            target.detach(),
            axis,
            ignore_index,
            ls,
            None if weight is None else weight.detach(),
            reduction,
            t,
        )
        ctx.save_for_backward(logits, target, weight)
        ctx.args = (axis, ignore_index, ls, reduction, t)
        return out

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple[Any, ...]:
        logits, target, weight = ctx.saved_tensors
        axis, ignore_index, ls, reduction, t = ctx.args
        with validation(False):
            _, x, tt, w, soft, _ = prepare_ce(
                logits.detach(),
                target.detach(),
                axis,
                None if weight is None else weight.detach(),
                ls,
                t,
                ignore_index,
            )
            x = _up(x)
            tt = tt.to(x.dtype) if soft else tt
            w = None if w is None else w.to(x.dtype)
            _, alpha, _, denom = ce_coefficients(
                xp,
                x,
                tt,
                soft=soft,
                ignore_index=ignore_index,
                label_smoothing=ls,
                weight=w,
                temperature=t,
            )
        gc = _up(g)
        if reduction == "none":
            scale = gc.unsqueeze(-1)
        elif reduction == "sum":
            scale = gc
        else:
            total = denom.sum()
            scale = torch.where(
                total == 0,
                torch.zeros_like(gc),
                gc / torch.where(total == 0, torch.ones_like(total), total),
            )
        p = softmax_impl(xp, x, x.ndim - 1, t)
        grad = (p * alpha.sum(dim=-1, keepdim=True) - alpha) / t * scale
        ax = normalize_axis(axis, logits.ndim)
        grad_x = grad.movedim(-1, ax).to(logits.dtype) if ctx.needs_input_grad[0] else None
        grad_t = None
        if soft and ctx.needs_input_grad[1]:
            nll = -log_softmax_impl(xp, x, x.ndim - 1, t)
            coef = (1 - ls) * (w if w is not None else torch.ones_like(nll))
            gt = coef * torch.where(coef == 0, torch.zeros_like(nll), nll) * scale
            grad_t = gt.movedim(-1, ax).to(target.dtype)
        return grad_x, grad_t, None, None, None, None, None, None


def cross_entropy_grad(
    logits: Any,
    target: Any,
    axis: int,
    ignore_index: int,
    ls: float,
    weight: Any,
    reduction: str,
    t: float,
) -> torch.Tensor:
    logits = _as_tensor(logits, target) if not isinstance(logits, torch.Tensor) else logits
    target = _as_tensor(target, logits)
    weight = _as_tensor(weight, logits)
    return _CrossEntropy.apply(logits, target, weight, axis, ignore_index, ls, reduction, t)


# --------------------------------------------------------------------------- binary CE


class _BCE(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any,
        pred: torch.Tensor,
        target: torch.Tensor,
        weight: torch.Tensor | None,
        pos_weight: torch.Tensor | None,
        reduction: str,
        from_logits: bool,
    ) -> torch.Tensor:
        d = lambda v: None if v is None else v.detach()  # noqa: E731
        if from_logits:
            out = binary_cross_entropy_with_logits(
                d(pred), d(target), d(weight), d(pos_weight), reduction
            )
        else:
            out = binary_cross_entropy(d(pred), d(target), d(weight), reduction)
        ctx.save_for_backward(pred, target, weight, pos_weight)
        ctx.reduction, ctx.from_logits = reduction, from_logits
        return out

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple[Any, ...]:
        pred, target, weight, pos_weight = ctx.saved_tensors
        x, y = _up(pred), _up(target).to(_up(pred).dtype)
        if ctx.from_logits:
            pw = torch.ones_like(x) if pos_weight is None else _up(pos_weight).to(x.dtype)
            # sigmoid(+-x) from torch.sigmoid is exact in both tails; 0 * anything = 0 here.
            gx = (1 - y) * torch.sigmoid(x) - pw * y * torch.sigmoid(-x)
            sp_neg = torch.nn.functional.softplus(-x, threshold=1e30)
            sp_pos = torch.nn.functional.softplus(x, threshold=1e30)
            gy = pw * sp_neg - sp_pos
        else:
            safe_p = torch.where(x > 0, x, torch.ones_like(x))
            safe_q = torch.where(x < 1, 1 - x, torch.ones_like(x))
            gx = _zero_where(y == 0, -y / safe_p) + _zero_where(y == 1, (1 - y) / safe_q)
            gx = torch.where((y > 0) & (x == 0), torch.full_like(gx, -math.inf), gx)
            gx = torch.where((y < 1) & (x == 1), torch.full_like(gx, math.inf), gx)
            gy = -(torch.log(safe_p) - torch.log1p(-torch.where(x < 1, x, torch.zeros_like(x))))
        if weight is not None:
            w = _up(weight).to(x.dtype)
            gx, gy = gx * w, gy * w
        gc = _up(g)
        if ctx.reduction == "mean":
            gc = gc / max(1, x.numel())
        gx, gy = gx * gc, gy * gc
        return (
            gx.to(pred.dtype) if ctx.needs_input_grad[0] else None,
            gy.to(target.dtype) if ctx.needs_input_grad[1] else None,
            None,
            None,
            None,
            None,
        )


def bce_grad(
    pred: Any, target: Any, weight: Any, pos_weight: Any, reduction: str, *, from_logits: bool
) -> torch.Tensor:
    ref = pred if isinstance(pred, torch.Tensor) else target
    pred, target = _as_tensor(pred, ref), _as_tensor(target, ref)
    if not target.is_floating_point():
        target = target.to(_up(pred).dtype)
    return _BCE.apply(
        pred, target, _as_tensor(weight, ref), _as_tensor(pos_weight, ref), reduction, from_logits
    )


# --------------------------------------------------------------------------- KL / JS


def _dist(v: torch.Tensor, is_logits: bool, ax: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(probabilities, log-probabilities with 0 where the probability is 0), in float32+."""
    vc = _up(v)
    if is_logits:
        p = softmax_impl(xp, vc, ax)
        lp = log_softmax_impl(xp, vc, ax)
    else:
        p = vc
        lp = torch.log(torch.where(vc > 0, vc, torch.ones_like(vc)))
    return p, _zero_where(p == 0, lp)


class _Divergence(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any,
        a: torch.Tensor,
        b: torch.Tensor,
        a_logits: bool,
        b_logits: bool,
        axis: int,
        js: bool,
    ) -> torch.Tensor:
        a0, b0 = a.detach(), b.detach()
        out = (js_divergence if js else kl_divergence)(
            None if a_logits else a0,
            None if b_logits else b0,
            p_logits=a0 if a_logits else None,
            q_logits=b0 if b_logits else None,
            axis=axis,
        )
        ctx.save_for_backward(a, b, out)
        ctx.flags = (a_logits, b_logits, axis, js)
        return out

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple[Any, ...]:
        a, b, out = ctx.saved_tensors
        a_logits, b_logits, axis, js = ctx.flags
        ax = normalize_axis(axis, a.ndim)
        p, lp = _dist(a, a_logits, ax)
        q, lq = _dist(b, b_logits, ax)
        gc = _up(g).unsqueeze(ax)
        if js:
            m = (p + q) / 2
            msafe = torch.where(m > 0, m, torch.ones_like(m))
            vp = _zero_where(p == 0, 0.5 * _log_ratio_probs(xp, p, msafe))
            vq = _zero_where(q == 0, 0.5 * _log_ratio_probs(xp, q, msafe))
            ga = p * (vp - (p * vp).sum(ax, keepdim=True)) if a_logits else vp
            gb = q * (vq - (q * vq).sum(ax, keepdim=True)) if b_logits else vq
        else:
            u = _zero_where((p == 0) | (q == 0), lp - lq)
            kl = _up(out).unsqueeze(ax)
            # For probability arguments the forward is the generalised KL
            # sum(p log(p/q) - p + q), whose gradient (u, 1 - p/q) differs from that of
            # sum(p log(p/q)) by a constant vector: the same on the simplex.
            ga = p * (u - kl) if a_logits else _zero_where(p == 0, u)
            qs = torch.where(q > 0, q, torch.ones_like(q))
            gb = (q - p) if b_logits else 1 - _zero_where(p == 0, p / qs)
            gb = torch.where((q == 0) & (p > 0), torch.full_like(gb, -math.inf), gb)
        return (
            (gc * ga).to(a.dtype) if ctx.needs_input_grad[0] else None,
            (gc * gb).to(b.dtype) if ctx.needs_input_grad[1] else None,
            None,
            None,
            None,
            None,
        )


def _pair(p: Any, q: Any, p_logits: Any, q_logits: Any) -> tuple[Any, Any, bool, bool]:
    if (p is None) == (p_logits is None) or (q is None) == (q_logits is None):
        raise ValueError("give exactly one of p / p_logits and exactly one of q / q_logits")
    a, b = (p_logits if p is None else p), (q_logits if q is None else q)
    ref = a if isinstance(a, torch.Tensor) else b
    return _as_tensor(a, ref), _as_tensor(b, ref), p is None, q is None


def kl_grad(p: Any, q: Any, p_logits: Any, q_logits: Any, axis: int) -> torch.Tensor:
    a, b, al, bl = _pair(p, q, p_logits, q_logits)
    return _Divergence.apply(a, b, al, bl, axis, False)


def js_grad(p: Any, q: Any, p_logits: Any, q_logits: Any, axis: int) -> torch.Tensor:
    a, b, al, bl = _pair(p, q, p_logits, q_logits)
    return _Divergence.apply(a, b, al, bl, axis, True)

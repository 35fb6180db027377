"""The differentiable primitives of logitlab's autograd layer: softmax, log-softmax and their
vector-Jacobian products, log-sum-exp (with signed weights), sigmoid, softplus and entropy, each a
``torch.autograd.Function`` whose forward is the row engine's exact formula and whose backward is
built from these same Functions, so every order of derivative is closed-form. The conventions
(masked entries, ``+inf`` rows, NaN) are those of :mod:`logitlab.torch._autograd`."""

from __future__ import annotations

import math
from typing import Any

import array_api_compat.torch as xp
import torch

from logitlab import _formulas, _rows
from logitlab._checks import normalize_axis

__all__ = [
    "entropy_grad",
    "log_softmax_fn",
    "log_softmax_vjp",
    "logsumexp_b_grad",
    "logsumexp_fn",
    "logsumexp_grad",
    "sigmoid_fn",
    "softmax_fn",
    "softmax_grad",
    "softmax_vjp",
    "softplus_fn",
]

_NEG = -math.inf
_HALF = (torch.float16, torch.bfloat16)


def _up(x: torch.Tensor) -> torch.Tensor:
    """float32 for half inputs (a differentiable cast), the tensor itself otherwise."""
    return x.float() if x.dtype in _HALF else x


def _down(y: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return y if y.dtype == like.dtype or like.dtype not in _HALF else y.to(like.dtype)


def _dead(x: torch.Tensor, ax: int) -> torch.Tensor:
    """Rows (keepdim along ``ax``) whose entries are all ``-inf``: fully masked."""
    return (x == _NEG).all(dim=ax, keepdim=True)


def _as_tensor(v: Any, like: torch.Tensor) -> Any:
    if v is None or isinstance(v, torch.Tensor):
        return v
    return torch.as_tensor(v, device=like.device)


# --------------------------------------------------------------------------- softmax / lse


def _top(p: torch.Tensor, ax: int) -> torch.Tensor:
    """Mask of one maximal entry of ``p`` along ``ax`` (the first, as ``argmax``); none along an
    empty axis."""
    mask = torch.zeros(p.shape, dtype=torch.bool, device=p.device)
    if p.shape[ax] == 0:
        return mask
    return mask.scatter_(ax, p.detach().argmax(dim=ax, keepdim=True), True)


def _shift(v: torch.Tensor, top: torch.Tensor, ax: int) -> torch.Tensor:
    """``v`` minus its value at the ``top`` entry of each row."""
    return v - torch.where(top, v, 0.0).sum(dim=ax, keepdim=True)


class _SoftmaxVJP(torch.autograd.Function):
    """``y * (g - sum(g y))``, the vector-Jacobian product of a softmax ``y``, without
    cancellation at a dominant entry, at every order.

    With ``y_k`` rounded to 1 (``[0, -40]``) the textbook form gives ``y_k (g_k - g_k - ...)``,
    i.e. 0 or noise instead of ``-y_k sum_{j != k} y_j (g_j - g_k)``. The product does not change
    when ``g`` is shifted by a constant (``sum y = 1``), so ``g`` is shifted by its value at the
    largest ``y``. Autograd through that expression would cancel the same way one order up
    (``-y_k w_k + y_k (y . w)``), hence a Function whose backward passes are shifted forms too:
    w.r.t. ``g`` the same product (the Jacobian is symmetric); w.r.t. ``y``
    ``w (g - sum(g y)) - g sum(w y)`` with ``g`` and ``w`` both shifted, which differs from the
    unshifted one by a constant per row, which the softmax's own backward (``y`` is always a
    softmax here) maps to 0.
    """

    @staticmethod
    def forward(ctx: Any, y: torch.Tensor, g: torch.Tensor, ax: int) -> torch.Tensor:
        top = _top(y, ax)
        gs = _shift(g, top, ax)
        ctx.save_for_backward(y, g, top)
        ctx.ax = ax
        return y * (gs - (gs * y).sum(dim=ax, keepdim=True))

    @staticmethod
    def backward(ctx: Any, w: torch.Tensor) -> tuple[Any, ...]:
        y, g, top = ctx.saved_tensors
        ax = ctx.ax
        gy = gg = None
        if ctx.needs_input_grad[0]:
            gs, ws = _shift(g, top, ax), _shift(w, top, ax)
            gbar = (gs * y).sum(dim=ax, keepdim=True)
            wbar = (ws * y).sum(dim=ax, keepdim=True)
            gy = ws * (gs - gbar) - gs * wbar
        if ctx.needs_input_grad[1]:
            gg = softmax_vjp(y, w, ax)
        return gy, gg, None


def softmax_vjp(y: torch.Tensor, g: torch.Tensor, ax: int) -> torch.Tensor:
    """``y * (g - sum(g y))`` for a softmax ``y`` (see :class:`_SoftmaxVJP`), differentiable."""
    out: torch.Tensor = _SoftmaxVJP.apply(y, g, ax)
    return out


def log_softmax_vjp(p: torch.Tensor, g: torch.Tensor, ax: int) -> torch.Tensor:
    """``g - p sum(g)``, the vector-Jacobian product of a log-softmax (``p`` the softmax), with
    the largest entry's ``g_k (1 - p_k) - p_k sum_{j != k} g_j`` formed from
    ``1 - p_k = sum_{j != k} p_j``: exact where ``p_k`` rounds to 1 (the cross-entropy gradient
    ``p_t - 1`` of a confident, correct prediction)."""
    top = _top(p, ax)
    rest = torch.where(top, 0.0, g).sum(dim=ax, keepdim=True)
    q_rest = torch.where(top, 0.0, p).sum(dim=ax, keepdim=True)
    r = g - p * (rest + torch.where(top, g, 0.0).sum(dim=ax, keepdim=True))
    return torch.where(top, g * q_rest - p * rest, r)


class _Softmax(torch.autograd.Function):
    """softmax (``log=False``) or log-softmax (``log=True``) of ``x / T`` along ``axis``."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, axis: int, t: float, log: bool) -> torch.Tensor:
        ax = normalize_axis(axis, x.ndim)
        y = (_rows.log_softmax if log else _rows.softmax)(xp, x.detach(), ax, t)
        ctx.save_for_backward(x if log else None, y, _dead(x, ax))
        ctx.args = (ax, t, log)
        return y

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple[Any, ...]:
        x, y, dead = ctx.saved_tensors
        ax, t, log = ctx.args
        if t == 0.0 or t == math.inf:
            # the limits are piecewise constant in x: derivative 0 (NaN on NaN rows)
            return torch.zeros_like(y).masked_fill(torch.isnan(y), math.nan), None, None, None
        if log:
            zero = (y == _NEG) | dead
            gm = torch.where(zero, 0.0, g)
            grad = log_softmax_vjp(_Softmax.apply(x, ax, t, False), gm, ax)
        else:
            # y is this Function's own output: under create_graph its derivative is this same
            # backward again, so every order is the closed form.
            zero = (y == 0) | dead
            gm = torch.where(zero, 0.0, g)
            grad = softmax_vjp(y, gm, ax)
        grad = torch.where(zero, 0.0, grad)
        return (grad / t if t != 1.0 else grad), None, None, None


def softmax_fn(x: torch.Tensor, axis: int, t: float = 1.0) -> torch.Tensor:
    """The differentiable exact softmax of ``x / T`` (float32/float64 ``x``)."""
    out: torch.Tensor = _Softmax.apply(x, axis, t, False)
    return out


def log_softmax_fn(x: torch.Tensor, axis: int, t: float = 1.0) -> torch.Tensor:
    """The differentiable exact log-softmax of ``x / T`` (float32/float64 ``x``)."""
    out: torch.Tensor = _Softmax.apply(x, axis, t, True)
    return out


def softmax_grad(x: torch.Tensor, axis: int, t: float, *, log: bool) -> torch.Tensor:
    """softmax (``log=False``) or log-softmax of a float32/float64 tensor, for autograd."""
    out: torch.Tensor = _Softmax.apply(x, axis, t, log)
    return out


class _LogSumExp(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, axis: int | None, keepdims: bool) -> torch.Tensor:
        ctx.save_for_backward(x)
        ctx.args = (axis, keepdims)
        xd = x.detach()
        out: torch.Tensor
        if axis is None:
            out = _rows.lse(xp, xd.reshape(-1), 0)
            return out.reshape((1,) * x.ndim) if keepdims else out
        out = _rows.lse(xp, xd, normalize_axis(axis, x.ndim), keepdims)
        return out

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple[Any, ...]:
        (x,) = ctx.saved_tensors
        axis, keepdims = ctx.args
        if axis is None:
            xf = x.reshape(-1)
            p = softmax_fn(xf, 0)
            grad = torch.where((p == 0) | _dead(xf, 0), 0.0, g.reshape(1) * p).reshape(x.shape)
        else:
            ax = normalize_axis(axis, x.ndim)
            p = softmax_fn(x, ax)
            gg = g if keepdims else g.unsqueeze(ax)
            grad = torch.where((p == 0) | _dead(x, ax), 0.0, gg * p)
        return grad, None, None


def logsumexp_fn(x: torch.Tensor, axis: int | None, keepdims: bool = False) -> torch.Tensor:
    """The differentiable exact log-sum-exp (float32/float64 ``x``)."""
    out: torch.Tensor = _LogSumExp.apply(x, axis, keepdims)
    return out


def logsumexp_grad(x: torch.Tensor, axis: int | None, keepdims: bool) -> torch.Tensor:
    """log-sum-exp of a float32/float64 tensor, for autograd."""
    return logsumexp_fn(x, axis, keepdims)


class _LogSumExpB(torch.autograd.Function):
    """``(log |sum b e^x|, sign)``: ``d/dx_i = b_i e^{x_i} / S``, ``d/db_i = e^{x_i} / S``.

    As ``b_i q_i / (b . q)`` and ``q_i / (b . q)`` with ``q = e^{x - lse_K}`` over the kept
    entries ``K`` (``b != 0``; the forward drops the others): the softmax Function on ``K``,
    ``e^{x_i - lse_K}`` on a dropped entry. NaN where the forward gives NaN (a negative sum
    without ``return_sign``), 0 on rows with nothing kept (``lse = -inf``).
    """

    @staticmethod
    def forward(
        ctx: Any, x: torch.Tensor, b: torch.Tensor, axis: int | None, keepdims: bool, sign: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        ax = normalize_axis(axis, x.ndim) if axis is not None else None
        xd, bd = x.detach(), b.detach()
        if ax is None:
            out, sgn = _rows.lse_weighted(xp, xd.reshape(-1), bd.reshape(-1), 0, False)
            if keepdims:
                out, sgn = out.reshape((1,) * x.ndim), sgn.reshape((1,) * x.ndim)
        else:
            out, sgn = _rows.lse_weighted(xp, xd, bd, ax, keepdims)
        if not sign:
            out = torch.where(sgn < 0, math.nan, out)
        ctx.save_for_backward(x, b, out, sgn)
        ctx.args = (axis, keepdims, sign)
        ctx.mark_non_differentiable(sgn)
        return out, sgn

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor, _: Any) -> tuple[Any, ...]:
        x, b, out, sgn = ctx.saved_tensors
        axis, keepdims, sign = ctx.args
        shape = x.shape
        if axis is None:
            x, b, ax = x.reshape(-1), b.reshape(-1), 0
            g, out, sgn = g.reshape(1), out.reshape(1), sgn.reshape(1)
        else:
            ax = normalize_axis(axis, x.ndim)
            if not keepdims:
                g, out, sgn = g.unsqueeze(ax), out.unsqueeze(ax), sgn.unsqueeze(ax)
        drop = b == 0
        xa = torch.where(drop, _NEG, x)
        empty = (sgn == 0) | (out == _NEG)  # no entry left (or a zero sum)
        # q = e^{x - lse_active}: the softmax Function on the kept entries; on the dropped ones
        # (b = 0 there, so b q = 0 in value) q carries the derivative w.r.t. their b
        lse_a = logsumexp_fn(xa, ax, True)
        qd = torch.exp(torch.where(drop & ~empty, x - lse_a, _NEG))
        q = torch.where(drop, torch.where(torch.isfinite(qd), qd, 0.0), softmax_fn(xa, ax))
        den = torch.where(empty, 1.0, (b * q).sum(dim=ax, keepdim=True))
        gx = torch.where(empty, 0.0, g * b * q / den)
        gb = torch.where(empty, 0.0, g * torch.where(drop, qd, q) / den)
        if not sign:
            bad = sgn < 0
            gx, gb = torch.where(bad, math.nan, gx), torch.where(bad, math.nan, gb)
        return gx.reshape(shape), gb.reshape(shape), None, None, None


def logsumexp_b_grad(
    x: torch.Tensor, axis: int | None, keepdims: bool, b: torch.Tensor | None, return_sign: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(log |sum b e^x|, sign)`` of checked float32/float64 tensors of one shape (``b``: ones
    when None); NaN for a negative sum unless ``return_sign``."""
    bb = torch.ones_like(x) if b is None else b
    out, sgn = _LogSumExpB.apply(x, bb, axis, keepdims, return_sign)
    return out, sgn


# --------------------------------------------------------------------------- sigmoid / softplus


class _Sigmoid(torch.autograd.Function):
    """``sigmoid(x)`` with derivative ``sigmoid(x) sigmoid(-x)``: exact in both tails, where
    torch's ``y (1 - y)`` loses the small factor once ``y`` rounds to 1 (``x > 37`` in float64)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x)
        return torch.sigmoid(x.detach())

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        return g * sigmoid_fn(x) * sigmoid_fn(-x)


def sigmoid_fn(x: torch.Tensor) -> torch.Tensor:
    out: torch.Tensor = _Sigmoid.apply(x)
    return out


class _Softplus(torch.autograd.Function):
    """``log(1 + e^x)`` exact for every ``x`` (``max(x, 0) + log1p(e^-|x|)``), derivative
    ``sigmoid(x)``; autograd through ``max``/``abs`` would give 0 instead of 1/2 at ``x = 0``."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x)
        out: torch.Tensor = _formulas.log1pexp(xp, x.detach())
        return out

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        return g * sigmoid_fn(x)


def softplus_fn(x: torch.Tensor) -> torch.Tensor:
    out: torch.Tensor = _Softplus.apply(x)
    return out


# --------------------------------------------------------------------------- entropy


class _Entropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, src: torch.Tensor, axis: int, from_logits: bool) -> torch.Tensor:
        ax = normalize_axis(axis, src.ndim)
        s = src.detach()
        out: torch.Tensor = (
            _rows.entropy(xp, s, ax) if from_logits else _formulas.entropy_probs(xp, s, ax)
        )
        ctx.save_for_backward(src)
        ctx.args = (ax, from_logits)
        return out

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple[Any, ...]:
        (src,) = ctx.saved_tensors
        ax, from_logits = ctx.args
        gg = g.unsqueeze(ax)
        if from_logits:
            # -p (log p + H), with log p_i + H = sum_j p_j (x_i - x_j) since log p_i - log p_j
            # = x_i - x_j: = (x_i - c) - sum_j p_j (x_j - c) for the row maximum c. The textbook
            # log p + H cancels where log p_i ~ -H ([0, 3e-3]: both ~0.69, the sum 1.5e-3);
            # here the sum has terms of one sign and only the gradient's own cancellation is left.
            p = softmax_fn(src, ax)
            zero = (p == 0) | _dead(src, ax)
            c = src.detach().amax(dim=ax, keepdim=True) if src.shape[ax] else src.sum(ax, True)
            fin = torch.isfinite(c)  # a +inf row: its entries with p > 0 all equal c
            xc = torch.where(zero | ~fin, 0.0, src - torch.where(fin, c, 0.0))
            grad = -gg * softmax_vjp(p, xc, ax)
        else:
            zero = src == 0
            grad = -gg * (torch.log(torch.where(zero, 1.0, src)) + 1)
        return torch.where(zero, 0.0, grad), None, None


def entropy_grad(src: torch.Tensor, axis: int, *, from_logits: bool) -> torch.Tensor:
    """Entropy of float32/float64 logits or probabilities along ``axis``, for autograd."""
    out: torch.Tensor = _Entropy.apply(src, axis, from_logits)
    return out

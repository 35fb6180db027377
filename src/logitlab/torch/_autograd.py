"""torch.autograd Functions for the exact core: exact forward, closed-form backward of every order.

Autograd through the array-API forward would differentiate ``max``, ``where`` and the excluded
maximal entry; that gives wrong gradients at ties and ``0 * inf = NaN`` at masked classes. Each
Function here computes its forward with the public (exact) function on detached inputs, and its
backward from the closed forms below, **written with differentiable pieces**: the probabilities and
log-probabilities a backward needs come from the softmax Function itself (its own saved output,
or the Function applied to the saved input), never from a detached formula. Under
``create_graph=True`` autograd differentiates a backward through those same Functions, so every
order of derivative is closed-form, exact and NaN-free on masked entries (torch's
``gradgradcheck`` passes in float64):

* ``d lse / dx = softmax(x)``
* softmax ``y``: ``y (g - sum(g y)) / T`` (its own output); log-softmax: ``(g - p sum(g)) / T``
* ``d H / dx = -p (log p + H) = -p ((x - c) - sum(p (x - c)))`` (logits, ``c`` the row
  maximum: no cancellation between ``log p`` and ``H``), ``-(log p + 1)`` (probabilities)
* ``d CE / dx = (p * sum(alpha) - alpha) / T`` (``alpha``: target weights, see losses.py);
  probability targets ``(1 - eps) w (-log p)``; class weights (see :func:`ce_grads`)
* ``d BCE / dx = w ((1 - y) sigmoid(x) - w+ y sigmoid(-x))``,
  ``d BCE / dy = w (w+ softplus(-x) - softplus(x))``; sigmoid and softplus are Functions too,
  whose derivatives ``sigmoid(x) sigmoid(-x)`` and ``sigmoid(x)`` are exact in both tails
* ``d KL / dx_p = p (u - KL)``, ``d KL / dx_q = q - p = -q expm1(u)`` (``u = log p - log q``,
  computed as accurately as the forward does where ``p ~ q``); for probability arguments
  ``d KL / dp = u`` and ``d KL / dq = 1 - p / q``; ``d JS / dp = log(p / m) / 2``.

Conventions at the edges, the same at every order:

* **Masked entries are constants.** A ``-inf`` logit, and every entry of a row of only ``-inf``
  (fully masked), gets gradient exactly 0, and an output that is exactly 0 (probability) or
  ``-inf`` (log-probability) passes no gradient back, so an infinite or NaN upstream gradient there
  cannot turn the row into NaN. This is also what finite differences see (``-inf + h = -inf``).
* A row with ``+inf`` logits behaves as the forward's limit: its ``+inf`` entries tie (they share
  the mass), the other entries have probability 0 and gradient 0.
* NaN anywhere in a row makes the row's value and its gradient NaN.
* Where the one-sided derivative is infinite at a probability exactly 0 (``entropy(probs=...)``,
  the first argument of ``kl_divergence`` and both of ``js_divergence``), the gradient is 0:
  zero-probability classes are outside the support, like masked logits.

Half-precision inputs are cast to float32 (a differentiable cast) before the Function and its
result rounded once, so derivatives of every order are computed in float32 and rounded once.

Example:
    >>> import torch
    >>> import logitlab as ll
    >>> x = torch.tensor([[0.0, -40.0]], dtype=torch.float64, requires_grad=True)
    >>> (g,) = torch.autograd.grad(ll.logsumexp(x).sum(), x, create_graph=True)
    >>> (h,) = torch.autograd.grad(g[0, 0], x)  # row 0 of the Hessian: [p0 p1, -p0 p1]
    >>> h.tolist()
    [[4.248354255291589e-18, -4.248354255291589e-18]]
"""

from __future__ import annotations

import math
from typing import Any

import array_api_compat.torch as xp
import torch

from logitlab import _formulas, _rows
from logitlab._checks import CEOptions, normalize_axis

__all__ = [
    "bce_grad",
    "ce_alpha",
    "ce_grads",
    "cross_entropy_grad",
    "entropy_grad",
    "divergence_grad",
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


# --------------------------------------------------------------------------- cross-entropy


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


class _CrossEntropy(torch.autograd.Function):
    """Cross-entropy of logits (class axis last) and class or probability targets: the forward
    is :func:`logitlab._formulas.cross_entropy`, the backward :func:`ce_grads`."""

    @staticmethod
    def forward(
        ctx: Any,
        x: torch.Tensor,
        target: torch.Tensor,
        weight: torch.Tensor | None,
        soft: bool,
        opts: CEOptions,
    ) -> torch.Tensor:
        d = lambda v: None if v is None else v.detach()  # noqa: E731
        out: torch.Tensor = _formulas.cross_entropy(xp, d(x), d(target), d(weight), soft, opts)
        ctx.save_for_backward(x, target, weight, out)
        ctx.opts = opts
        return out

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple[Any, ...]:
        x, target, weight, out = ctx.saved_tensors
        opts = ctx.opts
        soft = target.is_floating_point()
        need = ctx.needs_input_grad
        gx, gt, gw = ce_grads(
            x,
            target,
            weight,
            g,
            out,
            ignore_index=opts.ignore_index,
            label_smoothing=opts.label_smoothing,
            reduction=opts.reduction,
            temperature=opts.temperature,
            need=(need[0], need[1] and soft, need[2] and weight is not None),
        )
        return gx, gt, gw, None, None


def cross_entropy_grad(
    x: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None,
    soft: bool,
    opts: CEOptions,
) -> torch.Tensor:
    """Cross-entropy of checked tensors (class axis last, float32/float64 logits, int64 class or
    float probability targets) for autograd. Class targets of 2-D logits take the fused kernel of
    :mod:`logitlab.torch._cross_entropy` (loss and gradient in one visit of each row); the rest
    :class:`_CrossEntropy`. Both have closed-form derivatives of every order."""
    if not soft and x.ndim == 2 and not opts.z_loss and opts.softcap is None:
        from logitlab.torch._cross_entropy import fused_cross_entropy

        return fused_cross_entropy(x, target, weight, opts, axis=1, inplace_backward=False)
    out: torch.Tensor = _CrossEntropy.apply(x, target, weight, soft, opts)
    return out


# --------------------------------------------------------------------------- binary CE


def _bce_terms(
    x: torch.Tensor, y: torch.Tensor, pw: torch.Tensor | None, from_logits: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Elementwise (loss, d/dpred, d/dtarget, d/dpos_weight), differentiable, unweighted.

    Every ``0 * inf`` of the forward's convention is a ``where`` with a safe operand, so that no
    unused branch turns a derivative into NaN.
    """
    if from_logits:
        a, b = softplus_fn(-x), softplus_fn(x)  # softplus(-x) = -log sigmoid(x), exact
        pos = y if pw is None else pw * y
        a0 = torch.where(pos == 0, 0.0, a)
        b0 = torch.where(y == 1, 0.0, b)
        loss = pos * a0 + (1 - y) * b0
        gx = (1 - y) * sigmoid_fn(x) - pos * sigmoid_fn(-x)
        gy = (a if pw is None else pw * a) - b
        gpw = None if pw is None else y * torch.where(y == 0, 0.0, a)
        return loss, gx, gy, gpw
    # -y log p - (1 - y) log1p(-p); d/dp = -y / p + (1 - y) / (1 - p); d/dy = log1p(-p) - log p
    l1 = torch.where(y == 0, 0.0, -y * torch.log(torch.where(y == 0, 1.0, x)))
    l2 = torch.where(y == 1, 0.0, -(1 - y) * torch.log1p(-torch.where(y == 1, 0.0, x)))
    t1 = torch.where(y == 0, 0.0, -y / torch.where((x > 0) & (y != 0), x, 1.0))
    t1 = torch.where((y > 0) & (x == 0), _NEG, t1)
    t2 = torch.where(y == 1, 0.0, (1 - y) / torch.where((x < 1) & (y != 1), 1 - x, 1.0))
    t2 = torch.where((y < 1) & (x == 1), math.inf, t2)
    gy = torch.log1p(-x) - torch.log(x)
    return l1 + l2, t1 + t2, gy, None


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
        out = _formulas.binary_cross_entropy(
            xp, d(pred), d(target), d(weight), d(pos_weight), reduction, from_logits=from_logits
        )
        ctx.save_for_backward(pred, target, weight, pos_weight)
        ctx.args = (reduction, from_logits)
        return out  # type: ignore[no-any-return]

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple[Any, ...]:
        pred, target, weight, pos_weight = ctx.saved_tensors
        reduction, from_logits = ctx.args
        need = ctx.needs_input_grad
        x = pred
        y = target.to(x.dtype)
        pw = None if pos_weight is None else pos_weight.to(x.dtype)
        loss, gx, gy, gpw = _bce_terms(x, y, pw, from_logits)
        gc = g / max(1, x.numel()) if reduction == "mean" else g
        w = None if weight is None else weight.to(x.dtype)
        s = gc if w is None else gc * w

        def fit(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
            # the weights broadcast against the prediction: sum the gradient back to their shape
            return v.expand(torch.broadcast_shapes(v.shape, x.shape)).sum_to_size(like.shape)

        out: list[Any] = [None, None, None, None]
        if need[0]:
            out[0] = fit(gx * s, pred).to(pred.dtype)
        if need[1]:
            out[1] = fit(gy * s, target).to(target.dtype)
        if need[2] and weight is not None:
            out[2] = fit(loss * gc, weight).to(weight.dtype)
        if need[3] and pos_weight is not None and gpw is not None:
            out[3] = fit(gpw * s, pos_weight).to(pos_weight.dtype)
        return out[0], out[1], out[2], out[3], None, None


def bce_grad(
    pred: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None,
    pos_weight: torch.Tensor | None,
    reduction: str,
    *,
    from_logits: bool,
) -> torch.Tensor:
    """Binary cross-entropy of checked float32/float64 tensors of one dtype, for autograd."""
    out: torch.Tensor = _BCE.apply(pred, target, weight, pos_weight, reduction, from_logits)
    return out


# --------------------------------------------------------------------------- KL / JS


def _dist(v: torch.Tensor, is_logits: bool, ax: int) -> tuple[Any, Any, Any]:
    """(probabilities, log-probabilities, outside-the-support mask), all differentiable.

    Outside the support: a masked logit (``-inf`` log-probability) or an entry of a fully masked
    row, or a probability exactly 0. The log-probability is 0 there (a safe operand)."""
    if is_logits:
        p = softmax_fn(v, ax)
        lp = log_softmax_fn(v, ax)
        z = (lp == _NEG) | _dead(v, ax)
    else:
        p = v
        z = v == 0
        lp = torch.log(torch.where(z, 1.0, v))
    return p, torch.where(z, 0.0, lp), z


def _log_ratio(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """``log(p / q)`` for ``p, q > 0`` as in :func:`logitlab.losses._log_ratio_probs` (full
    relative accuracy near ``p ~ q``), every branch fed safe operands so that the unused ones
    have finite derivatives. Entries with ``p = 0`` or ``q = 0`` give 0: the callers mask them."""
    pos = (p > 0) & (q > 0)
    ps, qs = torch.where(pos, p, 1.0), torch.where(pos, q, 1.0)
    near = pos & ((ps - qs).abs() <= qs / 2)
    u_near = torch.log1p(torch.where(near, (ps - qs) / qs, 0.0))
    with torch.no_grad():
        r = ps / qs
        ok = torch.isfinite(r) & (r > 0) & ~near
    u_ratio = torch.log(torch.where(ok, ps, 1.0) / torch.where(ok, qs, 1.0))
    u_far = torch.where(ok, u_ratio, torch.log(ps) - torch.log(qs))
    return torch.where(pos, torch.where(near, u_near, u_far), 0.0)


def _log_ratio_logits(
    a: torch.Tensor, b: torch.Tensor, q: torch.Tensor, lp: torch.Tensor, lq: torch.Tensor, ax: int
) -> torch.Tensor:
    """``u = log p - log q`` for two logit arguments, as the forward computes it: on rows where
    every ``|delta| <= 1`` (``delta = a - b``), ``delta - log1p(sum q expm1(delta))`` (relative
    accuracy as ``p -> q``), elsewhere the difference of log-softmaxes."""
    both = torch.isfinite(a) & torch.isfinite(b)
    delta = torch.where(both, a - b, 0.0)
    with torch.no_grad():
        near = (delta.abs() <= 1).all(ax, keepdim=True) & (both | ((a == _NEG) & (b == _NEG))).all(
            ax, keepdim=True
        )
    ds = torch.where(near, delta, 0.0)
    c = torch.log1p((q * torch.expm1(ds)).sum(ax, keepdim=True))
    return torch.where(near & both, ds - c, lp - lq)


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
        ax = normalize_axis(axis, a.ndim)
        out: torch.Tensor = _formulas.divergence(
            xp, a.detach(), b.detach(), a_logits, b_logits, ax, jensen=js
        )
        ctx.save_for_backward(a, b)
        ctx.args = (a_logits, b_logits, normalize_axis(axis, a.ndim), js)
        return out

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple[Any, ...]:
        a, b = ctx.saved_tensors
        a_logits, b_logits, ax, js = ctx.args
        need = ctx.needs_input_grad
        p, lp, zp = _dist(a, a_logits, ax)
        q, lq, zq = _dist(b, b_logits, ax)
        gg = g.unsqueeze(ax)
        if js:
            m = (p + q) / 2
            vp = 0.5 * _log_ratio(p, m)
            vq = 0.5 * _log_ratio(q, m)
            ga = softmax_vjp(p, vp, ax) if a_logits else vp
            gb = softmax_vjp(q, vq, ax) if b_logits else vq
        else:
            if not a_logits and not b_logits:
                u = _log_ratio(p, q)
            elif a_logits and b_logits:
                u = _log_ratio_logits(a, b, q, lp, lq, ax)
            else:
                u = lp - lq
            # q = 0 < p: u = +inf (KL is infinite); p = 0: outside the support, masked below
            u = torch.where(zq & ~zp, math.inf, u)
            # p (u - KL) is the softmax VJP of u. For probability arguments the forward is the
            # generalised KL sum(p log(p/q) - p + q), whose gradient (u, 1 - p/q) differs from
            # that of sum(p log(p/q)) by a constant vector: the same on the simplex.
            ga = softmax_vjp(p, torch.where(zp, 0.0, u), ax) if a_logits else u
            if b_logits:
                # q - p of two rounded probabilities keeps only the digits in which they differ
                # (p ~ q: 1e7 ulps in float64); -q expm1(u) with the accurate u is exact. It is
                # added as a correction with no derivative (it is 0 in exact arithmetic), so that
                # the derivatives stay those of q - p, each factor's own exact one.
                gb = q - p
                with torch.no_grad():
                    fix = torch.where(zp, q, -q * torch.expm1(torch.where(zq, 0.0, u))) - gb
                gb = gb + fix
            else:
                qs = torch.where(zq, 1.0, q)
                gb = 1 - torch.where(zp, 0.0, p / qs)
                gb = torch.where(zq & ~zp, _NEG, gb)
        ga = torch.where(zp, 0.0, gg * ga)
        # a probability q = 0 in KL keeps its gradient (1, or -inf where p > 0: see above)
        gb = gg * gb if not (b_logits or js) else torch.where(zq, 0.0, gg * gb)
        return (
            ga.to(a.dtype) if need[0] else None,
            gb.to(b.dtype) if need[1] else None,
            None,
            None,
            None,
            None,
        )


def divergence_grad(
    a: torch.Tensor, b: torch.Tensor, a_logits: bool, b_logits: bool, ax: int, *, jensen: bool
) -> torch.Tensor:
    """KL (or JS) per distribution of two checked float32/float64 tensors of one shape, each
    probabilities or logits (``a_logits``/``b_logits``), for autograd."""
    out: torch.Tensor = _Divergence.apply(a, b, a_logits, b_logits, ax, jensen)
    return out

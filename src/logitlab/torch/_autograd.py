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
* ``d CE / dx = (p * sum(alpha) - alpha) / T`` (``alpha``: target weights, see
  :mod:`logitlab._formulas.ce`);
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

from logitlab import _formulas
from logitlab._checks import CEOptions, normalize_axis
from logitlab.torch._ce_grads import ce_alpha, ce_grads
from logitlab.torch._functions import (
    _NEG,
    _dead,
    entropy_grad,
    log_softmax_fn,
    logsumexp_b_grad,
    logsumexp_grad,
    sigmoid_fn,
    softmax_fn,
    softmax_grad,
    softmax_vjp,
    softplus_fn,
)

__all__ = [
    "bce_grad",
    "ce_alpha",
    "ce_grads",
    "cross_entropy_grad",
    "divergence_grad",
    "entropy_grad",
    "logsumexp_b_grad",
    "logsumexp_grad",
    "softmax_grad",
]


# --------------------------------------------------------------------------- cross-entropy


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

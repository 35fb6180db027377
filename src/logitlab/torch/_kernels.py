"""The per-chunk kernel shared by the fused losses: loss and logit gradient in one pass.

For a block of rows ``z`` (float32, modified in place into the gradient) and class targets:

* ``m, k = max(z)``; ``z -= m`` (so ``z = -d``); ``z = exp(z)`` (``w``, with ``w_k = 1``);
* ``s = sum_{i != k} w_i`` (the maximal entry is zeroed by index for the sum, then restored), so
  ``lse = m + log1p(s)`` and ``-log p_t = d_t + log1p(s)`` keep their tiny values;
* ``z /= 1 + s`` (``p``), then the gradient ``p * sum(alpha) - alpha`` is formed in place, with
  ``alpha = (1 - eps) w_t onehot + eps w / |F|`` over the classes ``F`` with a finite logit (so a
  masked class never gets ``eps * inf``), plus ``2 z_loss lse p`` for the z-loss.

No second buffer of the block's size is needed (only for entropy statistics). Rows with
``target == ignore_index`` get loss 0 and gradient 0. The caller scales the gradient by the
reduction factor and the chain rule of temperature / soft-capping.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

__all__ = ["ChunkOut", "ce_chunk"]


@dataclass
class ChunkOut:
    loss: torch.Tensor  # per row, 0 for ignored rows
    lse: torch.Tensor  # per row
    entropy: torch.Tensor | None
    correct: torch.Tensor | None  # argmax == target (bool)
    denom: torch.Tensor  # per row contribution to the mean's denominator


def ce_chunk(
    z: torch.Tensor,
    t: torch.Tensor,
    *,
    ignore_index: int,
    label_smoothing: float,
    weight: torch.Tensor | None,
    z_loss: float,
    stats: bool,
    grad: bool,
) -> ChunkOut:
    """Loss of one block and (if ``grad``) its logit gradient left in ``z`` (see module doc)."""
    n, v = z.shape
    valid = t != ignore_index
    ts = torch.where(valid, t, torch.zeros_like(t)).unsqueeze(1)
    m, k = z.max(dim=1, keepdim=True)
    xt = z.gather(1, ts)
    correct = (k == ts).squeeze(1) & valid if stats else None
    z.sub_(m)  # z = -d <= 0 (-inf for masked classes)
    eps = float(label_smoothing)
    masked = bool(torch.isinf(z).any()) if (eps or weight is not None or stats) else False
    w_row = weight[ts.squeeze(1)] if weight is not None else None
    fin: torch.Tensor | None = None
    smooth = None
    if eps:
        wv = weight if weight is not None else torch.ones(v, dtype=z.dtype, device=z.device)
        if masked:
            fin = torch.isfinite(z)
            n_fin = fin.sum(1, keepdim=True).clamp_min(1).to(z.dtype)
            wsum_fin = (fin * wv).sum(1, keepdim=True)
            sum_wd = -(torch.where(fin, z, torch.zeros_like(z)) * wv).sum(1, keepdim=True)
        else:
            n_fin = torch.full((n, 1), float(v), dtype=z.dtype, device=z.device)
            wsum_fin = wv.sum().reshape(1, 1).expand(n, 1)
            sum_wd = -(z @ wv.unsqueeze(1))
        smooth = (n_fin, wsum_fin, sum_wd)
    ent_dw = None
    if stats:
        negd = z.clone()
    z.exp_()
    z.scatter_(1, k, 0.0)
    s = z.sum(1, keepdim=True)
    z.scatter_(1, k, 1.0)
    log1ps = torch.log1p(s)
    lse = m + log1ps
    nll_t = (m - xt) + log1ps
    wt = w_row.unsqueeze(1) if w_row is not None else torch.ones_like(nll_t)
    loss = (1 - eps) * wt * nll_t
    sum_alpha = (1 - eps) * wt
    if smooth is not None:
        n_fin, wsum_fin, sum_wd = smooth
        loss = loss + eps * (sum_wd + wsum_fin * log1ps) / n_fin
        sum_alpha = sum_alpha + eps * wsum_fin / n_fin
    if z_loss:
        loss = loss + z_loss * lse * lse
    z.div_(1 + s)  # z = p
    if stats:
        # H = log1p(s) + sum_i p_i d_i  (non-negative terms)
        pd = (z * negd.nan_to_num_(nan=0.0, neginf=0.0)).sum(1, keepdim=True)
        ent_dw = (log1ps - pd).squeeze(1)
    if grad:
        coef = sum_alpha + (2 * z_loss * lse if z_loss else 0.0)
        z.mul_(coef)
        z.scatter_add_(1, ts, -(1 - eps) * wt)
        if smooth is not None:
            n_fin = smooth[0]
            wv = weight if weight is not None else torch.ones(v, dtype=z.dtype, device=z.device)
            if fin is not None:
                z.sub_(eps * fin * wv / n_fin)
            else:
                z.sub_(eps * wv.unsqueeze(0) / n_fin)
        if not bool(valid.all()):
            z.masked_fill_(~valid.unsqueeze(1), 0.0)
    loss = torch.where(valid.unsqueeze(1), loss, torch.zeros_like(loss)).squeeze(1)
    denom = torch.where(valid, wt.squeeze(1), torch.zeros_like(wt.squeeze(1)))
    return ChunkOut(loss, lse.squeeze(1), ent_dw, correct, denom)


def check_targets(t: torch.Tensor, n_classes: int, ignore_index: int, name: str = "target") -> None:
    """Raise a ValueError naming the first target outside ``[0, n_classes)`` (not ignored)."""
    from logitlab._array import validation_enabled

    if t.is_floating_point() or t.dtype == torch.bool:
        raise TypeError(f"{name} must hold integer class indices, got {t.dtype}")
    if not validation_enabled():
        return
    bad = (t != ignore_index) & ((t < 0) | (t >= n_classes))
    if bool(bad.any()):
        i = int(bad.nonzero()[0, 0])
        raise ValueError(
            f"{name}[{i}] = {int(t[i])} is not a class index in [0, {n_classes}) "
            f"(and is not ignore_index={ignore_index})"
        )


def rows_per_chunk(n_cols: int, budget_elems: int = 1 << 19) -> int:
    return max(1, budget_elems // max(1, n_cols))


def any_of(x: Any) -> bool:
    return bool(x)

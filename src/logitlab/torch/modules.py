""":class:`torch.nn.Module` wrappers of the fused losses."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

# isort: split
from logitlab.torch._cross_entropy import cross_entropy
from logitlab.torch._linear_ce import linear_cross_entropy
from logitlab.torch.kl import linear_kl_divergence

__all__ = ["CrossEntropy", "LinearCrossEntropy", "LinearKLDivergence"]


class LinearCrossEntropy(nn.Module):
    r"""Loss module: ``linear_cross_entropy(hidden, weight, target, **options)``.

    Holds only options: the projection (e.g. a causal LM's ``lm_head.weight``) is passed to
    :meth:`forward`, so the module works with tied embeddings and vocabulary shards. See
    :func:`logitlab.torch.linear_cross_entropy` for the math.

    Args:
        ignore_index, label_smoothing, z_loss, softcap, temperature, reduction, chunk_size,
        process_group: as in :func:`~logitlab.torch.linear_cross_entropy`.

    Example:
        >>> import torch
        >>> from logitlab.torch import LinearCrossEntropy
        >>> head = torch.nn.Linear(8, 13, bias=False)
        >>> loss_fn = LinearCrossEntropy(z_loss=1e-4)
        >>> loss = loss_fn(torch.randn(2, 5, 8), head.weight, torch.randint(0, 13, (2, 5)))
        >>> loss.shape
        torch.Size([])
    """

    def __init__(
        self,
        *,
        ignore_index: int = -100,
        label_smoothing: float = 0.0,
        z_loss: float = 0.0,
        softcap: float | None = None,
        temperature: float = 1.0,
        reduction: str = "mean",
        chunk_size: int | None = None,
        process_group: Any = None,
    ) -> None:
        super().__init__()
        self.options: dict[str, Any] = dict(
            ignore_index=ignore_index,
            label_smoothing=label_smoothing,
            z_loss=z_loss,
            softcap=softcap,
            temperature=temperature,
            reduction=reduction,
            chunk_size=chunk_size,
            process_group=process_group,
        )

    def forward(
        self,
        hidden: torch.Tensor,
        weight: torch.Tensor,
        target: torch.Tensor,
        bias: torch.Tensor | None = None,
        return_stats: bool = False,
    ) -> Any:
        return linear_cross_entropy(
            hidden, weight, target, bias=bias, return_stats=return_stats, **self.options
        )

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.options.items() if k != "process_group")


class CrossEntropy(nn.Module):
    """Loss module: the in-memory fused :func:`logitlab.torch.cross_entropy`.

    Example:
        >>> import torch
        >>> from logitlab.torch import CrossEntropy
        >>> CrossEntropy(label_smoothing=0.1)(torch.zeros(3, 4), torch.tensor([0, 1, 2])).item()
        1.386...
    """

    def __init__(
        self,
        *,
        weight: torch.Tensor | None = None,
        ignore_index: int = -100,
        label_smoothing: float = 0.0,
        temperature: float = 1.0,
        reduction: str = "mean",
        inplace_backward: bool = False,
    ) -> None:
        super().__init__()
        self.register_buffer("weight", weight)
        self.options: dict[str, Any] = dict(
            ignore_index=ignore_index,
            label_smoothing=label_smoothing,
            temperature=temperature,
            reduction=reduction,
            inplace_backward=inplace_backward,
        )

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return cross_entropy(logits, target, weight=self.weight, **self.options)


class LinearKLDivergence(nn.Module):
    """Loss module: :func:`logitlab.torch.linear_kl_divergence` (student head passed in forward).

    Example:
        >>> import torch
        >>> from logitlab.torch import LinearKLDivergence
        >>> kl = LinearKLDivergence(temperature=2.0)
        >>> h, w = torch.randn(4, 3), torch.randn(6, 3)
        >>> abs(kl(h, w, teacher_logits=h @ w.T).item()) < 1e-6
        True
    """

    def __init__(
        self,
        *,
        temperature: float = 1.0,
        direction: str = "forward",
        reduction: str = "mean",
        chunk_size: int | None = None,
    ) -> None:
        super().__init__()
        self.options: dict[str, Any] = dict(
            temperature=temperature, direction=direction, reduction=reduction, chunk_size=chunk_size
        )

    def forward(
        self,
        hidden: torch.Tensor,
        weight: torch.Tensor,
        teacher_logits: torch.Tensor | None = None,
        **teacher: Any,
    ) -> torch.Tensor:
        return linear_kl_divergence(hidden, weight, teacher_logits, **teacher, **self.options)

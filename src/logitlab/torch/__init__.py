"""PyTorch-specific parts of logitlab: fused chunked losses, autograd Functions, the logit monitor.

* :func:`cross_entropy`: fused in-memory cross-entropy (gradient in the forward pass, optional
  in-place backward).
* :func:`linear_cross_entropy` / :class:`LinearCrossEntropy`: cross-entropy of ``hidden @ W.T``
  without the N x V logits, with z-loss, soft-capping, temperature, statistics and vocab-parallel.
* :func:`linear_kl_divergence`: chunked distillation loss.
* :class:`LogitMonitor`: training-time forward hook.
"""

from logitlab.torch.losses import (
    LinearCrossEntropy,
    LossStats,
    cross_entropy,
    linear_cross_entropy,
    linear_kl_divergence,
)
from logitlab.torch.monitor import LogitMonitor, LogitWarning

__all__ = [
    "LinearCrossEntropy",
    "LogitMonitor",
    "LogitWarning",
    "LossStats",
    "cross_entropy",
    "linear_cross_entropy",
    "linear_kl_divergence",
]

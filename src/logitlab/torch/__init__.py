"""PyTorch-specific parts of logitlab: autograd Functions, fused chunked losses, distributed.

* :func:`linear_cross_entropy`: fused ``hidden @ weight.T`` + cross-entropy, chunked so that the
  ``N x V`` logits never exist; z-loss, soft-capping, temperature, label smoothing, statistics and
  vocabulary parallelism.
* :func:`linear_kl_divergence`: the same for distillation against teacher logits or a teacher
  head.
* :func:`cross_entropy`: in-memory fused cross-entropy, optionally writing its gradient over the
  logits (``inplace_backward=True``).
* :class:`LinearCrossEntropy`, :class:`CrossEntropy`, :class:`LinearKLDivergence`:
  :class:`torch.nn.Module` wrappers.
* :class:`LogitMonitor`: a training-time forward hook on the logits.
"""

# isort: split
from logitlab.torch._cross_entropy import cross_entropy
from logitlab.torch._linear_ce import LinearCEStats, default_chunk_size, linear_cross_entropy
from logitlab.torch.kl import linear_kl_divergence
from logitlab.torch.modules import CrossEntropy, LinearCrossEntropy, LinearKLDivergence
from logitlab.torch.monitor import LogitMonitor, LogitWarning

__all__ = [
    "CrossEntropy",
    "LinearCEStats",
    "LinearCrossEntropy",
    "LinearKLDivergence",
    "LogitMonitor",
    "LogitWarning",
    "cross_entropy",
    "default_chunk_size",
    "linear_cross_entropy",
    "linear_kl_divergence",
]

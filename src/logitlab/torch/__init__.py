"""PyTorch-specific parts of logitlab: autograd Functions, fused chunked losses, distributed."""

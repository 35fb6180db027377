"""Shared by the torch losses: their typed configurations, the tensor type and device checks
(messages name the offending argument; value and option checks are :mod:`logitlab._checks`'),
and the huge-page scratch allocator for their large CPU buffers."""

from __future__ import annotations

import ctypes
import sys
from dataclasses import dataclass
from typing import Any

import torch

# isort: split
from logitlab._checks import CEOptions
from logitlab._config import current


@dataclass(frozen=True)
class LinearCEConfig:
    """Checked configuration of one :func:`logitlab.torch.linear_cross_entropy` call."""

    loss: CEOptions
    chunk_size: int | None
    stats: bool
    group: Any  # a torch.distributed process group, or None
    offset: int  # the first vocabulary index of this rank's shard
    layout: str  # LOGITLAB_CHUNK_LAYOUT at the call: "auto", "rows" or "cols"


@dataclass(frozen=True)
class LinearKLConfig:
    """Checked configuration of one :func:`logitlab.torch.linear_kl_divergence` call."""

    temperature: float
    direction: str  # "forward": KL(teacher || student); "reverse": KL(student || teacher)
    reduction: str  # "mean" or "sum"
    chunk_size: int | None


@dataclass(frozen=True)
class KLTargets:
    """What :func:`logitlab.torch.linear_kl_divergence` fits the student head to, detached (the
    teacher receives no gradient): the teacher's ``(N, V)`` logits, or its head ``hidden @
    weight.T + bias`` formed chunk by chunk; and the mask of the tokens that count."""

    mask: torch.Tensor
    logits: torch.Tensor | None = None
    hidden: torch.Tensor | None = None
    weight: torch.Tensor | None = None
    bias: torch.Tensor | None = None

    def chunk(self, i: int, j: int, dtype: torch.dtype) -> torch.Tensor:
        """The teacher's logits of tokens ``[i, j)``, in ``dtype``."""
        if self.logits is not None:
            return self.logits[i:j].to(dtype)
        assert self.hidden is not None and self.weight is not None
        return head_logits(self.hidden[i:j], self.weight, self.bias).to(dtype)


def head_logits(h: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
    """``h @ w.T + b`` (one GEMM: the bias rides in ``addmm``)."""
    return torch.mm(h, w.t()) if b is None else torch.addmm(b, h, w.t())


_FLOATS = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
_INTS = (torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8)


def check_float(x: object, name: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dtype not in _FLOATS:
        raise TypeError(f"{name} must be a floating tensor (float16/bfloat16/32/64), got {x.dtype}")
    return x


def check_target(t: object, name: str = "target") -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of class indices, got {type(t).__name__}")
    if t.dtype not in _INTS:
        raise TypeError(f"{name} must hold integer class indices, got dtype {t.dtype}")
    return t


def check_same_device(ref: torch.Tensor, x: torch.Tensor | None, name: str, ref_name: str) -> None:
    if x is not None and x.device != ref.device:
        raise ValueError(f"{name} is on {x.device} but {ref_name} is on {ref.device}")


_HUGE = 2 << 20
_madvise: Any = None


def _madvise_fn() -> Any:
    global _madvise
    if _madvise is None:
        _madvise = False
        if sys.platform == "linux":
            try:
                libc = ctypes.CDLL(None, use_errno=True)
                fn = libc.madvise
                fn.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
                fn.restype = ctypes.c_int
                _madvise = fn
            except (OSError, AttributeError):
                pass
    return _madvise


def empty_scratch(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """``torch.empty`` whose CPU pages are backed by transparent huge pages where Linux allows.

    A fresh multi-megabyte CPU tensor is mapped on first touch, one 4 KiB page fault at a time:
    measured on the 2-core VM, writing a new 180 MB buffer took 67-97 ms against 12-18 ms for
    writing it again, i.e. the faults cost as much as the row kernel's whole pass over it. With
    ``madvise(MADV_HUGEPAGE)`` issued before the first touch (THP mode ``madvise``, the common
    default) the same first write took 21-23 ms. Only the 2 MiB-aligned interior is advised; the
    hint is ignored where THP is off (``LOGITLAB_HUGEPAGES=0`` skips it).
    """
    t = torch.empty(shape, dtype=dtype, device=device)
    nbytes = t.numel() * t.element_size()
    if device.type != "cpu" or nbytes < 4 * _HUGE or not current().hugepages:
        return t
    fn = _madvise_fn()
    if fn:
        p = t.data_ptr()
        a = -(-p // _HUGE) * _HUGE
        e = (p + nbytes) // _HUGE * _HUGE
        if e > a:
            fn(a, e - a, 14)  # MADV_HUGEPAGE; a failure only means ordinary pages
    return t

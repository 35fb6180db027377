"""The core's one way up to the torch autograd layer.

The public functions (:mod:`logitlab.special`, :mod:`logitlab.losses`) check and convert their
arguments, then compute either directly or, for torch tensors that autograd will differentiate,
through the autograd Functions of :mod:`logitlab.torch._autograd`, whose forward passes call the
same formulas (:mod:`logitlab._formulas`, :mod:`logitlab._rows`) and whose backward passes are
closed-form at every order. That hop is the only import from the core to a higher layer; it is
made here, on first use (torch is already imported then), and nowhere else: the import-linter
contract in ``pyproject.toml`` names this module as its single exception.
"""

from __future__ import annotations

from types import ModuleType

__all__ = ["autograd"]


def autograd() -> ModuleType:
    """:mod:`logitlab.torch._autograd`, imported on first use."""
    from logitlab.torch import _autograd

    return _autograd

"""Setups that tests/test_bench_harness.py times: a worker loads this file by path, so it must
not import the harness (a ``before:`` worker runs a tree that has none)."""

from __future__ import annotations

import os
import sys
from typing import Any

import numpy as np


def sum_setup(impl: str, n: int) -> Any:
    """A NumPy reduction or a Python loop over the same n floats."""
    x = np.arange(n, dtype=np.float64)
    if impl == "numpy":
        return lambda: float(x.sum())
    if impl == "python":
        values = x.tolist()
        return lambda: sum(values)
    raise ValueError(f"unknown impl {impl!r}")


def alloc_setup(mb: int, keep: bool = False) -> dict[str, Any]:
    """A step that allocates and touches ``mb`` MiB (and says it keeps them, with ``keep``)."""
    box: list[Any] = []

    def step() -> None:
        box.clear()
        box.append(np.ones(mb << 18, dtype=np.float32))

    return dict(step=step, prepare=box.clear, keep_bytes=(mb << 20) if keep else 0)


def mmap_setup(path: str) -> dict[str, Any]:
    """Reads a memory-mapped file: resident, but file-backed, not anonymous memory."""
    return dict(step=lambda: float(np.load(path, mmap_mode="r").sum(dtype=np.float64)))


def environment_setup() -> dict[str, Any]:
    """Reports what the worker sees: its environment, its logitlab, whether torch is loaded."""
    import logitlab

    info = dict(
        mark=os.environ.get("BENCH_MARK", ""),
        logitlab=logitlab.__file__,
        torch_loaded="torch" in sys.modules,
        mmap_threshold=os.environ.get("MALLOC_MMAP_THRESHOLD_", ""),
        pid=os.getpid(),
    )
    return dict(step=lambda: print("{not a reply"), info=info)


def failing_setup(where: str) -> Any:
    """Fails in the setup or in the step."""
    if where == "setup":
        raise ValueError("setup failed on purpose")

    def step() -> None:
        raise ZeroDivisionError("step failed on purpose")

    return step


def bad_return_setup() -> Any:
    """Returns neither a callable nor a dict with a step."""
    return 42

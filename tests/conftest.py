"""Shared fixtures: the array backends every core test runs on, and the hypothesis profile."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci",
    max_examples=60,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("dev", max_examples=300, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


class Backend:
    """Converts NumPy test data into one array library and back."""

    def __init__(self, name: str) -> None:
        self.name = name
        if name == "torch":
            import torch

            self.mod: Any = torch
        elif name == "array_api_strict":
            import array_api_strict

            self.mod = array_api_strict
        else:
            self.mod = np

    def asarray(self, a: Any, dtype: Any = None) -> Any:
        arr = np.asarray(a, dtype=dtype)
        if self.name == "torch":
            return self.mod.from_numpy(np.ascontiguousarray(arr))
        if self.name == "array_api_strict":
            return self.mod.asarray(arr)
        return arr

    def to_numpy(self, a: Any) -> np.ndarray:
        if self.name == "torch":
            return a.detach().cpu().numpy()
        if self.name == "array_api_strict":
            return np.asarray(a._array)  # array_api_strict keeps a NumPy array inside
        return np.asarray(a)

    def __repr__(self) -> str:
        return self.name


BACKENDS = ["numpy", "torch", "array_api_strict"]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> Backend:
    if request.param == "torch":
        pytest.importorskip("torch")
    if request.param == "array_api_strict":
        pytest.importorskip("array_api_strict")
    return Backend(request.param)


@pytest.fixture
def to_np() -> Callable[[Any], np.ndarray]:
    def conv(a: Any) -> np.ndarray:
        if hasattr(a, "detach"):
            return a.detach().cpu().numpy()
        if hasattr(a, "_array"):
            return np.asarray(a._array)
        return np.asarray(a)

    return conv


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "deliberate_difference(why): logitlab differs from the peer on purpose (documented); the "
        "case asserts logitlab's documented behaviour (tests/conformance)",
    )


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread_for_conformance(request: pytest.FixtureRequest) -> Iterator[None]:
    """The conformance suite's inputs are tiny: with two intra-op threads on a busy two-core
    machine each torch reduction waits on an OpenMP barrier (a 2x4 ``max`` measured 1.8 ms
    against 0.03 ms with one thread). One thread for those modules, restored afterwards.

    It lives here rather than in ``tests/conformance/conftest.py``: a second ``conftest`` module
    name clashes with this one when ``--doctest-modules`` collects the test folders."""
    if "conformance" not in request.path.parts:
        yield
        return
    try:
        import torch
    except ImportError:  # the NumPy-only cases still run
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)

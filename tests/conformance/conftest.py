"""The conformance suite: the peers' own test cases (SciPy, PyTorch, optax, torchmetrics) run
against logitlab. See ``tests/conformance/_support.py`` for how a case is labelled and
``benchmarks/conformance_summary.py`` for the per-peer table."""

from __future__ import annotations

from collections.abc import Iterator

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "deliberate_difference(why): logitlab differs from the peer on purpose (documented); the "
        "case asserts logitlab's documented behaviour",
    )


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread() -> Iterator[None]:
    """Every input here is tiny: with two intra-op threads on a busy two-core machine each torch
    reduction waits on an OpenMP barrier (a 2x4 ``max`` measured 1.8 ms against 0.03 ms with
    one thread). One thread for this suite's modules; the previous setting is restored after."""
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

"""The conformance suite: the peers' own test cases (SciPy, PyTorch, optax, torchmetrics) run
against logitlab. See ``tests/conformance/_marks.py`` for how a case is labelled and
``benchmarks/conformance_summary.py`` for the per-peer table."""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "deliberate_difference(why): logitlab differs from the peer on purpose (documented); the "
        "case asserts logitlab's documented behaviour",
    )

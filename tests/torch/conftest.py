"""One intra-op thread per pytest-xdist worker: two workers x two OpenMP teams on two cores spin
against each other and make tiny tests 100x slower."""

import os

import pytest

torch = pytest.importorskip("torch")

if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)

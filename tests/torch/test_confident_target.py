"""The target entry of the cross-entropy gradient on a confident, correct row, on every fused path.

There ``p_t - 1 = -s / (1 + s)``: tiny (``-4.2e-18`` for ``[0, -40]``) and exact from ``s``, while
``p_t - 1`` formed by subtraction cancels to 0 (a relative error of 1). The reference is mpmath at
60 digits on the logits as the tested dtype holds them.
"""

from __future__ import annotations

import mpmath
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from logitlab import _config  # noqa: E402
from logitlab._rows.fused import native_available  # noqa: E402
from logitlab.torch import cross_entropy, linear_cross_entropy  # noqa: E402

mpmath.mp.dps = 60
ROWS = [[0.0, -40.0, -41.0], [3.0, -30.0, -28.5], [10.0, -9.0, -12.0]]
TARGETS = [0, 0, 0]  # each row's maximum: confident and correct


def _exact(row: list[float], t: int, dt: torch.dtype) -> list[float]:
    """``softmax(row) - onehot(t)`` at 60 digits, of the row rounded to ``dt``."""
    x = [mpmath.mpf(float(v)) for v in torch.tensor(row, dtype=dt)]
    e = [mpmath.exp(v - max(x)) for v in x]
    tot = mpmath.fsum(e)
    return [float(ei / tot - (1 if i == t else 0)) for i, ei in enumerate(e)]


def _check(g: torch.Tensor, dt: torch.dtype, ulps: float) -> None:
    eps = float(torch.finfo(dt).eps)
    for row, t, got in zip(ROWS, TARGETS, g.tolist(), strict=True):
        ref = _exact(row, t, dt)
        err = abs(got[t] - ref[t])
        assert err <= ulps * eps * abs(ref[t]), (row, got[t], ref[t])


PATHS = [("torch", torch.float64), ("torch", torch.float32)]
if native_available():
    PATHS += [("native", torch.float32)]


@pytest.mark.parametrize("path, dt", PATHS, ids=[f"{p}-{d}" for p, d in PATHS])
@pytest.mark.parametrize("inplace", [False, True])
def test_in_memory_cross_entropy(path: str, dt: torch.dtype, inplace: bool) -> None:
    with _config.override(native=None if path == "torch" else "best"):
        x = torch.tensor(ROWS, dtype=dt, requires_grad=True)
        loss = cross_entropy(x, torch.tensor(TARGETS), reduction="sum", inplace_backward=inplace)
        (g,) = torch.autograd.grad(loss, x)
    _check(g, dt, 4 if dt == torch.float64 else 16)


@pytest.mark.parametrize("layout", ["rows", "cols"])
@pytest.mark.parametrize("path, dt", PATHS, ids=[f"{p}-{d}" for p, d in PATHS])
def test_linear_cross_entropy(path: str, dt: torch.dtype, layout: str) -> None:
    # h = I makes h W^T exact: the logits are W^T itself and grad_W the logits' gradient
    n, v = len(ROWS), len(ROWS[0])
    w = torch.tensor(ROWS, dtype=dt).t().contiguous().requires_grad_()
    h = torch.eye(n, dtype=dt)
    with _config.override(native=None if path == "torch" else "best", chunk_layout=layout):
        loss = linear_cross_entropy(h, w, torch.tensor(TARGETS), reduction="sum")
        (gw,) = torch.autograd.grad(loss, w)
    assert gw.shape == (v, n)
    _check(gw.t(), dt, 4 if dt == torch.float64 else 16)


def test_the_reference_is_not_zero() -> None:
    # the quantity under test is far below the rounding of 1: a subtraction gives exactly 0
    ref = _exact(ROWS[0], 0, torch.float64)[0]
    assert ref == pytest.approx(-float(np.exp(-40.0) + np.exp(-41.0)), rel=1e-12)
    assert 1.0 + ref == 1.0

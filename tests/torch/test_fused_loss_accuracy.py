"""The loss of confident rows on every fused cross-entropy path, against mpmath.

A confident row's loss is ``log1p(s)``, ``s`` a sum of terms ``exp(-(a - z_i) / T)`` whose relative
error is ``(a - z_i) / T`` times that of the exponent: the rounding of ``a - z`` and of the division
by ``T`` cost 8 ulps at 25 nats and 58 at ``T = 0.3`` on the float64 torch path, and the native
float32 kernel flushed terms below ``e^-87`` (the loss of ``[88, 0 x 8]`` read 0, not 4.8e-38).
The reference is mpmath at 120 digits on the logits and the temperature as the tested dtype holds
them (``log1p`` of the sum, so that the tiny loss is not a difference of two large numbers).
"""

from __future__ import annotations

import mpmath
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from logitlab import _config  # noqa: E402
from logitlab._rows.fused import native_available  # noqa: E402
from logitlab.torch import cross_entropy, linear_cross_entropy  # noqa: E402


def _rows(dt: torch.dtype) -> torch.Tensor:
    # the target class 0 leads by 5 to 40 nats (times T below); a few rows sit at the float32
    # subnormal edge, where every other term is below e^-87
    rng = np.random.default_rng(7)
    x = rng.normal(size=(24, 40)) * 2.0
    x[:, 0] = x[:, 1:].max(axis=1) + np.linspace(5.0, 40.0, 24)
    edge = np.zeros((3, 40))
    edge[:, 0] = [88.0, 95.0, 60.0]
    return torch.tensor(np.concatenate([x, edge]), dtype=dt)


def _exact(x: torch.Tensor, temperature: float) -> list[float]:
    mpmath.mp.dps = 120
    t = mpmath.mpf(float(torch.tensor(temperature, dtype=x.dtype)))
    out = []
    for row in x.double().tolist():
        z = [mpmath.mpf(v) / t for v in row]
        out.append(float(mpmath.log1p(mpmath.fsum(mpmath.exp(v - z[0]) for v in z[1:]))))
    return out


def _check(got: torch.Tensor, x: torch.Tensor, temperature: float, ulps: float) -> None:
    fi = torch.finfo(x.dtype)
    for g, r in zip(got.double().tolist(), _exact(x, temperature), strict=True):
        # below the smallest normal the spacing is absolute: half a subnormal step per term
        tol = max(ulps * fi.eps * abs(r), x.shape[1] * fi.smallest_normal * fi.eps)
        assert abs(g - r) <= tol, (g, r, abs(g - r) / (fi.eps * r))


PATHS = [("torch", torch.float64), ("torch", torch.float32)]
if native_available():
    PATHS += [("native", torch.float32)]
IDS = [f"{p}-{str(d)[6:]}" for p, d in PATHS]
TEMPS = [1.0, 0.5, 0.3, 1.7]


@pytest.mark.parametrize("temperature", TEMPS)
@pytest.mark.parametrize("path, dt", PATHS, ids=IDS)
def test_in_memory_cross_entropy(path: str, dt: torch.dtype, temperature: float) -> None:
    x = _rows(dt) * temperature
    t = torch.zeros(x.shape[0], dtype=torch.int64)
    with _config.override(native=None if path == "torch" else "best"):
        got = cross_entropy(x, t, temperature=temperature, reduction="none")
        xg = x.clone().requires_grad_()
        with_grad = cross_entropy(xg, t, temperature=temperature, reduction="none")
    _check(got, x, temperature, 4)
    _check(with_grad.detach(), x, temperature, 4)


@pytest.mark.parametrize("layout", ["rows", "cols"])
@pytest.mark.parametrize("path, dt", PATHS, ids=IDS)
def test_linear_cross_entropy(path: str, dt: torch.dtype, layout: str) -> None:
    # h = I makes h W^T exact: the logits are W^T itself
    x = _rows(dt)
    n = x.shape[0]
    w = x.t().contiguous().requires_grad_()
    t = torch.zeros(n, dtype=torch.int64)
    with _config.override(native=None if path == "torch" else "best", chunk_layout=layout):
        got = linear_cross_entropy(torch.eye(n, dtype=dt), w, t, reduction="none")
    # the class-major kernel keeps the plain exp(-(a - z)) of its online softmax (no compensation:
    # up to ~10 ulps on a loss below e^-8); its near-certain rows are redone by the row kernel
    _check(got.detach(), x, 1.0, 12 if layout == "cols" and path == "native" else 4)


def test_the_edge_rows_are_below_the_normal_range() -> None:
    # the quantity under test: every term of the last rows is a float32 subnormal or near it
    r = _exact(_rows(torch.float64), 1.0)
    assert r[-3] == pytest.approx(39 * float(np.exp(-88.0)), rel=1e-12)
    assert float(np.exp(-88.0)) < torch.finfo(torch.float32).smallest_normal


@pytest.mark.parametrize("path, dt", PATHS, ids=IDS)
def test_confident_rows_are_found_whatever_lane_the_runner_up_is_in(
    path: str, dt: torch.dtype
) -> None:
    # The native kernel tells a confident row from the largest maximum of the vector lanes other
    # than the maximum's (index i sits in lane i % 8): a lower bound of the runner-up, so a
    # runner-up in the maximum's own lane (index 8, 16) makes a row look confident that is not.
    # Such a row takes the compensated form, which must be as exact as the cheap one.
    rows = []
    for k, gap, rest in [(8, 1.0, 30.0), (16, 3.0, 25.0), (9, 12.0, 30.0), (8, 12.0, 14.0)]:
        r = np.full(40, -rest) + np.linspace(0.0, 0.5, 40)
        r[0], r[k] = 0.0, -gap
        rows.append(r)
    x = torch.tensor(np.array(rows), dtype=dt)
    t = torch.zeros(x.shape[0], dtype=torch.int64)
    with _config.override(native=None if path == "torch" else "best"):
        for temperature in (1.0, 0.3):
            got = cross_entropy(x * temperature, t, temperature=temperature, reduction="none")
            _check(got, x * temperature, temperature, 4)

"""fit_temperature: agrees with scipy's bounded scalar minimiser, streams, handles edge cases."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import minimize_scalar

from logitlab.io import open_array
from logitlab.metrics import fit_temperature
from logitlab.metrics.temperature import nll_and_derivatives


def _data(
    seed: int, n: int = 3000, c: int = 8, sharp: float = 3.0
) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, c, n)
    z = rng.standard_normal((n, c)) + 1.5 * np.eye(c)[y]
    return sharp * z, y


@pytest.mark.parametrize(("seed", "sharp"), [(0, 3.0), (1, 0.3), (2, 1.0)])
def test_agrees_with_scipy(seed: int, sharp: float) -> None:
    z, y = _data(seed, sharp=sharp)
    r = fit_temperature(z, y)
    ref = minimize_scalar(
        lambda t: nll_and_derivatives(z, y, 1 / t)[0],
        bounds=(1e-3, 100),
        method="bounded",
        options={"xatol": 1e-12},
    )
    assert r.converged
    assert r.temperature == pytest.approx(ref.x, rel=1e-6)
    assert r.nll_after <= r.nll_before + 1e-15
    assert r.iterations < 30


def test_derivatives_match_finite_differences() -> None:
    z, y = _data(3, 500)
    b, h = 0.7, 1e-5
    f, g, gg = nll_and_derivatives(z, y, b)
    fp, gp, _ = nll_and_derivatives(z, y, b + h)
    fm, gm, _ = nll_and_derivatives(z, y, b - h)
    assert g == pytest.approx((fp - fm) / (2 * h), rel=1e-6)
    assert gg == pytest.approx((gp - gm) / (2 * h), rel=1e-5)


def test_streams_from_a_memory_mapped_file(tmp_path) -> None:  # type: ignore[no-untyped-def]
    z, y = _data(4, 2000)
    np.save(tmp_path / "z.npy", z.astype(np.float32))
    src = open_array(tmp_path / "z.npy")
    r_file = fit_temperature(src, y)
    r_mem = fit_temperature(z.astype(np.float32), y)
    assert r_file.temperature == pytest.approx(r_mem.temperature, rel=1e-12)


def test_separable_data_drives_temperature_down_and_stops() -> None:
    y = np.array([0, 1, 0, 1])
    z = np.stack([1.0 - y, y.astype(float)], 1) * 5
    r = fit_temperature(z, y, max_iter=200)
    # NLL decreases for every beta: the fit sharpens until the gradient is below tolerance
    assert r.temperature < 0.5 and r.nll_after < 1e-8 and r.iterations < 200


def test_bad_input() -> None:
    with pytest.raises(ValueError, match="shape"):
        fit_temperature(np.zeros((3, 2, 2)), np.zeros(3, dtype=int))
    with pytest.raises(ValueError, match="not a class index"):
        fit_temperature(np.zeros((2, 2)), np.array([0, 5]))


def test_binary_logits_are_the_rows_zero_z() -> None:
    # (N,) logits of class 1, as every other metric takes them: softmax((0, z) / T) = sigmoid(z / T)
    rng = np.random.default_rng(3)
    z = rng.normal(size=400) * 4
    y = (rng.random(400) < 1 / (1 + np.exp(-z / 2.5))).astype(np.int64)
    one = fit_temperature(z, y)
    two = fit_temperature(np.stack([np.zeros_like(z), z], axis=1), y)
    assert one.converged and one.temperature == two.temperature
    assert one.nll_after == two.nll_after and one.ece_after == two.ece_after
    assert 1.5 < one.temperature < 4.0

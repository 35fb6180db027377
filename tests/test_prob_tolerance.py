"""Probabilities are validated with the tolerance of the dtype they come in (issue 13 item 9).

Every function that takes probabilities must accept the softmax output of any floating dtype
(float16, bfloat16, float32, float64; NumPy and torch; rows up to 2e5 classes) and still reject
logits and unnormalised scores. The softmax outputs come from torch and SciPy, never from logitlab.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import scipy.special
from hypothesis import given
from hypothesis import strategies as st

import logitlab as ll
from logitlab.metrics import entropy_stats

torch = pytest.importorskip("torch")

DTYPES = ["float16", "bfloat16", "float32", "float64"]


def _softmax_output(
    backend: str, dtype: str, n: int, scale: float, seed: int, rows: int = 6
) -> Any:
    """Rows of softmax output in ``dtype``, made by torch or SciPy as a user would make them."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, n, dtype=torch.float64, generator=g) * scale
    if backend == "torch":
        # torch computes half-precision softmax internally in float32 and rounds the output
        return torch.softmax(x.to(getattr(torch, dtype)), dim=-1)
    xn = x.numpy()
    if dtype == "float16":  # SciPy's float16 softmax overflows its own sum for large n
        return scipy.special.softmax(xn.astype(np.float32), axis=-1).astype(np.float16)
    return scipy.special.softmax(xn.astype(dtype), axis=-1)


def _labels(p: Any) -> Any:
    y = np.arange(p.shape[0]) % p.shape[1]
    return torch.from_numpy(y) if isinstance(p, torch.Tensor) else y


CONSUMERS: dict[str, Callable[[Any, Any], object]] = {
    "entropy": lambda p, y: ll.entropy(probs=p),
    "kl_divergence": lambda p, y: ll.kl_divergence(p, p),
    "js_divergence": lambda p, y: ll.js_divergence(p, p),
    # a soft target is cast to the logits' dtype: the check must still use the target's own
    "cross_entropy soft target": lambda p, y: ll.cross_entropy(
        (torch.zeros if isinstance(p, torch.Tensor) else np.zeros)(
            tuple(p.shape), dtype=torch.float64 if isinstance(p, torch.Tensor) else np.float64
        ),
        p,
    ),
    "cross_entropy probs": lambda p, y: ll.cross_entropy(probs=p, target=y),
    "perplexity probs": lambda p, y: ll.perplexity(probs=p, target=y),
    "binary_cross_entropy": lambda p, y: ll.binary_cross_entropy(p, p),
    "entropy positional": lambda p, y: ll.entropy(p, p),
    "calibration_error": lambda p, y: ll.calibration_error(probs=p, target=y),
    "brier_score": lambda p, y: ll.brier_score(probs=p, target=y),
    "brier_decomposition": lambda p, y: ll.brier_decomposition(probs=p, target=y),
    "nll": lambda p, y: ll.nll(probs=p, target=y),
    "entropy_stats": lambda p, y: entropy_stats(probs=p),
    "Evaluator": lambda p, y: ll.Evaluator(from_probs=True).update(p, y),
    # labels on the argmax: a label with probability 0 (float16 underflow) is an error of its own
    "fit_temperature": lambda p, y: ll.fit_temperature(
        probs=p, target=np.asarray(p.argmax(-1)), max_iter=2
    ),
}


def _accepts_all(p: Any) -> None:
    y = _labels(p)
    for name, fn in CONSUMERS.items():
        try:
            fn(p, y)
        except ValueError as exc:  # pragma: no cover - the failure message is the point
            raise AssertionError(f"{name} rejected {p.dtype} softmax output: {exc}") from exc


def test_issue_repro_float32_softmax() -> None:
    p = torch.randn(4, 32, 5).softmax(-1).reshape(-1, 5)
    y = torch.randint(0, 5, (128,))
    _accepts_all(p)
    assert 0 <= ll.calibration_error(probs=p, target=y).value <= 1


@given(
    backend=st.sampled_from(["numpy", "torch"]),
    dtype=st.sampled_from(DTYPES),
    n=st.sampled_from([2, 3, 7, 10, 100, 1000, 5000]),
    scale=st.floats(0.0, 30.0),
    seed=st.integers(0, 2**16),
)
def test_softmax_output_of_every_dtype_is_accepted(
    backend: str, dtype: str, n: int, scale: float, seed: int
) -> None:
    if backend == "numpy" and dtype == "bfloat16":
        return  # NumPy has no bfloat16
    _accepts_all(_softmax_output(backend, dtype, n, scale, seed))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [100_000, 200_000])
def test_large_vocabularies_are_accepted(dtype: str, n: int) -> None:
    for scale in (1.0, 10.0):
        p = _softmax_output("torch", dtype, n, scale, seed=n, rows=2)
        y = _labels(p)
        ll.entropy(probs=p)
        ll.kl_divergence(p, p)
        ll.calibration_error(probs=p, target=y)
        ll.nll(probs=p, target=y)
        ll.Evaluator(from_probs=True).update(p, y)
        if dtype != "bfloat16":
            ll.entropy(probs=p.numpy())


@pytest.mark.parametrize("backend", ["numpy", "torch"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [2, 10, 100_000])
def test_unnormalised_scores_and_logits_are_rejected(backend: str, dtype: str, n: int) -> None:
    if backend == "numpy" and dtype == "bfloat16":
        pytest.skip("NumPy has no bfloat16")
    p = _softmax_output(backend, dtype, n, 1.0, seed=3, rows=2)
    y = _labels(p)
    for bad in (p * 0.5, p * 0.9):
        with pytest.raises(ValueError, match="must sum to 1"):
            ll.entropy(probs=bad)
        with pytest.raises(ValueError, match="must sum to 1"):
            ll.calibration_error(probs=bad, target=y)
        with pytest.raises(ValueError, match="must sum to 1"):
            ll.Evaluator(from_probs=True).update(bad, y)
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(2, n, generator=g) * 3
    logits[:, 0] = -2.0  # logits have negative entries (in [0, 1] they would be "unnormalised")
    logits = logits.to(getattr(torch, dtype))
    logits = logits if backend == "torch" else logits.float().numpy().astype(dtype)
    with pytest.raises(ValueError, match="logits"):
        ll.nll(probs=logits, target=y)
    with pytest.raises(ValueError, match="logits"):
        ll.kl_divergence(logits, p)


def test_float32_values_given_as_float64_are_checked_as_float64() -> None:
    # the tolerance follows the dtype given: float32 softmax output cast to float64 is not a
    # float64 distribution, and the message says what to do
    p = torch.randn(3, 50).softmax(-1)
    with pytest.raises(ValueError, match="pass them as float32"):
        ll.entropy(probs=p.double())
    ll.entropy(probs=p)  # as float32: accepted


def test_tolerance_is_a_few_ulps_times_the_row_length() -> None:
    from logitlab._checks import probability_tolerance

    eps64, eps32 = np.finfo(np.float64).eps, np.finfo(np.float32).eps
    assert probability_tolerance(1000, eps64) == pytest.approx(4 * eps64 * 1001)
    assert probability_tolerance(1000, eps32) == pytest.approx(4 * eps32 * 1001)
    # half precision: its own rounding plus a float32 normalisation, not n half-precision ulps
    eps16 = float(np.finfo(np.float16).eps)
    assert probability_tolerance(100_000, eps16) == pytest.approx(4 * (eps16 + 1e5 * eps32))
    # float64 is checked to float64 precision: a row off by 1e-12 is rejected
    with pytest.raises(ValueError, match="must sum to 1"):
        ll.entropy(probs=np.array([0.5, 0.5 - 1e-12]))

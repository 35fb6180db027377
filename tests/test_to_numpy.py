"""``_array.to_numpy``, the one host-conversion helper: bfloat16 (which NumPy lacks) is widened
to float32 exactly; every other dtype keeps its own."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.special

from logitlab._array import to_numpy

torch = pytest.importorskip("torch")


def _bf16_bits_as_float32(bits: np.ndarray) -> np.ndarray:
    """The float32 whose upper 16 bits are the bfloat16 pattern (the definition of bfloat16)."""
    return (bits.astype(np.uint32) << 16).view(np.float32)


def test_bfloat16_widens_to_float32_exactly() -> None:
    # every bfloat16 bit pattern, NaNs and infinities included
    bits = np.arange(1 << 16, dtype=np.uint16)
    t = torch.from_numpy(bits.view(np.int16)).view(torch.bfloat16)
    got = to_numpy(None, t)  # raised "Got unsupported ScalarType BFloat16"
    assert got.dtype == np.float32 and got.shape == (1 << 16,)
    # bit for bit (NaN payloads included): the widening is exact
    np.testing.assert_array_equal(got.view(np.uint32), _bf16_bits_as_float32(bits).view(np.uint32))


def test_bfloat16_with_grad_and_strides() -> None:
    x = torch.linspace(-3, 3, 24, dtype=torch.float32).reshape(4, 6)
    t = x.to(torch.bfloat16).requires_grad_()[:, ::2]
    got = to_numpy(None, t)
    want = t.detach().float().numpy()  # torch's own exact widening
    assert got.dtype == np.float32 and got.shape == (4, 3)
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize(
    ("tdt", "ndt"),
    [
        ("float16", np.float16),
        ("float32", np.float32),
        ("float64", np.float64),
        ("int64", np.int64),
        ("bool", np.bool_),
    ],
)
def test_other_dtypes_keep_their_own(tdt: str, ndt: type) -> None:
    t = torch.tensor([0, 1, 1, 0], dtype=getattr(torch, tdt))
    got = to_numpy(None, t)
    assert got.dtype == ndt
    np.testing.assert_array_equal(got, np.array([0, 1, 1, 0], dtype=ndt))


def test_metrics_read_bfloat16_through_the_shared_helper() -> None:
    import logitlab.metrics as M

    z32 = torch.tensor([[0.5, -1.25, 2.0], [3.0, 0.0, -0.75]])
    zb = z32.to(torch.bfloat16)  # these values are exact in bfloat16
    y = np.array([2, 0])
    lse = scipy.special.logsumexp(z32.double().numpy(), axis=1)
    want = float(np.mean(lse - z32.double().numpy()[np.arange(2), y]))
    assert M.nll(logits=zb, target=y) == pytest.approx(want, rel=1e-12)

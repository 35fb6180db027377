"""torchmetrics conformance: calibration error (l1/l2/max, binning, binary vs multiclass) and
perplexity (with ``ignore_index``).

Sources (github.com/Lightning-AI/torchmetrics, read with the search tools; torchmetrics is not
installed here):

* ``tests/unittests/classification/test_calibration_error.py``: ``TestBinaryCalibrationError``,
  ``TestMulticlassCalibrationError`` (n_bins 10/15/20, norms l1/max, probabilities and logits,
  ignore_index), ``test_binary_with_zero_pred``, ``test_corner_case_due_to_dtype``; the doctest of
  ``binary_calibration_error`` in ``src/torchmetrics/functional/classification/
  calibration_error.py`` (l1 0.2900, l2 0.2918, max 0.3167);
* ``tests/unittests/text/test_perplexity.py`` with ``tests/unittests/text/_inputs.py``
  (``_logits_inputs_fp32/fp64`` and their ``_with_mask`` variants, ``MASK_INDEX = -100``).

torchmetrics' tests compare with netcal (not installed either); here the expected values are
torchmetrics' own definition, transcribed into :func:`_torchmetrics_ce` from
``_binning_bucketize``/``_ce_compute`` (uniform edges ``linspace(0, 1, n_bins + 1)``, bins
``[lo, hi)`` by ``bucketize(right=True)``, a confidence of exactly 1 in an extra bin; empty bins
count 0), and their perplexity reference, ``exp(F.cross_entropy(...))``, run with torch here.

Mapping: torchmetrics' ``binary_calibration_error`` calibrates P(class 1) against the label, i.e.
logitlab's ``mode="classwise"`` on ``(N,)`` input (the average of the two mirrored per-class
errors, equal to the class-1 error); logitlab's default binary mode is top-label (a deliberate
difference, asserted once). ``multiclass_calibration_error`` is logitlab's top-label mode.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from tests.conformance._support import DELIBERATE, backends, close, to_np
from tests.conftest import Backend

import logitlab as ll

torch = pytest.importorskip("torch")
F = torch.nn.functional

N_CLASSES = 5  # torchmetrics' unittests NUM_CLASSES


def _torchmetrics_ce(
    conf: np.ndarray, acc: np.ndarray, n_bins: int, norm: str, debias: bool = False
) -> float:
    """torchmetrics' ``_ce_compute(confidences, accuracies, n_bins, norm, debias)`` in float64
    NumPy."""
    edges = np.linspace(0, 1, n_bins + 1)
    idx = np.searchsorted(edges, conf, side="right") - 1  # == torch.bucketize(right=True) - 1
    count = np.bincount(idx, minlength=n_bins + 1).astype(float)
    with np.errstate(invalid="ignore"):
        conf_bin = np.nan_to_num(np.bincount(idx, conf, n_bins + 1) / count)
        acc_bin = np.nan_to_num(np.bincount(idx, acc, n_bins + 1) / count)
    prop = count / count.sum()
    gap = np.abs(acc_bin - conf_bin)
    if norm == "l1":
        return float(np.sum(gap * prop))
    if norm == "max":
        return float(np.max(gap))
    ce = float(np.sum(gap**2 * prop))
    if debias:
        # "the order here (acc_bin - 1) vs (1 - acc_bin) is flipped from the equation in
        # Verified Uncertainty Calibration (Kumar et al 2019)"; NaN (empty or single-sample
        # bins) -> 0
        with np.errstate(invalid="ignore", divide="ignore"):
            debias_bins = (acc_bin * (acc_bin - 1) * prop) / (prop * acc.size - 1)
        ce += float(np.sum(np.nan_to_num(debias_bins)))
    return math.sqrt(ce) if ce > 0 else 0.0


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-z))


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _binary_input(seed: int, logits: bool) -> tuple[np.ndarray, np.ndarray]:
    # _binary_cases: probabilities (torch.rand) or logits (torch.randn), labels in {0, 1}
    rng = np.random.default_rng(seed)
    preds = rng.normal(size=200) if logits else rng.uniform(size=200)
    return preds, rng.integers(0, 2, size=200)


def _multiclass_input(seed: int, logits: bool) -> tuple[np.ndarray, np.ndarray]:
    # _multiclass_cases: probabilities (a softmax) or logits, NUM_CLASSES = 5
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(200, N_CLASSES)) * 2
    return (z if logits else _softmax(z)), rng.integers(0, N_CLASSES, size=200)


# --------------------------------------------------------------------------- binary


@pytest.mark.parametrize("norm, expected", [("l1", 0.2900), ("l2", 0.2918), ("max", 0.3167)])
@backends()
def test_binary_calibration_error_doctest(backend: Backend, norm: str, expected: float) -> None:
    # binary_calibration_error's doctest: preds [0.25, 0.25, 0.55, 0.75, 0.75], target
    # [0, 0, 1, 1, 1], n_bins=2 (printed to 4 decimals)
    preds, target = np.array([0.25, 0.25, 0.55, 0.75, 0.75]), np.array([0, 0, 1, 1, 1])
    r = ll.calibration_error(
        probs=backend.asarray(preds),
        target=backend.asarray(target),
        n_bins=2,
        norm=norm,
        mode="classwise",
    )
    assert r.value == pytest.approx(expected, abs=5e-5)
    assert r.value == pytest.approx(_torchmetrics_ce(preds, target, 2, norm), rel=1e-14)


@pytest.mark.parametrize("norm", ["l1", "l2", "max"])
@backends()
def test_binary_default_mode_calibrates_p_class_1(backend: Backend, norm: str) -> None:
    # (N,) binary scores are P(class 1), binned against y == 1 by default, as torchmetrics'
    # binary_calibration_error does (the doctest's input)
    preds, target = np.array([0.25, 0.25, 0.55, 0.75, 0.75]), np.array([0, 0, 1, 1, 1])
    r = ll.calibration_error(
        probs=backend.asarray(preds), target=backend.asarray(target), n_bins=2, norm=norm
    )
    assert r.value == pytest.approx(_torchmetrics_ce(preds, target, 2, norm), rel=1e-14)


@pytest.mark.parametrize("mode", ["top-label", "classwise"])
@backends()
def test_binary_with_zero_pred(backend: Backend, mode: str) -> None:
    # test_binary_with_zero_pred: preds [1, 1, 1, 1, 0], target [0, 0, 1, 1, 1], n_bins=2 -> 0.6
    r = ll.calibration_error(
        probs=backend.asarray([1.0, 1.0, 1.0, 1.0, 0.0]),
        target=backend.asarray([0, 0, 1, 1, 1]),
        n_bins=2,
        mode=mode,
    )
    assert r.value == pytest.approx(0.6, rel=1e-15)


CORNER_PREDS = [0.9, 0.9, 0.9, 0.9, 0.9, 0.8, 0.8, 0.01, 0.33, 0.34, 0.99, 0.61]
CORNER_TARGET = [1, 1, 1, 0, 0, 1, 0, 1, 0, 1, 0, 0]


@pytest.mark.parametrize("n_bins", [99, 100])
@backends()
def test_binary_corner_case_due_to_dtype(backend: Backend, n_bins: int) -> None:
    # test_corner_case_due_to_dtype (torchmetrics issue 1907): float64 confidences on bin edges.
    # Each distinct confidence is alone in its bin, so the error is sum_v n_v/N |ybar_v - v|
    # whichever side of an edge a value falls on (computed here), and torchmetrics' value too.
    p, y = np.array(CORNER_PREDS), np.array(CORNER_TARGET)
    exact = sum(np.sum(p == v) / p.size * abs(y[p == v].mean() - v) for v in np.unique(p))
    assert _torchmetrics_ce(p, y, n_bins, "l1") == pytest.approx(exact, rel=1e-14)
    r = ll.calibration_error(
        probs=backend.asarray(p), target=backend.asarray(y), n_bins=n_bins, mode="classwise"
    )
    assert r.value == pytest.approx(exact, rel=1e-14)


@pytest.mark.parametrize("logits", [False, True], ids=["probs", "logits"])
@pytest.mark.parametrize("norm", ["l1", "l2", "max"])
@pytest.mark.parametrize("n_bins", [10, 15, 20])
@backends()
def test_binary_calibration_error(backend: Backend, logits: bool, norm: str, n_bins: int) -> None:
    # TestBinaryCalibrationError.test_binary_calibration_error_functional (n_bins 10/15/20; the
    # l2 norm too), probabilities and logits (torchmetrics applies a sigmoid to logits)
    preds, target = _binary_input(n_bins, logits)
    conf = _sigmoid(preds) if logits else preds
    expected = _torchmetrics_ce(conf, target, n_bins, norm)
    kw = {"logits" if logits else "probs": backend.asarray(preds)}
    r = ll.calibration_error(
        target=backend.asarray(target), n_bins=n_bins, norm=norm, mode="classwise", **kw
    )
    assert r.value == pytest.approx(expected, rel=1e-12)


# --------------------------------------------------------------------------- multiclass


@pytest.mark.parametrize("logits", [False, True], ids=["probs", "logits"])
@pytest.mark.parametrize("norm", ["l1", "l2", "max"])
@pytest.mark.parametrize("n_bins", [15, 20])
@backends()
def test_multiclass_calibration_error(
    backend: Backend, logits: bool, norm: str, n_bins: int
) -> None:
    # TestMulticlassCalibrationError.test_multiclass_calibration_error_functional (n_bins 15/20;
    # l2 too): top-label confidence and correctness (torchmetrics applies a softmax to logits)
    preds, target = _multiclass_input(n_bins, logits)
    p = _softmax(preds) if logits else preds
    expected = _torchmetrics_ce(
        p.max(axis=1), (p.argmax(axis=1) == target).astype(float), n_bins, norm
    )
    kw = {"logits" if logits else "probs": backend.asarray(preds)}
    r = ll.calibration_error(target=backend.asarray(target), n_bins=n_bins, norm=norm, **kw)
    assert r.value == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("n_bins", [5, 15])
@backends()
def test_multiclass_debiased_l2(backend: Backend, n_bins: int) -> None:
    # _ce_compute(..., norm="l2", debias=True) (Kumar et al.'s debiased estimator; torchmetrics
    # has it in the functional core, disabled in its wrappers): logitlab's debiased=True
    preds, target = _multiclass_input(30 + n_bins, False)
    conf, acc = preds.max(axis=1), (preds.argmax(axis=1) == target).astype(float)
    expected = _torchmetrics_ce(conf, acc, n_bins, "l2", debias=True)
    r = ll.calibration_error(
        probs=backend.asarray(preds),
        target=backend.asarray(target),
        n_bins=n_bins,
        norm="l2",
        debiased=True,
    )
    assert r.value == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("dtype", ["float16", "float32"])
def test_multiclass_low_precision_probabilities(dtype: str) -> None:
    # TestMulticlassCalibrationError.test_multiclass_calibration_error_dtype_cpu (half; float32
    # here too): torch softmax output in that dtype
    z, target = _multiclass_input(3, True)
    probs = torch.softmax(torch.tensor(z, dtype=getattr(torch, dtype)), -1)
    r = ll.calibration_error(probs=probs, target=torch.tensor(target), n_bins=15)
    p = probs.double().numpy()
    expected = _torchmetrics_ce(p.max(axis=1), (p.argmax(axis=1) == target).astype(float), 15, "l1")
    assert r.value == pytest.approx(expected, abs=10 * float(torch.finfo(probs.dtype).eps))


@DELIBERATE(
    "bins are (lo, hi] (the first includes 0; documented in metrics/calibration.py); "
    "torchmetrics' bucketize(right=True) makes them [lo, hi) with 1.0 in a bin of its own"
)
def test_diff_bin_edge_convention() -> None:
    # a top-label confidence exactly on the edge 0.5 of 2 bins
    p = np.array([[0.5, 0.3, 0.2], [0.9, 0.05, 0.05]])
    target = np.array([1, 0])
    conf, acc = p.max(axis=1), (p.argmax(axis=1) == target).astype(float)
    assert _torchmetrics_ce(conf, acc, 2, "l1") == pytest.approx(0.2)  # both in [0.5, 1)
    r = ll.calibration_error(probs=p, target=target, n_bins=2)
    assert r.value == pytest.approx(0.3)  # 0.5 in (0, 0.5], 0.9 in (0.5, 1]
    assert r.table.counts.tolist() == [1, 1]


@DELIBERATE(
    "calibration_error has no ignore_index: a label outside [0, C) is a ValueError naming "
    "target; torchmetrics drops the rows equal to ignore_index (filter them first)"
)
@backends()
def test_diff_calibration_ignore_index(backend: Backend) -> None:
    # Test*CalibrationError with ignore_index -1 (inject_ignore_index)
    preds, target = _multiclass_input(4, False)
    target = target.copy()
    target[:10] = -1
    with pytest.raises(ValueError, match="target"):
        ll.calibration_error(probs=backend.asarray(preds), target=backend.asarray(target))
    keep = target != -1
    r = ll.calibration_error(
        probs=backend.asarray(preds[keep]), target=backend.asarray(target[keep])
    )
    conf, acc = preds[keep].max(axis=1), (preds[keep].argmax(axis=1) == target[keep]).astype(float)
    assert r.value == pytest.approx(_torchmetrics_ce(conf, acc, 15, "l1"), rel=1e-12)


# --------------------------------------------------------------------------- perplexity

BATCH, EXTRA = 4, 3  # per-update shapes of torchmetrics' text inputs (BATCH_SIZE, EXTRA_DIM)


def _perplexity_input(dtype: Any, masked: bool, seed: int) -> tuple[Any, Any]:
    # _logits_inputs_fp32/_fp64 (one update): preds rand (BATCH, EXTRA, C), target randint;
    # _with_mask: target[0, 1:] = target[BATCH - 1, :] = MASK_INDEX (-100)
    g = torch.Generator().manual_seed(seed)
    preds = torch.rand(BATCH, EXTRA, N_CLASSES, dtype=dtype, generator=g)
    target = torch.randint(N_CLASSES, (BATCH, EXTRA), generator=g)
    if masked:
        target[0, 1:] = -100
        target[BATCH - 1, :] = -100
    return preds, target


def _perplexity_reference(preds: Any, target: Any) -> Any:
    # test_perplexity.py::_reference_local_perplexity
    return torch.exp(F.cross_entropy(preds.reshape(-1, preds.shape[-1]), target.reshape(-1)))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("masked", [False, True], ids=["plain", "mask"])
@backends()
def test_perplexity_functional(backend: Backend, dtype: str, masked: bool) -> None:
    # TestPerplexity.test_perplexity_fn
    preds, target = _perplexity_input(getattr(torch, dtype), masked, seed=1)
    ref = _perplexity_reference(preds.double(), target)
    res = ll.perplexity(
        backend.asarray(preds.numpy()), backend.asarray(target.numpy()), ignore_index=-100
    )
    rtol = 1e-13 if dtype == "float64" else 4 * float(np.finfo(np.float32).eps)
    close(res, ref.item(), rtol)


@pytest.mark.parametrize("masked", [False, True], ids=["plain", "mask"])
def test_perplexity_half(masked: bool) -> None:
    # TestPerplexity.test_perplexity_dtypes_cpu (half)
    preds, target = _perplexity_input(torch.float16, masked, seed=2)
    res = ll.perplexity(preds, target, ignore_index=-100)
    assert res.dtype == torch.float16
    ref = _perplexity_reference(preds.double(), target).item()
    assert res.item() == pytest.approx(ref, rel=2.0**-10)


@pytest.mark.parametrize("masked", [False, True], ids=["plain", "mask"])
def test_perplexity_differentiability(masked: bool) -> None:
    # TestPerplexity.test_perplexity_differentiability (Perplexity.is_differentiable = True): the
    # gradient with respect to the logits, against torch's
    preds, target = _perplexity_input(torch.float64, masked, seed=3)
    x, xr = preds.clone().requires_grad_(), preds.clone().requires_grad_()
    (g,) = torch.autograd.grad(ll.perplexity(x, target, ignore_index=-100), x)
    (gr,) = torch.autograd.grad(_perplexity_reference(xr, target), xr)
    close(g, gr.numpy(), 1e-13, atol=1e-16)


@DELIBERATE(
    "the perplexity of an all-ignored input is 1 (mean NLL 0); torchmetrics' total/count is "
    "0/0 = NaN"
)
@backends()
def test_diff_perplexity_all_ignored(backend: Backend) -> None:
    preds, _ = _perplexity_input(torch.float64, False, seed=4)
    target = torch.full((BATCH, EXTRA), -100)
    total = torch.zeros(())  # torchmetrics: _perplexity_update over no kept token
    assert math.isnan(torch.exp(total / torch.tensor(0)).item())
    res = ll.perplexity(backend.asarray(preds.numpy()), backend.asarray(target.numpy()))
    np.testing.assert_array_equal(to_np(res), 1.0)

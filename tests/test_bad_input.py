"""Bad input gets a clear error naming the argument, never a silent wrong number."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

import logitlab as ll


def test_class_index_out_of_range_reports_index_and_classes() -> None:
    with pytest.raises(ValueError, match=r"target\[1\] = 7 is not a class index in \[0, 3\)"):
        ll.cross_entropy(np.zeros((2, 3)), [0, 7])
    with pytest.raises(ValueError, match="target"):
        ll.cross_entropy(np.zeros((2, 3)), [0, -5])


def test_ignore_index_is_not_out_of_range() -> None:
    assert float(ll.cross_entropy(np.zeros((2, 3)), [0, -100])) == pytest.approx(np.log(3))


def test_target_shape_mismatch() -> None:
    with pytest.raises(ValueError, match=r"target has shape \(3,\), expected \(2,\)"):
        ll.cross_entropy(np.zeros((2, 3)), [0, 1, 2])
    with pytest.raises(ValueError, match="probability target"):
        ll.cross_entropy(np.zeros((2, 3)), np.full((2, 4), 0.25))


def test_boolean_and_complex_inputs() -> None:
    with pytest.raises(TypeError, match="target"):
        ll.cross_entropy(np.zeros((2, 3)), np.array([True, False]))
    with pytest.raises(TypeError, match="complex"):
        ll.softmax(np.zeros(3, dtype=complex))
    with pytest.raises(TypeError, match="x must hold real numbers"):
        ll.softmax(["a", "b"])


@pytest.mark.parametrize(
    ("probs", "match"),
    [
        ([[0.5, 0.6]], "sum to 1"),
        ([[1.2, -0.2]], r"probabilities in \[0, 1\]"),
        ([[np.nan, 1.0]], "NaN"),
    ],
)
def test_bad_probabilities(probs: list[list[float]], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        ll.entropy(probs=probs)
    with pytest.raises(ValueError, match=match.replace("probabilities", "")):
        ll.cross_entropy(np.zeros((1, 2)), np.asarray(probs))


def test_tolerance_is_reported() -> None:
    with pytest.raises(ValueError, match=r"tolerance 2\.7e-15"):  # 4 ulps x (1 + n), n = 2
        ll.entropy(probs=[0.5, 0.5 + 1e-6])
    ll.entropy(probs=np.array([0.5, 0.5 + 1e-6], dtype=np.float32))  # within float32's tolerance


def test_entropy_needs_exactly_one_input() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        ll.entropy()
    with pytest.raises(ValueError, match="exactly one"):
        ll.entropy(probs=[1.0], logits=[0.0])


def test_nan_in_targets() -> None:
    with pytest.raises(ValueError, match="target contains NaN"):
        ll.binary_cross_entropy_with_logits([0.0, 1.0], [np.nan, 1.0])


def test_unknown_reduction_and_parameters() -> None:
    with pytest.raises(ValueError, match="reduction must be"):
        ll.cross_entropy(np.zeros((1, 2)), [0], reduction="avg")
    with pytest.raises(ValueError, match="label_smoothing"):
        ll.cross_entropy(np.zeros((1, 2)), [0], label_smoothing=1.5)
    with pytest.raises(ValueError, match="temperature"):
        ll.softmax([1.0, 2.0], temperature=-1)
    with pytest.raises(ValueError, match="temperature"):
        ll.softmax([1.0, 2.0], temperature=float("nan"))
    with pytest.raises(ValueError, match="temperature"):
        ll.cross_entropy(np.zeros((1, 2)), [0], temperature=0)
    with pytest.raises(ValueError, match="axis=2 is out of range"):
        ll.softmax(np.zeros((2, 2)), axis=2)
    with pytest.raises(ValueError, match="base"):
        ll.entropy(probs=[1.0], base=1)
    with pytest.raises(ValueError, match=r"weight must have shape \(2,\)"):
        ll.cross_entropy(np.zeros((1, 2)), [0], weight=[1.0, 2.0, 3.0])


def test_bce_swapped_arguments() -> None:
    labels, probs = [1.0, 0.0, 1.0], [0.9, 0.2, 0.7]
    with pytest.raises(ValueError, match="look swapped"):
        ll.binary_cross_entropy(labels, probs)
    with pytest.raises(ValueError, match="look swapped"):
        ll.binary_cross_entropy(np.array([1, 0, 1]), probs)
    assert float(ll.binary_cross_entropy(probs, labels)) == pytest.approx(
        -np.mean(np.log([0.9, 0.8, 0.7]))
    )


def test_bce_shape_and_range() -> None:
    with pytest.raises(ValueError, match="must match"):
        ll.binary_cross_entropy([0.5, 0.5], [1.0])
    with pytest.raises(ValueError, match=r"probs must be probabilities in \[0, 1\]"):
        ll.binary_cross_entropy([1.5], [1.0])
    with pytest.raises(ValueError, match=r"target must be in \[0, 1\]"):
        ll.binary_cross_entropy_with_logits([0.5], [2.0])


def test_kl_argument_errors() -> None:
    with pytest.raises(ValueError, match="exactly one of p / p_logits"):
        ll.kl_divergence([0.5, 0.5])
    with pytest.raises(ValueError, match="different shapes"):
        ll.kl_divergence([0.5, 0.5], [1.0])


def test_mixed_libraries_rejected() -> None:
    torch = pytest.importorskip("torch")
    with pytest.raises(TypeError, match="different libraries"):
        ll.cross_entropy(torch.zeros(2, 3), np.array([0, 1]))


def test_log1mexp_domain() -> None:
    with pytest.raises(ValueError, match="x <= 0"):
        ll.log1mexp([0.5])


def test_validation_switch_skips_value_checks() -> None:
    bad = np.zeros((1, 3))
    with ll.validation(False):
        assert not ll.validation_enabled()
        ll.entropy(probs=[0.5, 0.6])  # no check: a number comes back
    assert ll.validation_enabled()
    ll.set_validation(False)
    try:
        ll.binary_cross_entropy([1.0, 0.0], [0.3, 0.8])
    finally:
        ll.set_validation(True)
    with pytest.raises(ValueError):
        ll.cross_entropy(bad, [5])
    # shape checks stay on
    with ll.validation(False), pytest.raises(ValueError, match="target has shape"):
        ll.cross_entropy(bad, [0, 1])


def test_validation_env_variable() -> None:
    code = "import logitlab as ll; print(ll.validation_enabled()); ll.entropy(probs=[0.5, 0.7])"
    env = dict(os.environ, LOGITLAB_VALIDATE="0")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_empty_axis() -> None:
    # an empty sum is not an error (logsumexp -inf, entropy 0: tests/test_empty.py); the class
    # axis of class-index targets is, and the error names the argument and the axis
    with pytest.raises(ValueError, match="logits has no classes: its axis -1 has length 0"):
        ll.cross_entropy(np.zeros((2, 0)), [0, 1])

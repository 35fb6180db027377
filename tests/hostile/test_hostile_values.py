"""Bad values (issues 14 and the leftovers of 13): NaN logits, a fully masked (all ``-inf``) row,
``+inf``. Every metric that reads logits runs the same check (``metrics._inputs.check_logit_rows``)
and raises the same ValueError, naming its argument and the index (the row in the caller's data,
not in an internal chunk), instead of returning a number; files name the file and the row in it.

A ``+inf`` logit is an upstream overflow: the batch metrics used to score it by its limit
(``calibration_error(logits=[[inf, 0], [0, 1]], target=[0, 1])`` returned 0.134) while
``Evaluator`` and ``fit_temperature`` raised."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import scipy.special
import sklearn.metrics

import logitlab.metrics as M
import logitlab.metrics.temperature as temperature
from logitlab.app.evaluate import evaluate_predictions
from logitlab.io import open_array

RNG = np.random.default_rng(0)
Z = RNG.standard_normal((80, 5))
Y = RNG.integers(0, 5, 80)
ZB = RNG.standard_normal(80)  # binary: the logit of class 1
YB = (RNG.random(80) < 0.5).astype(np.int64)


def _with(row: int, col: int | None, value: float) -> np.ndarray:
    z = Z.copy()
    if col is None:
        z[row] = value
    else:
        z[row, col] = value
    return z


def _evaluate(z: Any, y: Any) -> Any:
    ev = M.Evaluator()
    ev.update(z, y)
    return ev.compute()


# metric -> (call on (scores, labels), the argument its errors name, takes (N,) binary logits)
METRICS: dict[str, tuple[Callable[[Any, Any], Any], str, bool]] = {
    "nll": (lambda z, y: M.nll(logits=z, target=y), "logits", True),
    "perplexity_from_logits": (M.perplexity_from_logits, "logits", True),
    "accuracy": (M.accuracy, "scores", True),
    "accuracy_top3": (lambda z, y: M.accuracy(z, y, k=3), "scores", False),
    "brier_score": (lambda z, y: M.brier_score(logits=z, target=y), "logits", True),
    "brier_decomposition": (
        lambda z, y: M.brier_decomposition(logits=z, target=y),
        "logits",
        True,
    ),
    "calibration_error": (lambda z, y: M.calibration_error(logits=z, target=y), "logits", True),
    "calibration_error_classwise": (
        lambda z, y: M.calibration_error(logits=z, target=y, mode="classwise", norm="max"),
        "logits",
        True,
    ),
    "entropy_stats": (lambda z, y: M.entropy_stats(logits=z), "logits", True),
    "fit_temperature": (M.fit_temperature, "logits", False),
    "Evaluator.update": (_evaluate, "scores", True),
}
BINARY = sorted(k for k, v in METRICS.items() if v[2])


def _raises(metric: str, z: Any, y: Any, what: str) -> None:
    fn, name, _ = METRICS[metric]
    with pytest.raises(ValueError, match=rf"^{name} {what}"):
        fn(z, y)


@pytest.mark.parametrize("metric", sorted(METRICS))
def test_posinf_logit_is_an_error_naming_the_argument_and_row(metric: str) -> None:
    # the batch metrics returned the limit value (the row scored as certain); fit_temperature and
    # the Evaluator raised: every metric now raises the same error
    _raises(metric, _with(57, 2, np.inf), Y, r"contains \+inf \(first at index \(57, 2\)\): ")


@pytest.mark.parametrize("metric", BINARY)
def test_posinf_binary_logit_is_an_error(metric: str) -> None:
    # a binary logit z is the row (0, z): the index is the one in the caller's (N,) array
    z = ZB.copy()
    z[57] = np.inf
    _raises(metric, z, YB, r"contains \+inf \(first at index \(57,\)\)")


@pytest.mark.parametrize("metric", sorted(METRICS))
def test_posinf_in_other_containers(metric: str) -> None:
    torch = pytest.importorskip("torch")
    z, y = [[math.inf, 0.0], [0.0, 1.0]], [0, 1]  # the reported case: ECE 0.134 before
    for zz in (z, torch.tensor(z), torch.tensor(z, dtype=torch.float32)):
        _raises(metric, zz, y, r"contains \+inf \(first at index \(0, 0\)\)")


@pytest.mark.parametrize("metric", sorted(METRICS))
def test_nan_logit_is_an_error_naming_the_argument_and_row(metric: str) -> None:
    # fit_temperature returned T = 1e-06 with NaN NLLs and converged=False
    _raises(metric, _with(57, 2, np.nan), Y, r"contains NaN \(first at index \(57, 2\)\)")


@pytest.mark.parametrize("metric", sorted(METRICS))
def test_fully_masked_row_is_an_error(metric: str) -> None:
    # the batch metrics scored such a row as a uniform distribution, silently
    _raises(metric, _with(57, None, -np.inf), Y, r"row 57 has no finite value")
    METRICS[metric][0](_with(57, 1 if Y[57] != 1 else 0, -np.inf), Y)  # a masked class is fine


def test_masked_classes_keep_their_values() -> None:
    # -inf in classes other than the target is a mask: the values are those of the masked
    # softmax, against SciPy and scikit-learn in float64
    z = Z.copy()
    z[np.arange(80), (Y + 1) % 5] = -np.inf
    logp = scipy.special.log_softmax(z, axis=1)
    p = np.exp(logp)
    assert M.nll(logits=z, target=Y) == pytest.approx(-logp[np.arange(80), Y].mean(), rel=1e-13)
    onehot = np.eye(5)[Y]
    assert M.brier_score(logits=z, target=Y) == pytest.approx(
        np.mean(np.sum((p - onehot) ** 2, axis=1)), rel=1e-13
    )
    assert M.accuracy(z, Y) == sklearn.metrics.accuracy_score(Y, p.argmax(1))
    with np.errstate(divide="ignore", invalid="ignore"):
        h = -np.sum(np.where(p > 0, p * logp, 0.0), axis=1)
    assert M.entropy_stats(logits=z).mean == pytest.approx(h.mean(), rel=1e-13)
    assert _evaluate(z, Y).nll == pytest.approx(-logp[np.arange(80), Y].mean(), rel=1e-12)
    zb = ZB.copy()
    zb[3] = -np.inf  # a binary logit of -inf: P(class 1) = 0, the row (0, -inf)
    yb = YB.copy()
    yb[3] = 0
    pb = scipy.special.expit(zb)
    assert M.brier_score(logits=zb, target=yb) == pytest.approx(
        sklearn.metrics.brier_score_loss(yb, pb), rel=1e-13
    )
    assert M.nll(logits=zb, target=yb) == pytest.approx(sklearn.metrics.log_loss(yb, pb), rel=1e-12)


def test_evaluator_errors_are_all_or_nothing() -> None:
    ev = M.Evaluator()
    ev.update(Z, Y)
    for z, what in (
        (_with(57, 2, np.nan), r"contains NaN \(first at index \(57, 2\)\)"),
        (_with(57, None, -np.inf), r"row 57 has no finite value"),
        (_with(57, 2, np.inf), r"contains \+inf \(first at index \(57, 2\)\)"),
    ):
        with pytest.raises(ValueError, match=rf"^scores {what}"):
            ev.update(z, Y)
    assert ev.compute().n == 80


def test_fit_temperature_rows_are_rows_of_the_whole_input(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(temperature, "_CHUNK_BYTES", 8 * 3 * 5 * 10)  # chunks of 10 rows
    for z, msg in [
        (_with(57, 2, np.nan), r"logits contains NaN \(first at index \(57, 2\)\)"),
        (_with(57, 2, np.inf), r"logits contains \+inf \(first at index \(57, 2\)\)"),
        (_with(57, None, -np.inf), r"logits row 57 has no finite value"),
        (_with(57, int(Y[57]), -np.inf), rf"logits\[57, {Y[57]}\] = -inf masks the target"),
    ]:
        np.save(tmp_path / "z.npy", z)
        for logits in (z, open_array(tmp_path / "z.npy")):  # in memory and streamed
            with pytest.raises(ValueError, match=msg):
                M.fit_temperature(logits, Y)


def _probs(n: int, c: int) -> np.ndarray:
    return np.full((n, c), 1.0 / c, np.float32)


@pytest.mark.parametrize(
    ("kind", "msg"),
    [
        ("posinf", r"f\.npy: logits contains \+inf \(first at index \(2500, 3\)\): "),
        ("masked", r"f\.npy: logits row 2500 has no finite value \(every class is -inf\)$"),
        ("nan", r"f\.npy: logits contains NaN \(first at index \(2500, 3\)\)$"),
        ("sum", r"f\.npy: the probabilities of row 2500 sum to 1\.5, not 1 \(tolerance .*\)$"),
        ("range", r"f\.npy: probs\[2500, 3\] = 1\.5 is not in \[0, 1\]"),
    ],
)
def test_file_errors_name_the_row_in_the_file(tmp_path: Path, kind: str, msg: str) -> None:
    # 3000 x 1000 is read in chunks of 2097 rows: row 2500 was reported as "row 403 of the batch"
    n, c = 3000, 1000
    x = _probs(n, c) if kind in ("sum", "range") else np.zeros((n, c), np.float32)
    if kind == "posinf":
        x[2500, 3] = np.inf
    elif kind == "masked":
        x[2500] = -np.inf
    elif kind == "nan":
        x[2500, 3] = np.nan
    elif kind == "sum":
        x[2500] *= 1.5
    else:
        x[2500, 3] = 1.5
    f = tmp_path / "f.npy"
    np.save(f, x)
    with pytest.raises(ValueError, match=msg):
        evaluate_predictions(
            open_array(f), np.zeros(n, np.int64), probs=kind in ("sum", "range"), source=str(f)
        )


def test_binary_scores(tmp_path: Path) -> None:
    # a binary logit z is the row (0, z): -inf is a valid (certain) score, NaN and +inf are not
    z = RNG.standard_normal(3000)
    y = (RNG.random(3000) < 0.5).astype(np.int64)
    z[2400] = -np.inf
    y[2400] = 0
    f = tmp_path / "b.npy"
    np.save(f, z)
    rep = evaluate_predictions(open_array(f), y, source=str(f), fit_temp=False)
    assert rep.n == 3000
    for bad, what in ((np.nan, "NaN"), (np.inf, r"\+inf")):
        z[2500] = bad
        np.save(f, z)
        with pytest.raises(
            ValueError, match=rf"b\.npy: logits contains {what} \(first at index \(2500,\)\)"
        ):
            evaluate_predictions(open_array(f), y, source=str(f), fit_temp=False)

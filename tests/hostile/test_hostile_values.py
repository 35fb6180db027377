"""Bad values (issue 14): NaN logits, a fully masked (all ``-inf``) row, ``+inf``. Every metric
raises a ValueError that names ``logits`` and the row (in the caller's data, not in an internal
chunk) instead of returning a number; files name the file and the row in the file."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import logitlab.metrics as M
import logitlab.metrics.temperature as temperature
from logitlab.io import open_array
from logitlab.metrics.summary import evaluate_predictions

RNG = np.random.default_rng(0)
Z = RNG.standard_normal((80, 5))
Y = RNG.integers(0, 5, 80)


def _with(row: int, col: int | None, value: float) -> np.ndarray:
    z = Z.copy()
    if col is None:
        z[row] = value
    else:
        z[row, col] = value
    return z


BATCH: dict[str, Callable[[np.ndarray], Any]] = {
    "fit_temperature": lambda z: M.fit_temperature(z, Y),
    "calibration_error": lambda z: M.calibration_error(logits=z, target=Y),
    "nll": lambda z: M.nll(logits=z, target=Y),
    "brier_score": lambda z: M.brier_score(logits=z, target=Y),
    "brier_decomposition": lambda z: M.brier_decomposition(logits=z, target=Y),
    "entropy_stats": lambda z: M.entropy_stats(logits=z),
}


@pytest.mark.parametrize("metric", sorted(BATCH))
def test_nan_logit_is_an_error_naming_logits_and_row(metric: str) -> None:
    # fit_temperature returned T = 1e-06 with NaN NLLs and converged=False
    with pytest.raises(ValueError, match=r"logits contains NaN \(first at index \(57, 2\)\)"):
        BATCH[metric](_with(57, 2, np.nan))


@pytest.mark.parametrize("metric", sorted(BATCH))
def test_fully_masked_row_is_an_error(metric: str) -> None:
    # the batch metrics scored such a row as a uniform distribution, silently
    with pytest.raises(ValueError, match=r"logits row 57 has no finite value"):
        BATCH[metric](_with(57, None, -np.inf))
    BATCH[metric](_with(57, 1 if Y[57] != 1 else 0, -np.inf))  # a masked class is fine


def test_evaluator_rejects_the_same_rows() -> None:
    for z in (_with(57, 2, np.nan), _with(57, None, -np.inf), _with(57, 2, np.inf)):
        with pytest.raises(ValueError, match="row 57 of the batch"):
            M.Evaluator().update(z, Y)


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
        ("posinf", r"f\.npy: scores contain \+inf \(row 2500\)$"),
        ("masked", r"f\.npy: row 2500 has no finite score \(every class is -inf\)$"),
        ("nan", r"f\.npy: scores contain NaN \(row 2500\)$"),
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
    z[2500] = np.nan
    np.save(f, z)
    with pytest.raises(ValueError, match=r"b\.npy: scores contain NaN \(row 2500\)$"):
        evaluate_predictions(open_array(f), y, source=str(f), fit_temp=False)

"""Assemble everything ``logitlab report`` / ``evaluate`` show, from a predictions file
(application code: file IO and the assembly of the library's metrics, for the CLI; formerly
``logitlab.metrics.summary``).

Streaming where it matters: the core metrics and the temperature fit read the scores in row
chunks (constant memory); the batch-only extras (classwise and equal-mass ECE variants, Brier
decomposition, histograms) are computed when the scores fit in ``batch_limit`` elements.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from logitlab._checks import looks_like_probabilities, scores_already_guarded
from logitlab._config import validation
from logitlab.io import ArraySource, iter_row_chunks, rows_for_budget
from logitlab.metrics._inputs import check_logit_rows
from logitlab.metrics.calibration import bin_table, calibration_error, error_from_table
from logitlab.metrics.classification import brier_decomposition
from logitlab.metrics.evaluation import EvaluationReport
from logitlab.metrics.evaluator import Evaluator
from logitlab.metrics.temperature import fit_temperature
from logitlab.special import softmax

__all__ = ["EvaluationReport", "evaluate_predictions", "SAMPLE"]

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "digits_sample.npz"
BATCH_LIMIT = 20_000_000  # elements of scores kept in memory for the batch-only extras


def _as_logits(chunk: np.ndarray, probs: bool) -> np.ndarray:
    x = np.asarray(chunk, dtype=np.float64)
    if x.ndim == 1:  # binary: score of class 1
        x = np.stack([1 - x, x], 1) if probs else np.stack([np.zeros_like(x), x], 1)
    if probs:
        # log p as logits (softmax(log p / T) is temperature scaling of p); p = 0 is kept finite
        # at log(1e-300) so that expectations under softmax stay free of 0 * inf.
        with np.errstate(divide="ignore"):
            x = np.log(np.maximum(x, 1e-300))
    return x


class _LogitView:
    """Row-sliced view of the scores as logits (for the streaming temperature fit)."""

    def __init__(self, src: ArraySource, probs: bool, n_classes: int) -> None:
        self.src, self.probs = src, probs
        self.shape = (src.shape[0], n_classes)

    def rows(self, a: int, b: int) -> np.ndarray:
        return _as_logits(self.src.rows(a, b), self.probs)


def _check_finite(x: np.ndarray, a: int, source: str, probs: bool) -> None:
    """NaN, +inf, or a row with no finite score: the metrics' own check (``-inf`` alone is a
    masked class, which is valid), its message prefixed with the file; ``a`` is the chunk's first
    row, so the index is the one in the file."""
    try:
        check_logit_rows(x, "probs" if probs else "logits", a)
    except ValueError as exc:
        raise ValueError(f"{source}: {exc}") from None


def _check_probs(own: np.ndarray, a: int, source: str, eps: float | None) -> None:
    """Rows that are not probability vectors: a ValueError naming the file and the row in it."""
    from logitlab._checks import check_probabilities

    def bad(rows: np.ndarray) -> ValueError | None:
        xx = rows if rows.ndim == 2 else np.stack([1 - rows, rows], 1)
        try:
            check_probabilities(np, xx, "probs", 1, eps=eps)
        except ValueError as exc:
            return exc
        return None

    exc = bad(own)
    if exc is None:
        return
    # the check is row-wise, so "some row of own[:k] fails" is monotone in k: bisect for the
    # first failing row (only on this error path)
    lo, hi = 0, own.shape[0] - 1
    while lo < hi:
        mid = (lo + hi) // 2
        if bad(own[: mid + 1]) is None:
            lo = mid + 1
        else:
            hi = mid
    row, r = own[lo], a + lo
    out = ~((row >= 0) & (row <= 1))
    if out.any():
        j = int(np.argmax(out)) if row.ndim else None
        at = f"[{r}]" if j is None else f"[{r}, {j}]"
        v = row if j is None else row[j]
        raise ValueError(
            f"{source}: probs{at} = {float(v)!r} is not in [0, 1] (are these logits?)"
        ) from exc
    tol = re.search(r"\(tolerance [^)]*\)", str(exc))
    total = float(np.sum(row, dtype=np.float64))
    raise ValueError(
        f"{source}: the probabilities of row {r} sum to {total:.6g}, not 1"
        + (f" {tol.group(0)}" if tol else "")
    ) from exc


def evaluate_predictions(
    scores: ArraySource,
    labels: np.ndarray,
    *,
    probs: bool = False,
    source: str = "",
    fit_temp: bool = True,
    n_bins: int = 15,
    progress: Callable[[int, int], None] | None = None,
    batch_limit: int = BATCH_LIMIT,
) -> EvaluationReport:
    """Compute the full evaluation of one predictions file (see module docstring)."""
    n = scores.shape[0]
    n_classes = 2 if len(scores.shape) == 1 else scores.shape[1]
    if len(scores.shape) > 2:
        raise ValueError(f"{source}: scores must have shape (N, C) or (N,), got {scores.shape}")
    if labels.min() < 0 or labels.max() >= n_classes:
        i = int(np.argmax((labels < 0) | (labels >= n_classes)))
        raise ValueError(
            f"{source}: label[{i}] = {labels[i]} is not a class index in [0, {n_classes})"
        )
    binary = len(scores.shape) == 1
    # the Evaluator gets the scores as read: (N,) binary scores keep their binary meaning
    # (P(class 1) is calibrated, the Brier score has one column) and probabilities their values
    ev = Evaluator(n_classes, n_bins=n_bins, from_probs=probs)
    step = rows_for_budget(8 * n_classes * 4)
    keep = n * n_classes <= batch_limit
    kept: list[np.ndarray] = []  # the scores as read, in float64
    all_rows_probabilities = not probs and not binary
    # NumPy has no bfloat16: such files come widened to float32, with bfloat16's rounding
    eps_file = 2.0**-7 if getattr(scores, "source_dtype", "") == "bfloat16" else None
    conf_counts = np.zeros(50)
    ent_counts = np.zeros(50)
    from logitlab.losses import entropy

    for a, chunk in iter_row_chunks(scores, step):
        x = np.asarray(chunk, dtype=np.float64)
        _check_finite(x, a, source, probs)
        if probs:
            # the tolerance is that of the file's own dtype (float32 probabilities sum to 1
            # only within float32 rounding)
            own = np.asarray(chunk)
            _check_probs(own if own.dtype.kind == "f" else x, a, source, eps_file)
        if all_rows_probabilities:  # one row per chunk unless the chunk is all distributions
            all_rows_probabilities = looks_like_probabilities(np, np.asarray(chunk), 1, eps_file)
        z = _as_logits(x, probs)
        y = labels[a : a + z.shape[0]]
        with validation(False):  # probabilities were checked above, in the file's own dtype
            ev.update(x, y)
        p = np.asarray(softmax(z, axis=1))
        conf_counts += np.histogram(p.max(1), bins=50, range=(0, 1))[0]
        with scores_already_guarded():  # probabilities given as logits are a finding below
            h = np.asarray(entropy(logits=z)) / (math.log(n_classes) if n_classes > 1 else 1)
        ent_counts += np.histogram(np.clip(h, 0, 1), bins=50, range=(0, 1))[0]
        if keep:
            kept.append(x)
        if progress is not None:
            progress(a + z.shape[0], n)
    res = ev.compute()
    metrics = res.to_dict()
    metrics.pop("table")
    calib: list[dict[str, Any]] = []
    brier = None
    notes: list[str] = []
    if keep:
        scores_read = np.concatenate(kept)
        calib, brier = _batch_extras(scores_read, labels, probs, n_bins)
    else:
        calib = [
            {
                "mode": "top-label",
                "binning": "equal-width",
                "norm": k,
                "debiased": False,
                "value": v,
            }
            for k, v in (("l1", res.ece), ("l2", res.rmsce), ("max", res.mce))
        ]
        calib.append(
            {
                "mode": "top-label",
                "binning": "equal-mass",
                "norm": "l1",
                "debiased": False,
                "value": res.ece_equal_mass,
            }
        )
        notes.append(
            f"{n} x {n_classes} scores exceed {batch_limit} elements: classwise ECE and "
            "the Brier decomposition were skipped (streaming metrics only)."
        )
    temp = None
    after = None
    if fit_temp:
        view = _LogitView(scores, probs, n_classes)
        temp = fit_temperature(view, labels)
        beta = 1.0 / temp.temperature
        confs, corr = [], []
        for a, _ in iter_row_chunks(scores, step):
            zz = view.rows(a, a + step)
            p = np.asarray(softmax(beta * zz, axis=1))
            ya = labels[a : a + zz.shape[0]]
            confs.append(p[:, 1] if binary else p.max(1))
            corr.append(ya == 1 if binary else p.argmax(1) == ya)
        after = bin_table(np.concatenate(confs), np.concatenate(corr), n_bins)
        if binary:  # fit_temperature's ECE is top-label; the report's binary ECE is of P(class 1)
            temp = dataclasses.replace(
                temp, ece_before=res.ece, ece_after=error_from_table(after, "l1")[0]
            )
    findings = health_findings(_as_logits(scores_read, probs), labels) if keep else []
    if all_rows_probabilities:
        # diagnose's "ok" (no numerical risk in these numbers as logits) would read as a verdict
        # on the report beside this one
        findings = [f for f in findings if f.get("code") != "ok"]
        findings.insert(
            0,
            {
                "severity": "high",
                "code": "probabilities-as-logits",
                "message": "every row of the scores is in [0, 1] and sums to 1: these look like "
                "probabilities, scored here as logits (softmax(p) is not p); rerun with --probs",
            },
        )
    if probs and not math.isfinite(res.nll):
        notes.append(
            "some rows give probability 0 to their label: the NLL and perplexity are infinite; "
            "the temperature fit reads such probabilities as 1e-300."
        )
    if n_classes == 2 and not binary:
        notes.append(
            "2 classes as (N, 2) scores: the Brier score sums both columns (range [0, 2]); "
            "scikit-learn's brier_score_loss halves it for 2 classes. Give (N,) scores of "
            "class 1 for the binary conventions."
        )
    if binary:
        notes.append(
            "binary scores (N,): calibration errors and the reliability diagram are of "
            "P(class 1) against y == 1 (scikit-learn's calibration_curve, torchmetrics' "
            "binary_calibration_error); the Brier score has one column (brier_score_loss)."
        )
    edges50 = np.linspace(0, 1, 51).tolist()
    return EvaluationReport(
        source=source,
        n=n,
        n_classes=n_classes,
        input_kind="probs" if probs else "logits",
        metrics=metrics,
        calibration=calib,
        brier_decomposition=brier,
        temperature=temp,
        reliability_before=res.table,
        reliability_after=after,
        confidence_histogram={"edges": edges50, "counts": conf_counts.tolist()},
        entropy_histogram={"edges": edges50, "counts": ent_counts.tolist()},
        findings=findings,
        notes=notes,
        binary=binary,
    )


def _batch_extras(
    scores: np.ndarray, labels: np.ndarray, probs: bool, n_bins: int
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Every calibration-error variant and the Brier decomposition of the scores as read
    (``(N,)``: binary), validated already while reading (in the file's own dtype)."""
    arg: dict[str, Any] = {"probs" if probs else "logits": scores}
    calib: list[dict[str, Any]] = []
    with validation(False):
        for mode in ("top-label", "classwise"):
            for binning in ("equal-width", "equal-mass"):
                for norm in ("l1", "l2", "max"):
                    r = calibration_error(
                        **arg, target=labels, n_bins=n_bins, binning=binning, norm=norm, mode=mode
                    )
                    calib.append(
                        {
                            "mode": mode,
                            "binning": binning,
                            "norm": norm,
                            "debiased": False,
                            "value": r.value,
                        }
                    )
        r = calibration_error(**arg, target=labels, n_bins=n_bins, norm="l2", debiased=True)
        calib.append(
            {
                "mode": "top-label",
                "binning": "equal-width",
                "norm": "l2",
                "debiased": True,
                "value": r.value,
            }
        )
        brier = brier_decomposition(**arg, target=labels, n_bins=n_bins).to_dict()
    return calib, brier


def health_findings(logits: np.ndarray, labels: np.ndarray) -> list[dict[str, str]]:
    """Numerical-health findings of :func:`logitlab.diagnostics.diagnose` as plain dicts.

    The single integration point with the diagnostics module, imported lazily: without it (or if
    it fails) the report still works, with no findings (or one finding saying why).
    """
    try:
        from logitlab.diagnostics import diagnose  # type: ignore[attr-defined, unused-ignore]
    except ImportError:
        return []
    try:
        rep = diagnose(logits, labels)
    except Exception as exc:  # a diagnostics bug must not cost the user the evaluation report
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return [{"severity": "low", "code": "diagnostics-failed", "message": msg}]
    out = []
    for f in getattr(rep, "findings", []):
        if hasattr(f, "to_dict"):
            d = f.to_dict()
        elif dataclasses.is_dataclass(f) and not isinstance(f, type):
            d = dataclasses.asdict(f)
        else:
            d = dict(f)
        out.append({str(k): str(v) for k, v in d.items()})
    return out

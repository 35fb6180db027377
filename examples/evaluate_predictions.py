"""Evaluate a classifier's predictions with the Python API (the same numbers as `logitlab report`).

Uses the bundled sample: logits of a logistic regression on scikit-learn's digits (held-out part).

Run: ``python examples/evaluate_predictions.py``.
"""

from __future__ import annotations

from importlib.resources import files

import numpy as np

from logitlab.metrics import (
    Evaluator,
    brier_decomposition,
    calibration_error,
    fit_temperature,
    nll,
)

SAMPLE = files("logitlab") / "data" / "digits_sample.npz"


def main() -> None:
    with SAMPLE.open("rb") as fh, np.load(fh) as f:
        logits, labels = f["logits"], f["labels"]
    print(f"{logits.shape[0]} samples, {logits.shape[1]} classes")

    # batch metrics
    print(f"NLL {nll(logits=logits, target=labels):.4f}")
    for binning in ("equal-width", "equal-mass"):
        r = calibration_error(logits=logits, target=labels, binning=binning)
        print(f"ECE ({binning}) {r.value:.4f}; non-empty bins: {int((r.table.counts > 0).sum())}")
    d = brier_decomposition(logits=logits, target=labels)
    within = d.within_bin_variance - d.within_bin_covariance
    print(
        f"Brier {d.brier:.4f} = REL {d.reliability:.4f} - RES {d.resolution:.4f} "
        f"+ UNC {d.uncertainty:.4f} (+ within-bin {within:.1e})"
    )

    # streaming: the same metrics in batches, constant memory
    ev = Evaluator()
    for a in range(0, len(labels), 100):
        ev.update(logits[a : a + 100], labels[a : a + 100])
    res = ev.compute()
    print(f"streaming: NLL {res.nll:.4f}, accuracy {res.accuracy:.4f}, ECE {res.ece:.4f}")

    # temperature scaling
    t = fit_temperature(logits, labels)
    print(
        f"T = {t.temperature:.4f} after {t.iterations} Newton steps: "
        f"NLL {t.nll_before:.4f} -> {t.nll_after:.4f}, ECE {t.ece_before:.4f} -> {t.ece_after:.4f}"
    )


if __name__ == "__main__":
    main()

"""Regenerate the bundled sample ``src/logitlab/data/digits_sample.npz``.

Real predictions of a small classifier on a real dataset that ships with scikit-learn: a
multinomial logistic regression trained on 60% of the 8x8 handwritten digits (1797 images, 10
classes), and its logits (``decision_function``) on the held-out 40%, stored as float32 with the
int64 labels (719 x 10, about 27 KB compressed). The model is accurate (97.5%) but not
calibrated: its L2 penalty shrinks the logits, so the fitted temperature is below 1
(under-confident; ECE 0.022 -> 0.011 after temperature scaling), which the report shows.

Run: ``python scripts/make_sample.py``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split

OUT = Path(__file__).resolve().parents[1] / "src" / "logitlab" / "data" / "digits_sample.npz"


def main() -> None:
    x, y = load_digits(return_X_y=True)
    x_tr, x_te, y_tr, y_te = train_test_split(
        x / 16.0, y, test_size=0.4, random_state=0, stratify=y
    )
    clf = LogisticRegression(C=10.0, max_iter=5000, random_state=0).fit(x_tr, y_tr)
    logits = clf.decision_function(x_te).astype(np.float32)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(OUT, logits=logits, labels=y_te.astype(np.int64))
    acc = float((logits.argmax(1) == y_te).mean())
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes): {logits.shape}, accuracy {acc:.4f}")


if __name__ == "__main__":
    main()

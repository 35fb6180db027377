"""The loss of confident rows on the fused cross-entropy paths, in ulps against mpmath.

Also ``softmax([0, -30, -30, -31.5], T=0.3)`` in float64 (the core at a temperature that is not
a power of two, where the division rounds as well as the subtraction).

    PYTHONPATH=src python benchmarks/fused_confident_rows.py [--rows 200]

Rows of 64 classes (float32) or 8 (float64) whose target, the maximum, leads the others by about
25 nats (``x[:, 0] += 25`` on ``3 * randn``), at temperatures 1 and 0.3. Each cell: the largest
relative error of ``reduction="none"`` losses in ulps of the dtype, against 120-digit mpmath of
``log1p(sum exp((z_i - z_0) / T))`` on the logits as the dtype holds them, with ``T`` as the
dtype holds it (the reference of ``tests/torch/test_fused_loss_accuracy.py``, which asserts 4).
"""

from __future__ import annotations

import argparse

import mpmath
import numpy as np
import torch

import logitlab as ll
from logitlab import _config
from logitlab.torch import cross_entropy


def _exact(x: np.ndarray, t_held: float) -> list[mpmath.mpf]:
    mpmath.mp.dps = 120
    t = mpmath.mpf(t_held)
    out = []
    for row in x.astype(np.float64):
        z = [mpmath.mpf(float(v)) / t for v in row]
        out.append(mpmath.log1p(mpmath.fsum(mpmath.exp(v - z[0]) for v in z[1:])))
    return out


def _ulps(got: np.ndarray, ref: list[mpmath.mpf], eps: float) -> float:
    return max(
        float(abs((mpmath.mpf(float(g)) - r) / r)) / eps for g, r in zip(got, ref, strict=True)
    )


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=200)
    a = ap.parse_args(argv)
    row = [0.0, -30.0, -30.0, -31.5]
    mpmath.mp.dps = 60
    z = [mpmath.mpf(v) / mpmath.mpf(0.3) for v in row]
    tot = mpmath.fsum(mpmath.exp(v - z[0]) for v in z)
    ref = [mpmath.exp(v - z[0]) / tot for v in z]
    p = ll.softmax(np.array(row), temperature=0.3)
    print(f"softmax({row}, T=0.3), float64: {_ulps(p, ref, float(np.finfo(float).eps)):.1f} ulps")
    print()
    print("| dtype | T | path | max ulps |")
    print("|---|---|---|---|")
    for dt, c in ((np.float64, 8), (np.float32, 64)):
        rng = np.random.default_rng(0)
        x = rng.normal(size=(a.rows, c)) * 3
        x[:, 0] += 25
        x = x.astype(dt)
        t = np.zeros(a.rows, dtype=np.int64)
        eps = float(np.finfo(dt).eps)
        for temp in (1.0, 0.3):
            ref = _exact(x, float(np.asarray(temp, dtype=dt)))
            xt, tt = torch.from_numpy(x), torch.from_numpy(t)
            got = {"ll.cross_entropy (NumPy)": ll.cross_entropy(x, t, temperature=temp,
                                                                reduction="none")}  # fmt: skip
            paths = [("logitlab.torch, torch path", None)]
            if dt == np.float32:
                paths.append(("native kernel", "best"))
            for name, native in paths:
                with _config.override(native=native):
                    out = cross_entropy(xt, tt, temperature=temp, reduction="none")
                got[name] = out.numpy()
            for name, g in got.items():
                print(f"| {np.dtype(dt).name} | {temp} | {name} | {_ulps(g, ref, eps):.1f} |")


if __name__ == "__main__":
    main()

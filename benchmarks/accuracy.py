"""Accuracy of logitlab, PyTorch and SciPy against 60-digit mpmath, side by side.

Writes ``docs/accuracy.md``: for each family of adversarial inputs and each dtype, the maximum
error in ulps of the output dtype (and the maximum relative error) of each library.

Run: ``python benchmarks/accuracy.py`` (or ``make bench``).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import scipy.special as ss
import scipy.stats as st
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
KEPT_SECTIONS = (
    "## Fused losses and native row kernels",
    "<!-- grad-accuracy:start -->",
    "## Conformance",
)
sys.path.insert(0, str(ROOT))

from tests import reference as R  # noqa: E402

import logitlab as ll  # noqa: E402

NEG = -math.inf
RNG = np.random.default_rng(0)
RAND = list(RNG.standard_normal(1000))

LOGIT_FAMILIES: dict[str, list[list[float]]] = {
    "dominated (`[0, -40]`, `[0, -20, -25]`)": [[0.0, -40.0], [0.0, -20.0, -25.0]],
    "near-deterministic (`[0, -30, -30, -30]`)": [
        [0.0, -30.0, -30.0, -30.0],
        [0.0, -15.0, -15.0, -15.0],
    ],
    "near-deterministic, max != 0 (`[0.1, -29.9, -29.9, -29.9]`)": [
        [0.1, -29.9, -29.9, -29.9],
        [1.7, -20.3, -25.9, -31.3],
    ],
    "tiny probabilities down to subnormals (`[0, -740, -745]`, `[0, -100, -103]`)": [
        [0.0, -740.0, -745.0, 3e-3],
        [0.0, -100.0, -103.0, -0.5],
    ],
    "uniform / ties": [[3.25] * 7, [2.0, 2.0, -1.0]],
    "huge (±1e4, ±1e30)": [[1e4, 1e4 - 1.0, -1e4], [1e30, -1e30, 0.0], [-1e4, -1e4 - 2.0]],
    "masked (`-inf`)": [[NEG, 0.5, 1.0, NEG]],
    "random normal, n=1000 (σ=1, σ=30)": [RAND, [30 * v for v in RAND]],
}


def _err(vals: Any, exact: list[Any], dtype: Any) -> tuple[float, float]:
    """(max ulps, max relative error) of ``vals`` against ``exact``."""
    v = np.asarray(vals, dtype=np.float64).reshape(-1)
    ulps, rel = 0.0, 0.0
    half = dtype if isinstance(dtype, _Half) else None
    if half is not None:
        dtype = np.float32
    for c, e in zip(v, exact, strict=True):
        u = _half_ulps(float(c), e, half) if half else R.ulp_error(float(c), e, dtype)
        ulps = max(ulps, u)
        if e in (R.INF, -R.INF) or abs(e) < np.finfo(dtype).smallest_normal:
            # below the normal range a relative error says nothing (underflow is correct there)
            r = 0.0 if (float(c) == float(e) or abs(e) != R.INF) else math.inf
        else:
            r = float(abs((R.mpf(float(c)) - e) / e)) if math.isfinite(c) else math.inf
        rel = max(rel, r)
    return ulps, rel


def _t(x: list[list[float]] | list[float], dtype: Any) -> Any:
    return torch.tensor(x, dtype=dtype)


Impl = Callable[[list[float], type], Any]


def _families() -> list[tuple[str, str, dict[str, Impl], Callable[[list[float]], list[Any]]]]:
    """(function, family, {library: fn(row, dtype) -> values}, exact(row) -> values)."""
    out: list[tuple[str, str, dict[str, Impl], Callable[[list[float]], list[Any]]]] = []
    for fam in LOGIT_FAMILIES:
        td = {np.float64: torch.float64, np.float32: torch.float32}
        out.append(
            (
                "logsumexp",
                fam,
                {
                    "logitlab": lambda r, d: ll.logsumexp(np.asarray([r], dtype=d)),
                    "torch": lambda r, d, td=td: torch.logsumexp(_t([r], td[d]), -1).numpy(),
                    "scipy": lambda r, d: ss.logsumexp(np.asarray([r], dtype=d), axis=-1),
                },
                lambda r: [R.lse(r)],
            )
        )
        out.append(
            (
                "log_softmax",
                fam,
                {
                    "logitlab": lambda r, d: ll.log_softmax(np.asarray([r], dtype=d)),
                    "torch": lambda r, d, td=td: torch.log_softmax(_t([r], td[d]), -1).numpy(),
                    "scipy": lambda r, d: ss.log_softmax(np.asarray([r], dtype=d), axis=-1),
                },
                R.log_softmax,
            )
        )
        out.append(
            (
                "softmax",
                fam,
                {
                    "logitlab": lambda r, d: ll.softmax(np.asarray([r], dtype=d)),
                    "torch": lambda r, d, td=td: torch.softmax(_t([r], td[d]), -1).numpy(),
                    "scipy": lambda r, d: ss.softmax(np.asarray([r], dtype=d), axis=-1),
                },
                R.softmax,
            )
        )
        out.append(
            (
                "entropy (logits)",
                fam,
                {
                    "logitlab": lambda r, d: ll.entropy(logits=np.asarray([r], dtype=d)),
                    "torch": lambda r, d, td=td: (
                        torch.distributions.Categorical(logits=_t([r], td[d])).entropy().numpy()
                    ),
                    "scipy": lambda r, d: st.entropy(ss.softmax(np.asarray(r, dtype=d))),
                },
                lambda r: [R.entropy_logits(r)],
            )
        )
        out.append(
            (
                "cross-entropy (class target = argmin)",
                fam,
                {
                    "logitlab": lambda r, d: ll.cross_entropy(
                        np.asarray([r], dtype=d), [int(np.argmin(r))], reduction="none"
                    ),
                    "torch": lambda r, d, td=td: F.cross_entropy(
                        _t([r], td[d]), torch.tensor([int(np.argmin(r))]), reduction="none"
                    ).numpy(),
                    "scipy": lambda r, d: (
                        -ss.log_softmax(np.asarray(r, dtype=d))[int(np.argmin(r))]
                    ),
                },
                lambda r: [R.nll(r, int(np.argmin(r)))],
            )
        )
    return out


def _simple_rows() -> list[tuple[str, str, Any, dict[str, Callable[[], Any]], list[Any]]]:
    """Families that are not logit rows: BCE, KL, half precision."""
    rows: list[tuple[str, str, Any, dict[str, Callable[[], Any]], list[Any]]] = []
    bce = [(1e-50, 1.0), (1e-300, 0.0), (5e-324, 1.0), (0.3, 0.7), (0.999999, 0.0)]
    p = np.array([c[0] for c in bce])
    y = np.array([c[1] for c in bce])
    rows.append(
        (
            "binary_cross_entropy (probs)",
            "tiny and extreme p",
            np.float64,
            {
                "logitlab": lambda: ll.binary_cross_entropy(p, y, reduction="none"),
                "torch": lambda: F.binary_cross_entropy(
                    torch.tensor(p), torch.tensor(y), reduction="none"
                ).numpy(),
                "scipy": lambda: -(ss.xlogy(y, p) + ss.xlog1py(1 - y, -p)),
            },
            [R.bce_probs(a, b) for a, b in bce],
        )
    )
    xs = np.array([-40.0, 40.0, -1e4, 3.0, -750.0, math.inf, -math.inf])
    ys = np.array([0.0, 1.0, 1.0, 0.3, 0.0, 1.0, 0.0])
    for d, td in ((np.float64, torch.float64), (np.float32, torch.float32)):
        xd, yd = xs.astype(d), ys.astype(d)
        rows.append(
            (
                "binary_cross_entropy_with_logits",
                "|x| up to 1e4, ±inf",
                d,
                {
                    "logitlab": lambda xd=xd, yd=yd: ll.binary_cross_entropy_with_logits(
                        xd, yd, reduction="none"
                    ),
                    "torch": lambda xd=xd, yd=yd, td=td: F.binary_cross_entropy_with_logits(
                        torch.tensor(xd, dtype=td), torch.tensor(yd, dtype=td), reduction="none"
                    ).numpy(),
                    "scipy": lambda xd=xd, yd=yd: (
                        -(yd * ss.log_expit(xd) + (1 - yd) * ss.log_expit(-xd))
                    ),
                },
                [R.bce_logits(float(a), float(b)) for a, b in zip(xd, yd, strict=True)],
            )
        )
    for delta in (1e-6, 1e-10):
        q = np.full(6, 1 / 6)
        pp = q.copy()
        pp[0] += delta
        pp[1] -= delta
        rows.append(
            (
                "kl_divergence (probs)",
                f"p = q ± {delta:g}",
                np.float64,
                {
                    "logitlab": lambda pp=pp, q=q: ll.kl_divergence(pp, q),
                    "torch": lambda pp=pp, q=q: F.kl_div(
                        torch.tensor(np.log(q)), torch.tensor(pp), reduction="sum"
                    ).numpy(),
                    "scipy": lambda pp=pp, q=q: st.entropy(pp, q),
                },
                [R.kl(list(pp), list(q))],
            )
        )
    xb = (np.random.default_rng(1).standard_normal((8, 64)) * 6).astype(np.float32)
    # half-precision rows: exact values, errors measured in ulps of the half dtype (HALF below)
    for name, td in (("bfloat16", torch.bfloat16), ("float16", torch.float16)):
        xt = torch.tensor(xb).to(td)
        rounded = xt.double().numpy()
        exact = [R.entropy_logits(list(r)) for r in rounded]
        rows.append(
            (
                f"entropy (logits), {name} in/out",
                "σ=6, n=64",
                HALF[name],
                {
                    "logitlab": lambda xt=xt: ll.entropy(logits=xt).float().numpy(),
                    "torch": lambda xt=xt: (
                        torch.distributions.Categorical(logits=xt).entropy().float().numpy()
                    ),
                    "scipy": lambda: None,
                },
                exact,
            )
        )
    return rows


class _Half:
    """ulp arithmetic for a half dtype NumPy lacks (bfloat16): mantissa bits and exponent range."""

    def __init__(self, name: str, mant: int, emin: int) -> None:
        self.name, self.mant, self.emin = name, mant, emin


HALF = {"bfloat16": _Half("bfloat16", 7, -126), "float16": _Half("float16", 10, -14)}


def _half_ulps(c: float, e: Any, h: _Half) -> float:
    if not math.isfinite(c):
        return math.inf
    v = abs(float(e))
    ex = max(math.floor(math.log2(v)) if v > 0 else h.emin, h.emin)
    return float(abs(R.mpf(c) - e) / R.mpf(2.0 ** (ex - h.mant)))


def _fmt(e: tuple[float, float] | None) -> str:
    if e is None:
        return "—"
    u, r = e
    us = "inf" if not math.isfinite(u) else (f"{u:.1f}" if u < 1e4 else f"{u:.1e}")
    rs = "inf" if not math.isfinite(r) else f"{r:.1e}"
    return f"{us} ({rs})"


def main() -> None:
    libs = ["logitlab", "torch", "scipy"]
    lines = [
        "# Accuracy: logitlab vs PyTorch vs SciPy",
        "",
        f"Generated by `python benchmarks/accuracy.py` with torch {torch.__version__}, "
        f"SciPy {__import__('scipy').__version__}, NumPy {np.__version__}. Each cell: the maximum "
        "error over the family in **ulps of the output dtype** (relative error in parentheses) "
        "against a 60-digit mpmath evaluation of the same (rounded) inputs. `inf` ulps means a "
        "wrong zero, a NaN or an infinity where the exact value is finite. The test suite "
        "(`tests/test_accuracy.py`) asserts logitlab's bound of 4 ulps on these families.",
        "",
        "| function | family | dtype | " + " | ".join(libs) + " |",
        "|---|---|---|" + "---|" * len(libs),
    ]
    for fn, fam, impls, exact_fn in _families():
        rows = LOGIT_FAMILIES[fam]
        for d in (np.float64, np.float32):
            cells = []
            for lib in libs:
                worst: tuple[float, float] = (0.0, 0.0)
                for r in rows:
                    rr = [float(v) for v in np.asarray(r, dtype=d)]
                    e = _err(impls[lib](rr, d), exact_fn(rr), d)
                    worst = (max(worst[0], e[0]), max(worst[1], e[1]))
                cells.append(_fmt(worst))
            lines.append(f"| {fn} | {fam} | {d.__name__} | " + " | ".join(cells) + " |")
    for fn, fam, d, impls, exact in _simple_rows():
        cells = []
        for lib in libs:
            vals = impls[lib]()
            cells.append("—" if vals is None else _fmt(_err(vals, exact, d)))
        dname = d.name if isinstance(d, _Half) else np.dtype(d).name
        lines.append(f"| {fn} | {fam} | {dname} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Half-precision rows: ulps of the half dtype itself (a correctly rounded result is "
        "within 0.5). logitlab computes in float32 and rounds once.",
        "",
    ]
    out = ROOT / "docs" / "accuracy.md"
    # Everything after this script's own tables is written by others and kept: the fused-path
    # bounds (by hand), the gradient table (benchmarks/grad_accuracy.py) and the conformance
    # table (benchmarks/conformance_summary.py).
    old = out.read_text() if out.exists() else ""
    kept = [i for i in (old.find(m) for m in KEPT_SECTIONS) if i >= 0]
    tail = old[min(kept) :] if kept else ""
    out.write_text("\n".join(lines).rstrip("\n") + ("\n\n" + tail if tail else "\n"))
    print("\n".join(lines))


if __name__ == "__main__":
    main()

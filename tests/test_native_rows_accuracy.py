"""The native row kernels of ``_rows.c`` (and the NumPy/torch paths they replace) against
60-digit mpmath on the adversarial families of ``tests/test_accuracy.py``.

* ``logitlab_eval_rows`` (the streaming :class:`~logitlab.metrics.Evaluator`, float32): mean NLL,
  entropy, Brier score, top-1/top-5 accuracy;
* ``logitlab_diag_rows`` (:func:`~logitlab.diagnose`, float16/float32): mean loss, top
  probability and entropy at T = 1/2, 1, 2, and the gradient ``p - onehot(t)`` (its largest
  entry and the histogram of its binary exponents);
* ``logitlab_lsm_rows`` (the core's float32 ``logsumexp`` / ``log_softmax``) at a large
  vocabulary, with the gradient of ``logsumexp``.

Each runs native (float32, and float16 for diagnose) and on the fallback paths
``LOGITLAB_NATIVE=0`` selects (torch or NumPy blocks), float32 and float64. Bound, as for the
fused losses (``tests/torch/test_fused_accuracy``, ``loss_ulps``): ``4 + dbar / 2`` ulps of the
input dtype, ``dbar`` the ``exp(-d)``-weighted mean distance ``d_i = max z - z_i`` of the
classes below the maximum (the kernels round ``d_i`` before ``exp``, which amplifies that
rounding by ``d_i``); Brier ``4 + dbar`` (squares).
"""

from __future__ import annotations

import functools
import math

import mpmath
import numpy as np
import pytest
from tests import reference as R

import logitlab as ll
from logitlab import _native, diagnose
from logitlab.metrics import Evaluator

NEG = -math.inf
_RAND = np.random.default_rng(1234).standard_normal(200)
ROWS: dict[str, list[float]] = {
    "dominated-40": [0.0, -40.0],
    "dominated-20": [0.0, -20.0, -25.0],
    "near-deterministic": [0.0, -30.0, -30.0, -30.0],
    "near-deterministic-shifted": [0.1, -29.9, -29.9, -29.9],
    "dominated-shifted": [1.7, -20.3, -25.9, -31.3],
    "subnormal-probs-f64": [0.0, -740.0, -745.0, 3e-3],
    "subnormal-probs-f32": [0.0, -100.0, -103.0, -0.5],
    "uniform": [3.25] * 7,
    "ties": [2.0, 2.0, -1.0],
    "masked": [NEG, 0.5, 1.0, NEG],
    "huge+-1e4": [1e4, 1e4 - 1.0, -1e4],
    "huge-negative": [-1e4, -1e4 - 2.0],
    "random-200": list(_RAND),
    "random-200x30": list(30 * _RAND),
}
NATIVE = _native.lib() is not None
PATHS = [("fallback", np.float64), ("fallback", np.float32)]
if NATIVE:
    PATHS.append(("native", np.float32))
PATH_IDS = [f"{p}-{np.dtype(d).name}" for p, d in PATHS]


@pytest.fixture(params=PATHS, ids=PATH_IDS)
def path(request, monkeypatch):
    name, dt = request.param
    monkeypatch.setenv("LOGITLAB_NATIVE", "1" if name == "native" else "0")
    return name, dt


def _rounded(row: list[float], dt: type) -> tuple[float, ...]:
    return tuple(float(v) for v in np.asarray(row, dtype=dt))


def _targets(x: tuple[float, ...]) -> list[int]:
    fin = [i for i, v in enumerate(x) if math.isfinite(v)]
    return sorted({fin[0], fin[-1], int(np.argmax(x)), min(fin, key=lambda i: x[i])})


@functools.cache
def _row(x: tuple[float, ...], temperature: float = 1.0) -> dict:
    """Exact log-softmax, softmax, lse and entropy of ``x / T``."""
    lse, ls, p = R._lsm([R.mpf(v) / R.mpf(temperature) if math.isfinite(v) else -R.INF for v in x])
    ent = -mpmath.fsum(pi * li for pi, li in zip(p, ls, strict=True) if pi != 0)
    return {"lse": lse, "ls": ls, "p": p, "entropy": ent}


def _brier(x: tuple[float, ...], t: int) -> mpmath.mpf:
    return mpmath.fsum((pi - (1 if i == t else 0)) ** 2 for i, pi in enumerate(_row(x)["p"]))


def _dbar(x: tuple[float, ...]) -> float:
    xf = np.asarray(x, dtype=np.float64)
    fin = np.isfinite(xf)
    d = np.where(fin, xf[fin].max() - np.where(fin, xf, 0), 0.0)
    w = np.where(fin, np.exp(-d), 0.0)
    w[int(np.argmax(np.where(fin, xf, -np.inf)))] = 0.0
    return float((w * d).sum() / w.sum()) if w.sum() > 0 else 0.0


# ------------------------------------------------------------------ Evaluator


@pytest.mark.parametrize("family", ROWS)
def test_evaluator_matches_mpmath(path, family):
    """Mean NLL, entropy, Brier and top-k over one row with several targets (argmax, argmin,
    first and last finite class)."""
    _, dt = path
    x = _rounded(ROWS[family], dt)
    ts = _targets(x)
    ev = Evaluator()
    ev.update(np.array([x] * len(ts), dtype=dt), np.array(ts))
    res = ev.compute()
    n = len(ts)
    b = 4 + _dbar(x) / 2
    nll = mpmath.fsum(-_row(x)["ls"][t] for t in ts) / n
    ent = _row(x)["entropy"]
    brier = mpmath.fsum(_brier(x, t) for t in ts) / n
    assert R.ulps_of(res.nll, nll, nll, dt) <= b
    assert R.ulps_of(res.mean_entropy, ent, ent, dt) <= b
    assert R.ulps_of(res.brier, brier, brier, dt) <= 2 * b
    fin = [v for v in x if math.isfinite(v)]
    top1 = sum(all(x[t] >= v for v in fin) for t in ts) / n  # ties count for the target
    # top-5 is meaningless (and omitted) with 5 classes or fewer
    top5 = sum(sum(v > x[t] for v in fin) < 5 for t in ts) / n if len(x) > 5 else None
    assert (res.accuracy, res.top5_accuracy) == (top1, top5)


@pytest.mark.parametrize(
    "family",
    ["dominated-40", "near-deterministic", "near-deterministic-shifted", "dominated-shifted"],
)
def test_evaluator_confident_correct_brier(path, family):
    """A confident, correct model: Brier ~ s^2 (1e-25 for [0, -30, -30, -30]). The textbook
    ``1 - 2 p_t + sum p^2`` cancels to exactly 0.0 here, in every path (float64 included)."""
    _, dt = path
    x = _rounded(ROWS[family], dt)
    t = int(np.argmax(x))
    ev = Evaluator()
    ev.update(np.array([x] * 3, dtype=dt), np.array([t] * 3))
    res = ev.compute()
    b = 4 + _dbar(x) / 2
    exact = _brier(x, t)
    assert R.ulps_of(res.brier, exact, exact, dt) <= 2 * b
    assert R.ulps_of(res.nll, -_row(x)["ls"][t], -_row(x)["ls"][t], dt) <= b


# ------------------------------------------------------------------ diagnose

DIAG_PATHS = [*PATHS, ("fallback", np.float16)] + ([("native", np.float16)] if NATIVE else [])


def _grad_hist_check(rep, x: tuple[float, ...], ts: list[int], work: type) -> None:
    """The histogram of floor(log2 |p - onehot(t)|) against the exact one. An entry within
    2^-13 (relative) of a power of two may sit in either neighbouring bin (the kernels' p carry
    a few ulps, times |d| / 2); below the work dtype's normal range it is counted as zero."""
    p = _row(x)["p"]
    tiny = R.mpf(float(np.finfo(work).smallest_normal))
    exact: dict[int, int] = {}
    loose: dict[int, int] = {}
    zero = 0
    for t in ts:
        for i, pi in enumerate(p):
            g = abs(pi - (1 if i == t else 0))
            if g < tiny:
                zero += 1
                continue
            lg = float(mpmath.log(g, 2))
            e = math.floor(lg)
            exact[e] = exact.get(e, 0) + 1
            if abs(lg - round(lg)) < 2**-13:
                k = round(lg)
                loose[k - 1] = loose.get(k - 1, 0) + 1
                loose[k] = loose.get(k, 0) + 1
    h = rep.histograms.get("grad_log2", {"edges": [0.0], "counts": []})
    got = {int(e): int(c) for e, c in zip(h["edges"], h["counts"], strict=False) if c}
    for e in set(got) | set(exact):
        assert abs(got.get(e, 0) - exact.get(e, 0)) <= loose.get(e, 0), (e, got, exact)
    # zero_fraction: the entries that round to 0 in float16 (|g| < 2^-25), zeros included
    f16_zero = zero + sum(c for e, c in exact.items() if e < -25)
    n = len(ts) * len(x)
    assert rep.mixed_precision.zero_fraction * n == pytest.approx(
        f16_zero, abs=loose.get(-26, 0) + 1e-9
    )


@pytest.mark.parametrize("family", [f for f in ROWS if f != "masked"])  # -inf rows: counted apart
@pytest.mark.parametrize(("name", "dt"), DIAG_PATHS, ids=lambda v: getattr(v, "__name__", v))
def test_diagnose_matches_mpmath(name, dt, family, monkeypatch):
    monkeypatch.setenv("LOGITLAB_NATIVE", "1" if name == "native" else "0")
    with np.errstate(over="ignore"):
        xa = np.asarray(ROWS[family], dtype=dt)
    if not np.isfinite(xa).all():
        pytest.skip("overflows float16")
    x = tuple(float(v) for v in xa)
    ts = _targets(x)
    rep = diagnose(np.array([x] * len(ts), dtype=dt), target=np.array(ts))
    # the report's numbers are float64 sums over the kernels' float32 rows (float64 for float64)
    work = np.float64 if dt == np.float64 else np.float32
    b = 4 + _dbar(x) / 2
    n = len(ts)
    loss = mpmath.fsum(-_row(x)["ls"][t] for t in ts) / n
    assert R.ulps_of(rep.saturation.mean_loss, loss, loss, work) <= b
    top = max(_row(x)["p"])
    assert R.ulps_of(rep.saturation.mean_top_prob, top, top, work) <= b
    ent = _row(x)["entropy"]
    for got in (rep.entropy.mean_nats, rep.entropy.min_nats, rep.entropy.max_nats):
        assert R.ulps_of(got, ent, ent, work) <= b
    for key, T, k in (("0.5", 0.5, 2.0), ("2", 2.0, 0.5)):  # w^2 doubles d's error, sqrt(w) halves
        r = _row(x, T)
        got = rep.entropy.temperature[key]
        assert R.ulps_of(got["mean_entropy_nats"], r["entropy"], r["entropy"], work) <= 4 + k * (
            b - 4
        )
        assert R.ulps_of(got["mean_top_prob"], max(r["p"]), max(r["p"]), work) <= 4 + k * (b - 4)
    # gradient p - onehot(t): the largest entry (|p_t - 1| for t = argmax: s / (1 + s) exactly)
    p = _row(x)["p"]
    gmax = max(abs(p[t] - 1) for t in ts)
    assert R.ulps_of(rep.mixed_precision.max_abs_grad, gmax, gmax, work) <= b
    _grad_hist_check(rep, x, ts, work)


# ------------------------------------------------------------------ core lse / log-softmax rows


@functools.cache
def _large() -> tuple[np.ndarray, list[dict]]:
    g = np.random.default_rng(21)
    rows = (g.standard_normal((2, 2**14 + 37)) * 4).astype(np.float32)
    rows[1, 3] += 25.0  # a near-deterministic row
    with mpmath.workdps(25):
        refs = [_row(tuple(float(v) for v in r)) for r in rows]
    for r in refs:
        r["ls64"] = np.array([float(v) for v in r["ls"]])
        r["p64"] = np.array([float(v) for v in r["p"]])
    return rows, refs


@pytest.mark.parametrize("lib", ["numpy", "torch"])
@pytest.mark.parametrize("dt", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("native", ["1", "0"])
def test_core_rows_large_vocabulary(lib, dt, native, monkeypatch):
    """``logsumexp`` and every ``log_softmax`` entry within 4 ulps at V = 2^14 + 37 (native
    float32 kernel, or the chunked NumPy/torch path), and the gradient of ``logsumexp``
    (``softmax``, torch autograd) entry by entry within 4 ulps."""
    monkeypatch.setenv("LOGITLAB_NATIVE", native)
    rows, refs = _large()
    x = rows.astype(dt)
    if lib == "torch":
        torch = pytest.importorskip("torch")
        xt = torch.from_numpy(x.copy()).requires_grad_()
        lse = ll.logsumexp(xt, axis=-1)
        lse.sum().backward()
        lsm = ll.log_softmax(xt.detach(), axis=-1).numpy()
        grads = xt.grad.numpy()
        lse = lse.detach().numpy()
    else:
        lse = ll.logsumexp(x, axis=-1)
        lsm = ll.log_softmax(x, axis=-1)
        grads = None
    fi = np.finfo(dt)
    for n, r in enumerate(refs):
        assert R.ulps_of(float(lse[n]), r["lse"], r["lse"], dt) <= 4
        unit = np.maximum(np.abs(r["ls64"]) * float(fi.eps), float(fi.smallest_normal))
        assert (np.abs(lsm[n].astype(np.float64) - r["ls64"]) / unit).max() <= 4
        if grads is not None:
            unit = np.maximum(r["p64"] * float(fi.eps), float(fi.smallest_normal))
            assert (np.abs(grads[n].astype(np.float64) - r["p64"]) / unit).max() <= 4

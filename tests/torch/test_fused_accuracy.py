"""The fused cross-entropy paths against 60-digit mpmath: loss AND gradient, float64 and float32.

Paths: the native float32 kernels (``_ce_rows.c``: token-major row kernel, class-major column
kernel, the in-memory loss's one-pass backward) and the torch fallback (``LOGITLAB_NATIVE=0``,
float32 and float64). ``linear_cross_entropy`` gets exact logits from ``R.one_hot_head``
(``h = I``: ``h W^T`` is exact in any GEMM order and ``grad_W = G^T`` exposes the gradient with
respect to each logit), so the families of ``tests/test_accuracy.py`` reach the row kernels
unchanged; a rounded GEMM is tested separately in float64 (1e-12 relative).

Bounds (docs/torch.md quotes them):

* loss, ``lse`` and entropy per token: 4 ulps;
* gradient entry ``i`` of a row: ``4 + k |d_i|`` ulps of ``(A p_i + alpha_i) |dy_i/dx_i|`` (the two
  terms of ``A p_i - alpha_i``, see ``R.ce_row``), with ``d_i = (max y - y_i) / T`` and
  ``k = 1/2`` (``k = 1`` for a temperature that is not a power of two): rounding ``d_i`` is
  amplified by ``exp``; with a softcap ``c`` add ``|x_i| / c + c / T`` (``tanh`` and ``sech^2``
  of a rounded ``x / c``); for the native one-pass backward of ``cross_entropy`` add
  ``|lse| / 2`` (its saved float32 ``lse``; batches with ``|lse| > 64`` take the row kernel);
  an absolute error below the smallest normal number (a flushed subnormal) is not counted.
"""

from __future__ import annotations

import functools
import math

import mpmath
import numpy as np
import pytest
from tests import reference as R

torch = pytest.importorskip("torch")

from logitlab._rows.fused import native_available  # noqa: E402
from logitlab.torch import cross_entropy, linear_cross_entropy  # noqa: E402

NEG = -math.inf
_RAND = np.random.default_rng(1234).standard_normal(200)

# The adversarial rows of tests/test_accuracy.py (random rows of 200 entries, to stay fast)
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
    "huge+-1e30": [1e30, -1e30, 0.0],
    "huge-negative": [-1e4, -1e4 - 2.0],
    "random-200": list(_RAND),
    "random-200x30": list(30 * _RAND),
}
F64, F32 = np.float64, np.float32
_NATIVE = native_available()
PATHS = [("torch", F64), ("torch", F32)]
if _NATIVE:
    PATHS += [("native-rows", F32), ("native-cols", F32)]
PATH_IDS = [f"{p}-{np.dtype(d).name}" for p, d in PATHS]


def _use(path: tuple[str, type], monkeypatch: pytest.MonkeyPatch) -> tuple[str, type]:
    """Select ``path`` (LOGITLAB_NATIVE and the chunk layout) for the rest of the test."""
    name, dt = path
    if name == "torch":
        monkeypatch.setenv("LOGITLAB_NATIVE", "0")
    else:
        monkeypatch.setenv("LOGITLAB_NATIVE", "1")
        monkeypatch.setenv("LOGITLAB_CHUNK_LAYOUT", name.split("-")[1])
    return name, dt


def _rounded(row: list[float], dt: type) -> tuple[float, ...]:
    return tuple(float(v) for v in np.asarray(row, dtype=dt))


def _targets(x: tuple[float, ...]) -> list[int]:
    fin = [i for i, v in enumerate(x) if math.isfinite(v)]
    lo = min(fin, key=lambda i: x[i])
    return sorted({fin[0], fin[-1], int(np.argmax(x)), lo})


@functools.cache
def _refs(x: tuple[float, ...], targets: tuple[int, ...], opts: tuple, weight=None) -> list[dict]:
    o = dict(opts)
    return [
        R.ce_row(
            x,
            t,
            eps=o.get("label_smoothing", 0.0),
            weight=weight,
            zloss=o.get("z_loss", 0.0),
            softcap=o.get("softcap"),
            temperature=o.get("temperature", 1.0),
        )
        for t in targets
    ]


def _distances(x, opts: dict) -> tuple[np.ndarray, float]:
    """``(d, k)``: ``d_i = (max y - y_i) / T`` (0 on masked classes) and the ulps that rounding
    ``d_i`` costs ``exp(-d_i)`` per unit of ``d_i`` (1/2; 1 with a non-dyadic temperature)."""
    T = opts.get("temperature", 1.0)
    c = opts.get("softcap")
    xf = np.asarray(x, dtype=np.float64)
    y = c * np.tanh(xf / c) if c else xf
    fin = np.isfinite(y)
    d = np.where(fin, (y[fin].max() - np.where(fin, y, 0)) / T, 0.0)
    return d, 0.5 if math.log2(T).is_integer() else 1.0


def loss_ulps(x, opts: dict) -> float:
    """Bound of a row's loss, lse and entropy: ``4 + k dbar`` ulps, ``dbar`` the mean distance
    of the classes below the maximum weighted by ``exp(-d)`` (each term of ``s`` carries its
    ``k |d_i|`` ulps into ``log1p(s)``, which a confident row's loss and entropy are made of);
    ``+ c / T`` with a softcap ``c``."""
    d, k = _distances(x, opts)
    fin = np.isfinite(np.asarray(x, dtype=np.float64))
    w = np.where(fin, np.exp(-d), 0.0)
    w[int(np.argmin(np.where(fin, d, np.inf)))] = 0.0  # the maximal entry: exactly 1, not in s
    dbar = float((w * d).sum() / w.sum()) if w.sum() > 0 else 0.0
    c = opts.get("softcap")
    return 4 + k * dbar + (c / opts.get("temperature", 1.0) if c else 0.0)


def grad_ulps(x, opts: dict, lse: float | None = None) -> np.ndarray:
    """Per-entry bound, in ulps of the entry's scale (see the module docstring)."""
    T = opts.get("temperature", 1.0)
    c = opts.get("softcap")
    xf = np.asarray(x, dtype=np.float64)
    d, k = _distances(x, opts)
    fin = np.isfinite(xf)
    b = 4 + k * d
    if c:
        b = b + np.where(fin, np.abs(np.where(fin, xf, 0)) / c, 0) + c / T
    if lse is not None:
        b = b + min(abs(lse), 64.0) / 2
    return b


def _check_grad(G, x, refs, factors, opts, dt, one_pass=False) -> None:
    """Rows of ``G`` (d loss / d logits), entry by entry, against ``factor * R.ce_row(...)``."""
    for n, (r, f) in enumerate(zip(refs, factors, strict=True)):
        b = grad_ulps(x, opts, float(r["lse"]) if one_pass else None)
        for c in range(len(x)):
            got = R.ulps_of(float(G[n, c]), r["grad"][c] * f, r["scale"][c] * f, dt)
            assert got <= b[c], (n, c, got, b[c])


LINEAR_OPTS = [
    {},
    {"z_loss": 1e-3},
    {"label_smoothing": 0.1},
    {"temperature": 0.5},
    {"temperature": 0.7},
    {"softcap": 20.0},
    {"softcap": 3.0, "temperature": 0.7, "label_smoothing": 0.1, "z_loss": 1e-4},
]


def _opt_id(o: dict) -> str:
    return "-".join(f"{k}={v}" for k, v in o.items()) or "plain"


# the column kernel takes plain cross-entropy and z-loss only (other options use the rows)
LINEAR_CASES = [
    pytest.param(p, o, id=f"{i}-{_opt_id(o)}")
    for p, i in zip(PATHS, PATH_IDS, strict=True)
    for o in LINEAR_OPTS
    if not (p[0] == "native-cols" and set(o) - {"z_loss"})
]


@pytest.mark.parametrize(("path", "opts"), LINEAR_CASES)
@pytest.mark.parametrize("family", ROWS)
def test_linear_cross_entropy_matches_mpmath(path, opts, family, monkeypatch):
    name, dt = _use(path, monkeypatch)
    x = _rounded(ROWS[family], dt)
    ts = _targets(x)
    key = tuple(sorted(opts.items()))
    refs = _refs(x, tuple(ts), key)
    h, w, b = R.one_hot_head([x] * len(ts), dt)
    h_t = torch.from_numpy(h).requires_grad_()
    w_t = torch.from_numpy(w).requires_grad_()
    b_t = None if b is None else torch.from_numpy(b)
    t = torch.tensor(ts)
    # per token: loss and the statistics (forward only)
    with torch.no_grad():
        loss, st = linear_cross_entropy(
            h_t, w_t, t, bias=b_t, reduction="none", chunk_size=2, return_stats=True, **opts
        )
    bl = loss_ulps(x, opts)
    for n, r in enumerate(refs):
        assert R.ulps_of(float(loss[n]), r["loss"], r["loss"], dt) <= bl
        assert R.ulps_of(float(st.lse[n]), r["lse"], r["lse"], dt) <= bl
        assert R.ulps_of(float(st.entropy[n]), r["entropy"], r["entropy"], dt) <= bl
    assert st.lse.dtype == loss.dtype  # float64 statistics for float64 inputs
    # mean over the tokens: d loss / d z = G / n comes back exactly as grad_W^T
    mean = linear_cross_entropy(h_t, w_t, t, bias=b_t, chunk_size=2, **opts)
    exact = mpmath.fsum(r["loss"] for r in refs) / len(ts)
    assert R.ulps_of(mean.item(), exact, exact, dt) <= bl + 1
    mean.backward()
    f = [1 / mpmath.mpf(len(ts))] * len(ts)
    _check_grad(w_t.grad.T.numpy(), x, refs, f, opts, dt)
    _check_grad_h(h_t.grad.numpy(), w, x, refs, f, opts, dt)


def _check_grad_h(gh, w, x, refs, factors, opts, dt) -> None:
    """``grad_h = G W``: per entry, the row bound plus ~V roundings of the GEMM, relative to
    ``sum_c scale_c |W_cj|`` (componentwise backward error of a dot product)."""
    V = len(x)
    for n, (r, f) in enumerate(zip(refs, factors, strict=True)):
        b = grad_ulps(x, opts)
        for j in range(w.shape[1]):
            wj = [R.mpf(float(w[c, j])) for c in range(V)]
            ex = mpmath.fsum(r["grad"][c] * f * wj[c] for c in range(V))
            sc = mpmath.fsum((b[c] + V) * r["scale"][c] * f * abs(wj[c]) for c in range(V))
            assert R.ulps_of(float(gh[n, j]), ex, sc, dt) <= 1


MEM_OPTS = [
    {},
    {"inplace_backward": True},
    {"label_smoothing": 0.1, "weight": True},
    {"temperature": 0.5},
    {"temperature": 0.7, "inplace_backward": True},
    {"weight": True, "temperature": 0.7},
]


MEM_CASES = [
    pytest.param(p, o, id=f"{i}-{_opt_id(o)}")
    for p, i in zip(PATHS, PATH_IDS, strict=True)
    for o in MEM_OPTS
    if p[0] != "native-cols"  # one native path in memory
]


@pytest.mark.parametrize(("path", "opts"), MEM_CASES)
@pytest.mark.parametrize("family", ROWS)
def test_cross_entropy_matches_mpmath(path, opts, family, monkeypatch):
    name, dt = _use(path, monkeypatch)
    x = _rounded(ROWS[family], dt)
    ts = _targets(x)
    V = len(x)
    weight = _rounded(list(np.linspace(0.5, 2.0, V)), dt) if opts.get("weight") else None
    kw = {k: v for k, v in opts.items() if k in ("label_smoothing", "temperature")}
    refs = _refs(x, tuple(ts), tuple(sorted(kw.items())), weight)
    wt = None if weight is None else torch.tensor(weight, dtype=getattr(torch, np.dtype(dt).name))
    X = torch.tensor([x] * len(ts), dtype=getattr(torch, np.dtype(dt).name))
    t = torch.tensor(ts)
    per = cross_entropy(X, t, weight=wt, reduction="none", **kw)
    bl = loss_ulps(x, kw)
    for n, r in enumerate(refs):
        assert R.ulps_of(float(per[n]), r["loss"], r["loss"], dt) <= bl
    assert torch.equal(X, torch.tensor([x] * len(ts), dtype=X.dtype))  # left untouched
    # "mean" divides by the sum of the target weights
    wsum = mpmath.fsum(R.mpf(weight[i]) if weight else R.mpf(1) for i in ts)
    Xg = X.clone().requires_grad_()
    inplace = bool(opts.get("inplace_backward"))
    loss = cross_entropy(Xg * 1.0 if inplace else Xg, t, weight=wt, inplace_backward=inplace, **kw)
    exact = mpmath.fsum(r["loss"] for r in refs) / wsum
    assert R.ulps_of(loss.item(), exact, exact, dt) <= bl + 2
    loss.backward()
    one_pass = name == "native-rows" and not opts.get("label_smoothing")
    f = [1 / wsum] * len(ts)
    _check_grad(Xg.grad.numpy(), x, refs, f, kw, dt, one_pass=one_pass)


# ------------------------------------------------------------------ float64 end to end (item 5)


def _gemm_problem(seed: int = 3, n: int = 13, d: int = 16, v: int = 61):
    g = np.random.default_rng(seed)
    h = g.standard_normal((n, d))
    w = g.standard_normal((v, d)) / 3
    b = g.standard_normal(v)
    t = g.integers(0, v, n)
    t[[2, 7]] = -100  # 11 valid tokens: 1/11 is not a float32 number
    return h, w, b, t


def _linear_reference(h, w, b, t, opts):
    """Exact mean loss and gradients (h, W, b) of the mean loss from z = h W^T + b."""
    z = R.linear_logits(h, w, b)
    valid = [i for i in range(len(t)) if t[i] != -100]
    f = 1 / mpmath.mpf(len(valid))
    refs = {
        i: R.ce_row(
            z[i],
            int(t[i]),
            eps=opts.get("label_smoothing", 0.0),
            zloss=opts.get("z_loss", 0.0),
            softcap=opts.get("softcap"),
            temperature=opts.get("temperature", 1.0),
        )
        for i in valid
    }
    G = [
        [g * f for g in refs[i]["grad"]] if i in refs else [R.mpf(0)] * len(w)
        for i in range(len(t))
    ]
    loss = mpmath.fsum(r["loss"] for r in refs.values()) * f
    gh = R.matmul(G, w)
    gw = R.matmul([list(col) for col in zip(*G, strict=True)], h)
    gb = [mpmath.fsum(col) for col in zip(*G, strict=True)]
    return loss, gh, gw, gb, refs


def _rel_normwise(got: torch.Tensor, exact) -> float:
    ex = (
        np.array([[float(v) for v in row] for row in exact]) if isinstance(exact[0], list) else None
    )
    if ex is None:
        errs = [abs(R.mpf(float(a)) - e) for a, e in zip(got.tolist(), exact, strict=True)]
        size = max(abs(e) for e in exact)
    else:
        flat = got.reshape(ex.shape).tolist()
        errs = [
            abs(R.mpf(a) - e)
            for ra, re in zip(flat, exact, strict=True)
            for a, e in zip(ra, re, strict=True)
        ]
        size = max(abs(e) for re in exact for e in re)
    return float(max(errs) / size)


GEMM_OPTS = [
    {},
    {"z_loss": 1e-3, "label_smoothing": 0.1, "softcap": 4.0, "temperature": 0.7},
]


@pytest.mark.parametrize("opts", GEMM_OPTS, ids=_opt_id)
def test_linear_cross_entropy_float64_gradients_are_float64(opts):
    """float64 gradients to 1e-12 (normwise) of a rounded GEMM's exact answer. The per-token
    factor 1/#valid used to be formed in float32 (2e-8 relative in every gradient, issue 13),
    and the statistics came back as float32."""
    h, w, b, t = _gemm_problem()
    loss_ex, gh, gw, gb, refs = _linear_reference(h, w, b, t, opts)
    ht, wt, bt = (torch.from_numpy(a.copy()).requires_grad_() for a in (h, w, b))
    loss, st = linear_cross_entropy(
        ht, wt, torch.from_numpy(t), bias=bt, chunk_size=5, return_stats=True, **opts
    )
    assert R.rel_error(loss.item(), loss_ex) < 1e-13
    assert st.lse.dtype == st.entropy.dtype == torch.float64
    for i, r in refs.items():
        assert R.rel_error(float(st.lse[i]), r["lse"]) < 1e-13
        assert R.rel_error(float(st.entropy[i]), r["entropy"]) < 1e-12
    loss.backward()
    assert _rel_normwise(ht.grad, gh) < 1e-12
    assert _rel_normwise(wt.grad, gw) < 1e-12
    assert _rel_normwise(bt.grad, gb) < 1e-12


def test_linear_cross_entropy_float64_reduction_none_backward():
    """reduction="none" recomputes the chunks in the backward with the upstream gradient."""
    h, w, b, t = _gemm_problem(seed=4)
    up = np.linspace(0.5, 1.5, len(t))
    _, _, _, _, refs = _linear_reference(h, w, b, t, {})
    G = [
        [g * R.mpf(float(up[i])) for g in refs[i]["grad"]] if i in refs else [R.mpf(0)] * len(w)
        for i in range(len(t))
    ]
    ht, wt = (torch.from_numpy(a.copy()).requires_grad_() for a in (h, w))
    loss = linear_cross_entropy(
        ht, wt, torch.from_numpy(t), bias=torch.from_numpy(b), reduction="none"
    )
    loss.backward(torch.from_numpy(up))
    assert _rel_normwise(ht.grad, R.matmul(G, w)) < 1e-12
    assert _rel_normwise(wt.grad, R.matmul([list(c) for c in zip(*G, strict=True)], h)) < 1e-12


@pytest.fixture
def world_of_one():
    """A one-process gloo group: the vocab-parallel code path (all-reduces included) on one
    shard, whose result must equal the unsharded exact one."""
    dist = pytest.importorskip("torch.distributed")
    if not dist.is_available() or not dist.is_gloo_available():
        pytest.skip("torch.distributed with gloo is not available")
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    try:
        yield dist.group.WORLD
    finally:
        dist.destroy_process_group()


def test_vocab_parallel_float64_gradients_are_float64(world_of_one):
    opts = {"z_loss": 1e-3, "label_smoothing": 0.1}
    h, w, b, t = _gemm_problem(seed=5)
    loss_ex, gh, gw, gb, _ = _linear_reference(h, w, b, t, opts)
    ht, wt, bt = (torch.from_numpy(a.copy()).requires_grad_() for a in (h, w, b))
    loss = linear_cross_entropy(
        ht, wt, torch.from_numpy(t), bias=bt, chunk_size=4, process_group=world_of_one, **opts
    )
    assert R.rel_error(loss.item(), loss_ex) < 1e-13
    loss.backward()
    assert _rel_normwise(ht.grad, gh) < 1e-12
    assert _rel_normwise(wt.grad, gw) < 1e-12
    assert _rel_normwise(bt.grad, gb) < 1e-12


# ------------------------------------------------------------------ large vocabularies


@functools.cache
def _large_rows() -> tuple[np.ndarray, list[int], list[dict]]:
    g = np.random.default_rng(9)
    rows = (g.standard_normal((2, 2**15 + 37)) * 3).astype(np.float32)
    rows[1, 5] += 12.0  # a dominant class
    ts = [7, 5]
    with mpmath.workdps(25):  # float32 needs ~10 digits; 60 would take minutes
        refs = [R.ce_row(list(map(float, r)), t) for r, t in zip(rows, ts, strict=True)]
    # rounded once to float64 (1e-16 relative), then compared vectorised
    for r in refs:
        r["grad64"] = np.array([float(v) for v in r["grad"]])
        r["scale64"] = np.array([float(v) for v in r["scale"]])
    return rows, ts, refs


def _check_grad_fast(G: np.ndarray, x: np.ndarray, r: dict, one_pass: bool = False) -> None:
    fi = np.finfo(np.float32)
    unit = np.maximum(r["scale64"] * float(fi.eps), float(fi.smallest_normal))
    err = np.abs(G.astype(np.float64) - r["grad64"]) / unit
    b = grad_ulps(x, {}, float(r["lse"]) if one_pass else None)
    assert (err <= b).all(), float((err - b).max())


@pytest.mark.skipif(not _NATIVE, reason="no native kernel")
@pytest.mark.parametrize("layout", ["rows", "cols"])
def test_native_large_vocabulary(layout, monkeypatch):
    """The float32 kernels' sums run over blocks (1024 entries per float32 lane, block sums in
    double): loss, lse and entropy within the row bound and every gradient entry within its
    bound at V = 2^15 + 37, where one float32 accumulator per lane drifts to ~1e-6 relative and
    beyond. The in-memory loss (one-pass backward from the saved lse) runs on the same rows."""
    _use(("native-" + layout, F32), monkeypatch)
    rows, ts, refs = _large_rows()
    h, w, _ = R.one_hot_head(rows, F32)
    wt = torch.from_numpy(w).requires_grad_()
    loss, st = linear_cross_entropy(
        torch.from_numpy(h), wt, torch.tensor(ts), reduction="sum", return_stats=True
    )
    loss.backward()
    for n, r in enumerate(refs):
        bl = loss_ulps(rows[n], {})
        assert R.ulps_of(float(st.lse[n]), r["lse"], r["lse"], F32) <= bl
        assert R.ulps_of(float(st.entropy[n]), r["entropy"], r["entropy"], F32) <= bl
        _check_grad_fast(wt.grad[:, n].numpy(), rows[n], r)
    exact = refs[0]["loss"] + refs[1]["loss"]
    assert R.ulps_of(loss.item(), exact, exact, F32) <= 4
    # in memory: the forward only reads, the backward writes in one pass from the saved lse
    X = torch.from_numpy(rows.copy()).requires_grad_()
    per = cross_entropy(X, torch.tensor(ts), reduction="sum")
    assert R.ulps_of(per.item(), exact, exact, F32) <= 4
    per.backward()
    for n, r in enumerate(refs):
        _check_grad_fast(X.grad[n].numpy(), rows[n], r, one_pass=True)


def test_a_shard_without_columns(world_of_one):
    # vocab-parallel over more ranks than classes leaves a rank a shard of width 0: it owns no
    # class and no target; its row pass must give the statistics of an empty row, not index it
    from logitlab._rows.fused import ce_rows

    z = torch.empty(3, 0, dtype=torch.float64)
    t = torch.tensor([0, 1, -100])
    r = ce_rows(z, t, grad_scale=torch.ones(3, dtype=torch.float64), group=world_of_one)
    assert r.loss.tolist() == [math.inf, math.inf, 0.0]
    assert r.lse.tolist() == [-math.inf] * 3
    assert z.shape == (3, 0)

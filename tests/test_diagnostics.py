"""Tests of logitlab.diagnostics: every count is checked against a direct computation."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from logitlab import entropy, softmax
from logitlab.diagnostics import (
    FORMATS,
    LogitReport,
    LogitStats,
    diagnose,
    round_to_format,
    simulate_softmax,
)

torch = pytest.importorskip("torch")

RNG = np.random.default_rng(1234)


def _torch_naive_overflow(x: np.ndarray, dtype: object) -> np.ndarray:
    """Rows where torch's own naive softmax exp(x) / sum(exp(x)) in ``dtype`` overflows."""
    t = torch.from_numpy(np.asarray(x, dtype=np.float32)).to(dtype)
    e = torch.exp(t)
    s = e.sum(-1, keepdim=True)
    p = e / s
    bad = ~torch.isfinite(s.squeeze(-1))
    # an overflowed sum gives NaN (inf/inf) or all-zero rows: never a valid distribution
    assert bool((~torch.isfinite(p) | (p == 0)).all(-1)[bad].all())
    return bad.numpy()


def _torch_stable_zero(x: np.ndarray, dtype: object) -> np.ndarray:
    t = torch.from_numpy(np.asarray(x, dtype=np.float32)).to(dtype)
    e = torch.exp(t - t.max(-1, keepdim=True).values)
    p = e / e.sum(-1, keepdim=True)
    return (p == 0).any(-1).numpy()


# --------------------------------------------------------------------------- formats


def test_round_to_format_matches_numpy_float16_and_torch_bfloat16() -> None:
    v = np.concatenate(
        [
            RNG.normal(scale=10, size=20000),
            RNG.normal(scale=1e-6, size=2000),
            np.ldexp(RNG.integers(1, 4096, 2000).astype(np.float64), -37),  # subnormal ties
            [65504.0, 65519.99, 65520.0, 1e6, -7e4, 0.0, -0.0, 2.0**-25, 3 * 2.0**-26],
        ]
    )
    with np.errstate(over="ignore"):
        ref16 = v.astype(np.float16).astype(np.float64)
    assert np.array_equal(round_to_format(v, "float16"), ref16)
    v32 = np.concatenate([RNG.normal(scale=30, size=20000), [3.3961e38, 3.39e38, 1e-40, 9e-41]])
    v32 = v32.astype(np.float32)
    ref = torch.from_numpy(v32).to(torch.bfloat16).float().numpy().astype(np.float64)
    assert np.array_equal(round_to_format(v32, "bfloat16"), ref)


def test_format_constants() -> None:
    assert FORMATS["float16"].max == 65504.0
    assert FORMATS["bfloat16"].max == float(torch.finfo(torch.bfloat16).max)
    assert FORMATS["float32"].max == float(np.finfo(np.float32).max)
    assert math.isclose(FORMATS["float16"].exp_limit, math.log(65504.0))
    assert math.isclose(FORMATS["float64"].exp_limit, math.log(np.finfo(np.float64).max))
    assert FORMATS["float16"].min_subnormal == 2.0**-24


# --------------------------------------------------------------------------- overflow / underflow


def _boundary_rows(n: int, V: int, centre: float, width: float) -> np.ndarray:
    """Rows whose log-sum-exp is spread around ``centre`` (some overflow, some do not)."""
    x = RNG.normal(scale=1.0, size=(n, V))
    lse = np.log(np.exp(x).sum(-1))
    return x - lse[:, None] + centre + RNG.uniform(-width, width, size=(n, 1))


@pytest.mark.parametrize("dtype", [np.float16, np.float32])
def test_float16_naive_overflow_is_the_real_float16_computation(dtype: type) -> None:
    x = _boundary_rows(3000, 50, math.log(65504.0), 0.02).astype(dtype)
    rep = diagnose(x)
    real = _torch_naive_overflow(x, torch.float16)
    assert 0 < real.sum() < len(x)  # the data straddle the boundary
    assert rep.dtypes["float16"].naive_overflow_rows == int(real.sum())
    assert rep.dtypes["float16"].naive_overflow_fraction == real.mean()
    # the simulation agrees row by row
    sim = simulate_softmax(x.astype(np.float32), "float16")["naive_overflow"]
    assert np.array_equal(sim, real)


def test_float16_overflow_also_checked_with_numpy_float16() -> None:
    x = np.array([[11.0, 11.0, 0.0], [11.08, -5, -5], [11.1, 0, 0], [5.0, 5.0, 5.0]], np.float16)
    with np.errstate(all="ignore"):
        e = np.exp(x)  # real float16 arithmetic
        p = e / e.sum(-1, keepdims=True)
    real = ~np.isfinite(e.sum(-1))
    assert real.tolist() == [True, False, True, False]
    assert np.isnan(p[2]).any() and (p[0] == 0).all()
    assert diagnose(x).dtypes["float16"].naive_overflow_rows == 2


def test_bfloat16_and_float32_naive_overflow_real() -> None:
    x = _boundary_rows(2000, 40, math.log(float(np.finfo(np.float32).max)), 0.01)
    x = x.astype(np.float32)
    rep = diagnose(x)
    for name, dt in (("bfloat16", torch.bfloat16), ("float32", torch.float32)):
        real = _torch_naive_overflow(x, dt)
        assert 0 < real.sum() < len(x)
        assert rep.dtypes[name].naive_overflow_rows == int(real.sum()), name
    assert rep.dtypes["float16"].naive_overflow_rows == len(x)
    assert rep.dtypes["float64"].naive_overflow_rows == 0


def test_float64_naive_overflow_exact_count() -> None:
    x = np.zeros((10, 4))
    x[:3, 0] = 710.0  # exp(710) overflows float64
    x[3:5, :] = 708.5  # 4 e^708.5 = e^709.886 > max: the sum overflows
    x[5, 0] = 709.0  # finite
    rep = diagnose(x)
    assert rep.dtypes["float64"].naive_overflow_rows == 5
    assert rep.dtypes["float64"].naive_overflow_fraction == 0.5


def test_naive_underflow_nan_rows() -> None:
    x = np.array([[-20.0, -30.0], [-16.0, -30.0], [0.0, 1.0]], np.float32)
    real = np.exp(x.astype(np.float16)).sum(-1) == 0  # every float16 exp is 0: 0/0
    rep = diagnose(x)
    assert rep.dtypes["float16"].naive_nan_rows == int(real.sum()) == 1
    assert rep.dtypes["float32"].naive_nan_rows == 0


@pytest.mark.parametrize("fmt,dt", [("float16", torch.float16), ("bfloat16", torch.bfloat16)])
def test_stable_zero_matches_real_half_softmax(fmt: str, dt: object) -> None:
    thr = math.log(FORMATS[fmt].min_subnormal)
    x = RNG.normal(size=(3000, 30)).astype(np.float32)
    x[:, 0] = 0
    x[:, 1] = x[:, 2:].max(1) + 0.1 + RNG.uniform(0, 0.5, 3000)  # the row max
    # push the minimum around the underflow boundary of the format
    x[:, 0] = x[:, 1] + thr + RNG.uniform(-3, 3, 3000)
    real = _torch_stable_zero(x, dt)
    assert 0 < real.sum() < len(x)
    rep = diagnose(x)
    assert rep.dtypes[fmt].stable_zero_rows == int(real.sum())


def test_margin_and_representable() -> None:
    x = np.array([[-100.0, 3.0], [7e4, 0.0]])
    rep = diagnose(x)
    assert rep.dtypes["float16"].margin == pytest.approx(math.log(65504) - 7e4)
    assert not rep.dtypes["float16"].max_representable
    assert rep.dtypes["bfloat16"].max_representable
    assert any(f.code == "float16-range" for f in rep.findings)


# --------------------------------------------------------------------------- saturation, targets


def test_saturation_exact() -> None:
    # 1 - p_max = s / (1 + s) with s = e^-d: saturated in float16 iff it is below 2^-10.
    d = np.array([5.0, 6.8, 7.0, 8.0, 16.0, 17.0, 30.0])
    x = np.stack([np.zeros_like(d), -d], axis=1)
    gap = np.exp(-d) / (1 + np.exp(-d))
    rep = diagnose(x)
    for name in ("float16", "bfloat16", "float32"):
        want = int(np.sum(gap < FORMATS[name].eps))
        assert rep.dtypes[name].saturated_rows == want, name
    assert rep.dtypes["float16"].saturated_rows == 5
    assert rep.saturation.rows_top_above_099 == 7
    assert rep.saturation.mean_top_prob == pytest.approx(float(np.mean(1 / (1 + np.exp(-d)))))


def test_targets_wrong_and_confident() -> None:
    x = np.array([[10.0, 0, 0], [6.0, 0, 0], [0.0, 1, 0], [30.0, 0, 0], [1.0, 1.0, 0]])
    t = np.array([0, 1, 0, 2, 1])  # right, conf. wrong, wrong, saturated wrong, tie (not wrong)
    rep = diagnose(x, t)
    s = rep.saturation
    assert (s.wrong_rows, s.confident_wrong_rows, s.saturated_wrong_rows) == (3, 2, 1)
    ce = -np.log(softmax(x))[np.arange(5), t]
    assert s.mean_loss == pytest.approx(float(ce.mean()), rel=1e-12)
    assert rep.mixed_precision.target_source == "target"
    assert diagnose(x).saturation.wrong_rows is None


# --------------------------------------------------------------------------- mixed precision


def _grad(x: np.ndarray, t: np.ndarray) -> np.ndarray:
    g = np.asarray(softmax(x.astype(np.float64)))
    g[np.arange(len(t)), t] -= 1
    return g


def test_gradient_fractions_match_float16_cast() -> None:
    x = (RNG.normal(size=(300, 500)) * 4).astype(np.float32)
    t = RNG.integers(0, 500, 300)
    rep = diagnose(x, t)
    mp = rep.mixed_precision
    g = np.abs(_grad(x, t))
    g16 = g.astype(np.float16)
    assert mp.n_gradients == g.size
    assert mp.zero_fraction == pytest.approx(np.mean((g16 == 0) & (g != 2.0**-25)), abs=2 / g.size)
    # subnormal is decided before rounding (|g| < 2^-14): the float16 cast differs only for the
    # few values within a relative 2^-12 below 2^-14, which round up to the smallest normal
    sub = (g16 != 0) & (g < 2.0**-14)
    assert mp.subnormal_fraction == pytest.approx(np.mean(sub), abs=2 / g.size)
    assert mp.subnormal_fraction == pytest.approx(np.mean((g16 != 0) & (g16 < 2.0**-14)), abs=1e-3)
    assert mp.max_abs_grad == pytest.approx(g.max(), rel=1e-6)
    s = mp.loss_scale
    assert math.log2(s) == int(math.log2(s))
    assert s * mp.max_abs_grad <= 65504
    scaled = (g * s).astype(np.float16)
    assert np.isfinite(scaled).all()
    assert mp.scaled_zero_fraction == pytest.approx(np.mean(scaled == 0), abs=2 / g.size)
    assert mp.scaled_subnormal_fraction + mp.scaled_zero_fraction <= mp.subnormal_fraction + (
        mp.zero_fraction
    )
    # either the cap binds or half the scale would leave more than 1% below the normal range
    nonzero = np.count_nonzero(g.astype(np.float32) >= np.finfo(np.float32).tiny)
    half = np.count_nonzero((g * s / 2 < 2.0**-14) & (g.astype(np.float32) > 0)) / nonzero
    assert s * 2 * mp.max_abs_grad > 65504 or s == 1 or half > 0.01
    assert mp.reasoning and all(isinstance(r, str) for r in mp.reasoning)


def test_loss_scale_capped_by_largest_gradient() -> None:
    x = np.zeros((2, 64), np.float32)
    x[:, 0] = 60.0  # p of the rest is e^-60: unreachable for float16 at any finite scale
    t = np.array([1, 0])  # row 0 is wrong: |g| = 1
    mp = diagnose(x, t).mixed_precision
    assert mp.max_abs_grad == 1.0
    assert mp.loss_scale == 2.0**15  # 2^16 * 1 > 65504
    assert mp.scaled_overflow_fraction == 0.0


# --------------------------------------------------------------------------- basic, entropy, kappa


def test_basic_stats_and_nonfinite_rows() -> None:
    x = RNG.normal(loc=3.0, scale=2.0, size=(50, 20))
    bad = x.copy()
    bad[3, 4] = np.nan
    bad[7, 0] = np.inf
    bad[9, 1:3] = -np.inf
    rep = diagnose(bad)
    b = rep.basic
    assert (b.nan_count, b.posinf_count, b.neginf_count, b.nonfinite_rows) == (1, 1, 2, 3)
    good = np.delete(x, [3, 7, 9], axis=0)
    assert b.finite_rows == 47
    assert b.mean == pytest.approx(good.mean(), rel=1e-12)
    assert b.std == pytest.approx(good.std(), rel=1e-9)
    assert (b.min, b.max) == (good.min(), good.max())
    assert b.min_abs == np.abs(good).min() and b.max_abs == np.abs(good).max()
    spread = good.max(1) - good.min(1)
    assert b.spread_mean == pytest.approx(spread.mean())
    assert b.spread_max == spread.max()
    assert rep.findings[0].code == "nonfinite" and rep.findings[0].severity == "high"


def test_entropy_and_temperature() -> None:
    x = RNG.normal(scale=3, size=(40, 30))
    rep = diagnose(x)
    h = np.asarray(entropy(logits=x))
    e = rep.entropy
    assert e.mean_nats == pytest.approx(h.mean(), rel=1e-12)
    assert e.min_nats == pytest.approx(h.min(), rel=1e-12)
    assert e.max_bits == pytest.approx(h.max() / math.log(2), rel=1e-12)
    assert e.normalized_mean == pytest.approx(h.mean() / math.log(30), rel=1e-12)
    for key, temp in (("0.5", 0.5), ("1", 1.0), ("2", 2.0)):
        p = np.asarray(softmax(x, temperature=temp))
        ht = np.asarray(entropy(probs=p))
        got = e.temperature[key]
        assert got["mean_entropy_nats"] == pytest.approx(ht.mean(), rel=1e-9)
        assert got["mean_top_prob"] == pytest.approx(p.max(1).mean(), rel=1e-12)
    assert e.temperature["0.5"]["mean_entropy_nats"] < e.mean_nats
    assert e.temperature["2"]["mean_entropy_nats"] > e.mean_nats


def test_conditioning_numbers() -> None:
    x = np.array([[1e-3, 5.0, -2.0], [10.0, 9.0, 0.5], [0.0, 1.0, 2.0]])
    t = np.array([1, 2, 0])
    rep = diagnose(x, t)
    c = rep.conditioning
    p = np.asarray(softmax(x))
    lse = np.log(np.exp(x).sum(1))
    k_lse = (p * np.abs(x)).sum(1) / np.abs(lse)
    assert c.lse_max == pytest.approx(k_lse.max(), rel=1e-12)
    y = np.eye(3)[t]
    loss = -np.log(p[np.arange(3), t])
    k_loss = (np.abs(x) * np.abs(p - y)).sum(1) / loss
    assert c.loss_max == pytest.approx(k_loss.max(), rel=1e-10)
    assert c.ratio_global == math.inf  # an exact zero logit
    assert c.ratio_inf_rows == 1
    rep2 = diagnose(x[:2])
    assert rep2.conditioning.ratio_max == pytest.approx(5.0 / 1e-3)
    assert rep2.conditioning.ratio_global == pytest.approx(10.0 / 1e-3)
    # median at 0.1-decade resolution
    assert abs(math.log10(rep2.conditioning.ratio_median) - math.log10(20.0)) <= 0.06 or (
        abs(math.log10(rep2.conditioning.ratio_median) - math.log10(5000.0)) <= 0.06
    )


# --------------------------------------------------------------------------- streaming, API


def test_chunked_and_threaded_equal_one_pass() -> None:
    x = (RNG.normal(size=(700, 64)) * 6).astype(np.float16)
    t = RNG.integers(0, 64, 700)
    one = diagnose(x, t, chunk_bytes=1 << 30, workers=1).to_dict()
    many = diagnose(x, t, chunk_bytes=64 * 8 * 7, workers=2).to_dict()
    assert one["histograms"] == many["histograms"]
    for name in one["dtypes"]:
        assert one["dtypes"][name] == pytest.approx(many["dtypes"][name])
    assert one["mixed_precision"]["loss_scale"] == many["mixed_precision"]["loss_scale"]
    assert one["basic"]["mean"] == pytest.approx(many["basic"]["mean"], rel=1e-9)
    assert one["basic"]["std"] == pytest.approx(many["basic"]["std"], rel=1e-9)
    assert one["saturation"] == pytest.approx(many["saturation"])


def test_axis_and_shapes() -> None:
    x = RNG.normal(size=(3, 5, 4))
    a = diagnose(np.moveaxis(x, -1, 0), axis=0)
    b = diagnose(x)
    assert a.n_rows == b.n_rows == 15 and a.n_classes == 4
    assert a.entropy.mean_nats == pytest.approx(b.entropy.mean_nats)
    assert diagnose([1.0, 2.0, 3.0]).n_rows == 1
    tt = torch.tensor([[1.0, 2.0]], dtype=torch.bfloat16)
    assert diagnose(tt).dtype == "bfloat16"


def test_histograms_count_everything() -> None:
    x = RNG.normal(size=(100, 10))
    rep = diagnose(x)
    h = rep.histograms
    assert sum(h["logits"]["counts"]) == x.size
    assert sum(h["top_prob"]["counts"]) == 100
    assert sum(h["entropy_normalized"]["counts"]) == 100
    assert sum(h["grad_log2"]["counts"]) == x.size


@pytest.mark.parametrize(
    "bad,exc",
    [
        (np.float32(3.0), ValueError),
        (np.array(["a", "b"]), TypeError),
        (np.zeros((3, 0)), ValueError),
        ([[1 + 2j]], TypeError),
    ],
)
def test_bad_input(bad: object, exc: type) -> None:
    with pytest.raises(exc):
        diagnose(bad)


def test_bad_targets() -> None:
    x = np.zeros((2, 3))
    with pytest.raises(ValueError, match="shape"):
        diagnose(x, [0, 1, 2])
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        diagnose(x, [0, 3])
    with pytest.raises(TypeError):
        diagnose(x, [0.5, 1.0])
    with pytest.raises(ValueError, match="axis"):
        diagnose(x, axis=2)


def test_merge_rejects_mismatch() -> None:
    with pytest.raises(ValueError):
        LogitStats(3).merge(LogitStats(4))
    with pytest.raises(ValueError):
        LogitStats(0)


def test_report_json_html_rich() -> None:
    x = np.array([[12.0, 0, 0], [1.0, 0, -1]], np.float16)
    rep = diagnose(x, [0, 2])
    assert isinstance(rep, LogitReport)
    d = json.loads(rep.to_json())
    assert d["dtypes"]["float16"]["naive_overflow_rows"] == 1
    assert d["shape"] == [2, 3]
    # rendering is the application layer's: the report is data only
    assert not hasattr(rep, "to_html") and not hasattr(rep, "__rich_console__")
    from rich.console import Console

    from logitlab.report.diagnose import render_terminal, to_html

    html = to_html(rep)
    assert html.count("<img") == 5 and "float16 softmax overflows on 50.0% of rows" in html
    con = Console(record=True, width=120)
    render_terminal(rep, con)
    text = con.export_text()
    assert "per dtype" in text and "loss-scale reasoning" in text and "bfloat16" in text


def test_report_json_is_strict_with_non_finite_numbers() -> None:
    rep = diagnose(np.array([[0.0, 1.0, 2.0], [np.nan, 0.0, 1.0]]))
    d = json.loads(rep.to_json())  # allow_nan=False: "nan"/"inf" strings, never bare NaN
    assert d["conditioning"]["ratio_global"] == "inf"
    assert d["basic"]["nan_count"] == 1


# every public name logitlab.diagnostics defined when it was one module (and the two that
# logitlab re-exports): they stay importable from the same paths
PUBLIC = [
    "BasicStats",
    "Conditioning",
    "DtypeRisk",
    "EntropyStats",
    "FORMATS",
    "Finding",
    "Format",
    "LogitReport",
    "LogitStats",
    "MixedPrecision",
    "ProgressFn",
    "Saturation",
    "diagnose",
    "diagnose_file",
    "round_to_format",
    "simulate_softmax",
]


def test_every_public_name_imports_from_the_same_path() -> None:
    import importlib

    import logitlab
    import logitlab.diagnostics as pkg

    for name in PUBLIC:
        obj = getattr(pkg, name)
        assert name in pkg.__all__
        if hasattr(obj, "__module__") and not name.isupper() and name != "ProgressFn":
            # defined in one of the package's modules, re-exported unchanged
            mod = importlib.import_module(obj.__module__)
            assert mod.__name__.startswith("logitlab.diagnostics.") and getattr(mod, name) is obj
    assert logitlab.diagnose is pkg.diagnose and logitlab.LogitReport is pkg.LogitReport
    assert {"diagnose", "LogitReport"} <= set(logitlab.__all__)


def test_the_package_imports_only_downward() -> None:
    # logitlab.diagnostics may import the core helpers below it, never report/cli/app/torch:
    # every import statement of the package, lazy ones inside functions included
    import ast
    from pathlib import Path

    import logitlab.diagnostics as pkg

    # the layers below diagnostics in pyproject.toml's import-linter contract
    allowed = {
        "logitlab.special", "logitlab.losses", "logitlab._formulas", "logitlab._rows",
        "logitlab._native", "logitlab._checks", "logitlab.io", "logitlab._outputs",
        "logitlab._json", "logitlab._array", "logitlab._config", "logitlab._version",
    }  # fmt: skip
    for path in Path(pkg.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
                names = [node.module] if node.module != "logitlab" else names[1:]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            for name in names:
                if name.startswith("logitlab") and not name.startswith("logitlab.diagnostics"):
                    top = ".".join(name.split(".")[:2])
                    assert top in allowed, f"{path.name} imports {name}"


def test_diagnose_loads_no_rendering_module() -> None:
    import subprocess
    import sys

    code = (
        "import sys, numpy as np, logitlab.diagnostics as d\n"
        "d.diagnose(np.zeros((2, 3)), [0, 1]).to_json()\n"
        "bad = [m for m in sys.modules if m.split('.')[:2] in (['logitlab', 'report'],"
        " ['logitlab', 'cli'], ['logitlab', 'app'], ['logitlab', 'torch'])]\n"
        "assert not bad, bad\n"
        "assert 'rich' not in sys.modules and 'matplotlib' not in sys.modules\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


# ---------------------------------------------------------------- native kernel vs NumPy path


def _flat(d: object, pre: str = "") -> dict[str, object]:
    out: dict[str, object] = {}
    if isinstance(d, dict):
        for k, v in d.items():
            out.update(_flat(v, f"{pre}.{k}"))
    elif isinstance(d, list) and d and isinstance(d[0], (dict, list)):
        for i, v in enumerate(d):
            out.update(_flat(v, f"{pre}[{i}]"))
    else:
        out[pre] = d
    return out


@pytest.mark.parametrize("dtype", [np.float16, np.float32])
@pytest.mark.parametrize(("n", "v"), [(40, 1), (300, 7), (200, 8), (120, 513), (30, 5000)])
def test_native_kernel_equals_numpy_path(
    dtype: type, n: int, v: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    from logitlab import _native

    if _native.lib() is None:
        pytest.skip("no C compiler: the native kernel is not built")
    rng = np.random.default_rng(n * v)
    x = (rng.standard_normal((n, v)) * rng.uniform(0.1, 8, (n, 1))).astype(dtype)
    x[3, 0] = np.nan  # non-finite rows: counted, then left out of every other statistic
    x[5, -1] = np.inf
    x[7, :] = -np.inf
    x[9, 0] = -np.inf
    x[11, 0] = 14.0 if dtype == np.float16 else 100.0  # a row past the float16 exp limit
    x[13] = x[13, 0]  # a constant row: every class ties with the maximum
    t = rng.integers(0, v, n)
    native = _flat(diagnose(x, t).to_dict())
    with monkeypatch.context() as m:
        m.setattr(_native, "lib", lambda: None)
        ref = _flat(diagnose(x, t).to_dict())
    assert native.keys() == ref.keys()
    for key, a in native.items():
        b = ref[key]
        if key.startswith(".histograms.grad_log2") or key.startswith(".mixed_precision"):
            # exp within 2 ulp of NumPy's: an entry next to a power of two may change binade
            if isinstance(a, float):
                assert a == pytest.approx(b, rel=1e-3, abs=2 / (n * v)), key
            continue
        if isinstance(a, float) and isinstance(b, float):
            # the kernel sums rows in float32 blocks of 512 added in double (NumPy: pairwise
            # float32), so row sums agree to float32 rounding, and counts exactly
            assert a == pytest.approx(b, rel=1e-5, abs=1e-9, nan_ok=True), key
        else:
            assert a == b, key


def test_native_kernel_on_strided_and_non_contiguous_rows() -> None:
    rng = np.random.default_rng(3)
    big = (rng.standard_normal((50, 300)) * 3).astype(np.float16)
    x = big[::2, 20:220]  # row stride 600 elements, unit column stride: the kernel reads it
    y = np.ascontiguousarray(x)
    assert diagnose(x).to_dict() == diagnose(y).to_dict()
    xt = np.ascontiguousarray(big[:, :40].T)[:, ::3]  # column stride 3: the NumPy path
    assert diagnose(xt).to_dict()["basic"] == diagnose(np.ascontiguousarray(xt)).to_dict()["basic"]


def test_native_half_widening_is_exact_for_every_float16() -> None:
    # rows of one class are widened by the scalar tail path (F16C handles blocks of 8): every
    # finite float16 bit pattern, subnormals and -0 included, must come back as its exact value
    from logitlab import _native

    lib = _native.lib()
    if lib is None:
        pytest.skip("no C compiler: the native kernel is not built")
    bits = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16)
    x = bits.view(np.float16).reshape(-1, 1)
    n = x.shape[0]
    from logitlab.diagnostics.rows import ROW_DTYPE

    q = np.empty(n, ROW_DTYPE)
    k = np.empty(n, dtype=np.int64)
    scratch = np.empty(2, dtype=np.float32)
    h_logit = np.zeros(1 << 16, np.int64)
    h_exp = np.zeros(256, np.int64)
    lib.logitlab_diag_rows(
        x.ctypes.data, 1, None, n, 1, 1, q.ctypes.data, k.ctypes.data, scratch.ctypes.data,
        h_logit.ctypes.data, h_exp.ctypes.data,
    )  # fmt: skip
    ref = x[:, 0].astype(np.float64)
    finite = np.isfinite(ref)
    assert np.array_equal(k < 0, ~finite)  # NaN and +-inf rows are flagged
    q_max = q["max"][finite]  # max of a 1-entry row: the value
    np.testing.assert_array_equal(q_max, ref[finite])
    np.testing.assert_array_equal(np.signbit(q_max), np.signbit(ref[finite]))
    want = np.bincount(ref[finite].astype(np.float32).view(np.uint32) >> 16, minlength=1 << 16)
    np.testing.assert_array_equal(h_logit, want)


@pytest.mark.parametrize("dtype", [np.float16, np.float32])
def test_native_mean_and_std_near_float64_truth(dtype: type) -> None:
    # the kernel sums g = z - c (c the row mean rounded to float32) in float32 blocks of 512
    # added in double: the mean of 640k logits is within 1e-7 standard deviations of the float64
    # mean (a relative bound would be meaningless for a mean near 0) and the std within 2e-8
    # relative. (Measured: 2e-9 and 5e-10; before the centred sums, sum d^2 - (sum d)^2 / V
    # centred at the row max gave 1e-7 on these rows and 8e-7 on LLM-like ones.)
    from logitlab import _native

    if _native.lib() is None:
        pytest.skip("no C compiler: the native kernel is not built")
    rng = np.random.default_rng(11)
    x = (rng.standard_normal((20, 32000)) * rng.uniform(0.1, 8, (20, 1))).astype(dtype)
    x64 = x.astype(np.float64)
    rep = diagnose(x)
    assert abs(rep.basic.mean - x64.mean()) <= 1e-7 * x64.std()
    assert rep.basic.std == pytest.approx(x64.std(), rel=2e-8)


# ---------------------------------------------------------------- mean and std (mpmath truth)


def _moments_truth(x: np.ndarray) -> tuple[float, float, float]:
    """Mean, population std and mean |x| of every entry, at 60 digits from the stored values."""
    import mpmath

    with mpmath.workdps(60):
        v = [mpmath.mpf(float(e)) for e in x.ravel()]
        n = len(v)
        m = mpmath.fsum(v) / n
        var = mpmath.fsum((e - m) ** 2 for e in v) / n
        return float(m), float(mpmath.sqrt(var)), float(mpmath.fsum(abs(e) for e in v) / n)


def _outlier_row(dtype: type) -> np.ndarray:
    # one maximum far above V - 1 nearly equal values: centred at the maximum, the variance is
    # the difference of two sums V times larger than itself
    z = 1.0 + np.arange(3999) * 2.0**-20
    return np.concatenate([[1e4], z]).astype(dtype)[None, :].repeat(3, 0)


MOMENT_CASES = {
    "issue-1e30": (np.array([[1e30, -1e30, 0.0]] * 3), (np.float32, np.float64)),
    "spread-past-float32-max": (np.array([[3e38, -3e38, 0.0, 1.0]] * 2), (np.float32,)),
    "float16-extremes": (np.array([[65504.0, -65504.0, 0.0, 1.0]] * 2), (np.float16,)),
    "outlier-max": (None, (np.float32, np.float64)),
    "offset-near-constant": (
        (1000.0 + np.arange(600).reshape(3, 200) * 2.0**-13),
        (np.float32, np.float64),
    ),
    "rows-far-apart": (
        np.stack([1e6 + np.arange(50.0), -1e6 - np.arange(50.0), 3 + np.arange(50.0)]),
        (np.float32, np.float64),
    ),
    "float64-1e308": (np.array([[1e308, -1e308, 0.0], [1e308, 1e308, 1e308]]), (np.float64,)),
    "float64-squares-overflow": (
        np.array([[1e155, 3e154, -2e155, 7.0], [-1e200, 1e200, 1.0, 0.0]]),
        (np.float64,),
    ),
}


def _moment_params() -> list[tuple[str, type, str]]:
    out = []
    for name, (_, dtypes) in MOMENT_CASES.items():
        for dt in dtypes:
            for backend in ("native", "numpy") if dt != np.float64 else ("numpy",):
                out.append((name, dt, backend))
    return out


@pytest.mark.parametrize(("case", "dtype", "backend"), _moment_params())
@pytest.mark.parametrize("chunked", [False, True])
def test_mean_and_std_exact_for_any_finite_input(
    case: str, dtype: type, backend: str, chunked: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    from logitlab import _native

    if backend == "native" and _native.lib() is None:
        pytest.skip("the native kernels are not built")
    monkeypatch.setenv("LOGITLAB_NATIVE", "1" if backend == "native" else "0")
    raw = MOMENT_CASES[case][0]
    x = _outlier_row(dtype) if raw is None else np.asarray(raw).astype(dtype)
    assert np.isfinite(x).all()
    mean, std, mean_abs = _moments_truth(x)
    # one row per chunk and two threads: the rows' moments meet in Chan's merge
    kw = {"chunk_bytes": 1, "workers": 2} if chunked else {}
    b = diagnose(x, **kw).basic
    # float32 kernels sum g = z - mean in float32 blocks: a few 1e-7 of the deviations; the
    # float64 sums of the NumPy path: a few ulps
    tol = 4e-6 if backend == "native" else 1e-13
    assert math.isfinite(b.std) and math.isfinite(b.mean)
    assert b.std == pytest.approx(std, rel=tol, abs=0.0)
    assert abs(b.mean - mean) <= tol * std + 1e-15 * mean_abs


# ---------------------------------------------------------------- where the non-finite rows are


def _first_rows(x: np.ndarray) -> dict[str, int | None]:
    """The first row (C order, class axis last) holding each kind, found directly."""
    rows = x.reshape(-1, x.shape[-1])
    out: dict[str, int | None] = {}
    for kind, mask in (
        ("nan", np.isnan(rows)),
        ("posinf", rows == np.inf),
        ("neginf", rows == -np.inf),
    ):
        hit = np.flatnonzero(mask.any(axis=1))
        out[kind] = int(hit[0]) if hit.size else None
    return out


@pytest.mark.parametrize("backend", ["native", "numpy"])
@pytest.mark.parametrize("chunked", [False, True])
def test_nonfinite_finding_says_where(
    backend: str, chunked: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LOGITLAB_NATIVE", "1" if backend == "native" else "0")
    x = RNG.normal(size=(400, 16)).astype(np.float32)
    x[[37, 250], 3] = np.nan
    x[[201, 390], 0] = np.inf
    x[[5, 399], 1] = -np.inf
    kw = {"chunk_bytes": 16 * 8 * 9, "workers": 2} if chunked else {}  # 45 chunks, two threads
    rep = diagnose(x, **kw)
    b = rep.basic
    want = _first_rows(x)
    assert (b.first_nan_row, b.first_posinf_row, b.first_neginf_row) == (37, 201, 5)
    assert want == {"nan": 37, "posinf": 201, "neginf": 5}
    f = next(f for f in rep.findings if f.code == "nonfinite")
    assert "2 NaN, first in row 37; 2 +inf, first in row 201; 2 -inf, first in row 5" in f.message
    clean = diagnose(np.zeros((3, 4)))
    assert (clean.basic.first_nan_row, clean.basic.first_posinf_row) == (None, None)


def test_nonfinite_rows_of_a_3d_input_and_another_axis() -> None:
    x = RNG.normal(size=(3, 7, 5))  # class axis 1: rows are (batch, position) = 3 x 5
    x[2, 4, 3] = np.nan  # row (2, 3) = row 13 in C order
    x[1, 0, 0] = -np.inf  # row (1, 0) = 5
    rep = diagnose(x, axis=1)
    assert (rep.basic.first_nan_row, rep.basic.first_neginf_row) == (13, 5)
    assert rep.basic.first_posinf_row is None
    msg = next(f for f in rep.findings if f.code == "nonfinite").message
    assert "first in row 13 (index (2, 3))" in msg and "first in row 5 (index (1, 0))" in msg


def test_diagnose_file_names_the_row_in_the_file(tmp_path: object) -> None:
    from pathlib import Path

    from logitlab.diagnostics import diagnose_file

    x = RNG.normal(size=(3000, 24)).astype(np.float16)
    x[2718, 5] = np.nan
    x[1234, 0] = np.inf
    x[2999, -1] = -np.inf
    f = Path(str(tmp_path)) / "z.npy"
    np.save(f, x)
    rep = diagnose_file(f, chunk_bytes=24 * 8 * 100, workers=2)  # 30 chunks
    assert (rep.basic.first_nan_row, rep.basic.first_posinf_row) == (2718, 1234)
    assert rep.basic.first_neginf_row == 2999
    y = RNG.normal(size=(40, 6, 9)).astype(np.float32)  # streamed by file rows, 6 rows each
    y[33, 4, 2] = np.nan
    g = Path(str(tmp_path)) / "y.npy"
    np.save(g, y)
    rep = diagnose_file(g, chunk_bytes=9 * 8 * 12, workers=2)
    assert rep.basic.first_nan_row == 33 * 6 + 4
    assert "first in row 202 (index (33, 4))" in rep.findings[0].message


def test_first_rows_merge_and_follow_the_offsets() -> None:
    a, b = LogitStats(3), LogitStats(3)
    b.update(np.array([[0.0, np.nan, 1.0]]), row_offset=10)
    a.update(np.array([[0.0, 1.0, 2.0], [np.inf, 0.0, 0.0]]))  # rows 0, 1
    a.update(np.array([[np.nan, 0.0, 0.0]]))  # row 2: offsets follow the rows seen
    b.merge(a)
    rep = b.finalize()
    assert (rep.basic.first_nan_row, rep.basic.first_posinf_row) == (2, 1)
    with pytest.raises(ValueError, match="row_offset"):
        a.update(np.zeros((1, 3)), row_offset=-1)


@pytest.mark.parametrize(
    ("dtype", "backend"),
    [(np.float32, "native"), (np.float32, "numpy"), (np.float64, "numpy")],
)
def test_rows_whose_spread_exceeds_the_dtype_range(
    dtype: type, backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # z - max overflows to -inf below max - MAX: exp gives 0 there, but -inf * 0 made the
    # entropy NaN. The two maxima tie: p = (1/2, 1/2, 0, 0) at every temperature.
    monkeypatch.setenv("LOGITLAB_NATIVE", "1" if backend == "native" else "0")
    big = float(np.finfo(dtype).max) * 0.9
    x = np.array([[big, big, -big, 0.0]] * 3, dtype=dtype)
    rep = diagnose(x, [0, 2, 3])
    e = rep.entropy
    for got in (e.mean_nats, e.min_nats, e.max_nats):
        assert got == pytest.approx(math.log(2), rel=1e-6)
    for key in ("0.5", "2"):
        assert e.temperature[key]["mean_entropy_nats"] == pytest.approx(math.log(2), rel=1e-6)
        assert e.temperature[key]["mean_top_prob"] == pytest.approx(0.5, rel=1e-6)
    assert rep.saturation.mean_top_prob == pytest.approx(0.5, rel=1e-6)
    h = rep.histograms["logits"]
    assert np.isfinite(h["edges"]).all()
    # the plot bins logits by their float32 pattern: float64 ones past float32 are left out
    assert sum(h["counts"]) == (x.size if dtype == np.float32 else 3)
    assert json.loads(rep.to_json())["entropy"]["mean_nats"] == pytest.approx(math.log(2))

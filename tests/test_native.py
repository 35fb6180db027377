"""The native library built at install time: its loader, ISA levels, switches and reports.

Every test that needs the library fails (rather than skips) when a C compiler exists but the
library is missing: the install (``pip install -e .``, ``make install``) or
``python setup.py build_ext --inplace`` builds it, and a silent skip would hide a broken build.
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import logitlab as ll
from logitlab import _native
from logitlab._native import _build

ROOT = Path(__file__).resolve().parents[1]
SRC = Path(ll.__file__).resolve().parents[1]  # the src/ (or site-packages/) logitlab is in
X86 = platform.machine().lower() in ("x86_64", "amd64")


def _require_library() -> None:
    if _native.library_path("generic").exists():
        return
    if _build.find_compiler() is None:
        pytest.skip("no C compiler at install: the native library is not built")
    pytest.fail(
        "a C compiler is present but the native library is not built: run pip install -e . "
        "(or python setup.py build_ext --inplace for a checkout on PYTHONPATH)"
    )


def _run_python(code: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def _cpuinfo_level() -> str:
    """The ISA level from /proc/cpuinfo's flags: independent of the library's CPUID code."""
    flags: set[str] = set()
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    v3 = {"avx", "avx2", "fma", "bmi1", "bmi2", "f16c", "abm", "movbe"} <= flags
    v4 = {"avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl"} <= flags
    return "avx512" if v3 and v4 else ("avx2" if v3 else "generic")


def _runnable_levels() -> list[str]:
    top = _native.cpu_level()
    assert top is not None
    return [lv for lv in _native.LEVELS[: _native.LEVELS.index(top) + 1] if lv in _build_levels()]


def _build_levels() -> tuple[str, ...]:
    return tuple(lv for lv in _native.LEVELS if _native.library_path(lv).exists())


# ---------------------------------------------------------------- no torch on the NumPy path

NUMPY_LSE = """
    import sys
    {prelude}
    import numpy as np, logitlab as ll
    from logitlab import _native
    lib = _native.lib()
    assert lib is not None, "native library not loaded"
    kernel, calls = lib.logitlab_lsm_rows, []
    lib.logitlab_lsm_rows = lambda *a: (calls.append(a), kernel(*a))[1]
    out = ll.logsumexp(np.ones((1000, 100), np.float32), axis=-1)
    assert calls, "the native kernel was not called"
    assert np.all(np.abs(out - np.float32(1 + np.log(100.0))) <= 2 ** -20), out[:3]
    assert sys.modules.get("torch") is None, "torch was imported"
    print(_native.info()["isa"])
"""


@pytest.mark.parametrize("prelude", ["sys.modules['torch'] = None", "pass"])
def test_numpy_logsumexp_uses_native_kernel_without_torch(prelude: str) -> None:
    # sys.modules['torch'] = None makes any torch import fail; without it, a torch import that
    # some code caught would still leave torch in sys.modules
    _require_library()
    r = _run_python(NUMPY_LSE.format(prelude=prelude))
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == _native.cpu_level()


def test_native_kernels_run_without_a_compiler_on_path() -> None:
    # a process whose PATH holds only the interpreter's bin folder and no CC: the library built
    # at install is loaded; nothing is compiled at run time
    _require_library()
    env = {k: v for k, v in os.environ.items() if k not in ("CC", "LOGITLAB_NATIVE")}
    env["PATH"] = str(Path(sys.executable).parent)
    code = (
        "import shutil\n"
        "assert not any(shutil.which(c) for c in ('cc', 'gcc', 'clang')), 'compiler on PATH'\n"
        + textwrap.dedent(NUMPY_LSE.format(prelude="pass"))
    )
    r = _run_python(code, env=env)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == _native.cpu_level()


# ---------------------------------------------------------------- LOGITLAB_NATIVE at call time


def test_logitlab_native_0_after_import_switches_to_the_fallback(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _require_library()
    monkeypatch.delenv("LOGITLAB_NATIVE", raising=False)
    lib = _native.lib()
    calls: list[int] = []
    kernel = lib.logitlab_lsm_rows
    monkeypatch.setattr(lib, "logitlab_lsm_rows", lambda *a: (calls.append(1), kernel(*a))[1])
    x = (np.random.default_rng(0).standard_normal((64, 300)) * 4).astype(np.float32)
    truth = np.log(np.exp(x.astype(np.float64)).sum(-1))
    np.testing.assert_allclose(ll.logsumexp(x, axis=-1), truth, rtol=3e-7)
    assert len(calls) == 1
    monkeypatch.setenv("LOGITLAB_NATIVE", "0")  # after import, between two calls
    assert _native.lib() is None
    np.testing.assert_allclose(ll.logsumexp(x, axis=-1), truth, rtol=3e-7)
    assert len(calls) == 1  # the NumPy path ran
    assert ll.show_config(mode="dicts")["native"]["enabled"] is False  # type: ignore[index]
    monkeypatch.setenv("LOGITLAB_NATIVE", "1")
    ll.logsumexp(x, axis=-1)
    assert len(calls) == 2


def test_torch_kernels_follow_logitlab_native_at_call_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    torch = pytest.importorskip("torch")
    _require_library()
    from logitlab._rows.fused import ce_rows, native_available

    monkeypatch.delenv("LOGITLAB_NATIVE", raising=False)
    assert native_available()
    lib = _native.lib()
    calls: list[int] = []
    kernel = lib.logitlab_ce_rows
    monkeypatch.setattr(lib, "logitlab_ce_rows", lambda *a: (calls.append(1), kernel(*a))[1])
    z = torch.randn(4, 50, dtype=torch.float32)
    t = torch.randint(0, 50, (4,))
    truth = torch.logsumexp(z.double(), -1) - z.double().gather(1, t[:, None]).squeeze(1)
    on = ce_rows(z.clone(), t).loss
    assert len(calls) == 1
    monkeypatch.setenv("LOGITLAB_NATIVE", "0")
    assert not native_available()
    off = ce_rows(z.clone(), t).loss
    assert len(calls) == 1  # the torch path ran
    torch.testing.assert_close(off.double(), truth, rtol=1e-6, atol=0)
    torch.testing.assert_close(on.double(), truth, rtol=1e-6, atol=0)


@pytest.mark.parametrize("value", ["2", "avx3", "native"])
def test_unknown_logitlab_native_value_is_an_error(
    value: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LOGITLAB_NATIVE", value)
    with pytest.raises(ValueError, match=rf"LOGITLAB_NATIVE='{value}'"):
        ll.logsumexp(np.ones((2, 3), np.float32), axis=-1)
    cfg = ll.show_config(mode="dicts")
    assert cfg is not None and "LOGITLAB_NATIVE" in cfg["native"]["error"]


def test_a_level_above_the_cpu_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    # as on a CPU without AVX2: the best level is generic, and pinning avx2 is an error (its
    # library would die of an illegal instruction there)
    _require_library()
    monkeypatch.setattr(_native, "cpu_level", lambda: "generic")
    monkeypatch.setenv("LOGITLAB_NATIVE", "1")
    assert _native.lib().logitlab_isa() == 0
    monkeypatch.setenv("LOGITLAB_NATIVE", "avx2")
    with pytest.raises(ValueError, match="LOGITLAB_NATIVE=avx2: this CPU runs up to generic"):
        ll.logsumexp(np.ones((2, 3), np.float32), axis=-1)


# ---------------------------------------------------------------- every ISA level


def test_build_flags_are_portable() -> None:
    # no -march=native and no OpenMP anywhere; x86 levels only on x86-64, whose generic level
    # pins the x86-64 baseline (a distribution compiler may default to a higher level)
    assert _build.levels_for_machine("aarch64") == ("generic",)
    assert _build.levels_for_machine("AMD64") == _native.LEVELS
    for machine in ("x86_64", "aarch64"):
        for level in _build.levels_for_machine(machine):
            for src in _build.SOURCES:
                flags = _build.compile_flags(level, src, machine)
                assert not {"-march=native", "-mtune=native", "-fopenmp"} & set(flags)
                assert any(f.startswith("-march=") for f in flags) == (machine == "x86_64")
    assert "-march=x86-64" in _build.compile_flags("generic", "ce_rows.c", "x86_64")
    with pytest.raises(ValueError, match="avx2"):
        _build.compile_flags("avx2", "ce_rows.c", "aarch64")


@pytest.fixture(scope="module")
def rows() -> np.ndarray:
    rng = np.random.default_rng(7)
    x = (rng.standard_normal((97, 1003)) * rng.uniform(0.1, 30, (97, 1))).astype(np.float32)
    x[5, 17] = 120.0  # a near-deterministic row
    x[9, ::3] = -np.inf  # masked classes
    return x


def test_cpu_level_matches_proc_cpuinfo() -> None:
    _require_library()
    if not (X86 and Path("/proc/cpuinfo").exists()):
        pytest.skip("x86-64 Linux only")
    assert _native.cpu_level() == _cpuinfo_level()
    assert set(_build_levels()) == set(_build.levels_for_machine())


def test_every_level_the_cpu_runs_gives_the_same_log_softmax(
    rows: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the log-softmax/lse, evaluator and diagnose kernels are built without FP contraction, so
    # every level computes the same operations: bit-identical results; and within 2.5 float32
    # ulps of the float64 truth
    _require_library()
    # float64 truth from the exact decomposition (a = max, s = sum of the others' exp(z - a)):
    # log(sum) would round 1 + s and lose the tiny log-probability of a dominant entry
    x64 = rows.astype(np.float64)
    a = x64.max(-1, keepdims=True)
    e = np.exp(x64 - a)
    e[np.arange(len(e)), x64.argmax(-1)] = 0.0
    l1 = np.log1p(e.sum(-1, keepdims=True))
    lsm64, lse64 = (x64 - a) - l1, (a + l1)[:, 0]
    got = {}
    for level in _runnable_levels():
        monkeypatch.setenv("LOGITLAB_NATIVE", level)
        assert _native.LEVELS[_native.lib().logitlab_isa()] == level
        lsm, lse = ll.log_softmax(rows, axis=-1), ll.logsumexp(rows, axis=-1)
        fin = np.isfinite(rows)
        np.testing.assert_allclose(lse, lse64, rtol=3e-7)
        np.testing.assert_allclose(lsm[fin], lsm64[fin], rtol=3e-7, atol=1e-37)
        ev = ll.Evaluator()
        ev.update(rows, np.arange(97) % 1003)
        rep = ll.diagnose(rows.astype(np.float16))
        got[level] = (lsm, lse, ev.state_dict()["sums"], ev.state_dict()["hist"], rep.to_dict())
    first = got[_native.LEVELS[0]]
    for level, res in got.items():
        for a, b in zip(first[:4], res[:4], strict=True):
            np.testing.assert_array_equal(a, b, err_msg=level)
        assert first[4] == res[4], level


def test_every_level_the_cpu_runs_meets_the_cross_entropy_bounds(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # the CE kernels use FMA where the level has it: not bitwise equal across levels, but each
    # within the bounds of tests/torch/test_ce_rows_accuracy.py against float64
    torch = pytest.importorskip("torch")
    _require_library()
    from logitlab._rows.fused import ce_rows

    g = torch.Generator().manual_seed(5)
    z = torch.randn(8, 50_000, generator=g) * 3
    t = torch.randint(0, 50_000, (8,), generator=g)
    z64 = z.double()
    truth = torch.logsumexp(z64, -1)
    nll = truth - z64.gather(1, t[:, None]).squeeze(1)
    p = torch.softmax(z64, -1)
    p[torch.arange(8), t] -= 1.0
    for level in _runnable_levels():
        monkeypatch.setenv("LOGITLAB_NATIVE", level)
        grad = z.clone()
        c = ce_rows(grad, t, grad_scale=torch.ones(8))
        ulp = (torch.nextafter(truth.float(), torch.tensor(np.inf)) - truth.float()).double()
        assert ((c.lse.double() - truth).abs() / ulp).max().item() <= 1, level
        assert ((c.loss.double() - nll).abs() / nll.abs()).max().item() < 5e-7, level
        keep = p.abs() > 1e-30
        assert ((grad.double() - p).abs() / p.abs())[keep].max().item() < 2e-6, level


@pytest.mark.skipif(not X86 or shutil.which("objdump") is None, reason="x86-64 with objdump")
@pytest.mark.parametrize(
    ("level", "banned"),
    [
        ("generic", r"%[yz]mm|%k[0-7]|vfmadd|vcvtph2ps"),  # SSE2 only: no AVX, FMA, F16C
        ("avx2", r"%zmm|%k[0-7]"),  # no AVX-512 register or mask
    ],
)
def test_lower_levels_hold_no_instruction_of_higher_ones(level: str, banned: str) -> None:
    # what makes a wheel built here run on any x86-64: the libraries a CPU without AVX2 (or
    # without AVX-512) loads contain none of those instructions
    _require_library()
    path = _native.library_path(level)
    asm = subprocess.run(["objdump", "-d", str(path)], capture_output=True, text=True, check=True)
    hits = [ln for ln in asm.stdout.splitlines() if re.search(banned, ln)]
    assert not hits, hits[:5]
    if level == "avx2":
        assert "vfmadd" in asm.stdout  # the CE kernels' exp polynomial as FMAs (contraction on)


def test_library_needs_no_openmp_runtime() -> None:
    _require_library()
    if shutil.which("readelf") is None:
        pytest.skip("no readelf")
    for level in _build_levels():
        dyn = subprocess.run(
            ["readelf", "-d", str(_native.library_path(level))],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        needed = set(re.findall(r"Shared library: \[([^\]]+)\]", dyn))
        assert {n.split(".so")[0] for n in needed} <= {"libm", "libc"}, needed


# ---------------------------------------------------------------- a stale build is reported


def _package_copy(dest: Path, libs: bool = True) -> Path:
    """A copy of the imported logitlab package under ``dest`` (with or without its libraries)."""
    skip = shutil.ignore_patterns("__pycache__", *(() if libs else ("liblogitlab_*",)))
    shutil.copytree(SRC / "logitlab", dest / "logitlab", ignore=skip)
    return dest


def _tree_copy(tmp_path: Path) -> Path:
    """A checkout-like tree: csrc/ beside src/logitlab/ with the built libraries."""
    if not (ROOT / "csrc").exists():
        pytest.skip("needs the C sources of a checkout")
    shutil.copytree(ROOT / "csrc", tmp_path / "csrc")
    _package_copy(tmp_path / "src")
    return tmp_path


STALE = """
    import warnings
    warnings.simplefilter("error", RuntimeWarning)
    from logitlab import _native
    _native.lib()
    print(_native.info()["stale"])
"""


def test_loader_reports_a_library_older_than_its_c_sources(tmp_path: Path) -> None:
    _require_library()
    tree = _tree_copy(tmp_path)
    env = dict(os.environ, PYTHONPATH=str(tree / "src"))
    env.pop("LOGITLAB_NATIVE", None)
    r = _run_python(STALE, env=env)
    assert r.returncode == 0 and r.stdout.strip() == "False", r.stderr
    src = tree / "csrc" / "ce_rows.c"
    src.write_text(src.read_text() + "/* edited after the build */\n")
    r = _run_python(STALE, env=env)
    assert r.returncode != 0
    assert "built from other C sources" in r.stderr and "rebuild" in r.stderr


# ---------------------------------------------------------------- show_config and --version


def test_show_config_reports_the_backend_in_use(capsys: pytest.CaptureFixture[str]) -> None:
    _require_library()
    cfg = ll.show_config(mode="dicts")
    assert cfg is not None
    assert cfg["logitlab"] == ll.__version__
    assert cfg["numpy"] == np.__version__
    n = cfg["native"]
    lib = _native.lib()
    assert n["enabled"] is True and n["error"] is None
    assert n["isa"] == _native.LEVELS[lib.logitlab_isa()] == _native.cpu_level()
    assert Path(n["library"]) == _native.library_path(n["isa"])
    assert n["built"] == list(_build_levels()) and n["threads"] == os.cpu_count()
    assert ll.show_config() is None
    out = capsys.readouterr().out
    assert out.startswith(f"logitlab {ll.__version__}\n")
    assert f"native kernels: {n['isa']} (CPU {n['cpu']}" in out
    assert str(n["library"]) in out


NOT_BUILT = """
    import numpy as np, logitlab as ll
    from logitlab import _native
    assert _native.lib() is None
    x = np.array([[0.0, -1e-3, 2.0]], np.float32)
    assert abs(ll.logsumexp(x, axis=-1)[0] - np.log(np.exp(x[0].astype(float)).sum())) < 1e-6
    ll.show_config()
"""


def test_show_config_when_the_library_is_not_built(tmp_path: Path) -> None:
    # an install without a compiler: the package without its libraries
    env = dict(os.environ, PYTHONPATH=str(_package_copy(tmp_path, libs=False)))
    env.pop("LOGITLAB_NATIVE", None)
    r = _run_python(NOT_BUILT, env=env)
    assert r.returncode == 0, r.stderr
    assert "native kernels: not built (NumPy/torch fallback)" in r.stdout
    assert "library: none" in r.stdout
    r = _run_python(NOT_BUILT, env=dict(env, LOGITLAB_NATIVE="avx2"))
    assert "ValueError: LOGITLAB_NATIVE=avx2: the native kernels are not built" in r.stderr


@pytest.mark.parametrize(("mode", "exc"), [(1, TypeError), ("dict", ValueError)])
def test_show_config_rejects_a_bad_mode(mode: object, exc: type[Exception]) -> None:
    with pytest.raises(exc, match="mode"):
        ll.show_config(mode=mode)  # type: ignore[arg-type]


def test_version_names_the_isa_level() -> None:
    _require_library()
    env = {k: v for k, v in os.environ.items() if k != "LOGITLAB_NATIVE"}
    r = subprocess.run(
        [sys.executable, "-m", "logitlab", "--version"], capture_output=True, text=True, env=env
    )
    assert r.returncode == 0, r.stderr
    first, second = r.stdout.strip().splitlines()
    assert first == f"logitlab {ll.__version__}"
    assert second.startswith(f"native kernels: {_native.cpu_level()} (")
    r = subprocess.run(
        [sys.executable, "-m", "logitlab", "--version"],
        capture_output=True,
        text=True,
        env=dict(env, LOGITLAB_NATIVE="0"),
    )
    assert r.stdout.strip().splitlines()[1].startswith("native kernels: off")

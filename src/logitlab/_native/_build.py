"""The build of logitlab's native kernels: one flag set, one library per ISA level.

``setup.py`` runs :func:`build_library` at install time (``pip install``, ``pip install -e``,
``python -m build``) and ``benchmarks/ab_ce_kernel.py`` builds its variants with it; nothing
compiles at run time. The module imports nothing from logitlab, so that ``setup.py`` can load it
by path before the package is importable; the loader imports it for the level and file names,
so the modules only the build needs are imported inside the functions that use them.

The C sources in ``csrc/`` are compiled once per level into ``liblogitlab_<level>.so``:

* ``generic``: the compiler's baseline (``-march=x86-64``, i.e. SSE2, on x86-64; no flag
  elsewhere), runs on any CPU of the architecture;
* ``avx2``: ``-march=x86-64-v3`` (AVX2, FMA, F16C, BMI1/2, LZCNT, MOVBE);
* ``avx512``: ``-march=x86-64-v4`` (v3 plus AVX-512 F, BW, CD, DQ, VL).

The loader asks the generic library for the CPU's level (CPUID) and loads the best library it
runs. Whole builds per level rather than GCC ``target_clones``: the kernels are loops over
inlined vector helpers, and a ``-march`` build compiles every helper, the F16C and AVX paths
guarded by ``#ifdef __F16C__``/``__AVX__``, and the inlining decisions exactly as the earlier
``-march=native`` build did, where ``target_clones`` would clone only the annotated entry points,
leave the ``#ifdef`` paths at the baseline and depend on ifunc (glibc only).

Floating-point contraction (``a * b + c`` as one fused multiply-add) is chosen per source: the
cross-entropy kernels have always been built with ``-ffp-contract=fast`` (the exp polynomial as
FMAs: faster and no less accurate); the log-softmax, evaluator and diagnose kernels with
``-ffp-contract=off``, as before, so that they give the same bits as before. None of them relies
on a separately rounded product: the one compensated step (the TwoSum of ``a - z`` in
``lsm_rows.c``) uses additions only, which contraction never changes, and the evaluator and
diagnose sums are plain float32 block sums added in double.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

__all__ = [
    "CSRC",
    "HEADERS",
    "LEVELS",
    "SOURCES",
    "build_library",
    "compile_flags",
    "find_compiler",
    "levels_for_machine",
    "library_name",
    "source_digest",
]

# index = the value of LOGITLAB_ISA in info.c and of logitlab_cpu_level()
LEVELS = ("generic", "avx2", "avx512")
_X86 = {"generic": ["-march=x86-64", "-mtune=generic"], "avx2": ["-march=x86-64-v3"]}
_X86["avx512"] = ["-march=x86-64-v4"]
# -std=c11 keeps GCC's ISO default of no contraction; the per-source choice below is explicit,
# so that Clang (whose default is "on") builds the same code.
BASE_FLAGS = ["-O3", "-std=c11", "-fPIC", "-fno-math-errno"]
CONTRACT = {
    "ce_rows.c": "fast",
    "ce_cols.c": "fast",
    "lsm_rows.c": "off",
    "eval_rows.c": "off",
    "diag_rows.c": "off",
    "info.c": "off",
}
SOURCES = tuple(CONTRACT)
HEADERS = ("logitlab.h",)
# the sources of a checkout or sdist: <root>/csrc beside <root>/src/logitlab/_native/_build.py
CSRC = Path(__file__).resolve().parents[3] / "csrc"
_SUFFIX = ".dll" if sys.platform == "win32" else ".so"


def library_name(level: str) -> str:
    """File name of the library of ``level`` (``liblogitlab_avx2.so``)."""
    return f"liblogitlab_{level}{_SUFFIX}"


def levels_for_machine(machine: str | None = None) -> tuple[str, ...]:
    """The levels built for ``machine`` (default: this one): all three on x86-64, else generic."""
    import platform

    m = (machine or platform.machine()).lower()
    return LEVELS if m in ("x86_64", "amd64") else ("generic",)


def compile_flags(level: str, source: str, machine: str | None = None) -> list[str]:
    """The compiler flags of ``source`` (a name in :data:`SOURCES`) at ``level``."""
    if level not in levels_for_machine(machine):
        raise ValueError(f"level {level!r} is not built on this machine ({machine or 'host'})")
    x86 = levels_for_machine(machine) == LEVELS
    return [
        *BASE_FLAGS,
        *(_X86[level] if x86 else []),
        f"-ffp-contract={CONTRACT[source]}",
        f"-DLOGITLAB_ISA={LEVELS.index(level)}",
    ]


def source_digest(csrc: Path = CSRC) -> str:
    """SHA-256 prefix of the C sources and of this file (its flags): the build id a library
    carries, compared by the loader with the sources of a checkout to detect a stale build."""
    import hashlib

    h = hashlib.sha256()
    for name in (*SOURCES, *HEADERS):
        h.update(name.encode() + b"\0" + (csrc / name).read_bytes() + b"\0")
    h.update(Path(__file__).read_bytes())
    return h.hexdigest()[:16]


def find_compiler() -> list[str] | None:
    """The C compiler command: ``$CC`` (may carry arguments), else ``cc``, ``gcc`` or ``clang``
    on ``PATH``; ``None`` when there is none or on Windows (the kernels use GCC/Clang vector
    extensions)."""
    import shlex
    import shutil

    if sys.platform == "win32":
        return None
    env = shlex.split(os.environ.get("CC", ""))
    if env and shutil.which(env[0]):
        return env
    for name in ("cc", "gcc", "clang"):
        path = shutil.which(name)
        if path:
            return [path]
    return None


def _run(cmd: list[str]) -> None:
    import shlex
    import subprocess

    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"native build failed: {shlex.join(cmd)}\n{r.stdout}{r.stderr}")


def supports_level(cc: list[str], level: str) -> bool:
    """Whether ``cc`` accepts the flags of ``level`` (an old compiler may not know x86-64-v4)."""
    import subprocess
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp, "probe.c")
        src.write_text("int logitlab_probe(void) { return 0; }\n")
        flags = compile_flags(level, "info.c")
        cmd = [*cc, *flags, "-c", str(src), "-o", str(src.with_suffix(".o"))]
        return subprocess.run(cmd, capture_output=True).returncode == 0


def build_library(
    level: str,
    out: Path,
    *,
    csrc: Path = CSRC,
    cc: list[str] | None = None,
    tmpdir: Path | None = None,
) -> Path:
    """Compile ``csrc`` at ``level`` and link ``out`` (replaced atomically).

    Raises:
        RuntimeError: no C compiler, or the compiler failed (its output is in the message).
    """
    import tempfile
    from concurrent.futures import ThreadPoolExecutor

    cc = cc or find_compiler()
    if cc is None:
        raise RuntimeError("native build: no C compiler (set CC, or install gcc or clang)")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    digest = source_digest(csrc)
    with tempfile.TemporaryDirectory(dir=tmpdir) as tmp:
        objs = [Path(tmp, name).with_suffix(".o") for name in SOURCES]
        cmds = [
            [
                *cc,
                *compile_flags(level, name),
                f'-DLOGITLAB_BUILD_ID="{digest}"',
                "-I",
                str(csrc),
                "-c",
                str(csrc / name),
                "-o",
                str(obj),
            ]
            for name, obj in zip(SOURCES, objs, strict=True)
        ]
        with ThreadPoolExecutor(os.cpu_count() or 1) as pool:
            list(pool.map(_run, cmds))
        # linked beside ``out`` and renamed: a process loading the old library never sees half
        # a file
        part = out.with_name(f"{out.name}.{os.getpid()}.part")
        try:
            _run([*cc, "-shared", *map(str, objs), "-o", str(part), "-lm"])
            os.replace(part, out)
        finally:
            part.unlink(missing_ok=True)
    return out

"""Loader of logitlab's native float32/float16 row kernels (``csrc/``, compiled by ``pip install``).

The kernels: log-softmax and log-sum-exp rows of the exact core (:mod:`logitlab._rows`), the
streaming evaluator's rows, the diagnose rows, and the fused cross-entropy row and column
kernels of :mod:`logitlab._rows.fused`. The build (:mod:`logitlab._native._build`, run by
``setup.py``) compiles them once per ISA level into ``liblogitlab_<level>.so`` beside this file;
nothing is compiled at run time and no torch is imported here.

:func:`lib` loads, with :mod:`ctypes`, the best level the CPU runs (the generic library reads
CPUID) and reads ``LOGITLAB_NATIVE`` at every call, so the choice can change between calls:

* unset, ``1``, ``true``, ``on``, ``auto``: the best level built and supported;
* ``0``, ``false``, ``off``: no native kernel; the NumPy/torch paths compute the same formulas;
* ``generic``, ``avx2``, ``avx512``: that level (a :class:`ValueError` when it is not built or
  the CPU cannot run it).

Threading, the same for every kernel: :func:`split_rows` runs contiguous row ranges on one
shared pool of Python threads (ctypes releases the GIL during a call), one native thread per
call; the kernels hold no thread team of their own beside torch's.
"""

from __future__ import annotations

import ctypes
import os
import threading
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from logitlab._config import LEVELS as _CONFIG_LEVELS
from logitlab._config import native_level
from logitlab._native._build import CSRC, LEVELS, library_name

__all__ = ["LEVELS", "info", "lib", "split_rows"]

R = TypeVar("R")

# _build imports nothing from logitlab (setup.py loads it by path): the two lists must agree
assert _CONFIG_LEVELS == LEVELS

_DIR = Path(__file__).parent

_p, _i64, _int, _f32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int, ctypes.c_float
# argument and result types of every exported function, in the order of their C prototypes
_SIGNATURES: dict[str, tuple[list[Any], Any]] = {
    "logitlab_isa": ([], _int),
    "logitlab_cpu_level": ([], _int),
    "logitlab_build_id": ([], ctypes.c_char_p),
    "logitlab_lsm_rows": ([_p, _p, _p, _i64, _i64, _i64, _i64, _int], None),
    "logitlab_eval_rows": ([_p, _p, _i64, _i64, _i64, _i64, _p, _p, _p], _i64),
    "logitlab_diag_rows": ([_p, _int, _p, _i64, _i64, _i64, _p, _p, _p, _p, _p], None),
    "logitlab_ce_rows": (
        [_p, _i64, _p, _p, _p, _p, _p, _p, _p, _i64, _i64, _i64, _f32, _f32, _f32, _f32, _i64],
        None,
    ),
    "logitlab_ce_grad_rows": (
        [_p, _p, _i64, _p, _p, _p, _p, _i64, _i64, _i64, _i64, _f32],
        None,
    ),
    "logitlab_ce_cols_part": ([_p, _i64, _i64, _i64, _i64, _i64, *[_p] * 8, _int, _int], _int),
    "logitlab_ce_cols_merge": ([_i64, _i64, *[_p] * 12, _i64, _f32, _p, _p, _p, _p], None),
    "logitlab_ce_cols_grad": ([_p, _i64, _i64, _i64, _i64, _i64, *[_p] * 7, _i64], _int),
}

_lock = threading.Lock()
_libs: dict[str, Any] = {}  # level -> loaded library; a missing file is not cached
_stale: bool | None = None  # None: not checked (no sources beside the package)
_cpu: str | None = None  # the CPU's level, once asked


def library_path(level: str) -> Path:
    """Where the library of ``level`` is installed (it may not exist)."""
    return _DIR / library_name(level)


def _load(level: str) -> Any:
    """The library of ``level`` with its signatures set, or None when it is not built."""
    if level in _libs:
        return _libs[level]
    path = library_path(level)
    if not path.exists():
        return None
    with _lock:
        if level not in _libs:
            handle = ctypes.CDLL(str(path))
            for name, (args, res) in _SIGNATURES.items():
                f = getattr(handle, name)
                f.argtypes, f.restype = args, res
            _check_stale(handle)
            _libs[level] = handle
    return _libs[level]


def _check_stale(handle: Any) -> None:
    """Warn once when a checkout's C sources differ from those the library was built from."""
    global _stale
    if _stale is not None or not (CSRC / "logitlab.h").exists():
        return
    from logitlab._native._build import source_digest

    built = handle.logitlab_build_id().decode()
    _stale = built != source_digest()
    if _stale:
        warnings.warn(
            f"the native library {Path(handle._name).name} was built from other C sources than "
            f"those in {CSRC}: rebuild it (pip install -e . or python setup.py build_ext "
            "--inplace); until then it runs the old kernels",
            RuntimeWarning,
            stacklevel=3,
        )


def cpu_level() -> str | None:
    """The highest level this CPU runs (``None`` when no library is built to ask)."""
    global _cpu
    if _cpu is None:
        generic = _load("generic")
        if generic is not None:
            _cpu = LEVELS[generic.logitlab_cpu_level()]
    return _cpu


def _requested() -> str | None:
    """``LOGITLAB_NATIVE`` as a level, ``"best"``, or None (off): :mod:`logitlab._config`."""
    return native_level()


def lib() -> Any:
    """The native library to use now, or ``None`` (disabled by ``LOGITLAB_NATIVE``, not built).

    Raises:
        ValueError: ``LOGITLAB_NATIVE`` is not a known value, or names a level that is not built
            or that this CPU cannot run.
    """
    want = _requested()
    if want is None:
        return None
    top = cpu_level()
    if top is None:
        if want != "best":
            raise ValueError(f"LOGITLAB_NATIVE={want}: the native kernels are not built")
        return None
    if want == "best":
        for level in reversed(LEVELS[: LEVELS.index(top) + 1]):
            handle = _load(level)
            if handle is not None:
                return handle
        return None  # unreachable: the generic library answered cpu_level()
    if LEVELS.index(want) > LEVELS.index(top):
        raise ValueError(f"LOGITLAB_NATIVE={want}: this CPU runs up to {top}")
    handle = _load(want)
    if handle is None:
        raise ValueError(f"LOGITLAB_NATIVE={want}: {library_path(want).name} is not built")
    return handle


def info() -> dict[str, Any]:
    """The native backend as :func:`logitlab.show_config` reports it.

    Keys: ``enabled`` (False when ``LOGITLAB_NATIVE`` turns it off), ``library`` (path of the
    library in use, or None), ``isa`` (its level, or None), ``cpu`` (the best level the CPU runs),
    ``built`` (levels installed), ``stale`` (True when a checkout's C sources changed since the
    build; None when there are no sources to compare), ``threads`` (threads of one NumPy call;
    a torch tensor's call uses ``torch.get_num_threads()``), ``error`` (why ``lib()`` raised).
    """
    out: dict[str, Any] = {
        "enabled": True,
        "library": None,
        "isa": None,
        "cpu": cpu_level(),
        "built": [lv for lv in LEVELS if library_path(lv).exists()],
        "stale": None,
        "threads": os.cpu_count() or 1,
        "error": None,
    }
    try:
        out["enabled"] = _requested() is not None
        handle = lib()
    except ValueError as exc:
        out["error"] = str(exc)
        handle = None
    if handle is not None:
        out["library"] = handle._name
        out["isa"] = LEVELS[handle.logitlab_isa()]
    out["stale"] = _stale
    return out


_pool: Any = None
_MIN_WORK = 1 << 16  # elements: below this a thread hand-off costs more than it saves


def split_rows(n: int, work: int, threads: int, call: Callable[[int, int], R]) -> list[R]:
    """Run ``call(r0, r1)`` over contiguous row ranges covering ``[0, n)``; results in row order.

    The ranges run on Python threads of one shared pool (ctypes releases the GIL during a kernel
    call), one range per thread and one native thread per call: no OpenMP team of ours beside
    torch's, the same arrangement for every native kernel. ``work`` (elements) below
    ``2**16`` or ``threads == 1`` runs one call on the calling thread.
    """
    global _pool
    nt = max(1, min(threads, n)) if work >= _MIN_WORK else 1
    if nt == 1:
        return [call(0, n)]
    with _lock:
        if _pool is None:
            from concurrent.futures import ThreadPoolExecutor

            _pool = ThreadPoolExecutor(max(2, os.cpu_count() or 1), thread_name_prefix="logitlab")
    step = -(-n // nt)
    futures = [_pool.submit(call, r0, min(n, r0 + step)) for r0 in range(0, n, step)]
    return [f.result() for f in futures]

"""Loader of the native float32 row kernels (``_rows.c``): the exact core's log-softmax and
log-sum-exp, and the streaming evaluator's per-row metrics.

Built once with the system C compiler (the same flags and cache as
:mod:`logitlab.torch._kernels`), loaded with :mod:`ctypes`; ``LOGITLAB_NATIVE=0`` or a missing
compiler leaves the pure NumPy/torch path in charge, with identical formulas.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

R = TypeVar("R")

_SRC = Path(__file__).with_name("_rows.c")
_DEP = Path(__file__).with_name("torch") / "_ce_rows.c"
_FLAGS = ["-O3", "-std=c11", "-fPIC", "-shared", "-fopenmp", "-fno-math-errno", "-march=native"]
_lock = threading.Lock()
_lib: Any = None
_tried = False


def _build() -> Any:
    from logitlab.torch._kernels import _cache_dir, _cpu_tag

    cc = os.environ.get("CC") or shutil.which("gcc") or shutil.which("cc")
    if cc is None or sys.platform != "linux":
        return None
    blob = _SRC.read_bytes() + _DEP.read_bytes() + " ".join(_FLAGS).encode() + _cpu_tag().encode()
    out = _cache_dir() / f"rows_{hashlib.sha256(blob).hexdigest()[:16]}.so"
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(suffix=".so", dir=out.parent)
        os.close(fd)
        try:
            subprocess.run(
                [cc, *_FLAGS, str(_SRC), "-o", tmp, "-lm"],
                check=True,
                capture_output=True,
                timeout=120,
            )
            os.replace(tmp, out)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    lib = ctypes.CDLL(str(out))
    f = lib.logitlab_lsm_rows
    p, i64 = ctypes.c_void_p, ctypes.c_int64
    f.argtypes = [p, p, p, i64, i64, i64, i64, ctypes.c_int, ctypes.c_int]
    f.restype = None
    g = lib.logitlab_eval_rows
    g.argtypes = [p, p, i64, i64, i64, i64, p, p, p]
    g.restype = i64
    h = lib.logitlab_diag_rows
    h.argtypes = [p, ctypes.c_int, p, i64, i64, i64, p, p, p, p, p]
    h.restype = None
    return lib


def lib() -> Any:
    """The loaded library, or ``None`` (no compiler, disabled, or not Linux)."""
    global _lib, _tried
    if os.environ.get("LOGITLAB_NATIVE", "1") in ("0", "false"):
        return None
    if not _tried:
        with _lock:
            if not _tried:
                try:
                    _lib = _build()
                except (OSError, subprocess.SubprocessError, ImportError):
                    _lib = None
                _tried = True
    return _lib


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

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
from pathlib import Path
from typing import Any

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

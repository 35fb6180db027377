"""The native backend of the row engine: the calls into ``csrc/`` for NumPy arrays and CPU torch.

Each function returns ``None`` when its kernel does not apply (not float32, not on the CPU, the
library disabled by ``LOGITLAB_NATIVE`` or not built), and the caller runs the NumPy/torch
backend, which computes the same formulas. Row ranges run on the shared thread pool of
:func:`logitlab._native.split_rows`, one native thread per call.

* :func:`lsm_rows`: log-softmax or log-sum-exp rows (``csrc/lsm_rows.c``);
* :func:`eval_rows`: the streaming evaluator's per-row metrics and confidence histogram
  (``csrc/eval_rows.c``);
* :func:`diag_rows`: ``diagnose``'s per-row record and entry histograms (``csrc/diag_rows.c``).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import numpy as np

from logitlab import _native
from logitlab._array import is_torch_array

__all__ = ["EVAL_MAX_CLASSES", "diag_applies", "diag_rows", "eval_rows", "lsm_rows"]

# the evaluator kernel gathers 8 rows per vector; past a few thousand classes those rows leave
# L1/L2 and the NumPy/torch block path is as fast
EVAL_MAX_CLASSES = 4096


def _float32_cpu(x: Any) -> bool:
    if isinstance(x, np.ndarray):
        return x.dtype == np.float32
    if is_torch_array(x):
        import torch

        return x.dtype == torch.float32 and x.device.type == "cpu"
    return False


def _pointer(x: Any) -> tuple[Any, int, int]:
    """``(contiguous x, its address, threads for one call)``."""
    if isinstance(x, np.ndarray):
        xs = np.ascontiguousarray(x)
        return xs, xs.ctypes.data, os.cpu_count() or 1
    import torch

    xs = x.contiguous()
    return xs, xs.data_ptr(), torch.get_num_threads()


def lsm_rows(x2: Any, mode: int, general: Callable[[Any], Any]) -> Any:
    """Log-softmax (``mode`` 0, shape ``(n, V)``) or log-sum-exp (``mode`` 1, shape ``(n,)``)
    of the rows of a float32 ``(n, V)`` block, or ``None`` when the kernel does not apply.

    Rows whose maximum is not finite are flagged by the kernel and computed by ``general``.
    """
    n, v = x2.shape
    if n == 0 or not _float32_cpu(x2):
        return None
    lib = _native.lib()  # reads LOGITLAB_NATIVE now, for this call
    if lib is None:
        return None
    shape = (n, v) if mode == 0 else (n,)
    x2, px, threads = _pointer(x2)
    if isinstance(x2, np.ndarray):
        out: Any = np.empty(shape, dtype=np.float32)
        flag: Any = np.empty(n, dtype=np.int32)
        po, pf = out.ctypes.data, flag.ctypes.data
    else:
        import torch

        out = torch.empty(shape, dtype=torch.float32)
        flag = torch.empty(n, dtype=torch.int32)
        po, pf = out.data_ptr(), flag.data_ptr()
    item = 4 * (v if mode == 0 else 1)

    def run(r0: int, r1: int) -> None:
        lib.logitlab_lsm_rows(px + 4 * v * r0, po + item * r0, pf + 4 * r0, r1 - r0, v, v, v, mode)

    _native.split_rows(n, n * v, threads, run)
    bad = np.flatnonzero(np.asarray(flag))
    if bad.size:
        idx: Any = bad if isinstance(x2, np.ndarray) else __import__("torch").from_numpy(bad)
        out[idx] = general(x2[idx])
    return out


def eval_rows(x: Any, y: Any, edges: np.ndarray) -> tuple[int, np.ndarray, np.ndarray] | None:
    """The evaluator's kernel over a float32 CPU ``(n, C)`` batch with int labels ``y``, or None.

    Returns ``(first row with NaN or a non-finite maximum, or -1; the sums of nll, top-1, top-5,
    Brier and entropy; the (3, F) histogram of count, confidence sum and correct predictions over
    the fine bins ``edges``)``; each row range has its own sums and histogram, added in row
    order.
    """
    if x.ndim != 2 or x.shape[1] > EVAL_MAX_CLASSES or not _float32_cpu(x):
        return None
    lib = _native.lib()
    if lib is None:
        return None
    n, c = x.shape
    _alive, px, threads = _pointer(x)  # the contiguous copy must outlive the kernel calls
    ys = np.ascontiguousarray(y.numpy() if hasattr(y, "numpy") else y, dtype=np.int64)
    f = len(edges) - 1

    def run(r0: int, r1: int) -> tuple[int, np.ndarray, np.ndarray]:
        acc, hist = np.zeros(5), np.zeros((3, f))
        bad = lib.logitlab_eval_rows(
            px + 4 * c * r0,
            ys.ctypes.data + 8 * r0,
            r1 - r0,
            c,
            c,
            f,
            edges.ctypes.data,
            acc.ctypes.data,
            hist.ctypes.data,
        )
        return (r0 + int(bad) if bad >= 0 else -1), acc, hist

    parts = _native.split_rows(n, n * c, threads, run)
    first = next((b for b, _, _ in parts if b >= 0), -1)
    return first, np.sum([p[1] for p in parts], axis=0), np.sum([p[2] for p in parts], axis=0)


def diag_applies(x: np.ndarray) -> bool:
    """Whether :func:`diag_rows` takes ``x``: float16/float32 rows with unit stride, library on."""
    if x.dtype not in (np.float16, np.float32) or x.ndim != 2 or x.shape[1] == 0:
        return False
    if x.strides[1] != x.itemsize or x.strides[0] % x.itemsize:
        return False
    return _native.lib() is not None


def diag_rows(
    x: np.ndarray,
    t: np.ndarray | None,
    q: np.ndarray,
    k: np.ndarray,
    scratch: np.ndarray,
    h_logit: np.ndarray,
    h_exp: np.ndarray,
) -> bool:
    """``diagnose``'s kernel over float16/float32 rows with unit stride: fills the record array
    ``q`` (``logitlab_diag_row`` per row) and the first maximum ``k`` (-1 for a row holding NaN or
    +-inf), adds to the histograms ``h_logit`` and ``h_exp`` (``scratch``: two float32 rows).
    Returns False (nothing done) when the kernel does not apply (:func:`diag_applies`)."""
    if not diag_applies(x):
        return False
    lib = _native.lib()
    r, v = x.shape
    tc = None if t is None else np.ascontiguousarray(t, dtype=np.int64)
    lib.logitlab_diag_rows(
        x.ctypes.data,
        int(x.dtype == np.float16),
        None if tc is None else tc.ctypes.data,
        r,
        v,
        x.strides[0] // x.itemsize,
        q.ctypes.data,
        k.ctypes.data,
        scratch.ctypes.data,
        h_logit.ctypes.data,
        h_exp.ctypes.data,
    )
    return True

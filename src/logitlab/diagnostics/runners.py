"""Entry points of :mod:`logitlab.diagnostics`: :func:`diagnose`, :func:`diagnose_file` and the
chunk runner that feeds :class:`~logitlab.diagnostics.LogitStats` from worker threads."""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Callable
from typing import Any

import numpy as np

from logitlab.diagnostics.results import LogitReport
from logitlab.diagnostics.stats import LogitStats

__all__ = ["ProgressFn", "diagnose", "diagnose_file"]

ProgressFn = Callable[[int, int], None]  # (rows done, total rows)


def _workers(n_chunks: int, workers: int | None) -> int:
    w = workers if workers is not None else min(2, os.cpu_count() or 1)
    return max(1, min(int(w), n_chunks))


def _run_chunks(
    n_rows: int,
    V: int,
    rows_per_chunk: int,
    get: Callable[[int, int], tuple[np.ndarray, np.ndarray | None]],
    make: Callable[[], LogitStats],
    workers: int | None,
    progress: ProgressFn | None,
    rows_per_unit: int = 1,
) -> LogitStats:
    # Worker threads pull chunk indices from a shared counter (NumPy releases the GIL in its
    # loops); each keeps its own accumulator and buffers, merged at the end. Chunks are read by the
    # worker that processes them, so at most `workers` chunks are in memory at once. They are read
    # under the lock, in file order: a sequential source (a compressed .npz member) is then never
    # asked to go back and decompress again from the start. A memory-mapped chunk is only a view
    # there; its pages are read by the update, in parallel. A chunk starting at unit a starts at
    # row a * rows_per_unit: the accumulators count the rows' positions from there.
    starts = list(range(0, n_rows, rows_per_chunk)) or [0]
    nw = _workers(len(starts), workers)
    lock = threading.Lock()
    nxt = iter(starts)
    done = [0]
    errors: list[BaseException] = []
    stats = [make() for _ in range(nw)]

    def work(st: LogitStats) -> None:
        while not errors:
            try:
                with lock:
                    a = next(nxt, None)
                    if a is None:
                        return
                    bnd = min(n_rows, a + rows_per_chunk)
                    x, t = get(a, bnd)
                st.update(x, t, row_offset=a * rows_per_unit)
            except BaseException as exc:  # re-raised in the caller's thread
                errors.append(exc)
                return
            with lock:
                done[0] += bnd - a
                if progress is not None:
                    progress(done[0], n_rows)

    if nw == 1:
        work(stats[0])
    else:
        threads = [threading.Thread(target=work, args=(st,), daemon=True) for st in stats]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
    if errors:
        raise errors[0]
    for st in stats:
        st._work.clear()
    total = stats[0]
    for st in stats[1:]:
        total.merge(st)
    return total


def _chunk_rows(V: int, chunk_bytes: int) -> int:
    # Four work buffers of 4 or 8 bytes per entry per chunk; chunk_bytes bounds one of them.
    return max(1, chunk_bytes // (8 * max(1, V)))


def diagnose(
    logits: Any,
    target: Any = None,
    *,
    axis: int = -1,
    chunk_bytes: int = 32 << 20,
    workers: int | None = None,
) -> LogitReport:
    r"""Diagnose logits: overflow per dtype, saturation, loss scale, conditioning, entropy.

    Runs :class:`LogitStats` over row chunks of the array (see the module docstring for the exact
    float16/bfloat16 model). Key quantities, per row with :math:`p = \operatorname{softmax}(z)`:

    .. math::

        \text{margin}_D = \ln(\max_D) - \max |z|, \qquad
        \text{saturated}_D \iff 1 - \max_i p_i < \epsilon_D, \qquad
        g = p - \operatorname{onehot}(t), \qquad
        \kappa_{\operatorname{lse}} = \frac{\sum_i p_i |z_i|}{|\operatorname{lse}(z)|} .

    The recommended static loss scale :math:`S = 2^k` is the smallest power of two leaving at most
    1% of the nonzero :math:`|g|` below float16's normal range :math:`2^{-14}`, capped so that
    :math:`S \max|g| \le 65504` (Micikevicius et al. 2018).

    Args:
        logits: real array-like (NumPy, torch, lists) with at least one dimension.
        target: integer class indices with the shape of ``logits`` minus ``axis``; ``None`` uses
            each row's argmax as its target (the gradient of a correct prediction: the smallest
            gradients, so the loss-scale advice errs on the side of more scaling).
        axis: the class axis.
        chunk_bytes: size of one work buffer per chunk (memory bound: about 4x this per worker).
        workers: threads (default ``min(2, cpu_count)``).

    Returns:
        A :class:`LogitReport`.

    Raises:
        TypeError: non-numeric logits or non-integer targets.
        ValueError: a 0-d input, an empty class axis, ``axis`` out of range, targets of the wrong
            shape or out of range.

    Example:
        >>> import numpy as np
        >>> z = np.array([[12.0, 0.0, 0.0], [1.0, 0.0, -1.0]], dtype=np.float16)
        >>> rep = diagnose(z)
        >>> rep.dtypes["float16"].naive_overflow_rows, rep.dtypes["float32"].naive_overflow_rows
        (1, 0)
        >>> round(rep.dtypes["float16"].margin, 3)
        -0.91

    References:
        Micikevicius et al., "Mixed Precision Training", ICLR 2018;
        Blanchard, Higham & Higham, IMA J. Numer. Anal. 41(4), 2021; IEEE 754-2019.
    """
    x = _to_numpy(logits, "logits")
    if x.ndim == 0:
        raise ValueError("logits must have at least one dimension (a class axis), got a scalar")
    from logitlab._checks import normalize_axis

    ax = normalize_axis(axis, x.ndim)
    shape = tuple(x.shape)
    x = np.moveaxis(x, ax, -1)
    V = x.shape[-1]
    if V == 0:
        raise ValueError("the class axis is empty")
    x2 = x.reshape(-1, V)
    t2: np.ndarray | None = None
    if target is not None:
        t = _to_numpy(target, "target")
        if t.shape != x.shape[:-1]:
            raise ValueError(
                f"target shape {t.shape} does not match the logits' rows {x.shape[:-1]}"
            )
        t2 = t.reshape(-1)
    n = x2.shape[0]

    def get(a: int, b: int) -> tuple[np.ndarray, np.ndarray | None]:
        return x2[a:b], None if t2 is None else t2[a:b]

    def make() -> LogitStats:
        st = LogitStats(V, dtype=_dtype_name(logits, x), shape=shape, axis=ax)
        st.has_target = target is not None
        return st

    return _run_chunks(n, V, _chunk_rows(V, chunk_bytes), get, make, workers, None).finalize()


def _dtype_name(orig: Any, x: np.ndarray) -> str:
    dt = getattr(orig, "dtype", None)
    if dt is not None and "bfloat16" in str(dt):
        return "bfloat16"
    return str(x.dtype)


def _to_numpy(a: Any, name: str) -> np.ndarray:
    if type(a).__module__.startswith("torch"):
        import torch

        t = a.detach().cpu()
        if t.dtype == torch.bfloat16:
            t = t.float()  # exact widening: NumPy has no bfloat16
        return np.asarray(t.numpy())
    try:
        x = np.asarray(a)
    except (ValueError, TypeError) as exc:
        raise TypeError(f"{name} must be an array or a nested list of numbers: {exc}") from exc
    if x.dtype.kind not in "biuf":
        raise TypeError(f"{name} must hold real numbers, got dtype {x.dtype}")
    return x


def diagnose_file(
    path: str | os.PathLike[str],
    key: str | None = None,
    axis: int = -1,
    *,
    target_key: str | None = None,
    progress: ProgressFn | None = None,
    chunk_bytes: int = 32 << 20,
    workers: int | None = None,
) -> LogitReport:
    """Diagnose logits stored in a file, streaming row chunks (bounded memory).

    Reads ``.npy`` (memory-mapped), ``.npz``, ``.pt``/``.pth`` (``weights_only=True``) and
    ``.safetensors`` through :func:`logitlab.io.open_array`: nothing in the file is executed.
    Chunks are taken along the first axis; a class ``axis`` other than 0 is moved last inside each
    chunk. ``axis = 0`` of a multi-dimensional array cannot be streamed by rows: such files are read
    whole if they fit in ``chunk_bytes``, otherwise rejected.

    Memory: at most ``workers`` chunks at a time, whatever the file size. float16/float32 rows
    go through the native kernel, which reads a memory-mapped chunk in place: per worker a
    scratch of two rows and 13 doubles per chunk row (about 1 MiB in all by default). Otherwise
    (float64/integer input, no compiler) each chunk has four work buffers of ``chunk_bytes``
    (default 32 MiB: about 256 MiB with two workers). Fixed histograms add under 1 MiB; pages of
    a memory-mapped ``.npy``/``.npz`` are file-backed page cache.

    Args:
        path: the file.
        key: array name inside a container (``None``: the only array).
        axis: the class axis.
        target_key: optional name of an integer target array in the same container.
        progress: callback ``(rows_done, rows_total)`` after each chunk.
        chunk_bytes: bound on one work buffer.
        workers: threads (default ``min(2, cpu_count)``).

    Returns:
        A :class:`LogitReport`.

    Raises:
        logitlab.io.LoadError: unreadable, corrupt, pickled or non-numeric content; unknown key;
            a scalar; an axis that cannot be streamed; a class axis longer than
            :data:`logitlab.io.MAX_ROW_BYTES` allows.
    """
    from logitlab.io import LoadError, check_row_size, open_array

    src = open_array(path, key)
    shape = tuple(src.shape)
    if len(shape) == 0:
        raise LoadError(f"{path}: holds a scalar; logits need a class axis")
    try:
        from logitlab._checks import normalize_axis

        ax = normalize_axis(axis, len(shape))
    except (TypeError, ValueError) as exc:
        raise LoadError(f"{path}: {exc}") from exc
    V = shape[ax]
    if V == 0:
        raise LoadError(f"{path}: the class axis {ax} is empty")
    tgt: np.ndarray | None = None
    if target_key is not None:
        tsrc = open_array(path, target_key)
        # compare the headers first: a target array of the wrong shape is never read
        expect = tuple(s for i, s in enumerate(shape) if i != ax)
        if math.prod(tsrc.shape) != math.prod(expect) or (
            ax != 0 and len(shape) > 1 and tuple(tsrc.shape) != expect
        ):
            raise LoadError(f"{tsrc.where}: target shape {tsrc.shape} does not match {expect}")
        tgt = tsrc.read()
    name = src.source_dtype  # "bfloat16" for such tensors, whose rows arrive widened

    def make() -> LogitStats:
        st = LogitStats(V, dtype=name, shape=shape, axis=ax)
        st.has_target = tgt is not None
        return st

    check_row_size(src, V)  # one distribution (the class axis) is always processed whole
    if len(shape) == 1:
        n_rows, per_row = 1, V
    elif ax == 0:
        if src.nbytes > chunk_bytes:
            raise LoadError(
                f"{path}: the class axis is axis 0 of a {len(shape)}-D array of "
                f"{src.nbytes / 2**20:.0f} MiB, which cannot be streamed by rows; move the class "
                "axis last (np.moveaxis) or pass a smaller array"
            )
        whole = np.moveaxis(src.read(), 0, -1)
        x2 = whole.reshape(-1, V)
        t2 = None if tgt is None else tgt.reshape(-1)
        return _run_chunks(
            x2.shape[0],
            V,
            x2.shape[0] or 1,
            lambda a, b: (x2[a:b], None if t2 is None else t2[a:b]),
            make,
            1,
            progress,
        ).finalize()
    else:
        n_rows = shape[0]
        per_row = math.prod(shape[1:])
    rows = _chunk_rows(per_row, chunk_bytes)

    def get(a: int, b: int) -> tuple[np.ndarray, np.ndarray | None]:
        if len(shape) == 1:
            return src.read()[None, :], None if tgt is None else tgt.reshape(1)
        c = src.rows(a, b)
        if ax != len(shape) - 1:
            c = np.moveaxis(c, ax, -1)
        return c, None if tgt is None else tgt[a:b]

    # a file row (along axis 0) holds per_row / V distributions: row offsets count those
    unit = per_row // V if len(shape) > 1 else 1
    return _run_chunks(n_rows, V, rows, get, make, workers, progress, unit).finalize()

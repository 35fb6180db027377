"""The in-cache backend of the row engine: NumPy arrays and CPU torch tensors, class axis last.

The array-API implementation (:mod:`logitlab._rows.decompose`) builds several full-size temporaries
(``a - x``, ``exp``, masks). On a CPU these passes over memory, not arithmetic, dominate. Here the
same formulas are evaluated a block of rows at a time into one reusable buffer of about
``_CHUNK_ELEMS`` elements that stays in cache, with in-place operations:

* ``max`` with its index (one pass), ``buf = exp(x - a)`` (two in-cache passes), zero the one
  excluded maximal entry by index (no mask pass), ``s = sum(buf)``;
* then ``lse = a + log1p(s)``; ``log_softmax = x - (a + log1p(s))`` written straight into the
  output; ``softmax = buf / (1 + s)`` with the excluded entry set to ``1 / (1 + s)``.

The numbers are bit-for-bit those of the same formulas; a chunk containing a row whose maximum is
not finite (``+-inf``, NaN) falls back to the general implementation, which handles those limits.
CUDA tensors and other namespaces use the general implementation (on a GPU its temporaries are
fused by the caching allocator and the launch count matters more than passes).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = ["entropy", "log_softmax", "lse", "nll_class", "softmax", "usable"]

_CHUNK_ELEMS = 1 << 19  # 2 MiB of float32: a block that stays in L2/L3 across its passes


def usable(x: Any, axis: int) -> bool:
    """Whether ``x`` (already in its compute dtype) can take the fast path along ``axis``."""
    if axis != x.ndim - 1 or x.ndim == 0 or x.shape[-1] == 0:
        return False
    if isinstance(x, np.ndarray):
        return x.dtype in (np.float32, np.float64)
    if type(x).__module__.startswith("torch"):
        import torch

        # The chunk loop writes through out= and in-place kernels, which autograd cannot record
        # (and refuses under grad mode). A tensor that is part of a graph takes the general,
        # out-of-place implementation; the public functions never pass one here, they route
        # such tensors through logitlab.torch._autograd, whose Functions see detached inputs.
        return bool(
            x.device.type == "cpu"
            and x.dtype in (torch.float32, torch.float64)
            and x.is_contiguous()
            and not (x.requires_grad and torch.is_grad_enabled())
        )
    return False


def _rows(n_rows: int, n_cols: int) -> int:
    return max(1, min(n_rows, _CHUNK_ELEMS // max(1, n_cols)))


class _Ops:
    """The handful of in-place kernels the chunk loop needs, for one library."""

    def __init__(self, x: Any) -> None:
        self.is_np = isinstance(x, np.ndarray)
        self._scratch: tuple[Any, Any] | None = None
        if not self.is_np:
            import torch

            self.torch = torch

    def scratch(self, b: Any) -> tuple[Any, Any]:
        """Two reusable buffers shaped like the block ``b``."""
        if self._scratch is None or self._scratch[0].shape[0] < b.shape[0]:
            self._scratch = (self.empty(tuple(b.shape), b), self.empty(tuple(b.shape), b))
        n = b.shape[0]
        return self._scratch[0][:n], self._scratch[1][:n]

    def empty(self, shape: tuple[int, ...], like: Any) -> Any:
        if self.is_np:
            return np.empty(shape, dtype=like.dtype)
        return self.torch.empty(shape, dtype=like.dtype)

    def max_idx(self, c: Any) -> tuple[Any, Any]:
        if self.is_np:
            k = np.argmax(c, axis=1)[:, None]
            return np.take_along_axis(c, k, axis=1), k
        m, k = c.max(dim=1, keepdim=True)
        return m, k

    def all_finite(self, m: Any) -> bool:
        if self.is_np:
            return bool(np.isfinite(m).all())
        return bool(self.torch.isfinite(m).all())

    def exp_shifted(self, c: Any, m: Any, k: Any, b: Any, t: float, comp: bool = True) -> Any:
        """``b = exp((x - a) / T)`` with the excluded maximal entry set to 0; returns ``s``."""
        if self.is_np:
            np.subtract(c, m, out=b)
            if t != 1.0:
                np.divide(b, t, out=b)
            np.exp(b, out=b)
            if comp:
                _compensate(self, b, c, m, t)
            np.put_along_axis(b, k, 0.0, axis=1)
            return b.sum(axis=1, keepdims=True)
        self.torch.sub(c, m, out=b)
        if t != 1.0:
            b.div_(t)
        b.exp_()
        if comp:
            _compensate(self, b, c, m, t)
        b.scatter_(1, k, 0.0)
        return b.sum(dim=1, keepdim=True)

    def log1p(self, s: Any) -> Any:
        return np.log1p(s) if self.is_np else self.torch.log1p(s)


def _compensate(ops: _Ops, b: Any, c: Any, m: Any, t: float) -> None:
    """Multiply ``b = exp(fl(x - a) / T)`` in place by ``1 + e / T``, ``x - a = fl(x - a) + e``.

    exp amplifies the rounding error ``e`` of ``x - a`` by ``|x - a|`` (a class 30 nats below the
    maximum would lose 15 ulps, and with it ``log1p(s)`` of a near-deterministic row):
    ``exp((d + e) / T) = exp(d / T) (1 + e / T)``. ``e`` is Knuth's TwoSum error, computed in
    place in two scratch buffers; masked entries (``x = -inf``) give NaN there and are reset to
    ``b = 0``.
    """
    e, bb = ops.scratch(b)
    if ops.is_np:
        np.subtract(c, m, out=e)
        np.subtract(e, c, out=bb)
        np.subtract(e, bb, out=e)
        np.subtract(c, e, out=e)
        np.subtract(-m, bb, out=bb)
        np.add(e, bb, out=e)
        if t != 1.0:
            np.divide(e, t, out=e)
        np.add(e, 1.0, out=e)
        np.multiply(b, e, out=b)
        np.fmax(b, 0.0, out=b)
    else:
        torch = ops.torch
        torch.sub(c, m, out=e)
        torch.sub(e, c, out=bb)
        e.sub_(bb)
        torch.sub(c, e, out=e)
        torch.sub(-m, bb, out=bb)
        e.add_(bb)
        if t != 1.0:
            e.div_(t)
        e.add_(1.0)
        b.mul_(e).nan_to_num_(nan=0.0)


def _loop(
    x2: Any,
    t: float,
    body: Callable[[_Ops, int, Any, Any, Any, Any, Any], None],
    fallback: Callable[[int, int], None],
    comp: bool = True,
) -> None:
    ops = _Ops(x2)
    n, v = x2.shape
    rows = _rows(n, v)
    buf = ops.empty((rows, v), x2)
    for a in range(0, n, rows):
        c = x2[a : a + rows]
        m, k = ops.max_idx(c)
        if not ops.all_finite(m):
            fallback(a, a + c.shape[0])
            continue
        b = buf[: c.shape[0]]
        s = ops.exp_shifted(c, m, k, b, t, comp)
        body(ops, a, c, m, k, b, s)


def _as2d(x: Any) -> Any:
    return x.reshape(-1, x.shape[-1])


def lse(x: Any, t: float, general: Callable[[Any], Any]) -> Any:
    """``lse(x / T)`` over the last axis (shape ``x.shape[:-1]``)."""
    x2 = _as2d(x)
    ops = _Ops(x2)
    out = ops.empty((x2.shape[0],), x2)

    def body(ops: _Ops, a: int, c: Any, m: Any, k: Any, b: Any, s: Any) -> None:
        top = m / t if t != 1.0 else m
        out[a : a + c.shape[0]] = (top + ops.log1p(s))[:, 0]

    def fb(a: int, z: int) -> None:
        out[a:z] = general(x2[a:z])

    # lse = a + log1p(s) needs no compensation: an error of |d| ulps in a term w of s moves
    # log1p(s) by at most H * eps / 2 (H the entropy), below an ulp of |lse| unless lse ~ 0.
    _loop(x2, t, body, fb, comp=False)
    return out.reshape(x.shape[:-1])


def log_softmax(x: Any, t: float, general: Callable[[Any], Any]) -> Any:
    # Five passes per in-cache block, the first write going straight to the output:
    # o = (x - a) / T;  b = exp(o) with the excluded entry zeroed;  s = sum(b);  o -= log1p(s).
    # -(a - x)/T - log1p(s) in two roundings keeps the dominant entry's tiny log-probability
    # (the shorter x - (a + log1p(s)) rounds it to 0).
    x2 = _as2d(x)
    ops = _Ops(x2)
    n, v = x2.shape
    out = ops.empty((n, v), x2)
    rows = _rows(n, v)
    buf = ops.empty((rows, v), x2)
    for a in range(0, n, rows):
        c, o = x2[a : a + rows], out[a : a + rows]
        m, k = ops.max_idx(c)
        if not ops.all_finite(m):
            o[...] = general(c)
            continue
        b = buf[: c.shape[0]]
        if ops.is_np:
            np.subtract(c, m, out=o)
            if t != 1.0:
                np.divide(o, t, out=o)
            np.exp(o, out=b)
            _compensate(ops, b, c, m, t)
            np.put_along_axis(b, k, 0.0, axis=1)
            np.subtract(o, np.log1p(b.sum(axis=1, keepdims=True)), out=o)
        else:
            torch = ops.torch
            torch.sub(c, m, out=o)
            if t != 1.0:
                o.div_(t)
            torch.exp(o, out=b)
            _compensate(ops, b, c, m, t)
            b.scatter_(1, k, 0.0)
            o.sub_(torch.log1p(b.sum(dim=1, keepdim=True)))
    return out.reshape(x.shape)


def softmax(x: Any, t: float, general: Callable[[Any], Any]) -> Any:
    x2 = _as2d(x)
    ops = _Ops(x2)
    out = ops.empty(tuple(x2.shape), x2)

    def body(ops: _Ops, a: int, c: Any, m: Any, k: Any, b: Any, s: Any) -> None:
        o = out[a : a + c.shape[0]]
        if ops.is_np:
            np.divide(b, 1 + s, out=o)
            np.put_along_axis(o, k, 1 / (1 + s), axis=1)
        else:
            ops.torch.div(b, 1 + s, out=o)
            o.scatter_(1, k, 1 / (1 + s))

    def fb(a: int, z: int) -> None:
        out[a:z] = general(x2[a:z])

    _loop(x2, t, body, fb)
    return out.reshape(x.shape)


def entropy(x: Any, general: Callable[[Any], Any]) -> Any:
    """``H = log1p(s) + sum(d * w) / (1 + s)`` per row, with ``d = a - x``."""
    x2 = _as2d(x)
    ops = _Ops(x2)
    out = ops.empty((x2.shape[0],), x2)
    buf2 = ops.empty((_rows(*x2.shape), x2.shape[1]), x2)

    def body(ops: _Ops, a: int, c: Any, m: Any, k: Any, b: Any, s: Any) -> None:
        d = buf2[: c.shape[0]]
        # w = 0 exactly where d = inf (masked classes); d * w would be NaN there, so those
        # rows (max finite, some entries -inf) are zeroed explicitly below.
        if ops.is_np:
            np.subtract(m, c, out=d)
            np.multiply(d, b, out=d)
            if not np.isfinite(c).all():
                d[~np.isfinite(c)] = 0.0
            dw = d.sum(axis=1, keepdims=True)
            out[a : a + c.shape[0]] = (np.log1p(s) + dw / (1 + s))[:, 0]
        else:
            ops.torch.sub(m, c, out=d)
            d.mul_(b)
            d.nan_to_num_(nan=0.0)
            dw = d.sum(dim=1, keepdim=True)
            out[a : a + c.shape[0]] = (ops.torch.log1p(s) + dw / (1 + s))[:, 0]

    def fb(a: int, z: int) -> None:
        out[a:z] = general(x2[a:z])

    _loop(x2, 1.0, body, fb)
    return out.reshape(x.shape[:-1])


def nll_class(x: Any, target: Any, t: float, general: Callable[[Any, Any], Any]) -> Any:
    """``-log softmax(x / T)[target] = (a - x_t) / T + log1p(s)`` per row (targets in range)."""
    x2 = _as2d(x)
    t2 = target.reshape(-1)
    ops = _Ops(x2)
    out = ops.empty((x2.shape[0],), x2)

    def body(ops: _Ops, a: int, c: Any, m: Any, k: Any, b: Any, s: Any) -> None:
        tt = t2[a : a + c.shape[0]]
        if ops.is_np:
            xt = np.take_along_axis(c, tt[:, None], axis=1)
            d = (m - xt) / t if t != 1.0 else m - xt
            out[a : a + c.shape[0]] = (d + np.log1p(s))[:, 0]
        else:
            xt = c.gather(1, tt[:, None])
            d = (m - xt) / t if t != 1.0 else m - xt
            out[a : a + c.shape[0]] = (d + ops.torch.log1p(s))[:, 0]

    def fb(a: int, z: int) -> None:
        out[a:z] = general(x2[a:z], t2[a:z])

    _loop(x2, t, body, fb)
    return out.reshape(target.shape)

"""Row kernels shared by the fused losses: one pass of the softmax statistics and the gradient.

Two interchangeable implementations of :func:`ce_rows`:

* the native float32 CPU kernels (``csrc/ce_rows.c``, ``csrc/ce_cols.c``), compiled at install
  time and loaded by :mod:`logitlab._native`. They visit each row at most three times while
  the row is hot in cache and write the gradient over the logits;
* a pure-torch path (any dtype, any device) doing the same math with in-place tensor ops. It is
  the fallback whenever the library is not built, the tensor is not float32 on CPU, or
  ``LOGITLAB_NATIVE=0`` (read at every call).

Both use the decomposition of :mod:`logitlab._rows.decompose`: with :math:`a = \\max_i z_i` at index
:math:`k`, :math:`d_i = a - z_i` and :math:`s = \\sum_{i \\ne k} e^{-d_i}`,
:math:`\\operatorname{lse} = a + \\operatorname{log1p}(s)` and
:math:`-\\log p_t = d_t + \\operatorname{log1p}(s)`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import torch

from logitlab import _native
from logitlab._rows import decompose

__all__ = ["RowOut", "ce_cols", "ce_grad_rows", "ce_rows", "native_available"]


class RowOut(NamedTuple):
    """Per-row results of :func:`ce_rows` (float32 unless the input is float64)."""

    loss: torch.Tensor
    lse: torch.Tensor
    entropy: torch.Tensor | None
    argmax: torch.Tensor | None


def native_available() -> bool:
    """Whether the native float32 CPU kernels are in use now (``LOGITLAB_NATIVE=0`` turns them
    off, also after import).

    Example:
        >>> from logitlab._rows.fused import native_available
        >>> isinstance(native_available(), bool)
        True
    """
    return _native.lib() is not None


def _ptr(t: torch.Tensor | None, row: int = 0) -> int | None:
    """Address of row ``row`` of ``t`` (None for None)."""
    if t is None:
        return None
    return t.data_ptr() + row * (t.stride(0) if t.dim() else 0) * t.element_size()


def _split_rows(n: int, work: int, call: Any) -> None:
    """Run ``call(r0, r1)`` over row ranges covering ``[0, n)`` on the shared thread pool of
    :func:`logitlab._native.split_rows` (one native thread per kernel call), as many ranges as
    ``torch.get_num_threads()``."""
    _native.split_rows(n, work, torch.get_num_threads(), call)


@dataclass(frozen=True)
class _Job:
    """One :func:`ce_rows` call's arguments besides the buffer (what both backends take)."""

    target: torch.Tensor
    ignore_index: int
    cw: torch.Tensor | None  # class weights
    gs: torch.Tensor | None  # per-row gradient factor (None: no gradient)
    temperature: float
    softcap: float | None
    eps: float  # label smoothing
    zl: float  # z-loss coefficient
    stats: bool


def ce_rows(
    z: torch.Tensor,
    target: torch.Tensor,
    *,
    ignore_index: int = -100,
    class_weight: torch.Tensor | None = None,
    grad_scale: torch.Tensor | None = None,
    temperature: float = 1.0,
    softcap: float | None = None,
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
    stats: bool = False,
    group: Any = None,
    offset: int = 0,
) -> RowOut:
    """Per-row loss and statistics of ``z`` (rows x classes); gradient written over ``z``.

    The row loss is :math:`(1-\\varepsilon) w_t (-\\log p_t) + \\frac{\\varepsilon}{|F|}
    \\sum_{c\\in F} w_c (-\\log p_c) + \\zeta\\,\\operatorname{lse}^2` with
    :math:`p = \\operatorname{softmax}(y)`, :math:`y = \\operatorname{softcap}(z) / T` and
    :math:`F` the classes with finite :math:`y`. Ignored rows have loss 0. When ``grad_scale``
    (one factor per row) is given, ``z`` is overwritten with
    ``grad_scale[r] * d loss_r / d z_r``; otherwise ``z`` is left untouched. With a
    ``torch.distributed`` ``group``, ``z`` is this rank's vocabulary shard starting at class
    ``offset`` (the torch backend, whose row statistics are all-reduced).
    """
    job = _Job(
        target, ignore_index, class_weight, grad_scale, temperature, softcap, label_smoothing,
        z_loss, stats,
    )  # fmt: skip
    lib = (
        _native.lib()
        if group is None
        and z.dtype == torch.float32
        and z.device.type == "cpu"
        and z.dim() == 2
        and z.stride(1) == 1
        and z.shape[1] > 0
        else None
    )
    if lib is not None:
        return _ce_rows_native(lib, z, job)
    return _ce_rows_torch(z, job, group, offset)


def ce_grad_rows(
    out: torch.Tensor,
    z: torch.Tensor,
    target: torch.Tensor,
    lse: torch.Tensor,
    grad_scale: torch.Tensor,
    *,
    ignore_index: int = -100,
    class_weight: torch.Tensor | None = None,
    temperature: float = 1.0,
) -> bool:
    """Write ``grad_scale * w_t * (softmax(z/T) - onehot) / T`` into ``out`` (may be ``z``).

    One pass, from the ``lse`` of ``z/T`` saved by a read-only forward; only without label
    smoothing or softcap.
    Returns False (nothing written) when the native kernel cannot take it."""
    lib = (
        _native.lib()
        if out.dtype == torch.float32
        and out.stride(1) == 1
        and out.shape == z.shape
        and z.dtype == torch.float32
        and z.device.type == "cpu"
        and z.dim() == 2
        and z.stride(1) == 1
        else None
    )
    if lib is None:
        return False
    n, v = z.shape
    t = target.to(torch.int64).contiguous()
    cw = None if class_weight is None else class_weight.to(torch.float32).contiguous()
    gs = grad_scale.to(torch.float32).contiguous()
    ls = lse.to(torch.float32).contiguous()
    if n and v:

        def call(r0: int, r1: int) -> None:
            lib.logitlab_ce_grad_rows(
                _ptr(out, r0),
                _ptr(z, r0),
                r1 - r0,
                _ptr(t, r0),
                _ptr(cw),
                _ptr(gs, r0),
                _ptr(ls, r0),
                v,
                out.stride(0),
                z.stride(0),
                int(ignore_index),
                1.0 / temperature,
            )

        _split_rows(n, n * v, call)
    return True


def ce_cols(
    zt: torch.Tensor,
    target: torch.Tensor,
    *,
    ignore_index: int = -100,
    grad_scale: torch.Tensor | None = None,
    z_loss: float = 0.0,
    stats: bool = False,
) -> RowOut:
    """:func:`ce_rows` of ``zt.T`` for a class-major buffer ``zt`` (classes x tokens, contiguous,
    float32 on CPU, native kernel available): no class weights, softcap, temperature or
    smoothing. With ``grad_scale``, ``zt`` is overwritten with the transposed gradient.

    The threads own contiguous class ranges (a split by tokens would give each thread strided
    pieces of every row, which ran 1.4x slower on two threads); their partial online-softmax
    sums are merged in class order before the gradient pass (see ``csrc/ce_cols.c``).
    """
    v, m = zt.shape
    if not (zt.is_contiguous() and zt.dtype == torch.float32 and zt.device.type == "cpu"):
        raise ValueError("ce_cols needs a contiguous float32 CPU buffer")
    lib = _native.lib()
    if lib is None:
        raise RuntimeError("ce_cols needs the native kernel")
    target = target.to(torch.int64).contiguous()
    gs = None if grad_scale is None else grad_scale.to(torch.float32).contiguous()
    loss = torch.empty(m, dtype=torch.float32)
    lse = torch.empty(m, dtype=torch.float32)
    ent = torch.empty(m, dtype=torch.float32) if stats else None
    amax = torch.empty(m, dtype=torch.int64) if stats else None
    if m == 0 or v == 0:
        if v == 0:  # no class: lse = -inf, the target has probability 0
            lse.fill_(float("-inf"))
            loss.fill_(float("inf")).masked_fill_(target == ignore_index, 0.0)
            if ent is not None and amax is not None:
                ent.zero_()
                amax.zero_()
        return RowOut(loss, lse, ent, amax)
    mv = -(-m // 8) * 8
    cb = min(256, max(16, 65536 // mv))  # rows per block: cb x m floats <= 256 KiB (L2)
    nb = -(-v // cb)
    # one part per thread, each a whole number of blocks
    nparts = max(1, min(torch.get_num_threads(), nb)) if v * m >= 1 << 16 else 1
    per = -(-nb // nparts)
    nparts = -(-nb // per)
    rb = torch.empty(nb, mv, dtype=torch.float32)
    rc = torch.empty(nparts, mv, dtype=torch.float32)
    s_ = torch.empty(nparts, mv, dtype=torch.float64)
    e_ = torch.empty(nparts, mv, dtype=torch.float64)
    k_ = torch.empty(nparts, mv, dtype=torch.int32)
    nan = torch.empty(nparts, mv, dtype=torch.int32)
    ztg = torch.zeros(nparts, mv, dtype=torch.float32)

    def each_part(call: Any) -> None:
        """``call(p, v0, v1)`` for every part on the thread pool; it returns the C status."""

        def run(p0: int, p1: int) -> int:
            return sum(call(p, p * per * cb, min(v, (p + 1) * per * cb)) for p in range(p0, p1))

        if any(_native.split_rows(nparts, v * m, nparts, run)):
            raise MemoryError("ce_cols: no memory for the kernel's scratch arrays")

    def part(p: int, v0: int, v1: int) -> int:
        return lib.logitlab_ce_cols_part(
            zt.data_ptr(), m, m, v0, v1, cb, _ptr(target),
            _ptr(rb, p * per), _ptr(rc, p), _ptr(s_, p), _ptr(e_, p), _ptr(k_, p),
            _ptr(nan, p), _ptr(ztg, p), int(gs is not None), int(stats),
        )  # fmt: skip

    each_part(part)
    a = torch.empty(mv, dtype=torch.float32)
    fac = torch.empty(mv, dtype=torch.float32)
    fix = torch.empty(mv, dtype=torch.float32)
    tg = torch.empty(mv, dtype=torch.float32)
    lib.logitlab_ce_cols_merge(
        m, nparts, _ptr(rc), _ptr(s_), _ptr(e_), _ptr(k_), _ptr(nan), _ptr(ztg), _ptr(target),
        _ptr(gs), _ptr(loss), _ptr(lse), _ptr(ent), _ptr(amax), int(ignore_index),
        float(z_loss), _ptr(a), _ptr(fac), _ptr(fix), _ptr(tg),
    )  # fmt: skip
    if gs is not None:

        def grad(p: int, v0: int, v1: int) -> int:
            return lib.logitlab_ce_cols_grad(
                zt.data_ptr(), m, m, v0, v1, cb, _ptr(rb, p * per), _ptr(a), _ptr(fac),
                _ptr(fix), _ptr(tg), _ptr(target), _ptr(gs), int(ignore_index),
            )  # fmt: skip

        each_part(grad)
    return RowOut(loss, lse, ent, amax)


def _ce_rows_native(lib: Any, z: torch.Tensor, job: _Job) -> RowOut:
    n, v = z.shape
    target = job.target.to(torch.int64).contiguous()
    cw = None if job.cw is None else job.cw.to(torch.float32).contiguous()
    gs = None if job.gs is None else job.gs.to(torch.float32).contiguous()
    stats = job.stats
    loss = torch.empty(n, dtype=torch.float32)
    lse = torch.empty(n, dtype=torch.float32)
    ent = torch.empty(n, dtype=torch.float32) if stats else None
    amax = torch.empty(n, dtype=torch.int64) if stats else None
    if n:

        def call(r0: int, r1: int) -> None:
            lib.logitlab_ce_rows(
                _ptr(z, r0),
                r1 - r0,
                _ptr(target, r0),
                _ptr(cw),
                _ptr(gs, r0),
                _ptr(loss, r0),
                _ptr(lse, r0),
                _ptr(ent, r0),
                _ptr(amax, r0),
                v,
                z.stride(0),
                int(job.ignore_index),
                float(job.temperature),
                float(job.softcap or 0.0),
                float(job.eps),
                float(job.zl),
                0,
            )

        _split_rows(n, n * v, call)
    return RowOut(loss, lse, ent, amax)


def _ce_rows_torch(z: torch.Tensor, job: _Job, group: Any = None, offset: int = 0) -> RowOut:
    """The same math with tensor ops; with ``group``, ``z`` is this rank's vocabulary shard
    (global columns ``offset .. offset + V_local``) and every row statistic is all-reduced, so the
    result equals the unsharded computation (Megatron-style vocab parallelism)."""
    if z.dtype in (torch.float16, torch.bfloat16):
        raise TypeError("ce_rows needs a float32 or float64 buffer")
    target, ignore_index, cw, gs = job.target, job.ignore_index, job.cw, job.gs
    temp, softcap, eps, zl, stats = job.temperature, job.softcap, job.eps, job.zl, job.stats
    inv_temp = 1.0 / temp
    n, v = z.shape
    dist: Any = None
    if group is not None:
        import torch.distributed as dist
    ignored = target == ignore_index
    tl = (target.to(torch.int64) - offset).unsqueeze(1)
    local = ~ignored.unsqueeze(1) & (tl >= 0) & (tl < v)
    t = torch.where(local, tl, torch.zeros_like(tl))
    # y = softcap(z), formed out of place: without grad_scale the buffer stays untouched (the
    # in-memory loss passes the caller's logits; scaling them in place changed them)
    y = z
    dcap = None
    if softcap:
        y = z / softcap
        if gs is not None:
            # d softcap(z) / dz = sech^2(z / c) = 4 e / (1 + e)^2, e = exp(-2 |z / c|): the
            # textbook 1 - tanh^2 cancels (relative error eps / sech^2: 4e-3 in float32 at
            # |z| = 5c), this keeps full relative accuracy
            e = y.abs().mul_(-2.0).exp_()
            dcap = (4.0 * e).div_((1.0 + e).square_())
            del e
        y = y.tanh_().mul_(softcap)
    big = torch.iinfo(torch.int64).max
    if v:
        a_loc, k_loc = y.max(dim=1, keepdim=True)
    else:
        a_loc = z.new_full((n, 1), float("-inf"))
        k_loc = torch.zeros((n, 1), dtype=torch.int64, device=z.device)
    a = a_loc.clone()
    if dist is not None:
        dist.all_reduce(a, op=dist.ReduceOp.MAX, group=group)
    # first global argmax: the smallest global index whose logit equals the global max
    cand = torch.where(a_loc == a, k_loc + offset, torch.full_like(k_loc, big))
    if dist is not None:
        dist.all_reduce(cand, op=dist.ReduceOp.MIN, group=group)
    gk = cand
    own = (gk >= offset) & (gk < offset + v)
    k = torch.where(own, gk - offset, torch.zeros_like(gk))
    bad = ~torch.isfinite(a)
    a_safe = torch.where(bad, torch.zeros_like(a), a)
    finite = y > float("-inf")
    # d = (a - y) / T: the difference first, then the division; scaling the logits first would
    # carry eps * |y / T| into every d. exp(-d) multiplies the rounding errors of both steps by
    # d, so they are kept (TwoSum, Dekker's remainder) and put back: exp(-(d + e)) = w (1 - e),
    # as the array-API engine does (a class 30 nats down was 8 ulps off, 58 at T = 0.3)
    d = a_safe - y  # >= 0; +inf on masked classes
    e = decompose.sub_error(torch, a_safe, y)
    if temp != 1.0:
        q = d / temp
        if not decompose.exact_division(temp):
            e.add_(decompose.div_remainder(torch, d, q, temp))
        d = q
    w = torch.exp(-d)  # exactly 0 on masked classes
    w.mul_(e.mul_(-inv_temp).add_(1.0))
    del e
    if v:
        # exclude exactly one maximal entry: s = sum_{i != k} exp(-d_i), log1p(s) keeps tiny s
        w.scatter_(1, k, torch.where(own, torch.zeros_like(a), w.gather(1, k)))
    cols = [w.sum(1, keepdim=True)]
    # a shard without columns (vocab-parallel over more ranks than classes) owns no target
    zero = torch.zeros_like(a)
    cols.append(torch.where(local, d.gather(1, t), zero) if v else zero)
    wrow = cw.to(z.dtype)[t + offset] if cw is not None else torch.ones_like(a)
    cols.append(torch.where(local, wrow, zero))
    if stats:
        cols.append(torch.where(finite, w * d, torch.zeros_like(w)).sum(1, keepdim=True))
    if eps > 0:
        cwr = cw.to(z.dtype)[offset : offset + v].unsqueeze(0) if cw is not None else None
        dd = torch.where(finite, d, torch.zeros_like(d))
        cols.append((dd * cwr if cwr is not None else dd).sum(1, keepdim=True))
        cnt = finite.sum(1, keepdim=True).to(z.dtype)
        cols.append(cnt)
        cols.append((finite * cwr).sum(1, keepdim=True) if cwr is not None else cnt.clone())
    red = torch.cat(cols, 1)
    if dist is not None:
        dist.all_reduce(red, group=group)
    s, dt, wt = red[:, 0:1], red[:, 1:2], red[:, 2:3]
    j = 3
    ent = None
    l1 = torch.log1p(s)
    lse = (a / temp if temp != 1.0 else a) + l1
    if stats:
        ent = (l1 + red[:, j : j + 1] / (1 + s)).squeeze(1)
        j += 1
    loss = (1 - eps) * wt * (dt + l1)
    es = torch.zeros_like(s)
    wsum = torch.zeros_like(s)
    if eps > 0:
        fd, cnt, wsum = red[:, j : j + 1], red[:, j + 1 : j + 2], red[:, j + 2 : j + 3]
        es = eps / cnt
        loss = loss + es * (fd + wsum * l1)
    if zl:
        loss = loss + zl * lse * lse
    ign = ignored.unsqueeze(1)
    neg = bad & (a < 0)  # an all -inf row: lse = -inf, the target has probability 0
    nan = bad & ~(a < 0)
    loss = torch.where(neg, torch.full_like(loss, float("inf")), loss)
    loss = torch.where(nan, torch.full_like(loss, float("nan")), loss)
    loss = torch.where(ign, torch.zeros_like(loss), loss).squeeze(1)
    amax = gk.squeeze(1) if stats else None
    if gs is not None:
        if v:
            w.scatter_(1, k, torch.where(own, torch.ones_like(a), w.gather(1, k)))
        g = gs.to(z.dtype).unsqueeze(1)
        coef = (1 - eps) * wt + es * wsum + 2 * zl * lse
        # z becomes the gradient: gs * (coef * p - alpha) * dy/dz, alpha = target weights
        torch.mul(w, g * coef / (1 + s), out=z)
        if eps > 0:
            sm = es * (cw.to(z.dtype)[offset : offset + v].unsqueeze(0) if cw is not None else 1.0)
            z.sub_(torch.where(finite, g * sm, torch.zeros_like(z)))
        if v:
            z.scatter_add_(1, t, torch.where(local, -(g * (1 - eps) * wt), torch.zeros_like(a)))
        # The target is the row maximum: its entry holds (1 - eps) wt (p_t - 1), and
        # p_t - 1 = -s / (1 + s) exactly, where the subtraction above cancels to 0 on a confident
        # row ([0, -40]: -4.2e-18, not 0).
        tk = local & (gk == t + offset)
        exact = g * ((1 - eps) * wt * -s + (coef - (1 - eps) * wt)) / (1 + s)
        if eps > 0:
            cwt = cw.to(z.dtype)[t + offset] if cw is not None else 1.0
            exact = exact - g * es * cwt
        if v:
            z.scatter_(1, t, torch.where(tk, exact, z.gather(1, t)))
        if temp != 1.0:
            z.div_(temp)
        if dcap is not None:
            z.mul_(dcap)
        z.masked_fill_(ign | (g == 0) | neg, 0.0)
        z.masked_fill_(nan & ~ign, float("nan"))
    return RowOut(loss, lse.squeeze(1), ent, amax)

"""linear_cross_entropy against F.linear + F.cross_entropy, for every option and combination."""

import itertools

import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional

from logitlab._rows.fused import native_available  # noqa: E402
from logitlab.torch import linear_cross_entropy  # noqa: E402

N, D, V = 37, 12, 53
# native_rows: token-major chunks and the row kernel; native_cols: class-major chunks and the
# column kernel wherever the options allow it (softcap, temperature and smoothing fall back to rows)
PATHS = ["native_rows", "native_cols", "torch"] if native_available() else ["torch"]
from logitlab.torch import _linear_ce as _lce  # noqa: E402


@pytest.fixture(params=PATHS)
def path(request, monkeypatch):
    if request.param == "torch":
        monkeypatch.setenv("LOGITLAB_NATIVE", "0")
    else:
        monkeypatch.setenv("LOGITLAB_CHUNK_LAYOUT", request.param.split("_")[1])
    return request.param


def reference(h, w, t, b=None, eps=0.0, zl=0.0, cap=None, T=1.0, reduction="mean"):
    z = F.linear(h, w, b)
    if cap is not None:
        z = cap * torch.tanh(z / cap)
    z = z / T
    valid = t != -100
    per = F.cross_entropy(z, t, label_smoothing=eps, reduction="none")
    per = per + zl * torch.logsumexp(z, -1) ** 2 * valid
    if reduction == "none":
        return per
    if reduction == "sum":
        return per.sum()
    return per.sum() / valid.sum().clamp_min(1)


def make(dtype=torch.float32, seed=0, bias=False, n=N):
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(n, D, generator=g, dtype=torch.float64).to(dtype).requires_grad_()
    w = (torch.randn(V, D, generator=g, dtype=torch.float64) / 2).to(dtype).requires_grad_()
    b = (
        torch.randn(V, generator=g, dtype=torch.float64).to(dtype).requires_grad_()
        if bias
        else None
    )
    t = torch.randint(0, V, (n,), generator=g)
    t[::5] = -100
    return h, w, b, t


def grads(loss, params, seed=1):
    g = torch.Generator().manual_seed(seed)
    up = torch.rand(loss.shape, generator=g, dtype=torch.float64).to(loss.dtype) + 0.5
    return torch.autograd.grad(loss, [p for p in params if p is not None], up)


OPTIONS = list(
    itertools.product([0.0, 0.1], [0.0, 1e-3], [None, 4.0], [1.0, 0.7], ["mean", "sum", "none"])
)


@pytest.mark.parametrize("eps,zl,cap,T,reduction", OPTIONS)
@pytest.mark.parametrize("bias", [False, True])
def test_matches_torch(path, eps, zl, cap, T, reduction, bias):
    h, w, b, t = make(bias=bias)
    kw = dict(label_smoothing=eps, z_loss=zl, softcap=cap, temperature=T, reduction=reduction)
    loss = linear_cross_entropy(h, w, t, bias=b, chunk_size=8, **kw)
    ref = reference(h, w, t, b, eps, zl, cap, T, reduction)
    torch.testing.assert_close(loss, ref, rtol=1e-5, atol=1e-6)
    for a, r in zip(grads(loss, [h, w, b]), grads(ref, [h, w, b]), strict=True):
        torch.testing.assert_close(a, r, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision(dtype):
    h, w, b, t = make(dtype, bias=True)
    loss = linear_cross_entropy(h, w, t, bias=b, label_smoothing=0.1, chunk_size=16)
    assert loss.dtype == dtype
    ref = reference(h, w, t, b, eps=0.1)
    torch.testing.assert_close(loss.float(), ref.float(), rtol=2e-2, atol=2e-2)
    for a, r in zip(grads(loss, [h, w, b]), grads(ref, [h, w, b]), strict=True):
        assert a.dtype == dtype
        torch.testing.assert_close(a.float(), r.float(), rtol=5e-2, atol=5e-3)


def test_gradcheck_float64():
    g = torch.Generator().manual_seed(5)
    h = torch.randn(7, 5, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(11, 5, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.randn(11, generator=g, dtype=torch.float64, requires_grad=True)
    t = torch.tensor([0, 3, -100, 10, 4, 4, 7])
    for kw in [dict(), dict(label_smoothing=0.2, z_loss=0.01, softcap=3.0, temperature=0.8)]:
        for red in ["mean", "none"]:
            assert torch.autograd.gradcheck(
                lambda h, w, b, kw=kw, red=red: linear_cross_entropy(
                    h, w, t, bias=b, chunk_size=4, reduction=red, **kw
                ),
                (h, w, b),
            )


def test_stats(path):
    h, w, b, t = make()
    loss, st = linear_cross_entropy(h, w, t, softcap=3.0, temperature=0.9, return_stats=True)
    z = 3.0 * torch.tanh(F.linear(h, w) / 3.0) / 0.9
    torch.testing.assert_close(st.lse, torch.logsumexp(z, -1))
    ent = -(F.softmax(z, -1) * F.log_softmax(z, -1)).sum(-1)
    torch.testing.assert_close(st.entropy, ent, rtol=1e-5, atol=1e-6)
    assert torch.equal(st.correct, (z.argmax(-1) == t) & (t != -100))
    assert not st.lse.requires_grad
    loss.backward()


def test_stats_accuracy_nontrivial():
    h, w, _, _ = make()
    t = F.linear(h, w).argmax(-1).detach()
    t[0] = (t[0] + 1) % V
    _, st = linear_cross_entropy(h, w, t, return_stats=True)
    assert st.correct.sum() == N - 1 and not st.correct[0]


def test_all_ignored_and_empty(path):
    h, w, b, t = make(bias=True)
    t = torch.full_like(t, -100)
    loss = linear_cross_entropy(h, w, t, bias=b, z_loss=1e-3, label_smoothing=0.1)
    assert loss.item() == 0.0
    for g in torch.autograd.grad(loss, [h, w, b]):
        assert torch.count_nonzero(g) == 0
    e = torch.zeros(0, D, requires_grad=True)
    for red in ["mean", "sum", "none"]:
        out = linear_cross_entropy(e, w, torch.zeros(0, dtype=torch.long), reduction=red)
        assert out.shape == ((0,) if red == "none" else ())
        if red != "none":
            assert out.item() == 0.0
            (gh,) = torch.autograd.grad(out, [e])
            assert gh.shape == (0, D)


def test_batched_shapes():
    h, w, _, t = make(n=36)
    loss = linear_cross_entropy(h.reshape(4, 9, D), w, t.reshape(4, 9), reduction="none")
    assert loss.shape == (4, 9)
    torch.testing.assert_close(loss.reshape(-1), reference(h, w, t, reduction="none"))


@pytest.mark.parametrize("eps", [0.1, 0.0])
def test_deterministic_and_chunk_invariant(path, eps):
    g = torch.Generator().manual_seed(3)
    h = torch.randn(300, 32, generator=g, requires_grad=True)
    w = torch.randn(1000, 32, generator=g, requires_grad=True)
    t = torch.randint(0, 1000, (300,), generator=g)

    def run(c):
        loss = linear_cross_entropy(h, w, t, chunk_size=c, label_smoothing=eps)
        return (loss, *torch.autograd.grad(loss, [h, w]))

    a, b = run(64), run(64)
    for x, y in zip(a, b, strict=True):
        assert torch.equal(x, y)
    base = a[0].item()
    for c in [1, 7, 100, 300, None]:
        out = run(c)
        assert abs(out[0].item() - base) <= 1e-6 * abs(base)
        torch.testing.assert_close(out[1], a[1], rtol=1e-5, atol=1e-7)


def test_only_weight_requires_grad():
    h, w, _, t = make()
    h = h.detach()
    loss = linear_cross_entropy(h, w, t)
    (gw,) = torch.autograd.grad(loss, [w])
    torch.testing.assert_close(gw, torch.autograd.grad(reference(h, w, t), [w])[0])


def test_no_grad_forward():
    h, w, _, t = make()
    with torch.no_grad():
        loss = linear_cross_entropy(h, w, t, label_smoothing=0.1)
    torch.testing.assert_close(loss, reference(h, w, t, eps=0.1).detach())


def test_backward_twice_recomputes():
    h, w, _, t = make()
    loss = linear_cross_entropy(h, w, t, label_smoothing=0.1)
    first = torch.autograd.grad(loss, [h, w], retain_graph=True)
    second = torch.autograd.grad(loss, [h, w], torch.tensor(2.0))
    for a, b in zip(first, second, strict=True):
        torch.testing.assert_close(2 * a, b)


@pytest.mark.parametrize(
    "kwargs,exc,word",
    [
        (dict(hidden=torch.randn(4, 5)), ValueError, "hidden"),
        (dict(weight=torch.randn(7)), ValueError, "weight"),
        (dict(target=torch.tensor([0, 1, 7, 2])), ValueError, "target"),
        (dict(target=torch.tensor([0, 1, -1, 2])), ValueError, "target"),
        (dict(target=torch.zeros(4)), TypeError, "target"),
        (dict(target=torch.zeros(3, dtype=torch.long)), ValueError, "target"),
        (dict(weight=torch.randn(7, 6, dtype=torch.float64)), TypeError, "weight"),
        (dict(hidden=torch.zeros(4, 6, dtype=torch.long)), TypeError, "hidden"),
        (dict(bias=torch.randn(6)), ValueError, "bias"),
        (dict(reduction="avg"), ValueError, "reduction"),
        (dict(temperature=0.0), ValueError, "temperature"),
        (dict(softcap=-1.0), ValueError, "softcap"),
        (dict(label_smoothing=1.5), ValueError, "label_smoothing"),
        (dict(target=torch.zeros(4, dtype=torch.long, device="meta")), ValueError, "target"),
    ],
)
def test_bad_input(kwargs, exc, word):
    args = dict(hidden=torch.randn(4, 6), weight=torch.randn(7, 6), target=torch.zeros(4).long())
    opts = {k: v for k, v in kwargs.items() if k not in args}
    args.update({k: v for k, v in kwargs.items() if k in args})
    with pytest.raises(exc, match=word):
        linear_cross_entropy(args["hidden"], args["weight"], args["target"], **opts)


@pytest.mark.skipif(not native_available(), reason="needs the native kernels")
def test_default_layout_is_class_major_only_for_short_chunks():
    from logitlab._checks import ce_options
    from logitlab.torch._common import LinearCEConfig

    def cfg(layout: str = "auto", **loss: float) -> LinearCEConfig:
        return LinearCEConfig(ce_options(**loss), None, False, None, 0, layout)

    h = torch.zeros(4, 3)
    cut = _lce._COLS_MAX_CHUNK
    assert _lce._class_major(h, cfg(), 512) and _lce._class_major(h, cfg(), cut)
    assert not _lce._class_major(h, cfg(), cut + 1)
    assert not _lce._class_major(h, cfg(softcap=30.0), 512)
    assert not _lce._class_major(h.double(), cfg(), 512)
    assert _lce._class_major(h, cfg("cols"), 4 * cut)
    assert not _lce._class_major(h, cfg("rows"), 64)

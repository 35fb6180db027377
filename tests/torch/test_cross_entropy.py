"""In-memory fused cross_entropy against F.cross_entropy; masked classes; inplace backward."""

import itertools

import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional

from logitlab.torch import cross_entropy  # noqa: E402

C = 29


def make(n=23, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(n, C, generator=g, dtype=torch.float64) * 2).to(dtype)
    t = torch.randint(0, C, (n,), generator=g)
    t[::4] = -100
    w = torch.rand(C, generator=g, dtype=torch.float64).to(dtype) + 0.5
    return x, t, w


@pytest.mark.parametrize(
    "eps,use_w,T,reduction,inplace",
    list(
        itertools.product([0.0, 0.15], [False, True], [1.0, 1.7], ["mean", "sum", "none"], [0, 1])
    ),
)
def test_matches_torch(eps, use_w, T, reduction, inplace):
    x, t, w = make()
    w = w if use_w else None
    a = x.clone().requires_grad_()
    b = x.clone().requires_grad_()
    loss = cross_entropy(
        a * 1.0,
        t,
        label_smoothing=eps,
        weight=w,
        reduction=reduction,
        temperature=T,
        inplace_backward=bool(inplace),
    )
    ref = F.cross_entropy(b / T, t, weight=w, label_smoothing=eps, reduction=reduction)
    torch.testing.assert_close(loss, ref, rtol=1e-5, atol=1e-6)
    up = torch.rand(loss.shape, generator=torch.Generator().manual_seed(1)) + 0.5
    loss.backward(up)
    ref.backward(up)
    torch.testing.assert_close(a.grad, b.grad, rtol=1e-5, atol=1e-7)


def test_inplace_backward_overwrites_logits_buffer():
    x, t, _ = make()
    leaf = x.clone().requires_grad_()
    logits = leaf * 1.0  # a non-leaf buffer, like a model's logits
    ptr = logits.data_ptr()
    loss = cross_entropy(logits, t, inplace_backward=True)
    torch.testing.assert_close(logits.detach(), x)  # forward leaves the logits intact
    loss.backward()
    assert leaf.grad is not None
    xr = x.clone().requires_grad_()
    F.cross_entropy(xr, t).backward()
    torch.testing.assert_close(leaf.grad, xr.grad)
    torch.testing.assert_close(logits.detach(), xr.grad)  # the gradient lives in the logits buffer
    assert logits.data_ptr() == ptr


@pytest.mark.parametrize("aux_first", [True, False])
def test_inplace_backward_second_loss_on_the_same_logits(aux_first):
    # A second loss that saved the logits and whose backward runs after ours would read the
    # overwritten buffer: it must raise, not return a wrong gradient. When its backward runs
    # first (it was created later), the in-place backward is fine and exact.
    x, t, _ = make()
    leaf = x.clone().requires_grad_()
    logits = leaf * 1.0

    def aux(z):
        return z.logsumexp(-1).pow(2).mean()  # saves z for its backward

    if aux_first:
        a = aux(logits)
        loss = a + cross_entropy(logits, t, inplace_backward=True)
        with pytest.raises(RuntimeError, match="modified by an inplace operation"):
            loss.backward()
        return
    loss = cross_entropy(logits, t, inplace_backward=True) + aux(logits)
    loss.backward()
    xr = x.clone().requires_grad_()
    (F.cross_entropy(xr, t) + aux(xr)).backward()
    torch.testing.assert_close(leaf.grad, xr.grad)


def test_masked_classes_smoothing():
    x, t, w = make()
    x[:, 3] = float("-inf")
    x[1, :10] = float("-inf")
    t[t == 3] = 4
    t[1] = 12
    xr = x.double().clone().requires_grad_()
    a = x.clone().requires_grad_()
    loss = cross_entropy(a, t, label_smoothing=0.2, weight=w, reduction="none")
    # reference: smoothing mass over the finite classes only
    finite = torch.isfinite(xr)
    lp = torch.where(finite, F.log_softmax(xr, -1), 0.0)
    valid = t != -100
    tt = torch.where(valid, t, 0)
    wd = w.double()
    nll = -lp.gather(1, tt[:, None])[:, 0] * wd[tt]
    smooth = -(lp * wd * finite).sum(-1) / finite.sum(-1)
    ref = torch.where(valid, 0.8 * nll + 0.2 * smooth, 0.0)
    torch.testing.assert_close(loss.double(), ref, rtol=1e-5, atol=1e-6)
    loss.sum().backward()
    ref.sum().backward()
    assert torch.isfinite(a.grad).all()
    assert (a.grad[~finite] == 0).all()
    torch.testing.assert_close(a.grad.double(), xr.grad, rtol=1e-4, atol=1e-6)


def test_all_ignored_and_empty():
    x, t, w = make()
    a = x.clone().requires_grad_()
    loss = cross_entropy(a, torch.full_like(t, -100), weight=w)
    assert loss.item() == 0.0
    loss.backward()
    assert torch.count_nonzero(a.grad) == 0
    e = torch.zeros(0, C, requires_grad=True)
    out = cross_entropy(e, torch.zeros(0, dtype=torch.long))
    assert out.item() == 0.0
    out.backward()
    assert e.grad.shape == (0, C)


def test_class_axis_and_shapes():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(3, C, 5, generator=g, requires_grad=True)
    t = torch.randint(0, C, (3, 5), generator=g)
    loss = cross_entropy(x, t, axis=1, reduction="none")
    ref = F.cross_entropy(x, t, reduction="none")
    torch.testing.assert_close(loss, ref)
    (ga,) = torch.autograd.grad(loss.sum(), [x])
    (gr,) = torch.autograd.grad(ref.sum(), [x])
    torch.testing.assert_close(ga, gr)
    v = torch.randn(C, requires_grad=True)
    torch.testing.assert_close(
        cross_entropy(v, torch.tensor(3)), F.cross_entropy(v, torch.tensor(3))
    )


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float64])
def test_dtypes(dtype):
    x, t, w = make(dtype=dtype)
    a = x.clone().requires_grad_()
    loss = cross_entropy(a, t, label_smoothing=0.1)
    assert loss.dtype == dtype
    ref = F.cross_entropy(x.double(), t, label_smoothing=0.1)
    tol = 1e-10 if dtype == torch.float64 else 1e-2
    torch.testing.assert_close(loss.double(), ref, rtol=tol, atol=tol)
    loss.backward()
    assert a.grad.dtype == dtype


def test_gradcheck():
    x, t, w = make(n=6, dtype=torch.float64)
    x.requires_grad_()
    assert torch.autograd.gradcheck(
        lambda x: cross_entropy(x, t, weight=w, label_smoothing=0.1, temperature=0.8), (x,)
    )


def test_bad_input():
    x, t, w = make()
    with pytest.raises(ValueError, match="target"):
        cross_entropy(x, torch.full_like(t, C))
    with pytest.raises(TypeError, match="target"):
        cross_entropy(x, t.float())
    with pytest.raises(ValueError, match="weight"):
        cross_entropy(x, t, weight=w[:-1])
    with pytest.raises(TypeError, match="logits"):
        cross_entropy(t, t)
    with pytest.raises(ValueError, match="target"):
        cross_entropy(x, t[:-1])


@pytest.mark.parametrize("inplace", [False, True])
def test_non_finite_rows_gradient(inplace):
    # a NaN or +inf logit makes the whole row's gradient NaN, as in F.cross_entropy; an ignored
    # row stays 0 and a row with -inf entries keeps exact zeros there (one-pass backward)
    x = torch.randn(5, 40)
    x[1, 3] = float("nan")
    x[2, 5] = float("inf")
    x[3, :20] = float("-inf")
    t = torch.tensor([1, 2, 3, 30, -100])
    x[4, 0] = float("nan")
    a = x.clone().requires_grad_()
    (g,) = torch.autograd.grad(cross_entropy(a, t, inplace_backward=inplace), [a])
    xr = x.clone().requires_grad_()
    (gr,) = torch.autograd.grad(F.cross_entropy(xr, t), [xr])
    assert g[1].isnan().all() and g[2].isnan().all()
    assert torch.equal(g[1:3].isnan(), gr[1:3].isnan())
    assert torch.count_nonzero(g[4]) == 0 and torch.count_nonzero(g[3, :20]) == 0
    torch.testing.assert_close(g[[0, 3]], gr[[0, 3]])

"""linear_kl_divergence against F.kl_div on materialised logits."""

import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional

from logitlab.torch import linear_kl_divergence  # noqa: E402


def setup(seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(19, 8, generator=g, dtype=dtype, requires_grad=True)
    w = torch.randn(31, 8, generator=g, dtype=dtype, requires_grad=True)
    b = torch.randn(31, generator=g, dtype=dtype, requires_grad=True)
    th = torch.randn(19, 6, generator=g, dtype=dtype)
    tw = torch.randn(31, 6, generator=g, dtype=dtype)
    mask = torch.rand(19, generator=g) > 0.3
    return h, w, b, th, tw, mask


@pytest.mark.parametrize("direction", ["forward", "reverse"])
@pytest.mark.parametrize("T", [1.0, 2.0])
@pytest.mark.parametrize("teacher_head", [False, True])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_matches_reference(direction, T, teacher_head, reduction):
    h, w, b, th, tw, mask = setup()
    tl = th @ tw.T
    kw = dict(teacher_hidden=th, teacher_weight=tw) if teacher_head else dict(teacher_logits=tl)
    out = linear_kl_divergence(
        h,
        w,
        bias=b,
        temperature=T,
        direction=direction,
        mask=mask,
        reduction=reduction,
        chunk_size=5,
        **kw,
    )
    ls = F.log_softmax((h @ w.T + b) / T, -1)
    lt = F.log_softmax(tl / T, -1)
    if direction == "forward":
        per = (lt.exp() * (lt - ls)).sum(-1)
    else:
        per = (ls.exp() * (ls - lt)).sum(-1)
    per = per * mask
    ref = per.sum() / mask.sum() if reduction == "mean" else per.sum()
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)
    for a, r in zip(
        torch.autograd.grad(out, [h, w, b]), torch.autograd.grad(ref, [h, w, b]), strict=True
    ):
        torch.testing.assert_close(a, r, rtol=1e-4, atol=1e-5)


def test_gradcheck():
    h, w, b, th, tw, mask = setup(dtype=torch.float64)
    tl = th @ tw.T
    for d in ["forward", "reverse"]:
        assert torch.autograd.gradcheck(
            lambda h, w, d=d: linear_kl_divergence(h, w, tl, direction=d, chunk_size=7), (h, w)
        )


def test_bad_input():
    h, w, b, th, tw, mask = setup()
    with pytest.raises(ValueError, match="teacher"):
        linear_kl_divergence(h, w)
    with pytest.raises(ValueError, match="teacher_logits"):
        linear_kl_divergence(h, w, torch.randn(19, 30))
    with pytest.raises(ValueError, match="direction"):
        linear_kl_divergence(h, w, th @ tw.T, direction="both")

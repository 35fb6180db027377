"""The class-major column kernel (``ce_cols``) against the row kernel and float64 truth."""

import math

import pytest

torch = pytest.importorskip("torch")

from logitlab._rows.fused import ce_cols, ce_rows, native_available  # noqa: E402

pytestmark = pytest.mark.skipif(not native_available(), reason="no native kernel")


def both(z, t, gs, **kw):
    """Row kernel on z and column kernel on z^T; gradients returned token-major."""
    a, b = z.clone(), z.t().contiguous()
    return ce_rows(a, t, grad_scale=gs, **kw), a, ce_cols(b, t, grad_scale=gs, **kw), b.t()


@pytest.mark.parametrize("m,v", [(1, 1), (3, 5), (8, 16), (13, 1000), (37, 20011), (100, 40000)])
@pytest.mark.parametrize("zl", [0.0, 1e-3])
def test_agrees_with_row_kernel(m, v, zl):
    # m not a multiple of 8 exercises the tail lanes; 20011 and 40000 classes split into several
    # blocks per thread and two threads' partial sums (merged in class order)
    g = torch.Generator().manual_seed(m * 7 + v)
    z = torch.randn(m, v, generator=g) * 4
    t = torch.randint(0, v, (m,), generator=g)
    t[::4] = -100
    gs = torch.rand(m, generator=g)
    r, gr, c, gc = both(z, t, gs, z_loss=zl, stats=True)
    for x, y in [(r.loss, c.loss), (r.lse, c.lse), (r.entropy, c.entropy), (gr, gc)]:
        torch.testing.assert_close(y, x, rtol=3e-6, atol=1e-7)
    assert torch.equal(r.argmax, c.argmax)
    assert torch.count_nonzero(gc[t == -100]) == 0


def test_non_finite_columns():
    # all -inf: lse -inf, loss inf, zero gradient; NaN anywhere: NaN; +inf: NaN; half -inf:
    # exact zeros there; an ignored NaN column: loss 0 and zero gradient
    v = 3000
    z = torch.randn(6, v) * 3
    z[0] = -math.inf
    z[1, 1234] = math.nan
    z[2, v - 1] = math.inf
    z[3, : v // 2] = -math.inf
    z[4, 17] = math.nan
    t = torch.tensor([5, 6, 7, 2000, -100, 9])
    gs = torch.ones(6)
    r, gr, c, gc = both(z, t, gs, stats=True)
    torch.testing.assert_close(c.loss, r.loss, equal_nan=True)
    torch.testing.assert_close(c.lse, r.lse, equal_nan=True)
    torch.testing.assert_close(gc, gr, equal_nan=True)
    assert c.loss[0] == math.inf and c.lse[0] == -math.inf and torch.count_nonzero(gc[0]) == 0
    assert c.loss[1].isnan() and gc[1].isnan().all() and c.loss[2].isnan()
    assert torch.count_nonzero(gc[3, : v // 2]) == 0 and c.argmax[3] >= v // 2
    assert c.loss[4] == 0 and torch.count_nonzero(gc[4]) == 0


def test_first_maximum_and_no_gradient():
    # ties: the first maximal class wins, across blocks and threads, as torch.argmax
    z = torch.zeros(9, 50000)
    z[:, 49999] = 2.0
    z[:, 30000] = 2.0
    z[:, 7] = 2.0
    t = torch.zeros(9, dtype=torch.int64)
    zt = z.t().contiguous()
    c = ce_cols(zt, t, stats=True)
    assert torch.equal(c.argmax, torch.full((9,), 7))
    truth = torch.logsumexp(z.double(), -1)
    torch.testing.assert_close(c.lse, truth.float(), rtol=2e-7, atol=0)


def test_column_kernel_accuracy_large_vocab():
    # the same bounds as the row kernel's test (tests/torch/test_ce_rows_accuracy.py): lse within
    # 1 float32 ulp of float64 truth at 200k classes, the gradient's probabilities within 2e-6
    # relative (the column kernel rounds once more for blocks read before the final maximum)
    g = torch.Generator().manual_seed(5)
    z = torch.randn(20, 200_000, generator=g) * 3
    t = torch.randint(0, 200_000, (20,), generator=g)
    zt = z.t().contiguous()
    c = ce_cols(zt, t, grad_scale=torch.ones(20))
    z64 = z.double()
    truth = torch.logsumexp(z64, -1)
    t32 = truth.float()
    ulp = (torch.nextafter(t32, torch.tensor(math.inf)) - t32).double()
    assert ((c.lse.double() - truth).abs() / ulp).max().item() <= 1
    nll = truth - z64.gather(1, t[:, None]).squeeze(1)
    assert ((c.loss.double() - nll).abs() / nll.abs()).max().item() < 5e-7
    p = torch.softmax(z64, -1)
    keep = (p > 1e-30) & (torch.arange(200_000) != t[:, None])
    rel = ((zt.t().double() - p).abs() / p)[keep]
    assert rel.max().item() < 2e-6
    assert rel.median().item() < 5e-7


def test_tiny_loss_keeps_its_digits():
    # a confident correct prediction: loss = log1p(sum of tiny terms) ~ 4e-18, which a sum that
    # included the maximum's 1 would round to 0
    z = torch.zeros(3, 4096)
    z[:, 0] = 40.0
    t = torch.zeros(3, dtype=torch.int64)
    c = ce_cols(z.t().contiguous(), t)
    truth = 4095 * math.exp(-40.0)
    assert abs(c.loss[0].item() - truth) <= 1e-6 * truth

"""Second (and higher) derivatives of the exact core: torch's ``gradcheck`` and ``gradgradcheck``
in float64 for every differentiable function and option, the issue-13 repro against
``F.cross_entropy``, and the edges (masked classes, fully masked rows, ``+inf`` and NaN rows) at
first and second order.

Masked ``-inf`` entries stay in the checked inputs: finite differences cannot move them
(``-inf + h = -inf``), so the numerical derivative there is 0, and the analytical one must be too.
Functions whose output is ``-inf`` at a masked entry (log-softmax) are checked on their finite
outputs only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

import logitlab as ll

torch = pytest.importorskip("torch")
F = torch.nn.functional
from torch.autograd import gradcheck, gradgradcheck  # noqa: E402

NEG = float("-inf")
D = torch.float64
g = torch.Generator().manual_seed(13)


def _x(*shape: int, scale: float = 1.0) -> Any:
    return (scale * torch.randn(*shape, dtype=D, generator=g)).requires_grad_()


def _p(*shape: int) -> Any:
    return torch.softmax(torch.randn(*shape, dtype=D, generator=g), -1).requires_grad_()


def _masked(*shape: int) -> Any:
    """Logits with masked classes: row 0 has two, row 1 one, the others none."""
    x = torch.randn(*shape, dtype=D, generator=g)
    x[0, 1] = NEG
    x[0, 3] = NEG
    x[1, 0] = NEG
    return x.requires_grad_()


def _ties(*shape: int) -> Any:
    x = torch.randn(*shape, dtype=D, generator=g)
    x[0, :2] = 1.5  # a tie at the maximum
    x[1, 1:3] = x[1].max().item()
    return x.requires_grad_()


def _rand(*shape: int) -> Any:
    return torch.rand(*shape, dtype=D, generator=g).requires_grad_()


def _w(n: int) -> Any:
    return (torch.rand(n, dtype=D, generator=g) + 0.2).requires_grad_()


T4 = torch.tensor([0, 3, 1, 2])
T4I = torch.tensor([0, -100, 1, 2])  # one ignored row
W5 = torch.tensor([0.5, 1.5, 1.0, 2.0, 0.7], dtype=D)
T_MASK = torch.tensor([0, 2, 4, 1])  # targets on unmasked classes of _masked(4, 5)


def _finite_lsm(x: Any, **kw: Any) -> Any:
    y = ll.log_softmax(x, **kw)
    return y[torch.isfinite(y)]


Case = tuple[str, Callable[..., Any], Callable[[], tuple[Any, ...]]]

CORE: list[Case] = [
    # log-sum-exp
    ("lse", lambda x: ll.logsumexp(x), lambda: (_x(3, 4),)),
    ("lse-axis0-keepdims", lambda x: ll.logsumexp(x, 0, True), lambda: (_x(3, 4),)),
    ("lse-all", lambda x: ll.logsumexp(x, axis=None), lambda: (_x(3, 4),)),
    ("lse-all-keepdims", lambda x: ll.logsumexp(x, None, True), lambda: (_x(3, 4),)),
    ("lse-masked", lambda x: ll.logsumexp(x), lambda: (_masked(4, 5),)),
    ("lse-ties", lambda x: ll.logsumexp(x), lambda: (_ties(3, 4),)),
    ("lse-1d", lambda x: ll.logsumexp(x), lambda: (_x(5),)),
    ("lse-b", lambda x, b: ll.logsumexp(x, b=b), lambda: (_x(3, 4), _w(4))),
    (
        "lse-b-signed-zero-entries",
        lambda x, b: ll.logsumexp(x, b=b, return_sign=True)[0],
        lambda: (_x(3, 4), torch.tensor([[0.0, -0.5, 0.3, -0.2]] * 3, dtype=D).requires_grad_()),
    ),
    (
        "lse-b-all-keepdims",
        lambda x, b: ll.logsumexp(x, None, True, b=b),
        lambda: (_x(3, 4), _w(4)),
    ),
    ("lse-return-sign", lambda x: ll.logsumexp(x, 0, return_sign=True)[0], lambda: (_x(3, 4),)),
    ("lse-b-masked", lambda x: ll.logsumexp(x, b=W5), lambda: (_masked(4, 5),)),
    # softmax / log-softmax
    ("softmax", lambda x: ll.softmax(x), lambda: (_x(3, 4),)),
    ("softmax-T2-axis0", lambda x: ll.softmax(x, 0, 2.0), lambda: (_x(3, 4),)),
    ("softmax-T0.3", lambda x: ll.softmax(x, temperature=0.3), lambda: (_x(3, 4),)),
    ("softmax-masked", lambda x: ll.softmax(x), lambda: (_masked(4, 5),)),
    ("softmax-ties", lambda x: ll.softmax(x), lambda: (_ties(3, 4),)),
    ("softmax-3d", lambda x: ll.softmax(x, 1), lambda: (_x(2, 3, 2),)),
    ("log_softmax", lambda x: ll.log_softmax(x), lambda: (_x(3, 4),)),
    ("log_softmax-T0.5", lambda x: ll.log_softmax(x, temperature=0.5), lambda: (_x(3, 4),)),
    ("log_softmax-axis0-T3", lambda x: ll.log_softmax(x, 0, 3.0), lambda: (_x(3, 4),)),
    ("log_softmax-masked", _finite_lsm, lambda: (_masked(4, 5),)),
    ("log_softmax-ties", lambda x: ll.log_softmax(x), lambda: (_ties(3, 4),)),
    # entropy
    ("entropy-logits", lambda x: ll.entropy(logits=x), lambda: (_x(3, 4),)),
    (
        "entropy-logits-axis0-base2",
        lambda x: ll.entropy(logits=x, axis=0, base=2),
        lambda: (_x(3, 4),),
    ),
    ("entropy-logits-masked", lambda x: ll.entropy(logits=x), lambda: (_masked(4, 5),)),
    ("entropy-logits-ties", lambda x: ll.entropy(logits=x), lambda: (_ties(3, 4),)),
    ("entropy-probs", lambda p: ll.entropy(probs=p), lambda: (_p(3, 4),)),
    ("entropy-probs-base2", lambda p: ll.entropy(probs=p, base=2.0), lambda: (_p(3, 4),)),
    # cross-entropy, class targets (2-D: the fused path ll.cross_entropy routes to)
    ("ce", lambda x: ll.cross_entropy(x, T4), lambda: (_x(4, 5),)),
    ("ce-weight", lambda x: ll.cross_entropy(x, T4, weight=W5), lambda: (_x(4, 5),)),
    ("ce-smooth", lambda x: ll.cross_entropy(x, T4, label_smoothing=0.2), lambda: (_x(4, 5),)),
    ("ce-ignore", lambda x: ll.cross_entropy(x, T4I), lambda: (_x(4, 5),)),
    ("ce-T", lambda x: ll.cross_entropy(x, T4, temperature=1.7), lambda: (_x(4, 5),)),
    ("ce-sum", lambda x: ll.cross_entropy(x, T4, reduction="sum"), lambda: (_x(4, 5),)),
    ("ce-none", lambda x: ll.cross_entropy(x, T4I, reduction="none"), lambda: (_x(4, 5),)),
    (
        "ce-all-options",
        lambda x: ll.cross_entropy(
            x, T4I, weight=W5, label_smoothing=0.3, temperature=0.7, reduction="mean"
        ),
        lambda: (_x(4, 5),),
    ),
    (
        "ce-masked-smooth",
        lambda x: ll.cross_entropy(x, T_MASK, label_smoothing=0.2, weight=W5),
        lambda: (_masked(4, 5),),
    ),
    ("ce-ties", lambda x: ll.cross_entropy(x, torch.tensor([0, 1, 2])), lambda: (_ties(3, 4),)),
    ("ce-all-ignored", lambda x: ll.cross_entropy(x, torch.full((4,), -100)), lambda: (_x(4, 5),)),
    # the general (non-fused) path: class axis 0, 3-D, 1-D
    ("ce-axis0", lambda x: ll.cross_entropy(x.T, T4, axis=0), lambda: (_x(4, 5),)),
    (
        "ce-3d-axis1-all-options",
        lambda x: ll.cross_entropy(
            x,
            torch.tensor([[0, 2], [-100, 1]]),
            axis=1,
            weight=W5[:3],
            label_smoothing=0.1,
            temperature=2.0,
        ),
        lambda: (_x(2, 3, 2),),
    ),
    (
        "ce-3d-none",
        lambda x: ll.cross_entropy(x, torch.tensor([[0, 2], [1, 1]]), axis=1, reduction="none"),
        lambda: (_x(2, 3, 2),),
    ),
    ("ce-1d", lambda x: ll.cross_entropy(x, torch.tensor(2)), lambda: (_x(5),)),
    # probability targets: gradient w.r.t. logits and target
    (
        "ce-soft",
        lambda x, y: ll.cross_entropy(x, y),
        lambda: (_x(4, 5), _p(4, 5)),
    ),
    (
        "ce-soft-all-options",
        lambda x, y: ll.cross_entropy(
            x, y, weight=W5, label_smoothing=0.2, temperature=1.3, reduction="sum"
        ),
        lambda: (_x(4, 5), _p(4, 5)),
    ),
    (
        "ce-soft-axis0-none",
        lambda x, y: ll.cross_entropy(x.T, y.T, axis=0, reduction="none"),
        lambda: (_x(4, 5), _p(4, 5)),
    ),
    # class weights as a differentiable input
    ("ce-weight-grad", lambda x, w: ll.cross_entropy(x, T4I, weight=w), lambda: (_x(4, 5), _w(5))),
    (
        "ce-weight-grad-smooth-sum",
        lambda x, w: ll.cross_entropy(x, T4, weight=w, label_smoothing=0.2, reduction="sum"),
        lambda: (_x(4, 5), _w(5)),
    ),
    (
        "ce-weight-grad-3d-none",
        lambda x, w: ll.cross_entropy(
            x, torch.tensor([[0, 2], [-100, 1]]), axis=1, weight=w, reduction="none"
        ),
        lambda: (_x(2, 3, 2), _w(3)),
    ),
    (
        "ce-weight-grad-soft",
        lambda x, y, w: ll.cross_entropy(x, y, weight=w, label_smoothing=0.1),
        lambda: (_x(4, 5), _p(4, 5), _w(5)),
    ),
    ("perplexity", lambda x: ll.perplexity(x, T4I), lambda: (_x(4, 5),)),
    ("perplexity-T", lambda x: ll.perplexity(x, T4, temperature=2.0), lambda: (_x(4, 5),)),
    # binary cross-entropy
    (
        "bce-logits",
        lambda x, y: ll.binary_cross_entropy_with_logits(x, y),
        lambda: (_x(3, 4, scale=3.0), _rand(3, 4)),
    ),
    (
        "bce-logits-weight-posweight",
        lambda x, y, w, pw: ll.binary_cross_entropy_with_logits(x, y, w, pw, reduction="sum"),
        lambda: (_x(3, 4, scale=3.0), _rand(3, 4), _w(4), _w(4)),
    ),
    (
        "bce-logits-weight-full-none",
        lambda x, y, w: ll.binary_cross_entropy_with_logits(x, y, w, reduction="none"),
        lambda: (_x(3, 4), _rand(3, 4), _rand(3, 4)),
    ),
    (
        "bce-probs",
        lambda p, y: ll.binary_cross_entropy(p, y),
        lambda: (torch.sigmoid(_x(3, 4)).detach().requires_grad_(), _rand(3, 4)),
    ),
    (
        "bce-probs-weight-sum",
        lambda p, y, w: ll.binary_cross_entropy(p, y, w, reduction="sum"),
        lambda: (torch.sigmoid(_x(3, 4)).detach().requires_grad_(), _rand(3, 4), _w(4)),
    ),
    # KL and JS, every combination of probabilities and logits
    (
        "kl-logits",
        lambda a, b: ll.kl_divergence(p_logits=a, q_logits=b),
        lambda: (_x(3, 4), _x(3, 4)),
    ),
    (
        "kl-logits-near",
        lambda a, b: ll.kl_divergence(p_logits=a, q_logits=b),
        lambda: (_x(3, 4), _x(3, 4, scale=0.1)),
    ),
    (
        "kl-probs",
        lambda a, b: ll.kl_divergence(a, b, reduction="mean"),
        lambda: (_p(3, 4), _p(3, 4)),
    ),
    (
        "kl-p-probs-q-logits",
        lambda a, b: ll.kl_divergence(a, q_logits=b),
        lambda: (_p(3, 4), _x(3, 4)),
    ),
    (
        "kl-p-logits-q-probs",
        lambda a, b: ll.kl_divergence(p_logits=a, q=b),
        lambda: (_x(3, 4), _p(3, 4)),
    ),
    (
        "kl-logits-masked-both",
        lambda a, b: ll.kl_divergence(p_logits=a, q_logits=b, axis=-1, base=2),
        lambda: (_masked(4, 5), _masked(4, 5)),
    ),
    (
        "kl-axis0-sum",
        lambda a, b: ll.kl_divergence(p_logits=a, q_logits=b, axis=0, reduction="sum"),
        lambda: (_x(3, 4), _x(3, 4)),
    ),
    (
        "js-logits",
        lambda a, b: ll.js_divergence(p_logits=a, q_logits=b),
        lambda: (_x(3, 4), _x(3, 4)),
    ),
    ("js-probs", lambda a, b: ll.js_divergence(a, b), lambda: (_p(3, 4), _p(3, 4))),
    (
        "js-mixed",
        lambda a, b: ll.js_divergence(a, q_logits=b, base=2),
        lambda: (_p(3, 4), _x(3, 4)),
    ),
    (
        "js-p-logits-q-probs",
        lambda a, b: ll.js_divergence(p_logits=a, q=b, reduction="sum"),
        lambda: (_x(3, 4), _p(3, 4)),
    ),
    (
        "js-masked",
        lambda a, b: ll.js_divergence(p_logits=a, q_logits=b),
        lambda: (_masked(4, 5), _x(4, 5)),
    ),
]


FAST = True


def _check(fn: Callable[..., Any], inputs: tuple[Any, ...]) -> None:
    # gradcheck perturbs probabilities off the simplex: value checks off for these tests only
    with ll.validation(False):
        assert gradcheck(fn, inputs, eps=1e-6, atol=1e-8, rtol=1e-6, fast_mode=FAST)
        assert gradgradcheck(fn, inputs, eps=1e-6, atol=1e-7, rtol=1e-5, fast_mode=FAST)


@pytest.mark.parametrize(("name", "fn", "make"), CORE, ids=[c[0] for c in CORE])
def test_gradcheck_and_gradgradcheck(
    name: str, fn: Callable[..., Any], make: Callable[[], tuple[Any, ...]]
) -> None:
    _check(fn, make())


# --------------------------------------------------------------------------- issue 13 repros

X13 = [[0.3, -1.2, 0.8, 0.1], [1.5, 0.2, -0.4, 0.9], [-0.7, 0.4, 1.1, -0.2]]
T13 = torch.tensor([0, 3, 1])


def _penalty(loss_fn: Callable[[Any], Any]) -> Any:
    """The issue's gradient penalty: d/dx (loss + |d loss / dx|^2)."""
    x = torch.tensor(X13, dtype=D, requires_grad=True)
    loss = loss_fn(x)
    (gx,) = torch.autograd.grad(loss, x, create_graph=True)
    (loss + (gx**2).sum()).backward()
    return x.grad


@pytest.mark.parametrize(
    "route",
    ["ll-fused-2d", "ll-core-3d", "logitlab.torch"],
)
def test_issue13_gradient_penalty_matches_torch(route: str) -> None:
    fns = {
        "ll-fused-2d": lambda x: ll.cross_entropy(x, T13),
        "ll-core-3d": lambda x: ll.cross_entropy(x.T[None], T13[None], axis=1),
        "logitlab.torch": lambda x: __import__("logitlab.torch").torch.cross_entropy(x, T13),
    }
    ref = _penalty(lambda x: F.cross_entropy(x, T13))
    # the issue's numbers (F.cross_entropy): x.grad[0] = [-0.290217, 0.020228, 0.187812, 0.082178]
    assert ref[0].tolist() == pytest.approx([-0.290217, 0.020228, 0.187812, 0.082178], abs=1e-6)
    torch.testing.assert_close(_penalty(fns[route]), ref, rtol=1e-12, atol=1e-15)


def test_issue13_fully_masked_softmax_row_gets_zero_gradient() -> None:
    rows = [[NEG, NEG, NEG], [0.5, NEG, 1.0]]
    up = torch.tensor([[1.0, 2.0, 4.0], [1.0, 2.0, 4.0]])
    x = torch.tensor(rows, requires_grad=True)
    ll.softmax(x, axis=1).backward(up)
    assert x.grad[0].tolist() == [0.0, 0.0, 0.0]  # was [-0.444, -0.111, 0.556]
    xr = torch.tensor(rows[1:], requires_grad=True)  # torch is right on a partly masked row
    torch.softmax(xr, 1).backward(up[1:])
    torch.testing.assert_close(x.grad[1:], xr.grad, rtol=1e-6, atol=0)
    x = torch.tensor(rows, requires_grad=True)
    ll.logsumexp(x, axis=1).sum().backward()
    assert x.grad[0].tolist() == [0.0, 0.0, 0.0]  # was 1/3 each
    torch.testing.assert_close(x.grad[1:], torch.softmax(xr.detach(), 1))


# --------------------------------------------------------------------------- edges, both orders

Q3 = torch.tensor([[0.2, -0.4, 1.0]] * 3, dtype=D)
C3 = torch.tensor([1.0, -2.0, 0.5], dtype=D)
T_EDGE = torch.tensor([2, 0, 2])

EDGE_FNS: dict[str, Callable[[Any], Any]] = {
    "logsumexp": lambda x: ll.logsumexp(x),
    "softmax": lambda x: ll.softmax(x) * C3,
    "log_softmax": lambda x: torch.where(torch.isinf(y := ll.log_softmax(x)), 0.0, y) * C3,
    "entropy": lambda x: ll.entropy(logits=x),
    "cross_entropy-fused": lambda x: ll.cross_entropy(x, T_EDGE, reduction="none"),
    "cross_entropy-core": lambda x: ll.cross_entropy(
        x[None].transpose(1, 2), T_EDGE[None], axis=1, reduction="none", label_smoothing=0.1
    ),
    "cross_entropy-soft": lambda x: ll.cross_entropy(
        x, torch.tensor([[0.0, 0.3, 0.7]] * 3, dtype=D), reduction="none"
    ),
    "kl-p": lambda x: ll.kl_divergence(p_logits=x, q_logits=Q3),
    "kl-q": lambda x: ll.kl_divergence(p_logits=Q3, q_logits=x),
    "js-p": lambda x: ll.js_divergence(p_logits=x, q_logits=Q3),
    "js-q": lambda x: ll.js_divergence(p_logits=Q3, q_logits=x),
}


def _two_orders(fn: Callable[[Any], Any], rows: list[list[float]]) -> tuple[Any, Any, Any]:
    """(value, gradient of sum(value), Hessian-vector product with a fixed v)."""
    x = torch.tensor(rows, dtype=D, requires_grad=True)
    y = fn(x)
    (g1,) = torch.autograd.grad(y.sum(), x, create_graph=True)
    v = torch.tensor([[0.7, -1.3, 0.4]] * len(rows), dtype=D)
    (g2,) = torch.autograd.grad((g1 * v).sum(), x, allow_unused=True)
    return y.detach(), g1.detach(), torch.zeros_like(x) if g2 is None else g2


@pytest.mark.parametrize("name", list(EDGE_FNS))
def test_masked_entries_and_rows_zero_at_both_orders(name: str) -> None:
    # row 0 fully masked, row 1 one masked class, row 2 none (the target of CE is unmasked)
    rows = [[NEG, NEG, NEG], [0.5, NEG, 1.0], [0.3, -0.2, 0.9]]
    _, g1, g2 = _two_orders(EDGE_FNS[name], rows)
    for g_ in (g1, g2):
        assert g_[0].tolist() == [0.0, 0.0, 0.0], name
        assert g_[1, 1].item() == 0.0, name
        assert torch.isfinite(g_[1:]).all(), name
    assert g1[2].abs().sum() > 0


@pytest.mark.parametrize("name", list(EDGE_FNS))
def test_nan_row_gives_nan_gradient_at_both_orders(name: str) -> None:
    rows = [[float("nan"), 0.2, 1.0], [0.5, NEG, 1.0], [0.3, -0.2, 0.9]]
    y, g1, g2 = _two_orders(EDGE_FNS[name], rows)
    assert torch.isnan(y.reshape(3, -1)[0]).all()
    assert torch.isnan(g1[0]).all() and torch.isnan(g2[0]).all(), name
    assert torch.isfinite(g1[1:]).all() and torch.isfinite(g2[1:]).all(), name


def test_plus_inf_rows_take_the_forward_limit() -> None:
    # lse of [inf, 0, -inf] is inf with d/dx -> [1, 0, 0] (the limit of softmax([M, 0, -inf]));
    # [inf, inf, 1] shares the mass, as the forward does. No NaN at either order.
    rows = [[float("inf"), 0.0, NEG], [float("inf"), float("inf"), 1.0]]
    _, g1, g2 = _two_orders(EDGE_FNS["logsumexp"], rows)
    limit = torch.softmax(torch.tensor([[1e3, 0.0, NEG], [1e3, 1e3, 1.0]], dtype=D), 1)
    assert torch.equal(g1, limit)
    assert torch.isfinite(g2).all() and g2[0].tolist() == [0.0, 0.0, 0.0]
    # the fused cross-entropy returns NaN for such rows (as torch does): so are its gradients
    x = torch.tensor(rows, dtype=D, requires_grad=True)
    loss = ll.cross_entropy(x, torch.tensor([0, 1]), reduction="none")
    assert torch.isnan(loss).all()
    (gx,) = torch.autograd.grad(loss.sum(), x, create_graph=True)
    assert torch.isnan(gx).all()


def test_logsumexp_b_ties_and_masked_rows() -> None:
    # autograd through the weighted forward's argmax split ties unevenly ([0.234, 0.703, ...])
    # and gave a row of only -inf 1/3 each
    x = torch.tensor([[1.0, 1.0, -1.0], [NEG, NEG, NEG]], dtype=D, requires_grad=True)
    b = torch.ones(2, 3, dtype=D)
    (gx,) = torch.autograd.grad(ll.logsumexp(x, b=b).sum(), x)
    torch.testing.assert_close(gx[0], torch.softmax(x.detach()[0], 0), rtol=1e-15, atol=0)
    assert gx[1].tolist() == [0.0, 0.0, 0.0]
    # a dropped entry (b = 0) still has d/db = e^x / S; a negative sum without return_sign is NaN
    x = torch.tensor([[0.0, -800.0], [0.5, 0.2]], dtype=D, requires_grad=True)
    b = torch.tensor([[0.0, 1.0], [1.0, -2.0]], dtype=D, requires_grad=True)
    out = ll.logsumexp(x, b=b)
    gx, gb = torch.autograd.grad(out.sum(), (x, b))
    assert out[0].item() == -800.0 and gx[0].tolist() == [0.0, 1.0] and gb[0, 1].item() == 1.0
    assert gb[0, 0].item() == float("inf")  # e^800 / e^-800 overflows, as it should
    assert torch.isnan(out[1]) and torch.isnan(gx[1]).all() and torch.isnan(gb[1]).all()


def test_fast_path_declines_tensors_in_a_graph() -> None:
    # issue 13 item 2: the backward ran the out= kernels of the row engine's chunked backend
    # under grad mode ("sub(): functions with out=... arguments don't support automatic
    # differentiation")
    from logitlab import _rows

    x = torch.randn(3, 5, dtype=D, requires_grad=True)
    assert _rows.backend(x, 1) == "xp"
    with torch.no_grad():
        assert _rows.backend(x, 1) != "xp"
    xp = __import__("array_api_compat").array_namespace(x)
    torch.testing.assert_close(_rows.softmax(xp, x, 1), torch.softmax(x, 1))
    for fn in (
        ll.softmax,
        ll.log_softmax,
        ll.logsumexp,
        lambda v: ll.entropy(logits=v),
        lambda v: ll.kl_divergence(p_logits=v, q_logits=v.detach().flip(1)),
    ):
        (gx,) = torch.autograd.grad(fn(x).sum(), x, create_graph=True)
        assert gx.requires_grad

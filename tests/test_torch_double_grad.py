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

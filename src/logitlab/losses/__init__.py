r"""Entropy, cross-entropy, binary cross-entropy, KL and JS divergence, perplexity.

Every function here is one implementation over the Python array API built on the decomposition of
:mod:`logitlab.special` (row maximum ``a``, distances ``d_i = a - x_i >= 0``, ``s`` = the sum of
``exp(-d_i)`` over all but one maximal entry). Each quantity is written as a sum of non-negative
terms so that no subtraction can cancel:

* entropy from logits: :math:`H = \operatorname{log1p}(s) + \frac{\sum_i d_i e^{-d_i}}{1 + s}`
  (the textbook ``lse - sum p x`` returns 2.73 instead of 0.582 for ``[1e4, 1e4 - 1]`` in float32)
* cross-entropy: :math:`-\log p_t = d_t + \operatorname{log1p}(s)`
* KL: :math:`\sum_i q_i\, h(u_i)` with :math:`u_i = \log(p_i / q_i)` and
  :math:`h(u) = u e^u - \operatorname{expm1}(u) \ge 0`, summed as a power series for
  :math:`|u| < 1` (relative accuracy when ``p`` is close to ``q``).

Each function checks and converts its arguments, then computes with :mod:`logitlab._formulas`
and :mod:`logitlab._rows`; torch tensors that require grad go through
:mod:`logitlab.torch._autograd`, whose backward passes
use the closed-form gradients (``softmax - target``, ...) with zeros wherever a logit is ``-inf``,
written with differentiable pieces so that ``create_graph=True`` gives exact derivatives of every
order (gradient penalties, Hessian-vector products).

References:
    Blanchard, Higham & Higham, "Accurately computing the log-sum-exp and softmax functions",
    IMA J. Numer. Anal. 41(4), 2021.

    C. E. Shannon, "A mathematical theory of communication", Bell Syst. Tech. J. 27, 1948.

    S. Kullback, R. A. Leibler, "On information and sufficiency", Ann. Math. Statist. 22, 1951.
"""

from logitlab.losses._binary import binary_cross_entropy, binary_cross_entropy_with_logits
from logitlab.losses._cross_entropy import cross_entropy, perplexity
from logitlab.losses._divergence import js_divergence, kl_divergence
from logitlab.losses._entropy import entropy

__all__ = [
    "entropy",
    "cross_entropy",
    "binary_cross_entropy",
    "binary_cross_entropy_with_logits",
    "kl_divergence",
    "js_divergence",
    "perplexity",
]

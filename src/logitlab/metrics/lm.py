r"""Sliding-window perplexity of a local Hugging Face causal language model.

Each window of ``context`` tokens advances by ``stride``; only the tokens not scored by an earlier
window are scored (the rest is context), so every token is scored exactly once with up to
``context - stride`` tokens of left context. Per-token negative log-likelihoods come from
logitlab's exact cross-entropy and are summed in float64, so the results do not depend on the
batch size.

Reported, with the definitions of lm-evaluation-harness:

.. math::

    \mathrm{PPL}_{tok} = \exp\frac{\sum \mathrm{NLL}}{N_{tok}},\quad
    \mathrm{bpb} = \frac{\sum \mathrm{NLL}}{N_{bytes} \ln 2},\quad
    \mathrm{PPL}_{word} = \exp\frac{\sum \mathrm{NLL}}{N_{words}},

per document and in total, with a bootstrap confidence interval of the token perplexity over
documents.

References:
    Hugging Face Transformers documentation, "Perplexity of fixed-length models".

    L. Gao et al., "A framework for few-shot language model evaluation" (lm-evaluation-harness),
    2021.

    O. Press, N. A. Smith, M. Lewis, "Train short, test long", ICLR 2022.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "DocumentPerplexity",
    "LMPerplexity",
    "sliding_window_nll",
    "lm_perplexity",
    "load_local_model",
]


@dataclass
class DocumentPerplexity:
    tokens: int
    bytes: int
    words: int
    nll: float

    @property
    def token_perplexity(self) -> float:
        return math.exp(self.nll / self.tokens) if self.tokens else math.nan

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["token_perplexity"] = self.token_perplexity
        return d


@dataclass
class LMPerplexity:
    token_perplexity: float
    bits_per_byte: float
    word_perplexity: float
    tokens: int
    bytes: int
    words: int
    nll_sum: float
    ci95: tuple[float, float]
    context: int
    stride: int
    documents: list[DocumentPerplexity] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        d = {k: getattr(self, k) for k in self.__dataclass_fields__ if k != "documents"}
        d["ci95"] = list(self.ci95)
        d["documents"] = [doc.to_dict() for doc in self.documents]
        return d


def load_local_model(model_dir: str | Path) -> tuple[Any, Any]:
    """Load a causal LM and its tokenizer from a local directory only (never a hub download).

    Raises:
        FileNotFoundError: the directory (or its config) does not exist.
    """
    p = Path(model_dir)
    if not p.is_dir():
        raise FileNotFoundError(f"--model {p}: no such directory (models are never downloaded)")
    if not (p / "config.json").exists():
        raise FileNotFoundError(f"--model {p}: no config.json; not a Hugging Face model directory")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(str(p), local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(str(p), local_files_only=True)
    except Exception as exc:  # transformers raises many types; report one line, never a trace
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"--model {p}: cannot load a causal LM and tokenizer: {msg}") from exc
    model.eval()
    return model, tok


def max_positions(model: Any) -> int | None:
    """The longest input the model accepts (``n_positions``/``max_position_embeddings``)."""
    cfg = getattr(model, "config", None)
    for name in ("n_positions", "max_position_embeddings", "n_ctx", "max_sequence_length"):
        v = getattr(cfg, name, None)
        if isinstance(v, int) and v > 0:
            return v
    return None


def sliding_window_nll(
    model: Any,
    ids: list[int],
    *,
    context: int,
    stride: int,
    batch_size: int = 4,
    bos_id: int | None = None,
) -> tuple[float, int]:
    """Sum of NLL over the scored tokens of one document, and their number.

    With ``bos_id`` the document is prefixed by it, so that its first token is scored too.
    """
    import torch

    from logitlab.losses import cross_entropy

    if not 0 < stride <= context:
        raise ValueError(f"stride must be in [1, context={context}], got {stride}")
    seq = ([bos_id] if bos_id is not None else []) + list(ids)
    n = len(seq)
    windows: list[tuple[int, int, int]] = []  # (begin, end, number of new tokens to score)
    prev_end = 0
    for begin in range(0, max(n - 1, 1), stride):
        end = min(begin + context, n)
        new = end - max(prev_end, begin + 1)  # the first position of a window has no target
        if new > 0:
            windows.append((begin, end, new))
        prev_end = end
        if end == n:
            break
    total, count = 0.0, 0
    device = next(model.parameters()).device
    i = 0
    while i < len(windows):
        length = windows[i][1] - windows[i][0]
        batch = [w for w in windows[i : i + batch_size] if w[1] - w[0] == length]
        i += len(batch)
        inp = torch.tensor([seq[b:e] for b, e, _ in batch], device=device)
        with torch.no_grad():
            logits = model(inp).logits[:, :-1].float()
        tgt = inp[:, 1:].clone()
        for r, (_, _, new) in enumerate(batch):
            tgt[r, : tgt.shape[1] - new] = -100
        nll = cross_entropy(logits, tgt, reduction="none")
        total += float(nll.double().sum())
        count += int((tgt != -100).sum())
    return total, count


def _count_words(doc: str) -> int:
    r"""Words as lm-evaluation-harness counts them (wikitext task): ``len(re.split(r"\s+", doc))``.

    Example:
        >>> _count_words("a b  c"), _count_words(" a ")
        (3, 3)
    """
    return len(re.split(r"\s+", doc))


def _documents(text: str) -> list[str]:
    docs = [d for d in text.split("\n\n") if d.strip()]
    return docs or ([text] if text else [])


def lm_perplexity(
    model: Any,
    tokenizer: Any,
    text: str,
    *,
    context: int = 1024,
    stride: int = 512,
    batch_size: int = 4,
    bos: bool = False,
    bootstrap: int = 1000,
    seed: int = 0,
) -> LMPerplexity:
    r"""Sliding-window perplexity of ``text`` (documents separated by blank lines).

    Each document is tokenised without special tokens (with ``bos``, prefixed by the BOS token
    so that its first token is scored too) and scored by :func:`sliding_window_nll`: windows of
    ``context`` tokens every ``stride`` tokens, each scoring only its new tokens, with logitlab's
    exact cross-entropy. With :math:`L` the summed NLL (nats):

    .. math::

        \mathrm{PPL}_{tok} = e^{L / N_{tok}},\qquad
        \mathrm{bpb} = rac{L}{N_{bytes} \ln 2},\qquad
        \mathrm{PPL}_{word} = e^{L / N_{words}} .

    The 95% interval is a percentile bootstrap of the token perplexity over documents
    (``bootstrap`` resamples; NaN for a single document).

    Args:
        model: a causal LM returning ``.logits`` of shape ``(B, T, V)`` (e.g. from
            :func:`load_local_model`).
        tokenizer: its tokenizer (``tokenizer(text, add_special_tokens=False)["input_ids"]``).
        text: the text; documents are separated by blank lines.
        context: window length in tokens (at most the model's positions).
        stride: tokens between window starts, ``1 <= stride <= context``.
        batch_size: windows per forward pass (results do not depend on it).
        bos: prefix each document with the tokenizer's BOS token.
        bootstrap: bootstrap resamples for the interval.
        seed: bootstrap seed.

    Returns:
        :class:`LMPerplexity` with totals and per-document values.

    Raises:
        ValueError: bad ``context``/``stride``, context longer than the model accepts, empty
            text, no BOS token with ``bos``, nothing to score.

    Example:
        A model that predicts the uniform distribution over ``V`` tokens has perplexity ``V``:

        >>> import torch
        >>> class Uniform(torch.nn.Module):
        ...     def __init__(self):
        ...         super().__init__(); self.w = torch.nn.Parameter(torch.zeros(1))
        ...     def forward(self, ids):
        ...         return type("Out", (), {"logits": torch.zeros(*ids.shape, 7)})()
        >>> class Chars:
        ...     bos_token_id = 0
        ...     def __call__(self, text, add_special_tokens=False):
        ...         return {"input_ids": [ord(c) % 7 for c in text]}
        >>> r = lm_perplexity(Uniform(), Chars(), "abc def\n\nghij", context=4, stride=2)
        >>> round(r.token_perplexity, 5), r.tokens, r.words, r.bytes  # float32 logits
        (7.0, 9, 3, 11)

    References:
        Hugging Face, "Perplexity of fixed-length models"; Press, Smith & Lewis 2022;
        Gao et al., lm-evaluation-harness.
    """
    if not 0 < stride <= context:
        raise ValueError(f"--stride {stride} must be in [1, --context {context}]")
    limit = max_positions(model)
    if limit is not None and context > limit:
        raise ValueError(
            f"--context {context} exceeds the model's maximum of {limit} positions; "
            f"use --context {limit} or less"
        )
    docs = _documents(text)
    if not docs:
        raise ValueError("the text is empty: nothing to score")
    bos_id = tokenizer.bos_token_id if bos else None
    if bos and bos_id is None:
        raise ValueError("--bos: this tokenizer has no BOS token")
    results = []
    for d in docs:
        ids = tokenizer(d, add_special_tokens=False)["input_ids"]
        nll, cnt = sliding_window_nll(
            model, ids, context=context, stride=stride, batch_size=batch_size, bos_id=bos_id
        )
        # lm-evaluation-harness counts: UTF-8 bytes, and words = len(re.split(r"\s+", doc))
        results.append(DocumentPerplexity(cnt, len(d.encode("utf-8")), _count_words(d), nll))
    nll_sum = sum(r.nll for r in results)
    toks = sum(r.tokens for r in results)
    nbytes = sum(r.bytes for r in results)
    words = sum(r.words for r in results)
    if toks == 0:
        raise ValueError("no token was scored: the text is shorter than two tokens (try --bos)")
    rng = np.random.default_rng(seed)
    nl = np.array([r.nll for r in results])
    tk = np.array([r.tokens for r in results], dtype=np.float64)
    if len(results) > 1 and bootstrap > 0:
        idx = rng.integers(0, len(results), size=(bootstrap, len(results)))
        with np.errstate(invalid="ignore", divide="ignore"):
            ppl = np.exp(nl[idx].sum(1) / np.maximum(tk[idx].sum(1), 1))
        ci = (float(np.percentile(ppl, 2.5)), float(np.percentile(ppl, 97.5)))
    else:
        ci = (math.nan, math.nan)
    return LMPerplexity(
        token_perplexity=math.exp(nll_sum / toks),
        bits_per_byte=nll_sum / (nbytes * math.log(2)) if nbytes else math.nan,
        word_perplexity=math.exp(nll_sum / words) if words else math.nan,
        tokens=toks,
        bytes=nbytes,
        words=words,
        nll_sum=nll_sum,
        ci95=ci,
        context=context,
        stride=stride,
        documents=results,
    )

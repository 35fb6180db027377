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

    tok = AutoTokenizer.from_pretrained(str(p), local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(str(p), local_files_only=True)
    model.eval()
    return model, tok


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
    """Sliding-window perplexity of ``text`` (documents separated by blank lines).

    Example:
        See ``tests/metrics/test_lm.py``, which builds a tiny random GPT-2 locally.
    """
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
        results.append(DocumentPerplexity(cnt, len(d.encode("utf-8")), len(d.split()), nll))
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

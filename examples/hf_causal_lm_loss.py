"""Replace a Hugging Face causal LM's loss by logitlab's fused, chunked linear cross-entropy.

The model's own loss builds the full ``(batch, seq, vocab)`` logits and a float32 copy of them;
here the decoder's last hidden states go straight into :func:`logitlab.torch.linear_cross_entropy`
with ``lm_head.weight``, so no logits tensor is ever stored. Labels follow the Hugging Face
convention: ``labels = input_ids`` with padding set to ``-100``; the shift (token ``i`` predicts
token ``i + 1``) happens here, exactly as in ``transformers``' ``ForCausalLMLoss``.

Run: ``python examples/hf_causal_lm_loss.py`` (builds a tiny random Llama locally, no network).
"""

from __future__ import annotations

from typing import Any

import torch

# isort: split
from logitlab.torch import linear_cross_entropy


def causal_lm_loss(
    model: Any,
    input_ids: torch.Tensor,
    labels: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    **loss_options: Any,
) -> torch.Tensor:
    """Mean next-token cross-entropy of a ``*ForCausalLM`` model without materialising logits.

    ``loss_options`` go to :func:`~logitlab.torch.linear_cross_entropy` (``z_loss``,
    ``label_smoothing``, ``softcap`` — e.g. Gemma 2's ``final_logit_softcapping`` —, ...).
    """
    out = model.model(input_ids=input_ids, attention_mask=attention_mask)
    hidden = out.last_hidden_state[:, :-1, :]  # position i predicts token i + 1
    target = labels[:, 1:]
    head = model.get_output_embeddings()
    return linear_cross_entropy(
        hidden,
        head.weight,
        target,
        bias=getattr(head, "bias", None),
        ignore_index=-100,
        **loss_options,
    )


def main() -> None:
    import transformers

    cfg = transformers.LlamaConfig(
        vocab_size=97,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
    )
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(cfg)
    ids = torch.randint(0, 97, (2, 16))
    labels = ids.clone()
    labels[0, :4] = -100
    ref = model(input_ids=ids, labels=labels).loss
    loss = causal_lm_loss(model, ids, labels)
    loss.backward()
    print(f"transformers loss {ref.item():.6f}  logitlab loss {loss.item():.6f}")


if __name__ == "__main__":
    main()

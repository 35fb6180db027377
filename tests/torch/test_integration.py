"""Inside models: torch.compile, activation checkpointing, and a tiny Hugging Face causal LM."""

import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional

from logitlab.torch import LinearCrossEntropy, linear_cross_entropy  # noqa: E402


class TinyLM(torch.nn.Module):
    def __init__(self, vocab=41, d=16):
        super().__init__()
        self.emb = torch.nn.Embedding(vocab, d)
        self.mlp = torch.nn.Sequential(
            torch.nn.Linear(d, d), torch.nn.GELU(), torch.nn.Linear(d, d)
        )
        self.head = torch.nn.Linear(d, vocab, bias=False)
        self.loss_fn = LinearCrossEntropy(z_loss=1e-4)

    def hidden(self, ids):
        x = self.emb(ids)
        return x + self.mlp(x)

    def forward(self, ids, labels, fused=True):
        h = self.hidden(ids)
        if fused:
            return self.loss_fn(h, self.head.weight, labels)
        z = self.head(h)
        per = F.cross_entropy(z.flatten(0, 1), labels.flatten(), reduction="none")
        valid = labels.flatten() != -100
        per = per + 1e-4 * torch.logsumexp(z.flatten(0, 1), -1) ** 2 * valid
        return per.sum() / valid.sum()


def _batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 41, (3, 7), generator=g)
    labels = ids.clone()
    labels[:, :2] = -100
    return ids, labels


def _grads(model, loss):
    return torch.autograd.grad(loss, [p for p in model.parameters()])


def test_torch_compile():
    torch.manual_seed(0)
    model = TinyLM()
    ids, labels = _batch()
    ref = model(ids, labels, fused=False)
    compiled = torch.compile(model)  # inductor; the fused loss is a graph break, never a crash
    loss = compiled(ids, labels)
    torch.testing.assert_close(loss, ref)
    for a, b in zip(_grads(model, loss), _grads(model, ref), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("reentrant", [False, True])
def test_activation_checkpointing(reentrant):
    torch.manual_seed(0)
    model = TinyLM()
    ids, labels = _batch(1)

    def body(h):
        return linear_cross_entropy(h, model.head.weight, labels, z_loss=1e-4)

    h = model.hidden(ids)
    loss = torch.utils.checkpoint.checkpoint(body, h, use_reentrant=reentrant)
    loss.backward()  # reentrant checkpointing supports .backward() only
    got = [p.grad.clone() for p in model.parameters()]
    model.zero_grad(set_to_none=True)
    ref = model(ids, labels, fused=False)
    torch.testing.assert_close(loss, ref)
    ref.backward()
    for a, p in zip(got, model.parameters(), strict=True):
        torch.testing.assert_close(a, p.grad, rtol=1e-4, atol=1e-6)


def test_hf_tiny_llama_recipe():
    transformers = pytest.importorskip("transformers")
    from examples_hf import causal_lm_loss  # tests/torch/examples_hf.py re-exports the recipe

    cfg = transformers.LlamaConfig(
        vocab_size=97,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
    )
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(cfg).eval()
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 97, (2, 11), generator=g)
    mask = torch.ones_like(ids)
    mask[1, :3] = 0  # left padding
    labels = ids.masked_fill(mask == 0, -100)
    ref = model(input_ids=ids, attention_mask=mask, labels=labels).loss
    ref_grads = torch.autograd.grad(ref, list(model.parameters()))
    loss = causal_lm_loss(model, ids, labels, attention_mask=mask)
    torch.testing.assert_close(loss, ref, rtol=1e-5, atol=1e-6)
    grads = torch.autograd.grad(loss, list(model.parameters()))
    for a, b in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)

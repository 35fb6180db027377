"""Sliding-window LM perplexity on a tiny randomly initialised GPT-2 built locally (no hub)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from logitlab.metrics.lm import (  # noqa: E402
    lm_perplexity,
    load_local_model,
    sliding_window_nll,
)

TEXT = (
    "The quick brown fox jumps over the lazy dog. Pack my box with five dozen liquor jugs.\n\n"
    "How vexingly quick daft zebras jump! Sphinx of black quartz, judge my vow.\n\n"
    "Numbers 0123456789 and punctuation; all of it is scored once."
)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    d = tmp_path_factory.mktemp("tiny-gpt2")
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=["<unk>", "<bos>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator([TEXT] * 3, trainer)
    from tokenizers import decoders

    tok.decoder = decoders.ByteLevel()
    fast = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<bos>", unk_token="<unk>"
    )
    fast.save_pretrained(d)
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(
        vocab_size=len(fast),
        n_positions=64,
        n_embd=32,
        n_layer=2,
        n_head=2,
        bos_token_id=fast.bos_token_id,
        eos_token_id=fast.bos_token_id,
    )
    transformers.GPT2LMHeadModel(cfg).save_pretrained(d)
    return d


def _naive_chunked(model, ids: list[int], context: int) -> tuple[float, int]:  # type: ignore[no-untyped-def]
    total, count = 0.0, 0
    for a in range(0, len(ids), context):
        chunk = torch.tensor([ids[a : a + context]])
        if chunk.shape[1] < 2:
            continue
        with torch.no_grad():
            logits = model(chunk).logits[0, :-1].double()
        total += float(torch.nn.functional.cross_entropy(logits, chunk[0, 1:], reduction="sum"))
        count += chunk.shape[1] - 1
    return total, count


def test_stride_equal_context_is_naive_chunking(model_dir: Path) -> None:
    model, tok = load_local_model(model_dir)
    ids = tok(TEXT, add_special_tokens=False)["input_ids"]
    assert len(ids) > 40
    nll, cnt = sliding_window_nll(model, ids, context=16, stride=16, batch_size=3)
    ref, rcnt = _naive_chunked(model, ids, 16)
    assert cnt == rcnt
    assert nll == pytest.approx(ref, rel=1e-6)


def test_every_token_scored_once_and_batch_invariant(model_dir: Path) -> None:
    model, tok = load_local_model(model_dir)
    ids = tok(TEXT, add_special_tokens=False)["input_ids"]
    results = {
        bs: sliding_window_nll(model, ids, context=24, stride=8, batch_size=bs) for bs in (1, 2, 5)
    }
    counts = {c for _, c in results.values()}
    assert counts == {len(ids) - 1}
    vals = [v for v, _ in results.values()]
    assert max(vals) - min(vals) <= 1e-9 * abs(vals[0])
    # more context can only be used, never lose tokens: stride < context scores the same tokens
    bos_nll, bos_cnt = sliding_window_nll(model, ids, context=24, stride=8, bos_id=tok.bos_token_id)
    assert bos_cnt == len(ids)


def test_lm_perplexity_report_and_exp_mean_nll_from_torch(model_dir: Path) -> None:
    model, tok = load_local_model(model_dir)
    res = lm_perplexity(model, tok, TEXT, context=64, stride=64, bootstrap=200)
    assert len(res.documents) == 3
    # each document fits in one window: perplexity is exp(mean NLL) of a plain forward pass
    total, count = 0.0, 0
    for doc in TEXT.split("\n\n"):
        ids = torch.tensor([tok(doc, add_special_tokens=False)["input_ids"]])
        with torch.no_grad():
            lg = model(ids).logits[0, :-1]
        total += float(torch.nn.functional.cross_entropy(lg, ids[0, 1:], reduction="sum"))
        count += ids.shape[1] - 1
    assert res.token_perplexity == pytest.approx(math.exp(total / count), rel=1e-5)
    assert res.bits_per_byte == pytest.approx(
        res.nll_sum / (len(TEXT.replace("\n\n", "").encode()) * math.log(2)), rel=1e-12
    )
    lo, hi = res.ci95
    assert lo <= hi and np.isfinite(lo)


def test_missing_directory_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no such directory"):
        load_local_model(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_local_model(tmp_path)


def test_cli_perplexity(model_dir: Path, tmp_path: Path) -> None:
    import json

    from typer.testing import CliRunner

    from logitlab.cli import app

    f = tmp_path / "t.txt"
    f.write_text(TEXT, encoding="utf-8")
    r = CliRunner().invoke(
        app,
        [
            "perplexity",
            "--model",
            str(model_dir),
            "--text",
            str(f),
            "--context",
            "32",
            "--stride",
            "16",
            "--json",
        ],
    )
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert d["tokens"] > 0 and d["token_perplexity"] > 1
    r = CliRunner().invoke(app, ["perplexity", "--model", str(tmp_path / "x"), "--text", str(f)])
    assert r.exit_code == 2 and "no such directory" in r.stderr


def test_context_longer_than_model_and_word_counts(model_dir: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from logitlab.cli import app

    f = tmp_path / "t.txt"
    f.write_text(TEXT, encoding="utf-8")
    # the tiny model has 64 positions: the default --context 1024 is a one-line error
    r = CliRunner().invoke(app, ["perplexity", "--model", str(model_dir), "--text", str(f)])
    assert r.exit_code == 2 and "maximum of 64 positions" in r.stderr
    assert "Traceback" not in r.output
    model, tok = load_local_model(model_dir)
    res = lm_perplexity(model, tok, TEXT, context=64, stride=32, bootstrap=0)
    # words as lm-evaluation-harness counts them: len(re.split(r"\s+", doc)) per document
    assert res.words == sum(len(d.split()) for d in TEXT.split("\n\n"))
    assert res.word_perplexity == pytest.approx(math.exp(res.nll_sum / res.words), rel=1e-12)
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(ValueError, match="cannot load"):
        load_local_model(tmp_path / "broken")

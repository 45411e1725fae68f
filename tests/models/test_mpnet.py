"""MPNet (`coulisse.models.mpnet`) against transformers 5, on tiny random checkpoints that transformers itself
wrote (tests/factory.py's config: hidden 32, 2 layers, 4 heads, 514 positions, MPNet's vocab.txt layout over
MiniLM's vocabulary), every tensor moved off its initial value so that each one counts.

Each head transformers has for MPNet (sequence and token classification, question answering, masked LM,
multiple choice) and the base model, in safetensors and `torch.save` .bin: logits and hidden states within
1e-4 of transformers' (values of a few units; float32 sums taken in another order differ by ~1e-6), on
TEXTS, a batch of texts from 3 to 512 tokens, padded: packing, the relative bias of each sequence, and the
bucket clamp past 128 tokens all take part. The relative buckets equal transformers' own function exactly;
a batch equals its texts one by one bit for bit (through a pipeline, with the C attention kernel and with SDPA);
hidden states and attention probabilities of every layer (what `coulisse explain` reads) equal transformers';
the config fields transformers ignores (pad_token_id for positions, relative_attention_num_buckets past 32) are
ignored alike.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from factory import TEXTS, assert_close, assert_distinct_rows, write_weights

from coulisse import pipeline
from coulisse.config import EncoderConfig
from coulisse.errors import UnsupportedModelError
from coulisse.models import load_model
from coulisse.models import quantize as Q
from coulisse.models.bert import SelfAttention
from coulisse.models.mpnet import relative_buckets

AUTO = {"sequence-classification": "AutoModelForSequenceClassification", None: "AutoModel",
        "token-classification": "AutoModelForTokenClassification", "masked-lm": "AutoModelForMaskedLM",
        "multiple-choice": "AutoModelForMultipleChoice", "question-answering": "AutoModelForQuestionAnswering"}


def mpnet(factory, head: str | None, seed: int = 0, **changes):
    """A transformers MPNet with `head` (the factory's config, with `changes`), every tensor moved off its
    initial value (LayerNorms start at 1 and 0, biases at 0)."""
    import transformers

    config = copy.deepcopy(factory.reference("mpnet").model.config)
    if head == "question-answering":
        config.num_labels = 2
    for key, value in changes.items():
        setattr(config, key, value)
    torch.manual_seed(seed)
    model = getattr(transformers, AUTO[head]).from_config(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.2)
    return model


def ours(model, directory, head: str | None, weights: str = "safetensors"):
    directory.mkdir(parents=True, exist_ok=True)
    write_weights(model, directory, weights)
    return load_model(directory, EncoderConfig.from_file(directory / "config.json"), head)


def inputs(factory, texts=TEXTS):
    tok = factory.hf_tokenizer("mpnet")
    return tok(texts, padding=True, truncation=True, max_length=512, return_tensors="pt")


def reference_output(model, head: str | None, batch) -> torch.Tensor:
    with torch.no_grad():
        out = model(**batch)
    if head is None:
        return out.last_hidden_state
    if head == "question-answering":
        return torch.stack([out.start_logits, out.end_logits], -1)
    return out.logits


def test_buckets_equal_transformers():
    from transformers.models.mpnet.modeling_mpnet import MPNetEncoder

    width = 700  # distances past 128 on both sides: the clamp to the last bucket of each half
    pos = torch.arange(width)
    theirs = MPNetEncoder.relative_position_bucket(pos[None, :] - pos[:, None])
    assert torch.equal(relative_buckets(width, torch.device("cpu")), theirs)
    assert int(theirs.max()) == 31 and int(theirs.min()) == 0


def test_texts_reach_the_bucket_clamp(factory):
    lengths = inputs(factory)["attention_mask"].sum(1)
    assert int(lengths.max()) > 128 and int(lengths.min()) < 16  # the clamp, and short ones beside it


@pytest.mark.parametrize("weights", ["safetensors", "bin"])
@pytest.mark.parametrize("head", list(AUTO), ids=lambda h: h or "base")
def test_heads_equal_transformers(factory, tmp_path, head, weights):
    model = mpnet(factory, head, seed=list(AUTO).index(head))
    mine = ours(model, tmp_path / "ckpt", head, weights)
    batch = inputs(factory)
    if head == "multiple-choice":  # TEXTS as (prompt, choice) pairs: 1 question of 3 choices, 1 of 4
        tok = factory.hf_tokenizer("mpnet")
        enc = tok([TEXTS[0]] * 3 + [TEXTS[1]] * 4, TEXTS, padding=True, truncation=True, max_length=512,
                  return_tensors="pt")
        with torch.no_grad():
            theirs = torch.cat([model(**{k: v[None, :3] for k, v in enc.items()}).logits[0],
                                model(**{k: v[None, 3:] for k, v in enc.items()}).logits[0]])
        got = torch.cat([mine(enc["input_ids"][None, :3], enc["attention_mask"][None, :3]).logits[0],
                         mine(enc["input_ids"][None, 3:], enc["attention_mask"][None, 3:]).logits[0]])
        assert_close("mpnet multiple-choice", got, theirs)
        return
    theirs = reference_output(model, head, batch)
    got = mine(batch["input_ids"], batch["attention_mask"])
    got = got.last_hidden_state if head is None else got.logits
    if got.dim() == 3:  # per token: compare the real tokens (transformers' padding rows are its own)
        keep = batch["attention_mask"].bool()
        got, theirs = got[keep], theirs[keep]
    else:
        assert_distinct_rows(theirs, min_spread=1e-3)
    assert_close(f"mpnet {head or 'base'} [{weights}]", got, theirs)


@pytest.mark.parametrize("attention", ["c-kernel", "sdpa"])
def test_a_text_gives_the_same_bits_alone_and_in_any_batch(factory, monkeypatch, attention):
    """Through a pipeline (the packed batch of the engine, its fast linear layers): a text's vectors are the same
    bits alone and in a batch of other lengths, with the C attention kernel adding each sequence's block of the
    relative bias, and with SDPA once per sequence (COULISSE_C_ATTENTION=0). A bias block taken at the wrong place
    moves them by units. (Through the bare model, PyTorch's sgemm gives other bits for other row counts on AVX-512
    CPUs, so a batch check there would test the GEMM, not attention.)"""
    if attention == "sdpa":
        monkeypatch.setenv("COULISSE_C_ATTENTION", "0")
    pipe = pipeline("feature-extraction", model=factory.checkpoint("mpnet", base=True))
    kernels = [m.kernel for m in pipe.model.modules() if isinstance(m, SelfAttention)]
    assert len(kernels) == 2
    assert all(k is not None for k in kernels) == (attention == "c-kernel" and Q.kernels() is not None)
    texts = [TEXTS[1], "Bof", TEXTS[0], TEXTS[5], TEXTS[-1]]
    batched = pipe(texts)
    for text, rows in zip(texts, batched, strict=True):
        assert np.array_equal(np.asarray(pipe(text)), np.asarray(rows)), text


def test_hidden_states_and_attentions_equal_transformers(factory, tmp_path):
    model = mpnet(factory, "sequence-classification")
    mine = ours(model, tmp_path / "ckpt", "sequence-classification")
    batch = inputs(factory, TEXTS[:5])
    with torch.no_grad():
        theirs = model(**batch, output_hidden_states=True, output_attentions=True)
    got = mine(**batch, output_hidden_states=True, output_attentions=True)
    keep = batch["attention_mask"].bool()
    assert len(got.hidden_states) == len(theirs.hidden_states) == 3
    for a, b in zip(got.hidden_states, theirs.hidden_states, strict=True):
        assert_close("mpnet hidden states", a[keep], b[keep])
    both = keep[:, None, :, None] & keep[:, None, None, :]  # (B, 1, L, L) real query and key
    for a, b in zip(got.attentions, theirs.attentions, strict=True):
        assert_close("mpnet attentions", a * both, b * both, tol=1e-5)
    assert_close("mpnet logits traced", got.logits, theirs.logits)


def test_positions_count_from_padding_index_1_whatever_pad_token_id(factory, tmp_path):
    """transformers' MPNet numbers positions from its fixed padding index 1 + 1, not from pad_token_id."""
    model = mpnet(factory, None, pad_token_id=0)
    mine = ours(model, tmp_path / "ckpt", None)
    batch = inputs(factory, TEXTS[:5])
    keep = batch["attention_mask"].bool()
    got = mine(batch["input_ids"], batch["attention_mask"]).last_hidden_state
    assert_close("mpnet pad_token_id 0", got[keep], reference_output(model, None, batch)[keep])


def test_bucket_table_rows_past_32_are_never_read(factory, tmp_path):
    model = mpnet(factory, "sequence-classification", relative_attention_num_buckets=64)
    mine = ours(model, tmp_path / "ckpt", "sequence-classification")
    batch = inputs(factory)
    assert_close("mpnet 64 buckets", mine(**batch).logits, reference_output(model, "sequence-classification", batch))


def test_fewer_than_32_buckets_is_refused(factory, tmp_path):
    model = mpnet(factory, None, relative_attention_num_buckets=16)
    with pytest.raises(UnsupportedModelError, match="relative_attention_num_buckets=16 in config.json"):
        ours(model, tmp_path / "ckpt", None)


def test_coulisse_explain_runs_on_mpnet(factory, tmp_path):
    """`coulisse explain` on an MPNet classifier: --json (the studio's document) gives transformers' logits; the
    attributions and the HTML page (every layer's attention, through the traced forward) are written."""
    import json

    from click.testing import CliRunner

    from coulisse.interfaces.cli import cli

    directory, text, page = str(factory.checkpoint("mpnet")), TEXTS[2], tmp_path / "page.html"
    result = CliRunner().invoke(cli, ["explain", "--json", "-m", directory, text])
    assert result.exit_code == 0, result.output
    logits = torch.tensor(json.loads(result.stdout)["answers"]["fp32"]["logits"])
    model = factory.reference("mpnet").model
    assert_close("mpnet explain --json", logits, reference_output(model, "sequence-classification",
                                                                   inputs(factory, [text]))[0])
    result = CliRunner().invoke(cli, ["explain", "-a", "--html", str(page), "-m", directory, text])
    assert result.exit_code == 0, result.output
    assert "5. Attributions" in result.stdout and page.stat().st_size > 10_000

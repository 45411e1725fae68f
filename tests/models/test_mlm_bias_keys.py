"""A masked-LM checkpoint that holds both `cls.predictions.bias` and `cls.predictions.decoder.bias` (RoBERTa
family: `lm_head.bias` and `lm_head.decoder.bias`), with different values: coulisse reads the one transformers'
model computes with.

transformers 5 ties `cls.predictions.decoder.bias` to `cls.predictions.bias` (`_tied_weights_keys` of
BertForMaskedLM and DebertaV2ForMaskedLM); when a checkpoint holds both with different values it does not tie
them, each parameter keeps its own tensor, and the logits are `decoder(x)`, so the decoder's bias counts.
The test builds such checkpoints by editing one of the two tensors (each in turn) of a tiny model saved with
safetensors, checks that on the oracle, then compares fill-mask proposals with transformers' pipeline:
same tokens, scores within 1e-4 (tests/tasks/test_fill_mask.py's bound: fp32 sums in another order).
"""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from factory import max_delta, train_deberta_spm

from coulisse import pipeline

transformers = pytest.importorskip("transformers")
safetensors_torch = pytest.importorskip("safetensors.torch")

# (head bias, decoder bias, the oracle's attribute holding the decoder) per head layout
KEYS = {"cls": ("cls.predictions.bias", "cls.predictions.decoder.bias", "cls.predictions"),
        "lm_head": ("lm_head.bias", "lm_head.decoder.bias", "lm_head")}


def factory_checkpoint(task_factory, arch, folder):
    shutil.copytree(task_factory.checkpoint(arch, "masked-lm"), folder)
    return folder, "<mask>" if arch == "camembert" else "[MASK]"


def deberta_checkpoint(tmp_path, folder):
    """A tiny DeBERTa-v3 with the legacy head (`cls.predictions`, transformers' default)."""
    train_deberta_spm(folder)
    (folder / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": False, "vocab_type": "spm"}))
    (folder / "config.json").write_text(json.dumps({"model_type": "deberta-v2"}))
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(folder))
    config = transformers.DebertaV2Config(
        vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, hidden_size=32, num_hidden_layers=2,
        num_attention_heads=4, intermediate_size=37, relative_attention=True, position_buckets=16,
        pos_att_type="p2c|c2p", share_att_key=True, norm_rel_ebd="layer_norm", position_biased_input=False)
    torch.manual_seed(0)
    transformers.DebertaV2ForMaskedLM(config).eval().save_pretrained(folder)
    return folder, "[MASK]"


@pytest.mark.parametrize("edited", ["decoder", "head"])
@pytest.mark.parametrize("arch", ["bert", "camembert", "deberta-v2"])
def test_the_decoder_bias_wins_as_in_transformers(task_factory, tmp_path, arch, edited):
    folder = tmp_path / arch
    if arch == "deberta-v2":
        folder, mask = deberta_checkpoint(tmp_path, folder)
    else:
        folder, mask = factory_checkpoint(task_factory, arch, folder)
    HEAD, DECODER, module = KEYS["lm_head" if arch == "camembert" else "cls"]
    edited = DECODER if edited == "decoder" else HEAD
    path = folder / "model.safetensors"
    tensors = safetensors_torch.load_file(path)
    tensors.setdefault(DECODER, tensors[HEAD].clone())  # save_pretrained wrote the tied pair once
    generator = torch.Generator().manual_seed(1)
    # Several logits' worth: moves the top proposals, so reading the wrong tensor cannot pass.
    tensors[edited] = tensors[edited] + 3 * torch.randn(tensors[edited].shape, generator=generator)
    safetensors_torch.save_file(tensors, path, metadata={"format": "pt"})

    theirs = transformers.pipeline("fill-mask", model=str(folder), device="cpu")
    predictions = theirs.model.get_submodule(module)
    assert torch.equal(predictions.decoder.bias, tensors[DECODER])  # the oracle computes with the decoder's
    assert not torch.equal(predictions.decoder.bias, tensors[HEAD])
    ours = pipeline("fill-mask", model=folder)
    texts = [f"Le film est {mask}.", f"J'ai {mask} ce film, il est {mask} !", mask]
    a, b = ours(texts, top_k=5), theirs(texts, top_k=5)
    flat = [[p for group in result for item in group for p in (item if isinstance(item, list) else [item])]
            for result in (a, b)]
    assert [(p["token"], p["sequence"]) for p in flat[0]] == [(p["token"], p["sequence"]) for p in flat[1]]
    assert max_delta("fill-mask scores", [p["score"] for p in flat[0]], [p["score"] for p in flat[1]]) <= 1e-4
    # and the full logits, every token
    inputs = theirs.tokenizer(texts, padding=True, return_tensors="pt")
    keep = inputs["attention_mask"].bool()
    with torch.no_grad():
        expected = theirs.model(**inputs).logits[keep]
    assert max_delta("masked-LM logits", ours.model(**inputs).logits[keep], expected) <= 1e-4

"""`pipeline("fill-mask")` equals transformers 5's pipeline: same tokens, token strings and sentences,
scores within 1e-4, with `top_k` and `targets`, one or several masks, for the seven families with their real
tokenizers; only the masked positions are projected onto the vocabulary; the tied decoder loads from
checkpoints with and without its own key.
"""

from __future__ import annotations

import shutil

import pytest
import torch
from factory import ARCHS, assert_close, max_delta

from coulisse import pipeline
from coulisse.errors import InputError, ModelLoadError

OPTIONS = [{}, {"top_k": 1}, {"top_k": None}, {"top_k": 3},
           {"targets": ["bon", "film", "Ġbon", "▁bon", "mauvais", "[MASK]"]}, {"targets": "film", "top_k": 3},
           {"targets": ["le", "la"], "top_k": 10}]


def texts(mask: str) -> list[str]:
    return [f"Le film est {mask}.", f"J'ai {mask} ce film, il est {mask} !", mask,
            f"« Amélie » reste un {mask} 😍"]


def option_id(options: dict) -> str:
    return ",".join(f"{k}={v}" for k, v in options.items()) or "default"


def assert_same_proposals(ours, theirs, kind: str) -> None:
    """Same nesting, tokens, token strings and sentences; scores within 1e-4 (absolute and relative)."""
    assert type(ours) is type(theirs), (ours, theirs)
    if isinstance(theirs, list):
        assert len(ours) == len(theirs), (ours, theirs)
        for a, b in zip(ours, theirs, strict=True):
            assert_same_proposals(a, b, kind)
        return
    assert list(ours) == list(theirs) == ["score", "token", "token_str", "sequence"]
    assert (ours["token"], ours["token_str"], ours["sequence"]) == (
        theirs["token"], theirs["token_str"], theirs["sequence"]), (ours, theirs)
    assert isinstance(ours["score"], float) and isinstance(ours["token"], int)
    assert max_delta(kind, ours["score"], theirs["score"]) <= 1e-4
    max_delta(kind + ", relative", ours["score"] / theirs["score"], 1.0)


@pytest.fixture(scope="module", params=ARCHS)
def pipes(request, task_factory):
    directory = task_factory.checkpoint(request.param, "masked-lm")
    return pipeline("fill-mask", model=directory), task_factory.hf_pipeline("fill-mask", directory)


@pytest.mark.parametrize("options", OPTIONS, ids=option_id)
def test_proposals_equal_transformers(pipes, options):
    ours, theirs = pipes
    inputs = texts(ours.tokenizer.special_tokens["mask"])
    assert_same_proposals(ours(inputs, **options), theirs(inputs, **options), "fill-mask scores")
    assert_same_proposals(ours(inputs[1], **options), theirs(inputs[1], **options), "fill-mask scores")
    # a list of one text is unwrapped, as transformers does
    assert_same_proposals(ours(inputs[:1], **options), theirs(inputs[:1], **options), "fill-mask scores")


def test_only_masked_positions_reach_the_vocabulary(pipes):
    ours, _ = pipes
    inputs = texts(ours.tokenizer.special_tokens["mask"])
    seen = []
    hook = ours.model.head.register_forward_hook(lambda module, args, out: seen.append(tuple(out.shape)))
    try:
        ours(inputs)
    finally:
        hook.remove()
    assert seen == [(5, ours.config.vocab_size)]  # 5 masks in 4 texts, one packed batch


def test_model_api_gives_every_token_logits(pipes):
    """`model(**inputs)` is transformers' `*ForMaskedLM`: logits `(B, L, vocab)` for every token, even in a
    fill-mask pipeline."""
    ours, theirs = pipes
    inputs = ours.tokenizer(texts(ours.tokenizer.special_tokens["mask"]), padding=True, return_tensors="pt")
    logits = ours.model(**inputs).logits
    with torch.no_grad():
        expected = theirs.model(**inputs).logits
    keep = inputs["attention_mask"].bool()
    assert_close("masked-lm logits (every token)", logits[keep], expected[keep])


@pytest.mark.parametrize("arch", ARCHS)
def test_checkpoint_with_its_own_decoder_keys_loads_alike(task_factory, arch):
    """torch.save(state_dict) keeps the tied decoder weight and bias: those keys are read instead of the
    embeddings, and give the same proposals."""
    from safetensors.torch import load_file

    bin_dir = task_factory.checkpoint(arch, "masked-lm", weights="bin")
    keys = torch.load(bin_dir / "pytorch_model.bin", weights_only=True).keys()
    assert any(k.endswith(("decoder.weight", "vocab_projector.weight")) for k in keys)
    assert not any(k.endswith(("decoder.weight", "vocab_projector.weight")) for k in load_file(
        task_factory.checkpoint(arch, "masked-lm") / "model.safetensors"))
    ours = pipeline("fill-mask", model=bin_dir)
    reference = pipeline("fill-mask", model=task_factory.checkpoint(arch, "masked-lm"))
    inputs = texts(ours.tokenizer.special_tokens["mask"])
    assert_same_proposals(ours(inputs, top_k=3), reference(inputs, top_k=3), "fill-mask .bin vs safetensors")


def test_missing_head_tensor_is_named(task_factory, tmp_path):
    from safetensors.torch import load_file, save_file

    source = task_factory.checkpoint("bert", "masked-lm")
    shutil.copytree(source, tmp_path, dirs_exist_ok=True)
    tensors = load_file(source / "model.safetensors")
    del tensors["cls.predictions.bias"]
    save_file(tensors, tmp_path / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ModelLoadError, match=r"cls\.predictions\.bias"):
        pipeline("fill-mask", model=tmp_path)


def test_input_errors(pipes):
    ours, _ = pipes
    mask = ours.tokenizer.special_tokens["mask"]
    with pytest.raises(InputError, match="no mask token"):
        ours("Pas de trou ici.")
    with pytest.raises(InputError, match="top_k"):
        ours(f"Le film est {mask}.", top_k=0)
    with pytest.raises(InputError, match="truncation"):
        ours(f"Le film est {mask}. " + "Encore et encore. " * 300)
    assert ours(f"Le film est {mask}. " + "Encore et encore. " * 300, tokenizer_kwargs={"truncation": True})


@pytest.mark.parametrize("options", [{"top_k": 1}, {"top_k": 3}, {"targets": ["bon", "film"], "top_k": 2}],
                         ids=option_id)
def test_a_literal_pad_token_leaves_the_sentences_of_several_masks(pipes, options):
    """With several masks the sentences keep their special tokens, so the pad token a text holds would show in
    each: transformers drops every pad id from the filled ids before decoding (audit 46, F2)."""
    ours, theirs = pipes
    mask, pad = ours.tokenizer.special_tokens["mask"], ours.tokenizer.special_tokens["pad"]
    inputs = [f"Le film {pad} est {mask} et {mask}.", f"{pad}{mask} {pad} {mask}"]
    assert all(ours.tokenizer.pad_token_id in ids for ids in ours.tokenizer(inputs)["input_ids"])
    expected = theirs(inputs, **options)
    assert all(pad not in p["sequence"] for text in expected for mask_proposals in text for p in mask_proposals)
    assert_same_proposals(ours(inputs, **options), expected, "fill-mask scores")

"""`Tokenizer.save_pretrained` writes the tokenizer as it stands (audit 46, F5): special tokens, padding_side and
truncation_side set after loading. Oracle: transformers 5 reloading the folder that transformers itself saved from
a tokenizer set the same way."""

from __future__ import annotations

import json

import pytest
from factory import TEXTS, tokenizer_and_transformers

from coulisse.tokenizer import Tokenizer


@pytest.mark.parametrize("layout", ["camembert", "minilm"])
def test_a_saved_folder_reloads_in_transformers_as_the_live_tokenizer(layout, camembert_dir, minilm_dir, tmp_path):
    """A folder saved by coulisse after `pad_token = unk_token`, `mask_token = None` and both sides "left" reloaded
    in transformers as `[PAD]`/`<pad>`, `[MASK]`/`<mask>`, "right", "right": the load-time settings."""
    from transformers import AutoTokenizer

    directory, model_type = (camembert_dir, "camembert") if layout == "camembert" else (minilm_dir, "bert")
    ours, theirs = tokenizer_and_transformers(directory, model_type)
    for tok in (ours, theirs):
        tok.pad_token = tok.unk_token
        tok.mask_token = None  # a token set to none stays none (null), not the class's default
        tok.padding_side = tok.truncation_side = "left"
    ours.save_pretrained(tmp_path / "ours")
    theirs.save_pretrained(str(tmp_path / "theirs"))
    back, expected = (AutoTokenizer.from_pretrained(str(tmp_path / name)) for name in ("ours", "theirs"))
    assert (back.pad_token, back.mask_token, back.padding_side, back.truncation_side) == (
        ours.unk_token, None, "left", "left")
    assert back.special_tokens_map == expected.special_tokens_map
    assert back.pad_token_id == expected.pad_token_id == ours.pad_token_id
    if layout == "minilm":  # transformers' own save keeps the sides only where its config named them
        assert (expected.padding_side, expected.truncation_side) == ("left", "left")
    options = {"padding": True, "truncation": True, "max_length": 6}
    assert back(TEXTS, **options)["input_ids"] == ours(TEXTS, **options)["input_ids"]
    # coulisse reads its folder back as it was saved, too
    again = Tokenizer.from_dir(tmp_path / "ours", model_type=model_type)
    assert (again.special_tokens, again.padding_side, again.truncation_side) == (
        ours.special_tokens, "left", "left")


def test_an_untouched_tokenizer_saves_its_settings_as_read(minilm_dir, tmp_path):
    """Only what was set since loading goes over the settings the tokenizer was read with."""
    ours = Tokenizer.from_dir(minilm_dir, model_type="bert")
    ours.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "tokenizer_config.json").read_text(encoding="utf-8"))
    keys = [*(f"{name}_token" for name in ours.special_tokens), "padding_side", "truncation_side"]
    assert {k: saved.get(k) for k in keys} == {k: ours.settings.get(k) for k in keys}


def test_a_side_that_is_neither_is_refused_before_saving(minilm_dir, tmp_path):
    """A folder saying padding_side "middle" would load neither in transformers nor in coulisse."""
    from coulisse.errors import InputError

    ours = Tokenizer.from_dir(minilm_dir, model_type="bert")
    ours.padding_side = "middle"
    with pytest.raises(InputError, match="the tokenizer's padding_side is 'middle'; use 'right' or 'left'"):
        ours.save_pretrained(tmp_path)

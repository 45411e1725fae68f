"""MPNet's tokenizer (`MPNetTokenizer`: BERT's WordPiece and lower-casing, RoBERTa's special tokens and layout
`<s> A </s></s> B </s>`, no token types, a mask token that takes the space before it) from vocab.txt alone
(tests/factory.py's microsoft/mpnet-base layout over MiniLM's vocabulary), with all-mpnet-base-v2's
tokenizer_config.json, and from the tokenizer.json transformers 5 writes (the one transformers 4 writes:
tests/tokenizer/test_tokenizer_json_v4.py). Oracle: transformers 5's `AutoTokenizer.from_pretrained(folder)`:
ids, masks, offsets, special-tokens masks, pairs, truncation, special tokens, decoding."""

from __future__ import annotations

import json
import shutil

import pytest
from factory import as_lists
from task_factory import ALL_MPNET_TOKENIZER_CONFIG

from coulisse.tokenizer import Tokenizer

TEXTS = [
    "J'ai attendu un cours d'HuggingFace toute ma vie.",
    "Je DÉTESTE tellement ça !",
    "Hello, World! Tokenization isn't trivial: don't you think?",
    "The capital of France is <mask>.",
    "hello<mask>  x <mask>y un <mask> [MASK] [CLS] <s> </s> <pad> [UNK] <unk>",
    "HÉLLO wörld straße 東京タワー 北京 😍🎬 — dash…",
    "a\tb\nc   d\u00a0e\u200bf\x00g",
    "  espaces en tête et en queue  ",
    "",
]
PAIRS = [(TEXTS[i], TEXTS[-2 - i]) for i in range(6)]
NAMES = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token",
         "all_special_tokens", "pad_token_id", "cls_token_id", "mask_token_id", "unk_token_id", "model_input_names")


def encodings(tokenizer, *args, **kwargs) -> dict:
    out = as_lists(tokenizer(*args, return_offsets_mapping=True, return_special_tokens_mask=True, **kwargs))
    out["offset_mapping"] = json.loads(json.dumps(out["offset_mapping"]))  # tuples as lists
    return out


def folder(factory, tmp_path, variant: str):
    directory = tmp_path / variant
    shutil.copytree(factory.tokenizer_files("mpnet"), directory)
    if variant == "all-mpnet-config":
        (directory / "tokenizer_config.json").write_text(json.dumps(ALL_MPNET_TOKENIZER_CONFIG), encoding="utf-8")
    elif variant == "tokenizer.json":  # what transformers 5 saves, the vocab.txt taken away
        from transformers import AutoTokenizer

        AutoTokenizer.from_pretrained(str(directory)).save_pretrained(str(directory))
        (directory / "vocab.txt").unlink()
    return directory


@pytest.fixture(params=["vocab.txt", "all-mpnet-config", "tokenizer.json"])
def pair(request, factory, tmp_path):
    from transformers import AutoTokenizer

    directory = folder(factory, tmp_path, request.param)
    ours = Tokenizer.from_dir(directory, model_type="mpnet", max_positions=512)
    assert ours.source == ("tokenizer.json" if request.param == "tokenizer.json" else "vocab.txt")
    theirs = AutoTokenizer.from_pretrained(str(directory))
    assert type(theirs).__name__ == "MPNetTokenizer"
    return ours, theirs


def test_texts_equal_transformers(pair):
    ours, theirs = pair
    for text in TEXTS:
        assert encodings(ours, text) == encodings(theirs, text), text
        assert ours.tokenize(text) == theirs.tokenize(text), text
    assert encodings(ours, TEXTS, padding=True) == encodings(theirs, TEXTS, padding=True)


def test_pairs_and_truncation_equal_transformers(pair):
    ours, theirs = pair
    firsts, seconds = [a for a, _ in PAIRS], [b for _, b in PAIRS]
    assert encodings(ours, firsts, seconds, padding=True) == encodings(theirs, firsts, seconds, padding=True)
    assert theirs.convert_ids_to_tokens(theirs("a", "b")["input_ids"]) == ["<s>", "a", "</s>", "</s>", "b", "</s>"]
    for max_length in (6, 12):
        options = dict(padding="max_length", truncation=True, max_length=max_length)
        assert encodings(ours, firsts, seconds, **options) == encodings(theirs, firsts, seconds, **options)
        assert (encodings(ours, TEXTS, truncation=True, max_length=max_length)
                == encodings(theirs, TEXTS, truncation=True, max_length=max_length))


def test_special_tokens_and_decoding_equal_transformers(pair):
    ours, theirs = pair
    assert {n: getattr(ours, n) for n in NAMES} == {n: getattr(theirs, n) for n in NAMES}
    assert len(ours) == len(theirs)
    for first, second in PAIRS:
        ids = theirs(first, second)["input_ids"]
        assert ours.convert_ids_to_tokens(ids) == theirs.convert_ids_to_tokens(ids)
        for skip in (False, True):
            assert ours.decode(ids, skip_special_tokens=skip) == theirs.decode(ids, skip_special_tokens=skip)

"""Added tokens of a folder (tokenizer_config.json's `added_tokens_decoder` with its flags, added_tokens.json,
`additional_special_tokens` in tokenizer_config.json or special_tokens_map.json) next to every kind of vocabulary
file. Oracle: transformers 5's `AutoTokenizer.from_pretrained(dir)` on the same folder: ids, offsets,
special-token masks, `len`, the vocabulary, the special tokens and decoding."""

from __future__ import annotations

import json
import shutil

import pytest
from factory import assert_same_encoding, copy_camembert_layout

from coulisse.tokenizer import Tokenizer

TEXTS = ["the <e1>paris</e1> is nice", "the <ent> paris <ENT> x<ent>y", "the [unused1] paris [E] [MASK] Hello",
         "a <x> b <s>NOTUSED c <mask> d <ent>", "[CLS] x [SEP] <pad> <s>", "Hello <y>  z <mask>z"]


def decoded(i: int, content: str, **flags) -> dict:
    return {str(i): {"content": content, "lstrip": False, "normalized": False, "rstrip": False,
                     "single_word": False, "special": True, **flags}}


# name: (vocabulary files, model_type, {file name: content})
CASES = {
    "vocab.txt+added_tokens.json": ("vocab.txt", "bert", {"added_tokens.json": {"<e1>": 30522, "</e1>": 30523}}),
    "vocab.txt+decoder": ("vocab.txt", "bert", {"tokenizer_config.json": {"added_tokens_decoder": {
        **decoded(30522, "<ent>", lstrip=True, rstrip=True), **decoded(30523, "Hello", normalized=True, special=False),
        **decoded(30524, "<y>", single_word=True, special=False)}}}),
    "vocab.txt+map-additional": ("vocab.txt", "bert", {
        "special_tokens_map.json": {"additional_special_tokens": ["[unused1]", "[E]"]}}),
    # the config's additional tokens win over the map's; a decoder in the config makes the map unread
    "vocab.txt+config-additional": ("vocab.txt", "bert", {
        "special_tokens_map.json": {"additional_special_tokens": ["[unused1]", "[E]"]},
        "tokenizer_config.json": {"additional_special_tokens": ["<x>"]}}),
    "vocab.txt+decoder-hides-map": ("vocab.txt", "bert", {
        "special_tokens_map.json": {"additional_special_tokens": ["[E]"], "mask_token": "<mask>"},
        "tokenizer_config.json": {"added_tokens_decoder": decoded(30522, "<ent>"),
                                  "additional_special_tokens": ["<x>"]}}),
    "vocab.txt+map-over-config": ("vocab.txt", "bert", {"special_tokens_map.json": {"mask_token": "<mask>"},
                                                        "tokenizer_config.json": {"mask_token": "[MASK]"}}),
    # ids with a gap, and a token that a special setting names
    "vocab.txt+added_tokens.json-special": ("vocab.txt", "bert", {
        "added_tokens.json": {"<x>": 30600, "<y>": 30523},
        "tokenizer_config.json": {"additional_special_tokens": ["<x>"]}}),
    "sentencepiece+added_tokens.json": ("sentencepiece", "camembert", {"added_tokens.json": {"<ent>": 32005}}),
    "sentencepiece+decoder": ("sentencepiece", "camembert", {"tokenizer_config.json": {
        "added_tokens_decoder": {**decoded(32004, "<mask>"), **decoded(32005, "<ent>")}}}),
    # a SentencePiece model's control pieces stand in for the map's additional tokens
    "sentencepiece+map-additional": ("sentencepiece", "xlm-roberta", {
        "special_tokens_map.json": {"additional_special_tokens": ["<x>"]}}),
    "vocab.json+merges.txt+config-additional": ("bpe", "roberta", {
        "tokenizer_config.json": {"additional_special_tokens": ["<x>"]}, "added_tokens.json": {"<ent>": 1000}}),
    "tokenizer.json+decoder": ("tokenizer.json", "bert", {"tokenizer_config.json": {
        "added_tokens_decoder": decoded(30522, "<ent>")}}),
    "tokenizer.json+map-additional": ("tokenizer.json", "bert", {
        "special_tokens_map.json": {"additional_special_tokens": ["<x>", "[unused1]"]}}),
}


@pytest.fixture(scope="module", params=list(CASES))
def pair(request, tmp_path_factory, minilm_dir, camembert_spm, factory):
    from transformers import AutoTokenizer

    files, model_type, extra = CASES[request.param]
    directory = tmp_path_factory.mktemp("added")
    if files == "vocab.txt":
        shutil.copy(minilm_dir / "vocab.txt", directory / "vocab.txt")
    elif files == "tokenizer.json":
        shutil.copy(minilm_dir / "tokenizer.json", directory / "tokenizer.json")
    elif files == "sentencepiece":
        copy_camembert_layout(camembert_spm, directory)
    else:
        for name in ("vocab.json", "merges.txt"):
            shutil.copy(factory.tokenizer_files("roberta") / name, directory / name)
    (directory / "config.json").write_text(json.dumps({"model_type": model_type}))
    for name, content in extra.items():
        (directory / name).write_text(json.dumps(content))
    return Tokenizer.from_dir(directory, model_type=model_type), AutoTokenizer.from_pretrained(str(directory))


def test_vocabulary_and_special_tokens_equal_transformers(pair):
    ours, theirs = pair
    assert len(ours) == len(theirs)
    assert ours.get_vocab() == theirs.get_vocab()
    assert sorted(ours.all_special_tokens) == sorted(theirs.all_special_tokens)


def test_ids_offsets_and_masks_equal_transformers(pair):
    ours, theirs = pair
    options = dict(return_offsets_mapping=True, return_special_tokens_mask=True, padding=True)
    assert_same_encoding(ours(TEXTS, **options), theirs(TEXTS, **options))


def test_decoding_equals_transformers(pair):
    ours, theirs = pair
    for ids in theirs(TEXTS)["input_ids"]:
        for skip in (False, True):
            assert ours.decode(ids, skip_special_tokens=skip) == theirs.decode(ids, skip_special_tokens=skip)
        assert ours.convert_ids_to_tokens(ids, skip_special_tokens=True) == theirs.convert_ids_to_tokens(
            ids, skip_special_tokens=True)

"""Byte-level BPE (vocab.json + merges.txt), trained here with the `tokenizers` library on French text.
Oracle: transformers 5's `RobertaTokenizer.from_pretrained(dir)`."""

from __future__ import annotations

import json

import pytest
from factory import CORPUS, assert_same_encoding, train_bytelevel_bpe

from coulisse.tokenizer import Tokenizer

TEXTS = CORPUS[:5] + [
    "Un  <mask>\tfilm\n« génial » 😍 \"ok\"  ",
    "a<mask>b, a <mask> b, a  <mask>  b",
    "  espaces en tête, et en queue   ",
    "<s> balises </s> <pad> <unk>",
    "Zèbres, œufs, ÆTHER, 東京, ①, ﬁn, \u00a0insécable",
    "",
]


@pytest.fixture(scope="module")
def bpe_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("bpe")
    train_bytelevel_bpe(directory)
    assert sorted(p.name for p in directory.iterdir()) == ["merges.txt", "vocab.json"]
    return directory


@pytest.fixture(scope="module")
def bpe(bpe_dir):
    from transformers import RobertaTokenizer

    return Tokenizer.from_dir(bpe_dir, model_type="roberta"), RobertaTokenizer.from_pretrained(str(bpe_dir))


@pytest.mark.parametrize("text", TEXTS, ids=range(len(TEXTS)))
def test_ids_equal_roberta_tokenizer(bpe, text):
    ours, theirs = bpe
    assert ours.source == "vocab.json + merges.txt"
    assert_same_encoding(ours(text), theirs(text))
    assert ours.tokenize(text) == theirs.tokenize(text)


def test_batch_pairs_and_truncation_equal_roberta_tokenizer(bpe):
    ours, theirs = bpe
    assert len(ours) == len(theirs)
    assert_same_encoding(ours(TEXTS, padding=True, return_tensors="np"),
                         theirs(TEXTS, padding=True, return_tensors="np"))
    assert_same_encoding(ours(TEXTS, TEXTS[::-1], padding=True, truncation=True, max_length=24),
                         theirs(TEXTS, TEXTS[::-1], padding=True, truncation=True, max_length=24))


def test_tokens_and_decoding_equal_roberta_tokenizer(bpe):
    ours, theirs = bpe
    ids = theirs(TEXTS[2])["input_ids"]
    assert ours.convert_ids_to_tokens(ids) == theirs.convert_ids_to_tokens(ids)
    assert ours.decode(ids, skip_special_tokens=True) == theirs.decode(ids, skip_special_tokens=True)


@pytest.mark.parametrize("settings", [{"add_prefix_space": True}, {"mask_token": {
    "content": "<mask>", "lstrip": True, "rstrip": False, "normalized": False, "single_word": False,
    "special": True, "__type": "AddedToken"}}], ids=["add_prefix_space", "mask-lstrip"])
def test_tokenizer_config_settings_are_honoured(tmp_path, bpe_dir, settings):
    from transformers import RobertaTokenizer

    for name in ("vocab.json", "merges.txt"):
        (tmp_path / name).write_bytes((bpe_dir / name).read_bytes())
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(settings))
    ours = Tokenizer.from_dir(tmp_path, model_type="roberta")
    theirs = RobertaTokenizer.from_pretrained(str(tmp_path))
    assert_same_encoding(ours(TEXTS, padding=True), theirs(TEXTS, padding=True))

"""The special tokens a tokenizer_config.json does not name are those of transformers 5's tokenizer class for the
family (BERT's has no bos / eos, DeBERTa-v2's bos is [CLS], FlauBERT's has no eos and ten extra ones), not a
guess from the vocabulary's spellings: a BERT vocabulary that also holds `<s>`, `<pad>`, `<mask>` keeps [CLS],
[PAD] (the padding id) and [MASK]."""

from __future__ import annotations

import json
import shutil

import pytest
from factory import assert_same_encoding, train_bytelevel_bpe, train_deberta_spm, train_moses_bpe, train_unigram

from coulisse.tokenizer import Tokenizer

NAMES = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token",
         "all_special_tokens", "pad_token_id", "cls_token_id", "mask_token_id")
TRAIN = {"deberta-v2": train_deberta_spm, "flaubert": train_moses_bpe, "roberta": train_bytelevel_bpe,
         "xlm-roberta": train_unigram}


def assert_same_specials(ours, theirs) -> None:
    assert {n: getattr(ours, n) for n in NAMES} == {n: getattr(theirs, n) for n in NAMES}


@pytest.mark.parametrize("added", [["<s>"], ["<s>", "</s>", "<pad>", "<mask>", "<unk>"]])
def test_a_bert_vocabulary_with_other_spellings_keeps_berts_tokens(tmp_path, minilm_dir, added):
    from transformers import AutoTokenizer

    shutil.copy(minilm_dir / "vocab.txt", tmp_path / "vocab.txt")
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}), encoding="utf-8")
    (tmp_path / "added_tokens.json").write_text(json.dumps({t: 30522 + i for i, t in enumerate(added)}),
                                                 encoding="utf-8")
    ours, theirs = Tokenizer.from_dir(tmp_path, model_type="bert"), AutoTokenizer.from_pretrained(str(tmp_path))
    assert_same_specials(ours, theirs)
    texts = ["Un film <mask> et long.", "Bof."]
    assert_same_encoding(ours(texts, padding=True), theirs(texts, padding=True))


@pytest.mark.parametrize("arch", list(TRAIN))
def test_the_family_defaults_equal_transformers(tmp_path, arch):
    from transformers import AutoTokenizer

    TRAIN[arch](tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": arch}), encoding="utf-8")
    assert_same_specials(Tokenizer.from_dir(tmp_path, model_type=arch), AutoTokenizer.from_pretrained(str(tmp_path)))

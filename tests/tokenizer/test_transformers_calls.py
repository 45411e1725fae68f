"""Calls written for transformers 5's tokenizer that coulisse's answers the same way: decode of a batch,
batch_decode of one sequence, batches of pairs as tuples, transformers' keywords at their no-op values (and the
one-line refusals of unknown keywords and of values coulisse cannot honour). Oracle: transformers 5 on the same
folder."""

from __future__ import annotations

import logging

import pytest
import torch
from factory import assert_same_encoding

from coulisse.errors import InputError

TEXTS = ["Je déteste tellement ça !", "Bof."]
PAIRS = [("Le film est-il bon ?", "Un chef-d'œuvre."), ["Qui joue ?", "Jean Dujardin."]]



def test_decode_of_rows_and_batch_decode_of_one_sequence(pair, caplog, monkeypatch):
    ours, theirs = pair
    monkeypatch.setattr("coulisse.tokenizer.tokenizer._WARNED", set())
    enc = theirs(TEXTS, padding=True, return_tensors="pt")
    for ids in (enc["input_ids"], enc["input_ids"].tolist(), enc["input_ids"].numpy()):
        for skip in (False, True):
            assert ours.decode(ids, skip_special_tokens=skip) == theirs.decode(ids, skip_special_tokens=skip)
    one = enc["input_ids"][0].tolist()
    with caplog.at_level(logging.WARNING):
        assert ours.batch_decode(one) == theirs.batch_decode(one)
        assert ours.batch_decode(torch.tensor(one)) == theirs.batch_decode(torch.tensor(one))
    assert "use `decode` instead" in caplog.text
    assert ours.batch_decode([]) == theirs.batch_decode([]) == []
    assert ours.decode(one, spaces_between_special_tokens=False) == theirs.decode(one,
                                                                                  spaces_between_special_tokens=False)


def test_batch_of_pairs_as_tuples(pair):
    ours, theirs = pair
    options = dict(padding=True, return_offsets_mapping=True)
    assert_same_encoding(ours(PAIRS, **options), theirs(PAIRS, **options))
    assert_same_encoding(ours(PAIRS), ours([p[0] for p in PAIRS], [p[1] for p in PAIRS]))


NO_OPS = dict(verbose=False, stride=0, is_split_into_words=False, return_overflowing_tokens=False, text_target=None,
              text_pair_target=None, split_special_tokens=False)


def test_transformers_keywords_at_their_defaults_are_accepted(pair):
    ours, theirs = pair
    assert_same_encoding(ours(TEXTS, padding=True, **NO_OPS), theirs(TEXTS, padding=True, **NO_OPS))
    assert_same_encoding(ours(TEXTS, tokenizer_kwargs={"padding": True, "max_length": 4, "truncation": True}),
                         theirs(TEXTS, tokenizer_kwargs={"padding": True, "max_length": 4, "truncation": True}))
    assert ours.encode(TEXTS[1], padding="max_length", max_length=12, verbose=False) == theirs.encode(
        TEXTS[1], padding="max_length", max_length=12, verbose=False)


@pytest.mark.parametrize(("call", "words"), [
    (lambda t: t(TEXTS, paddding=True), ["unknown keyword 'paddding'", "did you mean 'padding'"]),
    (lambda t: t(TEXTS, return_tensor="pt"), ["'return_tensor'", "did you mean 'return_tensors'"]),
    (lambda t: t(TEXTS, stride=128, return_overflowing_tokens=True), ["cannot honour stride=128", "stride=0"]),
    (lambda t: t(TEXTS, is_split_into_words=True), ["cannot honour is_split_into_words=True", "word_ids()"]),
    (lambda t: t.encode(TEXTS[0], foo=1), ["encode(...) got an unknown keyword 'foo'"]),
    (lambda t: t.decode([1, 2], skip_special_token=True), ["did you mean 'skip_special_tokens'"]),
])
def test_unknown_keywords_and_values_not_honoured_are_one_line(pair, call, words):
    ours, _ = pair
    with pytest.raises(InputError) as caught:
        call(ours)
    assert "\n" not in str(caught.value)
    assert all(w in str(caught.value) for w in words), str(caught.value)

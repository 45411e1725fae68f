"""The BatchEncoding a tokenizer call returns answers transformers' BatchEncoding methods (Encoding-backed
positions, `to`, `convert_to_tensors`, indexing). Oracle: transformers 5 on the same folder, on pairs with
offsets, right- and left-padded."""

from __future__ import annotations

import logging

import pytest
import torch

from coulisse.tokenizer import BatchEncoding, CharSpan, TokenSpan

QUESTIONS = ["Qui joue ?", "Quel est le titre du film de 2011 ?"]
CONTEXTS = ["Jean Dujardin joue le rôle principal.", "The Artist, un film muet."]



@pytest.mark.parametrize("side", ["right", "left"])
def test_positions_equal_transformers_on_padded_pairs(pair, side):
    ours, theirs = pair
    options = dict(return_offsets_mapping=True, padding=True, padding_side=side)
    a, b = ours(QUESTIONS, CONTEXTS, **options), theirs(QUESTIONS, CONTEXTS, **options)
    assert a.n_sequences == b.n_sequences == 2 and a.is_fast and b.is_fast
    for i in range(len(QUESTIONS)):
        assert a.sequence_ids(i) == b.sequence_ids(i)
        assert a.word_ids(i) == b.word_ids(i) and a.tokens(i) == b.tokens(i)
        assert a[i].ids == b[i].ids and a[i].offsets == b[i].offsets and a[i].tokens == b[i].tokens
        for t in range(len(b["input_ids"][i])):
            assert a.token_to_chars(i, t) == b.token_to_chars(i, t)
            assert a.token_to_word(i, t) == b.token_to_word(i, t)
            assert a.token_to_sequence(i, t) == b.token_to_sequence(i, t)
        for seq, texts in enumerate((QUESTIONS, CONTEXTS)):
            for c in range(len(texts[i]) + 1):
                assert a.char_to_token(i, c, sequence_index=seq) == b.char_to_token(i, c, sequence_index=seq)
                assert a.char_to_word(i, c, sequence_index=seq) == b.char_to_word(i, c, sequence_index=seq)
            for w in range(12):
                assert a.word_to_tokens(i, w, sequence_index=seq) == b.word_to_tokens(i, w, sequence_index=seq)
                if b.word_to_tokens(i, w, sequence_index=seq) is not None:  # transformers' raises past the end
                    assert a.word_to_chars(i, w, sequence_index=seq) == b.word_to_chars(i, w, sequence_index=seq)
    span = a.word_to_tokens(1, 2, sequence_index=1)
    assert isinstance(span, TokenSpan) and isinstance(a.token_to_chars(1, 2), CharSpan)
    assert type(b.word_to_tokens(1, 2, sequence_index=1)).__name__ == "TokenSpan"
    # one text: batch_or_char_index is the character
    one_a, one_b = ours(CONTEXTS[0]), theirs(CONTEXTS[0])
    assert one_a.char_to_token(5) == one_b.char_to_token(5) and one_a.token_to_chars(2) == one_b.token_to_chars(2)
    assert one_a.token_to_word(-2) == one_b.token_to_word(len(one_b["input_ids"]) - 2)  # theirs fails on -2
    assert [e.ids for e in a[:2]] == [e.ids for e in b[:2]]


def test_to_moves_but_never_casts(pair, caplog):
    """`inputs.to(torch.float16)` (APEX, or `.to(model.dtype)`) leaves ids int64, as transformers does."""
    ours, theirs = pair
    a, b = ours(QUESTIONS, padding=True, return_tensors="pt"), theirs(QUESTIONS, padding=True, return_tensors="pt")
    ids = a["input_ids"].clone()
    with caplog.at_level(logging.WARNING):
        assert a.to(torch.float16) is a
    b.to(torch.float16)
    assert a["input_ids"].dtype == b["input_ids"].dtype == torch.int64 and torch.equal(a["input_ids"], ids)
    assert "Attempting to cast a BatchEncoding to type torch.float16. This is not supported." in caplog.text
    assert a.to("cpu", non_blocking=True) is a and a.to(torch.device("cpu")).input_ids.dtype == torch.int64


def test_convert_to_tensors_and_data(pair):
    ours, theirs = pair
    a, b = ours(QUESTIONS, padding=True), theirs(QUESTIONS, padding=True)
    assert isinstance(a, BatchEncoding) and a.data["input_ids"] == b.data["input_ids"]
    a.convert_to_tensors("pt")
    b.convert_to_tensors("pt")
    assert all(torch.equal(a[k], b[k]) for k in b)
    one_a, one_b = ours(QUESTIONS[0]), theirs(QUESTIONS[0])
    one_a.convert_to_tensors("np", prepend_batch_axis=True)
    one_b.convert_to_tensors("np", prepend_batch_axis=True)
    assert one_a["input_ids"].shape == one_b["input_ids"].shape and one_a["input_ids"].dtype == one_b[
        "input_ids"].dtype

"""Copies of a tokenizer (audit 46): a shallow copy shares the backend, so it shares the record of the truncation
set on it (F1); its special tokens and settings are its own (F7). Oracle: transformers 5 on the same folder."""

from __future__ import annotations

import copy

import pytest
from factory import CORPUS, TEXTS, tokenizer_and_transformers

LONG = " ".join(CORPUS) * 3  # past 100 tokens


@pytest.fixture(params=["camembert", "minilm"])
def fresh(request, camembert_dir, minilm_dir):
    """A tokenizer of each layout, made for the test: these tests change them."""
    if request.param == "camembert":
        return tokenizer_and_transformers(camembert_dir, "camembert")
    return tokenizer_and_transformers(minilm_dir, "bert")


def test_a_shallow_copy_never_reads_a_truncation_the_original_set(fresh):
    """The copy kept its own record of the backend's truncation: once the original had set a limit, the copy's
    stale "none" skipped clearing it, and the copy's untruncated calls came back cut to the original's limit."""
    ours, theirs = fresh
    twin = copy.copy(ours)
    whole = theirs.tokenize(LONG)
    assert twin.tokenize(LONG) == whole and len(whole) > 100
    cut = ours(LONG, truncation=True, max_length=10)["input_ids"]
    assert cut == theirs(LONG, truncation=True, max_length=10)["input_ids"]
    assert twin.tokenize(LONG) == whole
    assert twin(LONG, truncation=False)["input_ids"] == theirs(LONG, truncation=False, verbose=False)["input_ids"]
    # and the other way round: the copy sets a limit, the original reads none
    assert twin(LONG, truncation=True, max_length=12)["input_ids"] == theirs(LONG, truncation=True,
                                                                             max_length=12)["input_ids"]
    assert ours.tokenize(LONG) == whole
    assert ours(LONG, truncation=True, max_length=10)["input_ids"] == cut


@pytest.mark.parametrize("how", ["copy", "as_transformers4"])
def test_a_token_set_on_a_copy_leaves_the_original_as_it_was(camembert_dir, how):
    """`as_transformers4` (a question-answering pipeline's window tokenizer) and `copy.copy` shared the
    special_tokens dict: a pad token set on the twin changed the original's pad_token, but not its pad_token_id."""
    ours, theirs = tokenizer_and_transformers(camembert_dir, "camembert")
    twin = copy.copy(ours) if how == "copy" else ours.as_transformers4()
    assert twin is not ours
    other = copy.deepcopy(theirs)
    twin.pad_token = other.pad_token = "<unk>"
    assert (ours.pad_token, ours.pad_token_id) == (theirs.pad_token, theirs.pad_token_id) == ("<pad>", 1)
    assert ours.special_tokens_map == {k: v for k, v in theirs.special_tokens_map.items() if isinstance(v, str)}
    assert ours(TEXTS, padding=True)["input_ids"] == theirs(TEXTS, padding=True)["input_ids"]
    assert (twin.pad_token, twin.pad_token_id) == (other.pad_token, other.pad_token_id)
    assert twin(TEXTS, padding=True)["input_ids"] == other(TEXTS, padding=True)["input_ids"]
    assert twin.settings is not ours.settings and twin.model_input_names is not ours.model_input_names

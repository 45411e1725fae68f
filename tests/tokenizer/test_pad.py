"""`tokenizer.pad` and the small API around special tokens, as transformers 5's; `DataCollatorWithPadding`
(the HF course's collator) driven with coulisse's tokenizer. Oracle: transformers 5 on the same folder."""

from __future__ import annotations

import pytest
import torch

TEXTS = ["Je déteste tellement ça !", "Bof.", "J'ai attendu un cours d'HuggingFace toute ma vie."]



def test_data_collator_with_padding_equals_transformers(pair):
    from transformers import DataCollatorWithPadding

    ours, theirs = pair
    features = [{**{k: v for k, v in theirs(t).items()}, "label": i % 2} for i, t in enumerate(TEXTS)]
    for options in ({}, {"pad_to_multiple_of": 8}, {"padding": "max_length", "max_length": 24}):
        a = DataCollatorWithPadding(ours, **options)([dict(f) for f in features])
        b = DataCollatorWithPadding(theirs, **options)([dict(f) for f in features])
        assert list(a.keys()) == list(b.keys())
        assert all(torch.equal(a[k], b[k]) for k in b)


@pytest.mark.parametrize("side", ["right", "left"])
def test_pad_equals_transformers(pair, side):
    ours, theirs = pair
    features = [{"input_ids": ids} for ids in theirs(TEXTS)["input_ids"]]
    for options in ({}, {"return_tensors": "pt"}, {"padding": "max_length", "max_length": 30},
                    {"return_attention_mask": False}):
        a = ours.pad([dict(f) for f in features], padding_side=side, **options)
        b = theirs.pad([dict(f) for f in features], padding_side=side, **options)
        assert list(a.keys()) == list(b.keys())
        for k in b:
            assert (torch.equal(a[k], b[k]) if torch.is_tensor(b[k]) else a[k] == b[k]), k
    dict_of_lists = theirs(TEXTS)
    assert ours.pad(dict(dict_of_lists))["input_ids"] == theirs.pad(dict(dict_of_lists))["input_ids"]


def test_special_token_helpers_equal_transformers(pair):
    ours, theirs = pair
    assert ours.special_tokens_map == {k: v for k, v in theirs.special_tokens_map.items() if isinstance(v, str)}
    assert ours.num_special_tokens_to_add() == theirs.num_special_tokens_to_add()
    assert ours.num_special_tokens_to_add(pair=True) == theirs.num_special_tokens_to_add(pair=True)
    ids = theirs(TEXTS[0])["input_ids"]
    assert ours.get_special_tokens_mask(ids, already_has_special_tokens=True) == theirs.get_special_tokens_mask(
        ids, already_has_special_tokens=True)
    assert ours.get_added_vocab() == theirs.get_added_vocab()

"""`tokenizer.pad` and the small API around special tokens, as transformers 5's; `DataCollatorWithPadding`
(the HF course's collator) driven with coulisse's tokenizer. Oracle: transformers 5 on the same folder."""

from __future__ import annotations

import itertools

import pytest
import torch

from coulisse.errors import InputError

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


def test_collator_features_as_tensors_and_float_labels_equal_transformers(pair):
    """A dataset formatted as torch (`set_format("torch")`) hands the collator one tensor per row: padded as
    transformers pads them, not refused ("sequences have different lengths"); a regression's or soft labels'
    floats stay float32 (they were cast to int64: 0.7 became 0); rows given as tensors or arrays come back so."""
    import numpy as np
    from transformers import DataCollatorWithPadding

    ours, theirs = pair
    for label in (lambda i: 0.25 + i, lambda i: [0.5, 0.5] if i else [1.0, 0.0], lambda i: torch.tensor(0.7 * i)):
        features = [{**{k: torch.tensor(v) for k, v in theirs(t).items()}, "label": label(i)}
                    for i, t in enumerate(TEXTS)]
        a = DataCollatorWithPadding(ours)([dict(f) for f in features])
        b = DataCollatorWithPadding(theirs)([dict(f) for f in features])
        assert list(a.keys()) == list(b.keys())
        assert all(a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]) for k in b), {k: a[k] for k in a}
    labels = (lambda i: 0.25 + i, lambda i: torch.tensor(0.25 + i), lambda i: torch.tensor(0.25 + i).double())
    for label, rows in itertools.product(labels, (list, torch.tensor)):  # rows as lists, or as tensors
        floats = [{"input_ids": rows(theirs(t)["input_ids"]), "label": label(i)} for i, t in enumerate(TEXTS)]
        for kind in ("np", "pt"):  # the dtypes transformers makes (float64 arrays, float32 tensors, mostly)
            a, b = ours.pad([dict(f) for f in floats], return_tensors=kind), theirs.pad(floats, return_tensors=kind)
            assert a["label"].dtype == b["label"].dtype and a["label"].tolist() == b["label"].tolist(), (kind, rows)
    # a column that is no number (a text column left in the data set) is named, not called a length mismatch
    with pytest.raises(InputError, match="column 'text' cannot be made a tensor"):
        DataCollatorWithPadding(ours)([{**theirs(t), "text": t} for t in TEXTS])
    rows = theirs(TEXTS)["input_ids"]
    for kind, make in (("pt", torch.tensor), ("np", np.asarray)):
        a, b = ours.pad({"input_ids": [make(r) for r in rows]}), theirs.pad({"input_ids": [make(r) for r in rows]})
        assert type(a["input_ids"]) is type(b["input_ids"]) and a["input_ids"].tolist() == b["input_ids"].tolist()
        assert a["attention_mask"].tolist() == b["attention_mask"].tolist(), kind


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


def _lists(batch) -> dict:
    return {k: v.tolist() if torch.is_tensor(v) else v for k, v in batch.items()}


@pytest.mark.parametrize("side", ["right", "left"])
def test_pad_to_max_length_without_one_pads_to_model_max_length(minilm_dir, side):
    """`pad(padding="max_length")` without max_length padded to the longest row; transformers pads to
    model_max_length, as the tokenizer's own call does (audit 46, F4: the width rule was written twice)."""
    from factory import tokenizer_and_transformers

    ours, theirs = tokenizer_and_transformers(minilm_dir, "bert")
    ours.model_max_length = theirs.model_max_length = 12
    features = [{"input_ids": ids} for ids in theirs(TEXTS[:2], truncation=True)["input_ids"]]
    for options in ({"padding": "max_length"}, {"padding": "max_length", "pad_to_multiple_of": 8},
                    {"padding": "max_length", "return_tensors": "pt"}, {"padding": True, "pad_to_multiple_of": 8}):
        a = ours.pad([dict(f) for f in features], padding_side=side, **options)
        b = theirs.pad([dict(f) for f in features], padding_side=side, **options)
        assert _lists(a) == _lists(b), options
    assert len(ours.pad([dict(f) for f in features], padding="max_length")["input_ids"][0]) == 12
    single = ours.pad(dict(features[1]), padding="max_length")
    assert _lists(single) == _lists(theirs.pad(dict(features[1]), padding="max_length"))
    # the call and pad: one width
    called = ours(TEXTS[:2], padding="max_length", padding_side=side)
    assert ours.pad({"input_ids": called["input_ids"]}, padding="max_length", padding_side=side)[
        "input_ids"] == called["input_ids"]


def test_pad_to_max_length_without_a_limit_pads_nothing(camembert_dir):
    """A folder that states no model_max_length, read without max_positions: transformers pads nothing to
    "max_length", in its call and in pad; pad padded to the longest row."""
    from transformers import AutoTokenizer

    from coulisse.tokenizer import Tokenizer

    ours = Tokenizer.from_dir(camembert_dir, model_type="camembert")
    theirs = AutoTokenizer.from_pretrained(str(camembert_dir))
    features = [{"input_ids": ids} for ids in theirs(TEXTS)["input_ids"]]
    a = ours.pad([dict(f) for f in features], padding="max_length")
    assert _lists(a) == _lists(theirs.pad([dict(f) for f in features], padding="max_length"))
    assert [len(row) for row in a["input_ids"]] == [len(f["input_ids"]) for f in features]


@pytest.mark.parametrize("value", [0, -8, 2.5, "8", True])
def test_pad_refuses_a_multiple_that_is_not_a_positive_int_as_the_call_does(pair, value):
    """transformers fails on these with a ZeroDivisionError or a TypeError (or pads to multiples of True); pad
    now says it as the call does."""
    from coulisse.errors import InputError

    ours, theirs = pair
    features = [{"input_ids": ids} for ids in theirs(TEXTS)["input_ids"]]
    for call in (lambda: ours.pad(features, pad_to_multiple_of=value),
                 lambda: ours(TEXTS, padding=True, pad_to_multiple_of=value)):
        with pytest.raises(InputError, match=rf"pad_to_multiple_of={value!r}; pass a positive int"):
            call()

"""`tokenizer.pad_token = tokenizer.eos_token` and the other special-token setters (audit 38, F6), as transformers
5's on the same folder; a token outside the vocabulary is refused (coulisse has no add_tokens)."""

from __future__ import annotations

import pytest
from factory import tokenizer_and_transformers

from coulisse.errors import InputError

TEXTS = ["Je déteste tellement ça !", "Bof.", "J'ai attendu un cours d'HuggingFace toute ma vie."]
NAMES = ("pad", "eos", "bos", "unk", "sep", "cls", "mask")


@pytest.fixture(params=["camembert", "minilm"])
def pair(request, camembert_dir, minilm_dir):
    """Made for each test: the tests set special tokens."""
    return tokenizer_and_transformers(camembert_dir if request.param == "camembert" else minilm_dir,
                                      "camembert" if request.param == "camembert" else "bert")


@pytest.mark.parametrize("side", ["right", "left"])
def test_pad_token_set_to_another_special_token_pads_as_transformers(pair, side):
    ours, theirs = pair
    new = theirs.eos_token or theirs.sep_token  # BERT has no eos token
    assert new != theirs.pad_token
    ours.pad_token, theirs.pad_token = ours.eos_token or ours.sep_token, new
    assert (ours.pad_token, ours.pad_token_id) == (theirs.pad_token, theirs.pad_token_id)
    a = ours(TEXTS, padding=True, padding_side=side)
    b = theirs(TEXTS, padding=True, padding_side=side)
    assert a["input_ids"] == b["input_ids"] and a["attention_mask"] == b["attention_mask"]
    assert ours(TEXTS, padding=True, return_tensors="pt")["input_ids"].tolist() == theirs(
        TEXTS, padding=True, return_tensors="pt")["input_ids"].tolist()
    # tokenizer.pad (DataCollatorWithPadding) uses the new pad token too
    rows = [{"input_ids": ours(t)["input_ids"]} for t in TEXTS]
    assert ours.pad(rows)["input_ids"] == theirs.pad(rows)["input_ids"]


@pytest.mark.parametrize("name", NAMES)
def test_each_setter_takes_a_vocabulary_token_as_transformers(pair, name):
    ours, theirs = pair
    token = theirs.unk_token if name != "unk" else theirs.cls_token
    setattr(ours, f"{name}_token", token)
    setattr(theirs, f"{name}_token", token)
    assert getattr(ours, f"{name}_token") == getattr(theirs, f"{name}_token") == token
    assert getattr(ours, f"{name}_token_id") == getattr(theirs, f"{name}_token_id") == ours.convert_tokens_to_ids(
        token)


def test_added_token_object_is_read_as_its_content(pair):
    from tokenizers import AddedToken

    ours, theirs = pair
    ours.mask_token = AddedToken(theirs.unk_token, special=True)
    assert ours.mask_token == theirs.unk_token and ours.mask_token_id == theirs.unk_token_id


def test_a_token_outside_the_vocabulary_is_refused_in_one_line(pair):
    ours, _ = pair
    before = ours.pad_token, ours.pad_token_id
    with pytest.raises(InputError) as e:
        ours.pad_token = "<pas-dans-le-vocabulaire>"
    message = str(e.value)
    assert "\n" not in message and "'<pas-dans-le-vocabulaire>'" in message and "add_tokens" in message
    assert (ours.pad_token, ours.pad_token_id) == before
    with pytest.raises(InputError, match="must be a string"):
        ours.eos_token = 3


def test_pad_token_none(pair):
    """Without a pad token, pad_token_id is None and every padding is refused, as transformers refuses it (coulisse
    padded with id 0: "[PAD]" for BERT, "<s>NOTUSED" for CamemBERT); a call without padding is as before."""
    ours, theirs = pair
    ours.pad_token, theirs.pad_token = None, None
    assert (ours.pad_token, ours.pad_token_id) == (theirs.pad_token, theirs.pad_token_id) == (None, None)
    for options in (dict(padding=True), dict(padding="max_length", max_length=32, truncation=True)):
        with pytest.raises(ValueError, match="pad"):
            theirs(TEXTS, **options)
        with pytest.raises(InputError, match="needs a pad token and this tokenizer has none"):
            ours(TEXTS, **options)
    features = [ours(t) for t in TEXTS]
    with pytest.raises(ValueError, match="pad"):
        theirs.pad([theirs(t) for t in TEXTS])
    with pytest.raises(InputError, match="needs a pad token"):
        ours.pad(features)
    assert ours(TEXTS)["input_ids"] == theirs(TEXTS)["input_ids"]
    assert ours.pad(features, padding=False)["input_ids"] == theirs(TEXTS)["input_ids"]

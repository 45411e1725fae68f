"""The tokenizer object answers with transformers' habits: argument names, output shapes, dtypes, padding
and truncation options, offsets. Oracle: transformers 5 on the same files."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from factory import assert_same_encoding

from coulisse.errors import InputError
from coulisse.tokenizer import BatchEncoding, Tokenizer

TEXTS = ["J'ai attendu un cours d'HuggingFace toute ma vie.", "Je déteste tellement ça !", "Bof."]


@pytest.fixture(scope="module", params=["camembert", "minilm"])
def pair(request, camembert_dir, minilm_dir):
    from transformers import AutoTokenizer

    directory = camembert_dir if request.param == "camembert" else minilm_dir
    model_type = "camembert" if request.param == "camembert" else "bert"
    ours = Tokenizer.from_dir(directory, model_type=model_type, max_positions=512)
    return ours, AutoTokenizer.from_pretrained(str(directory))


@pytest.mark.parametrize("return_tensors", ["pt", "np"])
def test_tensors_have_transformers_types(pair, return_tensors):
    ours, theirs = pair
    a = ours(TEXTS, padding=True, truncation=True, return_tensors=return_tensors)
    b = theirs(TEXTS, padding=True, truncation=True, return_tensors=return_tensors)
    assert_same_encoding(a, b)
    for key in b:
        assert type(a[key]) is type(b[key]) and a[key].dtype == b[key].dtype, key
    assert isinstance(a, BatchEncoding) and a.input_ids is a["input_ids"]


def test_single_string_gives_flat_lists(pair):
    ours, theirs = pair
    a, b = ours(TEXTS[0]), theirs(TEXTS[0])
    assert isinstance(a["input_ids"][0], int)
    assert_same_encoding(a, b)
    # A one-element batch keeps its batch axis, with and without tensors.
    assert_same_encoding(ours([TEXTS[0]]), theirs([TEXTS[0]]))
    assert ours(TEXTS[0], return_tensors="pt")["input_ids"].shape == theirs(TEXTS[0], return_tensors="pt")[
        "input_ids"].shape


def test_padding_to_max_length_and_no_padding(pair):
    ours, theirs = pair
    assert_same_encoding(ours(TEXTS, padding="max_length", truncation=True, max_length=12),
                         theirs(TEXTS, padding="max_length", truncation=True, max_length=12))
    assert_same_encoding(ours(TEXTS, padding=False), theirs(TEXTS, padding=False))
    assert_same_encoding(ours(TEXTS, padding="longest"), theirs(TEXTS, padding="longest"))


def test_truncation_is_off_unless_asked_as_in_transformers(pair):
    ours, theirs = pair
    long = "Un film très long et très lent. " * 120
    assert_same_encoding(ours(long), theirs(long))
    assert len(ours(long)["input_ids"]) > 512
    assert_same_encoding(ours(long, max_length=40, truncation=True),
                         theirs(long, max_length=40, truncation=True))
    assert_same_encoding(ours(long, truncation=True), theirs(long, truncation=True, max_length=512))


def test_offsets_and_special_tokens_flag(pair):
    ours, theirs = pair
    assert_same_encoding(ours(TEXTS, return_offsets_mapping=True),
                         theirs(TEXTS, return_offsets_mapping=True))
    assert_same_encoding(ours(TEXTS, add_special_tokens=False), theirs(TEXTS, add_special_tokens=False))


def test_tensors_of_ragged_batch_need_padding(pair):
    ours, _ = pair
    with pytest.raises(InputError, match="padding=True"):
        ours(TEXTS, return_tensors="pt")
    with pytest.raises(InputError, match="return_tensors"):
        ours(TEXTS, padding=True, return_tensors="tf")
    with pytest.raises(InputError, match="padding"):
        ours(TEXTS, padding="sideways")
    with pytest.raises(InputError, match="pairs"):
        ours(TEXTS, TEXTS[:1])


def test_tokenizer_is_thread_safe_across_truncation_settings(pair):
    """Truncation is backend state: concurrent calls with different limits must not leak into each other."""
    from concurrent.futures import ThreadPoolExecutor

    ours, theirs = pair
    long = "Un film très long et très lent. " * 60
    expected = {n: theirs([long] * 4, truncation=True, max_length=n)["input_ids"] for n in (16, 64, 256)}
    jobs = [n for n in (16, 64, 256) for _ in range(20)]
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(
            lambda n: (n, ours([long] * 4, truncation=True, max_length=n)["input_ids"]), jobs))
    assert all(ids == expected[n] for n, ids in results)


def test_pytorch_tensors_feed_the_notebook_model_call(pair):
    ours, _ = pair
    inputs = ours(TEXTS, padding=True, truncation=True, return_tensors="pt")
    assert inputs["input_ids"].dtype == torch.int64
    assert inputs["attention_mask"].shape == inputs["input_ids"].shape
    assert np.array_equal(inputs["attention_mask"].sum(1).numpy(),
                          [len(e.ids) for e in ours.encode_batch(TEXTS)])


def test_the_model_call_takes_what_the_tokenizer_returned(minilm_dir):
    """`model(**tokenizer(..., return_offsets_mapping=True))` runs in transformers 5 (its forward takes **kwargs):
    the tokenizer's own fields pass unread; a keyword no one returns is still a TypeError."""
    from coulisse import pipeline

    pipe = pipeline("feature-extraction", model=minilm_dir)
    ours, model = pipe.tokenizer, pipe.model
    plain = ours(TEXTS, padding=True, return_tensors="pt")
    rich = ours(TEXTS, padding=True, return_tensors="pt", return_offsets_mapping=True,
                return_special_tokens_mask=True, return_length=True)
    assert {"offset_mapping", "special_tokens_mask", "length"} <= set(rich)
    assert torch.equal(model(**rich).last_hidden_state, model(**plain).last_hidden_state)
    with pytest.raises(TypeError, match="unexpected keyword argument 'offsets'"):
        model(**plain, offsets=rich["offset_mapping"])
    # transformers' BertModel adds pooler_output; coulisse's says it does not compute it, and what to take
    out = model(**plain)
    with pytest.raises(AttributeError, match=r"pooler_output is not computed.*last_hidden_state\[:, 0\]"):
        _ = out.pooler_output
    assert not hasattr(out, "pooler") and len(out) == 1


FIRSTS = ["J'ai attendu un cours d'HuggingFace toute ma vie, et le voici enfin devant moi.",
          "Un film long, lent et bavard : on s'ennuie ferme pendant deux heures et quart."]
SECONDS = ["Le scénario est prévisible, mais la fin reste un chef-d'œuvre d'émotion pure.",
           "Une bande originale géniale, des décors somptueux et une héroïne très attachante."]


@pytest.mark.parametrize("truncation", [None, True, False, "longest_first", "only_first", "only_second",
                                        "do_not_truncate"])
@pytest.mark.parametrize("padding", [False, True, "max_length"])
def test_truncation_strategies_equal_transformers(pair, truncation, padding):
    """A strategy string is honoured (it was read as True), and `truncation=None` truncates only when
    max_length comes without padding, as transformers decides."""
    ours, theirs = pair
    options = dict(truncation=truncation, padding=padding, max_length=36)  # each member fits, the pair does not
    assert_same_encoding(ours(FIRSTS, SECONDS, **options), theirs(FIRSTS, SECONDS, **options))
    if truncation != "only_second":
        options["max_length"] = 14
        assert_same_encoding(ours(FIRSTS, **options), theirs(FIRSTS, **options))


def test_truncation_strategies_that_cannot_apply_are_named(pair):
    ours, theirs = pair
    with pytest.raises(InputError, match="not one of True, False, 'longest_first', 'only_first', 'only_second', "
                                         "'do_not_truncate'"):
        ours(FIRSTS, truncation="sideways", max_length=5)
    with pytest.raises(ValueError):
        theirs(FIRSTS, truncation="sideways", max_length=5)
    # transformers lets the Rust library raise a bare Exception for these two
    for args, strategy in (((FIRSTS,), "only_second"), ((["Bof."], ["Un long texte de plus " * 5]), "only_first")):
        with pytest.raises(Exception, match="Truncation error"):
            theirs(*args, truncation=strategy, max_length=6)
        with pytest.raises(InputError, match=strategy) as info:
            ours(*args, truncation=strategy, max_length=6)
        assert "\n" not in str(info.value)

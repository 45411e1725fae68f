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


def test_rows_as_a_list_of_tensors_and_ids_that_are_not_integers(pair):
    """`batch_decode([tensor, tensor])`, a loop's rows, decodes as transformers does (it raised "only one element
    tensors can be converted"); a float id is refused as tokenizers refuses it, not floored to another token."""
    ours, theirs = pair
    rows = list(theirs(TEXTS, padding=True, return_tensors="pt")["input_ids"])
    assert ours.batch_decode(rows, skip_special_tokens=True) == theirs.batch_decode(rows, skip_special_tokens=True)
    assert ours.decode(rows[0][1]) == theirs.decode(rows[0][1])  # a 0-d tensor: one id
    first = int(rows[0][1])
    for bad in ([first + 0.5], torch.tensor([float(first)]), [torch.tensor(float(first))]):
        with pytest.raises(TypeError):
            theirs.decode(bad)
        with pytest.raises(TypeError, match="token ids are integers"):
            ours.decode(bad)
    with pytest.raises(TypeError, match="not a string"):
        ours.decode("Bof.")


def test_tokenize_reads_the_whole_text_whatever_the_last_call_truncated(pair):
    """Truncation is the backend's state: `tokenize` after a call that truncated to 10 (or a pipeline's 512) gave
    10 tokens. transformers' tokenize never truncates."""
    ours, theirs = pair
    long = "Un film très long et très lent. " * 30
    ours([long], truncation=True, max_length=10)
    assert ours.tokenize(long) == theirs.tokenize(long)
    assert len(ours.tokenize(long)) > 100
    ours([long], truncation=True, max_length=10)
    assert ours.tokenize(long, TEXTS[0], add_special_tokens=True) == theirs.tokenize(long, TEXTS[0],
                                                                                     add_special_tokens=True)


def test_a_wrong_padding_side_names_where_it_was_set(pair):
    ours, _ = pair
    with pytest.raises(InputError, match="padding_side='middle'; use 'right' or 'left'"):
        ours(TEXTS, padding=True, padding_side="middle")
    twin = ours.__copy__()
    twin.padding_side = "middle"
    with pytest.raises(InputError, match="the tokenizer's padding_side is 'middle'; use 'right' or 'left'"):
        twin(TEXTS, padding=True)


def test_max_length_and_text_pair_mistakes_are_refused(pair):
    """max_length=0 cut and padded to the model's 512 (read as "not given"; transformers then cuts and pads
    nothing), and a string paired with a list was encoded as a pair (transformers raises TypeError)."""
    ours, theirs = pair
    for bad in (0, -3, "10", 2.5, True):
        with pytest.raises(InputError, match=f"max_length={bad!r}; pass a positive number of tokens"):
            ours(TEXTS, truncation=True, max_length=bad)
    import numpy as np

    want = theirs(TEXTS[0], truncation=True, max_length=4)["input_ids"]
    # what df.col.max() gives, a 0-d tensor, a whole float: taken as transformers takes them (audit 44, review)
    for given in (4, np.int64(4), np.int32(4), torch.tensor(4), 4.0):
        assert ours(TEXTS[0], truncation=True, max_length=given)["input_ids"] == want, given
    for text, text_pair in ((TEXTS[0], [TEXTS[1]]), ([TEXTS[0]], TEXTS[1])):
        with pytest.raises(TypeError):
            theirs(text, text_pair)
        with pytest.raises(InputError, match="pass a string with a string, or lists of the same length"):
            ours(text, text_pair)


def test_vocab_and_pad_token_type_id_as_transformers(pair):
    ours, theirs = pair
    assert ours.vocab == theirs.vocab and ours.pad_token_type_id == theirs.pad_token_type_id == 0


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
    (lambda t: t(TEXTS, stride=-1, return_overflowing_tokens=True), ["stride=-1 is the number of tokens"]),
    (lambda t: t([["mot"] * 60], is_split_into_words=True, truncation=True, max_length=16, stride=20),
     ["stride=20 is not less than the 14 tokens a row keeps"]),
    # the Rust library panics where a pair's window leaves no more than the stride to the member it cuts
    (lambda t: t(["mot " * 31], ["autre " * 200], truncation=True, max_length=64, stride=31,
                 return_overflowing_tokens=True), ["cannot cut windows with this stride", "lower stride="]),
    (lambda t: t(TEXTS, text_target=TEXTS * 300), ["cannot honour text_target=['", "characters as written)"]),
    (lambda t: t(TEXTS[0], is_split_into_words=True), ["text with is_split_into_words=True is a list of words"]),
    (lambda t: t([["a", 1]], is_split_into_words=True), ["text[0] with is_split_into_words=True must be a list"]),
    (lambda t: t.add_tokens(["<nouveau>"]), ["no add_tokens", "resize_token_embeddings"]),
    (lambda t: t.add_special_tokens({"pad_token": "<pad2>"}), ["no add_special_tokens", "pad_token = "]),
    (lambda t: t.encode(TEXTS[0], foo=1), ["encode(...) got an unknown keyword 'foo'"]),
    (lambda t: t.decode([1, 2], skip_special_token=True), ["did you mean 'skip_special_tokens'"]),
])
def test_unknown_keywords_and_values_not_honoured_are_one_line(pair, call, words):
    ours, _ = pair
    with pytest.raises(InputError) as caught:
        call(ours)
    assert "\n" not in str(caught.value)
    assert all(w in str(caught.value) for w in words), str(caught.value)


WORDS = [["L'", "acteur", "Jean", "Dujardin", "joue", "à", "Paris", "."], ["Un", "film", "magnifique", "!", "😍"],
         ["Café", "crème"]]


@pytest.mark.parametrize("options", [{}, {"truncation": True, "max_length": 6},
                                     {"padding": True, "return_tensors": "pt"}, {"return_offsets_mapping": True},
                                     {"add_special_tokens": False},
                                     {"truncation": True, "max_length": 5, "padding": "max_length"}])
def test_words_split_beforehand_equal_transformers(pair, options):
    """The course's token classification (chapter 7): `tokenizer(examples["tokens"], is_split_into_words=True,
    truncation=True)`, then `word_ids(i)` to put each word's label on its tokens. It was refused, with advice
    (join the words with spaces) that numbers BERT's words otherwise: "L'" is two words there, so every label
    after it moved one token (training-interop audit)."""
    ours, theirs = pair
    for words in (WORDS, WORDS[0]):
        a, b = ours(words, is_split_into_words=True, **options), theirs(words, is_split_into_words=True, **options)
        assert_same_encoding(a, b)
        for i in range(len(WORDS) if words is WORDS else 1):
            assert a.word_ids(i) == b.word_ids(i)
    pairs = [["Oui"], ["Non", "merci"]]
    a = ours(WORDS[:2], pairs, is_split_into_words=True, truncation=True, max_length=7)
    b = theirs(WORDS[:2], pairs, is_split_into_words=True, truncation=True, max_length=7)
    assert_same_encoding(a, b)
    assert a.word_ids(1) == b.word_ids(1) and a.sequence_ids(1) == b.sequence_ids(1)


def test_backend_tokenizer_is_the_rust_tokenizer_that_encodes(pair):
    ours, _ = pair
    text = "Un film magnifique !"
    assert ours.backend_tokenizer is ours.backend
    expected = ours(text)["input_ids"]  # a call without truncation leaves none on the backend
    assert ours.backend_tokenizer.encode(text).ids == expected


def test_labels_padded_with_minus_100_are_said_when_decoded(pair):
    """The course decodes labels in compute_metrics: -100 (the positions a loss ignores) is no id. transformers
    raises the Rust library's OverflowError ("out of range integral type conversion attempted"); coulisse raises
    the same class, saying what -100 is and how to decode such labels."""
    ours, theirs = pair
    ids = ours("Un film magnifique !")["input_ids"] + [-100, -100]
    with pytest.raises(OverflowError):
        theirs.decode(ids)
    with pytest.raises(OverflowError, match="-100 marks the labels a loss ignores.*pad_token_id"):
        ours.decode(ids)
    with pytest.raises(OverflowError, match="token id -3 is no token"):
        ours.batch_decode([[5, -3]])
    fixed = [i if i != -100 else ours.pad_token_id for i in ids]
    assert ours.decode(fixed, skip_special_tokens=True) == theirs.decode(fixed, skip_special_tokens=True)


QUESTIONS = ["Où dort le chat ?", "Qui ?", "Et la souris ?"]
CONTEXTS = ["Le chat dort sur le canapé depuis ce matin, et la souris danse. " * 3, "Personne.",
            "Elle danse dans la cuisine, loin du chat endormi. " * 5]


@pytest.mark.parametrize(("args", "options"), [
    # the course's question answering preprocessing (chapter 7)
    ((QUESTIONS, CONTEXTS), dict(max_length=24, truncation="only_second", stride=6, return_overflowing_tokens=True,
                                 return_offsets_mapping=True, padding="max_length")),
    ((QUESTIONS, CONTEXTS), dict(max_length=24, truncation="only_second", stride=6, return_overflowing_tokens=True,
                                 return_tensors="pt", padding=True)),
    ((CONTEXTS, QUESTIONS), dict(max_length=24, truncation="only_first", stride=4, return_overflowing_tokens=True)),
    ((QUESTIONS, CONTEXTS), dict(max_length=24, truncation=True, stride=6, return_overflowing_tokens=True)),
    ((QUESTIONS, CONTEXTS), dict(return_overflowing_tokens=True)),
    ((QUESTIONS[0], CONTEXTS[0]), dict(max_length=24, truncation="only_second", stride=6,
                                       return_overflowing_tokens=True)),
    (([CONTEXTS[0], "court"],), dict(max_length=12, truncation=True, stride=3, return_overflowing_tokens=True,
                                     return_offsets_mapping=True)),
    (([CONTEXTS[0], "court"],), dict(max_length=12, truncation=True, stride=3)),  # no overflow asked: none given
    # stride 0 (the default): every window, none shared (the prefix plans kept the first alone: session review)
    (([CONTEXTS[2], "court"],), dict(max_length=12, truncation=True, return_overflowing_tokens=True)),
    ((QUESTIONS, CONTEXTS), dict(max_length=24, truncation=True, return_overflowing_tokens=True)),
    # words split beforehand, cut into windows too
    (([c.split() for c in CONTEXTS],), dict(is_split_into_words=True, max_length=16, truncation=True, stride=4,
                                            return_overflowing_tokens=True, return_offsets_mapping=True)),
    (([q.split() for q in QUESTIONS], [c.split() for c in CONTEXTS]),
     dict(is_split_into_words=True, max_length=24, truncation="only_second", stride=5,
          return_overflowing_tokens=True)),
    (([],), dict(is_split_into_words=True)),  # a text of no words: its special tokens alone
])
def test_overflowing_windows_equal_transformers(pair, args, options):
    """`return_overflowing_tokens=True, stride=...` was refused: the course's question answering (chapter 7)
    cuts each context into windows this way and reads `overflow_to_sample_mapping`, `sequence_ids(i)` and the
    offsets of each window (training-interop audit)."""
    ours, theirs = pair
    for side in ("right", "left"):
        ours.truncation_side = theirs.truncation_side = side
        try:
            a, b = ours(*args, **options), theirs(*args, **options)
        finally:
            ours.truncation_side = theirs.truncation_side = "right"
        assert list(a.keys()) == list(b.keys())
        assert_same_encoding(a, b)
        for i in range(len(b.encodings)):  # rows (one text without overflow is not a batch)
            assert a.sequence_ids(i) == b.sequence_ids(i) and a.word_ids(i) == b.word_ids(i), (side, i)


def test_transformers_keyword_names(pair, tmp_path):
    """The keywords transformers' own signatures name: `decode(token_ids=)`, `tokenize(text, pair=)`,
    `save_pretrained(save_directory=)`, `encode(..., stride=0)` (audit 48: TypeError, or refused as unknown)."""
    ours, theirs = pair
    ids = theirs("Je déteste tellement ça !")["input_ids"]
    assert ours.decode(token_ids=ids) == theirs.decode(token_ids=ids)
    assert ours.tokenize("Le film", pair="est bon.") == theirs.tokenize("Le film", pair="est bon.")
    assert ours.encode("Le film est bon.", stride=0) == theirs.encode("Le film est bon.", stride=0)
    written = ours.save_pretrained(save_directory=tmp_path / "saved")
    assert (tmp_path / "saved" / "tokenizer.json").is_file() and written


def test_coulisse_0_1_keyword_names_still_work_with_a_warning(pair, tmp_path):
    """The names 0.1.0 had (`decode(ids=)`, `tokenize(text_pair=)`, `save_pretrained(directory=)`) give the same
    answer for one release, with a FutureWarning naming transformers' (audit 48: a TypeError that never said
    `ids`); both names at once is a TypeError."""
    ours, _ = pair
    ids = ours("Je déteste tellement ça !")["input_ids"]
    with pytest.warns(FutureWarning, match=r"decode\(ids=...\) is now decode\(token_ids=...\)"):
        assert ours.decode(ids=ids) == ours.decode(ids)
    with pytest.warns(FutureWarning, match=r"tokenize\(text_pair=...\) is now tokenize\(pair=...\)"):
        assert ours.tokenize("Le film", text_pair="est bon.") == ours.tokenize("Le film", "est bon.")
    with pytest.warns(FutureWarning, match=r"save_pretrained\(directory=...\) is now"):
        ours.save_pretrained(directory=tmp_path / "old")
    assert (tmp_path / "old" / "tokenizer.json").is_file()
    with pytest.raises(TypeError, match="pass token_ids= alone"):
        ours.decode(ids, ids=ids)
    with pytest.raises(TypeError, match="missing 1 required positional argument: 'token_ids'"):
        ours.decode()

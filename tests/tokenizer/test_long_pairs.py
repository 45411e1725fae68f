"""Long text pairs under `longest_first`: the Rust tokenizers cut both members into windows and pair every
window of one with every window of the other, so two texts of 70,000 words took 22 GB (the server was killed).
The tokenizer now truncates such pairs through prefixes of their texts. Oracle: the backend's own truncation
of the whole texts (what transformers' fast tokenizers run), reached by making the prefixes' margin larger than
any text (`CUT_MARGIN`), and, for the Python tokenizers, their own `truncate` of the whole texts."""

from __future__ import annotations

import random

import pytest
from factory import copy_camembert_layout, train_moses_bpe

import coulisse.tokenizer.truncation as module
from coulisse.config import EncoderConfig
from coulisse.errors import InputError
from coulisse.tokenizer import Tokenizer

WORDS = ["le", "film", "était", "vraiment", "très", "bon", "!", "l'acteur", "anticonstitutionnellement", "😀", "a",
         "b,c", "  ", "\n", "ﷺ", "ça", "Qu’en", "dire", "?", "1 000", "é"]


@pytest.fixture(scope="module", params=["camembert", "minilm", "flaubert"])
def tokenizer(request, tmp_path_factory, camembert_spm, minilm_dir) -> Tokenizer:
    if request.param == "minilm":
        return Tokenizer.from_dir(minilm_dir)
    directory = tmp_path_factory.mktemp(request.param)
    if request.param == "camembert":
        copy_camembert_layout(camembert_spm, directory)  # tblard/tf-allocine's layout, read as the pipeline does
        return Tokenizer.from_dir(directory, model_type="camembert", max_positions=512)
    pytest.importorskip("sacremoses")
    train_moses_bpe(directory)
    return Tokenizer.from_dir(directory, model_type="flaubert", max_positions=512)


def texts(rng: random.Random, most: int) -> str:
    return "".join(rng.choice(WORDS) + rng.choice([" ", "", " "]) for _ in range(rng.randint(0, most)))


def fields(e) -> tuple:
    return (e.ids, e.type_ids, e.tokens, e.offsets, e.word_ids, e.sequence_ids, e.special_tokens_mask,
            e.attention_mask)


def whole_texts(tokenizer: Tokenizer, monkeypatch, *args, **kwargs) -> list:
    """The encodings as truncated from the whole texts: a margin no text reaches keeps every text whole."""
    with monkeypatch.context() as m:
        m.setattr(module, "CUT_MARGIN", 10**9)
        return tokenizer.encode_batch(*args, **kwargs)


def test_the_lengths_kept_are_the_backends(minilm_dir):
    """`longest_first_lengths` against the backend, every pair of lengths to 14 and every budget to 13 (odd
    budgets decide which member keeps the odd token, ties included)."""
    tok = Tokenizer.from_dir(minilm_dir)
    for budget in range(1, 14):
        for n1 in range(15):
            for n2 in range(15):
                with tok._lock:
                    tok._set_truncation(budget + 3, 0, "longest_first")
                    e = tok._encode([("a " * n1, "b " * n2)], True)[0]
                kept = (e.sequence_ids.count(0), e.sequence_ids.count(1))
                assert module.longest_first_lengths(n1, n2, budget) == kept, (n1, n2, budget)


@pytest.mark.parametrize("direction", ["right", "left"])
def test_pairs_are_truncated_as_from_the_whole_texts(tokenizer, monkeypatch, direction):
    """Every field of 200 random pairs (words cut, emoji, ligatures NFKC expands, spaces), at limits from 4 to
    70 tokens, equals the truncation of the whole texts; on the right, the prefixes were used (fewer windows
    left over) for most pairs, so the comparison is not of a path with itself. From the left, where no prefix is
    read (the path is the whole texts'), the first 60 of those pairs: each is slow there (every window kept)."""
    rng = random.Random(7)
    pairs = [(texts(rng, 120), texts(rng, 120), rng.randint(4, 70)) for _ in range(200)]
    pairs = pairs if direction == "right" else pairs[:60]
    shortened = 0
    for a, b, limit in pairs:
        ours, = tokenizer.encode_batch([a], [b], max_length=limit, direction=direction)
        whole, = whole_texts(tokenizer, monkeypatch, [a], [b], max_length=limit, direction=direction)
        assert fields(ours) == fields(whole), (a, b, limit)
        shortened += len(ours.overflowing) < len(whole.overflowing)
    if direction == "right":
        assert shortened > 100
    else:
        assert shortened == 0


def test_a_batch_mixes_long_and_short_pairs(minilm_dir, monkeypatch):
    tok = Tokenizer.from_dir(minilm_dir)
    rng = random.Random(3)
    firsts = [texts(rng, 400) for _ in range(20)]
    seconds = [texts(rng, 30) if i % 3 else texts(rng, 600) for i in range(20)]
    ours = tok.encode_batch(firsts, seconds, max_length=128)
    whole = whole_texts(tok, monkeypatch, firsts, seconds, max_length=128)
    assert [fields(e) for e in ours] == [fields(e) for e in whole]


def test_two_long_texts_leave_a_few_windows(tokenizer):
    """Two members of 12,000 tokens each: the backend alone made ~2,200 windows of 512 tokens (70,000: 22 GB).
    Through prefixes of the limit and `CUT_MARGIN` tokens, each member half of which is kept, three windows
    each: 3 x 3 pairs, the first the encoding, eight left over."""
    text = "film " * 12_000
    e, = tokenizer.encode_batch([text], [text], max_length=512)
    assert len(e) == 512
    assert len(e.overflowing) <= 8
    assert e.sequence_ids.count(0) + e.sequence_ids.count(1) == 512 - tokenizer.backend.num_special_tokens_to_add(True)


def test_two_long_texts_cut_from_the_left_are_refused(tokenizer):
    text = "film " * 12_000
    with pytest.raises(InputError, match="truncated from the left.*truncate from the right"):
        tokenizer.encode_batch([text], [text], max_length=512, direction="left")
    # one long member and a short one cost one window per window of the long one: encoded
    e, = tokenizer.encode_batch([text], ["bon film"], max_length=512, direction="left")
    assert len(e) == 512


def test_long_pairs_equal_transformers(minilm_dir, camembert_dir):
    """The claim users read: the same ids as transformers' tokenizer on the same folder (its fast tokenizer runs
    the backend's truncation on the whole texts), for pairs long enough to be cut through prefixes."""
    from transformers import AutoTokenizer

    rng = random.Random(11)
    for directory in (minilm_dir, camembert_dir):
        config = EncoderConfig.from_file(directory / "config.json")  # as the pipeline builds it
        ours = Tokenizer.from_dir(directory, model_type=config.model_type, max_positions=config.max_positions)
        theirs = AutoTokenizer.from_pretrained(str(directory))
        for _ in range(20):
            a, b, limit = texts(rng, 2_000), texts(rng, 2_000), rng.randint(16, 256)
            expected = theirs(a, b, truncation=True, max_length=limit)
            got = ours(a, b, truncation=True, max_length=limit)
            assert got["input_ids"] == expected["input_ids"], (directory.name, limit)
            assert got["attention_mask"] == expected["attention_mask"]

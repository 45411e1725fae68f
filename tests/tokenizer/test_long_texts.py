"""A long single text truncated from the right is tokenized from a prefix (`coulisse.tokenizer.prefix`): 2 MB
took 2-6 s to keep 512 tokens. Oracle: the backend's own truncation of the whole text (what transformers' fast
tokenizers run), reached by turning the prefixes off (`first_cut` answering None)."""

from __future__ import annotations

import json
import random

import pytest
from factory import copy_camembert_layout
from tokenizers import Regex, normalizers, pre_tokenizers

from coulisse.errors import InputError
from coulisse.tokenizer import Tokenizer, prefix

# Words and what lies between them: a word longer than WordPiece's 100 characters ([UNK] whole), runs of spaces,
# tabs and newlines, a combining accent after a space (one grapheme with it), U+3000, a ZWJ emoji, U+0600 (a
# Prepend character: no grapheme break after it), ligatures NFKC expands, digits with a thin space.
WORDS = ["le", "film", "était", "vraiment", "très", "bon", "!", "l'acteur", "anticonstitutionnellement", "😀", "a",
         "b,c", "ça", "Qu’en", "dire", "?", "1 000", "é", "x" * 130, "👩‍👩‍👧", "\u0600", "ﬁn", "東京", "\u0301",
         "’", "«", "»", "2024", "e\u0301"]
GAPS = [" ", " ", " ", "", "  ", "\t", "\n", " \u0301", "\u3000", "   \n "]


@pytest.fixture(scope="module", params=["camembert", "minilm", "roberta", "mpnet"])
def tokenizer(request, tmp_path_factory, camembert_spm, minilm_dir, factory) -> Tokenizer:
    """SentencePiece (Precompiled, WhitespaceSplit + Metaspace, Unigram), WordPiece (BertNormalizer), byte-level
    BPE (RoBERTa, trimmed offsets), MPNet's WordPiece."""
    if request.param == "minilm":
        return Tokenizer.from_dir(minilm_dir)
    if request.param == "camembert":
        directory = tmp_path_factory.mktemp("camembert")
        copy_camembert_layout(camembert_spm, directory)
        return Tokenizer.from_dir(directory, model_type="camembert", max_positions=512)
    return Tokenizer.from_dir(factory.checkpoint(request.param), model_type=request.param, max_positions=512)


def text(rng: random.Random, words: int) -> str:
    return "".join(rng.choice(WORDS) + rng.choice(GAPS) for _ in range(words))


def fields(e) -> tuple:
    return (e.ids, e.type_ids, e.tokens, e.offsets, e.word_ids, e.sequence_ids, e.special_tokens_mask,
            e.attention_mask)


def whole(tokenizer: Tokenizer, monkeypatch, texts: list[str], **kwargs) -> list:
    with monkeypatch.context() as m:
        m.setattr(prefix, "first_cut", lambda text, limit: None)
        return tokenizer.encode_batch(texts, **kwargs)


def test_the_real_tokenizers_read_word_by_word(tokenizer):
    assert prefix.reads_word_by_word(tokenizer.backend)


def test_long_texts_are_truncated_as_whole_texts(tokenizer, monkeypatch):
    """Every field of 300 random long texts, at limits from 3 to 80 tokens, with and without special tokens,
    equals the truncation of the whole text; most went through a prefix (fewer windows left over), so the
    comparison is not of a path with itself."""
    rng = random.Random(11)
    cases = [(text(rng, rng.randint(50, 1500)), rng.randint(3, 80), rng.random() < 0.8) for _ in range(300)]
    through_prefix = 0
    for t, limit, specials in cases:
        ours, = tokenizer.encode_batch([t], max_length=limit, add_special_tokens=specials)
        theirs, = whole(tokenizer, monkeypatch, [t], max_length=limit, add_special_tokens=specials)
        assert fields(ours) == fields(theirs), (t[:200], limit, specials)
        assert bool(ours.overflowing) == bool(theirs.overflowing)  # a text that was cut still says so
        through_prefix += len(ours.overflowing) < len(theirs.overflowing)
    assert through_prefix > len(cases) // 2, through_prefix


def test_a_batch_mixes_short_and_long_texts_in_order(tokenizer, monkeypatch):
    rng = random.Random(3)
    texts = [text(rng, n) for n in (3, 900, 0, 40, 2000, 1)]
    ours = tokenizer.encode_batch(texts, max_length=24)
    theirs = whole(tokenizer, monkeypatch, texts, max_length=24)
    assert [fields(e) for e in ours] == [fields(e) for e in theirs]


def test_a_long_text_is_never_encoded_whole(minilm_dir, monkeypatch):
    """2 MB of words: the backend reads a few kB of them (what made the server wait 2-6 s before)."""
    tok = Tokenizer.from_dir(minilm_dir)
    read: list[int] = []
    encode = tok._encode

    def counting(inputs, add_special_tokens):
        read.extend(len(x) for x in inputs)
        return encode(inputs, add_special_tokens)

    monkeypatch.setattr(tok, "_encode", counting)
    big = text(random.Random(5), 300_000)
    assert len(big) > 2_000_000
    e, = tok.encode_batch([big], max_length=512)
    assert len(e.ids) == 512 and max(read) < 40_000, max(read)


def test_texts_without_a_place_to_cut_are_encoded_whole(minilm_dir, monkeypatch):
    """One huge word, or spaces only in its last half: no prefix helps; the whole text is read, once."""
    tok = Tokenizer.from_dir(minilm_dir)
    for t in ["x" * 50_000, "x" * 30_000 + " un mot" * 3_000, " " * 20_000]:
        e, = tok.encode_batch([t], max_length=16)
        assert fields(e) == fields(whole(tok, monkeypatch, [t], max_length=16)[0])


def test_left_truncation_windows_and_pairs_keep_the_whole_text(minilm_dir, monkeypatch):
    """Only right truncation of single texts without a stride goes through prefixes."""
    tok = Tokenizer.from_dir(minilm_dir)
    calls: list[str] = []
    monkeypatch.setattr(prefix, "first_cut", lambda text, limit: calls.append(text) or None)
    t = text(random.Random(2), 2000)
    tok.encode_batch([t], max_length=16, direction="left")
    tok.encode_batch([t], max_length=16, stride=4)
    tok.encode_batch([t], ["court"], max_length=16, strategy="only_first")
    assert calls == []
    tok.encode_batch([t], max_length=16)
    assert calls == [t]


def with_parts(minilm_dir, normalizer=None, pre_tokenizer=None) -> Tokenizer:
    tok = Tokenizer.from_dir(minilm_dir)
    if normalizer is not None:
        tok.backend.normalizer = normalizer
    if pre_tokenizer is not None:
        tok.backend.pre_tokenizer = pre_tokenizer
    return tok


@pytest.mark.parametrize("parts", [
    {"pre_tokenizer": pre_tokenizers.Split(Regex(r"a.*?b"), "isolated")},  # a regex: anything could be local
    {"pre_tokenizer": pre_tokenizers.Metaspace(split=False)},  # the whole text is one word
    {"pre_tokenizer": pre_tokenizers.ByteLevel(use_regex=False)},
    {"pre_tokenizer": pre_tokenizers.Punctuation()},  # splits, but never at spaces
    {"normalizer": normalizers.Replace(" ", "")},  # takes the spaces away
    {"normalizer": normalizers.Replace(Regex(r"x.*y"), "z")},
    # a literal across what spaces became (U+2581), found by an audit to flip a label through the CLI
    {"normalizer": normalizers.Sequence([normalizers.Replace(Regex(" +"), "\u2581"),
                                         normalizers.Replace("xx\u2581yy", "z")])},
    {"normalizer": normalizers.Replace("xx yy", "z")},
    {"added": "xx yy"},  # an added token holding a space is matched across words, before any split
], ids=["split-regex", "metaspace-unsplit", "bytelevel-no-regex", "punctuation-only", "no-spaces", "replace-regex",
        "literal-across-u2581", "literal-across-space", "added-token-with-a-space"])
def test_tokenizers_that_may_look_ahead_are_read_whole(minilm_dir, monkeypatch, parts):
    added = parts.pop("added", None)
    tok = with_parts(minilm_dir, **parts)
    if added is not None:
        tok.backend.add_tokens([added])
    assert not prefix.reads_word_by_word(tok.backend)
    t = "le film xx yy " * 2000
    e, = tok.encode_batch([t], max_length=8)
    assert fields(e) == fields(whole(tok, monkeypatch, [t], max_length=8)[0])
    assert len(e.overflowing) == len(whole(tok, monkeypatch, [t], max_length=8)[0].overflowing)  # read whole


def test_a_normalizer_that_keeps_the_spaces_is_local(minilm_dir):
    tok = with_parts(minilm_dir, normalizer=normalizers.Sequence(
        [normalizers.NFKC(), normalizers.Replace("``", '"'), normalizers.Replace(Regex(" {2,}"), " "),
         normalizers.Lowercase()]))
    assert prefix.reads_word_by_word(tok.backend)
    assert json.loads(tok.backend.normalizer.__getstate__())["type"] == "Sequence"


def outcome(encode, *args, **kwargs) -> tuple | str:
    try:
        return fields(encode(*args, **kwargs)[0])
    except InputError as e:  # from the left, a pair whose two members are cut into too many windows
        return str(e)


@pytest.mark.parametrize("direction", ["right", "left"])
def test_pairs_with_one_long_member_are_truncated_as_whole_texts(tokenizer, monkeypatch, direction):
    """A query and a long document (either order) under longest_first: the long member read from a prefix
    (right only) gives every field of the backend's truncation of the whole pair (or the same refusal); on the
    right, most pairs went through a prefix. From the left, where no prefix is read, 50 pairs: each is slow there
    (the whole document cut into windows, twice)."""
    rng = random.Random(17)
    held, check = [], prefix.pair_member_holds
    monkeypatch.setattr(prefix, "pair_member_holds", lambda *args: held.append(check(*args)) or held[-1])
    cases = 150 if direction == "right" else 50
    for _ in range(cases):
        short, long = text(rng, rng.randint(0, 30)), text(rng, rng.randint(600, 1500))
        pair = (short, long) if rng.random() < 0.5 else (long, short)
        limit = rng.randint(8, 60)
        ours = outcome(tokenizer.encode_batch, [pair[0]], [pair[1]], max_length=limit, direction=direction)
        theirs = outcome(whole, tokenizer, monkeypatch, [pair[0]], pairs=[pair[1]], max_length=limit,
                         direction=direction)
        assert ours == theirs, (pair[0][:100], pair[1][:100], limit)
    if direction == "right":
        assert sum(held) > cases // 2, (sum(held), len(held))
    else:
        assert held == []


def test_a_long_document_beside_a_query_is_never_encoded_whole(minilm_dir, monkeypatch):
    tok = Tokenizer.from_dir(minilm_dir)
    read: list[int] = []
    encode = tok._encode

    def counting(inputs, add_special_tokens):
        read.extend(sum(map(len, x)) if isinstance(x, tuple) else len(x) for x in inputs)
        return encode(inputs, add_special_tokens)

    monkeypatch.setattr(tok, "_encode", counting)
    document = text(random.Random(8), 300_000)
    e, = tok.encode_batch(["Le film est-il bon ?"], [document], max_length=512)
    assert len(e.ids) == 512 and max(read) < 40_000, max(read)


def test_a_cut_is_a_space_between_characters_that_stand_alone():
    """Not before a combining mark, a joiner or an emoji modifier (one grapheme with the space, which a
    normalizer mapping graphemes could take away), nor after a Prepend character."""
    head = "mot " * 300  # the first cut lands past 8 characters a token x 16 tokens
    for joined in (" \u0301e", " \u200dx", " \U0001F3FBx", "\u0600 x", "\u0d4e x"):
        text = head + "a" + joined + " suite" * 400
        cut = prefix.next_cut(text, len(head))
        # not right after "a" (or after "a" + U+0600): at the end of the next word, before " suite"
        assert cut is not None and cut > len(head) + 2 and text[cut:cut + 2] == " s", (joined, cut)
    assert prefix.next_cut("mot " * 10 + "x" * 1000, 4) == 7  # the first word end at or past 4 characters
    assert prefix.next_cut("x" * 1000 + " y", 4) is None  # only past the first half


def test_a_lone_surrogate_past_the_cut_is_refused_as_for_the_whole_text(minilm_dir):
    tok = Tokenizer.from_dir(minilm_dir)
    with pytest.raises(InputError, match="lone surrogate"):
        tok.encode_batch(["mot " * 6000 + "\ud800"], max_length=16)
    with pytest.raises(InputError, match="lone surrogate"):
        tok.encode_batch(["question"], ["mot " * 6000 + "\ud800"], max_length=16)

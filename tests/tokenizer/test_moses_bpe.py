"""FlauBERT's tokenizer (Moses normalization and words, `</w>` BPE; vocab.json + merges.txt learnt here on
French text, tests/factory.py). Oracle: transformers 5's `FlaubertTokenizer`, a Python tokenizer (transformers
has no fast one for these files), cased and with `do_lowercase`."""

from __future__ import annotations

import json
import sys

import pytest
from factory import CORPUS, TEXTS, as_lists, assert_same_encoding, train_moses_bpe

from coulisse.errors import InputError, TokenizerLoadError
from coulisse.tokenizer import Tokenizer

pytest.importorskip("sacremoses", reason="FlauBERT's tokenizer needs sacremoses (pip install -e '.[test]')")

EDGES = [
    "",
    "   ",
    "  <s>Je  </s> déteste<special1>x <pad> <unk>",
    "l’œuvre « Amélie » … ``oui'' !!! (vraiment) [sic] {x}",
    "Ａ１２  ｆｉｎ，「ok」。 fin．Suite",
    "e\u0301te\u0301 déjà",  # decomposed accents: NFC first
    "C'est-à-dire aujourd'hui, quelqu'un m'a dit : « jusqu'ici tout va bien ».",
    "http://exemple.fr/a?b=1&c=2 — courriel@exemple.fr",
    "10,5 % de 3.14 ; 1 000 000 € ; 20h30 ; n° 5",
    "a\tb\nc\r\nd\u00a0e\u200bf",
    "İSTANBUL, ÉTÉ, ŒUVRE, ß",
    "Zèbres, 東京, ①, ﬁn, 😍😍",
]


@pytest.fixture(scope="module", params=["cased", "lowercase"])
def flaubert(request, tmp_path_factory):
    from transformers import FlaubertTokenizer

    directory = tmp_path_factory.mktemp(f"flaubert-{request.param}")
    train_moses_bpe(directory)
    if request.param == "lowercase":  # flaubert/flaubert_base_uncased's tokenizer_config.json
        (directory / "tokenizer_config.json").write_text(json.dumps({"do_lowercase": True}), encoding="utf-8")
    ours = Tokenizer.from_dir(directory, model_type="flaubert", max_positions=512)
    return ours, FlaubertTokenizer.from_pretrained(str(directory))


@pytest.mark.parametrize("text", CORPUS + TEXTS + EDGES)
def test_ids_and_tokens_equal_flaubert_tokenizer(flaubert, text):
    ours, theirs = flaubert
    assert ours.source == "vocab.json + merges.txt (Moses)"
    assert ours.model_input_names == theirs.model_input_names == ["input_ids", "attention_mask"]
    assert_same_encoding(ours(text), theirs(text))
    # A unit missing from the vocabulary: transformers' Python `tokenize` shows the unit, ours (like its
    # fast tokenizers) the unknown token it becomes.
    vocab = theirs.get_vocab()
    assert ours.tokenize(text) == [t if t in vocab else theirs.unk_token for t in theirs.tokenize(text)]


def test_batches_pairs_and_truncation_equal_flaubert_tokenizer(flaubert):
    ours, theirs = flaubert
    texts = CORPUS[:6] + EDGES
    assert len(ours) == len(theirs)
    assert_same_encoding(ours(texts, padding=True, return_tensors="np"),
                         theirs(texts, padding=True, return_tensors="np"))
    assert_same_encoding(ours(TEXTS, padding=True, truncation=True, return_tensors="np"),
                         theirs(TEXTS, padding=True, truncation=True, max_length=512, return_tensors="np"))
    # A pair loses tokens one at a time from its longer member (the Python tokenizer's rule), odd and even budgets.
    for max_length in (24, 25, 40):
        assert_same_encoding(ours(texts, texts[::-1], padding=True, truncation=True, max_length=max_length),
                             theirs(texts, texts[::-1], padding=True, truncation=True, max_length=max_length))


EDGE_FIRSTS = ["un deux trois quatre cinq six", "é<ς", "Bof.", ""]
EDGE_SECONDS = ["sept", "huit neuf dix onze douze treize", "", "Un film très long et très lent."]


@pytest.mark.parametrize("side", ["right", "left"])
@pytest.mark.parametrize("strategy", ["longest_first", "only_first", "only_second"])
def test_truncation_edges_equal_flaubert_tokenizer(flaubert, strategy, side):
    """Where the Rust library differs from transformers 5's Python tokenizer: a max_length below the special
    tokens' count (the text is emptied, not left whole), a member too short to give what only_first /
    only_second asks (emptied, or an empty second text left alone: no error), odd budgets of a pair."""
    ours, theirs = flaubert
    theirs.truncation_side = ours.truncation_side = side
    try:
        for max_length in (1, 2, 3, 4, 5, 7, 9, 12):
            for args in ((EDGE_FIRSTS,), (EDGE_FIRSTS, EDGE_SECONDS)):
                if strategy == "only_second" and len(args) == 1:
                    continue
                for special in (True, False):
                    options = dict(truncation=strategy, max_length=max_length, add_special_tokens=special)
                    assert_same_encoding(ours(*args, **options), theirs(*args, **options))
    finally:
        theirs.truncation_side = ours.truncation_side = "right"


def test_batched_equals_one_by_one(flaubert):
    ours, _ = flaubert
    texts = CORPUS + TEXTS + EDGES
    batched = [e.ids for e in ours.encode_batch(texts)]
    assert batched == [ours.encode_batch([t])[0].ids for t in texts]


def test_specials_tokens_and_decoding_equal_flaubert_tokenizer(flaubert):
    ours, theirs = flaubert
    for name in ("bos", "sep", "cls", "pad", "unk", "mask"):
        assert ours.special_tokens[name] == getattr(theirs, f"{name}_token"), name
    assert (ours.pad_token_id, ours.mask_token_id, ours.unk_token_id) == (
        theirs.pad_token_id, theirs.mask_token_id, theirs.unk_token_id)
    for text in [CORPUS[2], CORPUS[15], EDGES[3]]:
        ids = theirs(text)["input_ids"]
        assert ours.convert_ids_to_tokens(ids) == theirs.convert_ids_to_tokens(ids)
        tokens = theirs.convert_ids_to_tokens(ids)[1:-1]
        assert ours.convert_tokens_to_string(tokens) == theirs.convert_tokens_to_string(tokens)
        for skip in (False, True):
            assert ours.decode(ids, skip_special_tokens=skip) == theirs.decode(ids, skip_special_tokens=skip)


def test_offsets_point_at_the_original_words(flaubert):
    """transformers' Python tokenizer has no offsets; ours place each unit on the characters its Moses word
    came from, so that token classification finds words and spans (no space before: a word continues)."""
    ours, _ = flaubert
    text = "Le scénario est prévisible, mais « Amélie » reste un chef-d'œuvre…"
    enc = ours([text], return_offsets_mapping=True)
    offsets = [tuple(o) for o in as_lists(enc)["offset_mapping"][0][1:-1]]
    tokens = ours.convert_ids_to_tokens(as_lists(enc)["input_ids"][0][1:-1])
    assert [s for s, _ in offsets] == sorted(s for s, _ in offsets)
    assert all(0 <= s < e <= len(text) for s, e in offsets)
    spans = [(t.removesuffix("</w>"), text[s:e]) for t, (s, e) in zip(tokens, offsets, strict=True)]
    # Units whose text Moses kept: exactly their characters (lowercased or not); rewritten ones: the
    # characters they replace.
    assert all(unit == span.lower() or unit == span for unit, span in spans if unit in text.lower()), spans
    assert [text[s:e] for (s, e), t in zip(offsets, tokens, strict=True) if t == '"</w>'] == ["«", "»"]
    assert text[offsets[-1][0]:offsets[-1][1]] == "…"  # Moses' "..." for "…"


def test_word_ids_group_the_units_of_each_moses_word(flaubert):
    """The backend sees one pre-token per BPE unit; `word_ids()` numbers Moses words (transformers' Python
    tokenizer has no word_ids: the oracle is its own words, each cut into its BPE units)."""
    ours, theirs = flaubert
    vocab = theirs.get_vocab()
    for text in CORPUS + TEXTS + [e for e in EDGES if "<" not in e]:
        words = theirs.moses_tokenize(theirs.moses_pipeline(theirs.preprocess_text(text), lang="fr"), lang="fr")
        expected = [[u if u in vocab else theirs.unk_token for u in theirs.bpe(w).split(" ")] for w in words if w]
        for enc, row in ((ours(text), 0), (ours(["x", text], padding=True, padding_side="left"), 1)):
            groups: dict[int, list[str]] = {}
            for token, word in zip(enc.tokens(row), enc.word_ids(row), strict=True):
                if word is not None:
                    groups.setdefault(word, []).append(token)
            assert list(groups) == list(range(len(groups)))
            assert list(groups.values()) == expected, text
    first, second = ours("Je déteste ça").word_ids(), ours("Un chef-d'œuvre (vraiment) !").word_ids()
    assert ours("Je déteste ça", "Un chef-d'œuvre (vraiment) !").word_ids() == first + second[1:]


def test_recognised_by_tokenizer_class_without_config(tmp_path):
    train_moses_bpe(tmp_path)
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "FlaubertTokenizer"}),
                                                     encoding="utf-8")
    assert Tokenizer.from_dir(tmp_path).source == "vocab.json + merges.txt (Moses)"


def test_missing_sacremoses_is_one_typed_line(tmp_path, monkeypatch):
    train_moses_bpe(tmp_path)
    monkeypatch.setitem(sys.modules, "sacremoses", None)  # import fails as if not installed
    with pytest.raises(TokenizerLoadError, match="pip install sacremoses") as caught:
        Tokenizer.from_dir(tmp_path, model_type="flaubert")
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("layout", ["added_tokens_decoder", "added_tokens.json"])
def test_added_tokens_saved_by_transformers_keep_their_ids(tmp_path, layout):
    """A FlauBERT folder extended with transformers' add_tokens / add_special_tokens (before fine-tuning)
    and saved: its added tokens exist, the extra special tokens keep their saved ids."""
    from tokenizers import AddedToken
    from transformers import FlaubertTokenizer

    (tmp_path / "base").mkdir()
    train_moses_bpe(tmp_path / "base")
    hf = FlaubertTokenizer.from_pretrained(str(tmp_path / "base"))
    hf.add_tokens(["nanard", "chef-d'œuvre", AddedToken("<lstrip>", lstrip=True),
                   AddedToken("Rstrip", rstrip=True, normalized=False)])
    hf.add_special_tokens({"additional_special_tokens": ["<ent>", "[E2]"]})
    hf.save_pretrained(str(tmp_path / "added"))
    if layout == "added_tokens.json":  # the older layout: no added_tokens_decoder in the config
        path = tmp_path / "added" / "tokenizer_config.json"
        config = json.loads(path.read_text(encoding="utf-8"))
        del config["added_tokens_decoder"]
        path.write_text(json.dumps(config), encoding="utf-8")
    theirs = FlaubertTokenizer.from_pretrained(str(tmp_path / "added"))
    ours = Tokenizer.from_dir(tmp_path / "added", model_type="flaubert", max_positions=512)
    assert len(ours) == len(theirs)
    for token in ("nanard", "chef-d'œuvre", "<ent>", "[E2]", "<lstrip>"):
        assert ours.convert_tokens_to_ids(token) == theirs.convert_tokens_to_ids(token), token
    texts = ["Un vrai nanard, pas un chef-d'œuvre <ent>", "a <lstrip> b Rstrip  c [E2]x<ent>",
             "x<lstrip>y Rstrip<ent> nanards", *CORPUS[:8]]
    assert_same_encoding(ours(texts, return_special_tokens_mask=True),
                         theirs(texts, return_special_tokens_mask=True))
    assert sorted(ours.all_special_tokens) == sorted(theirs.all_special_tokens)
    ids = theirs(texts[0])["input_ids"]
    assert ours.decode(ids, skip_special_tokens=True) == theirs.decode(ids, skip_special_tokens=True)


def test_words_split_beforehand_are_refused_with_the_way_out(flaubert):
    """FlauBERT's tokenizer runs Moses in Python before the Rust library: its pre-tokenized input would skip
    that, so `is_split_into_words=True` is refused, saying what to do instead."""
    ours, _ = flaubert
    with pytest.raises(InputError, match="is_split_into_words=True is not read by this tokenizer"):
        ours([["Le", "chat"]], is_split_into_words=True)


def test_overflowing_windows_are_refused_with_the_way_out(flaubert):
    ours, _ = flaubert
    with pytest.raises(InputError, match="return_overflowing_tokens=True is not read by this tokenizer"):
        ours("Le chat dort. " * 40, truncation=True, max_length=16, stride=4, return_overflowing_tokens=True)

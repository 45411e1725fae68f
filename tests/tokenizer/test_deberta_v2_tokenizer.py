"""DeBERTa-v2/v3 SentencePiece tokenizers (`spm.model`), on Unigram models trained here with the DeBERTa-v3
special layout. Oracle: transformers 5's `AutoTokenizer.from_pretrained(dir)`, which builds a fast
`DebertaV2Tokenizer` from spm.model and the settings of tokenizer_config.json."""

from __future__ import annotations

import json

import pytest
from factory import CORPUS, TEXTS, assert_same_encoding, train_deberta_spm

from coulisse.tokenizer import Tokenizer
from coulisse.tokenizer.sentencepiece_model import CONTROL, UNKNOWN, USER_DEFINED, load_sentencepiece

# French text with what the normalizer and pre-tokenizer must treat alike: whitespace runs, tabs and
# newlines, NFC/NFD accents, punctuation, specials, capitals, emoji.
FRENCH = [
    "Été comme hiver, l'Œuvre de Céline reste « inégalée » ; ça, c'est sûr.",
    "Un    film\t\tsans   intérêt…\nÀ fuir !!!",
    "J'ai adoré 😍😂🎬 — vraiment 👍🏽",
    "Il a dit : \"C'est un [MASK] absolu\" puis « un [MASK] » et [MASK]!",
    "  espaces en tête et en queue  ",
    "\n\tligne\r\nsuivante\u00a0insécable\u202fétroite",
    "ÇA VA ? NOËL, ŒUF, ÆTHER, ﬁn (ligature), Ⅻ, ①, ｆｕｌｌｗｉｄｔｈ, e\u0301te\u0301 décomposé",
    "[CLS] balises [SEP] [PAD] [UNK] [MASK]",
    "",
    " ",
    "l'été 2024 coûtait 12,50 € (soit ~13 $) — 50 % de plus qu'en 2019 !",
]
SETTINGS = {
    "default": {},
    "mdeberta": {"do_lower_case": False, "vocab_type": "spm"},
    "lower-punct": {"do_lower_case": True, "split_by_punct": True},
    "no-prefix-space": {"add_prefix_space": False},
}


def folder(root, name: str, settings: dict, **spm_options):
    from transformers import AutoTokenizer

    directory = root / name
    train_deberta_spm(directory, **spm_options)
    (directory / "config.json").write_text(json.dumps({"model_type": "deberta-v2"}), encoding="utf-8")
    if settings:
        (directory / "tokenizer_config.json").write_text(json.dumps(settings), encoding="utf-8")
    ours = Tokenizer.from_dir(directory, model_type="deberta-v2", max_positions=512)
    return ours, AutoTokenizer.from_pretrained(str(directory))


@pytest.fixture(scope="module", params=list(SETTINGS))
def pair(request, tmp_path_factory):
    return folder(tmp_path_factory.mktemp("deberta-tok"), request.param, SETTINGS[request.param])


def test_special_layout_equals_transformers(pair):
    ours, theirs = pair
    assert type(theirs).__name__ == "DebertaV2Tokenizer"
    assert [ours.convert_tokens_to_ids(t) for t in ("[PAD]", "[CLS]", "[SEP]", "[UNK]")] == [0, 1, 2, 3]
    assert ours.mask_token_id == theirs.mask_token_id == len(theirs) - 1 == len(ours) - 1
    assert ours.pad_token_id == theirs.pad_token_id and ours.unk_token_id == theirs.unk_token_id
    assert ours.model_input_names == ["input_ids", "token_type_ids", "attention_mask"]


@pytest.mark.parametrize("text", FRENCH + CORPUS + TEXTS[:5], ids=range(len(FRENCH) + len(CORPUS) + 5))
def test_ids_equal_transformers(pair, text):
    ours, theirs = pair
    assert_same_encoding(ours(text), theirs(text))
    assert ours.tokenize(text) == theirs.tokenize(text)


def test_batches_pairs_and_truncation_equal_transformers(pair):
    ours, theirs = pair
    texts = [t for t in FRENCH if t.strip()] + CORPUS
    seconds = (CORPUS + FRENCH)[: len(texts)]
    assert_same_encoding(ours(texts, padding=True, truncation=True),
                         theirs(texts, padding=True, truncation=True, max_length=512))
    assert_same_encoding(ours(texts, seconds, padding=True, truncation=True, max_length=24),
                         theirs(texts, seconds, padding=True, truncation=True, max_length=24))
    long = ours(TEXTS[-1], truncation=True)
    assert len(long["input_ids"]) == 512 and long["input_ids"][-1] == 2
    assert_same_encoding(long, theirs(TEXTS[-1], truncation=True, max_length=512))


def test_tokens_and_decoding_equal_transformers(pair):
    ours, theirs = pair
    for text in FRENCH[:4] + CORPUS[:4]:
        ids = theirs(text, text[::-1])["input_ids"]
        assert ours.convert_ids_to_tokens(ids) == theirs.convert_ids_to_tokens(ids)
        for skip in (False, True):
            assert ours.decode(ids, skip_special_tokens=skip) == theirs.decode(ids, skip_special_tokens=skip)


def test_tokenizer_json_saved_by_transformers_reads_alike(pair, tmp_path):
    ours, theirs = pair
    theirs.save_pretrained(tmp_path)
    (tmp_path / "spm.model").unlink(missing_ok=True)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "deberta-v2"}), encoding="utf-8")
    from_json = Tokenizer.from_dir(tmp_path, model_type="deberta-v2", max_positions=512)
    assert from_json.source == "tokenizer.json"
    texts = FRENCH + CORPUS
    assert_same_encoding(from_json(texts, texts[::-1], truncation=True), ours(texts, texts[::-1], truncation=True))


def test_control_and_user_defined_pieces_equal_transformers(tmp_path):
    """Control pieces become special tokens; user-defined pieces stay pieces of the model, as in transformers
    from 5.25 on (and in SentencePiece: the test below)."""
    ours, theirs = folder(tmp_path, "typed", {}, user_defined_symbols=["<br>", "œ"], control_symbols=["[XTRA]"])
    model = load_sentencepiece(tmp_path / "typed" / "spm.model")
    assert model.piece_types == {0: CONTROL, 1: CONTROL, 2: CONTROL, 3: UNKNOWN, 4: CONTROL,
                                 5: USER_DEFINED, 6: USER_DEFINED}
    for text in ["Bœuf<br>Le [MASK] [XTRA] œil, NUL!", "un<br><br>deux [XTRA]"] + FRENCH:
        assert_same_encoding(ours(text), theirs(text))
        ids = theirs(text)["input_ids"]
        assert ours.decode(ids, skip_special_tokens=True) == theirs.decode(ids, skip_special_tokens=True)


def test_pieces_equal_sentencepiece_itself(tmp_path):
    """A second oracle: the SentencePiece library on the same spm.model. Its NFKC character map ("…" to
    "...", "ﬁ" to "fi", "①" to "1") and its user-defined pieces give the ids coulisse gives between [CLS]
    and [SEP] (DeBERTa keeps the spm's own piece order)."""
    import sentencepiece

    ours, _ = folder(tmp_path, "typed", {}, user_defined_symbols=["<br>", "œ"])
    sp = sentencepiece.SentencePieceProcessor(model_file=str(tmp_path / "typed" / "spm.model"))
    for text in ["Un film… sans intérêt", "Bœuf<br>Le œil, ﬁn ① ｆｕｌｌ", "un<br><br>deux"]:
        assert ours(text)["input_ids"][1:-1] == sp.encode(text), text


"""SentencePiece tokenizers: the real CamemBERT model (tblard/tf-allocine layout) and an XLM-R-style Unigram
model trained here. Oracle: transformers 5 (`AutoTokenizer` / `XLMRobertaTokenizer.from_pretrained(dir)`)."""

from __future__ import annotations

import pytest
from factory import CORPUS, assert_same_encoding, train_unigram

from coulisse.config import EncoderConfig
from coulisse.tokenizer import Tokenizer

# The course's two sentences and the ids the real CamemBERT tokenizer prints in the notebook.
SEED = ["J'ai attendu un cours d'HuggingFace toute ma vie.", "Je déteste tellement ça !"]
SEED_IDS = [
    [5, 121, 11, 73, 4903, 23, 307, 18, 11, 10312, 20841, 449, 5702, 194, 155, 157, 9, 6],
    [5, 100, 8645, 1217, 136, 83, 6],
]
PAD_ID = 1

FRENCH = [
    "Été comme hiver, l'Œuvre de Céline reste « inégalée » ; ça, c'est sûr.",
    "Un    film\t\tsans   intérêt…\nÀ fuir !!!",
    "J'ai adoré 😍😂🎬 — vraiment 👍🏽",
    "Il a dit : \"C'est un <mask> absolu\" puis « un <mask> » et <mask>!",
    "  espaces en tête et en queue  ",
    "\n\tligne\r\nsuivante\u00a0insécable\u202fétroite",
    "ÇA VA ? ÇÀ ET LÀ, NOËL, ŒUF, ÆTHER, ﬁn (ligature), Ⅻ, ①, ｆｕｌｌｗｉｄｔｈ",
    "<s> balises </s> <pad> <unk> <s>NOTUSED </s>NOTUSED",
    "a<mask>b, a <mask> b, a  <mask>  b",
    "",
    " ",
    "l'été 2024 coûtait 12,50 € (soit ~13 $) — 50 % de plus qu'en 2019 !",
]


def transformers_tokenizer(directory):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(directory))


def coulisse_tokenizer(directory) -> Tokenizer:
    """As the pipeline builds it: truncation falls back to config.json when tokenizer_config has no limit."""
    config = EncoderConfig.from_file(directory / "config.json")
    return Tokenizer.from_dir(directory, model_type=config.model_type, max_positions=config.max_positions)


@pytest.fixture(scope="module")
def camembert(camembert_dir):
    return coulisse_tokenizer(camembert_dir), transformers_tokenizer(camembert_dir)


def test_seed_sentences_give_the_notebook_ids(camembert):
    ours, theirs = camembert
    batch = ours(SEED, padding=True, truncation=True, return_tensors="pt")
    assert batch["input_ids"][0].tolist() == SEED_IDS[0]
    short = SEED_IDS[1] + [PAD_ID] * (len(SEED_IDS[0]) - len(SEED_IDS[1]))
    assert batch["input_ids"][1].tolist() == short
    n = len(SEED_IDS[1])
    assert batch["attention_mask"][1].tolist() == [1] * n + [0] * (len(short) - n)
    assert "token_type_ids" not in batch  # CamemBERT takes none, like transformers' tokenizer
    assert_same_encoding(batch, theirs(SEED, padding=True, truncation=True, return_tensors="pt"))


@pytest.mark.parametrize("text", FRENCH, ids=range(len(FRENCH)))
def test_french_text_ids_equal_transformers(camembert, text):
    ours, theirs = camembert
    assert_same_encoding(ours(text), theirs(text))
    assert ours.tokenize(text) == theirs.tokenize(text)


def test_french_batch_with_padding_equals_transformers(camembert):
    ours, theirs = camembert
    texts = [t for t in FRENCH if t.strip()] + SEED
    assert_same_encoding(ours(texts, padding=True, truncation=True),
                         theirs(texts, padding=True, truncation=True, max_length=512))


def test_tokens_and_decoding_equal_transformers(camembert):
    ours, theirs = camembert
    ids = theirs(SEED[0])["input_ids"]
    assert ours.convert_ids_to_tokens(ids) == theirs.convert_ids_to_tokens(ids)
    assert ours.decode(ids, skip_special_tokens=True) == theirs.decode(ids, skip_special_tokens=True)
    assert len(ours) == len(theirs) == 32005


def test_text_pairs_equal_transformers(camembert):
    ours, theirs = camembert
    firsts, seconds = SEED, ["Une suite très longue " * 20, "Court."]
    assert_same_encoding(ours(firsts, seconds, padding=True, truncation=True, max_length=24),
                         theirs(firsts, seconds, padding=True, truncation=True, max_length=24))


def test_truncation_at_512_without_model_max_length(camembert, camembert_dir):
    """tf-allocine's `{}` tokenizer_config has no limit: truncation falls back to 514 positions - 2."""
    ours, theirs = camembert
    assert (camembert_dir / "tokenizer_config.json").read_bytes() == b"{}"
    assert ours.model_max_length == 512
    text = ("Un film « magnifique », émouvant 😍 et très long. " * 2100)[:100_000]
    assert len(text) == 100_000
    encoding = ours(text, truncation=True)
    assert len(encoding["input_ids"]) == 512
    assert encoding["input_ids"][-1] == 6  # </s> kept at the end, as transformers does
    assert_same_encoding(encoding, theirs(text, truncation=True, max_length=512))
    assert len(ours.encode_batch([text])[0].ids) == 512  # the pipeline's path truncates by default


@pytest.mark.slow
def test_every_allocine_review_equals_transformers(camembert, allocine_texts):
    ours, theirs = camembert
    assert len(allocine_texts) >= 1000
    expected = theirs(allocine_texts, padding=True, truncation=True, max_length=512)
    assert_same_encoding(ours(allocine_texts, padding=True, truncation=True), expected)
    assert max(sum(m) for m in expected["attention_mask"]) == 512  # some reviews were truncated


# -- XLM-R layout, on a Unigram model trained here ----------------------------------------------------


@pytest.fixture(scope="module")
def unigram(tmp_path_factory):
    import json

    from transformers import XLMRobertaTokenizer

    directory = tmp_path_factory.mktemp("xlmr-unigram")
    train_unigram(directory)
    (directory / "config.json").write_text(json.dumps({"model_type": "xlm-roberta"}))
    ours = Tokenizer.from_dir(directory, model_type="xlm-roberta")
    return ours, XLMRobertaTokenizer.from_pretrained(str(directory))


def test_trained_unigram_is_xlmr_style(unigram):
    ours, theirs = unigram
    assert type(theirs).__name__ == "XLMRobertaTokenizer"
    assert len(ours) == len(theirs)
    assert [theirs.convert_tokens_to_ids(t) for t in ("<s>", "<pad>", "</s>", "<unk>")] == [0, 1, 2, 3]
    assert ours.convert_tokens_to_ids("<mask>") == theirs.mask_token_id == len(theirs) - 1


@pytest.mark.parametrize("text", FRENCH + CORPUS[:4], ids=range(len(FRENCH) + 4))
def test_unigram_ids_equal_xlmroberta_tokenizer(unigram, text):
    ours, theirs = unigram
    assert_same_encoding(ours(text), theirs(text))


def test_unigram_batch_pairs_and_truncation_equal_xlmroberta_tokenizer(unigram):
    ours, theirs = unigram
    texts = FRENCH[:6]
    assert_same_encoding(ours(texts, padding=True), theirs(texts, padding=True))
    assert_same_encoding(ours(texts, texts[::-1], padding=True, truncation=True, max_length=20),
                         theirs(texts, texts[::-1], padding=True, truncation=True, max_length=20))


@pytest.mark.parametrize("model_type", ["xlm-roberta", "camembert"])
def test_template_reads_bos_and_eos_like_transformers(tmp_path, model_type):
    """CamembertTokenizer and XLMRobertaTokenizer frame a sequence with bos_token ... eos_token, not with
    cls_token / sep_token: a tokenizer_config.json where they differ gives transformers' ids."""
    import json

    train_unigram(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": model_type}))
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"cls_token": "<pad>", "sep_token": "<unk>"}))
    ours, theirs = Tokenizer.from_dir(tmp_path, model_type=model_type), transformers_tokenizer(tmp_path)
    texts = FRENCH[:4]
    assert_same_encoding(ours(texts, texts[::-1], padding=True), theirs(texts, texts[::-1], padding=True))

"""WordPiece: the real BERT vocabulary of all-MiniLM-L6-v2, read from vocab.txt alone and from tokenizer.json.
Oracle: transformers 5's `BertTokenizer.from_pretrained(dir)`."""

from __future__ import annotations

import json
import shutil

import pytest
from factory import assert_same_encoding

from coulisse.tokenizer import Tokenizer

TEXTS = [
    "J'ai attendu un cours d'HuggingFace toute ma vie.",
    "Je DÉTESTE tellement ça !",
    "Hello, World! Tokenization isn't trivial: don't you think?",
    "HÉLLO wörld [MASK] [SEP] [CLS] straße 東京タワー 北京",
    "a\tb\nc   d\u00a0e\u200bf\x00g",
    "emoji 😍🎬 and « guillemets » and \"quotes\" — dash…",
    "unaffable supercalifragilisticexpialidocious 1234567890 3.14159",
    "",
]


@pytest.fixture(scope="module")
def vocab_only(tmp_path_factory, minilm_dir):
    """vocab.txt and nothing else: BERT's defaults (lower-casing, [CLS]/[SEP]) must apply."""
    from transformers import BertTokenizer

    directory = tmp_path_factory.mktemp("vocab-only")
    shutil.copy(minilm_dir / "vocab.txt", directory / "vocab.txt")
    return Tokenizer.from_dir(directory, model_type="bert"), BertTokenizer.from_pretrained(str(directory))


@pytest.fixture(scope="module")
def from_tokenizer_json(minilm_dir):
    from transformers import BertTokenizer

    ours = Tokenizer.from_dir(minilm_dir, model_type="bert")
    assert ours.source == "tokenizer.json"
    return ours, BertTokenizer.from_pretrained(str(minilm_dir))


@pytest.mark.parametrize("text", TEXTS, ids=range(len(TEXTS)))
def test_vocab_txt_ids_equal_bert_tokenizer(vocab_only, text):
    ours, theirs = vocab_only
    assert ours.source == "vocab.txt"
    assert_same_encoding(ours(text), theirs(text))
    assert ours.tokenize(text) == theirs.tokenize(text)


@pytest.mark.parametrize("text", TEXTS, ids=range(len(TEXTS)))
def test_tokenizer_json_ids_equal_bert_tokenizer(from_tokenizer_json, text):
    ours, theirs = from_tokenizer_json
    assert_same_encoding(ours(text), theirs(text))


@pytest.mark.parametrize("fixture", ["vocab_only", "from_tokenizer_json"])
def test_batches_and_pairs_carry_token_type_ids(request, fixture):
    ours, theirs = request.getfixturevalue(fixture)
    batch = ours(TEXTS, padding=True, return_tensors="pt")
    assert "token_type_ids" in batch
    assert_same_encoding(batch, theirs(TEXTS, padding=True, return_tensors="pt"))
    pairs = TEXTS[::-1]
    assert_same_encoding(ours(TEXTS, pairs, padding=True, truncation=True, max_length=18),
                         theirs(TEXTS, pairs, padding=True, truncation=True, max_length=18))
    assert any(1 in row for row in ours(TEXTS, pairs)["token_type_ids"])


def test_vocab_txt_and_tokenizer_json_agree_on_minilm(vocab_only, from_tokenizer_json):
    """Both files of one checkpoint, with its tokenizer_config: one tokenization."""
    (a, _), (b, theirs) = vocab_only, from_tokenizer_json
    assert a(TEXTS)["input_ids"] == b(TEXTS)["input_ids"] == theirs(TEXTS)["input_ids"]


def test_model_max_length_from_tokenizer_config(from_tokenizer_json, minilm_dir):
    ours, theirs = from_tokenizer_json
    assert ours.model_max_length == json.loads((minilm_dir / "tokenizer_config.json").read_text())[
        "model_max_length"] == theirs.model_max_length == 512
    long = "mot " * 2000
    assert_same_encoding(ours(long, truncation=True), theirs(long, truncation=True))


@pytest.mark.parametrize("do_lower_case", [False, True])
def test_cased_vocab_settings_follow_tokenizer_config(tmp_path, minilm_dir, do_lower_case):
    from transformers import BertTokenizer

    shutil.copy(minilm_dir / "vocab.txt", tmp_path / "vocab.txt")
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": do_lower_case}))
    ours = Tokenizer.from_dir(tmp_path, model_type="bert")
    theirs = BertTokenizer.from_pretrained(str(tmp_path))
    assert_same_encoding(ours(TEXTS, padding=True), theirs(TEXTS, padding=True))


@pytest.mark.parametrize("edit", ["duplicate", "line-separators", "trailing-whitespace", "blank-line"])
def test_vocab_txt_is_numbered_by_line_as_transformers_reads_it(tmp_path, minilm_dir, edit):
    """Ids are line numbers of the file split on "\\n" alone (not str.splitlines, which also splits on U+2028,
    U+0085, \\x1c...), each token stripped of trailing whitespace, a repeated token at its last line: every
    id after such a line was shifted."""
    from transformers import AutoTokenizer

    lines = (minilm_dir / "vocab.txt").read_text(encoding="utf-8").split("\n")
    if edit == "duplicate":
        lines[1000] = lines[2000]
    elif edit == "line-separators":
        lines[1500], lines[1501], lines[1502] = "a\u2028b", "c\x85", "d\x1ce"
    elif edit == "trailing-whitespace":
        lines[1500], lines[1501] = "a\r", "b \t"
    else:
        lines[1500] = ""
    (tmp_path / "vocab.txt").write_text("\n".join(lines), encoding="utf-8", newline="")
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    ours, theirs = Tokenizer.from_dir(tmp_path, model_type="bert"), AutoTokenizer.from_pretrained(str(tmp_path))
    assert ours.get_vocab() == theirs.get_vocab()
    assert len(ours) == len(theirs)
    assert_same_encoding(ours(TEXTS, padding=True), theirs(TEXTS, padding=True))

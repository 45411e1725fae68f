"""Tokenizer files that do not fit their model, or are broken: refused at load in one line, never an
IndexError inside the first forward, a Rust panic with its backtrace, or a traceback at the first call."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from coulisse import pipeline
from coulisse.errors import ModelLoadError, TokenizerLoadError


@pytest.fixture
def folder(factory, tmp_path):
    """A BERT classifier whose tokenizer is a tokenizer.json, copied to be edited. Its class is the generic
    PreTrainedTokenizerFast, which runs the file as written (BertTokenizer would rebuild its post-processor)."""
    target = tmp_path / "model"
    shutil.copytree(factory.checkpoint("bert", tokenizer="tokenizer.json"), target)
    path = target / "tokenizer_config.json"
    settings = json.loads(path.read_text(encoding="utf-8"))
    path.write_text(json.dumps({**settings, "tokenizer_class": "PreTrainedTokenizerFast"}), encoding="utf-8")
    return target


def edit(folder, change) -> None:
    path = folder / "tokenizer.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    change(data)
    path.write_text(json.dumps(data), encoding="utf-8")


def vocab_size(folder) -> int:
    return json.loads((folder / "config.json").read_text())["vocab_size"]


def past_the_table(data, size):
    word = next(iter(data["model"]["vocab"]))
    data["model"]["vocab"][word] = size + 10


def special_past_the_table(data, size):
    data["post_processor"]["special_tokens"]["[CLS]"]["ids"] = [size + 99]


def type_id_5(data, size):
    data["post_processor"]["single"][0]["SpecialToken"]["type_id"] = 5


def undefined_special(data, size):
    data["post_processor"]["pair"][0]["SpecialToken"]["id"] = "[ZZZ]"


def unknown_missing(data, size):
    del data["model"]["vocab"][data["model"]["unk_token"]]


@pytest.mark.parametrize("change, message", [
    (past_the_table, r"gives '.*' the id \d+, but the model's embedding table has \d+ rows"),
    (special_past_the_table, r"adds the special id \d+, but the model's embedding table has \d+ rows"),
    (type_id_5, r"gives a single text the token type 5, but the model embeds only types 0 to 1 \(type_vocab_size"),
    (undefined_special, r"template naming the special token '\[ZZZ\]'"),
    (unknown_missing, r"fails on a one-word text \(.*\[UNK\]"),
])
def test_a_tokenizer_that_does_not_fit_its_model_is_refused_at_load(folder, change, message):
    edit(folder, lambda data: change(data, vocab_size(folder)))
    with pytest.raises(TokenizerLoadError, match=message) as info:
        pipeline("text-classification", model=folder)
    assert "\n" not in str(info.value)


def test_the_cli_says_it_in_one_line_without_a_rust_backtrace(folder):
    edit(folder, lambda data: undefined_special(data, 0))
    env = {**os.environ, "RUST_BACKTRACE": "1"}
    done = subprocess.run([sys.executable, "-m", "coulisse", "classify", "-m", str(folder), "un texte"],
                          capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 1, done.stderr
    assert done.stderr.strip().startswith("Error: TokenizerLoadError") and "\n" not in done.stderr.strip()
    assert "panicked" not in done.stderr and "Traceback" not in done.stderr


@pytest.mark.parametrize("value", ["NaN", -1, True, "512"])
def test_a_meaningless_model_max_length_is_no_limit(folder, value):
    """transformers' configs say "no limit" with a huge number; NaN, a negative, a boolean or a string mean
    nothing either: the position table's limit applies, and a long text is cut, not a traceback."""
    path = folder / "tokenizer_config.json"
    settings = json.loads(path.read_text()) if path.is_file() else {}
    path.write_text(json.dumps({**settings, "model_max_length": value}).replace('"NaN"', "NaN"))
    pipe = pipeline("text-classification", model=folder)
    assert pipe.tokenizer.model_max_length == pipe.config.max_positions
    assert pipe("mot " * 2000)[0]["label"]


@pytest.mark.parametrize("arch, setting", [("camembert", "bos_token"), ("bert", "cls_token")])
@pytest.mark.parametrize("token", [" ", "[C LS]", "\t"])
def test_a_blank_or_spaced_class_token_is_named(factory, tmp_path, token, arch, setting):
    """A first token of whitespace cannot be written in a post-processing template (the Rust library said
    "Missing SpecialToken(s) with id(s) ``"): the message names the setting and the fix. CamemBERT's template
    starts with its bos_token, BERT's with its cls_token, as transformers builds them."""
    target = tmp_path / "model"
    shutil.copytree(factory.checkpoint(arch), target)
    (target / "tokenizer_config.json").write_text(json.dumps({setting: token}), encoding="utf-8")
    with pytest.raises(TokenizerLoadError, match=rf"{setting} .* is empty or holds whitespace") as info:
        pipeline("text-classification", model=target)
    assert "\n" not in str(info.value)


def test_a_tokenizer_that_knows_a_sliver_of_the_vocabulary_is_named(factory, camembert_spm, tmp_path, caplog):
    """transformers 5's `CamembertTokenizer(vocab_file=spm)` builds a 6-token vocabulary and saves it: the
    ids fit the table, so it loads, but nearly every word is the unknown token. Loading it warns, naming
    both sizes; the real tokenizer of the same checkpoint does not."""
    from transformers import CamembertTokenizer

    target = tmp_path / "model"
    shutil.copytree(factory.checkpoint("camembert"), target)
    for name in ("tokenizer.json", "sentencepiece.bpe.model", "tokenizer_config.json", "special_tokens_map.json"):
        (target / name).unlink(missing_ok=True)
    CamembertTokenizer(vocab_file=str(camembert_spm)).save_pretrained(target)
    rows = vocab_size(target)
    with caplog.at_level("WARNING", logger="coulisse.checkpoint"):
        pipe = pipeline("text-classification", model=target)
    known = len(pipe.tokenizer.get_vocab())
    assert known < 10 < rows
    assert f"knows {known} tokens, but the model's embedding table has {rows} rows" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="coulisse.checkpoint"):
        pipeline("text-classification", model=factory.checkpoint("camembert"))
    assert "embedding table" not in caplog.text


@pytest.mark.parametrize("spec", [{"content": "<x>"}, {"id": "7", "content": "<x>"}, {"id": -1, "content": "<x>"},
                                  {"id": 7, "content": 5}, "<x>", None])
def test_a_malformed_added_token_of_a_rebuilt_file_is_named(factory, tmp_path, spec):
    """BertTokenizer rebuilds a tokenizer.json around its vocabulary and its added tokens (where
    tokenizer_config.json has no added_tokens_decoder): an added token without an integer id or a text is
    refused in one line that shows it, not a bare KeyError or ValueError."""
    target = tmp_path / "model"
    shutil.copytree(factory.checkpoint("bert", tokenizer="tokenizer.json"), target)
    path = target / "tokenizer_config.json"
    settings = json.loads(path.read_text(encoding="utf-8"))
    settings.pop("added_tokens_decoder", None)
    path.write_text(json.dumps(settings), encoding="utf-8")
    edit(target, lambda data: data["added_tokens"].append(spec))
    with pytest.raises(TokenizerLoadError, match=r"the added token .* has no integer id and text content") as info:
        pipeline("text-classification", model=target)
    assert "\n" not in str(info.value)


def copied(factory, tmp_path, arch: str) -> Path:
    target = tmp_path / "model"
    shutil.copytree(factory.checkpoint(arch), target)
    return target


LONG_VARINT = b"\x08" + b"\xff" * 1_000_000  # field 1 read as a varint that never ends


@pytest.mark.parametrize("data, message", [
    (LONG_VARINT, r"a varint runs past 10 bytes"),
    (b"\x0a\x00", r"a piece is empty"),
    (b"\x08\x05", r"the model's field 1 has wire type 0, not 2"),
    (b"\x0a\x0a\x0a\x01a\x15\x00\x00\x00\x00\x1a\x00", r"a piece's field 3 has wire type 2, not 0"),
])
def test_a_corrupt_sentencepiece_model_is_refused_at_once_naming_the_file(factory, tmp_path, data, message):
    """A varint is at most 10 bytes: a 1 MB run of 0xFF bytes took ~40 s to grow one bigint (quadratic). A field
    of the wrong wire type or an empty piece said "object of type 'int' has no len()" or "index out of range"."""
    target = copied(factory, tmp_path, "camembert")
    (target / "tokenizer.json").unlink(missing_ok=True)
    (target / "sentencepiece.bpe.model").write_bytes(data)
    start = time.perf_counter()
    with pytest.raises(TokenizerLoadError, match=rf"sentencepiece\.bpe\.model is not a valid SentencePiece model "
                                                 rf"\({message}") as info:
        pipeline("text-classification", model=target)
    assert time.perf_counter() - start < 10 and "\n" not in str(info.value)


REDOS = {"type": "Split", "pattern": {"Regex": "(a+)+$"}, "behavior": "Isolated", "invert": False}
GIVES_UP = "a" * 28 + "!"  # past the regex engine's retry limit: the Rust library panics


def test_a_regex_that_gives_up_on_a_text_fails_that_text_in_one_line(folder):
    """A pre-tokenizer regex that backtracks without end loads (the load check's text is short), then made the
    Rust library panic at encode time: pyo3's PanicException, a BaseException that `except Exception` misses.
    Each encoding path says it in one typed line, and the tokenizer keeps working on other texts."""
    edit(folder, lambda data: data.update(pre_tokenizer=REDOS))
    pipe = pipeline("text-classification", model=folder)
    calls = [lambda: pipe(GIVES_UP), lambda: pipe(["un texte", GIVES_UP], truncation=True, max_length=4),
             lambda: pipe.tokenizer(GIVES_UP, "b"), lambda: pipe.tokenizer.tokenize(GIVES_UP)]
    for call in calls:
        with pytest.raises(TokenizerLoadError, match=r"gave up on this text: its own pattern .*\(a\+\)\+") as info:
            call()
        assert "\n" not in str(info.value) and str(folder) in str(info.value)
    assert pipe("un texte")[0]["label"]


def test_the_cli_and_the_server_say_the_regex_gave_up_and_go_on(folder):
    """The CLI ends in the one-line error (exit 1, no Python traceback; the Rust library's own panic message
    still reaches stderr first); the server answers that request 500 Backend and the next one 200."""
    from starlette.testclient import TestClient

    from coulisse.interfaces.server import create_app

    edit(folder, lambda data: data.update(pre_tokenizer=REDOS))
    done = subprocess.run([sys.executable, "-m", "coulisse", "classify", "-m", str(folder), GIVES_UP],
                          capture_output=True, text=True, timeout=120, env={**os.environ, "RUST_BACKTRACE": "0"})
    assert done.returncode == 1, done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("Error: TokenizerLoadError: the tokenizer of")
    assert "Traceback" not in done.stderr and "PanicException" not in done.stderr
    with TestClient(create_app(pipeline("text-classification", model=folder))) as client:
        r = client.post("/predict", json={"inputs": GIVES_UP})
        assert r.status_code == 500 and r.json()["error_type"] == "Backend", r.text
        assert "gave up on this text" in r.json()["error"]
        assert client.post("/predict", json={"inputs": "un texte"}).status_code == 200


def test_a_refused_tokenizer_json_is_named_once(folder):
    """read_json's refusal (an UnsafeCheckpointError) was wrapped again: "could not read the tokenizer files in
    DIR: DIR/tokenizer.json is refused: ...". It now reaches the caller as it is."""
    settings = folder / "tokenizer_config.json"
    settings.write_text(json.dumps({**json.loads(settings.read_text()), "tokenizer_class": "BertTokenizer"}))
    (folder / "tokenizer.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(ModelLoadError, match=r"tokenizer\.json is refused: its JSON nests deeper") as info:
        pipeline("text-classification", model=folder)
    assert str(info.value).count(str(folder)) == 1 and "could not read" not in str(info.value)


def test_the_rust_librarys_several_lines_are_cut_to_the_first(folder):
    """pyo3's enum-extraction errors span three lines ("failed to extract enum PyVocab", then a line per variant)."""
    settings = folder / "tokenizer_config.json"
    settings.write_text(json.dumps({**json.loads(settings.read_text()), "tokenizer_class": "BertTokenizer"}))
    edit(folder, lambda data: data["model"].update(vocab=[["[UNK]", 0]]))
    with pytest.raises(TokenizerLoadError, match=r"could not read the tokenizer files in .*: failed to extract"
                       ) as info:
        pipeline("text-classification", model=folder)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("key, value, expected", [
    ("tokenizer_class", ["x"], r"\['x'\] \(list\), not a class name"),
    ("tokenize_chinese_chars", [1], r"\[1\] \(list\), not true or false"),
    ("do_lower_case", "no", r"'no' \(str\), not true or false"),
    ("strip_accents", 0, r"0 \(int\), not true, false or null"),
])
def test_a_setting_of_the_wrong_type_is_named(factory, tmp_path, key, value, expected):
    """Said as "unhashable type: 'list'" or "'list' object is not an instance of 'bool'" before."""
    target = copied(factory, tmp_path, "bert")
    (target / "tokenizer_config.json").write_text(json.dumps({key: value}), encoding="utf-8")
    with pytest.raises(TokenizerLoadError, match=rf"{key} in the tokenizer settings of .* is {expected}") as info:
        pipeline("text-classification", model=target)
    assert "\n" not in str(info.value) and str(info.value).endswith("fix it, or delete the key.")


@pytest.mark.parametrize("arch, name", [("bert", "vocab.txt"), ("roberta", "merges.txt"), ("roberta", "vocab.json")])
def test_a_vocabulary_far_past_the_models_table_is_refused_before_it_is_read(factory, tmp_path, monkeypatch,
                                                                             arch, name):
    """A 10^7-line vocab.txt for a 34-row model took 87 s and 4 GB inside the Rust library before the ids were
    checked; its entries are now counted first, against twice the model's vocab_size (here without the floor
    of MAX_VOCAB_ENTRIES, which keeps a wrong vocab_size for the weights' shape check: tests/broken.py)."""
    from tokenizers import models

    from coulisse.tokenizer import build

    monkeypatch.setattr(build, "MAX_VOCAB_ENTRIES", 1000)
    target = copied(factory, tmp_path, arch)
    rows = vocab_size(target)
    path = target / name
    if name == "vocab.json":
        vocab = json.loads(path.read_text(encoding="utf-8"))
        vocab.update({f"tok{i}": len(vocab) + i for i in range(2 * rows + 1100)})
        path.write_text(json.dumps(vocab), encoding="utf-8")
    else:
        with path.open("a", encoding="utf-8") as f:
            f.writelines(f"t{i} k{i}\n" for i in range(2 * rows + 1100))
    monkeypatch.setattr(models.WordPiece, "read_file", lambda *a: pytest.fail("the file was read"))
    with pytest.raises(TokenizerLoadError, match=rf"{name} holds more than [\d,]+ entries, but the model's embedding "
                                                 rf"table has {rows} rows") as info:
        pipeline("text-classification", model=target)
    assert "\n" not in str(info.value)


def test_without_a_model_a_vocabulary_is_bounded_by_the_largest_released_ones(factory, tmp_path, monkeypatch):
    from coulisse.tokenizer import Tokenizer, build

    target = copied(factory, tmp_path, "bert")
    Tokenizer.from_dir(target)
    monkeypatch.setattr(build, "MAX_VOCAB_ENTRIES", 1000)
    with pytest.raises(TokenizerLoadError, match=r"vocab\.txt holds more than 1,000 entries, but no released "
                                                 r"vocabulary has half as many"):
        Tokenizer.from_dir(target)


def test_a_vocabulary_past_the_floor_is_refused_before_it_is_read(factory, tmp_path, monkeypatch):
    """The floor itself (MAX_VOCAB_ENTRIES, 2,000,000) holds for a small model: 2,000,100 lines are counted
    and refused, never handed to the Rust library."""
    from tokenizers import models

    from coulisse.tokenizer.build import MAX_VOCAB_ENTRIES

    target = copied(factory, tmp_path, "bert")
    with (target / "vocab.txt").open("a", encoding="utf-8") as f:
        f.write("t\n" * (MAX_VOCAB_ENTRIES + 100))
    monkeypatch.setattr(models.WordPiece, "read_file", lambda *a: pytest.fail("the file was read"))
    with pytest.raises(TokenizerLoadError, match=r"vocab\.txt holds more than 2,000,000 entries"):
        pipeline("text-classification", model=target)

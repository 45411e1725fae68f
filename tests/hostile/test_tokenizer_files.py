"""Tokenizer files that do not fit their model, or are broken: refused at load in one line, never an
IndexError inside the first forward, a Rust panic with its backtrace, or a traceback at the first call."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from coulisse import pipeline
from coulisse.errors import TokenizerLoadError


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

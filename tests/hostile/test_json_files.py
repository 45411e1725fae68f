"""A checkpoint's small JSON files besides config.json (tokenizer settings, a BPE vocabulary, sentence-transformers'
modules and settings, a shard index) are untrusted too: nesting past the parser's limit, bytes that are not UTF-8
or an integer of thousands of digits give one typed line, never Python's RecursionError, UnicodeDecodeError or
ValueError with a traceback. And a module folder deeper than the first level cannot link outside the model."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from coulisse import pipeline
from coulisse.errors import ModelLoadError, UnsafeCheckpointError
from coulisse.tasks.feature_extraction import read_settings, sentence_config
from coulisse.tasks.sparse_embedding import splade_config
from coulisse.weights import read_weights

CONTENTS = {
    "deep nesting": b'{"x": ' + b"[" * 200_000 + b"]" * 200_000 + b"}",
    "not UTF-8": b'{"name": "caf\xe9"}',
    "5000-digit integer": b'{"n": ' + b"9" * 5000 + b"}",
}
MODULES = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
           {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]


def assert_one_line(error: Exception) -> None:
    assert isinstance(error, ModelLoadError) and "\n" not in str(error), repr(error)


@pytest.mark.parametrize("content", list(CONTENTS))
@pytest.mark.parametrize("name, tokenizer", [("tokenizer_config.json", "wordpiece"),
                                             ("special_tokens_map.json", "wordpiece"), ("vocab.json", "bpe")])
def test_tokenizer_json_files(factory, tmp_path, name, tokenizer, content):
    folder = tmp_path / "model"
    shutil.copytree(factory.checkpoint("bert" if tokenizer == "wordpiece" else "roberta"), folder)
    assert tokenizer != "bpe" or (folder / "vocab.json").is_file()
    (folder / name).write_bytes(CONTENTS[content])
    with pytest.raises(ModelLoadError) as info:
        pipeline("feature-extraction", model=folder)
    assert_one_line(info.value)
    assert name in str(info.value)


@pytest.mark.parametrize("content", list(CONTENTS))
@pytest.mark.parametrize("name", ["modules.json", "1_Pooling/config.json", "sentence_bert_config.json",
                                  "config_sentence_transformers.json"])
def test_sentence_transformers_files(tmp_path, name, content):
    (tmp_path / "1_Pooling").mkdir()
    (tmp_path / "modules.json").write_text(json.dumps(MODULES))
    (tmp_path / "1_Pooling" / "config.json").write_text('{"pooling_mode": "mean"}')
    (tmp_path / name).write_bytes(CONTENTS[content])
    for read in (sentence_config, read_settings):
        try:
            read(tmp_path)
        except Exception as e:  # noqa: BLE001 (which error it is, is the point)
            assert_one_line(e)
            assert name in str(e)
    with pytest.raises(ModelLoadError):
        (read_settings if name == "config_sentence_transformers.json" else sentence_config)(tmp_path)


@pytest.mark.parametrize("content", list(CONTENTS))
def test_a_shard_index(tmp_path, content):
    (tmp_path / "model.safetensors.index.json").write_bytes(CONTENTS[content])
    with pytest.raises(ModelLoadError) as info:
        read_weights(tmp_path)
    assert_one_line(info.value)


def test_the_cli_says_it_in_one_line(factory, tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(factory.checkpoint("bert"), folder)
    (folder / "tokenizer_config.json").write_bytes(CONTENTS["deep nesting"])
    done = subprocess.run([sys.executable, "-m", "coulisse", "classify", "-m", str(folder), "un texte"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert done.stderr.strip().startswith("Error: UnsafeCheckpointError") and "\n" not in done.stderr.strip()


@pytest.mark.parametrize("module, name", [(1, "config.json"), (0, "sentence_bert_config.json")])
def test_a_deeper_module_folder_cannot_link_outside(tmp_path, module, name):
    """A module at "path": "a/b" (two levels down, past what the load's first look covers) whose settings file
    links to a file outside: refused before it is read, and nothing of that file is shown."""
    folder, outside = tmp_path / "model", tmp_path / "outside.json"
    outside.write_text(json.dumps({"pooling_mode": "TOP-SECRET", "max_seq_length": "TOP-SECRET"}))
    (folder / "a" / "b").mkdir(parents=True)
    listing = json.loads(json.dumps(MODULES))
    listing[module]["path"] = "a/b"
    (folder / "modules.json").write_text(json.dumps(listing))
    if module == 0:
        (folder / "1_Pooling").mkdir()
        (folder / "1_Pooling" / "config.json").write_text('{"pooling_mode": "mean"}')
    (folder / "a" / "b" / name).symlink_to(outside)
    for read in (sentence_config, splade_config):
        with pytest.raises(UnsafeCheckpointError, match=f"a/b/{name} is a symlink") as info:
            read(folder)
        assert "TOP-SECRET" not in str(info.value)

"""Broken checkpoints, each built from a good one the way users break them, with the typed error coulisse
must raise and the words its message must contain (what failed, the value, how to fix it).

Shared by tests/test_errors.py (Python API) and tests/interfaces/test_cli.py (one-line CLI errors).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from coulisse import errors


@dataclass
class Broken:
    build: object  # (factory, tf_camembert_dir, target) -> None
    error: type
    words: tuple[str, ...]  # `{dir}` stands for the checkpoint folder


def _copy(source: Path, target: Path) -> None:
    shutil.copytree(source, target, dirs_exist_ok=True)


def _good(factory, target, arch="bert", weights="safetensors", **kw):
    _copy(factory.checkpoint(arch, weights, **kw), target)


def _edit_config(target: Path, **changes) -> None:
    config = json.loads((target / "config.json").read_text())
    config.update(changes)
    (target / "config.json").write_text(json.dumps(config))


def _edit_tensors(target: Path, edit) -> None:
    path = target / "model.safetensors"
    tensors = load_file(str(path))
    edit(tensors)
    save_file(tensors, str(path), metadata={"format": "pt"})


def _garbage(path: Path) -> None:
    path.write_bytes(b"\x00\x13not what you think\xff" * 40)


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def missing_config(factory, tf_dir, target):
    _good(factory, target)
    (target / "config.json").unlink()


def invalid_config(factory, tf_dir, target):
    _good(factory, target)
    (target / "config.json").write_text('{"model_type": "bert",')


def unknown_model_type(factory, tf_dir, target):
    _good(factory, target)
    _edit_config(target, model_type="gpt2")


def missing_weights(factory, tf_dir, target):
    _good(factory, target)
    (target / "model.safetensors").unlink()


def corrupt_safetensors(factory, tf_dir, target):
    _good(factory, target)
    _garbage(target / "model.safetensors")


def truncated_safetensors(factory, tf_dir, target):
    _good(factory, target)
    _truncate(target / "model.safetensors")


def corrupt_bin(factory, tf_dir, target):
    _good(factory, target, weights="bin")
    _garbage(target / "pytorch_model.bin")


def truncated_bin(factory, tf_dir, target):
    _good(factory, target, weights="bin")
    _truncate(target / "pytorch_model.bin")


def corrupt_h5(factory, tf_dir, target):
    _copy(tf_dir, target)
    _garbage(target / "tf_model.h5")


def truncated_h5(factory, tf_dir, target):
    _copy(tf_dir, target)
    _truncate(target / "tf_model.h5")


def corrupt_sentencepiece(factory, tf_dir, target):
    _copy(tf_dir, target)
    _garbage(target / "sentencepiece.bpe.model")


def corrupt_tokenizer_json(factory, tf_dir, target):
    _good(factory, target, tokenizer="tokenizer.json")
    (target / "tokenizer.json").write_text('{"version": "1.0", "model": ')


def no_tokenizer(factory, tf_dir, target):
    _good(factory, target)
    (target / "vocab.txt").unlink()


def missing_shard(factory, tf_dir, target):
    _good(factory, target, weights="sharded-safetensors")
    sorted(target.glob("model-*.safetensors"))[-1].unlink()


def wrong_shape_classifier(factory, tf_dir, target):
    _good(factory, target)
    _edit_tensors(target, lambda t: t.update({"classifier.weight": torch.zeros(4, 32)}))


def wrong_shape_query(factory, tf_dir, target):
    """One part of the fused query/key/value projection has the wrong shape."""
    _good(factory, target)
    key = "bert.encoder.layer.1.attention.self.query.weight"
    _edit_tensors(target, lambda t: t.update({key: torch.zeros(32, 16)}))


def wrong_vocab_size(factory, tf_dir, target):
    _good(factory, target)
    _edit_config(target, vocab_size=1000)


def missing_tensor(factory, tf_dir, target):
    _good(factory, target)
    _edit_tensors(target, lambda t: t.pop("bert.encoder.layer.1.output.dense.weight"))


def too_few_layers_in_config(factory, tf_dir, target):
    _good(factory, target)
    _edit_config(target, num_hidden_layers=1)


def no_classifier(factory, tf_dir, target):
    _good(factory, target, base=True)


BROKEN = {
    "missing-config": Broken(missing_config, errors.ModelLoadError, ("config.json", "{dir}")),
    "invalid-config": Broken(invalid_config, errors.ModelLoadError, ("config.json", "not valid JSON")),
    "unknown-model-type": Broken(unknown_model_type, errors.UnsupportedModelError,
                                 ("'gpt2'", "bert", "camembert", "distilbert", "roberta", "xlm-roberta")),
    "missing-weights": Broken(missing_weights, errors.ModelLoadError,
                              ("no usable weight file", "{dir}", "config.json", "vocab.txt",  # found
                               "model.safetensors", "pytorch_model.bin", "tf_model.h5")),  # supported
    "corrupt-safetensors": Broken(corrupt_safetensors, errors.ModelLoadError,
                                  ("model.safetensors", "corrupt")),
    "truncated-safetensors": Broken(truncated_safetensors, errors.ModelLoadError,
                                    ("model.safetensors", "corrupt")),
    "corrupt-bin": Broken(corrupt_bin, errors.ModelLoadError, ("pytorch_model.bin", "corrupt")),
    "truncated-bin": Broken(truncated_bin, errors.ModelLoadError, ("pytorch_model.bin", "corrupt")),
    "corrupt-h5": Broken(corrupt_h5, errors.ModelLoadError, ("tf_model.h5", "corrupt")),
    "truncated-h5": Broken(truncated_h5, errors.ModelLoadError, ("tf_model.h5", "corrupt")),
    "corrupt-sentencepiece": Broken(corrupt_sentencepiece, errors.TokenizerLoadError,
                                    ("sentencepiece.bpe.model", "not a valid SentencePiece model")),
    "corrupt-tokenizer-json": Broken(corrupt_tokenizer_json, errors.TokenizerLoadError, ("{dir}",)),
    "no-tokenizer": Broken(no_tokenizer, errors.TokenizerLoadError,
                           ("no tokenizer files", "{dir}", "config.json", "tokenizer.json", "vocab.txt")),
    "missing-shard": Broken(missing_shard, errors.ModelLoadError,
                            ("model-00003-of-00003.safetensors", "missing")),
    "wrong-shape-classifier": Broken(wrong_shape_classifier, errors.WeightShapeError,
                                     ("classifier.weight", "(4, 32)", "(3, 32)")),
    "wrong-shape-query": Broken(wrong_shape_query, errors.WeightShapeError,
                                ("encoder.layer.1.attention.self.query.weight", "(32, 16)", "(32, 32)")),
    "wrong-vocab-size": Broken(wrong_vocab_size, errors.WeightShapeError,
                               ("embeddings.word_embeddings.weight", "(30522, 32)", "(1000, 32)",
                                "vocab_size")),
    "missing-tensor": Broken(missing_tensor, errors.ModelLoadError, ("encoder.layer.1.output.dense.weight",)),
    "too-few-layers": Broken(too_few_layers_in_config, errors.ModelLoadError,
                             ("encoder.layer.1", "num_hidden_layers")),
    "no-classifier": Broken(no_classifier, errors.MissingHeadError,
                            ("classification head", "feature-extraction")),
}


def build(name: str, factory, tf_dir: Path, target: Path) -> Path:
    target.mkdir(parents=True, exist_ok=True)
    BROKEN[name].build(factory, tf_dir, target)
    return target


def expected_words(name: str, directory: Path) -> list[str]:
    return [w.replace("{dir}", str(directory)) for w in BROKEN[name].words]

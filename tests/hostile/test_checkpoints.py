"""Hostile checkpoints: files crafted to read host files, escape the model folder or exhaust memory. Each is
built here by a small generator and must fail fast with a typed one-line error, having read nothing foreign."""

from __future__ import annotations

import json
import shutil
import time

import h5py
import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from coulisse.config import EncoderConfig
from coulisse.errors import ModelLoadError, UnsafeCheckpointError, UnsupportedModelError
from coulisse.weights import read_weights

SECRET = b"root:x:0:0:root:/root:/bin/bash\n" * 4  # stands for /etc/passwd: 128 bytes = 32 float32


def _assert_refused(directory, *words):
    with pytest.raises(UnsafeCheckpointError) as info:
        read_weights(directory)
    message = str(info.value)
    assert "\n" not in message
    for word in words:
        assert word in message, f"{word!r} missing from: {message}"
    return message


# --- tf_model.h5 -----------------------------------------------------------------------------------------

def _h5(directory, build):
    directory.mkdir(exist_ok=True)
    with h5py.File(directory / "tf_model.h5", "w") as f:
        group = f.create_group("m")
        group.create_dataset("m/LayerNorm/gamma:0", data=np.ones(32, np.float32))
        names = ["m/LayerNorm/gamma:0", *build(f, group)]
        f.attrs["layer_names"] = [b"m"]
        group.attrs["weight_names"] = [n.encode() for n in names]
    return directory


def external_storage(f, group, tmp):
    secret = tmp / "passwd"
    secret.write_bytes(SECRET)
    group.create_dataset("m/LayerNorm/beta:0", shape=(32,), dtype="<f4", external=[(str(secret), 0, len(SECRET))])
    return ["m/LayerNorm/beta:0"]


def external_link(f, group, tmp):
    with h5py.File(tmp / "other.h5", "w") as other:
        other["beta"] = np.frombuffer(SECRET, np.float32)
    group["m/LayerNorm/beta:0"] = h5py.ExternalLink(str(tmp / "other.h5"), "/beta")
    return ["m/LayerNorm/beta:0"]


def virtual_dataset(f, group, tmp):
    with h5py.File(tmp / "other.h5", "w") as other:
        other["beta"] = np.frombuffer(SECRET, np.float32)
    layout = h5py.VirtualLayout(shape=(32,), dtype="<f4")
    layout[:] = h5py.VirtualSource(str(tmp / "other.h5"), "beta", shape=(32,))
    group.create_virtual_dataset("m/LayerNorm/beta:0", layout)
    return ["m/LayerNorm/beta:0"]


def huge_declared(f, group, tmp):
    group.create_dataset("m/embeddings/word_embeddings/weight:0", shape=(2**29,), dtype="<f4")  # 2 GiB
    return ["m/embeddings/word_embeddings/weight:0"]


H5_CASES = {"external-storage": (external_storage, "external storage"),
            "external-link": (external_link, "external link"),
            "virtual-dataset": (virtual_dataset, "virtual dataset"),
            "huge-declared-dataset": (huge_declared, "more than the whole file")}


@pytest.mark.parametrize("name", list(H5_CASES))
def test_hostile_h5_is_refused_before_reading(name, tmp_path, monkeypatch):
    build, words = H5_CASES[name]
    directory = _h5(tmp_path / "model", lambda f, g: build(f, g, tmp_path))
    assert (directory / "tf_model.h5").stat().st_size < 1_000_000
    read = []
    monkeypatch.setattr(h5py.Dataset, "__getitem__", lambda self, key: read.append(self.name))
    _assert_refused(directory, words, "tf_model.h5")
    assert read == []  # refused before any dataset was read


@pytest.mark.parametrize("name", list(H5_CASES))
def test_hostile_h5_never_yields_foreign_bytes(name, tmp_path):
    build, _ = H5_CASES[name]
    directory = _h5(tmp_path / "model", lambda f, g: build(f, g, tmp_path))
    try:
        tensors, _ = read_weights(directory)
    except UnsafeCheckpointError:
        return
    for tensor in tensors.values():  # pragma: no cover - reached only if the reader lets one through
        assert SECRET not in tensor.numpy().tobytes()
    pytest.fail(f"{name} was read")


def test_in_file_soft_link_is_still_read(tmp_path):
    def soft(f, group):
        group["m/LayerNorm/beta:0"] = h5py.SoftLink("/m/m/LayerNorm/gamma:0")
        return ["m/LayerNorm/beta:0"]

    tensors, _ = read_weights(_h5(tmp_path / "model", soft))
    assert tensors["LayerNorm.bias"].tolist() == [1.0] * 32


# --- sharded index -----------------------------------------------------------------------------------------

def _sharded(directory, shard_name, tmp):
    directory.mkdir()
    outside = tmp / "outside.safetensors"
    save_file({"w": torch.ones(2)}, str(outside))
    shard = {"/abs": str(outside), "../x": "../outside.safetensors"}.get(shard_name, shard_name)
    if shard_name == "symlink":
        (directory / "link.safetensors").symlink_to(outside)
        shard = "link.safetensors"
    index = {"metadata": {}, "weight_map": {"w": shard}}
    (directory / "model.safetensors.index.json").write_text(json.dumps(index))
    return directory


@pytest.mark.parametrize("shard", ["/abs", "../x", "symlink"])
def test_shard_paths_stay_inside_the_model_folder(shard, tmp_path):
    _assert_refused(_sharded(tmp_path / "model", shard, tmp_path), "shard path", "model.safetensors.index.json")


# --- config.json -------------------------------------------------------------------------------------------

BASE = {"model_type": "bert", "vocab_size": 100, "hidden_size": 32, "num_hidden_layers": 2,
        "num_attention_heads": 4, "intermediate_size": 64}

CONFIGS = {
    "num_labels 1e9": ({"num_labels": 1e9}, UnsafeCheckpointError, "num_labels"),
    "num_hidden_layers 1e7": ({"num_hidden_layers": 10**7}, UnsafeCheckpointError, "num_hidden_layers"),
    "num_attention_heads 0": ({"num_attention_heads": 0}, UnsafeCheckpointError, "num_attention_heads"),
    "heads do not divide hidden": ({"num_attention_heads": 5}, UnsafeCheckpointError, "divisor"),
    "hidden_size huge": ({"hidden_size": 2**40}, UnsafeCheckpointError, "hidden_size"),
    "vocab_size string": ({"vocab_size": "100"}, UnsafeCheckpointError, "vocab_size"),
    "max_position_embeddings huge": ({"max_position_embeddings": 10**9}, UnsafeCheckpointError,
                                     "max_position_embeddings"),
    "unknown hidden_act": ({"hidden_act": "mish"}, UnsupportedModelError, "hidden_act"),
    "hidden_act not a string": ({"hidden_act": {"a": 1}}, UnsupportedModelError, "hidden_act"),
    "id2label key not an integer": ({"id2label": {"zero": "NEG"}}, UnsafeCheckpointError, "id2label"),
    "distilbert n_layers 1e7": ({"model_type": "distilbert", "num_hidden_layers": None, "n_layers": 10**7},
                                UnsafeCheckpointError, "num_hidden_layers"),
}


def _write(tmp_path, text):
    path = tmp_path / "config.json"
    path.write_text(text)
    return path


@pytest.mark.parametrize("name", list(CONFIGS))
def test_hostile_config_values_fail_fast(name, tmp_path):
    changes, error, word = CONFIGS[name]
    start = time.perf_counter()
    with pytest.raises(error) as info:
        config = {k: v for k, v in {**BASE, **changes}.items() if v is not None}  # None: key removed
        EncoderConfig.from_file(_write(tmp_path, json.dumps(config)))
    assert time.perf_counter() - start < 1.0
    assert word in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize(("name", "text"), [
    ("5000-digit integer", json.dumps(BASE)[:-1] + ', "num_labels": ' + "9" * 5000 + "}"),
    ("deep nesting", '{"model_type": "bert", "x": ' + "[" * 200_000 + "]" * 200_000 + "}"),
])
def test_hostile_json_is_a_typed_error(name, text, tmp_path):
    with pytest.raises(ModelLoadError) as info:
        EncoderConfig.from_file(_write(tmp_path, text))
    assert "\n" not in str(info.value)


def test_real_configs_still_load(tmp_path):
    config = EncoderConfig.from_file(_write(tmp_path, json.dumps({**BASE, "num_labels": 3.0})))
    assert config.num_labels == 3 and config.head_dim == 8


def test_the_activation_names_match_the_model_code():
    from coulisse.config import ACTIVATION_NAMES
    from coulisse.models.bert import ACTIVATIONS

    assert set(ACTIVATIONS) <= ACTIVATION_NAMES


def test_hub_cache_blob_symlinks_are_allowed(tmp_path):
    snapshot = tmp_path / "models--x--y" / "snapshots" / "abc"
    blobs = tmp_path / "models--x--y" / "blobs"
    snapshot.mkdir(parents=True)
    blobs.mkdir()
    save_file({"w": torch.ones(2)}, str(blobs / "123"))
    (snapshot / "model-00001.safetensors").symlink_to(blobs / "123")
    (snapshot / "model.safetensors.index.json").write_text(
        json.dumps({"weight_map": {"w": "model-00001.safetensors"}}))
    tensors, _ = read_weights(snapshot)
    assert tensors["w"].tolist() == [1.0, 1.0]
    shutil.rmtree(tmp_path / "models--x--y")

"""Hostile checkpoints: files crafted to read host files, escape the model folder or exhaust memory. Each is
built here by a small generator and must fail fast with a typed one-line error, having read nothing foreign."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import struct
import subprocess
import sys
import time
import uuid
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from coulisse.config import EncoderConfig
from coulisse.errors import ModelLoadError, UnsafeCheckpointError, UnsupportedModelError, WeightShapeError
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


@pytest.mark.parametrize("what", ["fifo", "folder"])
def test_a_shard_that_is_no_file_is_said_so(tmp_path, what):
    """There, but not a file to read: not called missing (audit 43)."""
    directory = tmp_path / "model"
    directory.mkdir()
    if what == "fifo":
        os.mkfifo(directory / "w.safetensors")
    else:
        (directory / "w.safetensors").mkdir()
    index = {"metadata": {}, "weight_map": {"w": "w.safetensors"}}
    (directory / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(ModelLoadError, match="shard w.safetensors listed in .* is not a regular file in"):
        read_weights(directory)
    if what == "folder":
        (directory / "w.safetensors").rmdir()
    else:
        (directory / "w.safetensors").unlink()
    with pytest.raises(ModelLoadError, match="shard w.safetensors listed in .* is missing from"):
        read_weights(directory)


def test_an_unused_token_type_table_names_type_vocab_size(factory, tmp_path):
    """type_vocab_size 0 leaves the weights' token-type table unused: the message names that field, not the
    number of layers (audit 43)."""
    from coulisse import pipeline

    folder = tmp_path / "model"
    shutil.copytree(factory.checkpoint("bert", tokenizer="wordpiece"), folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "type_vocab_size": 0}))
    with pytest.raises(ModelLoadError, match=r"token_type_embeddings.* type_vocab_size in config.json may be wrong"):
        pipeline("text-classification", model=folder)


def test_a_tensor_in_two_shards_is_refused_whichever_would_win(tmp_path):
    directory = tmp_path / "model"
    directory.mkdir()
    save_file({"w": torch.ones(2), "a": torch.ones(1)}, str(directory / "a.safetensors"))
    save_file({"w": torch.zeros(2)}, str(directory / "b.safetensors"))
    index = {"metadata": {}, "weight_map": {"w": "b.safetensors", "a": "a.safetensors"}}
    (directory / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(ModelLoadError, match="tensor w is stored in two shards, a.safetensors and b.safetensors"):
        read_weights(directory)


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
                                UnsafeCheckpointError, "n_layers = 10000000"),  # named as the file spells it
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


# --- symlinks in the model folder: none may lead outside it ------------------------------------------------

@pytest.mark.parametrize("name", ["vocab.txt", "config.json", "model.safetensors"])
def test_a_symlink_leading_outside_the_folder_is_refused(factory, tmp_path, name):
    """A crafted folder whose vocab.txt links to a host file would serve that file's lines through /decode
    and the tokens; its config.json or weights linked to /etc/passwd would be read too."""
    from coulisse import pipeline

    folder = tmp_path / "model"
    shutil.copytree(factory.checkpoint("bert", tokenizer="wordpiece"), folder)
    outside = tmp_path / "secret"
    outside.mkdir()
    (outside / name).write_bytes((folder / name).read_bytes())  # a working file: only its place is wrong
    (folder / name).unlink()
    (folder / name).symlink_to(outside / name)
    with pytest.raises(UnsafeCheckpointError, match=f"{name} is a symlink to .*secret.*outside the model folder"):
        pipeline("text-classification", model=folder)


@pytest.mark.parametrize("loop", ["two names", "itself", "in a subfolder"])
def test_a_symlink_loop_is_one_typed_error(factory, tmp_path, loop):
    """A link that never reaches a file: Path.resolve raised RuntimeError (Python 3.11), a 50-line traceback from
    every command and an untyped error from the API (audit 43)."""
    from coulisse import pipeline

    folder = tmp_path / "model"
    shutil.copytree(factory.checkpoint("bert", tokenizer="wordpiece"), folder)
    where = folder / "sub" if loop == "in a subfolder" else folder
    where.mkdir(exist_ok=True)
    if loop == "itself":
        (where / "config.json").unlink()
        (where / "config.json").symlink_to("config.json")
    else:
        (where / "a").symlink_to("b")
        (where / "b").symlink_to("a")
    with pytest.raises(UnsafeCheckpointError, match=r"is a symlink that never reaches a file \(a loop"):
        pipeline("text-classification", model=folder)


def test_many_files_or_a_subfolder_do_not_hide_a_link(factory, tmp_path):
    """Every entry of the folder and of its first subfolders is looked at: 12,000 other files first, or the
    link one level down (where sentence-transformers keeps its modules), change nothing."""
    from coulisse import pipeline

    folder = tmp_path / "model"
    shutil.copytree(factory.checkpoint("bert", tokenizer="wordpiece"), folder)
    (tmp_path / "secret").write_text("root:x:0:0\n")
    for i in range(12_000):
        (folder / f"a{i:05d}.txt").touch()
    (folder / "zz-vocab.txt").symlink_to(tmp_path / "secret")
    with pytest.raises(UnsafeCheckpointError, match="zz-vocab.txt is a symlink"):
        pipeline("text-classification", model=folder)
    (folder / "zz-vocab.txt").unlink()
    (folder / "1_Pooling").mkdir()
    (folder / "1_Pooling" / "config.json").symlink_to(tmp_path / "secret")
    with pytest.raises(UnsafeCheckpointError, match="1_Pooling/config.json is a symlink"):
        pipeline("text-classification", model=folder)


def test_symlinks_inside_the_folder_and_a_linked_folder_still_load(factory, tmp_path):
    from coulisse import pipeline

    real = tmp_path / "real"
    shutil.copytree(factory.checkpoint("bert", tokenizer="wordpiece"), real)
    (real / "weights").mkdir()
    (real / "model.safetensors").rename(real / "weights" / "model.safetensors")
    (real / "model.safetensors").symlink_to(Path("weights") / "model.safetensors")
    (tmp_path / "link").symlink_to(real)  # the folder itself may be a link
    assert pipeline("text-classification", model=tmp_path / "link")("un texte")[0]["label"]


def test_the_cli_refuses_a_linked_config_in_one_line(factory, tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(factory.checkpoint("bert", tokenizer="wordpiece"), folder)
    (folder / "config.json").unlink()
    (folder / "config.json").symlink_to("/etc/passwd")
    done = subprocess.run([sys.executable, "-m", "coulisse", "classify", "-m", str(folder), "x"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.strip().count("\n") == 0 and "symlink to /etc/passwd" in done.stderr
    assert "root:" not in done.stdout + done.stderr


# --- tf_model.h5 against the model's name table: shapes and types checked before a byte is read ------------

PREFIX = "tf_camembert_for_sequence_classification/roberta/"
WORDS = PREFIX + "embeddings/word_embeddings/weight:0"
GAMMA = PREFIX + "embeddings/LayerNorm/gamma:0"


def _tf_copy(tf_camembert_dir, target, edit):
    """The TF fixture (config, tokenizer, tf_model.h5) with its h5 edited in place by `edit(roberta_group)`."""
    shutil.copytree(tf_camembert_dir, target)
    with h5py.File(target / "tf_model.h5", "a") as f:
        edit(f["roberta"])
    return target


def _replace(group, name, **dataset):
    del group[name]
    group.create_dataset(name, **dataset)


def _list(group, *names):
    listed = [n if isinstance(n, bytes) else n.encode() for n in group.attrs["weight_names"]]
    group.attrs["weight_names"] = [*listed, *(n.encode() for n in names)]


def _load(directory):
    from coulisse.models import load_model

    return load_model(directory, EncoderConfig.from_file(directory / "config.json"), "sequence-classification")


@pytest.fixture
def reads(monkeypatch):
    """The names of the h5 datasets read during the test."""
    names: list[str] = []
    read = h5py.Dataset.__getitem__
    monkeypatch.setattr(h5py.Dataset, "__getitem__", lambda self, key: names.append(self.name) or read(self, key))
    return names


def test_h5_shape_is_checked_against_the_table_before_reading(tf_camembert_dir, tmp_path, reads):
    directory = _tf_copy(tf_camembert_dir, tmp_path / "model",
                         lambda g: _replace(g, WORDS, data=np.ones((32005, 33), np.float32)))
    with pytest.raises(WeightShapeError) as info:
        _load(directory)
    assert str(info.value) == (
        "tensor roberta.embeddings.word_embeddings.weight in tf_model.h5 has shape (32005, 33), but the config "
        "implies (32005, 32); check config.json (hidden_size, vocab_size, num_labels...).")
    assert reads == []


def test_h5_type_is_checked_against_the_table_before_reading(tf_camembert_dir, tmp_path, reads):
    directory = _tf_copy(tf_camembert_dir, tmp_path / "model",
                         lambda g: _replace(g, GAMMA, data=np.ones(32, np.int32)))
    with pytest.raises(UnsafeCheckpointError, match="has type int32, but roberta.embeddings.LayerNorm.weight is "
                                                    "a float parameter"):
        _load(directory)
    assert reads == []


def test_h5_dataset_of_fill_values_is_refused(tf_camembert_dir, tmp_path, reads):
    # Right shape, but no data written: h5py would hand back 4 MB of fill values the file does not hold.
    directory = _tf_copy(tf_camembert_dir, tmp_path / "model",
                         lambda g: _replace(g, WORDS, shape=(32005, 32), dtype="<f4"))
    with pytest.raises(UnsafeCheckpointError, match="declares 4,096,640 bytes but the file stores only 0 of them"):
        _load(directory)
    assert reads == []


def test_h5_datasets_the_model_does_not_use_are_never_read(tf_camembert_dir, tmp_path, reads):
    pooler = PREFIX + "pooler/dense/kernel:0"

    def add_pooler(group):
        group.create_dataset(pooler, data=np.full((32, 32), 7, np.float32))
        _list(group, pooler)

    directory = _tf_copy(tf_camembert_dir, tmp_path / "model", add_pooler)
    model = _load(directory)
    assert f"/roberta/{pooler}" not in reads and f"/roberta/{WORDS}" in reads
    pristine = _load(tf_camembert_dir)
    for (name, ours), (_, theirs) in zip(model.state_dict().items(), pristine.state_dict().items(), strict=True):
        assert torch.equal(ours, theirs), name


def test_h5_unused_encoder_tensor_is_named_without_being_read(tf_camembert_dir, tmp_path, reads):
    extra = PREFIX + "encoder/layer_._2/output/dense/bias:0"

    def add_layer(group):
        group.create_dataset(extra, data=np.ones(32, np.float32))
        _list(group, extra)

    with pytest.raises(ModelLoadError, match=r"'encoder.layer.2.output.dense.bias' \(32,\); num_hidden_layers"):
        _load(_tf_copy(tf_camembert_dir, tmp_path / "model", add_layer))
    assert f"/roberta/{extra}" not in reads


def _bomb(directory, pieces):
    """A real 256 KB dataset, then `pieces` gzip datasets of zeros declaring 256 KB each (a few hundred bytes
    stored): each is smaller than the file, all together many times larger."""
    directory.mkdir()
    with h5py.File(directory / "tf_model.h5", "w") as f:
        group = f.create_group("m")
        group.create_dataset("m/LayerNorm/gamma:0", data=np.random.default_rng(0).random(65536, np.float32))
        names = ["m/LayerNorm/gamma:0"]
        for i in range(pieces):
            names.append(f"m/layer_._{i}/output/dense/bias:0")
            group.create_dataset(names[-1], shape=(65536,), dtype="<f4", data=np.zeros(65536, np.float32),
                                 compression="gzip", chunks=(65536,))
        f.attrs["layer_names"] = [b"m"]
        group.attrs["weight_names"] = [n.encode() for n in names]
    return directory


def test_h5_decompression_bomb_is_refused_before_reading(tmp_path, reads):
    directory = _bomb(tmp_path / "model", 40)
    size = (directory / "tf_model.h5").stat().st_size
    assert size < 512 * 1024
    message = _assert_refused(directory, "more than 10 times the file's size", f"({size:,} bytes, some compressed)")
    assert f"would take {41 * 65536 * 4:,} bytes" in message
    assert reads == []


def test_h5_compressed_within_the_ratio_is_read(tmp_path):
    tensors, _ = read_weights(_bomb(tmp_path / "model", 3))
    assert len(tensors) == 4 and tensors["layer.2.output.dense.bias"].abs().sum() == 0


# --- pickles ----------------------------------------------------------------------------------------------


class _RunsCommand:
    """Unpickled, it would run a shell command: what a hostile pytorch_model.bin holds."""

    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


@pytest.mark.parametrize("layout", ["zip", "legacy", "plain pickle"])
def test_pickle_that_calls_os_system_is_refused_and_never_runs(layout, tmp_path):
    marker = tmp_path / "ran"
    directory = tmp_path / "model"
    directory.mkdir()
    path = directory / "pytorch_model.bin"
    state = {"w": torch.ones(2), "x": _RunsCommand(f"touch {marker}")}
    if layout == "plain pickle":
        path.write_bytes(pickle.dumps(state, protocol=2))
    else:
        torch.save(state, path, _use_new_zipfile_serialization=layout == "zip")
    with pytest.raises(UnsafeCheckpointError) as info:
        read_weights(directory)
    assert str(info.value) == (
        f"{path} is refused: its pickle asks to import and call {os.system.__module__}.system, which a weights "
        "file never needs; coulisse reads .bin files with torch.load(weights_only=True), which runs no code from "
        "the file. Use the checkpoint's model.safetensors, or, only if you trust its source, convert it with "
        "transformers' save_pretrained(dir, safe_serialization=True).")
    assert not marker.exists()


class _LoadsANestedPickle:
    """torch's own `_load_from_bytes` unpickles its argument with torch.load: a pickle inside the pickle."""

    def __reduce__(self):
        return (torch.storage._load_from_bytes, (pickle.dumps(_RunsCommand("true")),))


@pytest.mark.parametrize("protocol", [2, 4])
def test_a_torch_function_that_loads_a_nested_pickle_is_hostile_not_corrupt(tmp_path, protocol, recwarn):
    directory = tmp_path / "model"
    directory.mkdir()
    path = directory / "pytorch_model.bin"
    path.write_bytes(pickle.dumps({"w": torch.ones(2), "x": _LoadsANestedPickle()}, protocol=protocol))
    with pytest.raises(UnsafeCheckpointError, match="import and call torch.storage._load_from_bytes"):
        read_weights(directory)
    assert not [w for w in recwarn if "pickle protocol" in str(w.message)]  # torch's note is not shown


def test_the_fallback_pattern_names_what_torch_allows(monkeypatch):
    from torch._weights_only_unpickler import _get_allowed_globals

    from coulisse.weights.formats import SAFE_GLOBAL

    torch_names = [n for n in _get_allowed_globals() if n.startswith("torch.") and "cuda" not in n]
    assert [n for n in torch_names if not SAFE_GLOBAL.match(n)] == []
    for hostile in ("torch.storage._load_from_bytes", "torch.load", "torch.hub.load", "torch.jit.load",
                    "builtins.eval", "posix.system"):
        assert not SAFE_GLOBAL.match(hostile), hostile


def test_truncated_pickle_is_corrupt_not_hostile(tmp_path):
    directory = tmp_path / "model"
    directory.mkdir()
    path = directory / "pytorch_model.bin"
    torch.save({"w": torch.ones(1000)}, path, _use_new_zipfile_serialization=False)
    path.write_bytes(path.read_bytes()[:300])  # cut inside the state dict's pickle
    with pytest.raises(ModelLoadError) as info:
        read_weights(directory)
    assert type(info.value) is ModelLoadError
    message = str(info.value)
    assert message.startswith(f"could not read {path} (UnpicklingError: ") and "corrupt or truncated" in message
    assert "\n" not in message and "weights_only` set to `False`" not in message  # not torch's advice


# --- through the CLI: one line, exit 1, not a byte of the foreign file in any output ----------------------


def _coulisse(*args, env=None):
    script = Path(sys.executable).parent / "coulisse"
    command = [str(script)] if script.is_file() else [sys.executable, "-m", "coulisse.interfaces.cli"]
    return subprocess.run([*command, *args], capture_output=True, env=env, timeout=300)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["external-storage", "external-link", "virtual-dataset"])
def test_cli_refuses_an_h5_reading_a_file_outside_and_shows_none_of_it(name, tf_camembert_dir, tmp_path):
    marker = f"marker-{uuid.uuid4().hex}".encode()
    secret = tmp_path / "elsewhere" / "notes.txt"
    secret.parent.mkdir()
    secret.write_bytes((marker * 10)[:128])  # 32 float32, the size of the bias it would replace
    beta = PREFIX + "embeddings/LayerNorm/beta:0"

    def point_outside(group):
        del group[beta]
        if name == "external-storage":
            group.create_dataset(beta, shape=(32,), dtype="<f4", external=[(str(secret), 0, 128)])
            return
        with h5py.File(tmp_path / "elsewhere" / "other.h5", "w") as other:
            other["beta"] = np.frombuffer(secret.read_bytes(), np.float32)
        if name == "external-link":
            group[beta] = h5py.ExternalLink(str(tmp_path / "elsewhere" / "other.h5"), "/beta")
        else:
            layout = h5py.VirtualLayout(shape=(32,), dtype="<f4")
            layout[:] = h5py.VirtualSource(str(tmp_path / "elsewhere" / "other.h5"), "beta", shape=(32,))
            group.create_virtual_dataset(beta, layout)

    directory = _tf_copy(tf_camembert_dir, tmp_path / "model", point_outside)
    done = _coulisse("classify", "--model", str(directory), "texte")
    assert done.returncode == 1 and done.stdout == b""
    lines = done.stderr.decode().strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: UnsafeCheckpointError: "), done.stderr
    assert H5_CASES[name][1] in lines[0]
    as_floats = np.frombuffer(secret.read_bytes(), np.float32)
    for output in (done.stdout, done.stderr):
        assert marker not in output and marker[:16] not in output
        assert not any(f"{v:.4g}" in output.decode() for v in as_floats if np.isfinite(v) and v != 0)


# --- parameter values: real, finite floats ------------------------------------------------------------------

@pytest.mark.parametrize("change, message", [
    (lambda t: t.to(torch.int32), "holds int32 values, where a model parameter is a float"),
    (lambda t: t.to(torch.int64), "holds int64 values"),
    (lambda t: t.to(torch.bool), "holds bool values"),
    (lambda t: t.to(torch.complex64), "holds complex64 values"),
    (lambda t: t.to(torch.float8_e4m3fn), "holds float8_e4m3fn float8 values without their quantization scales"),
    (lambda t: t.to(torch.float8_e5m2), "holds float8_e5m2 float8 values"),
    (lambda t: t.index_fill(0, torch.tensor([0]), float("nan")), "holds NaN or infinite values"),
    (lambda t: t.index_fill(0, torch.tensor([0]), float("-inf")), "holds NaN or infinite values"),
])
def test_a_parameter_that_is_not_a_finite_float_is_refused(factory, tmp_path, change, message):
    """Cast to float32 without a word, an int32 bias read its bits as other numbers' values and a complex
    table lost half of itself; a NaN made every score NaN, printed as a label."""
    from safetensors.torch import load_file

    from coulisse import pipeline

    folder = tmp_path / "model"
    shutil.copytree(factory.checkpoint("bert", tokenizer="wordpiece"), folder)
    tensors = load_file(str(folder / "model.safetensors"))
    key = next(k for k in tensors if k.endswith("classifier.bias"))
    tensors[key] = change(tensors[key]).contiguous()
    save_file(tensors, str(folder / "model.safetensors"))
    with pytest.raises(ModelLoadError, match=f"tensor {key} in model.safetensors {message}"):
        pipeline("text-classification", model=folder)


# --- pytorch_model.bin: zip records and state dict contents ---------------------------------------------

def _bin_folder(factory, tmp_path):
    """The factory's BERT checkpoint as a zip `.bin` written by torch.save, copied to be edited."""
    folder = tmp_path / "model"
    shutil.copytree(factory.checkpoint("bert", "bin", tokenizer="wordpiece"), folder)
    return folder


def _deflated_pickle(path, padding):
    """`path` rewritten with its data.pkl DEFLATED: the real pickle, then `padding` zero bytes after its STOP
    (the audit's bomb, smaller). Returns the name of that record and its size once inflated."""
    records = {}
    with zipfile.ZipFile(path) as source:
        for info in source.infolist():
            records[info] = source.read(info.filename)
    with zipfile.ZipFile(path, "w") as archive:
        for info, data in records.items():
            if not info.filename.endswith("data.pkl"):
                archive.writestr(info, data)
                continue
            packed = zipfile.ZipInfo(info.filename, info.date_time)
            packed.compress_type = zipfile.ZIP_DEFLATED
            with archive.open(packed, "w", force_zip64=True) as out:
                out.write(data)
                for _ in range(padding >> 22):
                    out.write(bytes(4 << 20))
            name, inflated = info.filename, len(data) + (padding >> 22 << 22)
    return name, inflated


def _declared_size(path, record, size):
    """`path` with the central directory's sizes of the STORED `record` set to `size` (its data unchanged)."""
    raw = bytearray(path.read_bytes())
    at = raw.rindex(record.encode()) - 46  # the name's last copy follows its central directory header
    assert raw[at:at + 4] == b"PK\x01\x02"
    raw[at + 20:at + 28] = struct.pack("<II", size, size)  # compressed size, uncompressed size
    path.write_bytes(bytes(raw))


@pytest.fixture
def zip_reads(monkeypatch):
    """The zip records opened and the torch.load calls made during the test."""
    calls: list[str] = []
    open_record, load = zipfile.ZipFile.open, torch.load
    monkeypatch.setattr(zipfile.ZipFile, "open", lambda self, name, *a, **k: calls.append(str(name)) or
                        open_record(self, name, *a, **k))
    monkeypatch.setattr(torch, "load", lambda *a, **k: calls.append("torch.load") or load(*a, **k))
    return calls


def test_a_compressed_zip_record_is_refused_before_it_is_inflated(factory, tmp_path, zip_reads):
    """torch's zip reader inflates a record whole in memory: 1.6 MB of DEFLATE took 3.4 GB (audit 39)."""
    folder = _bin_folder(factory, tmp_path)
    path = folder / "pytorch_model.bin"
    record, inflated = _deflated_pickle(path, 256 << 20)
    size = path.stat().st_size
    assert inflated > 50 * size  # the whole checkpoint, 50 times over, from one record
    zip_reads.clear()
    message = _assert_refused(folder, str(path), f"({size:,} bytes)", f"record {record!r} is stored compressed "
                              f"(deflate, declaring {inflated:,} bytes unpacked)", "torch.save never writes",
                              "Re-save the state dict with torch.save", "model.safetensors")
    assert message.startswith(f"{path} ({size:,} bytes) is refused: ")
    assert zip_reads == []  # neither torch nor the check read a record


def test_a_record_declaring_more_than_the_file_is_refused(factory, tmp_path, zip_reads):
    folder = _bin_folder(factory, tmp_path)
    path = folder / "pytorch_model.bin"
    with zipfile.ZipFile(path) as archive:
        record = next(n for n in archive.namelist() if n.endswith("data.pkl"))
    _declared_size(path, record, 2**31)
    zip_reads.clear()
    _assert_refused(folder, f"record {record!r} declares 2,147,483,648 bytes, more than the whole file",
                    "torch.save never writes")
    assert zip_reads == []


def test_the_pickle_scan_reads_a_bounded_prefix_of_a_compressed_record(factory, tmp_path):
    """_pickle_globals names what a refused pickle imports; it must not inflate the whole record to do so."""
    import tracemalloc

    from coulisse.weights.formats import _pickle_globals

    path = _bin_folder(factory, tmp_path) / "pytorch_model.bin"
    _deflated_pickle(path, 64 << 20)
    tracemalloc.start()
    try:
        names = _pickle_globals(path, limit=1 << 20)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert "torch._utils._rebuild_tensor_v2" in names
    assert peak < 8 << 20, f"{peak:,} bytes to scan a 64 MiB record"


@pytest.mark.parametrize("layout", ["bin", "sharded-bin", "legacy"])
def test_torch_save_output_still_loads(factory, tmp_path, layout):
    """What torch.save writes passes the record check, which reads the central directory only."""
    from coulisse.weights.formats import _check_zip_records

    saved = factory.reference("bert").model.state_dict()
    if layout == "legacy":
        folder = tmp_path / "model"
        folder.mkdir()
        torch.save(saved, folder / "pytorch_model.bin", _use_new_zipfile_serialization=False)
    else:
        folder = factory.checkpoint("bert", layout)
    tensors, _ = read_weights(folder)
    assert sorted(tensors) == sorted(saved) and all(torch.equal(tensors[k], v) for k, v in saved.items())
    for path in folder.glob("*.bin"):
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                assert {i.compress_type for i in archive.infolist()} == {zipfile.ZIP_STORED}  # the premise
            _check_zip_records(path)


STATE_DICTS = {
    "list values": (lambda sd: {k: [1.0, 2.0] for k in sd}, "entry '{first}' holds a list, not a tensor"),
    "string values": (lambda sd: {k: "x" for k in sd}, "entry '{first}' holds a str, not a tensor"),
    "int keys": (lambda sd: dict(enumerate(sd.values())), "its key 0 is an int, not a tensor name"),
    "one nested dict": (lambda sd: {**sd, "extra": {"w": torch.ones(1)}}, "entry 'extra' holds a dict, not a tensor"),
}


def _odd_state_dict(factory, tmp_path, name):
    folder = _bin_folder(factory, tmp_path)
    path = folder / "pytorch_model.bin"
    state = torch.load(path, weights_only=True)
    edit, words = STATE_DICTS[name]
    torch.save(edit(state), path)
    return folder, words.format(first=next(iter(state)))


@pytest.mark.parametrize("name", list(STATE_DICTS))
def test_a_state_dict_of_other_things_than_tensors_is_a_typed_error(factory, tmp_path, name):
    """weights_only accepts lists, strings and int keys; they reached the key renaming as an AttributeError."""
    from coulisse import pipeline

    folder, words = _odd_state_dict(factory, tmp_path, name)
    with pytest.raises(ModelLoadError) as info:
        pipeline("text-classification", model=folder)
    message = str(info.value)
    assert message.startswith(f"{folder / 'pytorch_model.bin'} is not a state dict of tensors: ")
    assert words in message and "torch.save(model.state_dict(), path)" in message and "\n" not in message


@pytest.mark.parametrize("command", ["classify", "convert"])
@pytest.mark.parametrize("name", ["compressed record", "int keys", "list values"])
def test_the_cli_refuses_a_hostile_bin_in_one_line(factory, tmp_path, command, name):
    if name == "compressed record":
        folder = _bin_folder(factory, tmp_path)
        _deflated_pickle(folder / "pytorch_model.bin", 64 << 20)
        words, error = "is stored compressed (deflate,", "UnsafeCheckpointError"
    else:
        (folder, words), error = _odd_state_dict(factory, tmp_path, name), "ModelLoadError"
    if command == "classify":
        done = _coulisse("classify", "-m", str(folder), "texte")
    else:  # the factory's config names no architecture: the head is given
        done = _coulisse("convert", str(folder), str(tmp_path / "out"), "--head", "sequence-classification")
    lines = done.stderr.decode().strip().splitlines()
    assert done.returncode == 1 and done.stdout == b"", done.stderr
    assert len(lines) == 1 and lines[0].startswith(f"Error: {error}: ") and words in lines[0], done.stderr

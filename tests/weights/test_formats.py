"""Weight files: each format that transformers or torch writes reads back to exactly the tensors that were
saved; the preferred file wins; pickles are loaded with weights_only; half-precision checkpoints run in
fp32."""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest
import torch
from factory import WEIGHT_FORMATS, assert_close

from coulisse import pipeline
from coulisse.errors import ModelLoadError
from coulisse.weights import WEIGHT_FILES, read_weights

INDEX = {"sharded-safetensors": "model.safetensors.index.json", "sharded-bin": "pytorch_model.bin.index.json",
         "safetensors": "model.safetensors", "bin": "pytorch_model.bin"}


@pytest.mark.parametrize("weights", WEIGHT_FORMATS)
def test_every_format_reads_back_the_saved_state_dict(factory, weights):
    directory = factory.checkpoint("bert", weights)
    tensors, path = read_weights(directory)
    assert path.name == INDEX[weights]
    saved = factory.reference("bert").model.state_dict()
    assert sorted(tensors) == sorted(saved)
    for key, value in saved.items():
        assert torch.equal(tensors[key], value), key


def test_sharded_checkpoints_really_have_several_shards(factory):
    for weights in ("sharded-safetensors", "sharded-bin"):
        index = json.loads((factory.checkpoint("bert", weights) / INDEX[weights]).read_text())
        assert len(set(index["weight_map"].values())) > 1


def test_safetensors_is_preferred_over_bin_and_h5(factory, tf_camembert_dir, tmp_path):
    """A folder with every format: the safe, mmap-able one is read (transformers' order too)."""
    shutil.copytree(factory.checkpoint("camembert", "safetensors"), tmp_path, dirs_exist_ok=True)
    shutil.copy(factory.checkpoint("camembert", "bin") / "pytorch_model.bin", tmp_path)
    shutil.copy(tf_camembert_dir / "tf_model.h5", tmp_path)  # another model: must not be read
    _, path = read_weights(tmp_path)
    assert path.name == "model.safetensors" == WEIGHT_FILES[0]
    (tmp_path / "model.safetensors").unlink()
    _, path = read_weights(tmp_path)
    assert path.name == "pytorch_model.bin"


def test_bin_is_loaded_with_weights_only(tmp_path, factory):
    """A .bin is a pickle: one that would run code on load must be refused, and the code never run."""
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (marker.touch, ())

    shutil.copy(factory.checkpoint("bert", "bin") / "config.json", tmp_path)
    torch.save({"bert.embeddings.word_embeddings.weight": torch.zeros(2, 2), "evil": Payload()},
               tmp_path / "pytorch_model.bin")
    with pytest.raises(ModelLoadError, match="pytorch_model.bin"):
        read_weights(tmp_path)
    assert not marker.exists()


def test_bin_holding_something_else_than_a_state_dict(tmp_path):
    torch.save([torch.zeros(3)], tmp_path / "pytorch_model.bin")
    with pytest.raises(ModelLoadError, match="state dict"):
        read_weights(tmp_path)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_checkpoint_runs_in_fp32(factory, tmp_path, dtype):
    """fp16/bf16 weights are upcast: logits equal transformers' fp32 model with the same rounded weights."""
    import copy

    ref = copy.deepcopy(factory.reference("roberta").model).to(dtype)
    ref.save_pretrained(tmp_path)
    for name in ("vocab.json", "merges.txt"):
        shutil.copy(factory.tokenizer_files("roberta") / name, tmp_path)
    ref = ref.float()
    texts = ["Un film magnifique.", "Quel ennui, vraiment…"]
    tok = factory.hf_tokenizer("roberta")
    with torch.no_grad():
        want = ref(**tok(texts, padding=True, return_tensors="pt")).logits
    pipe = pipeline("text-classification", model=tmp_path)
    got = pipe.model(**pipe.tokenizer(texts, padding=True, return_tensors="pt")).logits
    assert got.dtype == torch.float32
    assert_close(f"logits from {str(dtype).removeprefix('torch.')} weights", got, want)
    assert np.abs(want[0].numpy() - want[1].numpy()).max() > 1e-2


def test_legacy_non_zip_bin_from_old_torch(factory, tmp_path):
    """Checkpoints saved before torch 1.6 are not zip files (no mmap); transformers reads them, so must we."""
    ref = factory.reference("distilbert").model
    ref.config.save_pretrained(tmp_path)
    torch.save(ref.state_dict(), tmp_path / "pytorch_model.bin", _use_new_zipfile_serialization=False)
    shutil.copy(factory.tokenizer_files("distilbert") / "vocab.txt", tmp_path)
    texts = ["Un film magnifique.", "Quel ennui, vraiment…"]
    inputs = factory.hf_tokenizer("distilbert")(texts, padding=True, return_tensors="pt")
    inputs.pop("token_type_ids")
    with torch.no_grad():
        want = ref(**inputs).logits
    pipe = pipeline("text-classification", model=tmp_path)
    got = pipe.model(**pipe.tokenizer(texts, padding=True, return_tensors="pt")).logits
    assert_close("logits legacy .bin", got, want)


@pytest.mark.parametrize("weights", ["sharded-safetensors", "sharded-bin"])
def test_a_truncated_shard_is_named_not_its_index(factory, tmp_path, weights):
    """The error named the index file (`could not read .../model.safetensors.index.json`) for a shard cut short
    (audit 40): the file to download again is the shard."""
    folder = tmp_path / "ckpt"
    shutil.copytree(factory.checkpoint("bert", weights), folder)
    index = next(folder.glob("*.index.json"))
    shard = folder / sorted(set(json.loads(index.read_text())["weight_map"].values()))[-1]
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    with pytest.raises(ModelLoadError) as e:
        read_weights(folder)
    message = str(e.value)
    assert message.startswith(f"could not read {shard} (") and "download it again" in message
    assert index.name not in message


@pytest.mark.parametrize("files, said", [
    (["flax_model.msgpack"], "holds Flax weights (flax_model.msgpack), which coulisse does not read; convert"),
    (["tf_model.h5.index.json", "tf_model-00001-of-00002.h5"], "holds sharded TensorFlow weights"),
    (["onnx/model.onnx", "model.onnx"], "holds an ONNX graph (model.onnx)"),
    (["model.ckpt.index", "model.ckpt.data-00000-of-00001"], "an original TensorFlow 1 checkpoint"),
])
def test_weights_in_a_format_coulisse_does_not_read_are_named(tmp_path, files, said):
    """Flax-only, ONNX-only, sharded-TF folders were told to "download the weights", which are there (audit 43)."""
    for name in files:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"\0")
    with pytest.raises(ModelLoadError, match=re.escape(said)):
        read_weights(tmp_path)


@pytest.mark.parametrize(("failure", "said"), [
    (PermissionError(13, "Permission denied"), "permission denied; give this user read access"),
    (MemoryError(), "not enough memory to read"),
])
def test_a_failure_that_is_not_the_files_fault_does_not_say_download_it_again(factory, monkeypatch, failure, said):
    """Every reader's exception was "corrupt or truncated — download it again", for a file this user may not read
    (root, in CI, reads anything: the reader is made to fail as open() would) or a machine short of memory."""
    from coulisse.weights import formats

    directory = factory.checkpoint("bert")

    def fails(path, expected):
        raise failure

    monkeypatch.setitem(formats.READERS, "model.safetensors", fails)
    with pytest.raises(ModelLoadError) as refused:
        read_weights(directory)
    assert said in str(refused.value) and "download it again" not in str(refused.value)

"""Mapped checkpoint pages leave the resident set once the model no longer reads them, and nothing breaks."""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from coulisse import pipeline
from coulisse.weights.mapped import release_file_pages, release_tensor_pages

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="madvise and /proc are Linux's")


def resident_kb(path) -> int:
    """Resident kB of every mapping of `path` in this process (/proc/self/smaps)."""
    target, total, inside = os.path.realpath(path), 0, False
    with open("/proc/self/smaps", encoding="utf-8") as f:
        for line in f:
            head = line.split()
            if "-" in head[0] and len(head) >= 5 and not head[0].endswith(":"):  # a mapping's header line
                inside = len(head) >= 6 and head[5] == target
            elif inside and head[0] == "Rss:":
                total += int(head[1])
    return total


@pytest.fixture
def weight_file(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "model.safetensors"
    save_file({"a": torch.randn(1024, 1024), "b": torch.randn(512, 1024)}, str(path))  # 4 MB + 2 MB
    return path


def test_release_tensor_pages_drops_only_that_tensor_and_keeps_its_values(weight_file):
    tensors = load_file(str(weight_file))
    expected = {k: v.double().sum().item() for k, v in tensors.items()}  # reads every page
    before = resident_kb(weight_file)
    assert before >= 6000, "safetensors should map the file, and the sums page it in"
    released = release_tensor_pages([tensors["a"]])
    after = resident_kb(weight_file)
    assert released >= 4 * 2**20 - 8192
    assert before - after >= 4000 and after >= 1900  # "a" left, "b" stayed
    # Dropped pages fault back in from the file, unchanged.
    assert {k: v.double().sum().item() for k, v in tensors.items()} == expected


def test_release_file_pages_drops_every_mapping_of_the_file(weight_file):
    tensors = load_file(str(weight_file))
    total = sum(v.sum().item() for v in tensors.values())
    assert resident_kb(weight_file) >= 6000
    assert release_file_pages([weight_file]) >= 6 * 2**20 - 8192
    assert resident_kb(weight_file) < 64
    assert sum(v.sum().item() for v in tensors.values()) == total


def test_anonymous_memory_is_never_released():
    t = torch.arange(2**20, dtype=torch.float32)  # 4 MB of ordinary heap memory
    assert release_tensor_pages([t]) == 0
    assert release_file_pages([]) == 0
    assert torch.equal(t, torch.arange(2**20, dtype=torch.float32))


@pytest.mark.parametrize("quantize", [None, "int8"])
def test_pipeline_leaves_no_checkpoint_pages_resident(factory, quantize):
    directory = factory.checkpoint("camembert")
    pipe = pipeline("sentiment-analysis", model=str(directory), quantize=quantize)
    weights = directory / "model.safetensors"
    assert resident_kb(weights) < 16, "repacked weights' mapped originals should be released at load"
    texts = ["Un film magnifique.", "Je déteste tellement ça !"]
    out = np.array(pipe.forward(pipe.preprocess(texts)))
    enc = pipe.tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        expected = factory.reference("camembert").model(input_ids=enc["input_ids"],
                                                        attention_mask=enc["attention_mask"]).logits.numpy()
    # Embeddings and LayerNorms page back in from the file: fp32 stays exact, int8 stays close.
    assert np.abs(out - expected).max() < (1e-4 if quantize is None else 0.05)

"""Mapped checkpoint pages leave the resident set once the model no longer reads them, and nothing breaks."""

from __future__ import annotations

import os
import platform
import sys

import numpy as np
import pytest
import torch
from resident import resident_kb
from safetensors.torch import load_file, save_file

from coulisse import pipeline
from coulisse.weights.mapped import release_file_pages, release_tensor_pages

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="madvise and /proc are Linux's")


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


def test_release_tensor_pages_of_the_whole_mapping_drops_its_neighbours_too(weight_file):
    tensors = load_file(str(weight_file))
    expected = {k: v.double().sum().item() for k, v in tensors.items()}
    assert resident_kb(weight_file) >= 6000
    assert release_tensor_pages([tensors["a"]], whole_mapping=True) >= 6 * 2**20 - 8192
    assert resident_kb(weight_file) < 64  # "b" left with "a"
    assert {k: v.double().sum().item() for k, v in tensors.items()} == expected


def test_release_file_pages_drops_every_mapping_of_the_file(weight_file):
    tensors = load_file(str(weight_file))
    total = sum(v.sum().item() for v in tensors.values())
    assert resident_kb(weight_file) >= 6000
    assert release_file_pages([weight_file]) >= 6 * 2**20 - 8192
    assert resident_kb(weight_file) < 64
    assert sum(v.sum().item() for v in tensors.values()) == total


def test_pages_written_in_place_are_kept(weight_file):
    """A private mapping's written page is the process's own copy: dropping it undid the write (audit 46: a
    transformers model's weight stepped in place went back to the file's value when a pipeline was built on the
    same folder). The written pages stay; the rest of the file still leaves the resident set."""
    tensors = load_file(str(weight_file))
    original = tensors["a"].clone()
    tensors["a"][0, :4] = 5.0  # one page of "a" written; the other 4 MB + 2 MB never
    tensors["b"][-1, -1] = -7.0
    assert sum(v.sum().item() for v in tensors.values())  # reads every page
    assert release_file_pages([weight_file]) >= 6 * 2**20 - 4 * 8192
    assert resident_kb(weight_file) < 64
    assert tensors["a"][0, :4].tolist() == [5.0] * 4 and tensors["b"][-1, -1].item() == -7.0
    assert torch.equal(tensors["a"][1:], original[1:])  # the unwritten pages came back from the file
    assert release_tensor_pages([tensors["a"]], whole_mapping=True) > 0
    assert tensors["a"][0, :4].tolist() == [5.0] * 4 and tensors["b"][-1, -1].item() == -7.0


def test_building_a_pipeline_keeps_another_models_edited_weights(factory):
    transformers = pytest.importorskip("transformers")
    directory = factory.checkpoint("camembert")
    model = transformers.AutoModelForSequenceClassification.from_pretrained(directory)
    weight = model.classifier.out_proj.weight
    with torch.no_grad():
        weight.add_(1.0)  # what an optimizer's step does
    stepped = weight.clone()
    pipeline("sentiment-analysis", model=str(directory))
    assert torch.equal(weight, stepped)


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


def test_resident_bytes_reads_this_process():
    from coulisse.weights.mapped import resident_bytes

    before = resident_bytes()
    block = torch.ones(64 << 18)  # 64 MB, touched
    after = resident_bytes()
    assert before is not None and after - before >= 60 << 20
    del block


def test_heap_trimmer_trims_only_past_its_budget(monkeypatch):
    """The batch after a trim sets the mark (its RSS holds a batch's working set); trims come only once RSS
    passes mark + growth, never for the working set itself."""
    from coulisse.weights import mapped

    trims, rss = [], iter([500, 540, 580, 601, 480, 530, 620, 631, 640])
    monkeypatch.setattr(mapped, "resident_bytes", lambda: next(rss))
    monkeypatch.setattr(mapped, "release_freed_memory", lambda: trims.append(1))
    trimmer = mapped.HeapTrimmer(growth=100)
    decisions = [trimmer.after_batch() for _ in range(9)]
    # 500 marks (limit 600); 540, 580 stay; 601 trims; 480 marks (limit 580); 530 stays; 620 trims;
    # 631 marks (limit 731); 640 stays.
    assert decisions == [False, False, False, True, False, False, True, False, False]
    assert len(trims) == trimmer.trims == 2


def test_heap_trimmer_trims_every_batch_where_rss_is_unknown(monkeypatch):
    from coulisse.weights import mapped

    trims = []
    monkeypatch.setattr(mapped, "resident_bytes", lambda: None)
    monkeypatch.setattr(mapped, "release_freed_memory", lambda: trims.append(1))
    trimmer = mapped.HeapTrimmer()
    assert all(trimmer.after_batch() for _ in range(3)) and len(trims) == 3


def test_a_trim_hands_freed_heap_back():
    """The real thing: freed, fragmented heap (kept by glibc) leaves the resident set at a trim."""
    from coulisse.weights.mapped import HeapTrimmer, resident_bytes

    # 2,048 × 64 kB, touched: below glibc's smallest mmap threshold (128 kB), so on the heap in any process
    blocks = [torch.ones(1 << 14) for _ in range(2048)]
    keep = blocks[::8]  # every 8th stays: the freed ones cannot all merge into the heap's top
    del blocks
    trimmer = HeapTrimmer()
    trimmer.limit = 0  # as if the budget were spent
    before = resident_bytes()
    assert trimmer.after_batch() and trimmer.trims == 1 and trimmer.limit is None
    assert resident_bytes() < before - (32 << 20), "at most a quarter of the 112 MB freed came back"
    assert all(float(b[0]) == 1.0 for b in keep)


HEAP_SCRIPT = """
import resource, sys, torch
from coulisse.weights.mapped import keep_activations_on_heap
tuned = keep_activations_on_heap()
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
x = torch.ones(1 << 21)  # 8 MB, freed: glibc's mmap threshold rises to it
del x
for i in range(40):  # activations of batches a little longer each time: 9 to 12 MB, touched
    if i == 20:  # the heap has settled (its first few grow it)
        before = faults()
    t = torch.ones((9 << 18) + i * (1 << 14))
    del t
print(tuned, faults() - before)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc and /proc: Linux")
def test_activations_stay_on_the_heap_between_batches():
    """The real thing, in child processes (malloc's thresholds are process-wide): tensors of 9 to 12 MB freed and
    allocated again, a little larger each time, as batches of varied length do. glibc's default maps each one
    afresh (above its threshold, which rises only to the largest chunk freed so far): ~2,500 page faults each.
    With the thresholds the CPU engine sets (`keep_activations_on_heap`), they come from the heap and, once it
    has settled, reuse it: only its growth faults (16 kB a step). `COULISSE_MALLOC_TUNING=0` leaves glibc's policy
    as it is."""
    import subprocess

    runs = {}
    for name, env in (("tuned", {}), ("off", {"COULISSE_MALLOC_TUNING": "0"})):
        out = subprocess.run([sys.executable, "-c", HEAP_SCRIPT], env={**os.environ, **env}, check=True,
                             capture_output=True, text=True).stdout.split()
        runs[name] = (out[0] == "True", int(out[1]))
    preset = "glibc.malloc" in os.environ.get("GLIBC_TUNABLES", "") or any(
        name in os.environ for name in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_"))
    if platform.libc_ver()[0] != "glibc" or preset:
        pytest.skip("not glibc, or malloc already tuned in this environment (GLIBC_TUNABLES, MALLOC_*_)")
    assert runs["tuned"][0] is True and runs["off"][0] is False
    assert runs["off"][1] > 20 * 2000, runs  # every tensor faulted in afresh: 9-12 MB is 2,300-3,100 pages
    assert runs["tuned"][1] < runs["off"][1] / 10, runs


def test_checking_the_values_leaves_one_tensor_resident_at_a_time(factory, monkeypatch):
    """The finite-values check reads every page of each mapped tensor; they are dropped right after, so the
    checkpoint is never resident as a whole while it loads (an int8 load whose weights come from the cache never
    reads the float ones again: camembert-base's peak RSS 861 -> 630 MB on an AMX Xeon). At each check, what is
    resident of the file is that tensor and at most the fault-around pages of its neighbours."""
    from coulisse.weights import assign

    directory = factory.checkpoint("camembert")
    weights = directory / "model.safetensors"
    seen = []
    check = assign.check_values

    def spy(tensor, key, source):
        check(tensor, key, source)
        seen.append((key, resident_kb(weights), tensor.numel() * tensor.element_size() // 1024))

    monkeypatch.setattr(assign, "check_values", spy)
    pipeline("sentiment-analysis", model=str(directory))
    assert len(seen) > 10 and max(size for _, _, size in seen) >= 1024  # the word vectors: 1 MB or more
    for key, resident, size in seen:
        assert resident <= size + 2 * 64 + 8, (key, resident, size)

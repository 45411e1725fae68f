"""fp32 GEMMs per machine (coulisse/engine/gemm_choice.py): the rule, the cached measurement, the pipeline."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from factory import TEXTS

from coulisse import pipeline
from coulisse.engine import gemm_choice
from coulisse.models.fastpath import Fp32Linear, MklLinear, PackedLinear, onednn_fp32_available


@pytest.fixture
def timings(monkeypatch, tmp_path):
    """`measure` replaced by a counter returning set times; the cache in a folder of this test."""
    calls = []
    result = {"times": (0.010, 0.008)}

    def measure(hidden, intermediate, rows=gemm_choice.ROWS, repeats=gemm_choice.REPEATS):
        calls.append((hidden, intermediate, torch.get_num_threads()))
        return result["times"]

    monkeypatch.setattr(gemm_choice, "measure", measure)
    monkeypatch.setenv("COULISSE_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("COULISSE_ONEDNN", raising=False)
    return calls, result, tmp_path / "cache" / "kernels"


@pytest.mark.parametrize("onednn, mkl, kernel", [
    (1.0, 0.5, "mkl"), (1.0, 0.9, "mkl"), (1.0, 0.91, "onednn"), (1.0, 1.0, "onednn"), (0.5, 1.0, "onednn"),
])
def test_mkl_only_when_clearly_faster(onednn, mkl, kernel):
    assert gemm_choice.decide(onednn, mkl) == kernel


def test_measured_once_per_machine_shape_and_threads(timings):
    calls, result, folder = timings
    first = gemm_choice.fp32_gemm(768, 3072, "avx2,fma")
    assert first.kernel == "mkl" and "measured now" in first.why and len(calls) == 1
    assert len(list(folder.glob("fp32-*.json"))) == 1
    result["times"] = (0.001, 0.009)  # would now choose oneDNN: the cache must answer instead
    again = gemm_choice.fp32_gemm(768, 3072, "avx2,fma")
    assert again.kernel == "mkl" and "cached in" in again.why and len(calls) == 1
    gemm_choice.fp32_gemm(384, 1536, "avx2,fma")  # another shape
    gemm_choice.fp32_gemm(768, 3072, "avx2,fma,avx512f")  # another CPU
    previous = torch.get_num_threads()
    torch.set_num_threads(previous + 1)
    try:
        gemm_choice.fp32_gemm(768, 3072, "avx2,fma")  # other threads
    finally:
        torch.set_num_threads(previous)
    assert len(calls) == 4 and len(list(folder.glob("fp32-*.json"))) == 4


def test_cached_choices_are_this_machines_only(timings, monkeypatch):
    """What `coulisse info` lists: the sizes measured for this CPU, torch, threads and coulisse version."""
    from click.testing import CliRunner

    from coulisse.engine import cache
    from coulisse.interfaces.cli import cli

    calls, result, folder = timings
    assert gemm_choice.cached_choices("avx2,fma") == []
    gemm_choice.fp32_gemm(768, 3072, "avx2,fma")
    result["times"] = (0.004, 0.005)
    gemm_choice.fp32_gemm(384, 1536, "avx2,fma")
    gemm_choice.fp32_gemm(768, 3072, "avx2,fma,avx512f")  # another CPU: not this one's
    result["times"] = (0.010, 0.008)
    found = gemm_choice.cached_choices("avx2,fma")
    assert {(c.hidden, c.intermediate, c.kernel, c.onednn_s, c.mkl_s) for c in found} == \
        {(768, 3072, "mkl", 0.010, 0.008), (384, 1536, "onednn", 0.004, 0.005)}
    assert len(found) == 2 and all(c.path.parent == folder for c in found)
    previous = torch.get_num_threads()
    torch.set_num_threads(previous + 1)
    try:
        assert gemm_choice.cached_choices("avx2,fma") == []  # measured at other thread counts
    finally:
        torch.set_num_threads(previous)
    with monkeypatch.context() as m:
        m.setattr(cache, "version", lambda: "0.0.0-another")
        assert gemm_choice.cached_choices("avx2,fma") == []  # another coulisse version wrote them

    monkeypatch.setenv("COULISSE_CACHE", str(folder.parent.parent / "fresh-cache"))
    from coulisse.engine.cpu import this_machine

    key = this_machine().features.key
    out = " ".join(CliRunner().invoke(cli, ["info"]).output.split())  # (lines wrapped for a terminal)
    if this_machine().fp32.kernel == "onednn":
        assert "fp32 in corpus jobs, measured here: no model size yet" in out
        gemm_choice.fp32_gemm(768, 3072, key)  # `measure` is the fixture's: (10 ms, 8 ms)
        out = " ".join(CliRunner().invoke(cli, ["info"]).output.split())
        assert ("fp32 in corpus jobs, measured here: 768->3072->768: MKL's sgemm (oneDNN 10.0 ms, MKL 8.0 ms "
                "at 1024 rows; MKL only where it takes ≤ 90% of oneDNN's time)") in out


@pytest.mark.parametrize("content", ["", "{not json", '{"fields": {}, "onednn_s": 1, "mkl_s": 1}', "[1, 2]",
                                     '{"onednn_s": -1}'])
def test_a_damaged_cache_file_is_measured_again(timings, content):
    calls, _, folder = timings
    gemm_choice.fp32_gemm(768, 3072, "avx2,fma")
    (path,) = folder.glob("fp32-*.json")
    path.write_text(content, encoding="utf-8")
    assert gemm_choice.fp32_gemm(768, 3072, "avx2,fma").kernel == "mkl" and len(calls) == 2
    assert "cached in" in gemm_choice.fp32_gemm(768, 3072, "avx2,fma").why and len(calls) == 2


def test_no_measurement_when_forced_small_or_cache_off(timings, monkeypatch):
    calls, _, folder = timings
    assert gemm_choice.fp32_gemm(128, 512, "avx2").kernel == "onednn"
    monkeypatch.setenv("COULISSE_ONEDNN", "1")
    assert gemm_choice.fp32_gemm(768, 3072, "avx2").why == "COULISSE_ONEDNN=1"
    assert calls == []
    monkeypatch.delenv("COULISSE_ONEDNN")
    monkeypatch.setenv("COULISSE_CACHE", "off")
    for _ in range(2):
        assert gemm_choice.fp32_gemm(768, 3072, "avx2").why.endswith("(measured now)")
    assert len(calls) == 2 and not folder.exists()


def test_measure_times_both_kernels():
    """The real measurement on a small shape: both torch entry points exist and run (times > 0)."""
    if not onednn_fp32_available():
        pytest.skip("no oneDNN fp32 matmul in this PyTorch")
    onednn, mkl = gemm_choice.measure(64, 256, rows=32, repeats=1)
    assert 0 < onednn < 1 and 0 < mkl < 1 and math.isfinite(onednn + mkl)


def test_only_throughput_pipelines_measure_and_mkl_equals_onednn(factory, monkeypatch):
    """`pipeline(throughput=True)` (corpus jobs) asks the measured choice; a default pipeline keeps oneDNN
    without measuring (short requests: oneDNN's prepacked weights are 2x MKL's speed at a few rows)."""
    if not onednn_fp32_available():
        pytest.skip("no oneDNN fp32 matmul in this PyTorch")
    asked = []

    def choose(hidden, intermediate, features_key):
        asked.append((hidden, intermediate))
        return gemm_choice.Fp32Gemm("mkl", "test")

    monkeypatch.setattr(gemm_choice, "fp32_gemm", choose)
    directory = factory.checkpoint("bert")
    packed = pipeline("text-classification", model=directory)
    assert asked == [] and any(isinstance(m, PackedLinear) for m in packed.model.modules())
    plain = pipeline("text-classification", model=directory, throughput=True)
    assert len(asked) == 1 and asked[0][0] == plain.config.hidden_size
    assert not any(isinstance(m, PackedLinear) for m in plain.model.modules())
    assert any(isinstance(m, MklLinear) for m in plain.model.modules()) and "MKL" in plain.preparation.fast_path
    # Its layers fuse their bias, GELU and LayerNorm in C passes that have no backward: gradients take a
    # plain copy.
    assert plain.gradient_model is not plain.model
    assert not any(isinstance(m, Fp32Linear) for m in plain.gradient_model.modules())
    a, b = (np.stack(p.forward(p.preprocess(TEXTS))) for p in (packed, plain))
    # Both fp32 with the same products, summed in other orders: a few float32 ulps of the logits.
    assert np.abs(a - b).max() <= 1e-5


def test_corpus_jobs_ask_for_throughput(monkeypatch, tmp_path):
    """`coulisse classify --input` and `embed --input` build their pipelines with throughput=True."""
    from click.testing import CliRunner

    from coulisse.interfaces.cli import cli
    from coulisse.interfaces.jobs import command

    seen = []

    def load_pipeline(task, model, threads=None, quantize="none", **kwargs):
        seen.append((task, kwargs))
        raise SystemExit(3)  # stop before any model is read

    monkeypatch.setattr(command, "load_pipeline", load_pipeline)
    (tmp_path / "in.txt").write_text("Un film magnifique.\n", encoding="utf-8")
    for verb in ("classify", "embed"):
        CliRunner().invoke(cli, [verb, "--model", str(tmp_path), "--input", str(tmp_path / "in.txt"),
                                 "--output", str(tmp_path / f"{verb}.jsonl")])
    # and no --revision given: none asked (the jobs pass the one their record holds, here none)
    assert seen == [("text-classification", {"throughput": True, "revision": None}),
                    ("feature-extraction", {"throughput": True, "revision": None})]


def test_a_measurement_that_cannot_be_cached_says_how_to_give_it_a_place(tmp_path, caplog):
    """The timing is measured again by every job where it cannot be written (a read-only cache, a container's
    read-only home): the warning says so and names the variable, as the int8 cache's does (audit 48)."""
    import logging

    blocked = tmp_path / "a-file"
    blocked.write_text("")  # a file where the folder would go: no write, root or not
    with caplog.at_level(logging.WARNING, logger="coulisse.engine.gemm_choice"):
        assert gemm_choice._write(blocked / "kernels" / "x.json", {"k": 1}, (1.0, 2.0)) is False
    assert "every job measures again; set COULISSE_CACHE to a writable folder" in caplog.text

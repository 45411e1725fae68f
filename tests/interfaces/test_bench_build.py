"""The bench's model folder (bench/bench_model.py): built whole or not at all, quietly, on a tiny config."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

TINY = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64}


@pytest.fixture
def bench_model(monkeypatch):
    from coulisse.interfaces.bench_command import load_harness

    module = load_harness().bench_model
    monkeypatch.setattr(module, "CONFIG", {**module.CONFIG, **TINY})
    return module


def test_a_build_that_fails_leaves_no_folder(monkeypatch, tmp_path, bench_model):
    """A first run that failed midway left the cache folder half-built; the next run took it as built."""
    def no_spm():
        raise SystemExit("the benchmark needs CamemBERT's tokenizer from subtitle-splitter-fr")

    monkeypatch.setattr(bench_model, "camembert_spm", no_spm)
    with pytest.raises(SystemExit):
        bench_model.build_model(tmp_path / "cache")
    assert list(tmp_path.iterdir()) == []  # neither the folder nor a temporary one


def test_an_export_that_fails_leaves_no_onnx_file(monkeypatch, tmp_path, bench_model):
    """The audit's first run without onnx left onnx/ with a tokenizer only; an export cut short must not leave a
    model.onnx that a later run would take as done."""
    folder = tmp_path / "cache"
    bench_model.ensure(folder, onnx=False)

    def export(directory, onnx_dir):
        (onnx_dir / "model.onnx").write_bytes(b"half")
        raise ModuleNotFoundError("No module named 'onnx'", name="onnx")

    monkeypatch.setattr(bench_model, "export_onnx", export)
    with pytest.raises(ModuleNotFoundError):
        bench_model.ensure(folder, onnx=True)
    assert sorted(p.name for p in (folder / "onnx").iterdir()) == ["tokenizer.json"]
    assert not [p for p in folder.iterdir() if "partial" in p.name]
    assert not bench_model.exports_ready(folder)


@pytest.mark.slow
def test_the_build_and_export_print_nothing_but_errors(tmp_path):
    """A first run printed ~20 lines of progress bars, torchvision notes, [torch.onnx] steps, FutureWarnings and
    onnxruntime's quantization advice; stdout carries only what the caller prints (the table)."""
    for module in ("onnx", "onnxscript", "onnxruntime"):  # the [bench] extra, which CI does not install
        pytest.importorskip(module)
    from coulisse.interfaces.bench_command import bench_dir

    script = (f"import json, sys; sys.path.insert(0, {str(bench_dir())!r}); import bench_model; "
              f"bench_model.CONFIG.update({TINY!r}); "
              f"print(json.dumps(bench_model.ensure({str(tmp_path / 'cache')!r}, onnx=True)))")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    paths = json.loads(proc.stdout)
    assert sorted(paths) == ["model_dir", "onnx_fp32", "onnx_int8", "onnx_tokenizer"]
    noise = ["it/s", "torchvision", "[torch.onnx]", "Warning", "pre-processing before quantization"]
    assert [word for word in noise if word in proc.stderr] == [], proc.stderr
    assert proc.stderr.strip() == "", proc.stderr

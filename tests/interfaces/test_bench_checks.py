"""`coulisse bench` checks what it can before any work: the packages each selected system needs, the output
paths, the model folder, the systems and threads named. A mistake is one line, not a traceback an hour in."""

from __future__ import annotations

import hashlib
import shutil
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from coulisse.interfaces.cli import cli

INSTALL = "pip install -e '.[bench]'"


@pytest.fixture
def harness():
    from coulisse.interfaces.bench_command import load_harness

    return load_harness()


@pytest.fixture
def runs(monkeypatch, harness):
    """The options each `coulisse bench` hands the harness; nothing is measured."""
    given = []
    monkeypatch.setattr(harness, "run", lambda opts: given.append(opts) or {})
    monkeypatch.setattr(harness, "report", lambda results, opts: None)
    return given


def not_installed(monkeypatch, *modules):
    """`import module` fails as it does where the package is not installed (None in sys.modules), and only for
    `modules`: every other package the bench checks counts as installed, whatever this environment holds (CI
    installs the [test] extra, without onnx, onnxscript and onnxruntime)."""
    from coulisse.interfaces.bench_command import load_harness

    load_harness()  # puts bench/ on sys.path
    import bench_requirements

    for module in modules:
        monkeypatch.setitem(sys.modules, module, None)
    monkeypatch.setattr(bench_requirements, "importable", lambda module: module not in modules)


def one_line(output: str) -> str:
    lines = output.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in output, output
    return lines[0]


def test_named_ort_systems_without_onnx_are_refused_in_one_line_before_any_work(monkeypatch, tmp_path, runs):
    """A first run with an ONNX Runtime system exports ONNX: without onnx and onnxscript it crashed in
    torch.onnx with a 40-line traceback, after building the model, leaving a half-built folder."""
    not_installed(monkeypatch, "onnx", "onnxscript")
    folder = tmp_path / "cache"
    result = CliRunner().invoke(cli, ["bench", "-s", "ort-int8,coulisse-int8", "-d", str(folder)])
    assert result.exit_code == 1, result.output
    line = one_line(result.output)
    assert "not installed: onnx, onnxscript (for the ONNX exports)." in line and INSTALL in line, line
    assert runs == [] and not folder.exists()


def test_coulisse_systems_need_no_onnx(monkeypatch, tmp_path, runs):
    """Only ONNX Runtime's systems read the exports: coulisse's run without onnx, onnxscript, onnxruntime."""
    not_installed(monkeypatch, "onnx", "onnxscript", "onnxruntime")
    result = CliRunner().invoke(cli, ["bench", "-s", "coulisse-int8", "-d", str(tmp_path / "cache")])
    assert result.exit_code == 0, result.output
    assert [opts.systems for opts in runs] == [("coulisse-int8",)] and not result.stderr


def test_a_coulisse_only_bench_builds_the_model_but_exports_nothing(monkeypatch, tmp_path, harness):
    bench_model = harness.bench_model
    built = []

    def build(directory):
        for name in ("config.json", "model.safetensors", "onnx/tokenizer.json"):
            (directory / name).parent.mkdir(parents=True, exist_ok=True)
            (directory / name).write_text("{}")
        built.append(directory)

    def export(*args):
        raise AssertionError("exported ONNX for a run without an ONNX Runtime system")

    monkeypatch.setattr(bench_model, "build_model", build)
    monkeypatch.setattr(bench_model, "export_all", export)
    paths = bench_model.ensure(tmp_path / "cache", onnx=False)
    assert built == [tmp_path / "cache"] and "onnx_fp32" not in paths and "onnx_int8" not in paths
    assert paths["onnx_tokenizer"] == str(tmp_path / "cache" / "onnx" / "tokenizer.json")


def test_default_ort_systems_are_left_out_without_onnxruntime_named_ones_refused(monkeypatch, tmp_path, runs):
    """Without onnxruntime, the defaults ran everything, then printed four FAILED rows and exited 0 (1 with
    -s ort-int8 alone). Now the choice is made up front: left out with a note when not named, refused when
    named."""
    from coulisse.engine import cpu

    monkeypatch.setattr(cpu, "this_machine", lambda: cpu.plan(cpu.Features(frozenset({"avx2", "fma"}), "AVX2")))
    not_installed(monkeypatch, "onnxruntime")
    folder = str(tmp_path / "cache")
    result = CliRunner().invoke(cli, ["bench", "-d", folder])
    assert result.exit_code == 0, result.output
    assert runs[-1].systems == ("transformers", "coulisse-exact", "coulisse-int8", "coulisse-fast")
    note = [line for line in result.stderr.splitlines() if "ort-" in line]
    assert note == [f"ort-fp32, ort-int8 left out: onnxruntime not installed ({INSTALL} to run them)."], note
    result = CliRunner().invoke(cli, ["bench", "-s", "ort-int8", "-d", folder])
    assert result.exit_code == 1 and len(runs) == 1, result.output
    line = one_line(result.output)
    assert "not installed: onnxruntime (for ort-int8 and the ONNX exports)." in line and INSTALL in line, line


def test_transformers_missing_refuses_the_first_build(monkeypatch, tmp_path, runs):
    """The model is built with transformers: a first run without it says so, whatever the systems."""
    not_installed(monkeypatch, "transformers")
    result = CliRunner().invoke(cli, ["bench", "-s", "coulisse-exact", "-d", str(tmp_path / "cache")])
    assert result.exit_code == 1 and runs == [], result.output
    line = one_line(result.output)
    assert "not installed: transformers (for the model's first build)." in line and INSTALL in line, line


@pytest.mark.parametrize("flag", ["--json", "--markdown"])
def test_an_unwritable_output_is_refused_before_the_run(tmp_path, runs, flag):
    """`bench --json /proc/x` ran the whole benchmark, printed the table, then lost the results to a raw
    FileNotFoundError. Now it is checked first, worded as `coulisse classify -o` words it."""
    if not Path("/proc").is_dir():
        pytest.skip("needs /proc, a folder where no file can be created")
    result = CliRunner().invoke(cli, ["bench", "-s", "coulisse-exact", "-d", str(tmp_path / "m"), flag, "/proc/x"])
    assert result.exit_code == 1 and runs == [], result.output
    line = one_line(result.output)
    assert line.startswith(f"Error: OutputError: cannot write in /proc (for {flag} /proc/x): "), line
    assert line.endswith("; write somewhere else."), line  # /proc: no permission to change
    missing = tmp_path / "nowhere" / "bench.json"
    result = CliRunner().invoke(cli, ["bench", "-s", "coulisse-exact", "-d", str(tmp_path / "m"), flag, str(missing)])
    assert result.exit_code == 1 and runs == [], result.output
    assert f"the folder {missing.parent} does not exist; create it first" in one_line(result.output)


def _tree_digest(folder: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        digest.update(str(path.relative_to(folder)).encode())
        if path.is_file():
            digest.update(path.read_bytes())
    return digest.hexdigest()


def test_a_users_model_folder_is_refused_and_left_untouched(tmp_path, runs):
    """-d is the bench's cache of its own model: a user's model given there was benchmarked with camembert-base's
    FLOPs and peaks (nonsense shares) and had ~550 MB of ONNX written into it."""
    import coulisse.bundled

    user = tmp_path / "mymodel"
    shutil.copytree(Path(coulisse.bundled.__file__).parent / "mini-allocine", user)
    before = _tree_digest(user)
    result = CliRunner().invoke(cli, ["bench", "-s", "coulisse-int8", "-d", str(user)])
    assert result.exit_code == 1 and runs == [], result.output
    line = one_line(result.output)
    assert f"--model-dir {user} is not a folder of the bench's own model" in line, line
    assert "not a model to benchmark" in line and _tree_digest(user) == before


def test_the_bench_s_own_folders_are_accepted(tmp_path, runs, harness):
    """Missing, empty, marked by the bench, or built before the mark existed (camembert-base's shape, the
    bench's labels and its `{}` tokenizer_config.json)."""
    import json

    empty, marked, older = tmp_path / "empty", tmp_path / "marked", tmp_path / "older"
    empty.mkdir()
    marked.mkdir()
    (marked / "coulisse-bench.json").write_text("{}")
    older.mkdir()
    config = {**harness.bench_model.CONFIG, "id2label": {"0": "NEGATIVE", "1": "POSITIVE"}}
    (older / "config.json").write_text(json.dumps(config))
    (older / "tokenizer_config.json").write_text("{}")
    for folder in (tmp_path / "missing", empty, marked, older):
        result = CliRunner().invoke(cli, ["bench", "-s", "coulisse-int8", "-d", str(folder)])
        assert result.exit_code == 0, (folder, result.output)
    assert [opts.model_dir for opts in runs] == [tmp_path / "missing", empty, marked, older]


def test_an_unknown_system_names_the_option_and_the_valid_ones(runs):
    from coulisse.interfaces.bench_command import SYSTEMS

    result = CliRunner().invoke(cli, ["bench", "-s", "foo"])
    assert result.exit_code == 2 and runs == [], result.output
    assert "'-s' / '--systems'" in result.output and "unknown system 'foo'" in result.output, result.output
    assert ", ".join(SYSTEMS) in result.output


def test_more_threads_than_cores_is_warned(tmp_path, runs, harness):
    threads = harness.physical_cores() + 1
    result = CliRunner().invoke(cli, ["bench", "-s", "coulisse-int8", "-d", str(tmp_path / "m"), "-t", str(threads)])
    assert result.exit_code == 0 and runs[-1].threads == threads, result.output
    assert f"--threads {threads} is more than this machine's {harness.physical_cores()} physical cores" in result.stderr
    result = CliRunner().invoke(cli, ["bench", "-s", "coulisse-int8", "-d", str(tmp_path / "m"), "-t", "1"])
    assert result.exit_code == 0 and "physical cores" not in result.stderr, result.output


def test_the_help_says_how_long_the_defaults_take_and_how_to_look_quickly():
    result = CliRunner().invoke(cli, ["bench", "--help"])
    assert result.exit_code == 0, result.output
    assert "tens of minutes on 2 cores" in result.stdout
    assert "coulisse bench -n 20 -l 5 -c 0 --no-kernels -s coulisse-exact,coulisse-int8" in result.stdout

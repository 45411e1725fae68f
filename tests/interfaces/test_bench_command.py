"""`coulisse bench --help` speaks to a user: what is measured and how, with examples."""

from __future__ import annotations

import re

from click.testing import CliRunner

from coulisse.interfaces.cli import cli


def test_bench_help_describes_the_command():
    result = CliRunner().invoke(cli, ["bench", "--help"])
    assert result.exit_code == 0, result.output
    assert not re.search(r"issue|#\d", result.stdout, re.I), result.stdout  # project history, not help
    for words in ("transformers", "ONNX Runtime", "peak RSS", "targets", "Examples:"):
        assert words in result.stdout, words


def test_bench_without_the_harness_says_where_to_get_it(monkeypatch, tmp_path):
    """What an installed wheel (no bench/ folder) answers: one line, no traceback (tests/test_packaging.py
    runs it from a real wheel)."""
    from coulisse.interfaces import bench_command

    monkeypatch.setattr(bench_command, "bench_dir", lambda: tmp_path / "bench")
    result = CliRunner().invoke(cli, ["bench", "--n", "1"])
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    assert "source checkout" in lines[0] and "pip install -e '.[bench]'" in lines[0], lines[0]


def test_interleaved_passes_take_turns_and_a_broken_system_is_reported(factory, tmp_path):
    """`coulisse bench` holds the systems loaded and runs their passes in turn: each worker gets one pass
    per round and writes its own result; one that cannot load becomes an error row, not a hang."""
    import json

    from coulisse.interfaces.bench_command import load_harness

    harness = load_harness()
    texts = ["Un film superbe.", "Quel ennui, vraiment.", "Pas mal du tout."]
    model = factory.checkpoint("bert")
    id2label = json.loads((model / "config.json").read_text(encoding="utf-8"))["id2label"]
    spec = {"texts": texts, "warmup_texts": 1, "short_sentence": "Bof.", "latency_repeats": 2,
            "verify_texts": texts[:2], "total_tokens": 30, "model_dir": str(model), "id2label": id2label,
            "threads": 1, "max_batch_tokens": 64}
    spec_path = tmp_path / "spec.json"
    spec_path.write_text(json.dumps(spec), encoding="utf-8")
    good, broken = harness.run_interleaved(spec_path, [("coulisse-exact", 0), ("nope", 0)], 3, 120.0, tmp_path)
    assert "error" not in good, good
    assert good["system"] == "coulisse-exact" and len(good["pass_s"]) == 3 and good["best_pass_s"] > 0
    assert good["reviews_per_s"] == len(texts) / good["best_pass_s"] and len(good["verify_logits"]) == 2
    assert broken["system"] == "nope" and "unknown system 'nope'" in broken["error"]


def test_interleaved_targets_show_the_ratio_of_each_round():
    """With passes in turn, a speed target also gives each round's ratio (the other system's pass time over
    this one's, same round) and their median; a run of systems one after another has no rounds."""
    from coulisse.interfaces.bench_command import load_harness

    bench_report = load_harness().bench_report

    def run(system, passes):
        return {"system": system, "batch": 1, "pass_s": passes, "reviews_per_s": 8 / min(passes),
                "tokens_per_s": 80 / min(passes), "latency_p50_ms": 10.0, "peak_rss_mb": 100.0,
                "labels": ["a"] * 8, "verify_logits": [[0.0, 1.0]]}

    results = {"runs": [run("transformers", [4.0, 2.0, 3.0]), run("coulisse-exact", [2.0, 2.0, 1.0])],
               "settings": {"interleaved": True}, "cpu": {}}
    target = next(t for t in bench_report.summarize(results)["targets"]
                  if t["target"] == "coulisse exact speed / transformers best")
    assert target["value"] == 2.0 and target["rounds"] == [2.0, 1.0, 3.0]  # 4/2, 2/2, 3/1
    assert bench_report.fmt_rounds(target) == "; per round 2.00 / 1.00 / 3.00× (median 2.00×)"
    results["settings"]["interleaved"] = False
    target = next(t for t in bench_report.summarize(results)["targets"] if t["target"] == target["target"])
    assert target["rounds"] is None and bench_report.fmt_rounds(target) == ""


def test_the_default_systems_leave_bf16_out_where_it_runs_the_reference_gemm():
    """Without --systems, every system runs, except coulisse-bf16 on a CPU that does not multiply bf16 (its
    slow path would take most of the run): said in one line, and named systems are run as given."""
    from coulisse.engine.cpu import Features, plan
    from coulisse.interfaces.bench_command import SYSTEMS, default_systems

    avx2 = Features(frozenset({"avx2", "fma"}), "AVX2")
    systems, why = default_systems(plan(avx2))
    assert systems == tuple(s for s in SYSTEMS if s != "coulisse-bf16") and "coulisse-bf16 left out" in why
    assert "reference" in why and "--systems" in why
    for flags in ({"avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512_vnni", "avx512_bf16"},
                  {"avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8"}):
        assert default_systems(plan(Features(frozenset({"avx2", "fma", *flags}), "AVX512"))) == (SYSTEMS, None)


def test_the_command_runs_the_default_systems_or_the_named_ones(monkeypatch, tmp_path):
    """The command hands the harness the default systems of this CPU's plan (here an AVX2 one), saying on
    stderr what it left out; --systems is taken as given, coulisse-bf16 included."""
    from coulisse.engine import cpu
    from coulisse.interfaces import bench_command

    given = []
    harness = bench_command.load_harness()
    import bench_requirements  # on sys.path once the harness is loaded

    # every package the systems need counts as installed (CI has no [bench] extra): this test is about the CPU
    monkeypatch.setattr(bench_requirements, "importable", lambda module: True)
    monkeypatch.setattr(harness, "run", lambda opts: given.append(opts.systems))
    monkeypatch.setattr(harness, "report", lambda results, opts: None)
    monkeypatch.setattr(cpu, "this_machine", lambda: cpu.plan(cpu.Features(frozenset({"avx2", "fma"}), "AVX2")))
    result = CliRunner().invoke(cli, ["bench", "--n", "1", "-d", str(tmp_path / "m")])
    assert result.exit_code == 0, result.output
    assert given == [tuple(s for s in bench_command.SYSTEMS if s != "coulisse-bf16")]
    assert result.stderr.count("coulisse-bf16 left out") == 1
    result = CliRunner().invoke(cli, ["bench", "-s", "coulisse-exact,coulisse-bf16", "-d", str(tmp_path / "m")])
    assert result.exit_code == 0 and given[-1] == ("coulisse-exact", "coulisse-bf16") and not result.stderr


def test_speed_targets_say_how_far_this_machines_gemm_peak_lets_them_go():
    """A speed target's ceiling is the ratio the numerator would reach with its linear layers at its
    precision's GEMM peak and nothing else costing time, against the denominator's measured tokens/s; a goal
    above it is called out of reach. Shares of a peak and latency targets have none."""
    from coulisse.interfaces.bench_command import load_harness

    bench_report = load_harness().bench_report

    def run(system, tokens_per_s):
        return {"system": system, "batch": 1, "pass_s": [1.0], "reviews_per_s": tokens_per_s / 100,
                "tokens_per_s": tokens_per_s, "latency_p50_ms": 10.0, "peak_rss_mb": 100.0,
                "labels": ["a"] * 8, "verify_logits": [[0.0, 1.0]]}

    # 1e8 FLOP per token: fp32 at its 100 GFLOP/s peak would run 1,000 tokens/s, int8 at 150 GOP/s 1,500.
    results = {"runs": [run("transformers", 500.0), run("coulisse-exact", 800.0), run("coulisse-int8", 1200.0),
                        run("ort-int8", 1000.0), run("coulisse-fast", 1200.0)],
               "settings": {}, "cpu": {"kind": "avx2", "fast": "int8"}, "flops_per_token": 1e8,
               "kernels": {"peaks": {"fp32": 100.0, "fp32_mkl": 90.0, "int8": 150.0, "int8_fbgemm": 120.0}}}
    targets = {t["target"]: t for t in bench_report.summarize(results)["targets"]}
    exact = targets["coulisse exact speed / transformers best"]
    assert exact["value"] == 1.6 and exact["ceiling"] == 2.0  # 1,000 / 500
    assert bench_report.fmt_ceiling(exact) == ("; at most 2.00× on this machine (its GEMMs at their peak, nothing "
                                               "else taking time)")
    avx2 = targets["coulisse int8 speed / transformers best (avx2)"]  # 1,500 / 500 = 3.0 ≥ its goal, 2.5
    assert avx2["ceiling"] == 3.0 and bench_report.fmt_ceiling(avx2).startswith("; at most 3.00× on this machine (")
    int8 = targets["coulisse int8 speed / transformers best"]  # the same 3.0 < issue 3's goal, 4.0
    assert int8["ceiling"] == 3.0 and bench_report.fmt_ceiling(int8).startswith("; at most 3.00× on this machine, "
                                                                                 "out of reach (")
    fast = targets["coulisse --fast speed / ONNX Runtime int8"]
    assert fast["ceiling"] == 1.5 and "out of reach" in bench_report.fmt_ceiling(fast)  # 1,500 / 1,000 < 1.6
    for name in ("coulisse exact short-sentence p50 / transformers", "coulisse exact share of the fp32 GEMM peak"):
        assert targets[name].get("ceiling") is None and bench_report.fmt_ceiling(targets[name]) == ""
    del results["kernels"]  # no peaks measured (--no-kernels): no ceilings
    assert all(t.get("ceiling") is None for t in bench_report.summarize(results)["targets"])


def test_a_worker_reports_its_own_peak_rss_not_its_parents():
    """Linux carries ru_maxrss across fork and exec: workers started by a bench that grew (it exports the
    ONNX models itself) all reported the parent's peak. A worker started from a process holding 600 MB
    must report its own, far smaller, peak."""
    import subprocess
    import sys

    import pytest

    from coulisse.interfaces.bench_command import bench_dir

    if not sys.platform.startswith("linux"):
        pytest.skip("the carried-over peak is Linux's behaviour")
    ballast = bytearray(600 * 2**20)
    ballast[::4096] = b"x" * len(ballast[::4096])  # touch every page: resident, not just reserved
    script = (f"import sys; sys.path.insert(0, {str(bench_dir())!r}); import bench_worker; "
              "print(bench_worker.peak_rss_mb())")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    assert 5 < float(out) < 400, out  # the worker module imports numpy and torch: ~100-300 MB, never 600+
    del ballast


def test_the_busy_warning_discounts_the_bench_s_own_threads():
    """The load average after a run counts the bench's own threads; only load beyond them, or load already
    there before the run, makes the report call the machine busy."""
    from coulisse.interfaces.bench_command import load_harness

    bench_report = load_harness().bench_report

    def warned(before, after):
        results = {"machine": {"cpu": "x", "physical_cores": 2, "logical_cpus": 2},
                   "texts": {"n": 1, "source": "s", "total_tokens": 1, "max_tokens": 1, "seed": 0},
                   "settings": {"threads": 2, "short_sentence": "s", "latency_repeats": 1, "repeats": 1,
                                "max_batch_tokens": 1, "cold_repeats": 0},
                   "versions": {}, "load_average_before": [before], "load_average_after": [after]}
        return any(line.startswith("WARNING") for line in bench_report.context_lines(results))

    assert not warned(0.2, 1.9)  # the bench's own two threads
    assert warned(0.2, 3.5)  # someone else's work during the run
    assert warned(1.5, 1.9)  # already busy before


def test_no_bench_script_shadows_an_installed_package():
    """bench/ runs its scripts with bench/ first on sys.path, so a script named like a package that a library
    imports replaces that package in the benchmark's processes. transformers 5.25 imports the `kernels`
    package (Hugging Face's hub kernels), and `bench/kernels.py` broke the transformers rows of `coulisse
    bench` ("cannot import name 'CUDAProperties' from 'kernels'"); it is now `bench/gemm_peaks.py`."""
    import importlib.machinery
    import sys
    from pathlib import Path

    bench = Path(__file__).resolve().parents[2] / "bench"
    elsewhere = [p for p in sys.path if Path(p or ".").resolve() != bench]
    # PathFinder searches the folders themselves, not sys.modules (where a test may have put bench's scripts)
    clashes = [f.stem for f in bench.glob("*.py")
               if importlib.machinery.PathFinder.find_spec(f.stem, elsewhere) is not None]
    assert clashes == [], f"bench scripts named like installed packages: {clashes}"

"""Corpus jobs with --fast: the resume record holds --fast and the precision it resolved to on this CPU. Resumed
on the same machine, with or without --fast (read back from the record), the job goes on to the bytes an
uninterrupted run writes; where --fast resolves to another mode (another CPU), or a --quantize or --fast given
differs from the record, the resume is refused in one line naming it. Jobs
also start torch with the OpenMP wait policy (libgomp's own report is the oracle), the user's winning."""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import re
import subprocess
import sys

import pytest
import torch
from click.testing import CliRunner

import coulisse
from coulisse.engine import cpu
from coulisse.interfaces.cli import cli
from coulisse.interfaces.jobs.runner import JobInterrupted, JobOptions, classify_file
from coulisse.interfaces.jobs.state import state_path

MAIN = "from coulisse.interfaces.cli import main; main()"


def make_csv(path, n: int) -> None:
    words = ["film", "acteur", "génial", "nul", "ennuyeux", "magnifique", "histoire", "fin"]
    with open(path, "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "text"])
        for i in range(n):
            w.writerow([i, " ".join(words[(i + k) % len(words)] for k in range(2 + i % 9))])


@pytest.fixture(scope="module")
def fast_pipe(tf_camembert_dir):
    return coulisse.pipeline("sentiment-analysis", model=str(tf_camembert_dir), fast=True)


def run(pipe, source, output, model, stop_after=None, **options):
    chunks = []

    def on_chunk(rows, preds):
        chunks.append(len(rows))
        if stop_after is not None and len(chunks) == stop_after:
            raise KeyboardInterrupt

    job = JobOptions(input=str(source), output=str(output), batch_rows=8, model=model, **options)
    return classify_file(job, lambda: pipe, on_chunk=on_chunk)


def test_resume_with_fast_goes_on_and_a_different_mode_is_refused(fast_pipe, tf_camembert_dir, tmp_path,
                                                                  monkeypatch):
    source, reference, output = tmp_path / "in.csv", tmp_path / "ref.csv", tmp_path / "out.csv"
    make_csv(source, 40)
    model = str(tf_camembert_dir)
    run(fast_pipe, source, reference, model, fast=True)
    with pytest.raises(JobInterrupted):
        run(fast_pipe, source, output, model, stop_after=2, fast=True)
    record = json.loads(state_path(output).read_text())
    mode = cpu.this_machine().fast
    assert record["key"]["fast"] is True
    expected = ("int8" if fast_pipe.preparation.quantize else str(fast_pipe.dtype).removeprefix("torch."))
    assert (record["engine"]["quantization"] or record["engine"]["dtype"]) == expected
    env = {k: None for k in os.environ if k.startswith("COULISSE_")}
    resume = ["classify", "-o", str(output), "--resume", "--quiet"]

    # Another CPU, whose plan's fast mode differs: the same command resolves to another precision. --fast is
    # read back from the record, so the command without it resolves it too.
    other = "float32" if mode != "float32" else "int8"
    real = cpu.this_machine
    monkeypatch.setattr(cpu, "this_machine", lambda: dataclasses.replace(real(), fast=other))
    for given in ([], ["--fast"]):
        result = CliRunner(env=env).invoke(cli, [*resume, *given])
        assert result.exit_code == 1, result.output
        assert len(result.output.strip().splitlines()) == 1, result.output
        assert f"--fast resolves to {other} on this CPU" in result.output and f"the first run's to {expected}" \
            in result.output
    assert json.loads(state_path(output).read_text())["rows"] == 16  # nothing ran
    monkeypatch.undo()

    # --quantize against a record of --fast: said as what the first run had (--fast, and what it ran)
    for given in (["--quantize", "int8"], ["--fast", "--quantize", "int8"]):
        result = CliRunner(env=env).invoke(cli, [*resume, *given])
        assert result.exit_code == 1 and len(result.output.strip().splitlines()) == 1, result.output
        assert (f"cannot resume {output} with --quantize int8: the first run had --fast, which picks the precision "
                f"itself (it ran {expected}; recorded in {state_path(output).name}). Leave --quantize out") \
            in result.output

    result = CliRunner(env=env).invoke(cli, resume)  # --fast left out: read back from the record, as README has it
    assert result.exit_code == 0, result.output
    assert output.read_bytes() == reference.read_bytes()
    assert not state_path(output).exists()


def test_fast_on_a_record_without_it_is_refused_as_typed(tf_camembert_dir, tmp_path):
    source, output = tmp_path / "in.csv", tmp_path / "out.csv"
    make_csv(source, 40)
    exact = coulisse.pipeline("sentiment-analysis", model=str(tf_camembert_dir))
    with pytest.raises(JobInterrupted):
        run(exact, source, output, str(tf_camembert_dir), stop_after=2)
    env = {k: None for k in os.environ if k.startswith("COULISSE_")}
    result = CliRunner(env=env).invoke(cli, ["classify", "-o", str(output), "--resume", "--quiet", "--fast"])
    assert result.exit_code == 1 and len(result.output.strip().splitlines()) == 1, result.output
    assert (f"cannot resume {output} with --fast: the first run had no --fast (it ran float32; recorded in "
            f"{state_path(output).name}). Leave --fast out") in result.output


@pytest.mark.slow
@pytest.mark.skipif("OpenMP" not in torch.__config__.parallel_info(), reason="torch is not built with OpenMP")
@pytest.mark.parametrize("command", ["classify", "evaluate"])
@pytest.mark.parametrize(("given", "spin"), [({}, "0"), ({"GOMP_SPINCOUNT": "4321"}, "4321")])
def test_a_job_starts_torch_with_the_wait_policy(tf_camembert_dir, tmp_path, command, given, spin):
    source = tmp_path / "in.csv"
    labels = list(json.loads((tf_camembert_dir / "config.json").read_text())["id2label"].values())
    with open(source, "w", encoding="utf-8", newline="") as f:
        csv.writer(f).writerows([["text", "label"]] + [[f"un film {i}", labels[i % 2]] for i in range(4)])
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("COULISSE_") and k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME")}
    env.update(OMP_DISPLAY_ENV="VERBOSE", **given)
    output = ["-o", str(tmp_path / "out.csv")] if command == "classify" else ["-o", str(tmp_path / "report"),
                                                                              "--no-plots"]
    done = subprocess.run([sys.executable, "-c", MAIN, command, "-m", str(tf_camembert_dir), "-i", str(source),
                           *output, "--quiet"], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    read = re.findall(r"^\s*GOMP_SPINCOUNT = '([^']*)'", done.stderr, re.M)
    assert read == [spin], done.stderr[-2000:]

"""Nothing lost, nothing twice: an interrupted job resumed with --resume equals an uninterrupted run."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys

import pytest
from click.testing import CliRunner
from job_process import start_job, wait_rows

from coulisse.errors import InputError
from coulisse.interfaces.cli import cli
from coulisse.interfaces.jobs import state as job_state
from coulisse.interfaces.jobs.runner import JobInterrupted, JobOptions, classify_file
from coulisse.interfaces.jobs.state import state_path

# The console script's entry point (`python -m coulisse.interfaces.cli` would import the CLI module twice).
MAIN = "from coulisse.interfaces.cli import main; main()"
WORDS = ["film", "acteur", "scénario", "génial", "nul", "ennuyeux", "magnifique", "histoire", "musique",
         "fin", "début", "drôle", "triste", "long", "court", "lent", "émouvant", "raté"]


def make_csv(path, n: int, seed: int = 0) -> None:
    import random

    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "text"])
        for i in range(n):
            text = " ".join(rng.choices(WORDS, k=rng.randint(2, 14))) if i % 97 else ""  # some error rows
            w.writerow([i, text])


@pytest.fixture(scope="module")
def pipe(tf_camembert_dir):
    import coulisse

    return coulisse.pipeline("sentiment-analysis", model=str(tf_camembert_dir))


def run(pipe, source, output, stop_after: int | None = None, **options):
    chunks = []

    def on_chunk(rows, preds):
        chunks.append(len(rows))
        if stop_after is not None and len(chunks) == stop_after:
            raise KeyboardInterrupt  # what Ctrl-C (or SIGTERM, in the CLI) does mid-job

    job = JobOptions(input=str(source), output=str(output), batch_rows=8, **options)
    return classify_file(job, lambda: pipe, on_chunk=on_chunk)


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "tsv", "parquet"])
def test_interrupted_resume_equals_uninterrupted(pipe, tmp_path, fmt):
    source = tmp_path / "in.csv"
    make_csv(source, 100)
    reference, output = tmp_path / f"ref.{fmt}", tmp_path / f"out.{fmt}"
    run(pipe, source, reference)
    with pytest.raises(JobInterrupted, match="40 rows are safely in"):
        run(pipe, source, output, stop_after=5)
    assert json.loads(state_path(output).read_text())["rows"] == 40
    if fmt == "parquet":  # an uncommitted part, as a kill during its write would leave
        (output.with_name(output.name + ".parts") / "tmp-000005.parquet").write_bytes(b"PAR1 torn")
    else:  # a torn last line, as power loss during a write would leave
        with open(output, "ab") as f:
            f.write(b'41,"half a li')
    summary = run(pipe, source, output, resume=True)
    assert summary.resumed_from == 40 and summary.rows == 100
    assert (summary.classified, summary.errored) == (98, 2)
    assert output.read_bytes() == reference.read_bytes()
    assert not state_path(output).exists()


def test_refuses_to_overwrite_and_checks_resume(pipe, tmp_path):
    source = tmp_path / "in.csv"
    make_csv(source, 30)
    output = tmp_path / "out.csv"
    output.write_text("precious\n")
    with pytest.raises(InputError, match="exists and is not empty, with no interrupted job to resume .*; pass "
                                         "--overwrite to replace it"):
        run(pipe, source, output)
    assert output.read_text() == "precious\n"
    with pytest.raises(InputError, match="has no resume state"):
        run(pipe, source, output, resume=True)
    run(pipe, source, output, overwrite=True)
    assert output.read_text().startswith("id,text,label,score,error\n")
    with pytest.raises(JobInterrupted):
        run(pipe, source, output, stop_after=1, overwrite=True)
    with pytest.raises(InputError, match="holds an interrupted job"):
        run(pipe, source, output)
    with pytest.raises(InputError, match=r"--all-scores changed \(was not given, now given\)"):
        run(pipe, source, output, resume=True, all_scores=True)
    os.utime(source, ns=(1, 1))  # the same bytes: the input is compared by content (tests/hostile)
    run(pipe, source, output, resume=True)
    run(pipe, source, output, overwrite=True)
    run(pipe, source, tmp_path / "fresh.csv", resume=True)  # nothing to resume: a plain run


def test_a_stop_reports_the_rows_the_record_holds(pipe, tmp_path, monkeypatch):
    """Ctrl-C after a chunk was counted but before its record was written: the message says what
    --resume will find (24 rows), not what was counted (32)."""
    source, output = tmp_path / "in.csv", tmp_path / "out.csv"
    make_csv(source, 100)
    save, calls = job_state.save, []

    def interrupted_save(path, state):
        calls.append(state.rows)
        if len(calls) == 5:  # the fresh record, then chunks 1-3; Ctrl-C lands in chunk 4's
            raise KeyboardInterrupt
        save(path, state)

    monkeypatch.setattr(job_state, "save", interrupted_save)
    with pytest.raises(JobInterrupted) as stopped:
        run(pipe, source, output)
    assert json.loads(state_path(output).read_text())["rows"] == 24
    assert "interrupted: 24 rows are safely in" in str(stopped.value)
    assert stopped.value.exit_code == 130


def test_resume_reads_the_first_runs_options(pipe, tf_camembert_dir, tmp_path):
    """`-o FILE --resume` alone: input, model, --all-scores and --batch-rows come from the record; a value
    given that differs from the recorded one is refused in one line that names both."""
    source, reference, output = tmp_path / "in.csv", tmp_path / "ref.csv", tmp_path / "out.csv"
    again = tmp_path / "again.csv"
    make_csv(source, 60)
    model = str(tf_camembert_dir)
    run(pipe, source, reference, all_scores=True, model=model)
    for stopped in (output, again):
        with pytest.raises(JobInterrupted):
            run(pipe, source, stopped, stop_after=2, all_scores=True, model=model)
    env = {k: None for k in os.environ if k.startswith("COULISSE_")}
    runner = CliRunner(env=env)
    resume = ["classify", "-o", str(output), "--resume", "--quiet"]
    # --model and --input are compared by content (another name of the same files goes on: test_jobs_paths.py)
    for extra, given, recorded in [(["-b", "16"], "--batch-rows 16", "--batch-rows 8"),
                                   (["-m", str(tmp_path)], f"now '{tmp_path}'", f"--model changed (was '{model}'"),
                                   (["--long-text", "chunk"], "--long-text chunk", "--long-text truncate"),
                                   (["-i", str(reference)], f"now '{reference}'", f"--input changed (was '{source}'")]:
        result = runner.invoke(cli, [*resume, *extra])
        assert result.exit_code == 1, result.output
        assert given in result.output and recorded in result.output
        assert len(result.output.strip().splitlines()) == 1, result.output
    result = CliRunner(env={**env, "COULISSE_BATCH_ROWS": "16"}).invoke(cli, resume)
    assert result.exit_code == 1 and "--batch-rows 16" in result.output
    assert json.loads(state_path(output).read_text())["rows"] == 16  # nothing ran
    result = runner.invoke(cli, resume)
    assert result.exit_code == 0, result.output
    assert output.read_bytes() == reference.read_bytes()
    assert output.read_text().splitlines()[0].endswith("score_POSITIVE,error")
    same = ["-i", str(source), "-m", model, "-b", "8", "--all-scores", "--long-text", "truncate"]
    result = runner.invoke(cli, ["classify", "-o", str(again), "--resume", "--quiet", *same])
    assert result.exit_code == 0, result.output  # the recorded values, given again: fine
    assert again.read_bytes() == reference.read_bytes()


def test_cli_refuses_to_overwrite(tf_camembert_dir, tmp_path):
    source, output = tmp_path / "in.csv", tmp_path / "out.csv"
    make_csv(source, 3)
    output.write_text("x\n")
    args = ["classify", "-m", str(tf_camembert_dir), "-i", str(source), "-o", str(output)]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 1
    assert "--overwrite" in result.output and output.read_text() == "x\n"


def _start(model, source, output, *extra):
    return start_job('classify', model, source, output, *extra)


def _wait_rows(proc, output, rows: int, timeout: float = 300) -> int:
    return wait_rows(proc, output, rows, timeout)


@pytest.mark.slow
def test_sigkill_then_resume_is_byte_identical(tf_camembert_dir, tmp_path):
    """A real process killed with SIGKILL, then one stopped by SIGTERM (exit 143), one by Ctrl-C's SIGINT
    (exit 130, no click "Aborted!"), then --resume with the output alone to the end."""
    source = tmp_path / "in.csv"
    make_csv(source, 1500)
    reference, output = tmp_path / "ref.csv", tmp_path / "out.csv"
    uninterrupted = _start(tf_camembert_dir, source, reference)
    victim = _start(tf_camembert_dir, source, output)
    first = _wait_rows(victim, output, 200)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    with open(output, "ab") as f:
        f.write(b'999,"a torn wri')  # what a kill in the middle of write() can leave
    stopped = _start(tf_camembert_dir, source, output, "--resume")
    _wait_rows(stopped, output, first + 200)
    stopped.send_signal(signal.SIGTERM)
    _, err = stopped.communicate(timeout=120)
    assert stopped.returncode == 143 and b"rerun with --resume" in err, err
    second = json.loads(state_path(output).read_text())["rows"]
    interrupted = _start(tf_camembert_dir, source, output, "--resume")
    _wait_rows(interrupted, output, second + 200)
    interrupted.send_signal(signal.SIGINT)
    _, err = interrupted.communicate(timeout=120)
    recorded = json.loads(state_path(output).read_text())["rows"]
    assert interrupted.returncode == 130, err
    assert f"interrupted: {recorded:,} rows are safely in".encode() in err and b"Aborted" not in err, err
    final = subprocess.Popen([sys.executable, "-c", MAIN, "classify", "-o", str(output), "--resume", "-t", "1"],
                             env={k: v for k, v in os.environ.items() if not k.startswith("COULISSE_")},
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert final.wait(timeout=600) == 0, final.communicate()
    assert uninterrupted.wait(timeout=600) == 0, uninterrupted.communicate()
    assert output.read_bytes() == reference.read_bytes()
    assert not state_path(output).exists()
    with open(output, encoding="utf-8", newline="") as f:
        assert [int(r["id"]) for r in csv.DictReader(f)] == list(range(1500))


def test_resume_without_a_job_record_says_so_before_looking_for_a_model(tmp_path, monkeypatch):
    """`-o FILE --resume` where no job ran (or it finished and took its record away): one line that says there is
    nothing to resume, before the default model is looked for (which may ask the Hub and warn)."""
    import coulisse.hub_fallback

    def no_lookup(task):
        raise AssertionError("the default model was looked for")

    monkeypatch.setattr(coulisse.hub_fallback, "default_model", no_lookup)
    (tmp_path / "done.csv").write_text("text,label\nBon,POSITIVE\n", encoding="utf-8")
    for output in ("done.csv", "never.csv"):
        result = CliRunner().invoke(cli, ["classify", "-o", str(tmp_path / output), "--resume"])
        assert result.exit_code == 1, result.output
        lines = result.output.strip().splitlines()
        assert lines == [f"Error: InputError: nothing to resume at {tmp_path / output}: there is no job record "
                         f"{output}.coulisse-state.json next to it (the job finished, or never started). Run it "
                         "with --input FILE."], result.output


def test_an_output_extension_no_writer_has_is_said_before_looking_for_a_model(tmp_path, monkeypatch):
    """`-o out.txt` with no --model: the default model's lookup may wait for the Hub; the extension is said
    first."""
    import coulisse.hub_fallback

    def no_lookup(task):
        raise AssertionError("the default model was looked for")

    monkeypatch.setattr(coulisse.hub_fallback, "default_model", no_lookup)
    (tmp_path / "in.csv").write_text("text\nBon\n", encoding="utf-8")
    result = CliRunner().invoke(cli, ["classify", "-i", str(tmp_path / "in.csv"), "-o", str(tmp_path / "out.txt")])
    assert result.exit_code == 1, result.output
    assert result.output.startswith(f"Error: InputError: cannot write {str(tmp_path / 'out.txt')!r}: unknown "
                                    "extension .txt"), result.output
    assert not (tmp_path / "out.txt").exists()


def test_a_flag_that_differs_from_the_recorded_run_is_said_as_a_flag(pipe, tmp_path, monkeypatch):
    """--resume with a flag the first run did not have (or without one it had): said as the flags are typed."""
    monkeypatch.delenv("COULISSE_ALL_SCORES", raising=False)
    source, output = tmp_path / "in.csv", tmp_path / "out.csv"
    make_csv(source, 40)
    with pytest.raises(JobInterrupted):
        run(pipe, source, output, stop_after=1)
    result = CliRunner().invoke(cli, ["classify", "-o", str(output), "--resume", "--all-scores"])
    assert result.exit_code == 1, result.output
    assert f"cannot resume {output} with --all-scores: the first run had no --all-scores" in result.output
    assert "True" not in result.output and "False" not in result.output


def test_a_record_of_another_format_says_how_to_run_the_job_again(pipe, tmp_path):
    """A record written by an older coulisse (another format) cannot be resumed: the one line says so, with the
    first run's input, model and --batch-rows as the record names them (audit 48: only "pass --overwrite")."""
    source, output = tmp_path / "in.csv", tmp_path / "out.csv"
    make_csv(source, 30)
    output.write_text("id,text,label,score,error\n0,x,POSITIVE,0.9,\n")
    state_path(output).write_text(json.dumps({"version": 1, "key": {"input": str(source), "model": "m",
                                                                    "batch_rows": 32}, "rows": 1}))
    with pytest.raises(InputError) as refused:
        run(pipe, source, output, resume=True)
    message = str(refused.value)
    assert f"written by another coulisse version (its record format 1, this one reads {job_state.VERSION})" in message
    assert f"run the job again with --overwrite (its first run had --input {source} --model m --batch-rows 32)" \
        in message

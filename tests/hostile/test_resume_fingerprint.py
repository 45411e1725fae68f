"""A resumed job is the same job (issue 12, point 3).

Each element of the fingerprint, changed alone after an interrupted run, refuses `--resume` in one line that
names it (the input by content — a different file with the same size and mtime —, the model's files at the
same path, every option that changes results), before the model loads where it can be. The input changing
under a running job stops it before the chunk read from the changed file is committed.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import random
import shutil
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner

import coulisse
from coulisse.interfaces.cli import cli
from coulisse.interfaces.jobs.readers import InputChangedError
from coulisse.interfaces.jobs.runner import JobInterrupted, JobOptions, classify_file
from coulisse.interfaces.jobs.state import ResumeMismatchError, state_path

MAIN = "from coulisse.interfaces.cli import main; main()"
WORDS = ["film", "acteur", "génial", "nul", "ennuyeux", "magnifique", "histoire", "musique", "drôle", "triste"]
BATCH = 8


def make_rows(n: int, seed: int = 0, words: list[str] = WORDS) -> list[dict]:
    rng = random.Random(seed)
    return [{"id": i, "text": " ".join(rng.choices(words, k=rng.randint(2, 12))),
             "other": rng.choice(words) + " " + rng.choice(words)} for i in range(n)]


def write_csv(path, rows: list[dict]) -> None:
    with open(path, "w", encoding="utf-8", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def csv_bytes(rows: list[dict]) -> bytes:
    buffer = io.StringIO(newline="")
    w = csv.DictWriter(buffer, fieldnames=list(rows[0]))
    w.writeheader()
    w.writerows(rows)
    return buffer.getvalue().encode()


@pytest.fixture(scope="module")
def pipe(tf_camembert_dir):
    return coulisse.pipeline("sentiment-analysis", model=str(tf_camembert_dir))


def options(source, output, **kw) -> JobOptions:
    return JobOptions(input=str(source), output=str(output), batch_rows=kw.pop("batch_rows", BATCH), **kw)


def run(pipe, source, output, **kw):
    return classify_file(options(source, output, **kw), lambda: pipe)


def interrupted(pipe, source, output, chunks: int = 2, on_chunk=None, **kw) -> None:
    """A job stopped (as by Ctrl-C) after `chunks` committed chunks."""
    done = []

    def stop(rows, preds):
        done.append(len(rows))
        if on_chunk is not None:
            on_chunk(len(done))
        if len(done) == chunks:
            raise KeyboardInterrupt

    with pytest.raises(JobInterrupted):
        classify_file(options(source, output, **kw), lambda: pipe, on_chunk=stop)


def never_loaded():
    raise AssertionError("the model was loaded before the resume was refused")


def refused(source, output, load=never_loaded, **kw) -> str:
    before = output.read_bytes() if output.exists() else None
    with pytest.raises(ResumeMismatchError) as info:
        classify_file(options(source, output, resume=True, **kw), load)
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"cannot resume {output}: ")
    assert message.endswith("or pass --overwrite to start over.")
    if before is not None:
        assert output.read_bytes() == before  # nothing written
    return message


def recorded(output) -> dict:
    return json.loads(state_path(output).read_text())


# -- the input ---------------------------------------------------------------------------------------------


def test_same_size_and_mtime_but_other_bytes_is_refused(pipe, tmp_path):
    """The issue's case: a different file with the same size and mtime was accepted. One letter of a
    committed row changes; size and mtime are put back. The message shows the prefix's sha256, which is
    checked here against hashlib on the original bytes."""
    source, output, reference = tmp_path / "in.csv", tmp_path / "out.csv", tmp_path / "ref.csv"
    write_csv(source, make_rows(100))
    original = source.read_bytes()
    run(pipe, source, reference)
    interrupted(pipe, source, output)
    state = recorded(output)
    assert state["rows"] == 2 * BATCH
    assert state["input"] == {"bytes": state["input"]["bytes"],
                              "sha256": hashlib.sha256(original[:state["input"]["bytes"]]).hexdigest()}
    stat = os.stat(source)
    at = original.index(b"\n") + original[original.index(b"\n"):].index(b"a")  # a letter of row 1
    forged = original[:at] + b"e" + original[at + 1:]
    source.write_bytes(forged)
    os.utime(source, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert (os.stat(source).st_size, os.stat(source).st_mtime_ns) == (stat.st_size, stat.st_mtime_ns)
    message = refused(source, output)
    assert f"the input changed under the {2 * BATCH} rows already written" in message
    assert state["input"]["sha256"][:12] in message
    assert hashlib.sha256(forged[:state["input"]["bytes"]]).hexdigest()[:12] in message
    source.write_bytes(original)  # the same bytes again: the resume goes on, whatever the mtime says
    summary = run(pipe, source, output, resume=True)
    assert summary.resumed_from == 2 * BATCH
    assert output.read_bytes() == reference.read_bytes()


def test_rows_after_the_committed_ones_may_change(pipe, tmp_path):
    """The fingerprint covers the bytes the committed rows came from: a file that only grew, or changed
    further on, resumes, and the result equals a fresh run over the file as it is now."""
    source, output, reference = tmp_path / "in.csv", tmp_path / "out.csv", tmp_path / "ref.csv"
    rows = make_rows(60)
    write_csv(source, rows)
    interrupted(pipe, source, output)
    changed = rows[:40] + [dict(r, text=r["text"] + " magnifique") for r in rows[40:]] + make_rows(30, seed=1)
    write_csv(source, changed)
    run(pipe, source, reference)
    run(pipe, source, output, resume=True)
    assert output.read_bytes() == reference.read_bytes()


def test_a_shorter_input_is_refused(pipe, tmp_path):
    source, output = tmp_path / "in.csv", tmp_path / "out.csv"
    rows = make_rows(60)
    write_csv(source, rows)
    interrupted(pipe, source, output, chunks=3)
    write_csv(source, rows[:10])
    assert "the input changed under the 24 rows already written" in refused(source, output)


def test_stdin_is_checked_too(pipe, tmp_path):
    """stdin cannot be stat'ed, but its bytes go through the same hash."""
    output, reference = tmp_path / "out.jsonl", tmp_path / "ref.jsonl"
    lines = b"".join(json.dumps(r, ensure_ascii=False).encode() + b"\n" for r in make_rows(50))

    def job(data, out, **kw):
        return classify_file(JobOptions(input="-", output=str(out), batch_rows=BATCH, **kw), lambda: pipe,
                             stdin=io.BytesIO(data))

    job(lines, reference)
    stops = []

    def stop(rows, preds):
        stops.append(1)
        if len(stops) == 2:
            raise KeyboardInterrupt

    with pytest.raises(JobInterrupted):
        classify_file(JobOptions(input="-", output=str(output), batch_rows=BATCH), lambda: pipe,
                      stdin=io.BytesIO(lines), on_chunk=stop)
    other = lines.replace(b"musique", b"comique", 1)
    assert len(other) == len(lines) and other != lines
    # the first run read stdin: a resume given another stdin (or none) is told to pipe the same input again
    said = r"the input changed \(the first run read stdin: pipe the same input into --resume\) under the 16 rows"
    for given in (other, b""):
        with pytest.raises(ResumeMismatchError, match=said):
            classify_file(JobOptions(input="-", output=str(output), batch_rows=BATCH, resume=True), never_loaded,
                          stdin=io.BytesIO(given))
    job(lines, output, resume=True)
    assert output.read_bytes() == reference.read_bytes()


def test_parquet_input_is_hashed_whole(pipe, tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    source, output = tmp_path / "in.parquet", tmp_path / "out.jsonl"
    rows = make_rows(60)

    def write(rows):
        pq.write_table(pa.Table.from_pylist(rows), source, compression="NONE", use_dictionary=False,
                       write_statistics=False)

    write(rows)
    interrupted(pipe, source, output)
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    assert recorded(output)["input"] == {"bytes": source.stat().st_size, "sha256": digest, "whole": True}
    stat = os.stat(source)
    write(rows[:50] + [dict(rows[50], text=rows[50]["text"][::-1])] + rows[51:])  # a row not yet read
    os.utime(source, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert (os.stat(source).st_size, os.stat(source).st_mtime_ns) == (stat.st_size, stat.st_mtime_ns)
    message = refused(source, output)
    assert f"the input changed (the first run's file had {stat.st_size:,} bytes with sha256 {digest[:12]}" in message


# -- the model ---------------------------------------------------------------------------------------------


@pytest.fixture
def model_copy(factory, tmp_path):
    """A small random BERT classifier (safetensors, vocab.txt) in a folder the test may change."""
    directory = tmp_path / "model"
    shutil.copytree(factory.checkpoint("bert"), directory)
    return directory


def perturb_weights(directory) -> None:
    """Same path, same size: the classifier's bias moved, as a retrained model would be."""
    from safetensors.torch import load_file, save_file

    tensors = load_file(directory / "model.safetensors")
    name = next(k for k in tensors if k.startswith("classifier") and k.endswith("bias"))
    tensors[name] = tensors[name] + 3.0
    save_file(tensors, directory / "model.safetensors", metadata={"format": "pt"})


def sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_weights_changed_at_the_same_path(model_copy, tmp_path):
    """Refused before loading when the job knows the model's path (the CLI always does), after loading
    when only the pipeline does; the message names the file and both hashes."""
    source, named, unnamed = tmp_path / "in.csv", tmp_path / "named.csv", tmp_path / "unnamed.csv"
    write_csv(source, make_rows(60))
    first = coulisse.pipeline("sentiment-analysis", model=str(model_copy))
    interrupted(first, source, named, model=str(model_copy))
    interrupted(first, source, unnamed)
    weights = model_copy / "model.safetensors"
    was = sha(weights)
    assert recorded(named)["model"]["model.safetensors"] == recorded(unnamed)["model"]["model.safetensors"] == was
    perturb_weights(model_copy)
    now = sha(weights)
    expected = f"the model's files changed (model.safetensors: sha256 {was[:12]}… → {now[:12]}…)"
    assert expected in refused(source, named, model=str(model_copy))
    second = coulisse.pipeline("sentiment-analysis", model=str(model_copy))
    assert expected in refused(source, unnamed, load=lambda: second)


@pytest.mark.parametrize("name", ["config.json", "vocab.txt", "tokenizer_config.json"])
def test_config_and_tokenizer_files_are_part_of_the_model(model_copy, tmp_path, name):
    source, output = tmp_path / "in.csv", tmp_path / "out.csv"
    write_csv(source, make_rows(40))
    first = coulisse.pipeline("sentiment-analysis", model=str(model_copy))
    interrupted(first, source, output, model=str(model_copy))
    path = model_copy / name
    if not path.exists():
        path.write_text("{}")
        change = f"{name}: added"
    else:
        was = sha(path)
        path.write_bytes(path.read_bytes() + b"\n")
        change = f"{name}: sha256 {was[:12]}… → {sha(path)[:12]}…"
    assert f"the model's files changed ({change})" in refused(source, output, model=str(model_copy))


def test_cli_refuses_changed_weights_in_one_line(model_copy, tmp_path):
    source, output = tmp_path / "in.csv", tmp_path / "out.csv"
    write_csv(source, make_rows(40))
    first = coulisse.pipeline("sentiment-analysis", model=str(model_copy))
    interrupted(first, source, output, model=str(model_copy))
    perturb_weights(model_copy)
    env = {k: None for k in os.environ if k.startswith("COULISSE_")}
    result = CliRunner(env=env).invoke(cli, ["classify", "-o", str(output), "--resume", "--quiet"])
    assert result.exit_code == 1
    assert len(result.output.strip().splitlines()) == 1, result.output
    assert "ResumeMismatchError: cannot resume" in result.output and "model.safetensors: sha256" in result.output


# -- options -----------------------------------------------------------------------------------------------

# option: (first run, resume, words of the refusal)
OPTIONS = {
    "quantize": ({}, {"quantize": "int8"}, "--quantize changed (was 'none', now 'int8')"),
    "long_text": ({}, {"long_text": "chunk"}, "--long-text changed (was 'truncate', now 'chunk')"),
    "stride": ({"long_text": "chunk", "stride": 4}, {"long_text": "chunk", "stride": 8},
               "--stride changed (was 4, now 8)"),
    "column": ({"column": "text"}, {"column": "other"}, "the text column (--column) changed (was 'text', now 'other')"),
    "all_scores": ({}, {"all_scores": True}, "--all-scores changed (was not given, now given)"),
    "batch_rows": ({}, {"batch_rows": 16}, "--batch-rows changed (was 8, now 16)"),
    "model": ({"model": "a"}, {"model": "b"}, "--model changed (was 'a', now 'b')"),
    "encoding": ({}, {"encoding": "cp1252"}, "--encoding changed (was not given, now 'cp1252')"),
    "encoding_name": ({"encoding": "utf-8"}, {"encoding": "latin-1"},
                      "--encoding changed (was 'utf-8', now 'iso8859-1')"),  # said as the codec's own name
}


@pytest.mark.parametrize("name", list(OPTIONS))
def test_each_option_is_checked_before_the_model_loads(pipe, tmp_path, name):
    first, second, words = OPTIONS[name]
    source, output = tmp_path / "in.csv", tmp_path / "out.csv"
    # ASCII for the encodings: a UTF-8 file with accents read as cp1252 is refused as UTF-8 before its record is
    # read (tests/interfaces/test_jobs_encoding.py)
    write_csv(source, make_rows(40, words=[w.encode("ascii", "ignore").decode() for w in WORDS])
              if name.startswith("encoding") else make_rows(40))
    interrupted(pipe, source, output, **first)
    message = refused(source, output, **second)
    assert words in message
    assert message.count(" changed (") == 1  # only what changed is named


def test_another_input_path_with_the_same_bytes_goes_on(pipe, tmp_path):
    """The input is identified by its committed bytes, hashed as they are read again: a copy (a moved file) whose
    committed rows are the same bytes gives the same rows, so the path alone refuses nothing; other bytes under
    another path are refused naming both paths."""
    source, output, reference = tmp_path / "in.csv", tmp_path / "out.csv", tmp_path / "ref.csv"
    write_csv(source, make_rows(40))
    run(pipe, source, reference)
    interrupted(pipe, source, output)
    copy = tmp_path / "copy.csv"
    shutil.copy(source, copy)
    other = tmp_path / "other.csv"
    write_csv(other, make_rows(40, seed=1))
    assert f"--input changed (was '{source}', now '{other}') and its bytes differ" in refused(other, output)
    run(pipe, copy, output, resume=True)
    assert output.read_bytes() == reference.read_bytes()


# What the pipeline a caller built chose: checked once it is loaded.
ENGINE = {
    # dtype and quantization are one precision, named once
    "dtype": ({"dtype": "bfloat16"}, "the precision changed (was 'float32', now 'bfloat16')"),
    "quantization": ({"quantize": "int8"}, "the precision changed (was 'float32', now 'int8')"),
    "task_options": ({"function_to_apply": "sigmoid"},
                     "the pipeline's task options changed (was {}, now {'function_to_apply': 'sigmoid'})"),
}


@pytest.mark.parametrize("name", list(ENGINE))
def test_the_loaded_pipelines_choices_are_checked(pipe, tf_camembert_dir, tmp_path, name):
    kwargs, words = ENGINE[name]
    source, output = tmp_path / "in.csv", tmp_path / "out.csv"
    write_csv(source, make_rows(40))
    interrupted(pipe, source, output)
    other = coulisse.pipeline("sentiment-analysis", model=str(tf_camembert_dir), **kwargs)
    assert words in refused(source, output, load=lambda: other)


def test_the_token_limit_is_checked(tf_camembert_dir, tmp_path):
    source, output = tmp_path / "in.csv", tmp_path / "out.csv"
    write_csv(source, make_rows(40))
    first = coulisse.pipeline("sentiment-analysis", model=str(tf_camembert_dir))
    limit = first.tokenizer.model_max_length
    interrupted(first, source, output)
    second = coulisse.pipeline("sentiment-analysis", model=str(tf_camembert_dir))
    second.tokenizer.model_max_length = 16
    assert f"the token limit (model_max_length) changed (was {limit}, now 16)" in refused(
        source, output, load=lambda: second)


# -- the input changing under a running job ----------------------------------------------------------------


def _rewrite_same_size(path, original):
    stat = os.stat(path)
    with open(path, "r+b") as f:  # in place, as an editor saving over it would
        f.seek(len(original) - 40)
        f.write(bytes(b if b in b",\n" else ord("x") for b in original[-40:]))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # only the ctime tells


def _replace(path, original):
    tmp = path.with_name("new.csv")
    tmp.write_bytes(original.replace(b"film", b"FILM"))
    os.replace(tmp, path)


CHANGES = {
    "rewritten, mtime restored": (_rewrite_same_size, "it was modified (its mtime or ctime moved)"),
    "truncated": (lambda p, o: os.truncate(p, len(o) // 2), "its size went from"),
    "appended": (lambda p, o: p.write_bytes(o + b"999,film nul,x\n"), "its size went from"),
    "replaced": (_replace, "it was replaced by another file"),
    "deleted": (lambda p, o: p.unlink(), "it is gone"),
}


@pytest.mark.parametrize("name", list(CHANGES))
def test_input_changed_during_the_job_stops_it(pipe, tmp_path, name):
    """The change lands after chunk 2 is committed: chunk 3, read from the changed file, is not committed;
    the 16 rows before stay valid (byte-equal to an uninterrupted run's), and once the input is back,
    --resume finishes the job as if nothing had happened."""
    change, words = CHANGES[name]
    source, output, reference = tmp_path / "in.csv", tmp_path / "out.csv", tmp_path / "ref.csv"
    write_csv(source, make_rows(200))
    original = source.read_bytes()
    run(pipe, source, reference)
    chunks = []

    def on_chunk(rows, preds):
        chunks.append(len(rows))
        if len(chunks) == 2:
            change(source, original)

    with pytest.raises(InputChangedError) as info:
        classify_file(options(source, output), lambda: pipe, on_chunk=on_chunk)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"the input {source} changed while the job read it: {words}")
    assert f"The job stopped; the 16 rows committed to {output} are kept" in message
    assert len(chunks) == 2 and recorded(output)["rows"] == 16
    committed = recorded(output)["position"]
    assert output.read_bytes()[:committed] == reference.read_bytes()[:committed]
    source.write_bytes(original)
    run(pipe, source, output, resume=True)
    assert output.read_bytes() == reference.read_bytes()


def test_parquet_input_changed_during_the_job_stops_it(pipe, tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    source, output = tmp_path / "in.parquet", tmp_path / "out.jsonl"
    table = pa.Table.from_pylist(make_rows(200))
    pq.write_table(table, source, row_group_size=50)

    def on_chunk(rows, preds, done=[]):  # noqa: B006 (the calls' counter)
        done.append(1)
        if len(done) == 2:
            pq.write_table(table.slice(0, 100), source)

    with pytest.raises(InputChangedError, match="changed while the job read it: its size went from"):
        classify_file(options(source, output), lambda: pipe, on_chunk=on_chunk)
    assert recorded(output)["rows"] == 16


@pytest.mark.slow
def test_cli_stops_in_one_line_when_the_input_is_rewritten(tf_camembert_dir, tmp_path):
    """A real process, the input rewritten by another while it runs: exit 1, one line, no traceback."""
    source, output = tmp_path / "in.csv", tmp_path / "out.csv"
    write_csv(source, make_rows(3000))
    env = {k: v for k, v in os.environ.items() if not k.startswith("COULISSE_")}
    proc = subprocess.Popen([sys.executable, "-c", MAIN, "classify", "-m", str(tf_camembert_dir), "-i", str(source),
                             "-o", str(output), "-b", "8", "-t", "1", "--quiet"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            if json.loads(state_path(output).read_text())["rows"] >= 40:
                break
        except (FileNotFoundError, ValueError):
            pass
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    source.write_bytes(csv_bytes(make_rows(3000, seed=5)))  # another export under the same name
    _, err = proc.communicate(timeout=300)
    lines = err.decode().strip().splitlines()
    assert proc.returncode == 1, err
    assert len(lines) == 1 and lines[0].startswith("Error: InputChangedError: the input"), err
    assert "changed while the job read it" in lines[0] and "--resume" in lines[0]


def test_model_files_are_what_a_load_reads(factory, tmp_path):
    """config.json, the tokenizer files, the index and every shard it names: not the files a load ignores.
    A shard path leaving the folder is refused as the load refuses it, and nothing outside is read."""
    from coulisse.checkpoint import model_files
    from coulisse.errors import UnsafeCheckpointError

    directory = tmp_path / "model"
    shutil.copytree(factory.checkpoint("bert", weights="sharded-bin"), directory)
    read = sorted(p.name for p in directory.iterdir())
    assert "pytorch_model.bin.index.json" in read and sum(n.startswith("pytorch_model-") for n in read) == 3
    (directory / "README.md").write_text("not read by a load")
    (directory / "model.onnx").write_bytes(b"not read either")
    assert sorted(p.name for p in model_files(directory)) == read
    index = json.loads((directory / "pytorch_model.bin.index.json").read_text())
    first = next(iter(index["weight_map"]))
    index["weight_map"][first] = "../secret.bin"
    (tmp_path / "secret.bin").write_bytes(b"secret")
    (directory / "pytorch_model.bin.index.json").write_text(json.dumps(index))
    with pytest.raises(UnsafeCheckpointError, match="outside the model folder|file names inside"):
        model_files(directory)

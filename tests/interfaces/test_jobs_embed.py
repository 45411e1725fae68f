"""`coulisse embed -i FILE -o FILE`: the corpus job machinery of `classify -i` with a sentence embedding per row.

The oracle is the Python pipeline, `pipeline("feature-extraction")(texts, pooling=..., normalize=...)`: the job
runs the same stages on each chunk, so its vectors equal the pipeline's on the same chunk bit for bit; against
one call over all texts (other batches, so other GEMM blockings) they agree to 1e-5, the bound the engine's
batched-vs-one-by-one tests hold (tests/test_pipelines.py). On the real all-MiniLM-L6-v2 the oracle is
sentence-transformers' `encode` (≤ 1e-5, as tests/test_sentence.py argues). An interrupted job, resumed,
is byte-identical to an uninterrupted one; the `.npy` file is byte-identical to `numpy.save` of the array.
"""

from __future__ import annotations

import csv
import io
import json
import os
import random
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from factory import CORPUS, TEXTS
from job_process import start_job, wait_rows

from coulisse.errors import InputError
from coulisse.interfaces.cli import cli
from coulisse.interfaces.jobs.embed import errors_path
from coulisse.interfaces.jobs.formats import output_format
from coulisse.interfaces.jobs.runner import JobInterrupted, JobOptions, embed_file
from coulisse.interfaces.jobs.state import ResumeMismatchError, state_path

MAIN = "from coulisse.interfaces.cli import main; main()"
FORMATS = ("parquet", "jsonl", "npy")
ENV = {k: v for k, v in os.environ.items() if not k.startswith("COULISSE_")}


def make_csv(path, n: int, seed: int = 0) -> list[str | None]:
    """`id,text` rows of random words (every 13th text empty: an error row); returns the texts (None: error)."""
    rng = random.Random(seed)
    words = " ".join(CORPUS).split()
    texts = []
    with open(path, "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "text"])
        for i in range(n):
            text = " ".join(rng.choices(words, k=rng.randint(1, 40))) if i % 13 != 5 else ""
            w.writerow([i, text])
            texts.append(text or None)
    return texts


def read_vectors(path) -> tuple[np.ndarray, dict[int, str]]:
    """Any output as a (N, D) float32 array (NaN rows for errors) and {row: error}."""
    path = str(path)
    if path.endswith(".npy"):
        side = errors_path(path)
        errors = {} if not side.exists() else \
            {r["row"]: r["error"] for r in map(json.loads, side.read_text().splitlines())}
        return np.load(path), errors
    if path.endswith(".parquet"):
        import pyarrow.parquet as pq

        records = pq.read_table(path).to_pylist()
    else:
        records = [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines()]
    dim = len(next(r["embedding"] for r in records if r["embedding"] is not None))
    array = np.array([r["embedding"] if r["embedding"] is not None else [np.nan] * dim for r in records],
                     dtype=np.float32)
    return array, {i: r["error"] for i, r in enumerate(records) if r["error"] is not None}


@pytest.fixture(scope="module")
def st_folder(factory, tmp_path_factory):
    """A tiny random BERT laid out as a sentence-transformers folder whose modules say cls + Normalize, so
    that `--pooling auto` is not the folder-less default (mean, no normalization)."""
    folder = tmp_path_factory.mktemp("st") / "model"
    shutil.copytree(factory.checkpoint("bert", base=True), folder)
    (folder / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}]))
    (folder / "1_Pooling").mkdir()
    (folder / "1_Pooling" / "config.json").write_text(json.dumps({"word_embedding_dimension": 32,
                                                                  "pooling_mode_cls_token": True}))
    return folder


@pytest.fixture(scope="module")
def st_pipe(st_folder):
    import coulisse

    return coulisse.pipeline("feature-extraction", model=str(st_folder))


def invoke(*args):
    result = CliRunner(env={k: None for k in os.environ if k.startswith("COULISSE_")}).invoke(cli, list(args))
    return result


@pytest.mark.parametrize(("fmt", "options", "call"), [
    ("parquet", [], {"pooling": "auto"}),  # the folder's: cls, normalized
    ("jsonl", ["--pooling", "mean", "--normalize"], {"pooling": "mean", "normalize": True}),
    ("npy", ["--pooling", "cls", "--no-normalize"], {"pooling": "cls", "normalize": False}),
])
def test_cli_output_equals_the_pipeline(st_folder, st_pipe, tmp_path, fmt, options, call):
    source, output = tmp_path / "reviews.csv", tmp_path / f"vectors.{fmt}"
    texts = make_csv(source, 60)
    result = invoke("embed", "-m", str(st_folder), "-i", str(source), "-o", str(output), "-b", "16", "-t", "1",
                    "--quiet", *options)
    assert result.exit_code == 0, result.output
    got, errors = read_vectors(output)
    assert got.shape == (60, 32) and got.dtype == np.float32
    bad = [i for i, t in enumerate(texts) if t is None]
    assert sorted(errors) == bad and all("'text' is empty" in errors[i] for i in bad)
    assert np.isnan(got[bad]).all() and np.isfinite(np.delete(got, bad, axis=0)).all()
    # The same chunks of 16 rows through the pipeline: bit for bit.
    expected = np.full_like(got, np.nan)
    for start in range(0, 60, 16):
        rows = [i for i in range(start, min(start + 16, 60)) if texts[i] is not None]
        expected[rows] = np.asarray(st_pipe([texts[i] for i in rows], **call), dtype=np.float32)
    np.testing.assert_array_equal(got, expected)
    # One call over every text: other batches, same stages.
    good = [i for i, t in enumerate(texts) if t is not None]
    whole = np.asarray(st_pipe([texts[i] for i in good], **call), dtype=np.float32)
    assert np.abs(got[good] - whole).max() <= 1e-5
    if call["pooling"] == "auto" or call.get("normalize"):
        assert np.allclose(np.linalg.norm(got[good], axis=1), 1, atol=1e-6)
    if fmt == "npy":  # numpy's own file, header and all
        buffer = io.BytesIO()
        np.save(buffer, expected)
        assert output.read_bytes() == buffer.getvalue()
    if fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        schema = pq.read_schema(output)
        assert schema.names == ["id", "text", "embedding", "error"]
        assert schema.field("embedding").type == pa.list_(pa.float32(), 32)


def run(pipe, source, output, stop_after: int | None = None, **options):
    chunks = []

    def on_chunk(rows, preds):
        chunks.append(len(rows))
        if stop_after is not None and len(chunks) == stop_after:
            raise KeyboardInterrupt

    job = JobOptions(input=str(source), output=str(output), batch_rows=8, **options)
    return embed_file(job, lambda: pipe, on_chunk=on_chunk)


@pytest.mark.parametrize("fmt", FORMATS)
def test_interrupted_resume_is_byte_identical(st_pipe, tmp_path, fmt):
    source = tmp_path / "in.csv"
    make_csv(source, 70)
    reference, output = tmp_path / f"ref.{fmt}", tmp_path / f"out.{fmt}"
    run(st_pipe, source, reference)
    with pytest.raises(JobInterrupted, match="40 rows are safely in"):
        run(st_pipe, source, output, stop_after=5)
    if fmt == "parquet":  # an uncommitted part, as a kill during its write leaves
        (output.with_name(output.name + ".parts") / "tmp-000005.parquet").write_bytes(b"PAR1 torn")
    else:  # a torn tail in the file and in the errors file
        with open(output, "ab") as f:
            f.write(b"\x00\x01half a row")
        with open(errors_path(output), "ab") as f:
            f.write(b'{"row": 4')
    summary = run(st_pipe, source, output, resume=True)
    assert (summary.resumed_from, summary.rows, summary.errored) == (40, 70, 5)
    assert "65 rows embedded, 5 errored (see " + ("out.npy.errors.jsonl)" if fmt == "npy" else "the error column)") \
        in summary.describe()
    assert output.read_bytes() == reference.read_bytes()
    if fmt == "npy":
        assert errors_path(output).read_bytes() == errors_path(reference).read_bytes()
    assert not state_path(output).exists()


def test_npy_without_error_rows_has_no_sidecar(st_pipe, tmp_path):
    source, output = tmp_path / "in.jsonl", tmp_path / "out.npy"
    source.write_text("".join(json.dumps({"text": t}) + "\n" for t in TEXTS), encoding="utf-8")
    summary = run(st_pipe, source, output)
    assert summary.truncated == 1  # the text past 512 tokens
    assert np.load(output).shape == (len(TEXTS), 32) and not errors_path(output).exists()


def test_a_poison_row_is_an_error_row_and_changes_no_other(st_pipe, tmp_path):
    """A lone surrogate (JSON's "\\ud800", which UTF-8 cannot carry) is an error row; the other rows equal a
    run without it (one chunk each, so the same texts meet in the same batch: exact)."""
    clean = [{"id": i, "text": t} for i, t in enumerate(CORPUS)]
    poisoned = clean[:3] + [{"id": 99, "text": "avant \ud800 après"}] + clean[3:]
    paths = {}
    for name, records in (("clean", clean), ("poisoned", poisoned)):
        source = tmp_path / f"{name}.jsonl"
        source.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
        paths[name] = tmp_path / f"{name}-out.jsonl"
        embed_file(JobOptions(input=str(source), output=str(paths[name]), batch_rows=64), lambda: st_pipe)
    a, errors = read_vectors(paths["poisoned"])
    b, none = read_vectors(paths["clean"])
    assert none == {} and list(errors) == [3] and "lone surrogate" in errors[3]
    np.testing.assert_array_equal(np.delete(a, 3, axis=0), b)
    assert json.loads(paths["poisoned"].read_text().splitlines()[3])["text"] == "avant \ud800 après"


class FailsOn:
    """The pipeline, except that any call whose texts include `marker` fails (a model that chokes on one row)."""

    def __init__(self, pipe, marker: str):
        self.pipe, self.marker = pipe, marker

    def __getattr__(self, name):
        return getattr(self.pipe, name)

    def run(self, texts, options, progress=None):
        if self.marker in texts:
            raise RuntimeError("boom")
        return self.pipe.run(texts, options, progress)


def test_a_row_the_model_fails_on_is_isolated(st_pipe, tmp_path):
    source, output = tmp_path / "in.csv", tmp_path / "out.parquet"
    texts = make_csv(source, 20)
    embed_file(JobOptions(input=str(source), output=str(output), batch_rows=8), lambda: FailsOn(st_pipe, texts[9]))
    got, errors = read_vectors(output)
    assert errors[9] == "line 11: the model failed on this row (RuntimeError: boom)"
    assert set(errors) == {5, 9, 18}  # two empty texts, one failure
    good = [i for i, t in enumerate(texts) if t is not None and i != 9]
    alone = np.asarray([st_pipe([texts[i]], pooling="auto")[0] for i in good], dtype=np.float32)
    assert np.abs(got[good] - alone).max() <= 1e-5  # rows 8-15 were retried one by one


def test_resume_refuses_a_changed_pooling(st_folder, st_pipe, tmp_path):
    source, output = tmp_path / "in.csv", tmp_path / "out.npy"
    make_csv(source, 40)
    with pytest.raises(JobInterrupted):
        run(st_pipe, source, output, stop_after=2, model=str(st_folder))
    for flag, given, recorded in ((["--pooling", "mean"], "--pooling mean", "--pooling auto"),
                                  (["--normalize"], "with --normalize:",
                                   "had neither --normalize nor --no-normalize"),
                                  (["-b", "4"], "--batch-rows 4", "--batch-rows 8")):
        result = invoke("embed", "-o", str(output), "--resume", "-t", "1", *flag)
        assert result.exit_code == 1, result.output
        line = result.output.strip()
        assert len(line.splitlines()) == 1 and given in line and recorded in line, line
    with pytest.raises(ResumeMismatchError, match=r"--normalize changed \(was None, now False\)") as refused:
        run(st_pipe, source, output, resume=True, normalize=False, model=str(st_folder))
    assert "\n" not in str(refused.value)
    with pytest.raises(ResumeMismatchError, match=r"--pooling changed \(was 'auto', now 'cls'\)"):
        run(st_pipe, source, output, resume=True, pooling="cls", model=str(st_folder))
    result = invoke("embed", "-o", str(output), "--resume", "-t", "1", "--quiet")
    assert result.exit_code == 0, result.output
    reference = tmp_path / "ref.npy"
    run(st_pipe, source, reference, model=str(st_folder))
    assert output.read_bytes() == reference.read_bytes()


def test_resume_refuses_a_folder_whose_default_prompt_changed(st_folder, tmp_path):
    """config_sentence_transformers.json gained a default prompt between the runs: the resume went on, its rows
    with the prompt after rows without, one file of two encodings (audit 43). The prompt the job puts before
    each text is recorded, and a change refused in one line."""
    import coulisse

    folder = tmp_path / "model"
    shutil.copytree(st_folder, folder)
    source, output = tmp_path / "in.csv", tmp_path / "out.npy"
    make_csv(source, 40)
    with pytest.raises(JobInterrupted):
        run(coulisse.pipeline("feature-extraction", model=str(folder)), source, output, stop_after=2,
            model=str(folder))
    (folder / "config_sentence_transformers.json").write_text(
        json.dumps({"prompts": {"query": "query: "}, "default_prompt_name": "query"}), encoding="utf-8")
    prompted = coulisse.pipeline("feature-extraction", model=str(folder))
    with pytest.raises(ResumeMismatchError, match=r"the model folder puts a default prompt before each text "
                                                  r"\('query: '\) that the job's record does not hold") as refused:
        run(prompted, source, output, resume=True, model=str(folder))
    assert "\n" not in str(refused.value)


class CountingStdin:
    """JSONL lines handed out one at a time, counting how many the job has taken."""

    def __init__(self, lines: list[bytes]):
        self.lines, self.taken = lines, 0

    def __iter__(self):
        return self  # an iterator, as sys.stdin.buffer is: the reader peeks, then goes on

    def __next__(self) -> bytes:
        if self.taken == len(self.lines):
            raise StopIteration
        self.taken += 1
        return self.lines[self.taken - 1]


def test_rows_are_streamed_one_chunk_at_a_time(st_pipe, tmp_path):
    """Memory is bounded by a chunk: when a chunk is committed, the job has read at most one record past it
    (the reader's look-ahead for the columns), or past the input's first 64 KiB, which a pipe has read ahead to
    check that they are UTF-8 (jobs/encodings.py), whatever the input's length. Records of ~2 KB: the 100 of
    them are three times those 64 KiB."""
    lines = [json.dumps({"text": f"{CORPUS[i % len(CORPUS)]} {i}", "note": "x" * 2000}).encode() + b"\n"
             for i in range(100)]
    start = next(n for n in range(len(lines)) if sum(map(len, lines[:n])) >= 64 * 1024)  # docs/jobs.md
    assert start < 40
    stdin = CountingStdin(lines)
    seen = []

    def on_chunk(rows, preds):
        seen.append((len(rows), stdin.taken - max(sum(n for n, _ in seen) + len(rows), start)))

    job = JobOptions(input="-", output=str(tmp_path / "out.npy"), batch_rows=8)
    embed_file(job, lambda: st_pipe, on_chunk=on_chunk, stdin=stdin)
    assert [n for n, _ in seen] == [8] * 12 + [4]
    assert max(ahead for _, ahead in seen) <= 1


def test_output_formats_and_usage(st_folder, tmp_path):
    source = tmp_path / "in.csv"
    make_csv(source, 3)
    result = invoke("embed", "-m", str(st_folder), "-i", str(source), "-o", str(tmp_path / "out.csv"))
    assert result.exit_code == 1 and "CSV and TSV have no list type to hold a vector; use one of .jsonl, .ndjson, " \
        ".npy, .parquet" in result.output, result.output
    result = invoke("embed", "-m", str(st_folder), "-i", str(source), "-o", str(tmp_path / "out.vec"))
    assert result.exit_code == 1 and "unknown extension .vec for embeddings; use one of" in result.output
    result = invoke("embed", "-i", str(source), "-o", str(tmp_path / "out.npy"))
    assert result.exit_code == 2 and "give --model" in result.output
    result = invoke("embed", "-m", str(st_folder), "-i", str(source), "-t", "1", "--quiet")  # JSONL on stdout
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in result.output.splitlines()]
    assert [r["id"] for r in records] == ["0", "1", "2"] and len(records[0]["embedding"]) == 32


def test_an_extension_embed_cannot_write_is_said_before_the_model_is_resolved(tmp_path, monkeypatch):
    """`embed -o out.csv`: picking the pipeline (`is_sparse`) resolves the model, a Hub id through the Hub; the
    output's extension is said first, as `classify` says it (audit 46, F14)."""
    from coulisse.interfaces.jobs import row_models

    resolved = []

    def is_sparse(model, pooling, revision=None):
        resolved.append(model)
        raise SystemExit(3)

    monkeypatch.setattr(row_models, "is_sparse", is_sparse)
    source = tmp_path / "in.csv"
    make_csv(source, 3)
    for name in ("out.csv", "out.vec"):
        output = tmp_path / name
        with pytest.raises(InputError) as expected:
            output_format(str(output), "embed")
        result = invoke("embed", "-m", "org/encoder", "-i", str(source), "-o", str(output))
        assert result.exit_code == 1 and result.output == f"Error: InputError: {expected.value}\n", result.output
    assert resolved == []
    result = invoke("embed", "-m", "org/encoder", "-i", str(source), "-o", str(tmp_path / "out.jsonl"))
    assert result.exit_code == 3 and resolved == ["org/encoder"]  # where the job asks, for a writable output


def _start(model, source, output, *extra):
    return start_job('embed', model, source, output, *extra)


def _wait_rows(proc, output, rows: int, timeout: float = 300) -> int:
    return wait_rows(proc, output, rows, timeout, poll=0.02)


@pytest.mark.slow
@pytest.mark.parametrize("fmt", FORMATS)
def test_sigkill_then_resume_is_byte_identical(tf_camembert_dir, tmp_path, fmt):
    """A real `coulisse embed -i` process killed with SIGKILL mid-job, then `-o FILE --resume` alone."""
    source = tmp_path / "reviews.csv"
    make_csv(source, 600)
    reference, output = tmp_path / f"ref.{fmt}", tmp_path / f"vectors.{fmt}"
    uninterrupted = _start(tf_camembert_dir, source, reference)
    victim = _start(tf_camembert_dir, source, output)
    _wait_rows(victim, output, 200)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert state_path(output).exists()
    final = subprocess.run([sys.executable, "-c", MAIN, "embed", "-o", str(output), "--resume", "-t", "1"],
                           env=ENV, capture_output=True, timeout=600)
    assert final.returncode == 0, final.stderr
    assert b"resumed after" in final.stderr and b"rows embedded" in final.stderr
    assert uninterrupted.wait(timeout=600) == 0, uninterrupted.communicate()
    assert output.read_bytes() == reference.read_bytes()
    if fmt == "npy":
        assert errors_path(output).read_bytes() == errors_path(reference).read_bytes()
    assert not state_path(output).exists()
    assert len(read_vectors(output)[0]) == 600


@pytest.mark.slow
def test_all_minilm_equals_sentence_transformers(minilm_dir, tmp_path):
    """The real all-MiniLM-L6-v2 (its folder's mean pooling, Normalize, 256-token limit) against
    `SentenceTransformer.encode`, through the CLI's Parquet and .npy outputs."""
    from sentence_transformers import SentenceTransformer

    texts = CORPUS + TEXTS + ["The cat sleeps on the sofa.", "A review that goes on and on. " * 80]
    source = tmp_path / "reviews.jsonl"
    source.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts), encoding="utf-8")
    theirs = SentenceTransformer(str(minilm_dir), device="cpu").encode(texts, convert_to_numpy=True)
    for fmt in ("parquet", "npy"):
        output = tmp_path / f"vectors.{fmt}"
        result = invoke("embed", "-m", str(minilm_dir), "-i", str(source), "-o", str(output), "-b", "8",
                        "-t", "1", "--quiet")
        assert result.exit_code == 0, result.output
        ours, errors = read_vectors(output)
        assert errors == {} and ours.shape == theirs.shape == (len(texts), 384)
        assert np.abs(ours - theirs).max() <= 1e-5


def test_a_folders_truncate_dim_and_a_prompt_left_out_of_the_pooling(minilm_dir, tmp_path):
    """config_sentence_transformers.json's truncate_dim and a default prompt, with a Pooling that leaves the
    prompt's tokens out (include_prompt false): `coulisse embed` gives SentenceTransformer.encode's vectors, cut
    to 48 dimensions (before audit 41 it wrote 384, and refused the prompt with a way out it has no option for)."""
    from sentence_transformers import SentenceTransformer

    folder = tmp_path / "model"
    shutil.copytree(minilm_dir, folder)
    (folder / "config_sentence_transformers.json").write_text(json.dumps(
        {"prompts": {"query": "query: ", "passage": "passage : "}, "default_prompt_name": "passage",
         "truncate_dim": 48}), encoding="utf-8")
    pooling = json.loads((folder / "1_Pooling" / "config.json").read_text()) | {"include_prompt": False}
    (folder / "1_Pooling" / "config.json").write_text(json.dumps(pooling), encoding="utf-8")
    texts = CORPUS[:6] + ["Bof."]
    source = tmp_path / "reviews.jsonl"
    source.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts), encoding="utf-8")
    theirs = SentenceTransformer(str(folder), device="cpu").encode(texts, convert_to_numpy=True)
    assert theirs.shape == (len(texts), 48)
    for fmt in ("parquet", "npy"):
        output = tmp_path / f"vectors.{fmt}"
        result = invoke("embed", "-m", str(folder), "-i", str(source), "-o", str(output), "--quiet")
        assert result.exit_code == 0, result.output
        ours, errors = read_vectors(output)
        assert errors == {} and ours.shape == theirs.shape
        assert np.abs(ours - theirs).max() <= 1e-5


class NonFiniteOn(FailsOn):
    """The pipeline, except that `marker`'s embedding comes back as NaN (an fp16 overflow, say)."""

    def run(self, texts, options, progress=None):
        batch, vectors = self.pipe.run(texts, options, progress)
        return batch, [v * float("nan") if t == self.marker else v for t, v in zip(texts, vectors, strict=True)]


def test_a_non_finite_embedding_is_an_error_row(st_pipe, tmp_path):
    source, output = tmp_path / "in.csv", tmp_path / "out.npy"
    texts = make_csv(source, 12)
    embed_file(JobOptions(input=str(source), output=str(output), batch_rows=8),
               lambda: NonFiniteOn(st_pipe, texts[2]))
    got, errors = read_vectors(output)
    assert set(errors) == {2, 5} and "the embedding is not finite" in errors[2]
    assert np.isnan(got[[2, 5]]).all() and np.isfinite(np.delete(got, [2, 5], axis=0)).all()


def test_a_record_keeps_the_shape_a_previous_version_wrote(st_pipe, minilm_dir, tmp_path):
    """The pooling a resume compares: where the folder sets no truncate_dim, the fields session 41 added stay out
    of it, so a job started by the previous version resumes; where it sets one, the record says so (the
    vectors' length changed: such a resume is refused, as it must be)."""
    from coulisse import pipeline
    from coulisse.interfaces.jobs.embed import Embedder

    recorded = Embedder(st_pipe).fingerprint()["sentence"]
    assert set(recorded) == {"pooling", "normalize", "max_seq_length", "lowercase", "include_prompt"}
    folder = tmp_path / "cut"
    shutil.copytree(minilm_dir, folder)
    (folder / "config_sentence_transformers.json").write_text(json.dumps({"truncate_dim": 48}), encoding="utf-8")
    assert Embedder(pipeline("feature-extraction", model=folder)).fingerprint()["sentence"]["truncate_dim"] == 48

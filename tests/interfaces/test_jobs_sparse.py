"""`coulisse embed -i FILE -o FILE` on a SPLADE model: the corpus job of `classify -i` with each row's non-zero
weights (`sparse_embedding`: indices and values), from a SparseEncoder folder (read as SPLADE with `--pooling
auto`) or a bare masked LM with `--pooling splade`.

The oracle is the Python pipeline, `pipeline("sparse-embedding")(texts, return_tensors=True)` on the same chunks:
the job runs the same stages, so its weights equal the pipeline's bit for bit (sentence-transformers is the
pipeline's own oracle, tests/tasks/test_sparse_embedding.py). An interrupted job, resumed, is byte-identical to
an uninterrupted one.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from task_factory import sparse_encoder_folder
from test_jobs_embed import make_csv, run

from coulisse import pipeline
from coulisse.interfaces.cli import cli
from coulisse.interfaces.jobs.runner import JobInterrupted


@pytest.fixture(scope="module")
def splade(task_factory, tmp_path_factory):
    folder, _ = sparse_encoder_folder(task_factory, "bert", tmp_path_factory.mktemp("splade-job"))
    return folder, pipeline("sparse-embedding", model=folder)


def invoke(*args):
    return CliRunner(env={k: None for k in os.environ if k.startswith("COULISSE_")}).invoke(cli, list(args))


def read_rows(path: Path) -> list[dict]:
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        return pq.read_table(path).to_pylist()
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.mark.parametrize("fmt", ["parquet", "jsonl"])
def test_cli_output_equals_the_pipeline(splade, tmp_path, fmt):
    folder, pipe = splade
    source, output = tmp_path / "reviews.csv", tmp_path / f"sparse.{fmt}"
    texts = make_csv(source, 40)
    result = invoke("embed", "-m", str(folder), "-i", str(source), "-o", str(output), "-b", "16", "-t", "1",
                    "--quiet")
    assert result.exit_code == 0, result.output
    rows = read_rows(output)
    assert [int(r["id"]) for r in rows] == list(range(40))
    for start in range(0, 40, 16):  # the job's chunks, through the pipeline
        chunk = [i for i in range(start, min(start + 16, 40)) if texts[i] is not None]
        for i, tensor in zip(chunk, pipe([texts[i] for i in chunk], return_tensors=True), strict=True):
            tensor = tensor.coalesce()
            assert rows[i]["error"] is None
            assert rows[i]["sparse_embedding"]["indices"] == tensor.indices()[0].tolist()
            np.testing.assert_array_equal(np.float32(rows[i]["sparse_embedding"]["values"]), tensor.values().numpy())
    for i, text in enumerate(texts):
        if text is None:
            assert rows[i]["sparse_embedding"] is None and "'text' is empty" in rows[i]["error"]
    if fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        kind = pq.read_schema(output).field("sparse_embedding").type
        assert kind == pa.struct([pa.field("indices", pa.list_(pa.int32())),
                                  pa.field("values", pa.list_(pa.float32()))])


def test_interrupted_resume_is_byte_identical(splade, tmp_path):
    _, pipe = splade
    source = tmp_path / "in.csv"
    make_csv(source, 50)
    reference, output = tmp_path / "ref.parquet", tmp_path / "out.parquet"
    run(pipe, source, reference)
    with pytest.raises(JobInterrupted, match="24 rows are safely in"):
        run(pipe, source, output, stop_after=3)
    summary = run(pipe, source, output, resume=True)
    assert (summary.resumed_from, summary.rows) == (24, 50)
    assert output.read_bytes() == reference.read_bytes()


def test_resume_refuses_a_folder_whose_max_active_dims_changed(splade, tmp_path):
    """max_active_dims set in config_sentence_transformers.json between the runs: ~30,000 weights a row before,
    16 after, in one file (audit 43); recorded now, and a change refused."""
    import shutil

    from coulisse.interfaces.jobs.state import ResumeMismatchError

    folder = tmp_path / "model"
    shutil.copytree(splade[0], folder)
    source, output = tmp_path / "in.csv", tmp_path / "out.parquet"
    make_csv(source, 50)
    with pytest.raises(JobInterrupted):
        run(pipeline("sparse-embedding", model=folder), source, output, stop_after=3, model=str(folder))
    settings = folder / "config_sentence_transformers.json"
    data = json.loads(settings.read_text(encoding="utf-8")) if settings.is_file() else {}
    settings.write_text(json.dumps({**data, "max_active_dims": 16}), encoding="utf-8")
    with pytest.raises(ResumeMismatchError, match=r"the folder's max_active_dims changed \(was None, now 16\)"):
        run(pipeline("sparse-embedding", model=folder), source, output, resume=True, model=str(folder))


def test_bare_masked_lm_with_pooling_splade_and_npy_refused(task_factory, tmp_path):
    bare = task_factory.checkpoint("bert", "masked-lm")
    source, output = tmp_path / "in.csv", tmp_path / "out.jsonl"
    texts = make_csv(source, 10)
    result = invoke("embed", "-m", str(bare), "--pooling", "splade", "-i", str(source), "-o", str(output), "--quiet")
    assert result.exit_code == 0, result.output
    rows = read_rows(output)
    expected = pipeline("sparse-embedding", model=bare)(texts[0], return_tensors=True).coalesce()
    assert rows[0]["sparse_embedding"]["indices"] == expected.indices()[0].tolist()
    result = invoke("embed", "-m", str(bare), "--pooling", "splade", "-i", str(source), "-o", str(tmp_path / "o.npy"))
    assert result.exit_code == 2 and ".npy holds dense arrays" in result.output, result.output


def test_an_input_column_of_the_same_name_is_kept():
    from coulisse.interfaces.jobs.embed import EmbedColumns, SparseColumns

    assert SparseColumns.for_columns(["text", "sparse_embedding", "error"], 8).names == [
        "coulisse_sparse_embedding", "coulisse_error"]
    assert SparseColumns.for_columns(["text", "embedding"], 8).names == ["sparse_embedding", "error"]
    assert EmbedColumns.for_columns(["text", "embedding"], 8).names == ["coulisse_embedding", "error"]
    # a later JSONL record's own keys: renamed for that record alone, the first record's names otherwise
    first = SparseColumns.for_columns(["text"], 8)
    assert first.for_record({"text": "a", "note": 1}) is first
    assert first.for_record({"text": "a", "error": "x"}).names == ["sparse_embedding", "coulisse_error"]
    assert isinstance(first.for_record({"error": "x"}), SparseColumns)
    assert EmbedColumns.for_columns(["text"], 8).for_record({"embedding": 1}).names == ["coulisse_embedding", "error"]

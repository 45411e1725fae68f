"""A corpus job in which every row failed exits 1, in one line; one in which some rows failed exits 0.

Failing every row for real: the model's forward raises (`EncoderModel.forward_packed` patched in this
process, which `CliRunner` runs the command in), so every chunk is retried row by row and every row
becomes an error row; or every text of the input is empty, which the readers refuse before any model runs.
The job still ends and writes its output (one error row per input row); its exit status and its one
line are what a script sees: how many rows failed, the first reason, and where the others are.
"""

from __future__ import annotations

import csv
import json
import os

import numpy as np
import pytest
from click.testing import CliRunner

from coulisse.interfaces.cli import cli
from coulisse.models.model import EncoderModel

ROWS = 7
REASON = "the model failed on this row (RuntimeError: the forward pass is broken)"


def invoke(*args):
    return CliRunner(env={k: None for k in os.environ if k.startswith("COULISSE_")}).invoke(cli, list(args))


def write_csv(path, texts: list[str]) -> None:
    with open(path, "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "text"])
        w.writerows(enumerate(texts))


def texts(n: int = ROWS) -> list[str]:
    return [f"un film {'très ' * i}bon" for i in range(n)]


@pytest.fixture
def broken_forward(monkeypatch):
    def forward_packed(self, p, *args, **kwargs):
        raise RuntimeError("the forward pass is broken")

    monkeypatch.setattr(EncoderModel, "forward_packed", forward_packed)


def one_error_line(result) -> str:
    assert result.exit_code == 1, result.output
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr, result.stderr
    return result.stderr.rstrip("\n")


def test_classify_exits_1_when_the_model_fails_on_every_row(tf_camembert_dir, tmp_path, broken_forward):
    source, output = tmp_path / "in.csv", tmp_path / "out.csv"
    write_csv(source, texts())
    result = invoke("classify", "-m", str(tf_camembert_dir), "-i", str(source), "-o", str(output), "-b", "3")
    assert one_error_line(result) == (
        f"Error: JobFailedError: every row failed ({ROWS} of {ROWS} rows errored; the first: line 2: {REASON}); "
        f"the reasons are in the error column of {output}.")
    with open(output, encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    # The job ran to its end: one error row per input row, each naming its line, and no label.
    assert [r["error"] for r in rows] == [f"line {i + 2}: {REASON}" for i in range(ROWS)]
    assert all(r["label"] == "" for r in rows)
    assert not (tmp_path / "out.csv.coulisse-state.json").exists()  # finished: nothing to resume


def test_the_error_line_names_the_column_and_stdout(tf_camembert_dir, tmp_path, broken_forward):
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps({"text": t, "error": "theirs"}) + "\n" for t in texts(2)),
                      encoding="utf-8")
    result = invoke("classify", "-m", str(tf_camembert_dir), "-i", str(source), "--quiet")
    assert one_error_line(result).endswith("the reasons are in the coulisse_error column on stdout.")
    assert [json.loads(line)["coulisse_error"] for line in result.stdout.splitlines()] == \
        [f"line {i + 1}: {REASON}" for i in range(2)]


@pytest.mark.slow  # the factory's checkpoints are built on first use
def test_embed_npy_exits_1_and_names_the_errors_file(tmp_path, factory, broken_forward):
    model = factory.checkpoint("bert", base=True)
    source, output = tmp_path / "in.csv", tmp_path / "vectors.npy"
    write_csv(source, texts())
    result = invoke("embed", "-m", str(model), "-i", str(source), "-o", str(output))
    assert one_error_line(result) == (
        f"Error: JobFailedError: every row failed ({ROWS} of {ROWS} rows errored; the first: line 2: {REASON}); "
        f"the reasons are in {output}.errors.jsonl.")
    assert np.isnan(np.load(output)).all() and np.load(output).shape[0] == ROWS
    errors = [json.loads(line) for line in (tmp_path / "vectors.npy.errors.jsonl").read_text().splitlines()]
    assert errors == [{"row": i, "error": f"line {i + 2}: {REASON}"} for i in range(ROWS)]


def test_an_input_of_only_bad_rows_exits_1(tf_camembert_dir, tmp_path):
    """No model failure needed: every text is empty, so no row gets a label either."""
    source, output = tmp_path / "in.csv", tmp_path / "out.parquet"
    write_csv(source, ["", "   ", ""])
    pytest.importorskip("pyarrow")
    result = invoke("classify", "-m", str(tf_camembert_dir), "-i", str(source), "-o", str(output))
    line = one_error_line(result)
    assert line.startswith("Error: JobFailedError: every row failed (3 of 3 rows errored; the first: line 2: ")
    assert line.endswith(f"the reasons are in the error column of {output}.")


def test_evaluate_exits_1_without_a_report_when_every_row_failed(tf_camembert_dir, tmp_path, broken_forward):
    """No prediction to score: one line naming where the reasons are, no report.md over zero rows."""
    source, report = tmp_path / "in.csv", tmp_path / "report"
    with open(source, "w", encoding="utf-8", newline="") as f:
        csv.writer(f).writerows([["text", "label"], *[[t, "POSITIVE"] for t in texts()]])
    result = invoke("evaluate", "-m", str(tf_camembert_dir), "-i", str(source), "-o", str(report), "--no-plots")
    line = one_error_line(result)
    assert line.startswith(f"Error: JobFailedError: every row failed ({ROWS} of {ROWS} rows errored; the first: "
                           f"line 2: {REASON});"), line
    assert not (report / "report.md").exists()


def test_evaluate_takes_fast(tf_camembert_dir, tmp_path, monkeypatch):
    """`coulisse evaluate --fast` builds its pipeline as `classify --fast` does (the CPU's fast mode)."""
    import coulisse.pipelines

    asked = []

    def pipeline(task, **kwargs):
        asked.append(kwargs)
        raise SystemExit(3)  # stop before any file is read

    monkeypatch.setattr(coulisse.pipelines, "pipeline", pipeline)
    source = tmp_path / "in.csv"
    with open(source, "w", encoding="utf-8", newline="") as f:
        csv.writer(f).writerows([["text", "label"], ["un bon film", "POSITIVE"]])
    invoke("evaluate", "-m", str(tf_camembert_dir), "-i", str(source), "-o", str(tmp_path / "r"), "--fast")
    invoke("evaluate", "-m", str(tf_camembert_dir), "-i", str(source), "-o", str(tmp_path / "r2"))
    assert [a.get("fast", False) for a in asked] == [True, False]


def test_some_failed_rows_exit_0_and_the_summary_counts_them(tf_camembert_dir, tmp_path, monkeypatch):
    """The model fails on the rows that hold BOOM only: the job succeeds, and its summary says how many
    rows failed and where their reasons are."""
    forward = EncoderModel.forward_packed
    boom = None

    def fragile(self, p, *args, **kwargs):
        if boom in p.input_ids.tolist():
            raise RuntimeError("the forward pass is broken")
        return forward(self, p, *args, **kwargs)

    import coulisse

    tokenizer = coulisse.pipeline("sentiment-analysis", model=str(tf_camembert_dir)).tokenizer
    boom = tokenizer("BOOM")["input_ids"][1]  # the first token of the word, between <s> and </s>
    monkeypatch.setattr(EncoderModel, "forward_packed", fragile)
    source, output = tmp_path / "in.csv", tmp_path / "out.csv"
    write_csv(source, [*texts(3), "BOOM", *texts(2), "BOOM BOOM"])
    result = invoke("classify", "-m", str(tf_camembert_dir), "-i", str(source), "-o", str(output), "-b", "4")
    assert result.exit_code == 0, result.output
    assert result.stderr.startswith("5 rows classified, 2 errored (see the error column); 7 rows in "), \
        result.stderr
    with open(output, encoding="utf-8", newline="") as f:
        errors = [r["error"] for r in csv.DictReader(f)]
    assert errors == ["", "", "", f"line 5: {REASON}", "", "", f"line 8: {REASON}"]


def test_an_empty_input_is_not_a_failure(tf_camembert_dir, tmp_path):
    source = tmp_path / "in.csv"
    source.write_text("id,text\n", encoding="utf-8")
    result = invoke("classify", "-m", str(tf_camembert_dir), "-i", str(source), "-o", str(tmp_path / "o.csv"))
    assert result.exit_code == 0, result.output
    assert result.stderr.startswith("0 rows classified, 0 errored;"), result.stderr


def test_a_ray_rerun_that_skipped_shards_does_not_judge():
    """A --ray rerun does not read back the shards it skips, so it cannot tell whether their rows failed:
    only a run that skipped none says every row failed."""
    from coulisse.interfaces.jobs.distributed import RaySummary

    failed = RaySummary("out", rows=3, errored=3, first_error="line 2: 'text' is empty")
    assert failed.failure() == ("every row failed (3 of 3 rows errored; the first: line 2: 'text' is empty); the "
                                "reasons are in the error column of the shards in out.")
    assert RaySummary("out", rows=3, errored=3, skipped=1).failure() is None
    assert RaySummary("out", rows=3, errored=2).failure() is None
    assert RaySummary("out").failure() is None


class NonFiniteOn:
    """The pipeline, except that `marker`'s logits come back NaN (a broken checkpoint, an fp16 overflow)."""

    def __init__(self, pipe, marker: str):
        self.pipe, self.marker, self.texts = pipe, marker, []

    def __getattr__(self, name):
        return getattr(self.pipe, name)

    def preprocess(self, texts):
        self.texts = list(texts)
        return self.pipe.preprocess(texts)

    def forward(self, items):
        logits = self.pipe.forward(items)
        return [row * float("nan") if text == self.marker else row
                for text, row in zip(self.texts, logits, strict=True)]


def test_non_finite_logits_are_an_error_row_not_a_label(tf_camembert_dir):
    """NaN logits would still give a label (the argmax of NaN is the first one) with a NaN score: the row
    becomes an error row instead, its chunk retried row by row, and the other rows keep their results."""
    from coulisse import pipeline
    from coulisse.interfaces.jobs.formats import Row
    from coulisse.interfaces.jobs.predict import Predictor

    pipe = pipeline("sentiment-analysis", model=str(tf_camembert_dir))
    rows = [Row({}, text=t) for t in texts(5)]
    clean = Predictor(pipe)(rows)
    got = Predictor(NonFiniteOn(pipe, texts(5)[2]))(rows)
    assert got[2].label is None and "FloatingPointError: the logits are not finite" in got[2].error
    others = [i for i in range(5) if i != 2]
    assert all(got[i].error is None and got[i].label == clean[i].label for i in others)
    # retried one row at a time, not in the batch: the same scores up to the GEMM's rounding, which another
    # CPU may block differently; the bound tests/engine/test_engine.py argues for batched vs alone logits
    # (a probability moves by at most 1/4 of its logit's change)
    assert np.allclose([got[i].scores for i in others], [clean[i].scores for i in others], rtol=0, atol=1e-5)

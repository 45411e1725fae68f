"""A resume record (`<output>.coulisse-state.json`) edited by hand or written by something else is refused in one
line that names the field, before anything reads it (an islice of `rows`, a cut at `position`, `--resume`'s
options read back from `key`); a record that says the output is complete is trusted only when the output and
the input are as the job's last step leaves them."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from test_resume_fingerprint import interrupted, make_rows, options, write_csv

import coulisse
from coulisse.errors import InputError
from coulisse.interfaces.cli import cli
from coulisse.interfaces.jobs import state as job_state
from coulisse.interfaces.jobs.runner import classify_file

pytest.importorskip("pyarrow")


@pytest.fixture(scope="module")
def pipe(tf_camembert_dir):
    return coulisse.pipeline("sentiment-analysis", model=str(tf_camembert_dir), threads=1)


def edited(record: dict, path: tuple, value) -> dict:
    *head, last = path
    d = record
    for k in head:
        d = d[k]
    if value is KeyError:
        del d[last]
    else:
        d[last] = value
    return record


# The audit's cases: (field, value, the words of the refusal).
CASES = [
    (("rows",), "abc", 'rows is "abc", not a row count'), (("rows",), -1, "rows is -1"),
    (("rows",), 10**30, f"rows is {10**30}"), (("rows",), 3.5, "rows is 3.5"), (("rows",), True, "rows is true"),
    (("key",), [], "key is [], not an object"), (("input",), "x", 'input is "x", not an object'),
    (("input",), {}, "input.bytes is null, not a byte count"), (("input", "bytes"), "x", 'input.bytes is "x"'),
    (("model",), [], "model is [], not an object"),
    (("model",), {"config.json": 5}, "model['config.json'] is 5, not a sha256 in hex"),
    (("engine",), [], "engine is [], not an object"), (("position",), "x", 'position is "x"'),
    (("position",), [1, 2], 'position is [1, 2], which does not fit the format "csv"'),
    (("position",), 10**20, f"position is {10**20}"), (("classified",), "x", 'classified is "x"'),
    (("classified",), 0, "rows is 16, but classified (0) and errored (0) add up to 0"),
    (("finished",), "yes", 'finished is "yes", not true or false'),
    (("key", "input"), 123, "key.input is 123, not a path"), (("key", "model"), 123, "key.model is 123"),
    (("key", "model"), KeyError, "key.model is missing, not a model name"),
    (("key", "batch_rows"), "x", 'key.batch_rows is "x", not a positive integer'),
    (("key", "batch_rows"), 0, "key.batch_rows is 0"), (("key", "stride"), "x", 'key.stride is "x"'),
    (("key", "encoding"), 7, "key.encoding is 7, not a codec name"),
    (("key", "all_scores"), "yes", 'key.all_scores is "yes", not true or false'),
    (("key", "all_scores"), 1, "key.all_scores is 1"),  # 1 == True: compared, it would pass
    (("key", "fast"), "x", 'key.fast is "x", not true'),
]


@pytest.fixture
def stopped(pipe, tmp_path):
    """A job stopped after two chunks of 8 rows: its input, output and record."""
    source, output = tmp_path / "in.csv", tmp_path / "out.csv"
    write_csv(source, make_rows(40))
    interrupted(pipe, source, output)
    return source, output, json.loads(job_state.state_path(output).read_text())


def never_loaded():
    raise AssertionError("the model was loaded")


@pytest.mark.parametrize(("path", "value", "words"), CASES, ids=[f"{'.'.join(c[0])}={c[1]!r}"[:40] for c in CASES])
def test_a_crafted_record_is_refused_in_one_line_naming_the_field(stopped, path, value, words):
    source, output, record = stopped
    state = job_state.state_path(output)
    state.write_text(json.dumps(edited(record, path, value)))
    before = output.read_bytes()
    result = CliRunner().invoke(cli, ["classify", "-o", str(output), "-i", str(source), "--resume", "--quiet"])
    assert result.exit_code == 1 and not isinstance(result.exception, (AssertionError, TypeError, ValueError)), \
        result.output
    assert result.output.count("\n") == 1, result.output
    assert result.output.startswith(f"Error: InputError: {state} is not a valid coulisse resume state for "
                                    f"{output}: {words}"), result.output
    assert result.output.endswith("; pass --overwrite to start over.\n")
    with pytest.raises(InputError, match="is not a valid coulisse resume state"):  # the library's path too
        classify_file(options(source, output, resume=True), never_loaded)
    assert output.read_bytes() == before


def test_a_finished_record_of_a_partial_output_is_refused(stopped):
    """The audit's case: `finished: true` on an output cut at a commit (its size is the record's) must not make
    16 of 40 rows a complete job: a finished record was saved once the whole input was read."""
    source, output, record = stopped
    job_state.state_path(output).write_text(json.dumps(edited(record, ("finished",), True)))
    before = output.read_bytes()
    for resume in (True, False):
        with pytest.raises(InputError) as refused:
            classify_file(options(source, output, resume=resume), never_loaded)
        assert str(refused.value) == (
            f"{job_state.state_path(output)} says {output} is complete after {record['input']['bytes']:,} bytes of "
            f"its input, but the input has {source.stat().st_size:,}: the record does not describe this job; pass "
            "--overwrite to redo it.")
    assert output.read_bytes() == before and job_state.state_path(output).exists()


def test_a_finished_record_of_another_output_size_is_refused(stopped):
    source, output, record = stopped
    job_state.state_path(output).write_text(json.dumps(edited(record, ("finished",), True)))
    with open(output, "ab") as f:
        f.write(b"1,more,rows\n")
    with pytest.raises(InputError, match=rf"says {output} is complete, but out.csv holds [\d,]+ bytes, the record "
                                         rf"{record['position']:,}: the record does not describe this output; pass "
                                         r"--overwrite to redo the job\.$"):
        classify_file(options(source, output, resume=True), never_loaded)


def test_a_finished_parquet_record_is_checked_against_the_rows_of_the_output(pipe, tmp_path):
    source, output = tmp_path / "in.csv", tmp_path / "out.parquet"
    write_csv(source, make_rows(40))
    classify_file(options(source, output), lambda: pipe)
    record = {**json.loads(json.dumps(job_state.JobState().__dict__)), "finished": True}
    state = job_state.state_path(output)
    good = dict(record, rows=40, classified=40, position=5, input={"bytes": source.stat().st_size, "sha256": "0" * 64},
                key={"input": str(source), "column": "text", "format": "parquet", "all_scores": False,
                     "long_text": "truncate", "stride": None, "batch_rows": 8, "model": "", "quantize": "none"})
    state.write_text(json.dumps(dict(good, rows=32, classified=32)))
    with pytest.raises(InputError, match=r"out.parquet holds 40 rows, the record 32: the record does not describe"):
        classify_file(options(source, output, resume=True), never_loaded)
    state.write_text(json.dumps(good))  # what the last step leaves: tidied up, nothing computed
    assert classify_file(options(source, output, resume=True), never_loaded).rows == 40
    assert not state.exists()


def test_overwrite_is_the_way_out_of_a_crafted_record(pipe, stopped):
    source, output, record = stopped
    job_state.state_path(output).write_text(json.dumps(edited(record, ("rows",), "abc")))
    assert classify_file(options(source, output, overwrite=True), lambda: pipe).rows == 40
    assert not job_state.state_path(output).exists()

"""A resumed job finds its input and model by content, whatever names them (jobs/resume.py): a model folder is
recorded as an absolute path, so `--resume` works from another folder; `--model` and `--input` spelled
otherwise (another relative path, an absolute one, the bundled model's folder for its name, the input moved)
go on when their bytes are the recorded ones, and another model or other bytes are still refused."""

from __future__ import annotations

import json
import logging
import os
import shutil

import pytest
from click.testing import CliRunner
from factory import write_reviews_csv

import coulisse
from coulisse.defaults import BUNDLED_DIR, BUNDLED_MODEL
from coulisse.interfaces.cli import cli
from coulisse.interfaces.jobs.runner import JobInterrupted, JobOptions, classify_file
from coulisse.interfaces.jobs.state import state_path

ENV = {k: None for k in os.environ if k.startswith("COULISSE_")}


def make_csv(path, n: int = 40) -> None:
    write_reviews_csv(path, n, most=12)


def job(source, output, model: str, pipe, stop_after: int | None = None):
    """`classify -i source -o output -m model -b 8`, stopped as by Ctrl-C after `stop_after` chunks."""
    def on_chunk(rows, preds, done=[]):  # noqa: B006 (the calls' counter)
        done.append(1)
        if len(done) == stop_after:
            raise KeyboardInterrupt

    options = JobOptions(input=str(source), output=str(output), batch_rows=8, model=model)
    return classify_file(options, lambda: pipe, on_chunk=on_chunk)


def resume(*extra: str):
    return CliRunner(env=ENV).invoke(cli, ["classify", "--resume", "--quiet", "-t", "1", *extra])


@pytest.fixture
def laid_out(tf_camembert_dir, tmp_path, monkeypatch):
    """docs/my-model and docs/in.csv; a job started from docs/.. as `-m ./docs/my-model`, stopped after 2
    chunks; the uninterrupted output beside it."""
    docs = tmp_path / "docs"
    docs.mkdir()
    shutil.copytree(tf_camembert_dir, docs / "my-model")
    make_csv(docs / "in.csv")
    pipe = coulisse.pipeline("sentiment-analysis", model=str(docs / "my-model"), threads=1)
    monkeypatch.chdir(tmp_path)
    job(docs / "in.csv", tmp_path / "ref.csv", "./docs/my-model", pipe)
    with pytest.raises(JobInterrupted):
        job(docs / "in.csv", tmp_path / "out.csv", "./docs/my-model", pipe, stop_after=2)
    return tmp_path


def test_a_relative_model_is_recorded_absolute_and_resumes_from_another_folder(laid_out, monkeypatch):
    record = json.loads(state_path(laid_out / "out.csv").read_text())
    assert record["key"]["model"] == str(laid_out / "docs" / "my-model")
    monkeypatch.chdir(laid_out / "docs")
    result = resume("-o", "../out.csv")
    assert result.exit_code == 0, result.output
    assert (laid_out / "out.csv").read_bytes() == (laid_out / "ref.csv").read_bytes()


@pytest.mark.parametrize("spelling", ["./my-model", "ABSOLUTE", "../docs/./my-model"])
def test_the_same_model_spelled_otherwise_goes_on(laid_out, monkeypatch, spelling):
    monkeypatch.chdir(laid_out / "docs")
    given = str(laid_out / "docs" / "my-model") if spelling == "ABSOLUTE" else spelling
    result = resume("-o", "../out.csv", "-m", given)
    assert result.exit_code == 0, result.output
    assert (laid_out / "out.csv").read_bytes() == (laid_out / "ref.csv").read_bytes()


def test_another_model_at_another_path_is_refused_naming_its_files(laid_out):
    other = laid_out / "other-model"
    shutil.copytree(laid_out / "docs" / "my-model", other)
    with open(other / "config.json", "a", encoding="utf-8") as f:
        f.write("\n")  # the same JSON, other bytes: another model as far as a fingerprint can tell
    result = resume("-o", "out.csv", "-m", str(other))
    assert result.exit_code == 1, result.output
    assert len(result.output.strip().splitlines()) == 1, result.output
    assert (f"--model changed (was '{laid_out / 'docs' / 'my-model'}', now '{other}') and its files differ "
            "(config.json: sha256") in result.output
    assert json.loads(state_path(laid_out / "out.csv").read_text())["rows"] == 16  # nothing ran


def test_the_bundled_model_by_its_folder_is_its_name(tmp_path):
    source, reference, output = tmp_path / "in.csv", tmp_path / "ref.csv", tmp_path / "out.csv"
    make_csv(source)
    pipe = coulisse.pipeline("sentiment-analysis", model=BUNDLED_MODEL, threads=1)
    job(source, reference, BUNDLED_MODEL, pipe)
    with pytest.raises(JobInterrupted):
        job(source, output, BUNDLED_MODEL, pipe, stop_after=2)
    assert json.loads(state_path(output).read_text())["key"]["model"] == BUNDLED_MODEL
    result = resume("-o", str(output), "-m", str(BUNDLED_DIR))
    assert result.exit_code == 0, result.output
    assert output.read_bytes() == reference.read_bytes()


def test_a_moved_input_with_the_same_bytes_goes_on_and_is_said(laid_out, monkeypatch, caplog):
    """The input renamed (or named through `..`): its committed bytes are hashed as the first run read them."""
    moved = laid_out / "moved.csv"
    os.rename(laid_out / "docs" / "in.csv", moved)
    monkeypatch.chdir(laid_out / "docs")
    with caplog.at_level(logging.INFO, logger="coulisse.interfaces.jobs.resume"):
        result = resume("-o", "../out.csv", "-i", "../docs/../moved.csv")
    assert result.exit_code == 0, result.output
    assert (laid_out / "out.csv").read_bytes() == (laid_out / "ref.csv").read_bytes()
    said = [r.getMessage() for r in caplog.records if "is not the path the first run read" in r.getMessage()]
    assert said == [f"--input {moved} is not the path the first run read ({laid_out / 'docs' / 'in.csv'}), but the "
                    "16 committed rows come from the same bytes (sha256 " + said[0].split("sha256 ")[1]], said


def test_a_path_through_dotdot_is_the_recorded_path(laid_out, monkeypatch):
    monkeypatch.chdir(laid_out / "docs" / "my-model")
    result = resume("-o", "../../out.csv", "-i", "../in.csv")
    assert result.exit_code == 0, result.output
    assert (laid_out / "out.csv").read_bytes() == (laid_out / "ref.csv").read_bytes()


def test_a_moved_input_with_other_bytes_or_format_is_refused(laid_out):
    source = laid_out / "docs" / "in.csv"
    other = laid_out / "other.csv"
    other.write_bytes(source.read_bytes().replace(b"film", b"FILM", 1))
    result = resume("-o", "out.csv", "-i", str(other))
    assert result.exit_code == 1 and len(result.output.strip().splitlines()) == 1, result.output
    assert f"--input changed (was '{source}', now '{other}') and its bytes differ under the 16 rows" in result.output
    as_text = laid_out / "same.txt"  # the same bytes read as lines of text are other rows
    shutil.copy(source, as_text)
    result = resume("-o", "out.csv", "-i", str(as_text))
    assert result.exit_code == 1 and len(result.output.strip().splitlines()) == 1, result.output
    assert f"--input changed (was '{source}', now '{as_text}'), and a resume reads its input in the first run's " \
           "format" in result.output
    assert json.loads(state_path(laid_out / "out.csv").read_text())["rows"] == 16  # nothing ran

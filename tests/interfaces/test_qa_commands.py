"""`coulisse qa` and `coulisse zero-shot` through click's CliRunner: the answers of the pipelines (and so of
transformers 4 / 5, see tests/tasks), --json records, contexts from files and stdin, one-line errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from coulisse import pipeline
from coulisse.interfaces.cli import cli

QUESTION = "Quelle est la hauteur de la tour Eiffel ?"
QA_FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "qa" / "bert"


@pytest.fixture(autouse=True)
def _no_model_env(monkeypatch):
    for name in ("COULISSE_MODEL", "COULISSE_CONTEXT", "COULISSE_LABELS"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def qa_case(tmp_path_factory, minilm_dir):
    """The committed BERT QA checkpoint (plus MiniLM's vocab.txt), and transformers 4's answers for it."""
    d = tmp_path_factory.mktemp("qa-cli") / "bert"
    shutil.copytree(QA_FIXTURE, d)
    shutil.copy(minilm_dir / "vocab.txt", d / "vocab.txt")
    cases = {c["name"]: c for c in json.loads((d / "expected.json").read_text(encoding="utf-8"))["cases"]}
    return d, cases


def invoke(args, stdin=None):
    return CliRunner().invoke(cli, args, input=stdin, catch_exceptions=False)


def test_qa_json_equals_transformers4(qa_case, tmp_path):
    d, cases = qa_case
    context = cases["keywords"]["kwargs"]["context"]
    result = invoke(["qa", "-m", str(d), "-c", context, "--json", QUESTION])
    assert result.exit_code == 0, result.output
    record = json.loads(result.output)
    expected = cases["keywords"]["expected"]
    assert record["question"] == QUESTION
    assert (record["answer"], record["start"], record["end"]) == (expected["answer"], expected["start"],
                                                                  expected["end"])
    # The same from a file, with top-k answers.
    path = tmp_path / "context.txt"
    path.write_text(context, encoding="utf-8")
    question = cases["top_k"]["kwargs"]["question"]
    result = invoke(["qa", "--model", str(d), "--context", str(path), "-k", "3", "-j", question])
    assert result.exit_code == 0, result.output
    answers = json.loads(result.output)["answers"]
    assert [a["answer"] for a in answers] == [a["answer"] for a in cases["top_k"]["expected"]]


def test_a_context_naming_a_missing_file_or_a_folder_is_refused(qa_case, tmp_path):
    """`-c ctx.tx` for ctx.txt answered from the two words of the name, exit 0: a value shaped like a path is a
    file to read, and a folder is no context; a one-word text is still a context."""
    d, _ = qa_case
    cases = [(str(tmp_path / "ctx.tx"), "no file"), ("notes.md", "no file"), (str(tmp_path), "is a folder")]
    for value, words in cases:
        result = invoke(["qa", "-m", str(d), "-c", value, QUESTION])
        assert result.exit_code == 2 and words in result.output and "--context" in result.output, result.output
        assert "Traceback" not in result.output
    result = invoke(["qa", "-m", str(d), "-c", "Paris", "--json", QUESTION])
    assert result.exit_code == 0 and json.loads(result.output)["answer"] == "Paris", result.output
    (tmp_path / "empty.txt").write_text(" \n", encoding="utf-8")  # the file is named, not "context is empty"
    for args, stdin, source in ((["-c", str(tmp_path / "empty.txt")], None, "empty.txt holds no text"),
                                (["-c", "-"], "", "stdin holds no text")):
        result = invoke(["qa", "-m", str(d), *args, QUESTION], stdin=stdin)
        assert result.exit_code == 2 and source in result.output and "--context" in result.output, result.output


def test_qa_text_output_and_stdin_context(qa_case):
    d, cases = qa_case
    context = cases["keywords"]["kwargs"]["context"]
    args = ["qa", "-m", str(d), "-c", "-", "-n", QUESTION, "Qui a construit la tour ?"]
    result = invoke(args, stdin=context)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == QUESTION and "Qui a construit la tour ?" in lines
    assert repr(cases["keywords"]["expected"]["answer"]) in lines[1]


def test_qa_errors_are_one_line(qa_case):
    d, _ = qa_case
    result = CliRunner().invoke(cli, ["qa", "-c", "Un texte.", "Quoi ?"])
    assert result.exit_code == 2 and "give --model" in result.output
    args = ["qa", "-m", str(d), "-c", "Un texte.", "-s", "100", "-d", "500", "Quoi ?"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 1
    assert "InputError: doc_stride (500) is larger than max_seq_len (100)" in result.output
    assert "Traceback" not in result.output


def test_zero_shot_json_equals_the_pipeline(nli_dir):
    texts = ["Le PSG a gagné hier soir.", "La réforme des retraites arrive au Parlement."]
    result = invoke(["zero-shot", "-m", str(nli_dir), "--labels", "sport,politique,cinéma", "--json", *texts])
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in result.output.splitlines()]
    zero_shot = pipeline("zero-shot-classification", model=nli_dir)
    expected = zero_shot(texts, candidate_labels="sport,politique,cinéma")
    assert records == expected
    assert abs(sum(records[0]["scores"]) - 1) < 1e-5


def test_zero_shot_stdin_multi_label_template_top_k(nli_dir):
    result = invoke(["zero-shot", "-m", str(nli_dir), "-l", "sport,politique,cinéma", "-M", "-k", "2",
                     "-H", "Ce message parle de {}."], stdin="Le PSG a gagné.\n\nUn film magnifique.\n")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert len(lines) == 2 and lines[1].endswith("Un film magnifique.")
    assert len(lines[0].split("  ")) == 3  # two labels, then the text
    args = ["zero-shot", "-m", str(nli_dir), "-l", "a,b", "-H", "Sans label.", "Texte."]
    bad = CliRunner().invoke(cli, args)
    # the flag the user typed, not the pipeline's keyword, and a usage error said before the model loads
    assert bad.exit_code == 2 and "Traceback" not in bad.output, bad.output
    assert "'-H' / '--hypothesis-template': 'Sans label.' must hold one {}" in bad.stderr
    assert "hypothesis_template" not in bad.stderr and "e.g. 'Sans label {}.'" in bad.stderr
    explain = CliRunner().invoke(cli, ["explain", "--task", "zero-shot-classification", "-m", str(nli_dir),
                                       "--labels", "a,b", "--template", "{x}", "Texte."])
    assert explain.exit_code == 2 and "'--template': '{x}' must hold one {}" in explain.stderr


def test_help_carries_examples():
    for verb in ("qa", "zero-shot"):
        result = invoke([verb, "--help"])
        assert result.exit_code == 0 and "Examples:" in result.output and f"coulisse {verb}" in result.output


@pytest.mark.parametrize(("args", "words"), [
    (["qa", "-c", "Paris", "-k", "0", QUESTION], "'-k' / '--top-k': 0 is not positive"),
    (["qa", "-c", "Paris", "-l", "0", QUESTION], "'-l' / '--max-answer-len': 0 is not positive"),
    (["qa", "-c", "Paris", "-s", "-3", QUESTION], "'-s' / '--max-seq-len': -3 is not positive"),
    (["zero-shot", "-l", "a,b", "-k", "0", "Un texte."], "'-k' / '--top-k': 0 is not positive"),
    (["zero-shot", "-l", " , ", "Un texte."], "'-l' / '--labels': ' , ' holds no label"),
    (["explain", "--task", "zero-shot-classification", "--labels", ",", "x"], "'--labels': ',' holds no label"),
])
def test_option_values_are_usage_errors_named_by_their_option(args, words):
    """They were the pipeline's errors in its own words (top_k=0, max_answer_len=0, candidate_labels=[]), exit 1,
    after the model loaded; zero-shot -k 0 printed the texts without a label."""
    result = CliRunner().invoke(cli, [args[0], "-m", "/nonexistent/model", *args[1:]])
    assert result.exit_code == 2 and words in result.output, result.output

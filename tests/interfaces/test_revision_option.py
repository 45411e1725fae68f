"""`--revision` on every command with `--model` (and `convert`'s MODEL): the Hub revision named is the one
loaded, a corpus job records it and a `--resume` goes on with it, and a revision the Hub could not have is a
usage error before anything loads. An offline Hugging Face cache holds one repo at two commits: `main`, the
bundled classifier, and the tag `v1`, the same weights with French label names."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from coulisse.defaults import bundled_dir
from coulisse.interfaces.cli import cli
from coulisse.interfaces.jobs.runner import JobInterrupted, JobOptions, classify_file

REPO = "owner/critiques"
MAIN, V1 = "a" * 40, "b" * 40
TEXTS = ["Un film magnifique, je le recommande.", "Quel ennui, le pire film de l'année."]


def _snapshot(root: Path, commit: str, ref: str, labels: dict[str, str] | None = None) -> None:
    snapshot = root / "snapshots" / commit
    shutil.copytree(bundled_dir("coulisse/mini-allocine"), snapshot)
    if labels is not None:
        config = json.loads((snapshot / "config.json").read_text(encoding="utf-8"))
        config["id2label"] = labels
        config["label2id"] = {name: int(i) for i, name in labels.items()}
        (snapshot / "config.json").write_text(json.dumps(config), encoding="utf-8")
    (root / "refs").mkdir(parents=True, exist_ok=True)
    (root / "refs" / ref).write_text(commit)


@pytest.fixture
def two_revisions(tmp_path, monkeypatch):
    cache = tmp_path / "hub"
    root = cache / ("models--" + REPO.replace("/", "--"))
    _snapshot(root, MAIN, "main")
    _snapshot(root, V1, "v1", {"0": "NÉGATIF", "1": "POSITIF"})
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for name in ("HF_HOME", "COULISSE_MODEL", "COULISSE_REVISION"):
        monkeypatch.delenv(name, raising=False)
    return root


def _labels(output: str) -> list[str]:
    return [json.loads(line)["label"] for line in output.splitlines()]


def test_classify_loads_the_revision_named(two_revisions):
    runner = CliRunner()
    main = runner.invoke(cli, ["classify", "-m", REPO, "--json", *TEXTS])
    tagged = runner.invoke(cli, ["classify", "-m", REPO, "--revision", "v1", "--json", *TEXTS])
    by_commit = runner.invoke(cli, ["classify", "-m", REPO, "--json", *TEXTS], env={"COULISSE_REVISION": V1})
    assert main.exit_code == tagged.exit_code == by_commit.exit_code == 0, (main.output, tagged.output)
    assert set(_labels(main.output)) <= {"NEGATIVE", "POSITIVE"}
    renamed = {"NEGATIVE": "NÉGATIF", "POSITIVE": "POSITIF"}
    assert _labels(tagged.output) == [renamed[label] for label in _labels(main.output)]
    assert _labels(by_commit.output) == _labels(tagged.output)


def test_a_revision_missing_from_the_cache_is_named(two_revisions):
    result = CliRunner().invoke(cli, ["classify", "-m", REPO, "--revision", "v2", "Super film"])
    assert result.exit_code == 1
    assert REPO in result.output and "Traceback" not in result.output


@pytest.mark.parametrize("revision", ["a b", "../main", "/etc", ""])
def test_a_revision_the_hub_could_not_have_is_a_usage_error(revision, two_revisions):
    result = CliRunner().invoke(cli, ["explain", "-m", REPO, "--revision", revision, "Super film"])
    assert result.exit_code == 2
    assert "Invalid value for '--revision'" in result.output and "branch, tag or commit" in result.output


def test_convert_writes_the_revision_named(two_revisions, tmp_path):
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["convert", REPO, str(out), "--revision", "v1"])
    assert result.exit_code == 0, result.output
    config = json.loads((out / "config.json").read_text(encoding="utf-8"))
    assert config["id2label"] == {"0": "NÉGATIF", "1": "POSITIF"}


def test_a_job_records_its_revision_and_a_resume_goes_on_with_it(two_revisions, tmp_path):
    import coulisse

    source, output = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    source.write_text("".join(json.dumps({"text": text}) + "\n" for text in TEXTS * 6), encoding="utf-8")
    pipe = coulisse.pipeline("sentiment-analysis", model=REPO, revision="v1")
    job = JobOptions(input=str(source), output=str(output), batch_rows=4, model=REPO, revision="v1")

    def stop_after_first(rows, preds):
        raise KeyboardInterrupt

    with pytest.raises(JobInterrupted):
        classify_file(job, lambda: pipe, on_chunk=stop_after_first)
    runner = CliRunner()
    other = runner.invoke(cli, ["classify", "-o", str(output), "--resume", "--revision", "main"])
    assert other.exit_code == 1
    assert "with --revision main: the first run had --revision v1" in other.output
    # Without --revision, the record's: the main snapshot's files would be refused as another model.
    resumed = runner.invoke(cli, ["classify", "-o", str(output), "--resume", "--quiet"])
    assert resumed.exit_code == 0, resumed.output
    rows = [json.loads(line) for line in output.read_text(encoding="utf-8").splitlines()]
    assert len(rows) == 12 and not any(row["error"] for row in rows)
    assert {row["label"] for row in rows} <= {"NÉGATIF", "POSITIF"}

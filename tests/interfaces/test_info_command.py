"""`coulisse info` prints this machine's kernel plan; `--fast` reaches the pipeline as `fast=True`."""

from __future__ import annotations

import json

from click.testing import CliRunner

from coulisse import pipeline
from coulisse.engine.cpu import FLAGS, this_machine
from coulisse.interfaces.cli import cli


def test_info_prints_the_plan():
    """Every choice and its reason, each wrapped for a terminal: what runs, then `why:` on indented lines."""
    result = CliRunner().invoke(cli, ["info"])
    assert result.exit_code == 0, result.output
    plan = result.output.split("int8 weight cache:")[0]  # (a folder's path may be longer than a line)
    assert max(len(line) for line in plan.splitlines()) <= 100
    words = " ".join(result.output.split())
    for line in this_machine().lines():
        what, _, why = line.partition(" — ")
        assert " ".join(what.split()) in words
        if why:
            assert " ".join(f"why: {why}".split()) in words
    reasons = [line for line in result.output.splitlines() if line.startswith("    why: ")]
    assert len(reasons) == sum(" — " in line for line in this_machine().lines()) >= 4


def test_info_json():
    result = CliRunner().invoke(cli, ["info", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    plan = this_machine()
    assert set(data["flags"]) == plan.features.flags & set(FLAGS)
    assert data["kernels"]["int8"]["kernel"] == plan.int8.kernel and data["fast"]["mode"] == plan.fast


def test_fast_flag_gives_the_fast_pipelines_answers(tf_camembert_dir):
    text = "Je déteste tellement ça !"
    result = CliRunner().invoke(cli, ["classify", "--model", str(tf_camembert_dir), "--fast", "--json", text])
    assert result.exit_code == 0, result.output
    expected = pipeline("sentiment-analysis", model=str(tf_camembert_dir), fast=True)(text)
    got = json.loads(result.output)
    got = got[0] if isinstance(got, list) else got
    expected = expected[0] if isinstance(expected, list) else expected
    assert got["label"] == expected["label"] and abs(got["score"] - expected["score"]) < 1e-6


def test_fast_next_to_quantize_is_one_line_error(tf_camembert_dir):
    result = CliRunner().invoke(cli, ["classify", "--model", str(tf_camembert_dir), "--fast", "-q", "int8", "x"])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert result.output.strip().splitlines()[-1] == ("Error: --fast picks the precision itself; drop --quantize int8, "
                                                      "or drop --fast.")


def test_info_says_which_onednn_cache_bound_applies(monkeypatch):
    import os

    from coulisse.engine.prepare import (
        IDEEP_CACHE_ENTRIES,
        IDEEP_CACHE_VARIABLE,
        ONEDNN_CACHE_ENTRIES,
        ONEDNN_CACHE_VARIABLE,
    )

    monkeypatch.setenv(ONEDNN_CACHE_VARIABLE, "77")
    monkeypatch.setenv(IDEEP_CACHE_VARIABLE, "99")
    result = CliRunner().invoke(cli, ["info"])
    assert result.exit_code == 0, result.output
    assert f"{ONEDNN_CACHE_VARIABLE}=77 (yours), {IDEEP_CACHE_VARIABLE}=99 (yours)" in result.output
    monkeypatch.delenv(ONEDNN_CACHE_VARIABLE)
    monkeypatch.delenv(IDEEP_CACHE_VARIABLE)  # set first, so that the worker's own value comes back after
    result = CliRunner().invoke(cli, ["info", "--json"])
    expected = (f"{ONEDNN_CACHE_VARIABLE}={ONEDNN_CACHE_ENTRIES} (coulisse's), "
                f"{IDEEP_CACHE_VARIABLE}={IDEEP_CACHE_ENTRIES} (coulisse's)")
    assert json.loads(result.output)["onednn_primitive_cache"] == expected
    # info describes; only preparing a pipeline sets them
    assert ONEDNN_CACHE_VARIABLE not in os.environ and IDEEP_CACHE_VARIABLE not in os.environ

"""A call's `max_length` above tokenizer_config's `model_max_length` (16 here, on a 512-position model): transformers
cuts at the length the caller gave, and so does coulisse; it cut at 16 (audit 40: another score, another label for a
pair, and fill-mask refusing a text whose mask lay past token 16). The position table still bounds it."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from coulisse import pipeline

TEXT = "J'ai attendu un cours d'HuggingFace toute ma vie."  # 19 tokens with MiniLM's WordPiece
MASKED = "J'ai attendu un cours d'HuggingFace toute ma [MASK]."
LIMIT = 16


def with_limit(folder, tmp_path):
    d = tmp_path / folder.name
    shutil.copytree(folder, d)
    settings = d / "tokenizer_config.json"
    known = json.loads(settings.read_text(encoding="utf-8") or "{}") if settings.is_file() else {}
    settings.write_text(json.dumps({**known, "model_max_length": LIMIT}), encoding="utf-8")
    return d


@pytest.fixture(scope="module")
def classifier_dir(factory, tmp_path_factory):
    return with_limit(factory.checkpoint("bert"), tmp_path_factory.mktemp("ml16"))


def test_text_classification_cuts_at_the_callers_max_length(classifier_dir, task_factory):
    theirs = task_factory.hf_pipeline("text-classification", classifier_dir)
    ours = pipeline("text-classification", model=str(classifier_dir))
    assert len(theirs.tokenizer(TEXT)["input_ids"]) > LIMIT
    for options in (dict(truncation=True, max_length=40), dict(truncation=True, max_length=18),
                    dict(truncation=True)):  # without max_length: model_max_length, in both
        expected, got = theirs(TEXT, top_k=None, **options), ours(TEXT, top_k=None, **options)
        assert [r["label"] for r in got] == [r["label"] for r in expected], options
        np.testing.assert_allclose([r["score"] for r in got], [r["score"] for r in expected], rtol=1e-4, atol=1e-6)
    pair = {"text": TEXT, "text_pair": "Un film superbe."}
    expected = theirs(pair, top_k=None, truncation="only_first", max_length=24)
    got = ours(pair, top_k=None, truncation="only_first", max_length=24)
    assert [r["label"] for r in got] == [r["label"] for r in expected]
    np.testing.assert_allclose([r["score"] for r in got], [r["score"] for r in expected], rtol=1e-4, atol=1e-6)


def test_feature_extraction_and_fill_mask_cut_at_the_callers_max_length(task_factory):
    base = task_factory.checkpoint("bert", "base", model_max_length=LIMIT)
    theirs = task_factory.hf_pipeline("feature-extraction", base)
    ours = pipeline("feature-extraction", model=str(base))
    kwargs = dict(tokenize_kwargs=dict(truncation=True, max_length=40))
    expected, got = np.asarray(theirs(TEXT, **kwargs)), np.asarray(ours(TEXT, **kwargs))
    assert got.shape == expected.shape and expected.shape[1] > LIMIT
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)

    masked = task_factory.checkpoint("bert", "masked-lm", model_max_length=LIMIT)
    theirs, ours = task_factory.hf_pipeline("fill-mask", masked), pipeline("fill-mask", model=str(masked))
    kwargs = dict(tokenizer_kwargs=dict(truncation=True, max_length=40), top_k=3)
    expected, got = theirs(MASKED, **kwargs), ours(MASKED, **kwargs)  # the mask lies past token 16
    assert [r["token"] for r in got] == [r["token"] for r in expected]
    np.testing.assert_allclose([r["score"] for r in got], [r["score"] for r in expected], rtol=1e-4, atol=1e-6)


def test_a_max_length_past_the_position_table_is_cut_there(classifier_dir):
    """Past the table the model cannot read a token; transformers fails in the model there, coulisse cuts."""
    ours = pipeline("text-classification", model=str(classifier_dir))
    long = " ".join(["film"] * 700)
    cut = ours.preprocess(long, truncation=True, max_length=5000)
    assert len(cut.items[0].ids) == ours.config.position_limit

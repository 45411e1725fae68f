"""sentence-transformers/all-mpnet-base-v2's layout on a tiny random MPNet (tests/task_factory.py's
`all_mpnet_folder`): the bare encoder written by transformers, MPNet's vocab.txt and the model's own
tokenizer_config.json, modules.json (Transformer, mean Pooling, Normalize), sentence_bert_config.json with
max_seq_length 384, config.json naming MPNetForMaskedLM as the real one does. Oracle: sentence-transformers'
`SentenceTransformer` reading that folder.

coulisse's `SentenceEncoder` and `pipeline("feature-extraction", pooling="auto")` give its embeddings within
1e-5 (unit vectors: float32 sums in another order differ by ~1e-7), and its token embeddings; a text past 384
tokens is cut there on both sides. `coulisse serve` on the folder: tests/interfaces/test_server_compat.py.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from factory import TEXTS, assert_close
from task_factory import all_mpnet_folder

from coulisse import SentenceEncoder, pipeline

LONG = "A review that goes on and on, and then some more. " * 60  # ~780 tokens: cut at 384


@pytest.fixture(scope="module")
def folder(task_factory, tmp_path_factory):
    """The all-mpnet-base-v2 layout, and sentence-transformers' model read from it."""
    from sentence_transformers import SentenceTransformer

    directory = all_mpnet_folder(task_factory, tmp_path_factory.mktemp("all-mpnet") / "all-mpnet-base-v2")
    return directory, SentenceTransformer(str(directory), device="cpu")


def test_the_folder_is_all_mpnet_base_v2s_layout(folder):
    directory, theirs = folder
    modules = json.loads((directory / "modules.json").read_text(encoding="utf-8"))
    assert [m["path"] for m in modules] == ["", "1_Pooling", "2_Normalize"]
    assert json.loads((directory / "sentence_bert_config.json").read_text(encoding="utf-8"))["max_seq_length"] == 384
    assert json.loads((directory / "1_Pooling" / "config.json").read_text(encoding="utf-8"))["pooling_mode_mean_tokens"]
    assert theirs.max_seq_length == 384 and len(theirs.tokenizer(LONG)["input_ids"]) > 384


def test_sentence_encoder_equals_sentence_transformers(folder):
    directory, theirs = folder
    texts = [*TEXTS[:6], LONG]
    ours = SentenceEncoder(directory)
    assert ours.max_seq_length == theirs.max_seq_length == 384
    got, expected = ours.encode(texts), theirs.encode(texts)
    assert got.shape == expected.shape == (len(texts), 32)
    assert_close("all-mpnet layout: SentenceEncoder", got, expected, tol=1e-5)
    assert np.allclose(np.linalg.norm(got, axis=1), 1, atol=1e-6)
    tokens_ours = ours.encode(texts[:2], output_value="token_embeddings")
    tokens_theirs = theirs.encode(texts[:2], output_value="token_embeddings")
    for a, b in zip(tokens_ours, tokens_theirs, strict=True):
        assert_close("all-mpnet layout: token embeddings", a, b)


def test_feature_extraction_pipeline_equals_sentence_transformers(folder):
    directory, theirs = folder
    texts = [*TEXTS[:6], LONG]
    got = np.asarray(pipeline("feature-extraction", model=directory, pooling="auto")(texts), dtype=np.float64)
    assert_close("all-mpnet layout: feature-extraction", got, theirs.encode(texts), tol=1e-5)

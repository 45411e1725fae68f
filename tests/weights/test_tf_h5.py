"""TensorFlow oracle: a tiny TFCamembertForSequenceClassification saved by TensorFlow itself
(tests/fixtures/tf_camembert, made by make_fixture.py with transformers 4 + tensorflow-cpu). coulisse reads
its tf_model.h5 with h5py alone; ids and logits must equal what TensorFlow computed (expected.json)."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import torch
from factory import assert_close

from coulisse import pipeline
from coulisse.weights import read_weights
from coulisse.weights.tf_h5 import pytorch_name


@pytest.fixture(scope="module")
def expected(tf_camembert_dir):
    return json.loads((tf_camembert_dir / "expected.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def classifier(tf_camembert_dir):
    return pipeline("sentiment-analysis", model=tf_camembert_dir)


def test_fixture_is_laid_out_like_tf_allocine(tf_camembert_dir):
    names = {p.name for p in tf_camembert_dir.iterdir()}
    assert {"tf_model.h5", "config.json", "sentencepiece.bpe.model", "special_tokens_map.json"} <= names
    assert not names & {"model.safetensors", "pytorch_model.bin", "tokenizer.json"}
    assert (tf_camembert_dir / "tokenizer_config.json").read_bytes() == b"{}"


def test_ids_equal_tensorflow_side(classifier, expected):
    ids = classifier.tokenizer(expected["texts"], truncation=True)["input_ids"]
    assert ids == expected["input_ids"]
    assert max(map(len, ids)) == 512  # the long review was truncated at the position limit
    assert classifier.tokenizer.model_max_length == 512


def test_logits_equal_tensorflow_batched(classifier, expected):
    want = np.asarray(expected["logits"], dtype=np.float32)
    inputs = classifier.tokenizer(expected["texts"], padding=True, truncation=True, return_tensors="pt")
    assert_close("TF logits batched (padded model call)", classifier.model(**inputs).logits, want)
    assert_close("TF logits batched (engine)", np.stack(classifier.forward(classifier.preprocess(
        expected["texts"]))), want)
    assert np.ptp(want, axis=0).min() > 1e-2  # the texts are told apart


def test_logits_equal_tensorflow_one_by_one(classifier, expected):
    for text, want in zip(expected["texts"], expected["logits_one_by_one"], strict=True):
        inputs = classifier.tokenizer(text, truncation=True, return_tensors="pt")
        assert_close("TF logits one by one", classifier.model(**inputs).logits[0], np.float32(want))


def test_scores_are_tensorflow_softmax(classifier, expected):
    logits = np.asarray(expected["logits"], dtype=np.float64)
    probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    results = classifier(expected["texts"])
    for result, p in zip(results, probs, strict=True):
        assert result["label"] == ["NEGATIVE", "POSITIVE"][int(p.argmax())]
        assert abs(result["score"] - p.max()) <= 1e-4


def independent_h5_state_dict(path) -> dict[str, np.ndarray]:
    """The layout documented in make_fixture.py, written again here without coulisse."""
    state = {}
    with h5py.File(path, "r") as f:
        for group in f.attrs["layer_names"]:
            group = group.decode() if isinstance(group, bytes) else group
            for name in f[group].attrs["weight_names"]:
                name = name.decode() if isinstance(name, bytes) else name
                array = np.asarray(f[group][name])
                *path_parts, leaf = name.removesuffix(":0").split("/")[1:]
                path_ = ".".join(path_parts).replace("layer_._", "layer.")
                if leaf == "kernel":
                    array = array.T
                state[f"{path_}.{'bias' if leaf in ('beta', 'bias') else 'weight'}"] = array
    return state


def test_h5_tensors_equal_an_independent_reading(tf_camembert_dir):
    tensors, path = read_weights(tf_camembert_dir)
    assert path.name == "tf_model.h5"
    want = independent_h5_state_dict(path)
    assert sorted(tensors) == sorted(want)
    for key, array in want.items():
        assert tensors[key].dtype == torch.float32
        assert np.array_equal(tensors[key].numpy(), array), key


@pytest.mark.parametrize(("tf_name", "pt_name", "transpose"), [
    ("tf_camembert_for_sequence_classification/roberta/encoder/layer_._0/attention/self/query/kernel:0",
     "roberta.encoder.layer.0.attention.self.query.weight", True),
    ("tf_camembert_for_sequence_classification/roberta/encoder/layer_._11/output/LayerNorm/gamma:0",
     "roberta.encoder.layer.11.output.LayerNorm.weight", False),
    ("tf_camembert_for_sequence_classification/roberta/embeddings/LayerNorm/beta:0",
     "roberta.embeddings.LayerNorm.bias", False),
    ("tf_camembert_for_sequence_classification/roberta/embeddings/position_embeddings/embeddings:0",
     "roberta.embeddings.position_embeddings.weight", False),
    ("tf_camembert_for_sequence_classification/roberta/embeddings/word_embeddings/weight:0",
     "roberta.embeddings.word_embeddings.weight", False),
    ("tf_bert_for_sequence_classification/classifier/kernel:0", "classifier.weight", True),
    ("tf_distil_bert_for_sequence_classification/distilbert/transformer/layer_._3/ffn/lin1/bias:0",
     "distilbert.transformer.layer.3.ffn.lin1.bias", False),
])
def test_tf_names_map_to_pytorch_keys(tf_name, pt_name, transpose):
    """Examples of transformers' `convert_tf_weight_name_to_pt_weight_name` (transformers 4)."""
    assert pytorch_name(tf_name) == (pt_name, transpose)

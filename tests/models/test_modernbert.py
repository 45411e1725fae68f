"""ModernBERT (`coulisse.models.modernbert`) against transformers 5, on tiny random checkpoints that transformers
itself wrote (tests/factory.py: 3 layers, global / local / global, a local window of 8 tokens that most texts
exceed, rotary bases of their own) with a tokenizer.json in ModernBERT's layout trained here.

Logits and hidden states within 1e-4 (fp32 on both sides: the measured gap is ~1e-6, the summation order of
the GEMMs and of the mean pooling), ids and offsets identical, batched equal to one by one within 1e-5.
"""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from factory import (
    CORPUS,
    TEXTS,
    assert_close,
    assert_distinct_rows,
    assert_same_encoding,
    perturb_norms,
    write_weights,
)

from coulisse import pipeline
from coulisse.config import EncoderConfig
from coulisse.errors import UnsupportedModelError
from coulisse.models.modernbert import ModernBertOptions

VARIANTS = {
    "cls": dict(),
    "mean": dict(classifier_pooling="mean"),
    # every optional bias, other activations, and layer types written out as transformers 5 writes them
    "biases": dict(norm_bias=True, attention_bias=True, mlp_bias=True, classifier_bias=True,
                   hidden_activation="gelu_pytorch_tanh", classifier_activation="silu", classifier_pooling="mean",
                   layer_types=["sliding_attention", "full_attention", "sliding_attention"]),
}


def transformers_model(factory, auto: str = "AutoModelForSequenceClassification", seed: int = 0, **changes):
    """A tiny transformers ModernBERT (the factory's config with `changes`), norms and biases moved off 1 and 0."""
    import transformers

    config = copy.deepcopy(factory.reference("modernbert").model.config)
    for key, value in changes.items():
        setattr(config, key, value)
    torch.manual_seed(seed)
    model = getattr(transformers, auto).from_config(config).eval()
    perturb_norms(model)
    return model


def save(factory, model, directory, weights: str = "safetensors"):
    directory.mkdir(parents=True, exist_ok=True)
    write_weights(model, directory, weights)
    for f in factory.tokenizer_files("modernbert").iterdir():
        if f.name != "config.json":
            (directory / f.name).write_bytes(f.read_bytes())
    return directory


def oracle_inputs(factory, texts=TEXTS):
    return factory.hf_tokenizer("modernbert")(texts, padding=True, truncation=True, max_length=512,
                                              return_tensors="pt")


# -- config ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fields", [
    {},
    {"num_hidden_layers": 7, "global_attn_every_n_layers": 2, "local_attention": 64, "global_rope_theta": 9e4,
     "local_rope_theta": 500.0},
    {"num_hidden_layers": 3, "layer_types": ["sliding_attention", "sliding_attention", "full_attention"],
     "rope_parameters": {"full_attention": {"rope_type": "default", "rope_theta": 1234.0},
                         "sliding_attention": {"rope_type": "default", "rope_theta": 77.0}}},
])
def test_options_follow_transformers_config(fields):
    """Layer types, window and rotary bases as transformers' ModernBertConfig reads the same config.json: its
    defaults, the Hub's older spellings (global_attn_every_n_layers, global/local_rope_theta) and its own."""
    import transformers

    theirs = transformers.ModernBertConfig(**fields)
    ours = ModernBertOptions.from_config(EncoderConfig.from_dict({"model_type": "modernbert", **fields}))
    assert ours.layer_types == tuple(theirs.layer_types)
    assert ours.window == theirs.sliding_window
    assert ours.thetas == {kind: theirs.rope_parameters[kind]["rope_theta"] for kind in ours.thetas}
    config = EncoderConfig.from_dict({"model_type": "modernbert", **fields})
    assert (config.hidden_size, config.num_attention_heads, config.intermediate_size, config.layer_norm_eps,
            config.vocab_size, config.pad_token_id) == (theirs.hidden_size, theirs.num_attention_heads,
                                                        theirs.intermediate_size, theirs.norm_eps,
                                                        theirs.vocab_size, theirs.pad_token_id)


@pytest.mark.parametrize("change, message", [
    ({"classifier_pooling": "max"}, "classifier_pooling='max'"),
    ({"layer_types": ["full_attention"]}, "layer_types=.* one of full_attention, sliding_attention per layer"),
    ({"rope_parameters": {"full_attention": {"rope_type": "yarn", "rope_theta": 10.0}}}, "rope_type='yarn'"),
    ({"classifier_activation": "softmax"}, "classifier_activation='softmax'"),
])
def test_what_coulisse_does_not_run_is_one_typed_line(factory, tmp_path, change, message):
    directory = save(factory, factory.reference("modernbert").model, tmp_path)
    config = json.loads((directory / "config.json").read_text(encoding="utf-8"))
    (directory / "config.json").write_text(json.dumps({**config, **change}), encoding="utf-8")
    with pytest.raises(UnsupportedModelError, match=message):
        pipeline("text-classification", model=directory)


# -- the window and both rotary bases are exercised --------------------------------------------------------


def test_the_fixture_exercises_the_window_and_both_rotary_bases(factory):
    """The comparisons below would not see a wrong window or a swapped base unless each changed the logits:
    transformers' own logits move with the window and with each base."""
    inputs = oracle_inputs(factory)
    assert int(inputs["attention_mask"].sum(1).max()) > 8 + 1

    def logits(**changes):
        with torch.no_grad():
            return transformers_model(factory, seed=1, **changes)(**inputs).logits

    base = logits()
    config = factory.reference("modernbert").model.config
    for changes in (dict(local_attention=4096),
                    dict(rope_parameters={**config.rope_parameters, "full_attention": {
                        "rope_type": "default", "rope_theta": 300.0}}),
                    dict(rope_parameters={**config.rope_parameters, "sliding_attention": {
                        "rope_type": "default", "rope_theta": 5000.0}})):
        assert (logits(**changes) - base).abs().max() > 1e-3, changes


# -- sequence classification and feature extraction --------------------------------------------------------


@pytest.mark.parametrize("weights", ["safetensors", "bin"])
@pytest.mark.parametrize("variant", VARIANTS)
def test_sequence_classification_equals_transformers(factory, tmp_path, variant, weights):
    model = transformers_model(factory, seed=2, **VARIANTS[variant])
    directory = save(factory, model, tmp_path / variant, weights)
    inputs = oracle_inputs(factory)
    with torch.no_grad():
        logits = model(**inputs).logits
    assert_distinct_rows(logits, min_spread=1e-3)
    pipe = pipeline("text-classification", model=directory)
    ours = pipe.tokenizer(TEXTS, padding=True, truncation=True, return_tensors="pt")
    assert_same_encoding(ours, inputs)
    assert_close(f"logits batched [modernbert {variant}]", pipe.model(**ours).logits, logits)
    batched = np.stack(pipe.forward(pipe.preprocess(TEXTS)))
    assert_close(f"logits engine [modernbert {variant}]", batched, logits)
    for text, row in zip(TEXTS, batched, strict=True):
        assert_close(f"logits one by one [modernbert {variant}]", np.stack(pipe.forward(pipe.preprocess([text]))),
                     row[None], tol=1e-5)
    assert [r["label"] for r in pipe(TEXTS)] == [model.config.id2label[int(i)] for i in logits.argmax(-1)]


@pytest.mark.parametrize("weights", ["safetensors", "bin"])
def test_feature_extraction_equals_transformers(factory, tmp_path, weights):
    model = transformers_model(factory, "AutoModel", seed=3)
    directory = save(factory, model, tmp_path / "base", weights)
    inputs = oracle_inputs(factory)
    real = inputs["attention_mask"].bool()
    with torch.no_grad():
        out = model(**inputs, output_hidden_states=True)
    pipe = pipeline("feature-extraction", model=directory)
    ours = pipe.model(**pipe.tokenizer(TEXTS, padding=True, truncation=True, return_tensors="pt"),
                      output_hidden_states=True)
    assert_close("hidden states [modernbert]", ours.last_hidden_state[real], out.last_hidden_state[real])
    assert len(ours.hidden_states) == len(out.hidden_states) == 3 + 1
    for i, (a, b) in enumerate(zip(ours.hidden_states, out.hidden_states, strict=True)):
        assert_close(f"hidden states layer {i} [modernbert]", a[real], b[real])
    for i, features in enumerate(pipe(TEXTS, truncation=True)):
        assert_close("features [modernbert]", np.asarray(features)[0], out.last_hidden_state[i][real[i]])


# -- tokenizer ----------------------------------------------------------------------------------------------


def test_tokenizer_equals_transformers(factory):
    """A generic tokenizer.json (PreTrainedTokenizerFast) in ModernBERT's layout: ids, offsets, masks, pairs,
    truncation and decoding as transformers 5 gives them."""
    from coulisse.tokenizer import Tokenizer

    ours = Tokenizer.from_dir(factory.checkpoint("modernbert"), model_type="modernbert")
    theirs = factory.hf_tokenizer("modernbert")
    options = dict(padding=True, return_offsets_mapping=True, return_special_tokens_mask=True)
    assert_same_encoding(ours(CORPUS, **options), theirs(CORPUS, **options))
    assert_same_encoding(ours(CORPUS[:9], CORPUS[9:], **options), theirs(CORPUS[:9], CORPUS[9:], **options))
    cut = dict(truncation=True, max_length=12, padding=True)
    assert_same_encoding(ours(CORPUS[:9], CORPUS[9:], **cut), theirs(CORPUS[:9], CORPUS[9:], **cut))
    masked = ["Ce film est [MASK] !", "Un [MASK] film."]
    assert_same_encoding(ours(masked), theirs(masked))
    ids = theirs(CORPUS)["input_ids"]
    assert ours.batch_decode(ids, skip_special_tokens=True) == theirs.batch_decode(ids, skip_special_tokens=True)
    assert ours.batch_decode(ids) == theirs.batch_decode(ids)

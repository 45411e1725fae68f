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
    max_delta,
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


def test_norm_eps_and_hidden_activation_are_read_as_transformers_reads_them(factory, tmp_path):
    """transformers' ModernBertConfig reads `norm_eps` and `hidden_activation` only: a `layer_norm_eps` or
    `hidden_act` in the same config.json (BERT's spellings, which Hub configs may carry) changes nothing there,
    and nothing here. (coulisse read them first: another eps and activation, other logits.)"""
    import transformers

    directory = save(factory, factory.reference("modernbert").model, tmp_path)
    config = json.loads((directory / "config.json").read_text(encoding="utf-8"))
    config.update(layer_norm_eps=0.5, hidden_act="relu")
    (directory / "config.json").write_text(json.dumps(config), encoding="utf-8")
    model = transformers.AutoModelForSequenceClassification.from_pretrained(str(directory)).eval()
    inputs = oracle_inputs(factory)
    with torch.no_grad():
        logits = model(**inputs).logits
    pipe = pipeline("text-classification", model=directory)
    assert (pipe.config.layer_norm_eps, pipe.config.hidden_act) == (model.config.norm_eps,
                                                                    model.config.hidden_activation)
    assert_close("logits [modernbert, BERT's spellings beside its own]", np.stack(pipe.forward(pipe.preprocess(TEXTS))),
                 logits)


def test_a_config_in_the_hubs_older_layout_runs_as_transformers_runs_it(factory, tmp_path):
    """answerdotai/ModernBERT-base's config.json predates transformers 5: no layer_types nor rope_parameters, but
    global_attn_every_n_layers, global_rope_theta and local_rope_theta (and training-only keys). transformers 5
    reads it into the same model; so does coulisse."""
    import transformers

    directory = save(factory, factory.reference("modernbert").model, tmp_path)
    config = json.loads((directory / "config.json").read_text(encoding="utf-8"))
    for key in ("layer_types", "rope_parameters"):
        config.pop(key)
    config.update(global_attn_every_n_layers=2, global_rope_theta=5_000.0, local_rope_theta=300.0,
                  reference_compile=True, repad_logits_with_grad=False, layer_norm_eps=1e-5)
    (directory / "config.json").write_text(json.dumps(config), encoding="utf-8")
    model = transformers.AutoModelForSequenceClassification.from_pretrained(str(directory)).eval()
    assert model.config.layer_types == ["full_attention", "sliding_attention", "full_attention"]
    with torch.no_grad():
        logits = model(**oracle_inputs(factory)).logits
    pipe = pipeline("text-classification", model=directory)
    assert_close("logits [modernbert, older config layout]", np.stack(pipe.forward(pipe.preprocess(TEXTS))), logits)


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


def test_left_padded_hidden_states_equal_transformers(factory):
    """A left-padded batch through `model(**inputs)`: transformers numbers the columns (a text starts past 0) and
    bands its local layers by column; rotary attention reads differences of positions, so the real tokens' states
    agree. (A sequence classifier reads each text's first token there, where transformers reads column 0, a pad:
    docs/dropin.md.)"""
    inputs = factory.hf_tokenizer("modernbert")(TEXTS[:6], padding=True, padding_side="left", return_tensors="pt")
    real = inputs["attention_mask"].bool()
    assert not real[:, 0].all()
    with torch.no_grad():
        hidden = factory.reference("modernbert").base(**inputs).last_hidden_state
    pipe = pipeline("feature-extraction", model=factory.checkpoint("modernbert", base=True))
    assert_close("hidden states, left padding [modernbert]", pipe.model(**inputs).last_hidden_state[real],
                 hidden[real])


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


# -- the other heads (tests/tasks and tests/models/test_heads_multiple_choice.py run the defaults) -----------


def test_masked_lm_without_decoder_bias_equals_transformers(factory, tmp_path):
    """`decoder_bias: false`: the tied decoder has no bias (no `decoder.bias` tensor to read)."""
    model = transformers_model(factory, "AutoModelForMaskedLM", seed=4, decoder_bias=False)
    directory = save(factory, model, tmp_path / "mlm")
    inputs = oracle_inputs(factory, TEXTS[:5])
    real = inputs["attention_mask"].bool()
    with torch.no_grad():
        logits = model(**inputs).logits
    pipe = pipeline("fill-mask", model=directory)
    assert pipe.model.head.decoder.bias is None
    got = pipe.model(**pipe.tokenizer(TEXTS[:5], padding=True, return_tensors="pt")).logits
    assert_close("masked-lm logits [modernbert decoder_bias=false]", got[real], logits[real])


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_multiple_choice_equals_transformers(factory, tmp_path, pooling):
    from coulisse.pipelines import load_checkpoint

    model = transformers_model(factory, "AutoModelForMultipleChoice", seed=5, classifier_pooling=pooling)
    directory = save(factory, model, tmp_path / pooling)
    prompts, choices = ["Le film commence", "La salle est"], ["à vingt heures, après une demi-heure de publicités.",
                                                               "jamais.", "pleine."]
    firsts, seconds = [p for p in prompts for _ in choices], choices * len(prompts)
    flat = factory.hf_tokenizer("modernbert")(firsts, seconds, padding=True, return_tensors="pt")
    inputs = {k: v.view(len(prompts), len(choices), -1) for k, v in flat.items()}
    with torch.no_grad():
        expected = model(**inputs).logits
    checkpoint = load_checkpoint(directory, "multiple-choice")
    ours = checkpoint.tokenizer(firsts, seconds, padding=True, return_tensors="pt")
    assert_same_encoding(ours, flat)
    assert_distinct_rows(expected.T)
    assert_close(f"multiple-choice logits [modernbert {pooling}]",
                 checkpoint.model(**{k: v.view(len(prompts), len(choices), -1) for k, v in ours.items()}).logits,
                 expected)


def test_attentions_and_hidden_states_equal_transformers(factory):
    """What `coulisse explain` shows: every layer's attention probabilities (the local layers' band included) and
    hidden states, against transformers' eager attention, which returns them."""
    import transformers

    directory = factory.checkpoint("modernbert")
    model = transformers.AutoModelForSequenceClassification.from_pretrained(str(directory),
                                                                           attn_implementation="eager").eval()
    inputs = oracle_inputs(factory, TEXTS[:6])
    with torch.no_grad():
        out = model(**inputs, output_attentions=True, output_hidden_states=True)
    pipe = pipeline("text-classification", model=directory)
    ours = pipe.model(**pipe.tokenizer(TEXTS[:6], padding=True, return_tensors="pt"), output_attentions=True,
                      output_hidden_states=True)
    real = inputs["attention_mask"].bool()
    pairs = real[:, None, :, None] & real[:, None, None, :]  # (B, 1, L, L) real query and key
    assert len(ours.attentions) == len(out.attentions) == 3
    for i, (a, b) in enumerate(zip(ours.attentions, out.attentions, strict=True)):
        assert_close(f"attentions layer {i} [modernbert]", a.masked_fill(~pairs, 0), b.masked_fill(~pairs, 0))
    assert (ours.attentions[1][0, :, 0, 5:] == 0).all()  # the local layer: ±4 tokens
    for i, (a, b) in enumerate(zip(ours.hidden_states, out.hidden_states, strict=True)):
        assert_close(f"hidden states layer {i} [modernbert, traced]", a[real], b[real])
    assert_close("logits [modernbert, traced]", ours.logits, out.logits)


# -- what coulisse offers on a model -----------------------------------------------------------------------


def test_int8_finds_every_encoder_linear_and_stays_close(factory):
    from coulisse.models.quantize import Int8Linear

    directory = factory.checkpoint("modernbert")
    fp32 = pipeline("text-classification", model=directory)
    int8 = pipeline("text-classification", model=directory, quantize="int8")
    swapped = [n for n, m in int8.model.base.encoder.named_modules() if isinstance(m, Int8Linear)]
    assert len(swapped) == 4 * 3  # Wqkv, Wo, Wi, Wo per layer
    a, b = (np.stack(p.forward(p.preprocess(TEXTS))) for p in (fp32, int8))
    assert 1e-6 < max_delta("modernbert int8 logits", a, b) <= 0.1
    assert (a.argmax(-1) == b.argmax(-1)).mean() >= 5 / 7


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_explain_names_the_pooling_and_gives_the_pipelines_answer(factory, tmp_path, pooling):
    """`coulisse explain` on a ModernBERT classifier: stage 3 says which vector the head reads (it said "first
    token" for a mean-pooling head) and the answer is the pipeline's."""
    from click.testing import CliRunner

    from coulisse.interfaces.cli import cli

    directory = save(factory, transformers_model(factory, seed=6, classifier_pooling=pooling), tmp_path / pooling)
    result = CliRunner().invoke(cli, ["explain", "-m", str(directory), TEXTS[5]])
    assert result.exit_code == 0, result.output
    best = pipeline("text-classification", model=directory)(TEXTS[5])
    best = best[0] if isinstance(best, list) else best
    reads = "mean of the token vectors" if pooling == "mean" else "first token"
    assert f"3. Head: {reads} -> logits" in result.stdout
    assert f"Answer: {best['label']} ({best['score']:.4f})" in result.stdout


def test_server_predicts_as_transformers(factory):
    pytest.importorskip("fastapi")
    from starlette.testclient import TestClient

    from coulisse.interfaces.server import create_app

    directory = factory.checkpoint("modernbert")
    with TestClient(create_app(pipeline("text-classification", model=directory))) as client:
        r = client.post("/predict", json={"inputs": [[text] for text in TEXTS[:4]]})
        assert r.status_code == 200, r.text
        answers = r.json()
    with torch.no_grad():
        probs = factory.reference("modernbert").model(**oracle_inputs(factory, TEXTS[:4])).logits.softmax(-1)
    for answer, row in zip(answers, probs, strict=True):
        best = answer[0] if isinstance(answer, list) else answer
        assert best["label"] == factory.reference("modernbert").model.config.id2label[int(row.argmax())]
        assert abs(best["score"] - float(row.max())) < 1e-5


def test_a_text_gives_the_same_bits_alone_and_in_any_batch(factory):
    """A short text (inside the local window) batched with long ones: its local layers run as they do when it is
    alone. (They ran through the batch's banded path, ~1e-7 apart: a SPLADE vector changed with its batch.)"""
    pipe = pipeline("feature-extraction", model=factory.checkpoint("modernbert", base=True))
    texts = ["Bof", TEXTS[1], TEXTS[0], TEXTS[5]]
    assert len(pipe.tokenizer("Bof")["input_ids"]) - 1 <= 4 < len(pipe.tokenizer(TEXTS[0])["input_ids"]) - 1
    batched = pipe(texts)
    for text, rows in zip(texts, batched, strict=True):
        assert np.array_equal(np.asarray(pipe(text)), np.asarray(rows)), text


# -- the sentence-transformers layout (gte-modernbert: CLS pooling; nomic modernbert-embed: mean, prompts) ----


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_sentence_embeddings_equal_sentence_transformers(factory, tmp_path, pooling):
    """A SentenceTransformer folder (modules.json, Pooling, Normalize, prompts) that sentence-transformers itself
    wrote over a tiny ModernBERT: coulisse's SentenceEncoder and feature-extraction pipeline give its embeddings."""
    pytest.importorskip("sentence_transformers")
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.models import Normalize, Pooling, Transformer

    from coulisse import SentenceEncoder

    transformer = Transformer(str(factory.checkpoint("modernbert", base=True)), max_seq_length=64)
    prompts = {"query": "search_query: ", "document": "search_document: "}
    model = SentenceTransformer(modules=[transformer, Pooling(32, pooling), Normalize()], prompts=prompts,
                                device="cpu")
    model.save(str(tmp_path / "st"))
    theirs = SentenceTransformer(str(tmp_path / "st"), device="cpu")
    ours = SentenceEncoder(tmp_path / "st")
    expected = theirs.encode(TEXTS)
    assert_distinct_rows(expected)
    assert_close(f"sentence embeddings [modernbert {pooling}]", ours.encode(TEXTS), expected, tol=1e-5)
    assert_close(f"sentence embeddings, query prompt [modernbert {pooling}]", ours.encode_query(TEXTS[:4]),
                 theirs.encode_query(TEXTS[:4]), tol=1e-5)
    pipe = pipeline("feature-extraction", model=tmp_path / "st", pooling="auto")
    assert_close(f"feature-extraction pooling=auto [modernbert {pooling}]", np.stack(pipe(TEXTS)), expected, tol=1e-5)

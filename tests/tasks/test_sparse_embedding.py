"""`pipeline("sparse-embedding")` equals sentence-transformers 6's `SparseEncoder` (SPLADE): the same
vocabulary-sized weights within 1e-4, for the five masked-LM families with their real tokenizers, with the
folder's pooling strategy and activation, `max_seq_length` and prompts; entries heaviest first with their
tokens; `top_k`; sparse tensors; refusals of what coulisse does not run.

Each SparseEncoder folder is written by sentence-transformers itself from a transformers masked-LM
checkpoint (tests/task_factory.py). The weights are log(1 + ReLU(logit)) pooled by max (or sum): ReLU, log1p
and max are 1-Lipschitz, so a weight differs from the oracle's by at most the logits' difference, which the
fill-mask tests bound by 1e-4 (the sum pools at most a sequence's 60 tokens: 60 x that bound).
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from factory import ARCHS, max_delta
from task_factory import oracle, sparse_encoder_folder

from coulisse import pipeline
from coulisse.errors import InputError, ModelLoadError, UnsupportedModelError

TEXTS = ["Le chat dort sur le canapé.", "Je déteste tellement ça !", "« Amélie » reste un chef-d'œuvre 😍",
         "Un film long, lent, bavard : on s'ennuie ferme. " * 6, "Bof."]


def dense(results) -> np.ndarray:
    return np.stack([r.to_dense().numpy() for r in results])


@pytest.fixture(scope="module", params=[*ARCHS, "bert-legacy"])
def folder(request, task_factory, tmp_path_factory):
    return sparse_encoder_folder(task_factory, request.param.removesuffix("-legacy"),
                                 tmp_path_factory.mktemp("splade"), legacy=request.param.endswith("-legacy"))


def test_weights_equal_sentence_transformers(folder):
    directory, encoder = folder
    pipe = pipeline("sparse-embedding", model=directory)
    theirs = oracle(encoder, TEXTS)
    ours = dense(pipe(TEXTS, return_tensors=True))
    assert ours.shape == theirs.shape == (len(TEXTS), pipe.config.vocab_size)
    assert max_delta("SPLADE weights vs sentence-transformers", ours, theirs) <= 1e-4
    assert (theirs > 0.5).sum() > 100  # a random MLM head gives many heavy entries: the comparison has work
    # one text alone gives the same row as in the batch (no padding, no neighbour)
    assert np.array_equal(pipe(TEXTS[1], return_tensors=True).to_dense().numpy(), ours[1])


def test_entries_are_the_nonzero_weights_heaviest_first_with_their_tokens(folder):
    directory, encoder = folder
    pipe = pipeline("sparse-embedding", model=directory)
    weights = pipe(TEXTS[0], return_tensors=True).to_dense().numpy()
    entries = pipe(TEXTS[0])
    assert [e["index"] for e in entries] == sorted(np.flatnonzero(weights).tolist(),
                                                   key=lambda i: (-weights[i], i))
    assert [e["value"] for e in entries] == [float(weights[e["index"]]) for e in entries]
    assert [e["token"] for e in entries[:20]] == encoder.tokenizer.convert_ids_to_tokens(
        [e["index"] for e in entries[:20]])
    top = pipe(TEXTS[0], top_k=5)
    assert top == entries[:5]
    kept = pipe([TEXTS[0]], top_k=5, return_tensors=True)[0]
    assert kept.shape == (pipe.config.vocab_size,) and kept.is_sparse
    assert sorted(kept.coalesce().indices()[0].tolist()) == sorted(e["index"] for e in top)
    # sentence-transformers' own decode names the same tokens, heaviest first
    decoded = encoder.decode(encoder.encode(TEXTS[0]), top_k=5)
    assert [token for token, _ in decoded] == [e["token"] for e in top]


@pytest.mark.parametrize("arch", ["bert", "camembert"])
@pytest.mark.parametrize("strategy,activation", [("sum", "relu"), ("max", "log1p_relu"), ("sum", "log1p_relu")])
def test_the_folders_pooling_strategy_and_activation(task_factory, tmp_path, arch, strategy, activation):
    directory, encoder = sparse_encoder_folder(task_factory, arch, tmp_path, strategy, activation)
    ours = dense(pipeline("sparse-embedding", model=directory)(TEXTS, return_tensors=True))
    bound = 60 * 1e-4 if strategy == "sum" else 1e-4
    assert max_delta(f"SPLADE {strategy}/{activation} vs sentence-transformers", ours, oracle(encoder, TEXTS)) \
        <= bound


def test_a_bare_masked_lm_folder_pools_as_splade_v2(task_factory, tmp_path):
    """Without modules.json (SPLADE checkpoints as naver published them): max of log(1 + ReLU), TEI's."""
    directory, encoder = sparse_encoder_folder(task_factory, "bert", tmp_path)
    bare = task_factory.checkpoint("bert", "masked-lm")
    assert not (bare / "modules.json").exists()
    ours = dense(pipeline("sparse-embedding", model=bare)(TEXTS, return_tensors=True))
    assert max_delta("SPLADE weights vs sentence-transformers", ours, oracle(encoder, TEXTS)) <= 1e-4


def test_max_seq_length_and_prompts_as_sentence_transformers(task_factory, tmp_path):
    directory, encoder = sparse_encoder_folder(
        task_factory, "camembert", tmp_path, prompts={"query": "requête : ", "document": ""},
        default_prompt_name="query")
    settings = json.loads((directory / "sentence_bert_config.json").read_text())
    (directory / "sentence_bert_config.json").write_text(json.dumps({**settings, "max_seq_length": 12}))
    encoder.max_seq_length = 12
    pipe = pipeline("sparse-embedding", model=directory)
    long_text = TEXTS[3]
    assert len(pipe.tokenizer.encode_batch([long_text], truncation=False)[0].ids) > 12
    for kwargs in ({}, {"prompt_name": "document"}, {"prompt": "passage : "}):
        ours = dense(pipe(TEXTS, return_tensors=True, **kwargs))
        assert max_delta("SPLADE weights vs sentence-transformers", ours, oracle(encoder, TEXTS, **kwargs)) <= 1e-4
    # the default prompt changes the weights: the comparison above did test it
    assert not np.allclose(dense(pipe(TEXTS, return_tensors=True)),
                           dense(pipe(TEXTS, return_tensors=True, prompt_name="document")), atol=1e-2)
    with pytest.raises(InputError, match="prompt_name='passage' is not a prompt"):
        pipe("Bof.", prompt_name="passage")


def test_refusals(task_factory, tmp_path):
    directory, _ = sparse_encoder_folder(task_factory, "bert", tmp_path)
    # feature extraction's pooling="auto" names the task that reads this folder
    with pytest.raises(UnsupportedModelError, match="sparse-embedding"):
        pipeline("feature-extraction", model=directory, pooling="auto")("Bof.")
    pooling = directory / "1_SpladePooling" / "config.json"
    pooling.write_text("[1]")
    with pytest.raises(ModelLoadError, match="not an object"):
        pipeline("sparse-embedding", model=directory)
    pooling.write_text(json.dumps({"pooling_strategy": "mean", "activation_function": "relu"}))
    with pytest.raises(UnsupportedModelError, match="pooling_strategy='mean'"):
        pipeline("sparse-embedding", model=directory)
    other = tmp_path / "static"
    shutil.copytree(directory, other)
    modules = json.loads((other / "modules.json").read_text())
    modules[1]["type"] = "sentence_transformers.sparse_encoder.modules.SparseStaticEmbedding"
    (other / "modules.json").write_text(json.dumps(modules))
    with pytest.raises(UnsupportedModelError, match="SparseStaticEmbedding"):
        pipeline("sparse-embedding", model=other)
    modules[1]["type"] = "sentence_transformers.models.Pooling"  # a dense model's folder
    (other / "modules.json").write_text(json.dumps(modules))
    with pytest.raises(UnsupportedModelError, match="lists a 'Pooling' module"):
        pipeline("sparse-embedding", model=other)
    # a base model has no masked-LM head to pool
    with pytest.raises(Exception, match="no splade head"):
        pipeline("sparse-embedding", model=task_factory.checkpoint("bert", "base"))
    with pytest.raises(InputError, match="top_k"):
        pipeline("sparse-embedding", model=task_factory.checkpoint("bert", "masked-lm"), top_k=0)


def test_long_batches_pool_each_sequence_alone(task_factory, tmp_path):
    """Sequences are pooled in chunks of whole sequences (models.heads.SpladeHead.CHUNK rows): a batch that
    spans several chunks gives each text the weights it has alone."""
    directory, encoder = sparse_encoder_folder(task_factory, "distilbert", tmp_path)
    pipe = pipeline("sparse-embedding", model=directory, max_batch_tokens=4096)
    texts = [TEXTS[i % len(TEXTS)] * (1 + i % 3) for i in range(40)]
    together = dense(pipe(texts, return_tensors=True))
    assert sum(len(i.ids) for i in pipe.preprocess(texts).items) > 2 * pipe.model.head.CHUNK
    alone = np.stack([pipe(t, return_tensors=True).to_dense().numpy() for t in texts[:6]])
    assert np.allclose(together[:6], alone, atol=1e-5)
    assert max_delta("SPLADE weights vs sentence-transformers", together, oracle(encoder, texts)) <= 1e-4
    assert torch.is_tensor(pipe(texts[0], return_tensors=True))


def test_save_pretrained_writes_the_masked_lm_checkpoint(folder, tmp_path):
    """transformers loads the saved folder as `*ForMaskedLM`; SPLADE over it gives the same weights."""
    import transformers

    directory, _ = folder
    pipe = pipeline("sparse-embedding", model=directory)
    saved = pipe.save_pretrained(tmp_path / "saved")
    assert transformers.AutoModelForMaskedLM.from_pretrained(saved).__class__.__name__.endswith("ForMaskedLM")
    again = dense(pipeline("sparse-embedding", model=saved)(TEXTS, return_tensors=True))
    assert np.abs(again - dense(pipe(TEXTS, return_tensors=True))).max() <= 1e-6


def test_an_int8_pipeline_says_it_saves_the_fp32_weights(folder, tmp_path, caplog):
    """As every other task's int8 pipeline says it (the SPLADE one saved without a word)."""
    import logging

    directory, _ = folder
    pipe = pipeline("sparse-embedding", model=directory, quantize="int8")
    with caplog.at_level(logging.WARNING, logger="coulisse"):
        pipe.save_pretrained(tmp_path / "saved")
    assert any("saving the fp32 weights they were quantized from" in r.getMessage() for r in caplog.records)

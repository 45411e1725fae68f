"""Prompts on the embedding routes, as text-embeddings-inference applies them (core/src/tokenization.rs,
router/src/lib.rs): a request's `prompt_name`, else the launcher's --default-prompt-name / --default-prompt,
else none; config_sentence_transformers.json's `default_prompt_name` is not read."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

pytest.importorskip("fastapi")
from click.testing import CliRunner  # noqa: E402
from starlette.testclient import TestClient  # noqa: E402
from test_server_routes import float32_json  # noqa: E402

import coulisse  # noqa: E402
from coulisse.errors import InputError  # noqa: E402
from coulisse.interfaces.server import ServerSettings, create_app  # noqa: E402

PROMPTS = {"query": "query: ", "passage": "passage: "}
TEXT = "Le chat dort sur le canapé."


@pytest.fixture(scope="module")
def folder(minilm_dir, tmp_path_factory):
    copy = tmp_path_factory.mktemp("prompted") / "model"
    shutil.copytree(minilm_dir, copy)
    (copy / "config_sentence_transformers.json").write_text(
        json.dumps({"prompts": PROMPTS, "default_prompt_name": "passage"}), encoding="utf-8")
    return copy


@pytest.fixture(scope="module")
def pipe(folder):
    return coulisse.pipeline("feature-extraction", model=str(folder), pooling="auto", normalize=True)


def embed(pipe, settings: ServerSettings, body: dict) -> np.ndarray:
    with TestClient(create_app(pipe, settings)) as c:
        r = c.post("/embed", json=body)
        assert r.status_code == 200, r.text
        return np.asarray(r.json())


def test_the_files_default_prompt_name_is_not_applied(pipe):
    served = embed(pipe, ServerSettings(), {"inputs": [TEXT]})
    np.testing.assert_allclose(served, pipe([TEXT], prompt=""), atol=1e-5)
    assert np.abs(served - np.asarray(pipe([TEXT]))).max() > 1e-3  # the pipeline applies "passage: "
    with TestClient(create_app(pipe)) as c:
        tokens = c.post("/tokenize", json={"inputs": TEXT}).json()[0]
    assert tokens[1]["text"] == "Le"


@pytest.mark.parametrize("settings", [ServerSettings(default_prompt_name="query"),
                                      ServerSettings(default_prompt="query: ")])
def test_the_launchers_default_prompt(pipe, settings):
    served = embed(pipe, settings, {"inputs": [TEXT]})
    np.testing.assert_allclose(served, pipe([TEXT], prompt_name="query"), atol=1e-5)
    named = embed(pipe, settings, {"inputs": [TEXT], "prompt_name": "passage"})  # the request's name wins
    np.testing.assert_allclose(named, pipe([TEXT], prompt_name="passage"), atol=1e-5)


def test_a_default_prompt_name_the_folder_lacks_is_refused_at_start(pipe, tmp_path):
    with pytest.raises(InputError, match="--default-prompt-name 'title' is not a prompt.*'passage', 'query'"):
        create_app(pipe, ServerSettings(default_prompt_name="title"))
    from coulisse.interfaces.server.embedding import Prompts

    with pytest.raises(InputError, match="has no config_sentence_transformers.json prompts.; drop it, or give the "
                                         "text itself with --default-prompt") as none:
        Prompts(tmp_path, "query")  # a folder without prompts: there are none to pass
    assert "one of those" not in str(none.value)


def test_both_default_prompts_are_refused_before_loading(monkeypatch, tmp_path):
    from coulisse.interfaces.cli import cli

    for name in ("COULISSE_DEFAULT_PROMPT", "COULISSE_DEFAULT_PROMPT_NAME", "DEFAULT_PROMPT_NAME", "DEFAULT_PROMPT"):
        monkeypatch.delenv(name, raising=False)
    result = CliRunner().invoke(cli, ["serve", "-m", str(tmp_path / "no-such-model"), "--port", "0",
                                      "--default-prompt", "query: "], env={"DEFAULT_PROMPT_NAME": "query"})
    assert result.exit_code == 2 and "--default-prompt-name and --default-prompt" in result.output, result.output
    assert "no-such-model" not in result.output


@pytest.mark.parametrize(("settings", "body"), [(ServerSettings(), {"prompt_name": "query"}),
                                                (ServerSettings(default_prompt="query: "), {})])
def test_token_ids_with_a_prompt_are_decoded_prompted_and_encoded(pipe, folder, settings, body):
    """TEI (tokenize_input, EncodingInput::Ids): decode the ids skipping special tokens, put the prompt before
    the text, encode it with special tokens. Oracle: transformers' decode, then the pipeline on that text."""
    transformers = pytest.importorskip("transformers")
    reference = transformers.AutoTokenizer.from_pretrained(str(folder))
    ids = reference(TEXT)["input_ids"]
    served = embed(pipe, settings, {"inputs": [ids, TEXT], **body})
    decoded = reference.decode(ids, skip_special_tokens=True)
    np.testing.assert_allclose(served, pipe(["query: " + decoded, "query: " + TEXT], prompt=""), atol=1e-5)
    plain = embed(pipe, ServerSettings(), {"inputs": [ids]})  # no prompt: the ids as given
    np.testing.assert_allclose(plain, pipe([TEXT], prompt=""), atol=1e-5)
    assert np.abs(served[0] - plain[0]).max() > 1e-3


# -- classifiers: TEI's predict encodes with the default prompt too (core/src/infer.rs passes no prompt_name, so
# the tokenizer worker takes the default one); tokenize_input puts it before a single text and refuses a pair.


@pytest.fixture(scope="module")
def classifier_folder(tf_camembert_dir, tmp_path_factory):
    copy = tmp_path_factory.mktemp("prompted-classifier") / "model"
    shutil.copytree(tf_camembert_dir, copy)
    (copy / "config_sentence_transformers.json").write_text(json.dumps({"prompts": PROMPTS}), encoding="utf-8")
    return copy


@pytest.fixture(scope="module")
def classifier(classifier_folder):
    return coulisse.pipeline("sentiment-analysis", model=str(classifier_folder))


@pytest.mark.parametrize("settings", [ServerSettings(default_prompt_name="query"),
                                      ServerSettings(default_prompt="query: ")])
def test_predict_puts_the_default_prompt_before_a_single_text(classifier, settings):
    texts = [TEXT, "Bof."]
    with TestClient(create_app(classifier, settings)) as c:
        one = c.post("/predict", json={"inputs": TEXT, "raw_scores": True})
        batch = c.post("/predict", json={"inputs": [[t] for t in texts]})
        inference_api = c.post("/", json={"inputs": TEXT, "parameters": {"top_k": 1}})
    assert one.status_code == batch.status_code == inference_api.status_code == 200, (one.text, batch.text)
    one, batch, inference_api = (float32_json(r) for r in (one, batch, inference_api))  # the same float32 bits
    assert one == classifier("query: " + TEXT, top_k=None, function_to_apply="none")
    assert batch == classifier(["query: " + t for t in texts], top_k=None)
    assert inference_api == [classifier("query: " + TEXT, top_k=1)]
    assert one != classifier(TEXT, top_k=None, function_to_apply="none")  # the prompt changes the scores


def test_a_pair_with_a_default_prompt_is_refused_as_tei_refuses_it(factory):
    """TEI: "`prompt_name` cannot be set with dual inputs", a validation error, for /predict's pairs and so for
    every /rerank (each text is a pair with the query)."""
    reranker = coulisse.pipeline("text-classification", model=str(factory.checkpoint("bert", num_labels=1)))
    with TestClient(create_app(reranker, ServerSettings(default_prompt="query: "))) as c:
        pair = c.post("/predict", json={"inputs": [TEXT, "Bof."]})
        rerank = c.post("/rerank", json={"query": TEXT, "texts": ["Bof."]})
        single = c.post("/predict", json={"inputs": TEXT})
    for r in (pair, rerank):
        assert r.status_code == 422 and r.json()["error_type"] == "Validation", r.text
        assert "--default-prompt" in r.json()["error"]
    assert single.status_code == 200


def test_a_prompt_left_out_of_the_pooling_and_the_folders_truncate_dim(minilm_dir, tmp_path):
    """A Pooling with include_prompt false pools past the prompt's tokens (the server refused the prompt before
    audit 41) and config_sentence_transformers.json's truncate_dim cuts the vectors: /embed and /v1/embeddings
    give SentenceTransformer.encode(..., normalize_embeddings=True)'s 48 dimensions; `dimensions` keeps fewer."""
    from sentence_transformers import SentenceTransformer

    copy = tmp_path / "model"
    shutil.copytree(minilm_dir, copy)
    (copy / "config_sentence_transformers.json").write_text(json.dumps({"prompts": PROMPTS, "truncate_dim": 48}),
                                                            encoding="utf-8")
    pooling = json.loads((copy / "1_Pooling" / "config.json").read_text()) | {"include_prompt": False}
    (copy / "1_Pooling" / "config.json").write_text(json.dumps(pooling), encoding="utf-8")
    st = SentenceTransformer(str(copy), device="cpu")
    texts = [TEXT, "Bof."]
    served = coulisse.pipeline("feature-extraction", model=str(copy), pooling="auto", normalize=True)
    with TestClient(create_app(served)) as c:
        for prompt_name in ("query", None):
            body = {"inputs": texts} | ({"prompt_name": prompt_name} if prompt_name else {})
            r = c.post("/embed", json=body)
            assert r.status_code == 200, r.text
            expected = st.encode(texts, prompt_name=prompt_name, normalize_embeddings=True)
            assert np.asarray(r.json()).shape == expected.shape == (2, 48)
            np.testing.assert_allclose(np.asarray(r.json()), expected, atol=1e-5)
        r = c.post("/v1/embeddings", json={"input": texts})
        assert r.status_code == 200, r.text
        vectors = np.asarray([d["embedding"] for d in r.json()["data"]])
        np.testing.assert_allclose(vectors, st.encode(texts, normalize_embeddings=True), atol=1e-5)
        r = c.post("/embed", json={"inputs": texts, "dimensions": 16})
        np.testing.assert_allclose(np.asarray(r.json()), st.encode(texts, truncate_dim=16, normalize_embeddings=True),
                                   atol=1e-5)
        r = c.post("/embed", json={"inputs": texts, "dimensions": 64})
        assert r.status_code == 422 and "48 dimensions" in r.text

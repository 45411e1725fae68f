"""TEI's bound on an input's characters before it is tokenized (core/src/tokenization.rs, `tokenize_input`:
`max_input_length * MAX_CHAR_MULTIPLIER`, 250): with truncation off, an input longer than that is a 422
`Validation` on every route that encodes text (/embed, /embed_all, /similarity, /v1/embeddings, /predict,
/rerank, `POST /`), as on /tokenize; a pair counts both texts, a token id one character.

A single WordPiece word longer than 100 characters is one [UNK] token, so such an input fits the model's
tokens: only the character bound refuses it, as TEI does."""

from __future__ import annotations

import pytest

pytest.importorskip("fastapi")
from starlette.testclient import TestClient  # noqa: E402

import coulisse  # noqa: E402
from coulisse.interfaces.server import ServerSettings, create_app  # noqa: E402

MULTIPLIER = 250  # TEI's MAX_CHAR_MULTIPLIER


@pytest.fixture(scope="module")
def embedder(minilm_dir):
    pipe = coulisse.pipeline("feature-extraction", model=str(minilm_dir))
    with TestClient(create_app(pipe)) as c:
        yield c


@pytest.fixture(scope="module")
def reranker(factory):
    pipe = coulisse.pipeline("text-classification", model=str(factory.checkpoint("bert", num_labels=1)))
    with TestClient(create_app(pipe)) as c:
        yield c


def limit_of(client) -> int:
    return client.get("/info").json()["max_input_length"] * MULTIPLIER


def assert_refused(r, limit: int, given: int, name: str = "`inputs`") -> None:
    assert r.status_code == 422, r.text[:300]
    assert r.json()["error_type"] == "Validation"
    assert f"{name} must have less than {limit} characters. Given: {given}" in r.json()["error"]


def embedding_bodies(text):
    return {
        "/embed": {"inputs": text, "truncate": False},
        "/embed_all": {"inputs": [text], "truncate": False},
        "/similarity": {"inputs": {"source_sentence": "ok", "sentences": [text]}, "parameters": {"truncate": False}},
        "/": {"inputs": text, "truncate": False},
    }


def test_embedding_routes_refuse_more_characters_than_tei_takes(embedder):
    limit = limit_of(embedder)
    word = "a" * (limit + 1)
    for route, body in embedding_bodies(word).items():
        r = embedder.post(route, json=body)
        assert_refused(r, limit, limit + 1, "`inputs[1]`" if route == "/similarity" else "`inputs`")
        # The way out said in the route's own body: /similarity's truncate is one of its parameters.
        hint = 'Pass "parameters": {"truncate": true}' if route == "/similarity" else 'Pass "truncate": true'
        assert hint in r.json()["error"], (route, r.json()["error"])
    for route, body in embedding_bodies("a" * limit).items():  # TEI refuses only past the bound
        assert embedder.post(route, json=body).status_code == 200, route
    assert embedder.post("/embed", json={"inputs": word}).status_code == 200  # truncated: no bound, as TEI's


def test_openai_route_refuses_it_when_the_server_does_not_truncate(minilm_dir):
    pipe = coulisse.pipeline("feature-extraction", model=str(minilm_dir))
    with TestClient(create_app(pipe, ServerSettings(auto_truncate=False))) as c:
        limit = limit_of(c)
        r = c.post("/v1/embeddings", json={"input": ["ok", "a" * (limit + 1)]})
        assert r.status_code == 422, r.text[:300]
        assert f"`inputs[1]` must have less than {limit} characters" in r.json()["error"]["message"]
        # OpenAI's body has no truncate field (one sent is a 422): the message names the server's option instead.
        tokens = c.post("/v1/embeddings", json={"input": "chat " * (c.get("/info").json()["max_input_length"] + 8)})
        for message in (r.json()["error"]["message"], tokens.json()["error"]["message"]):
            assert "--auto-truncate" in message and '"truncate": true' not in message, message
        assert tokens.status_code == 422 and "tokens. Given:" in tokens.json()["error"]["message"]


def test_token_ids_count_one_character_each(embedder):
    limit = limit_of(embedder)
    assert_refused(embedder.post("/embed", json={"inputs": [101] * (limit + 1), "truncate": False}), limit, limit + 1)


def test_classifier_routes_count_both_texts_of_a_pair(reranker):
    limit = limit_of(reranker)
    half = "a" * (limit // 2)
    assert_refused(reranker.post("/predict", json={"inputs": [half, half + "b"], "truncate": False}), limit, limit + 1)
    assert reranker.post("/predict", json={"inputs": [half, half], "truncate": False}).status_code == 200
    assert_refused(reranker.post("/predict", json={"inputs": "a" * (limit + 1), "truncate": False}), limit, limit + 1)
    r = reranker.post("/rerank", json={"query": half, "texts": ["ok", half + "b"], "truncate": False})
    assert_refused(r, limit, limit + 1, "`inputs[1]`")

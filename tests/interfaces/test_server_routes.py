"""`coulisse serve` routes: TEI's shapes, and the same numbers as the pipeline called in-process."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("fastapi")
from starlette.testclient import TestClient  # noqa: E402

import coulisse  # noqa: E402
from coulisse.interfaces.server import ServerSettings, create_app  # noqa: E402

TEXTS = ["J'ai adoré ce film, les acteurs sont formidables.", "Quel ennui...", "Bof.",
         "Le scénario est prévisible, mais « Amélie » reste un chef-d'œuvre 😍"]


def batch(texts):
    """TEI's batch form: one [text] list per input (a flat ["a", "b"] is one text pair)."""
    return [[t] for t in texts]


@pytest.fixture(scope="module")
def client(classifier):
    with TestClient(create_app(classifier, ServerSettings(model_id="tiny-camembert"))) as c:
        yield c


@pytest.fixture(scope="module")
def embedder(minilm_dir):
    return coulisse.pipeline("feature-extraction", model=str(minilm_dir))


def float32_json(r):
    """The answer's numbers read as float32, what the server writes (float32's shortest text): equal to the
    pipeline's floats (float32 values) bit for bit."""
    return json.loads(r.content, parse_float=np.float32)


def assert_sorted_labels(result, labels):
    assert [set(r) for r in result] == [{"label", "score"}] * len(labels)
    assert sorted(r["label"] for r in result) == sorted(labels)
    scores = [r["score"] for r in result]
    assert scores == sorted(scores, reverse=True)


def assert_same_scores(served, expected, tol=1e-6):
    """Across different batch compositions packed matmuls may differ in the last bit (~1e-7)."""
    assert [r["label"] for r in served] == [r["label"] for r in expected]
    assert [r["score"] for r in served] == pytest.approx([r["score"] for r in expected], abs=tol)


def test_predict_single_is_a_sorted_list(client):
    r = client.post("/predict", json={"inputs": TEXTS[0]})
    assert r.status_code == 200, r.text
    assert_sorted_labels(r.json(), ["NEGATIVE", "POSITIVE"])
    assert r.headers["x-request-id"] and int(r.headers["x-compute-tokens"]) > 2


def test_predict_batch_is_a_list_of_lists(client):
    r = client.post("/predict", json={"inputs": batch(TEXTS)})
    assert r.status_code == 200, r.text
    body = r.json()
    assert len(body) == len(TEXTS)
    for result in body:
        assert_sorted_labels(result, ["NEGATIVE", "POSITIVE"])


def test_predict_equals_the_pipeline(client, classifier):
    served = float32_json(client.post("/predict", json={"inputs": batch(TEXTS)}))
    assert served == classifier(TEXTS, top_k=None)  # same batch, same bits
    assert float32_json(client.post("/predict", json={"inputs": TEXTS[1]})) == classifier(TEXTS[1], top_k=None)


def test_raw_scores_are_the_logits(client, classifier):
    served = client.post("/predict", json={"inputs": batch(TEXTS[:2]), "raw_scores": True}).json()
    logits = classifier.forward(classifier.preprocess(TEXTS[:2]))
    for result, row in zip(served, logits, strict=True):
        by_label = {r["label"]: r["score"] for r in result}
        assert by_label == pytest.approx({classifier.config.id2label[i]: float(v) for i, v in enumerate(row)},
                                         abs=1e-6)


def test_tei_batch_form_with_pairs(client, classifier):
    """TEI's [[text], [text, text_pair]] form: a pair is tokenized as one sequence pair."""
    served = client.post("/predict", json={"inputs": [[TEXTS[0]], [TEXTS[1], TEXTS[2]]]}).json()
    assert_same_scores(served[0], classifier(TEXTS[0], top_k=None))
    assert_same_scores(served[1], classifier({"text": TEXTS[1], "text_pair": TEXTS[2]}, top_k=None))


def test_truncate_flag(client, classifier):
    long = "Un film long, très long. " * 300
    assert float32_json(client.post("/predict", json={"inputs": long})) == classifier(long, top_k=None)
    r = client.post("/predict", json={"inputs": long, "truncate": False})
    assert r.status_code == 422 and r.json()["error_type"] == "Validation"  # TEI >= 1.9.0's status
    assert "512" in r.json()["error"]


def test_health_info_metrics(client):
    assert client.get("/health").status_code == 200
    info = client.get("/info").json()
    assert info["model_id"] == "tiny-camembert"
    assert info["labels"] == ["NEGATIVE", "POSITIVE"]
    assert info["model_type"] == {"classifier": {"id2label": {"0": "NEGATIVE", "1": "POSITIVE"},
                                                 "label2id": {"NEGATIVE": 0, "POSITIVE": 1}}}
    assert info["max_input_length"] == 512 and info["max_client_batch_size"] == 32
    client.post("/predict", json={"inputs": "x"})
    client.post("/predict", json={"inputs": [""]})  # an empty text: TEI's 400 `Empty`
    text = client.get("/metrics").text
    for name in ("te_request_count", "te_request_duration_bucket", "te_queue_size",
                 "te_batch_next_size_bucket", "te_batch_next_tokens_bucket", "te_request_failure",
                 "te_batch_inference_duration_count"):
        assert name in text, name
    assert 'te_request_failure{err="validation"}' in text  # TEI's label for an empty text
    assert 'te_request_count{method="single"}' in text  # test_server_metrics.py: what each counts


def test_info_names_the_commit_of_a_model_from_the_hub_cache(client, tf_camembert_dir, tmp_path, monkeypatch):
    """TEI's `model_sha`: the revision's commit, for a model read from a Hugging Face cache snapshot; none for a
    folder of one's own."""
    from factory import COMMIT, make_hf_cache

    assert client.get("/info").json()["model_sha"] is None
    make_hf_cache(tmp_path / "hub", tf_camembert_dir)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    pipe = coulisse.pipeline("text-classification", model="tblard/tf-allocine")
    with TestClient(create_app(pipe)) as cached:
        assert cached.get("/info").json()["model_sha"] == COMMIT


def test_openapi_and_docs(client):
    schema = client.get("/openapi.json").json()
    assert "/predict" in schema["paths"] and "/embed" not in schema["paths"]  # the served task only
    inputs = schema["components"]["schemas"]["PredictRequest"]["properties"]["inputs"]
    assert any(f.get("maxItems") == 32 for f in inputs["anyOf"])
    assert client.get("/api-doc/openapi.json").json() == schema
    docs = client.get("/docs").text
    assert "swagger" in docs.lower() and '<html lang="en">' in docs  # a screen reader's language (audit 45)


def test_embed_is_pooled_and_normalized(embedder):
    with TestClient(create_app(embedder)) as c:
        r = c.post("/embed", json={"inputs": TEXTS[:3]})
        assert r.status_code == 200, r.text
        vectors = np.array(r.json())
        raw = np.array(c.post("/embed", json={"inputs": TEXTS[0], "normalize": False}).json())
        assert c.get("/info").json()["model_type"] == {"embedding": {"pooling": "mean"}}
        assert c.post("/predict", json={"inputs": "x"}).status_code == 424
    hidden = [np.asarray(embedder(t)[0]).mean(axis=0) for t in TEXTS[:3]]
    expected = np.stack([h / np.linalg.norm(h) for h in hidden])
    assert vectors.shape == (3, 384)
    np.testing.assert_allclose(vectors, expected, atol=1e-5)
    np.testing.assert_allclose(raw, hidden[0][None], atol=1e-5)


def test_embed_matches_sentence_transformers(embedder, minilm_dir):
    """Including a text past sentence-transformers' max_seq_length (256), cut there as TEI cuts it."""
    st = pytest.importorskip("sentence_transformers")
    texts = [*TEXTS, "Une critique très longue, qui n'en finit pas. " * 60]
    reference = st.SentenceTransformer(str(minilm_dir), device="cpu").encode(texts, normalize_embeddings=True)
    with TestClient(create_app(embedder)) as c:
        served = np.array(c.post("/embed", json={"inputs": texts}).json())
        assert c.get("/info").json()["max_input_length"] == 256
    np.testing.assert_allclose(served, reference, atol=1e-5)


@pytest.mark.parametrize("inputs, where", [([[]], ": inputs[0] is an empty list of token ids"),
                                           ([[101, 102], []], ": inputs[1] is an empty list of token ids"),
                                           ([], ""), ([""], ""), ("", "")])
def test_an_empty_id_list_or_text_is_teis_400_empty_on_every_embedding_route(embedder, inputs, where):
    """TEI parses `[[]]` as a batch of one empty id list (its untagged `Input`/`InputType`) and refuses it before
    tokenizing: 400 `Empty` (core/src/tokenization.rs `encode`), as it refuses `[]` and `[""]`; not a 422."""
    with TestClient(create_app(embedder)) as c:
        for route, field in (("/embed", "inputs"), ("/embed_all", "inputs"), ("/", "inputs"),
                             ("/v1/embeddings", "input")):
            r = c.post(route, json={field: inputs})
            assert r.status_code == 400, (route, r.text)
            body = r.json()
            message, error_type = (body["error"]["message"], body["error"]["type"]) if route.startswith("/v1") else \
                (body["error"], body["error_type"])
            assert error_type == "Empty" and message == f"`{field}` cannot be empty{where.replace('inputs', field)}"


def test_embed_on_a_classifier_is_teis_424(client):
    r = client.post("/embed", json={"inputs": "x"})
    assert r.status_code == 424
    assert r.json()["error_type"] == "Backend" and "not an embedding model" in r.json()["error"]


def served_and_pipeline(directory, texts, normalize):
    served_pipe = coulisse.pipeline("feature-extraction", model=str(directory))
    with TestClient(create_app(served_pipe)) as c:
        served = np.array(c.post("/embed", json={"inputs": texts, "normalize": normalize}).json())
    expected = np.array(coulisse.pipeline("feature-extraction", model=str(directory), pooling="auto",
                                          normalize=normalize)(texts))
    return served, expected


@pytest.mark.parametrize("normalize", [True, False])
def test_embed_equals_the_pipeline_on_minilm(minilm_dir, normalize):
    """One source of truth for pooling: the server calls the pipeline's stages, so /embed is
    `pipeline("feature-extraction", pooling="auto", normalize=...)`, long inputs cut at 256 tokens too."""
    texts = [*TEXTS, "Une critique très longue, qui n'en finit pas. " * 60]
    served, expected = served_and_pipeline(minilm_dir, texts, normalize)
    np.testing.assert_allclose(served, expected, atol=1e-6)
    assert (np.abs(np.linalg.norm(served, axis=1) - 1) < 1e-5).all() == normalize


def test_embed_follows_normalize_module_and_lowercasing(tmp_path, tf_camembert_dir):
    """A sentence-transformers folder (a cased CamemBERT) with CLS pooling, a Normalize module and
    do_lower_case: /embed lowercases and pools as the pipeline does (the server used to ignore both)."""
    import json
    import shutil

    folder = tmp_path / "st"
    shutil.copytree(tf_camembert_dir, folder)
    (folder / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}]))
    (folder / "1_Pooling").mkdir(exist_ok=True)
    (folder / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode": "cls"}))
    (folder / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 64, "do_lower_case": True}))
    texts = ["BONJOUR À TOUS", "bonjour à tous", "Un Film MAGNIFIQUE. " * 20]
    for normalize in (True, False):
        served, expected = served_and_pipeline(folder, texts, normalize)
        np.testing.assert_allclose(served, expected, atol=1e-6)
        np.testing.assert_allclose(served[0], served[1], atol=1e-6)  # lowercased before tokenizing
    plain = np.array(coulisse.pipeline("feature-extraction", model=str(tf_camembert_dir), pooling="cls")(texts[:2]))
    assert np.abs(plain[0] - plain[1]).max() > 1e-3  # the cased tokenizer alone tells them apart


def test_create_app_batches_as_coulisse_serve_does(tf_camembert_dir):
    """limits.py's defaults hold for `create_app(pipe)` too: `coulisse serve`'s --max-batch-tokens and
    --max-batch-requests (read from the command), lowered to the pipeline's own budget where that is smaller (a batch
    is cut once). Before, a pipeline's default budget made the server close batches of 256 inputs, where serve's
    close at 64."""
    from coulisse.interfaces.server.command import serve

    defaults = {p.name: p.default for p in serve.params}
    tokens, requests = defaults["max_batch_tokens"], defaults["max_batch_requests"]
    as_served = coulisse.pipeline("sentiment-analysis", model=str(tf_camembert_dir), max_batch_tokens=tokens,
                                  max_batch_size=requests)  # as `coulisse serve` loads it
    plain = coulisse.pipeline("sentiment-analysis", model=str(tf_camembert_dir))
    for pipe, expected in ((as_served, (tokens, requests)),
                           (plain, (min(tokens, plain.engine.max_batch_tokens),
                                    min(requests, plain.engine.max_batch_size)))):
        with TestClient(create_app(pipe)) as c:
            info = c.get("/info").json()
        assert (info["max_batch_tokens"], info["max_batch_requests"]) == expected


def test_one_token_budget_for_the_batcher_and_the_engine(tf_camembert_dir):
    """The server batches on the pipeline's own budget (`pipeline(max_batch_tokens=, max_batch_size=)`),
    so the engine never cuts a server batch again; a larger server limit is refused, not silently re-cut."""
    from coulisse.errors import InputError

    pipe = coulisse.pipeline("sentiment-analysis", model=str(tf_camembert_dir), max_batch_tokens=64,
                             max_batch_size=8)
    with TestClient(create_app(pipe)) as c:
        info = c.get("/info").json()
        assert (info["max_batch_tokens"], info["max_batch_requests"]) == (64, 8)
        assert c.post("/predict", json={"inputs": batch(TEXTS)}).status_code == 200
    with pytest.raises(InputError, match="max_batch_tokens=64"), \
            TestClient(create_app(pipe, ServerSettings(max_batch_tokens=128))):
        pass

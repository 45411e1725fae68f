"""Several models in one `coulisse serve` process (`--model a --model b --model c`): every route reaches the
model its prefix, X-Model header or OpenAI `model` names, and answers what that model's own pipeline
answers. Clients nobody here wrote drive it: the openai SDK and huggingface_hub's InferenceClient.

Three tiny random checkpoints: a BERT classifier, a BERT encoder served under a name with a slash, a
CamemBERT encoder (another tokenizer: /tokenize tells the models apart by their ids).
Tolerance 1e-5, as in test_server_compat.py: the same kernels, batched differently.
"""

from __future__ import annotations

import numpy as np
import pytest

httpx = pytest.importorskip("httpx")
openai = pytest.importorskip("openai")
pytest.importorskip("huggingface_hub")

from test_server_compat import TEXTS, Server, close, same_labels  # noqa: E402
from test_server_metrics import parse, value  # noqa: E402

from coulisse import pipeline  # noqa: E402

pytestmark = pytest.mark.slow
NAMES = ("clf", "enc/bert", "camembert-enc")


@pytest.fixture(scope="module")
def folders(factory):
    return {"clf": factory.checkpoint("bert"), "enc/bert": factory.checkpoint("bert", base=True),
            "camembert-enc": factory.checkpoint("camembert", base=True)}


@pytest.fixture(scope="module")
def server(folders):
    args = []
    for name in NAMES[1:]:
        args += ["--model", str(folders[name])]
    for name in NAMES:
        args += ["--served-model-name", name]
    started = Server(folders["clf"], *args)  # Server puts the first --model first
    yield started
    started.stop()


@pytest.fixture(scope="module")
def pipes(folders):
    return {"clf": pipeline("text-classification", model=str(folders["clf"])),
            **{name: pipeline("feature-extraction", model=str(folders[name]), pooling="auto", normalize=True)
               for name in NAMES[1:]}}


def post(server, path, body, **headers):
    r = httpx.post(f"{server.base}{path}", json=body, headers=headers, timeout=60)
    assert r.status_code == 200, (path, r.text)
    return r.json()


def test_each_route_reaches_its_model(server, pipes, folders):
    expected = pipes["clf"](TEXTS, top_k=None)
    for path in ("/clf/predict", "/predict"):  # unprefixed: the first model
        for served, exp in zip(post(server, path, {"inputs": [[t] for t in TEXTS]}), expected, strict=True):
            same_labels(served, exp)
    same_labels(post(server, "/clf/", {"inputs": TEXTS[0], "parameters": {"top_k": None}})[0], expected[0])
    for name in NAMES[1:]:
        vectors = np.asarray(pipes[name](TEXTS))
        close(post(server, f"/{name}/embed", {"inputs": TEXTS}), vectors)
        close(post(server, "/embed", {"inputs": TEXTS}, **{"X-Model": name}), vectors)
        close(post(server, f"/{name}/", {"inputs": TEXTS[:2]}), vectors[:2])  # TEI's `POST /` on a prefix
        hidden = pipeline("feature-extraction", model=str(folders[name]))(TEXTS[0])
        close(post(server, f"/{name}/embed_all", {"inputs": TEXTS[0]})[0], hidden[0])
        ids = [t["id"] for t in post(server, f"/{name}/tokenize", {"inputs": TEXTS[3]})[0]]
        assert ids == list(pipes[name].preprocess([TEXTS[3]], pooling="auto").items[0].ids)
    # The slash of "enc/bert" is a path separator, written or percent-encoded.
    encoded = httpx.post(f"{server.base}/enc%2Fbert/embed", json={"inputs": TEXTS[0]}, timeout=60)
    close(encoded.json()[0], pipes["enc/bert"](TEXTS[0]))
    # A classifier route on an encoder: TEI's 424, from that model.
    r = httpx.post(f"{server.base}/camembert-enc/predict", json={"inputs": "x"})
    assert r.status_code == 424 and "feature-extraction" in r.json()["error"]


def test_server_routes_answer_for_every_model(server):
    info = httpx.get(f"{server.base}/info").json()
    assert info["served_model_name"] == "clf" and info["task"] == "text-classification"  # TEI's shape: the first
    assert [(m["served_model_name"], m["task"]) for m in info["models"]] == [
        ("clf", "text-classification"), ("enc/bert", "feature-extraction"), ("camembert-enc", "feature-extraction")]
    assert httpx.get(f"{server.base}/enc/bert/info").json()["served_model_name"] == "enc/bert"
    assert [m["id"] for m in httpx.get(f"{server.base}/v1/models").json()["data"]] == list(NAMES)
    for name in NAMES:  # OpenAI's models.retrieve, a name with a slash included
        assert httpx.get(f"{server.base}/v1/models/{name}").json()["id"] == name
    missing = httpx.get(f"{server.base}/v1/models/gpt-4")
    assert missing.status_code == 404 and "'enc/bert'" in missing.json()["error"]["message"]
    for path in ("/health", "/clf/health", "/enc/bert/health", "/camembert-enc/ping"):
        assert httpx.get(f"{server.base}{path}").status_code == 200, path
    post(server, "/camembert-enc/embed", {"inputs": ["a", "b"]})
    post(server, "/clf/predict", {"inputs": "a"})
    metrics = httpx.get(f"{server.base}/metrics").text
    assert 'te_request_count{model="camembert-enc",method="batch"}' in metrics
    _, samples = parse(metrics)  # the text format, strictly
    assert value(samples, "te_embed_count", model="camembert-enc") >= 2  # per input, as TEI
    assert value(samples, "te_predict_count", model="clf") >= 1
    assert not value(samples, "te_predict_count", model="camembert-enc")
    assert 'te_batch_next_size_count{model="camembert-enc"}' in metrics


def test_an_unknown_model_is_404_naming_the_served_ones(server):
    served = "'clf', 'enc/bert', 'camembert-enc'"
    for r in (httpx.post(f"{server.base}/nope/embed", json={"inputs": "x"}),
              httpx.post(f"{server.base}/embed", json={"inputs": "x"}, headers={"X-Model": "nope"})):
        assert r.status_code == 404 and served in r.json()["error"] and "'nope'" in r.json()["error"], r.text
    sdk = openai.OpenAI(base_url=f"{server.base}/v1", api_key="unused", max_retries=0)
    with pytest.raises(openai.NotFoundError, match="'nope'.*'camembert-enc'"):
        sdk.embeddings.create(model="nope", input="x")
    # a prefix that names no model, before /v1: OpenAI's error shape too (TEI's gave the SDK no type: audit 43)
    prefixed = openai.OpenAI(base_url=f"{server.base}/nope/v1", api_key="unused", max_retries=0)
    with pytest.raises(openai.NotFoundError, match="'nope'.*'camembert-enc'") as refused:
        prefixed.embeddings.create(model="clf", input="x")
    assert refused.value.type == "NotFound" and refused.value.body["code"] == 404, refused.value.body
    # A trailing slash is another path (TEI: 404), not a 307 to a URL built from the Host header.
    slashed = httpx.post(f"{server.base}/clf/predict/", json={"inputs": "x"})
    assert slashed.status_code == 404 and "location" not in slashed.headers, slashed.headers


def test_a_prefix_or_x_model_that_disagrees_with_openai_model_says_so(server, pipes):
    """The prefix or X-Model chose a model and the body's `model` names another one, served or not: the 404 says
    what chose which and lists every served model, not "'allocine' is not served here" of a served model."""
    served = "'clf', 'enc/bert', 'camembert-enc'"
    for how, path, headers in (("the route prefix /camembert-enc", "/camembert-enc/v1/embeddings", {}),
                               ("the X-Model header", "/v1/embeddings", {"X-Model": "camembert-enc"}),
                               ("the X-Model header", "/embeddings", {"X-Model": "camembert-enc"})):
        r = httpx.post(f"{server.base}{path}", json={"input": "x", "model": "enc/bert"}, headers=headers)
        assert r.status_code == 404, r.text
        message = r.json()["error"]["message"]  # OpenAI's shape on its routes
        assert message == (f"{how} chose model 'camembert-enc', but the body's `model` names 'enc/bert', another "
                           f"model of this server: send one of the two, or the same name in both (served: {served}; "
                           "GET /v1/models)")
    r = httpx.post(f"{server.base}/camembert-enc/v1/embeddings", json={"input": "x", "model": "gpt-4"})
    assert r.status_code == 404 and "'gpt-4', which this server does not serve" in r.json()["error"]["message"]
    assert "--served-model-name" in r.json()["error"]["message"]
    # a prefix and an X-Model header naming another model, served or not: said, not one of them silently taken
    for named in ("clf", "nope"):
        r = httpx.post(f"{server.base}/camembert-enc/embed", json={"inputs": "x"}, headers={"X-Model": named})
        assert r.status_code == 404, r.text
        assert r.json()["error"].startswith(f"the route prefix /camembert-enc chose model 'camembert-enc', but the "
                                            f"X-Model header names {named!r}"), r.text
    # The same name in both, or the prefix alone, reaches the model.
    expected = np.asarray(pipes["camembert-enc"](TEXTS[:1]))
    for body in ({"input": TEXTS[0], "model": "camembert-enc"}, {"input": TEXTS[0]}):
        close([d["embedding"] for d in post(server, "/camembert-enc/v1/embeddings", body)["data"]], expected)
        close([d["embedding"] for d in post(server, "/v1/embeddings", body, **{"X-Model": "camembert-enc"})["data"]],
              expected)


def test_openai_sdk_picks_the_model_by_name(server, pipes):
    sdk = openai.OpenAI(base_url=f"{server.base}/v1", api_key="unused", max_retries=0)
    for name in NAMES[1:]:
        answer = sdk.embeddings.create(model=name, input=TEXTS, encoding_format="float")
        assert answer.model == name
        close([d.embedding for d in answer.data], np.asarray(pipes[name](TEXTS)))
    # a prefixed base URL, as a client configured for one model sends it
    prefixed = openai.OpenAI(base_url=f"{server.base}/camembert-enc/v1", api_key="unused", max_retries=0)
    answer = prefixed.embeddings.create(model="camembert-enc", input=TEXTS[:2])
    close([d.embedding for d in answer.data], np.asarray(pipes["camembert-enc"](TEXTS[:2])))
    assert [m.id for m in prefixed.models.list().data] == ["camembert-enc"]


def test_inference_client_on_a_prefixed_model(server, pipes):
    from huggingface_hub import InferenceClient

    encoder = InferenceClient(base_url=f"{server.base}/enc/bert", timeout=60)
    close(encoder.feature_extraction(TEXTS[1])[0], pipes["enc/bert"](TEXTS[1]))
    scores = encoder.sentence_similarity(TEXTS[0], TEXTS[1:])
    vectors = np.asarray(pipes["enc/bert"](TEXTS), dtype=np.float64)
    close(scores, vectors[1:] @ vectors[0])
    classifier = InferenceClient(base_url=f"{server.base}/clf", timeout=60)
    same_labels([r.__dict__ for r in classifier.text_classification(TEXTS[3])], pipes["clf"](TEXTS[3], top_k=None))


def test_a_route_the_chosen_model_does_not_serve_names_that_model(server):
    """With several models, "this server runs text-classification" did not say which one was meant (audit 43)."""
    r = httpx.post(f"{server.base}/clf/embed", json={"inputs": "x"})
    assert r.status_code == 424 and "model 'clf' runs text-classification" in r.json()["error"], r.text
    r = httpx.post(f"{server.base}/predict", json={"inputs": "x"}, headers={"X-Model": "enc/bert"})
    assert r.status_code == 424 and "model 'enc/bert' runs feature-extraction" in r.json()["error"], r.text

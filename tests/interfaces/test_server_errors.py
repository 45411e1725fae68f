"""Each error status of the table, always in TEI's `{"error", "error_type"}` body; and the API key."""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import re
import sys
import threading
import time

import pytest

pytest.importorskip("fastapi")
import httpx  # noqa: E402
from starlette.testclient import TestClient  # noqa: E402

import coulisse  # noqa: E402
from coulisse.interfaces.server import ServerSettings, create_app  # noqa: E402
from coulisse.interfaces.server.errors import ERRORS  # noqa: E402


@pytest.fixture(scope="module")
def client(classifier):
    settings = ServerSettings(max_client_batch_size=4, payload_limit=10_000)
    with TestClient(create_app(classifier, settings), raise_server_exceptions=False) as c:
        yield c


def error(r, status: int, error_type: str) -> str:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert set(body) == {"error", "error_type"} and body["error_type"] == error_type
    return body["error"]


@pytest.mark.parametrize("body, field", [
    ({"inputs": 5}, "inputs"),
    ({"inputs": [["a", "b", "c"]]}, "inputs"),
    ({"inputs": ["a", 3]}, "inputs"),
    ({"inputs": "a", "raw_scores": "yes"}, "raw_scores"),
    ({"inputs": "a", "truncate": 1}, "truncate"),
    ({"inputs": "a", "truncation_direction": "Middle"}, "truncation_direction"),
    ({"text": "a"}, "inputs"),
])
def test_wrong_types_are_422_naming_the_field(client, body, field):
    assert error(client.post("/predict", json=body), 422, "Validation").startswith(f"{field}:")


def test_a_body_of_either_shape_is_refused_in_the_shapes_a_client_knows(client):
    """`POST /` takes TEI's body or the Inference API's: each error says which one it read the body as, never a
    class name of ours."""
    message = error(client.post("/", json={"inputs": 5, "parameters": {"top_k": 1}}), 422, "Validation")
    assert message.startswith("as TEI's /predict body, inputs: must be a text"), message
    assert "; as the Inference API body, inputs: Input should be a valid string" in message
    assert "Request" not in message and "Task" not in message


@pytest.mark.parametrize("content, message", [
    (b"{not json", "the body is not valid JSON (Expecting property name enclosed in double quotes character 2)"),
    (b"", 'the body is empty; send a JSON object such as {"inputs": "some text"}'),
    (b"[" * 4_000 + b"]" * 4_000, "the body is nested deeper than the JSON parser goes; send one JSON value"),
])
def test_a_body_that_is_not_json_is_400_as_in_tei(client, content, message):
    """TEI's JSON reader (axum's `Json`) answers 400 to what serde_json cannot parse (a syntax error, an empty
    body: `Category::Syntax | Eof`), 422 to JSON of the wrong shape."""
    r = client.post("/predict", content=content, headers={"content-type": "application/json"})
    assert error(r, 400, "BadRequest") == message


@pytest.mark.parametrize("content, message", [
    (b"[1, 2]", 'the body must be a JSON object such as {"inputs": "some text"}'),
    (b'"text"', 'the body must be a JSON object such as {"inputs": "some text"}'),
    (b'{"inputs": "a", "inputs": "b"}', 'the body\'s JSON names the key "inputs" twice in one object; send it once'),
    (b'{"inputs": "a", "truncate": true, "truncate": false}',
     'the body\'s JSON names the key "truncate" twice in one object; send it once'),
])
def test_json_of_the_wrong_shape_is_422(client, content, message):
    """A key given twice is refused, as TEI's serde reader refuses a duplicate field (Python's `json` would keep
    the last value)."""
    r = client.post("/predict", content=content, headers={"content-type": "application/json"})
    assert error(r, 422, "Validation") == message


def test_the_example_of_a_body_is_the_routes_own(minilm_dir):
    """`{"inputs": ...}` is TEI's field: OpenAI's route reads `input`, /similarity a source and sentences."""
    pipe = coulisse.pipeline("feature-extraction", model=str(minilm_dir))
    json_header = {"content-type": "application/json"}
    with TestClient(create_app(pipe)) as c:
        openai_body = c.post("/v1/embeddings", content=b"[1, 2]", headers=json_header)
        assert openai_body.status_code == 422
        assert openai_body.json()["error"]["message"] == 'the body must be a JSON object such as {"input": "some text"}'
        empty = c.post("/v1/embeddings", content=b"", headers=json_header).json()["error"]["message"]
        assert empty == 'the body is empty; send a JSON object such as {"input": "some text"}'
        similarity = error(c.post("/similarity", content=b'"x"', headers=json_header), 422, "Validation")
        assert '"source_sentence"' in similarity
        assert '{"inputs": "some text"}' in error(c.post("/embed", content=b'"x"', headers=json_header), 422,
                                                  "Validation")


def test_a_body_that_does_not_parse_says_where_or_which_byte(client):
    """The JSON parser's position, not a sentence cut short; bytes that are not UTF-8 named as the corpus jobs'
    readers name them, not the framework's "There was an error parsing the body"."""
    json_header = {"content-type": "application/json"}
    message = error(client.post("/predict", content=b'{"inputs": "abc', headers=json_header), 400, "BadRequest")
    assert message == "the body is not valid JSON (Unterminated string starting at character 12)"
    try:
        json.loads('{"inputs": "abc')
    except json.JSONDecodeError as e:
        assert e.pos + 1 == 12  # the parser's own position, 0-based
    latin1 = '{"inputs": "été"}'.encode("latin-1")
    message = error(client.post("/predict", content=latin1, headers=json_header), 400, "BadRequest")
    assert message == "the body is not valid UTF-8 (byte 0xe9 at byte 13); send the JSON encoded in UTF-8"


UTF8 = "send the JSON encoded in UTF-8"


@pytest.mark.parametrize("content, message", [
    ('{"inputs": "a"}'.encode("utf-16"), f"the body is UTF-16 (its first bytes are FF FE 7B 00), not UTF-8; {UTF8}"),
    ('{"inputs": "a"}'.encode("utf-16-le"), f"the body is UTF-16-LE (its first bytes are 7B 00 22 00), not UTF-8; "
                                            f"{UTF8}"),
    ('{"inputs": "a"}'.encode("utf-16-be"), f"the body is UTF-16-BE (its first bytes are 00 7B 00 22), not UTF-8; "
                                            f"{UTF8}"),
    ('{"inputs": "a"}'.encode("utf-32"), f"the body is UTF-32 (its first bytes are FF FE 00 00), not UTF-8; {UTF8}"),
    (b'\xef\xbb\xbf{"inputs": "a"}', "the body starts with a UTF-8 byte order mark (bytes EF BB BF), which JSON sent "
                                    "over a network must not carry (RFC 8259); send the JSON without it"),
    (b'{"inputs": "a", "raw_scores": NaN}', "the body holds NaN, which is not a JSON number (JSON has no NaN or "
                                            "Infinity); send a finite number"),
    (b'{"inputs": ["a"], "x": [Infinity]}', "the body holds Infinity, which is not a JSON number (JSON has no NaN "
                                            "or Infinity); send a finite number"),
    (b'{"inputs": -Infinity}', "the body holds -Infinity, which is not a JSON number (JSON has no NaN or "
                               "Infinity); send a finite number"),
])
def test_a_body_python_reads_but_serde_json_does_not_is_400(client, content, message):
    """Python's `json.loads(bytes)` decodes UTF-16 and UTF-32, skips a byte order mark and reads NaN and Infinity;
    serde_json (TEI's reader, through axum's `Json`) refuses each as a syntax error: 400, not an answer (UTF-16,
    the BOM: they were 200) nor a type error (NaN: it was 422)."""
    for route in ("/predict", "/"):
        r = client.post(route, content=content, headers={"content-type": "application/json"})
        assert error(r, 400, "BadRequest") == message


def test_an_empty_predict_batch_is_a_malformed_body_as_in_tei(client):
    """TEI's PredictInput deserializer refuses `[]` while parsing (`invalid_length(0)` on the first element,
    router/src/http/types.rs), so axum answers 422, not the 400 `Empty` of the routes whose input may be an empty
    list; `POST /` reads the same body."""
    for route in ("/predict", "/"):
        message = error(client.post(route, json={"inputs": []}), 422, "Validation")
        assert "inputs: must be a text, a [text, text_pair] pair, or a batch" in message and "got list '[]'" in message


def test_too_many_inputs_is_422_as_tei_answers_it(client):
    # TEI >= 1.9.0 maps its `Validation` errors to 422 (router/src/http/server.rs; 413 before).
    message = error(client.post("/predict", json={"inputs": [["a"]] * 5}), 422, "Validation")
    assert message.startswith("batch size 5 > maximum allowed batch size 4")


@pytest.mark.parametrize("body, where", [({"inputs": ""}, ""), ({"inputs": [["a"], [""]]}, "inputs[1]"),
                                         ({"inputs": [["a", ""]]}, "inputs[0][1]"),
                                         ({"inputs": [["b"], ["", "a"]]}, "inputs[1][0]")])
def test_an_empty_text_is_tei_400_empty(client, body, where):
    # TEI refuses an empty input before tokenizing (core/src/tokenization.rs), not as a malformed body (422).
    message = error(client.post("/predict", json=body), 400, "Empty")
    assert message.startswith("`inputs` cannot be empty") and where in message
    assert client.post("/predict", json={"inputs": " "}).status_code == 200  # a space is a text


def inference_api_pipeline(task: str, factory, task_factory, nli_dir, minilm_dir, tf_camembert_dir, tmp_path):
    import shutil
    from pathlib import Path

    if task == "question-answering":
        folder = tmp_path / "qa"
        shutil.copytree(Path(__file__).resolve().parents[1] / "fixtures" / "qa" / "bert", folder)
        shutil.copy(minilm_dir / "vocab.txt", folder / "vocab.txt")
    else:
        folder = {"text-classification": tf_camembert_dir, "zero-shot-classification": nli_dir,
                  "token-classification": task_factory.checkpoint("bert", "token-classification"),
                  "fill-mask": task_factory.checkpoint("bert", "masked-lm")}[task]
    return coulisse.pipeline(task, model=str(folder))


@pytest.mark.parametrize(("task", "body", "name"), [
    ("text-classification", {"inputs": "", "parameters": {"top_k": 1}}, "inputs"),
    ("zero-shot-classification", {"inputs": "", "parameters": {"candidate_labels": ["a", "b"]}}, "inputs"),
    ("token-classification", {"inputs": "", "parameters": {}}, "inputs"),
    ("fill-mask", {"inputs": "", "parameters": {}}, "inputs"),
    ("question-answering", {"inputs": {"question": "", "context": "Le chat dort."}}, "inputs.question"),
    ("question-answering", {"inputs": {"question": "Qui dort ?", "context": ""}}, "inputs.context"),
])
def test_an_empty_text_is_400_empty_in_the_inference_apis_bodies(task, body, name, factory, task_factory, nli_dir,
                                                                  minilm_dir, tf_camembert_dir, tmp_path):
    """TEI answers `POST /` on a classifier as /predict: 400 `Empty` for an empty text; every task alike."""
    pipe = inference_api_pipeline(task, factory, task_factory, nli_dir, minilm_dir, tf_camembert_dir, tmp_path)
    with TestClient(create_app(pipe)) as c:
        assert error(c.post("/", json=body), 400, "Empty") == f"`{name}` cannot be empty"
        schema = c.get("/openapi.json").json()["components"]["schemas"]
    model = {"text-classification": "TextClassificationTask", "zero-shot-classification": "ZeroShotTask",
             "token-classification": "TokenClassificationTask", "fill-mask": "FillMaskTask",
             "question-answering": "QuestionAnsweringInputs"}[task]
    assert schema[model]["properties"][name.split(".")[-1]]["minLength"] == 1  # the schema says so


def test_the_schema_says_texts_may_not_be_empty(client):
    schema = client.get("/openapi.json").json()["components"]["schemas"]
    assert '{"type": "string", "minLength": 1}' in json.dumps(schema["PredictRequest"]["properties"]["inputs"])


@pytest.mark.parametrize("content_type", ["application/x-www-form-urlencoded", "text/plain", "multipart/form-data"])
def test_a_body_not_sent_as_json_is_415_before_it_is_read(client, content_type):
    # curl -d sends a form; a web page may post text/plain to any origin without a CORS preflight.
    r = client.post("/predict", content=b'{"inputs": "x"}', headers={"content-type": content_type})
    message = error(r, 415, "Validation")
    assert content_type in message and "Content-Type: application/json" in message
    assert r.headers["connection"] == "close"
    for fine in ("application/json; charset=utf-8", "application/vnd.api+json"):
        assert client.post("/predict", content=b'{"inputs": "x"}', headers={"content-type": fine}).status_code == 200


def test_a_body_without_a_content_type_is_415_as_on_tei(client):
    """`requests.post(url, data=json.dumps(body))` sends none: FastAPI (>= 0.132) would leave the body unread and
    the answer would be a 422 saying that a JSON object must be one. An empty body stays the route's "empty"."""
    r = client.post("/predict", content=b'{"inputs": "x"}', headers={"content-type": ""})
    assert "an empty media type" in error(r, 415, "Validation")
    bare = client.build_request("POST", "/predict", content=b'{"inputs": "x"}')
    assert "content-type" not in bare.headers
    assert "without a Content-Type" in error(client.send(bare), 415, "Validation")
    empty = client.build_request("POST", "/predict")
    assert "content-type" not in empty.headers
    assert client.send(empty).status_code in (400, 422)


def test_a_compressed_body_is_415_naming_its_encoding(client):
    import gzip

    headers = {"content-type": "application/json", "content-encoding": "gzip"}
    r = client.post("/predict", content=gzip.compress(b'{"inputs": "x"}'), headers=headers)
    message = error(r, 415, "Validation")
    assert "Content-Encoding: gzip" in message and "UTF-8" not in message
    plain = {"content-type": "application/json", "content-encoding": "identity"}
    assert client.post("/predict", content=b'{"inputs": "x"}', headers=plain).status_code == 200


def test_another_tasks_body_on_the_root_route_names_the_served_task(client):
    """`InferenceClient.zero_shot_classification` against a sentiment model: the 422 says which task POST / runs."""
    r = client.post("/", json={"inputs": "Super film", "parameters": {"candidate_labels": ["cinéma"]}})
    message = error(r, 422, "Validation")
    assert "candidate_labels" in message and "runs the task this model serves, text-classification" in message
    assert "runs the task" not in error(client.post("/predict", json={"inputs": 3}), 422, "Validation")


def test_an_integer_past_pythons_digit_bound_is_said_so(client):
    """Valid JSON that Python's reader refuses (`sys.get_int_max_str_digits`): said, not "an error parsing"."""
    body = b'{"inputs": "x", "truncate": true, "raw_scores": ' + b"7" * 5000 + b"}"
    message = error(client.post("/predict", content=body, headers={"content-type": "application/json"}), 400,
                    "BadRequest")
    assert f"more than {sys.get_int_max_str_digits():,} digits" in message


def test_too_large_a_body_is_413(client):
    r = client.post("/predict", json={"inputs": "a" * 20_000})
    assert "--payload-limit" in error(r, 413, "Validation")


def test_unknown_route_and_method(client):
    assert "'/nope'" in error(client.get("/nope"), 404, "NotFound")
    error(client.get("/predict"), 405, "MethodNotAllowed")
    # A trailing slash is another path, as on TEI: no 307 to a URL built from the Host header.
    error(client.post("/predict/", json={"inputs": "x"}, headers={"host": "elsewhere.example"}), 404, "NotFound")


def test_model_failure_is_500_with_a_logged_request_id(classifier, caplog, monkeypatch):
    def broken(items, progress=None):
        raise RuntimeError("CUDA out of memory (simulated)")

    monkeypatch.setattr(classifier, "forward", broken)
    app = create_app(classifier)
    with caplog.at_level(logging.ERROR), TestClient(app, raise_server_exceptions=False) as c:
        r = c.post("/predict", json={"inputs": ["a", "b"]})
        message = error(r, 500, "Backend")
        assert c.get("/health").status_code == 200  # one failed batch does not make the server unhealthy
        assert 'te_request_failure{err="inference"} 1' in c.get("/metrics").text  # TEI's label for it
    request_id = r.headers["x-request-id"]
    assert request_id in message and "out of memory" not in message  # internals stay in the log
    logged = [rec for rec in caplog.records if request_id in rec.getMessage()]
    assert logged and logged[0].exc_info is not None and "out of memory" in str(logged[0].exc_info[1])


def test_a_model_failure_is_not_retried_by_the_openai_sdk(minilm_dir, monkeypatch):
    """The SDK retries every 5xx twice unless the answer says `x-should-retry: false`: a failing model would see
    the same request three times."""
    openai = pytest.importorskip("openai")
    pipe = coulisse.pipeline("feature-extraction", model=str(minilm_dir))
    calls = []

    def broken(items, progress=None):
        calls.append(len(items))
        raise RuntimeError("simulated")

    monkeypatch.setattr(pipe, "forward", broken)
    with TestClient(create_app(pipe), raise_server_exceptions=False) as c:
        sdk = openai.OpenAI(base_url=f"{c.base_url}/v1", api_key="unused", http_client=c, max_retries=2)
        with pytest.raises(openai.InternalServerError) as caught:
            sdk.embeddings.create(input="Le chat dort.", model=None)
    assert caught.value.response.headers["x-should-retry"] == "false"
    assert calls == [1]


def test_an_openai_call_this_server_has_no_route_for_says_which_it_has(minilm_dir):
    """`chat.completions.create` on an embeddings server: TEI's error shape made the SDK show "Error code: 404"
    and nothing else; OpenAI's shape on every /v1/ path shows the message."""
    openai = pytest.importorskip("openai")
    pipe = coulisse.pipeline("feature-extraction", model=str(minilm_dir))
    with TestClient(create_app(pipe)) as c:
        sdk = openai.OpenAI(base_url=f"{c.base_url}/v1", api_key="unused", http_client=c, max_retries=0)
        with pytest.raises(openai.NotFoundError, match="POST /v1/embeddings and GET /v1/models only"):
            sdk.chat.completions.create(model="x", messages=[{"role": "user", "content": "Bonjour"}])


async def until_in_flight(app, count: int) -> None:
    """Until `count` requests are in flight (10 s at most)."""
    deadline = time.monotonic() + 10
    while app.state.metrics.in_flight.value() < count and time.monotonic() < deadline:
        await asyncio.sleep(0.005)


def held_forward(classifier, monkeypatch) -> threading.Event:
    """The classifier's forward pass held until the event returned is set (10 s at most)."""
    release = threading.Event()
    forward = classifier.forward

    def slow(items, progress=None):
        release.wait(10)
        return forward(items)

    monkeypatch.setattr(classifier, "forward", slow)
    return release


def test_overload_is_429_never_a_queue(classifier, monkeypatch):
    """Two permits: two requests hold them inside a blocked forward pass, the third is refused at once."""
    release = held_forward(classifier, monkeypatch)
    app = create_app(classifier, ServerSettings(max_concurrent_requests=2, max_wait_ms=0))

    async def scenario():
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
                held = [asyncio.create_task(c.post("/predict", json={"inputs": t})) for t in ("a", "b")]
                while app.state.metrics.in_flight.value() < 2:
                    await asyncio.sleep(0.005)
                refused = await c.post("/predict", json={"inputs": "c"})
                release.set()
                return refused, await asyncio.gather(*held)

    refused, held = asyncio.run(scenario())
    assert "--max-concurrent-requests" in error(refused, 429, "Overloaded")
    assert [r.status_code for r in held] == [200, 200]


def test_with_every_permit_taken_a_body_is_refused_before_it_is_parsed(classifier, monkeypatch):
    """A POST that could not get a permit is answered 429 before its JSON is parsed and validated (a flood of
    refused batches cost the event loop the parse of each): a body that is not even JSON gets the 429, not the
    400 it gets once a permit is free. The body is read to its end, so the connection serves the next request."""
    release = held_forward(classifier, monkeypatch)
    app = create_app(classifier, ServerSettings(max_concurrent_requests=1, max_wait_ms=0))
    from starlette.requests import Request

    parsed = []
    read = Request.body

    async def body(self):  # what every route reads its JSON from (FastAPI's request handler)
        parsed.append(self.url.path)
        return await read(self)

    monkeypatch.setattr(Request, "body", body)

    async def scenario():
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
                held = asyncio.create_task(c.post("/predict", json={"inputs": "a"}))
                while app.state.metrics.in_flight.value() < 1:
                    await asyncio.sleep(0.005)
                parsed.clear()
                headers = {"Content-Type": "application/json"}
                refused = [await c.post(path, content=b'{"inputs": [not json', headers=headers)
                           for path in ("/predict", "/embed", "/tokenize", "/v1/embeddings")]
                parsed_while_full = len(parsed)
                unparsed = app.state.metrics.request_count.value(method="unparsed")
                release.set()
                await held
                bad = await c.post("/predict", content=b'{"inputs": [not json', headers=headers)
                return refused, parsed_while_full, bad, unparsed

    refused, parsed_while_full, bad, unparsed = asyncio.run(scenario())
    assert unparsed == 3  # te_request_count: /predict, /embed, /v1/embeddings; /tokenize runs no model (as TEI)
    for r in refused[:3]:
        assert "1 of 1 inputs in flight (--max-concurrent-requests)" in error(r, 429, "Overloaded")
    assert refused[3].status_code == 429  # in OpenAI's shape on its path
    assert "--max-concurrent-requests" in refused[3].json()["error"]["message"]
    assert parsed_while_full == 0  # no route read a body
    assert bad.status_code == 400 and parsed[-1] == "/predict"  # a permit free: the same body reaches the parser


def test_a_sixteenth_of_the_permits_is_kept_for_requests_of_one_input(classifier, monkeypatch):
    """Batches take permits from all but a sixteenth of them: a flood of batches leaves room for one-sentence
    requests (600 clients of batches of 32 refused all 80 tries of two such clients in 60 s: session 40). A limit
    of 32 keeps 2: a batch of 30 fills the rest, a batch of 2 is refused, two single inputs get in, a third not."""
    release = held_forward(classifier, monkeypatch)
    app = create_app(classifier, ServerSettings(max_concurrent_requests=32, max_wait_ms=0))

    def batch(n):
        return {"inputs": [[f"Critique {i}"] for i in range(n)]}

    async def scenario():
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
                held = [asyncio.create_task(c.post("/predict", json=batch(30)))]
                await until_in_flight(app, 1)
                refused_batch = await c.post("/predict", json=batch(2))
                held += [asyncio.create_task(c.post("/predict", json={"inputs": t})) for t in ("a", "b")]
                await until_in_flight(app, 3)
                refused_single = await c.post("/predict", json={"inputs": "c"})
                release.set()
                return refused_batch, refused_single, await asyncio.gather(*held)

    refused_batch, refused_single, held = asyncio.run(scenario())
    assert "30 of 32 inputs in flight, the last 2 kept for requests of one input, this request has 2" in \
        error(refused_batch, 429, "Overloaded")
    assert "32 of 32 inputs in flight (--max-concurrent-requests)" in error(refused_single, 429, "Overloaded")
    assert [r.status_code for r in held] == [200, 200, 200]


def test_api_key(classifier, monkeypatch, caplog):
    compared = []
    real = hmac.compare_digest
    monkeypatch.setattr(hmac, "compare_digest", lambda a, b: compared.append(1) or real(a, b))
    app = create_app(classifier, ServerSettings(api_key="s3cret"))
    with caplog.at_level(logging.DEBUG), TestClient(app) as c:
        missing = c.post("/predict", json={"inputs": "a"})
        error(missing, 401, "Unauthorized")
        assert missing.headers["www-authenticate"] == "Bearer"
        error(c.post("/predict", json={"inputs": "a"}, headers={"Authorization": "Bearer wrong"}), 401,
              "Unauthorized")
        error(c.post("/predict", json={"inputs": "a"}, headers={"Authorization": "Basic s3cret"}), 401,
              "Unauthorized")
        error(c.get("/info"), 401, "Unauthorized")
        error(c.post("/predict", json={"bad": 1}), 401, "Unauthorized")  # auth before validation
        ok = c.post("/predict", json={"inputs": "a"}, headers={"Authorization": "Bearer s3cret"})
        assert ok.status_code == 200
        assert c.get("/info", headers={"Authorization": "Bearer s3cret"}).status_code == 200
        # public, as in TEI
        assert c.get("/health").status_code == 200 and c.get("/metrics").status_code == 200
        assert "bearer" in str(c.get("/openapi.json").json()["components"]["securitySchemes"]).lower()
    assert compared, "the key must be compared with hmac.compare_digest"
    assert all("s3cret" not in rec.getMessage() for rec in caplog.records)


def test_docs_load_without_the_key(classifier):
    """A browser opening /docs sends no key for the page's <script src>, <link href> or the schema it fetches:
    every URL the page names must answer without one, as /docs itself does."""
    with TestClient(create_app(classifier, ServerSettings(api_key="s3cret"))) as c:
        page = c.get("/docs")
        assert page.status_code == 200
        urls = re.findall(r"""(?:src|href)=["']([^"']+)["']|url: ?["']([^"']+)["']""", page.text)
        urls = [a or b for a, b in urls if (a or b).startswith("/")]
        assert any(u.endswith(".js") for u in urls) and any(u.endswith(".css") for u in urls), urls
        assert "/openapi.json" in urls
        for url in urls:
            assert c.get(url).status_code == 200, url
        assert c.get("/docs-assets/swagger-ui.css", headers={"Authorization": "Bearer wrong"}).status_code == 200
        error(c.post("/docs-assets/swagger-ui.css"), 401, "Unauthorized")  # only reading them is public
        # the files the page loads, not the bundle's folder (its stock index.html fetched the petstore example from
        # the internet; a 1.9 MB source map): audit 46
        for name in ("swagger-ui-bundle.js", "favicon-32x32.png"):
            assert c.get(f"/docs-assets/{name}").status_code == 200
        for name in ("index.html", "index.j2", "swagger-ui-bundle.js.map", "..%2Fdocs.py"):
            error(c.get(f"/docs-assets/{name}"), 404, "NotFound")
        error(c.get("/info"), 401, "Unauthorized")


def test_no_redoc_page_that_needs_the_internet(classifier):
    """FastAPI's /redoc loads ReDoc's script from a CDN, a blank page offline; TEI has no /redoc. It is not
    served (a model's prefixed app neither); /docs is, from the server's own files."""
    from coulisse.interfaces.server.routing import several_models_app

    with TestClient(create_app(classifier)) as c:
        error(c.get("/redoc"), 404, "NotFound")
        assert "/redoc" not in c.get("/openapi.json").json()["paths"]
        page = c.get("/docs").text
        assert c.get("/docs").status_code == 200 and not re.search(r"""(src|href)=["']https?:""", page), page
    models = [(classifier, ServerSettings(served_model_name="a")), (classifier, ServerSettings(served_model_name="b"))]
    with TestClient(several_models_app(models)) as c:
        for path in ("/redoc", "/a/redoc", "/b/redoc"):
            assert c.get(path).status_code == 404, path
        assert c.get("/b/docs").status_code == 200


def test_behind_a_key_an_unknown_model_names_the_served_ones_only_to_the_keyholder(classifier):
    """/health is public; with an X-Model header naming no model its 404 listed every served name, which
    /v1/models keeps behind the key (audit 46)."""
    from coulisse.interfaces.server.routing import several_models_app

    models = [(classifier, ServerSettings(served_model_name="alpha", api_key="k")),
              (classifier, ServerSettings(served_model_name="beta", api_key="k"))]
    with TestClient(several_models_app(models)) as c:
        hidden = c.get("/health", headers={"X-Model": "zzz"})
        shown = c.get("/health", headers={"X-Model": "zzz", "Authorization": "Bearer k"})
        assert c.get("/v1/models").status_code == 401
    assert hidden.status_code == 404 and "'zzz'" in hidden.json()["error"], hidden.text
    assert "alpha" not in hidden.text and "beta" not in hidden.text and "send the API key" in hidden.text
    assert shown.status_code == 404 and "'alpha', 'beta'" in shown.json()["error"], shown.text


def test_behind_a_key_a_served_name_is_not_a_secret(classifier):
    """What docs/server.md says: a model's health and documentation answer without the key, as /health and
    /docs do (probes need none), so a served name answers 200 where a guessed one is 401; its models, inputs and
    info stay behind the key."""
    from coulisse.interfaces.server.routing import several_models_app

    models = [(classifier, ServerSettings(served_model_name="alpha", api_key="k")),
              (classifier, ServerSettings(served_model_name="beta", api_key="k"))]
    with TestClient(several_models_app(models)) as c:
        for path in ("/beta/health", "/beta/docs", "/beta/openapi.json"):
            assert c.get(path).status_code == 200, path
        for path in ("/gamma/health", "/gamma/docs", "/beta/info"):
            assert c.get(path).status_code == 401, path
        assert c.post("/beta/predict", json={"inputs": "Bien."}).status_code == 401


def test_two_x_model_headers_naming_two_models_are_refused(classifier):
    """A gateway that adds its own X-Model beside the client's: the first one won, unsaid (audit 46)."""
    from coulisse.interfaces.server.routing import several_models_app

    models = [(classifier, ServerSettings(served_model_name="alpha")),
              (classifier, ServerSettings(served_model_name="beta"))]
    with TestClient(several_models_app(models)) as c:
        both = c.post("/predict", json={"inputs": "Bien."}, headers=[("x-model", "alpha"), ("x-model", "beta")])
        same = c.post("/predict", json={"inputs": "Bien."}, headers=[("x-model", "beta"), ("x-model", "beta")])
    assert both.status_code == 404 and "'alpha'" in both.json()["error"] and "'beta'" in both.json()["error"]
    assert same.status_code == 200


def test_error_types_are_spelled_as_tei_serializes_them():
    """TEI's `ErrorType` (router/src/lib.rs, docs/openapi.json) derives Serialize without renaming: its
    variants' names. The kinds TEI answers without a body follow the same spelling."""
    tei = {"Unhealthy", "Backend", "Overloaded", "Validation", "Tokenizer", "Empty"}
    for kind in ("validation", "empty", "batch_size", "input_length", "payload_size", "media_type", "model_type",
                 "overloaded", "backend", "unhealthy"):
        assert ERRORS[kind].error_type in tei, kind
    assert all(re.fullmatch(r"(?:[A-Z][a-z]+)+", spec.error_type) for spec in ERRORS.values())


def test_every_error_kind_has_a_distinct_meaning():
    assert all(400 <= spec.status < 600 and spec.error_type and spec.description for spec in ERRORS.values())
    assert ERRORS["validation"].status == 422 and ERRORS["batch_size"].status == 422
    assert ERRORS["payload_size"].status == 413 and ERRORS["media_type"].status == 415
    assert ERRORS["overloaded"].status == 429 and ERRORS["unauthorized"].status == 401
    assert ERRORS["backend"].status == 500


def test_the_concurrency_limit_counts_inputs_as_tei_does(classifier, monkeypatch):
    """`--max-concurrent-requests` counts inputs in flight: counted in requests, 512 batches of 32 queued 16,384
    inputs, minutes of waiting before any 429 (audit 39). A batch of 3 held in flight under a limit of 4 leaves
    room for one more input, not a batch of 2; a batch larger than the limit runs alone."""
    release = held_forward(classifier, monkeypatch)
    app = create_app(classifier, ServerSettings(max_concurrent_requests=4, max_wait_ms=0))

    def batch(*texts):  # TEI's /predict batch: one list per input (["a", "b"] would be one pair)
        return {"inputs": [[t] for t in texts]}

    async def scenario():
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
                held = asyncio.create_task(c.post("/predict", json=batch("a", "b", "c")))
                await until_in_flight(app, 1)
                refused = await c.post("/predict", json=batch("d", "e"))
                one = asyncio.create_task(c.post("/predict", json={"inputs": "f"}))
                await until_in_flight(app, 2)
                in_flight = app.state.metrics.in_flight.value()
                release.set()
                answered = [await held, await one]
                alone = await c.post("/predict", json=batch(*"ghijkl"))  # 6 > 4: takes them all, runs alone
                return refused, in_flight, answered, alone

    refused, in_flight, answered, alone = asyncio.run(scenario())
    assert "3 of 4 inputs in flight, this request has 2" in error(refused, 429, "Overloaded")
    assert in_flight == 2 and [r.status_code for r in answered] == [200, 200] and alone.status_code == 200

"""Headers every answer carries, whoever writes it: `x-request-id` (docs/server.md: "on every answer"), and CORS
as TEI's layer (tower-http) answers a browser's preflight."""

from __future__ import annotations

import pytest

pytest.importorskip("fastapi")
from starlette.testclient import TestClient  # noqa: E402

from coulisse.interfaces.server import ServerSettings, create_app  # noqa: E402
from coulisse.interfaces.server.errors import raw_error_response  # noqa: E402

ALLOWED = "http://allowed.example"


@pytest.fixture(scope="module")
def client(classifier):
    settings = ServerSettings(payload_limit=10_000, api_key="k", cors_allow_origin=[ALLOWED])
    with TestClient(create_app(classifier, settings), raise_server_exceptions=False) as c:
        yield c


KEY = {"authorization": "Bearer k"}
ANSWERS = {  # one request per writer of an answer: routes, the framework, the error handlers, the guard
    "GET /health": lambda c: c.get("/health"),
    "GET /info": lambda c: c.get("/info", headers=KEY),
    "GET /metrics": lambda c: c.get("/metrics"),
    "GET /openapi.json": lambda c: c.get("/openapi.json"),
    "POST /predict": lambda c: c.post("/predict", json={"inputs": "Super"}, headers=KEY),
    "404": lambda c: c.get("/nowhere", headers=KEY),
    "405": lambda c: c.get("/predict", headers=KEY),
    "401": lambda c: c.post("/predict", json={"inputs": "Super"}),
    "400 not JSON": lambda c: c.post("/predict", content=b"{", headers={**KEY, "content-type": "application/json"}),
    "422 unknown field": lambda c: c.post("/predict", json={"inputs": "a", "zz": 1}, headers=KEY),
    "413": lambda c: c.post("/predict", json={"inputs": "a" * 20_000}, headers=KEY),
    "415": lambda c: c.post("/predict", content=b"inputs=a", headers={**KEY, "content-type": "text/plain"}),
    "CORS preflight": lambda c: c.options("/predict", headers={"origin": ALLOWED,
                                                               "access-control-request-method": "POST"}),
}


def test_every_answer_carries_its_own_request_id(client):
    ids = {}
    for name, call in ANSWERS.items():
        r = call(client)
        assert len(r.headers.get_list("x-request-id")) == 1, (name, r.status_code, r.headers)
        ids[name] = r.headers["x-request-id"]
    assert len(set(ids.values())) == len(ids)  # one per request
    assert ANSWERS["401"](client).status_code == 401 and ANSWERS["413"](client).status_code == 413


def test_a_request_id_the_client_sent_is_kept(client):
    """A proxy's x-request-id was replaced by a new one, so its logs and the server's never named a request alike
    (audit 44); kept when it is short and of safe characters, else a new one (it goes into headers and logs)."""
    for given, kept in (("ingress-7f3a.42:b_c", True), ("x" * 129, False), ("a b", False), ("é", False)):
        r = client.get("/health", headers={"x-request-id": given.encode("utf-8")})
        assert r.status_code == 200 and len(r.headers.get_list("x-request-id")) == 1
        assert (r.headers["x-request-id"] == given) is kept, (given, r.headers["x-request-id"])


def test_the_http_layer_answers_carry_one_too():
    """Answers written on the wire below the app (uvicorn's parser, the header timeout) carry an id as well."""
    head = raw_error_response("head_size", "too large").split(b"\r\n\r\n")[0].decode("latin-1").lower()
    assert len([line for line in head.split("\r\n") if line.startswith("x-request-id: ")]) == 1


@pytest.mark.parametrize("origin, method, allowed", [
    (ALLOWED, "POST", True),
    ("http://other.example", "POST", False),
    (ALLOWED, "DELETE", False),
])
def test_a_preflight_is_answered_200_and_the_browser_decides(client, origin, method, allowed):
    """tower-http answers every preflight 200 and leaves out what it does not allow (the browser then refuses);
    Starlette's layer answered 400 in plain text, against "every error is TEI's JSON"."""
    r = client.options("/predict", headers={"origin": origin, "access-control-request-method": method})
    assert r.status_code == 200
    granted = (r.headers.get("access-control-allow-origin") == origin
               and method in r.headers.get("access-control-allow-methods", ""))
    assert granted is allowed
    simple = client.post("/predict", json={"inputs": "Super"}, headers={**KEY, "origin": origin})
    assert simple.status_code == 200
    assert (simple.headers.get("access-control-allow-origin") == origin) is (origin == ALLOWED)


def test_a_key_beyond_ascii_matches_the_bytes_a_client_sends(classifier):
    """A UTF-8 key ("clé") passed Guard's check (bytes as sent) and failed the route's, which re-encoded
    Starlette's Latin-1 reading of the header as UTF-8: every request got 401 (audit 46). TEI compares bytes."""
    with TestClient(create_app(classifier, ServerSettings(api_key="clé"))) as c:
        sent = {"authorization": "Bearer clé".encode()}
        assert c.post("/predict", json={"inputs": "Super film !"}, headers=sent).status_code == 200
        assert c.post("/predict", json={"inputs": "Super film !"}, headers={"authorization": "Bearer cle"}
                      ).status_code == 401
        assert c.get("/info", headers=sent).status_code == 200

"""`POST /tokenize` on long texts: byte offsets in linear time, and TEI's bound on the text's length
(core/src/tokenization.rs: more than max_input_length × 250 characters is a validation error)."""

from __future__ import annotations

import time
from types import SimpleNamespace

import pytest

pytest.importorskip("fastapi")
from starlette.testclient import TestClient  # noqa: E402

import coulisse  # noqa: E402
from coulisse.interfaces.server import create_app  # noqa: E402
from coulisse.interfaces.server.tei_routes import tokens_of  # noqa: E402

MIXED = "Crème brûlée, ça va ? 😍 Ωmega le chat dort. "  # 1-, 2-, 3- and 4-byte UTF-8 characters


def recomputed(text: str, start: int, stop: int) -> tuple[int, int]:
    return len(text[:start].encode()), len(text[:stop].encode())


@pytest.fixture(scope="module")
def client(minilm_dir):
    with TestClient(create_app(coulisse.pipeline("feature-extraction", model=str(minilm_dir)))) as c:
        yield c


def test_byte_offsets_of_a_long_text_take_linear_time():
    """2 MB of text (what --payload-limit lets through; a model of 8,192 tokens may tokenize it in TEI) in
    500,000 tokens: encoding each token's prefix copies ~5e11 bytes, minutes; one pass, well under a second."""
    text = MIXED * (2_000_000 // len(MIXED.encode()))
    spans = [(i, min(i + 4, len(text))) for i in range(0, len(text), 4)]
    encoding = SimpleNamespace(ids=[0] * len(spans), tokens=["x"] * len(spans), special_tokens_mask=[0] * len(spans),
                               offsets=spans)
    start = time.perf_counter()
    tokens = tokens_of(encoding, text)
    assert time.perf_counter() - start < 10
    for i in (0, 1, len(spans) // 3, len(spans) // 2, len(spans) - 1):  # spot checks: recomputing all is quadratic
        assert (tokens[i]["start"], tokens[i]["stop"]) == recomputed(text, *spans[i])
        assert tokens[i]["text"] == text[slice(*spans[i])]


def test_long_text_offsets_equal_a_recomputation(client, minilm_dir):
    """The longest text TEI tokenizes for this model; the oracle is transformers' tokenizer, its character
    offsets turned into byte offsets by encoding the text between consecutive offsets."""
    transformers = pytest.importorskip("transformers")
    reference = transformers.AutoTokenizer.from_pretrained(str(minilm_dir))
    limit = client.get("/info").json()["max_input_length"] * 250
    text = (MIXED * (limit // len(MIXED) + 1))[:limit]
    r = client.post("/tokenize", json={"inputs": [text, "x"], "add_special_tokens": False})
    assert r.status_code == 200, r.text
    spans = reference(text, add_special_tokens=False, return_offsets_mapping=True, verbose=False)["offset_mapping"]
    bytes_at, last = {0: 0}, 0
    for position in sorted({p for span in spans for p in span}):  # ascending: `last` is the largest key so far
        bytes_at[position] = bytes_at[last] + len(text[last:position].encode())
        last = position
    assert [(t["start"], t["stop"], t["text"]) for t in r.json()[0]] == [
        (bytes_at[start], bytes_at[stop], text[start:stop]) for start, stop in spans]


def test_a_text_longer_than_tei_allows_is_refused(client):
    limit = client.get("/info").json()["max_input_length"] * 250
    r = client.post("/tokenize", json={"inputs": ["ok", "a" * (limit + 1)]})
    assert r.status_code == 422 and r.json()["error_type"] == "Validation"
    assert f"less than {limit} characters. Given: {limit + 1}" in r.json()["error"] and "inputs[1]" in r.json()["error"]
    assert client.post("/tokenize", json={"inputs": "a " * (limit // 2)}).status_code == 200


def test_a_lone_surrogate_is_a_validation_error(client):
    r = client.post("/tokenize", content=b'{"inputs": "a\\ud800b"}', headers={"content-type": "application/json"})
    assert r.status_code == 422 and "lone surrogate" in r.json()["error"]


@pytest.mark.parametrize(("ids", "where"), [([], ""), ([[5, 6], []], ": ids[1] is an empty list"),
                                            ([[]], ": ids[0] is an empty list")])
def test_an_empty_id_list_is_400_empty_naming_ids(client, ids, where):
    """TEI's /decode: 400 `Empty` for an empty id list, alone or in a batch (core/src/tokenization.rs `decode`;
    TEI names it `input_ids`, coulisse the request's field, `ids`)."""
    r = client.post("/decode", json={"ids": ids})
    assert r.status_code == 400 and r.json() == {"error": f"`ids` cannot be empty{where}", "error_type": "Empty"}


def test_tokenize_and_decode_send_no_timing_headers(client):
    """TEI's /tokenize and /decode answer their JSON alone (router/src/http/server.rs: `Json(...)`, no
    `HeaderMap`); its compute and timing headers come with the routes that run the model. They were sent
    here with zeros."""
    timing = {"x-compute-type", "x-compute-time", "x-compute-characters", "x-compute-tokens", "x-total-time",
              "x-tokenization-time", "x-queue-time", "x-inference-time"}
    for route, body in (("/tokenize", {"inputs": "Le chat dort."}), ("/decode", {"ids": [101, 3393, 102]})):
        r = client.post(route, json=body)
        assert r.status_code == 200 and not timing & set(r.headers), (route, dict(r.headers))
        assert r.headers["x-request-id"]  # coulisse's own, on every answer
    assert timing <= set(client.post("/embed", json={"inputs": "Le chat dort."}).headers)

"""What one request may cost the tokenizer thread every route shares (bounds.py): a truncated input longer than
TEI's 250 characters per token is cut to that many before the tokenizer sees it, and a request's inputs take
turns with other requests' instead of holding the thread for all of them.

Oracles: the tokenizer's own inputs (recorded), the pipeline on the text as given (the cut keeps the tokens
truncation keeps), and the order in which the thread ran the requests' jobs."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest

pytest.importorskip("fastapi")
import httpx  # noqa: E402
from starlette.testclient import TestClient  # noqa: E402

import coulisse  # noqa: E402
from coulisse.interfaces.server import create_app  # noqa: E402
from coulisse.interfaces.server.bounds import CHARS_PER_TOKEN, TURN_CHARACTERS, cut_characters, parts  # noqa: E402


@pytest.fixture(scope="module")
def embedder(minilm_dir):
    return coulisse.pipeline("feature-extraction", model=str(minilm_dir))


def record_lengths(monkeypatch, tokenizer) -> list[int]:
    """The length of every text (each member of a pair) the Rust tokenizer is given from now on."""
    seen: list[int] = []
    encode = tokenizer._encode

    def recording(inputs, add_special_tokens):
        for x in inputs:
            seen.extend(len(member) for member in (x if isinstance(x, tuple) else (x,)))
        return encode(inputs, add_special_tokens)

    monkeypatch.setattr(tokenizer, "_encode", recording)
    return seen


def test_cut_characters_keeps_the_end_that_truncation_keeps():
    assert cut_characters([("abcdef", None)], 4, "right") == [("abcd", None)]
    assert cut_characters([("abcdef", None)], 4, "left") == [("cdef", None)]
    assert cut_characters([("abcdef", "xy")], 4, "right") == [("ab", "xy")]  # each member to half, as TEI
    assert cut_characters([("abc", None), ([1, 2, 3, 4, 5], None)], 4, "right") == [("abc", None),
                                                                                 ([1, 2, 3, 4, 5], None)]
    assert [len(p) for p in parts([5, 5, 20, 1, 1], lambda n: n, budget=10)] == [2, 1, 2]


def test_a_long_truncated_input_is_cut_before_the_tokenizer_sees_it(monkeypatch, classifier):
    """From the left, a text 10,000 characters past the bound (without spaces: no prefix path) is tokenized
    from its last 128,000 characters, to the same scores as the pipeline truncating the whole text; a pair's
    long member from half that. Before, the tokenizer was given all of it (2-5 s for 1.9 M characters)."""
    limit = 512 * CHARS_PER_TOKEN
    text = "a" * (limit + 10_000) + " mais la fin du film est superbe"
    seen = record_lengths(monkeypatch, classifier.tokenizer)
    with TestClient(create_app(classifier)) as c:
        served = c.post("/predict", json={"inputs": text, "truncation_direction": "left", "raw_scores": True})
        pair = c.post("/predict", json={"inputs": ["une question ?", text], "truncation_direction": "left"})
    assert served.status_code == 200 and pair.status_code == 200, (served.text, pair.text)
    assert max(seen) <= limit and sorted(seen)[-2] <= limit // 2, sorted(seen)[-3:]
    monkeypatch.undo()
    whole = classifier(text, truncation_side="left", function_to_apply="none", top_k=None)
    by_label = {r["label"]: r["score"] for r in served.json()}
    np.testing.assert_allclose([by_label[r["label"]] for r in whole], [r["score"] for r in whole], atol=1e-5)


def test_an_embedding_input_of_cjk_is_cut_too(monkeypatch, embedder):
    """CJK without spaces (3.7 s for 600 k characters on all-MiniLM-L6-v2, whose 256 tokens make the bound
    64,000 characters): the tokenizer gets 64,000, and the vector is the pipeline's of the whole text."""
    limit = 256 * CHARS_PER_TOKEN
    text = "猫が好きです。" * (limit // 7 + 2000)
    seen = record_lengths(monkeypatch, embedder.tokenizer)
    with TestClient(create_app(embedder)) as c:
        served = c.post("/embed", json={"inputs": text})
    assert served.status_code == 200 and max(seen) <= limit, max(seen)
    monkeypatch.undo()
    np.testing.assert_allclose(served.json()[0], embedder(text, pooling="auto", normalize=True), atol=1e-5)



def record_jobs(monkeypatch, tokenizer) -> tuple[list[str], threading.Event]:
    """The kind of each `encode_batch` job the tokenizer thread runs ("long" past 1,000 characters, else
    "short"), in order, and an event set when the first long one starts: it takes 0.5 s, so that a short request
    sent on the event arrives meanwhile."""
    jobs: list[str] = []
    first_long = threading.Event()
    encode = tokenizer.encode_batch

    def recording(texts, *args, **kwargs):
        kind = "long" if sum(len(t) for t in texts) > 1000 else "short"
        jobs.append(kind)
        if kind == "long" and not first_long.is_set():
            first_long.set()
            time.sleep(0.5)  # the short request arrives meanwhile
        return encode(texts, *args, **kwargs)

    monkeypatch.setattr(tokenizer, "encode_batch", recording)
    return jobs, first_long

@pytest.mark.parametrize("route", ["/predict", "/tokenize"])
def test_a_request_of_many_long_inputs_takes_turns_with_a_short_one(monkeypatch, classifier, route):
    """Six inputs of 18,000 characters each (one part each) and a short request sent while the first part
    runs: the thread runs the short one's job next, before the long request's other five. Before, the long
    request was one job and the short one waited for all of it."""
    long_text = "bon film " * 2000
    assert len(long_text) > TURN_CHARACTERS
    bodies = {"/predict": ({"inputs": [[long_text]] * 6}, {"inputs": "Super film !"}),
              "/tokenize": ({"inputs": [long_text] * 6}, {"inputs": "Super film !"})}
    jobs, first_long = record_jobs(monkeypatch, classifier.tokenizer)
    app = create_app(classifier)

    async def scenario():
        transport = httpx.ASGITransport(app=app)
        async with app.router.lifespan_context(app), httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            long = asyncio.ensure_future(c.post(route, json=bodies[route][0], timeout=60))
            await asyncio.get_running_loop().run_in_executor(None, first_long.wait, 10)
            short = await c.post(route, json=bodies[route][1], timeout=60)
            return await long, short

    long, short = asyncio.run(scenario())
    assert long.status_code == 200 and short.status_code == 200, (long.text[:200], short.text[:200])
    assert jobs == ["long", "short", *["long"] * 5], jobs

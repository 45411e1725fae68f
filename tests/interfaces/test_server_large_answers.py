"""A large answer (/embed_all of many long inputs: tens of MB of JSON) is encoded off the event loop, so the
server keeps answering other requests (/health, a load balancer's probe) meanwhile; and it is the same JSON."""

from __future__ import annotations

import json
import threading
import time

import numpy as np
import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("uvicorn")

from test_server_threads import start, stop  # noqa: E402

WORDS = ["le", "chat", "dort", "sur", "le", "canapé", "pendant", "que", "la", "pluie", "tombe", "doucement"]


@pytest.mark.slow
def test_health_answers_while_a_large_answer_is_encoded(factory):
    """128 inputs of 512 tokens through a tiny BERT (hidden size 32): ~2M floats, ~40 MB of JSON, whose
    encoding outlasts the model's forward. /health is polled the whole time; its slowest answer must be a
    small part of the large request's time (on the old code it waited for the whole encoding: 6.8 s of 12 s)."""
    model = factory.checkpoint("bert", base=True)
    proc, base = start(model, "--task", "feature-extraction", "--max-client-batch-size", "128")
    texts = [" ".join(WORDS[(i + j) % len(WORDS)] for j in range(600)) for i in range(128)]
    big: dict = {}

    def large_request() -> None:
        started = time.perf_counter()
        r = httpx.post(f"{base}/embed_all", json={"inputs": texts}, timeout=600)
        big.update(status=r.status_code, size=len(r.content), seconds=time.perf_counter() - started)

    try:
        sender = threading.Thread(target=large_request)
        sender.start()
        health = []
        while sender.is_alive():
            started = time.perf_counter()
            assert httpx.get(f"{base}/health", timeout=600).status_code == 200
            health.append(time.perf_counter() - started)
            time.sleep(0.02)
        sender.join()
    finally:
        stop(proc)
    assert big["status"] == 200 and big["size"] > 20_000_000, big
    assert len(health) >= 3, (big, health)  # polled while it ran
    assert max(health) < big["seconds"] / 4, (f"/health waited {max(health):.2f} s of the large request's "
                                              f"{big['seconds']:.2f} s", sorted(health)[-5:])


@pytest.mark.parametrize("value", [
    [[[0.1, -2.5e-08, 3.0], [1e30, 0.0, -0.0]]],
    [[{"id": 1, "text": "é\u2028\"", "special": False, "start": 0, "stop": 2}] * 5000],
    list(range(10_000)),
    {"data": [{"embedding": [0.5] * 9000, "index": 0}], "model": "m"},
    [],
    [[], [[]]],
])
def test_the_encoding_is_starlettes(value):
    """The same bytes as Starlette's JSONResponse (what every route answered before), pieces or not, where no
    float is a float32 (those are written as float32's text: test_server_float_text.py)."""
    from starlette.responses import JSONResponse

    from coulisse.interfaces.server.answers import encode_json

    assert encode_json(value) == JSONResponse(value).body


def test_float32_rows_are_written_as_their_lists():
    from coulisse.interfaces.server.answers import encode_json

    rows = [np.random.default_rng(0).standard_normal((7, 5)).astype(np.float32), np.zeros((0, 5), np.float32)]
    read = json.loads(encode_json(rows))
    assert [np.asarray(r, dtype=np.float32).shape for r in read] == [(7, 5), (0,)]
    assert (np.asarray(read[0], dtype=np.float32) == rows[0]).all()  # the same float32 values
    assert encode_json(rows) == encode_json([row.tolist() for row in rows])

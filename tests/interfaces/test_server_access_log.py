"""The access log: one line per request on `coulisse.access` (on by default in `coulisse serve`, as TEI logs each
request), with the method, the path without its query string, the status, the milliseconds, the `x-request-id`
the client got and the peer; requests whose client left (499), head timeouts (408) and unparsable heads (400)
included, which uvicorn's access log left out."""

from __future__ import annotations

import logging
import re
import socket
import time

import pytest

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")
from starlette.testclient import TestClient  # noqa: E402
from test_server_compat import Server  # noqa: E402
from test_server_shutdown import metric  # noqa: E402

from coulisse.interfaces.server import ServerSettings, create_app  # noqa: E402

LINE = re.compile(r"(?P<method>\S+) (?P<path>\S+) (?P<status>\d{3}) (?P<ms>[\d.]+|-) ms id=(?P<id>\S+) "
                  r"peer=(?P<peer>\S+)(?P<timings>( \w+_ms=\d+)*)")


def lines(records) -> list[dict]:
    found = []
    for record in records:
        if record.name == "coulisse.access":
            match = LINE.fullmatch(record.getMessage())
            assert match, record.getMessage()
            found.append(match.groupdict())
    return found


def test_each_request_is_one_line_with_its_id_and_duration(classifier, caplog):
    with caplog.at_level(logging.INFO, logger="coulisse.access"), \
            TestClient(create_app(classifier, ServerSettings(api_key="s3cr3t")), raise_server_exceptions=False) as c:
        key = {"Authorization": "Bearer s3cr3t"}
        ok = c.post("/predict?api_key=s3cr3t&x=1", json={"inputs": "Super film !"}, headers=key)
        refused = c.post("/predict", json={"inputs": "x"})  # no key: 401 before the body is read
        empty = c.post("/predict", json={"inputs": ""}, headers=key)
        c.head("/health")
        c.get("/a%0Ab%22c", headers=key)  # a newline and a quote in the path
    logged = lines(caplog.records)
    assert [(x["method"], x["path"], x["status"]) for x in logged] == [
        ("POST", "/predict", "200"), ("POST", "/predict", "401"), ("POST", "/predict", "400"),
        ("HEAD", "/health", "200"), ("GET", r"/a\nb\"c", "404")]
    assert [x["id"] for x in logged[:3]] == [r.headers["x-request-id"] for r in (ok, refused, empty)]
    assert all(x["peer"] == "testclient:50000" and float(x["ms"]) >= 0 for x in logged)
    assert re.fullmatch(r" tokenization_ms=\d+ queue_ms=\d+ inference_ms=\d+", logged[0]["timings"])
    assert "s3cr3t" not in caplog.text  # the query string and the key never reach the log
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="coulisse.access"), TestClient(create_app(classifier)) as c:
        c.get("/health")
    assert not lines(caplog.records)  # --no-access-log sets the logger to WARNING


@pytest.mark.slow
def test_a_real_server_logs_what_the_app_never_answered(tf_camembert_dir):
    """On stderr by default: a client that left while its inputs waited (499), a head that never finished (408,
    written by the HTTP layer), a head that does not parse (400); `--no-access-log` turns it off."""
    server = Server(tf_camembert_dir, "--header-timeout", "1", "--max-wait-ms", "1500", "--max-batch-requests", "1000")
    try:
        answered = httpx.post(f"{server.base}/predict", json={"inputs": "Super film !"})
        port = int(server.base.rsplit(":", 1)[1])
        body = b'{"inputs": [["un"], ["deux"]]}'
        with socket.create_connection(("127.0.0.1", port)) as gone:
            gone.sendall(b"POST /predict HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
                         b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
            deadline = time.monotonic() + 20
            while metric(server.base, "te_queue_size") < 2:  # queued: its batch waits 1.5 s
                assert time.monotonic() < deadline, "the inputs never reached the queue"
                time.sleep(0.02)
        with socket.create_connection(("127.0.0.1", port)) as slow:
            slow.sendall(b"POST /predict HTTP/1.1\r\nHost: t\r\n")  # the rest never comes
            assert slow.recv(4096).startswith(b"HTTP/1.1 408")
        with socket.create_connection(("127.0.0.1", port)) as garbage:
            garbage.sendall(b"NOT HTTP AT ALL\r\n\r\n")
            assert garbage.recv(4096).startswith(b"HTTP/1.1 400")
        deadline = time.monotonic() + 20
        while metric(server.base, 'te_request_failure{err="cancelled"}') < 1:
            assert time.monotonic() < deadline, "the client that left was not seen"
            time.sleep(0.05)
    finally:
        output = server.stop()
    logged = [LINE.fullmatch(x.split("coulisse.access: ", 1)[1]).groupdict() for x in output.splitlines()
              if "coulisse.access: " in x]
    seen = {(x["method"], x["path"], x["status"]) for x in logged}
    assert ("POST", "/predict", "200") in seen and ("POST", "/predict", "499") in seen, output
    assert ("-", "-", "408") in seen and ("-", "-", "400") in seen, output
    assert answered.headers["x-request-id"] in {x["id"] for x in logged}
    assert all(x["peer"].startswith("127.0.0.1:") for x in logged)
    quiet = Server(tf_camembert_dir, "--no-access-log")
    try:
        assert httpx.post(f"{quiet.base}/predict", json={"inputs": "x"}).status_code == 200
    finally:
        assert "coulisse.access" not in quiet.stop()

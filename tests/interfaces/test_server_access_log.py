"""The access log: one line per request on `coulisse.access` (on by default in `coulisse serve`, as TEI logs each
request), with the method, the path without its query string, the status, the milliseconds, the `x-request-id`
the client got and the peer; requests whose client left (499), head timeouts (408) and unparsable heads (400)
included, which uvicorn's access log left out."""

from __future__ import annotations

import json
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


def test_the_json_formatter_writes_each_access_line_as_one_object_with_its_fields(classifier, caplog):
    """--json-output's records: TEI's keys (timestamp, level, message, target), the access line's fields typed
    (status and timings numbers), and a path with a newline and a quote kept whole in one line."""
    from coulisse.interfaces.logs import JsonFormatter

    with caplog.at_level(logging.INFO, logger="coulisse.access"), \
            TestClient(create_app(classifier), raise_server_exceptions=False) as c:
        ok = c.post("/predict", json={"inputs": "Super film !"})
        c.get("/a%0Ab%22c")
    formatted = [JsonFormatter().format(r) for r in caplog.records if r.name == "coulisse.access"]
    assert all("\n" not in x for x in formatted)
    first, second = (json.loads(x) for x in formatted)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", first["timestamp"])
    assert (first["level"], first["target"], first["method"], first["path"], first["status"]) == (
        "INFO", "coulisse.access", "POST", "/predict", 200)
    assert first["request_id"] == ok.headers["x-request-id"] and first["peer"] == "testclient:50000"
    assert first["message"] == caplog.records[0].getMessage()
    assert isinstance(first["duration_ms"], float) and first["duration_ms"] >= 0
    assert all(isinstance(first[k], int) for k in ("tokenization_ms", "queue_ms", "inference_ms"))
    assert (second["path"], second["status"]) == ('/a\nb"c', 404) and "tokenization_ms" not in second
    warned = logging.LogRecord("coulisse.x", logging.WARNING, __file__, 1, "disk %s", ("full",), None)
    assert (json.loads(JsonFormatter().format(warned))["level"], json.loads(JsonFormatter().format(warned))[
        "message"]) == ("WARN", "disk full")  # tracing's name, as TEI writes it
    try:
        raise ValueError("boom")
    except ValueError:
        import sys

        failed = logging.LogRecord("coulisse.x", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    assert "ValueError: boom" in json.loads(JsonFormatter().format(failed))["exception"]


@pytest.mark.slow
def test_json_output_makes_every_line_of_a_real_server_json(tmp_path):
    """`coulisse serve --json-output` (TEI's flag): every line on stderr is one JSON object, uvicorn's and the
    startup line included, and the access lines carry their fields; a failed start's one-line error too, with
    TEI's JSON_OUTPUT variable as with the flag. Before, the flag was accepted without effect."""
    import os
    import subprocess

    from test_server_shutdown import SERVE

    server = Server("coulisse/mini-allocine", "--json-output")
    try:
        answered = httpx.post(f"{server.base}/predict", json={"inputs": "Super film !"})
        assert answered.status_code == 200
    finally:
        output = server.stop()
    records = [json.loads(x) for x in output.splitlines()]  # every line parses
    assert all({"timestamp", "level", "message", "target"} <= set(x) for x in records)
    started = [x for x in records if x["message"].startswith("coulisse serve: ")]
    assert len(started) == 1 and (started[0]["task"], started[0]["dtype"]) == ("text-classification", "float32")
    assert any(x["target"] == "uvicorn.error" and "Started server process" in x["message"] for x in records)
    assert not any("color_message" in x for x in records)  # uvicorn's terminal colours stay out
    access = [x for x in records if x["target"] == "coulisse.access" and x["path"] == "/predict"]
    assert [(x["method"], x["status"], x["request_id"]) for x in access] == [
        ("POST", 200, answered.headers["x-request-id"])]
    env = {k: v for k, v in os.environ.items() if not k.startswith("COULISSE_")}
    for args, more in ((["--json-output"], {}), ([], {"JSON_OUTPUT": "true"})):
        failed = subprocess.run([*SERVE, "--model", str(tmp_path / "absent"), *args], env={**env, **more},
                                capture_output=True, text=True, timeout=120)
        assert failed.returncode == 1, failed.stderr
        [error] = [json.loads(x) for x in failed.stderr.splitlines()]
        assert error["level"] == "ERROR" and "absent" in error["message"] and "Traceback" not in failed.stderr

"""The connection layer of `coulisse serve` (protocol.py) on a real uvicorn server in a thread, built by the same
`uvicorn_config` as the command, over a small ASGI app (the layer never looks at the model): past
--max-connections the longest idle connection makes room and liveness probes are answered; idle connections
wait --keep-alive-timeout, not the head deadline; an answer the client does not read is dropped after
--send-timeout."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from types import SimpleNamespace

import pytest
from sockets import wait_closed

httpx = pytest.importorskip("httpx")
pytest.importorskip("uvicorn")

from coulisse.interfaces.server.guard import Drain  # noqa: E402
from coulisse.interfaces.server.limits import CONNECTION  # noqa: E402
from coulisse.interfaces.server.metrics import ServerMetrics  # noqa: E402
from coulisse.interfaces.server.protocol import (  # noqa: E402
    EVICTABLE_AFTER_S,
    DrainingServer,
    ProtocolLimits,
    uvicorn_config,
)

BIG = 24_000_000  # GET /big: far more than the kernel's socket buffers hold


class App:
    """200 `ok` on every path (`/big`: BIG bytes), as the server's routes would answer them."""

    def __init__(self):
        self.state = SimpleNamespace(metrics=ServerMetrics())

    async def __call__(self, scope, receive, send):
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            return await send({"type": "lifespan.shutdown.complete"})
        body = b"x" * BIG if scope["path"] == "/big" else b"ok"
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    def failures(self, kind: str) -> float:
        return self.state.metrics.request_failure.value(err=kind)


@contextlib.contextmanager
def serving(max_connections: int = 100, header_timeout: float = 5.0, keep_alive: float = 5.0,
            send_timeout: float = 60.0):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app = App()
    limits = ProtocolLimits(header_timeout, max_connections, CONNECTION.max_head_bytes, send_timeout)
    server = DrainingServer(uvicorn_config(app, "127.0.0.1", port, limits, keep_alive_timeout=keep_alive,
                                           shutdown_timeout=1), Drain())
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "the server did not start"
        time.sleep(0.02)
    try:
        yield SimpleNamespace(port=port, app=app)
    finally:
        server.should_exit = True
        thread.join(10)


def connect(port: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port))
    s.settimeout(5)
    return s


def answer(s: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """One answer (status, headers, body) read from `s`."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(65536)
        assert chunk, f"closed before an answer: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    while len(body) < int(headers["content-length"]):
        body += s.recv(65536)
    return int(lines[0].split()[1]), headers, body


def get(path: str, method: str = "GET") -> bytes:
    return f"{method} {path} HTTP/1.1\r\nHost: t\r\n\r\n".encode()


# -- finding 2: --max-connections ---------------------------------------------------------------------------


def test_idle_and_slow_connections_make_room_for_a_new_client():
    """Four connections at the cap sending half a head and nothing more (an attacker's trickle), all older
    than EVICTABLE_AFTER_S: a fifth client is served, the oldest trickle is answered 503 and closed. Before,
    every newcomer got 503 until the trickles' --header-timeout."""
    with serving(max_connections=4, header_timeout=30) as server:
        trickles = [connect(server.port) for _ in range(4)]
        try:
            for s in trickles:
                s.sendall(b"POST /embed HTTP/1.1\r\nHost: t\r\nX-Slow: ")
                time.sleep(0.05)  # the first one is the oldest
            time.sleep(EVICTABLE_AFTER_S + 0.2)
            with connect(server.port) as newcomer:
                newcomer.sendall(get("/embed", "POST"))
                assert answer(newcomer)[0] == 200
            status, headers, body = answer(trickles[0])
            assert status == 503 and headers["connection"] == "close", body
            assert "--max-connections" in json.loads(body)["error"] and wait_closed(trickles[0])
            # the others keep their place
            trickles[1].sendall(b"y\r\n\r\n")
            assert answer(trickles[1])[0] == 200
        finally:
            for s in trickles:
                s.close()


def test_liveness_probes_are_answered_past_the_cap():
    """At the cap with young connections (none may be closed to make room): a request on one more is refused
    503, but GET and HEAD on /health, /ping and / (a model's /NAME/health too) are answered, and the connection
    then closed; a POST to /health is not a probe."""
    with serving(max_connections=3) as server:
        held = [connect(server.port) for _ in range(3)]
        try:
            for request in (get("/health"), get("/ping"), get("/"), get("/health", "HEAD"), get("/minilm/health")):
                with connect(server.port) as probe:
                    probe.sendall(request)
                    status, headers, _ = answer(probe) if b"HEAD" not in request else (*head_of(probe), b"")
                    assert status == 200 and headers["connection"] == "close", request
                    assert wait_closed(probe)
            for request in (get("/info"), get("/health", "POST"), get("/a/b/health")):
                with connect(server.port) as refused:
                    refused.sendall(request)
                    status, headers, body = answer(refused)
                    assert status == 503 and headers["retry-after"] == "1", request
                    assert json.loads(body)["error_type"] == "Overloaded"
        finally:
            for s in held:
                s.close()


def head_of(s: socket.socket) -> tuple[int, dict[str, str]]:
    data = b""
    while b"\r\n\r\n" not in data:
        data += s.recv(65536)
    lines = data.partition(b"\r\n\r\n")[0].decode("latin-1").split("\r\n")
    return int(lines[0].split()[1]), {k.lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])}


# -- finding 4: keep-alive ----------------------------------------------------------------------------------


def test_the_default_keep_alive_outlasts_the_clients_pools():
    """A pooled client reuses an idle connection until its own expiry: the server must keep it longer, or the
    reuse may meet the server's close (a reset, which requests and httpx do not retry for a POST). httpx's
    pool expires at 5 s (uvicorn's default was the same 5 s); AWS load balancers and nginx keep 60 s."""
    assert CONNECTION.keep_alive_timeout > max(httpx.Limits().keepalive_expiry or 0, 5.0, 60.0)


def test_an_idle_connection_waits_the_keep_alive_then_its_head_the_header_timeout():
    """Idle between requests longer than --header-timeout: still served (the head deadline starts with the
    next request's first byte); a head begun then and left unfinished is answered 408 after --header-timeout;
    an idle connection closes after --keep-alive-timeout."""
    with serving(header_timeout=0.6, keep_alive=2.0) as server:
        with connect(server.port) as s:
            s.sendall(get("/a"))
            assert answer(s)[0] == 200
            time.sleep(1.2)  # twice the header timeout
            s.sendall(get("/b"))
            assert answer(s)[0] == 200
            time.sleep(1.0)
            s.sendall(b"GET /c HTTP/1.1\r\n")
            started = time.monotonic()
            status, _, body = answer(s)
            assert status == 408 and json.loads(body)["error_type"] == "Timeout"
            assert 0.5 <= time.monotonic() - started < 1.5
        with connect(server.port) as s:
            s.sendall(get("/a"))
            assert answer(s)[0] == 200
            idle = time.monotonic()
            assert wait_closed(s, timeout=5) and 1.9 <= time.monotonic() - idle < 3.5


# -- finding 5: --send-timeout ------------------------------------------------------------------------------


def small_receive_buffer() -> socket.socket:
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    return s


def test_an_answer_the_client_does_not_read_is_dropped_after_the_send_timeout():
    """Two clients ask for 24 MB through a 4 KiB receive buffer. One reads nothing: after --send-timeout the
    server drops the answer and aborts the connection (before, the answer stayed in memory as long as the
    client kept its socket). The other reads slowly (a few hundred kB/s, the kernel's send buffer of several MB
    in between) for longer than --send-timeout: the deadline is about progress, so it is not cut."""
    with serving(send_timeout=1.0) as server:
        idle, reader = small_receive_buffer(), small_receive_buffer()
        try:
            for s in (idle, reader):
                s.connect(("127.0.0.1", server.port))
                s.sendall(get("/big"))
            reader.settimeout(5)
            received, start = 0, time.monotonic()
            while time.monotonic() - start < 2.5:
                chunk = reader.recv(65536)
                assert chunk, f"the reader was cut after {received} bytes"
                received += len(chunk)
                time.sleep(0.01)
            assert server.app.failures("send_timeout") == 1, received  # the idle one only
            assert reader.recv(65536)
            idle.settimeout(5)
            got = 0
            with contextlib.suppress(ConnectionResetError):
                while chunk := idle.recv(1 << 20):
                    got += len(chunk)
            assert got < BIG / 2, got  # what the kernel's buffers held, then the end
        finally:
            idle.close()
            reader.close()

"""`coulisse serve` against hostile clients, over raw sockets to a real server process on 127.0.0.1.

What is asserted: the key is checked before a byte of the body is read (401 before 413/422); slow heads
and slow bodies are answered 408 and closed after their timeouts; connections past --max-connections get a
JSON 503 with Retry-After (a health probe is answered); 429 and 503 carry Retry-After; HEAD works on every
GET route; the HTTP parser's errors are JSON; 200 slow clients cost a bounded amount of memory; SIGTERM past
--shutdown-timeout answers the requests in flight with the JSON 503 and exits 0 without a traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
from sockets import wait_closed

pytestmark = pytest.mark.slow  # each server takes seconds to start
httpx = pytest.importorskip("httpx")
pytest.importorskip("uvicorn")

from starlette.testclient import TestClient  # noqa: E402

import coulisse  # noqa: E402
from coulisse.interfaces.server import ServerSettings, create_app  # noqa: E402

SERVE = [sys.executable, "-c", "from coulisse.interfaces.cli import main; main()", "serve"]
KEY = "k3y"
AUTH = f"Authorization: Bearer {KEY}\r\n".encode()
HEADER_TIMEOUT = 1.5
BODY_TIMEOUT = 1.5
KEEP_ALIVE = 1.0
PAYLOAD_LIMIT = 2_000_000  # the default


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    proc: subprocess.Popen
    port: int
    log: Path

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def rss_kib(self) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise AssertionError("no VmRSS line")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def start(model: Path, log: Path, *options: str) -> Server:
    """A `coulisse serve` process, once /health answers 200; its output goes to `log`."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("COULISSE_")}
    with log.open("w") as out:
        proc = subprocess.Popen([*SERVE, "--model", str(model), "--port", str(port), *options],
                                env=env, stdout=out, stderr=subprocess.STDOUT)
    server = Server(proc, port, log)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"the server exited with {proc.returncode}:\n{log.read_text()}")
        try:
            if httpx.get(f"{server.base}/health", timeout=1).status_code == 200:
                return server
        except httpx.TransportError:
            time.sleep(0.1)
    server.stop()
    pytest.fail("the server did not answer /health within 120 s")


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes
    closed: bool  # the server closed the connection after this answer
    seconds: float  # from the first byte sent to the end of the answer

    def json(self) -> dict:
        assert self.headers.get("content-type", "").startswith("application/json"), self
        return json.loads(self.body)


def read_answer(sock: socket.socket, head_only: bool = False, timeout: float = 10) -> tuple[Answer, bytes]:
    """One HTTP/1.1 answer framed by Content-Length (or by the close); the bytes read past it."""
    sock.settimeout(timeout)
    start, data = time.monotonic(), b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise AssertionError(f"connection closed before a whole answer: {data!r}")
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    length = 0 if head_only else int(headers.get("content-length", -1))
    closed = False
    while length < 0 or len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            closed = True
            break
        rest += chunk
    body, extra = (rest, b"") if length < 0 else (rest[:length], rest[length:])
    if not closed and headers.get("connection") == "close":
        closed = wait_closed(sock, timeout)
    return Answer(int(lines[0].split()[1]), headers, body, closed, time.monotonic() - start), extra


def exchange(port: int, data: bytes, timeout: float = 10) -> Answer:
    with socket.create_connection(("127.0.0.1", port)) as s:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # answered before the end: fine
            s.sendall(data)
        return read_answer(s, timeout=timeout)[0]


def post(path: str, body: bytes, *extra: bytes, length: int | None = None) -> bytes:
    return (b"POST " + path.encode() + b" HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n" + b"".join(extra)
            + b"Content-Length: %d\r\n\r\n" % (len(body) if length is None else length) + body)


def assert_error(answer: Answer, status: int, error_type: str) -> str:
    assert answer.status == status, answer
    body = answer.json()
    assert set(body) == {"error", "error_type"} and body["error_type"] == error_type, body
    return body["error"]


@pytest.fixture(scope="module")
def server(tf_camembert_dir, tmp_path_factory):
    s = start(tf_camembert_dir, tmp_path_factory.mktemp("serve") / "log", "--api-key", KEY,
              "--header-timeout", str(HEADER_TIMEOUT), "--body-timeout", str(BODY_TIMEOUT),
              "--keep-alive-timeout", str(KEEP_ALIVE), "--payload-limit", str(PAYLOAD_LIMIT),
              "--max-connections", "500")
    yield s
    s.stop()


# -- the key first ------------------------------------------------------------------------------------


def test_the_key_is_checked_before_the_body_is_read(server):
    """Headers announcing 10 MB and no body: a server that read the body would wait for it (and answer 408
    after --body-timeout); the 401 comes at once, and the connection is closed so nothing more is read."""
    huge = exchange(server.port, post("/predict", b"", length=10_000_000))
    assert "API key" in assert_error(huge, 401, "Unauthorized")
    assert huge.headers["www-authenticate"] == "Bearer"
    assert huge.closed and huge.seconds < BODY_TIMEOUT / 2
    chunked = exchange(server.port, b"POST /embed HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n1000\r\n")
    assert_error(chunked, 401, "Unauthorized")
    assert chunked.closed and chunked.seconds < BODY_TIMEOUT / 2
    # Malformed JSON and an unknown route: 401, not 400 or 404. With the key, the usual answers.
    assert_error(exchange(server.port, post("/predict", b"{not json")), 401, "Unauthorized")
    assert_error(exchange(server.port, post("/predict", b"{not json", b"Authorization: Bearer wrong\r\n")),
                 401, "Unauthorized")
    assert_error(exchange(server.port, b"GET /nope HTTP/1.1\r\nHost: t\r\n\r\n"), 401, "Unauthorized")
    assert_error(exchange(server.port, post("/predict", b"{not json", AUTH)), 400, "BadRequest")
    assert_error(exchange(server.port, b"GET /nope HTTP/1.1\r\nHost: t\r\n" + AUTH + b"\r\n"), 404, "NotFound")
    # TEI's public routes need no key; POST on one of them does.
    for path in ("/health", "/metrics", "/openapi.json"):
        assert exchange(server.port, f"GET {path} HTTP/1.1\r\nHost: t\r\n\r\n".encode()).status == 200
    assert_error(exchange(server.port, post("/health", b"{}")), 401, "Unauthorized")


def test_an_oversized_body_is_refused_from_its_length_or_as_it_arrives(server):
    declared = exchange(server.port, post("/predict", b"", AUTH, length=PAYLOAD_LIMIT + 1))
    assert f"({PAYLOAD_LIMIT + 1} bytes)" in assert_error(declared, 413, "Validation")
    assert declared.closed and declared.seconds < BODY_TIMEOUT / 2  # refused before any body byte arrived
    with socket.create_connection(("127.0.0.1", server.port)) as s:
        s.sendall(b"POST /predict HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
                  b"Transfer-Encoding: chunked\r\n" + AUTH + b"\r\n")
        chunk = b"x" * 700_000
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            for _ in range(3):  # 2.1 MB > 2 MB: refused after the third chunk, not at the end of the body
                s.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        counted, _ = read_answer(s)
    assert "--payload-limit" in assert_error(counted, 413, "Validation") and counted.closed
    # A chunked body under the limit is served.
    body = b'{"inputs": "Un film magnifique."}'
    ok = exchange(server.port, b"POST /predict HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
                  b"Transfer-Encoding: chunked\r\n" + AUTH + b"\r\n%x\r\n%s\r\n0\r\n\r\n" % (len(body), body))
    assert ok.status == 200 and json.loads(ok.body)[0]["label"] in ("POSITIVE", "NEGATIVE")


# -- slow clients -------------------------------------------------------------------------------------


def dribble(port: int, n: int, payload: bytes, every_s: float, limit_s: float) -> list[tuple[float, bytes]]:
    """`n` connections each sending `payload` one byte per `every_s`; for each, when the server closed it
    (seconds after its connect began: a clock read after `connect` returned could start late on a loaded machine,
    and a close then look early) and what it answered. Bounded by `limit_s`."""
    socks, opened, answers, closed_at = [], [], [b""] * n, [None] * n
    for _ in range(n):
        opened.append(time.monotonic())
        s = socket.create_connection(("127.0.0.1", port))
        s.setblocking(False)
        socks.append(s)
    sent, start = 0, time.monotonic()
    try:
        while any(c is None for c in closed_at) and time.monotonic() - start < limit_s:
            if sent < len(payload) and time.monotonic() - start >= sent * every_s:
                for i, s in enumerate(socks):
                    if closed_at[i] is None:
                        with contextlib.suppress(OSError):
                            s.send(payload[sent:sent + 1])
                sent += 1
            for i, s in enumerate(socks):
                if closed_at[i] is None:
                    try:
                        data = s.recv(65536)
                    except BlockingIOError:
                        continue
                    except ConnectionResetError:
                        data = b""
                    answers[i] += data
                    if not data:
                        closed_at[i] = time.monotonic() - opened[i]
            time.sleep(0.01)
    finally:
        for s in socks:
            s.close()
    return list(zip(closed_at, answers, strict=True))


def test_slow_heads_are_answered_408_and_closed_after_the_header_timeout(server):
    """20 clients sending a head one byte per 0.2 s (it would take 6 s): each is answered 408 (JSON) and
    closed once --header-timeout has passed since it connected, not before."""
    head = b"POST /predict HTTP/1.1\r\nHost: t\r\nX-Slow: " + b"y" * 10 + b"\r\n\r\n"
    results = dribble(server.port, 20, head, every_s=0.2, limit_s=HEADER_TIMEOUT + 5)
    for closed_at, answer in results:
        assert closed_at is not None, "a slow head was never cut"
        assert HEADER_TIMEOUT - 0.05 <= closed_at <= HEADER_TIMEOUT + 1.5, closed_at
        status, _, body = answer.partition(b"\r\n\r\n")
        assert status.startswith(b"HTTP/1.1 408 "), answer
        assert json.loads(body)["error_type"] == "Timeout"


def test_an_idle_connection_is_closed_after_the_keep_alive_timeout(server):
    (closed_at, answer), = dribble(server.port, 1, b"", every_s=1, limit_s=KEEP_ALIVE + 5)
    assert answer == b"" and KEEP_ALIVE - 0.05 <= closed_at <= KEEP_ALIVE + 1.5


def test_a_slow_body_is_answered_408(server):
    with socket.create_connection(("127.0.0.1", server.port)) as s:
        s.sendall(post("/predict", b'{"inputs": ', AUTH, length=100))
        answer, _ = read_answer(s)
    assert "--body-timeout" in assert_error(answer, 408, "Timeout")
    assert answer.closed and BODY_TIMEOUT - 0.05 <= answer.seconds <= BODY_TIMEOUT + 1.5


def peak_rss_while(server: Server, action) -> int:
    """The server's highest RSS (KiB) sampled every 20 ms while `action()` runs."""
    peak, done = [server.rss_kib()], [False]

    def watch():
        while not done[0]:
            peak[0] = max(peak[0], server.rss_kib())
            time.sleep(0.02)

    with ThreadPoolExecutor(1) as pool:
        watcher = pool.submit(watch)
        try:
            action()
        finally:
            done[0] = True
            watcher.result()
    return max(peak[0], server.rss_kib())


@pytest.mark.slow
def test_200_slow_clients_cost_bounded_memory(server):
    """Two waves of 200 clients; the server's RSS is sampled throughout.

    1. Without the key, each announcing a 2 MB body and pushing 1 MiB of it at once. The 401 goes out as
       soon as the head is parsed and the connection closes, but uvicorn has parsed what it read meanwhile:
       reads of 64 KiB (protocol.READ_SIZE) and a pause once the body passes its 64 KiB high-water mark,
       so at most 128 KiB per connection, 200 x 128 KiB = 25 MiB, all freed once answered. Before the
       key was checked first, each 1 MiB was kept while the server waited for the rest of the body
       (measured with the previous server: +183 MiB).
    2. Dribbling a head a byte per 0.1 s until --header-timeout cuts it. Each holds uvicorn's protocol,
       h11's parser and the asyncio transport (about 5 KiB measured for an idle connection) and the head
       so far (at most h11's 16 KiB, 80 bytes here): 200 x 24 KiB = 4.7 MiB.
    """
    for _ in range(3):  # the refusal's code paths warmed before the first reading
        exchange(server.port, post("/predict", b"x" * 1_048_576, length=2_000_000))
    time.sleep(0.2)
    before = server.rss_kib()

    def refused_bodies():
        socks = []
        try:
            for _ in range(200):
                s = socket.create_connection(("127.0.0.1", server.port))
                s.setblocking(False)
                with contextlib.suppress(OSError):  # answered and closed meanwhile
                    s.send(post("/predict", b"x" * 1_048_576, length=2_000_000))
                socks.append(s)
            time.sleep(1.0)
        finally:
            for s in socks:
                s.close()

    bodies = peak_rss_while(server, refused_bodies) - before
    time.sleep(0.5)
    between = server.rss_kib()
    head = b"POST /predict HTTP/1.1\r\nHost: t\r\nX-Slow: " + b"y" * 40 + b"\r\n\r\n"
    results = []
    heads = peak_rss_while(server, lambda: results.extend(
        dribble(server.port, 200, head, every_s=0.1, limit_s=HEADER_TIMEOUT + 8))) - between
    assert all(closed_at is not None for closed_at, _ in results)
    print(f"RSS {before} KiB; +{bodies} KiB with 200 refused bodies; +{heads} KiB with 200 slow heads")
    assert bodies < 25 * 1024, bodies
    assert heads < 4.7 * 1024, heads


# -- limits answered with Retry-After -------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_server(tf_camembert_dir, tmp_path_factory):
    """Six connections, three requests in flight; a batch waits 4 s for company; 1 s to drain on SIGTERM.
    The last test of this module stops it."""
    s = start(tf_camembert_dir, tmp_path_factory.mktemp("serve") / "log", "--max-connections", "6",
              "--max-concurrent-requests", "3", "--max-wait-ms", "4000", "--max-batch-requests", "1000",
              "--shutdown-timeout", "1", "--header-timeout", "20", "--keep-alive-timeout", "20")
    yield s
    s.stop()


def in_flight(server: Server) -> float:
    for line in httpx.get(f"{server.base}/metrics", timeout=5).text.splitlines():
        if line.startswith("te_requests_in_flight "):
            return float(line.split()[1])
    return 0.0


def hold_requests(server: Server, n: int) -> list[socket.socket]:
    """`n` connections, each with a /predict waiting in the batcher's queue."""
    held = []
    for i in range(n):
        held.append(socket.create_connection(("127.0.0.1", server.port)))
        held[-1].sendall(post("/predict", b'{"inputs": "film %d"}' % i))
    deadline = time.monotonic() + 10
    while in_flight(server) < n:
        assert time.monotonic() < deadline, "the requests never reached the queue"
        time.sleep(0.02)
    return held


def test_connections_past_the_cap_get_503_with_retry_after(small_server):
    """Six fresh connections (too young to be closed to make room): a seventh is refused 503, but for a
    liveness probe, which is answered (and its connection closed)."""
    held = [socket.create_connection(("127.0.0.1", small_server.port)) for _ in range(6)]
    try:
        refused = exchange(small_server.port, b"GET /info HTTP/1.1\r\nHost: t\r\n\r\n")
        assert "--max-connections" in assert_error(refused, 503, "Overloaded")
        assert refused.headers["retry-after"] == "1" and refused.closed
        probe = exchange(small_server.port, b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n")
        assert probe.status == 200 and probe.closed
        # The held connections are served.
        held[0].sendall(b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n")
        assert read_answer(held[0])[0].status == 200
    finally:
        for s in held:
            s.close()
    deadline = time.monotonic() + 5
    while exchange(small_server.port, b"GET /info HTTP/1.1\r\nHost: t\r\n\r\n").status != 200:
        assert time.monotonic() < deadline, "closed connections still count against the cap"
        time.sleep(0.05)


def test_429_carries_retry_after(small_server):
    held = hold_requests(small_server, 3)
    try:
        refused = exchange(small_server.port, post("/predict", b'{"inputs": "de trop"}'))
        assert "--max-concurrent-requests" in assert_error(refused, 429, "Overloaded")
        assert refused.headers["retry-after"] == "1"
        assert [read_answer(s)[0].status for s in held] == [200] * 3
    finally:
        for s in held:
            s.close()


@pytest.fixture(scope="module")
def classifier(tf_camembert_dir):
    return coulisse.pipeline("sentiment-analysis", model=str(tf_camembert_dir))


def test_503_unhealthy_carries_retry_after(classifier):
    r = TestClient(create_app(classifier)).get("/health")  # no lifespan: the batcher never started
    assert r.status_code == 503 and r.json()["error_type"] == "Unhealthy" and r.headers["retry-after"] == "5"


def test_a_huge_token_id_is_named_by_its_first_digits(classifier):
    """/decode (and the ids an embedding route takes) given a 400-digit "token id": a short 422 that names its
    first digits and length, not an answer that repeats every digit."""
    from coulisse.interfaces.server.embedding import id_item
    from coulisse.interfaces.server.errors import ServerError

    huge = "9" * 400
    with TestClient(create_app(classifier)) as client:
        r = client.post("/decode", content=f'{{"ids": [[{huge}]]}}', headers={"content-type": "application/json"})
    assert r.status_code == 422 and "999999999999... (400 digits)" in r.json()["error"] and len(r.text) < 300, r.text
    with pytest.raises(ServerError, match=r"holds token id 999999999999\.\.\. \(400 digits\), outside") as info:
        id_item([5, int(huge), 6], vocab_size=100, max_length=8, truncate=True, field="inputs")
    assert len(str(info.value)) < 200


def asgi_call(app, method: str, headers: list[tuple[bytes, bytes]], receive) -> list[dict]:
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method, "scheme": "http",
             "path": "/predict", "raw_path": b"/predict", "query_string": b"", "root_path": "", "headers": headers,
             "server": ("t", 80), "client": ("c", 1)}
    sent: list[dict] = []

    async def send(message):
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    return sent


def test_in_process_the_refusals_never_call_receive(classifier):
    """The app itself, without uvicorn: a `receive` that fails the test if called. Without the key, or with
    a Content-Length over the limit, the answer comes without a single read."""
    async def receive():
        raise AssertionError("the body was read")

    app = create_app(classifier, ServerSettings(api_key=KEY, payload_limit=1000))
    length = [(b"content-type", b"application/json"), (b"content-length", b"10000000")]
    for headers, status in ((length, 401), ([*length, (b"authorization", b"Bearer wrong")], 401),
                            ([(b"authorization", f"Bearer {KEY}".encode()), *length], 413)):
        sent = asgi_call(app, "POST", headers, receive)
        assert sent[0]["status"] == status and (b"connection", b"close") in sent[0]["headers"]


def test_in_process_a_slow_body_is_408(classifier):
    async def receive():
        await asyncio.sleep(10)

    app = create_app(classifier, ServerSettings(body_timeout=0.2))
    start = time.monotonic()
    sent = asgi_call(app, "POST", [(b"content-length", b"10"), (b"content-type", b"application/json")], receive)
    assert sent[0]["status"] == 408 and json.loads(sent[1]["body"])["error_type"] == "Timeout"
    assert 0.2 <= time.monotonic() - start < 2


# -- HEAD, and the parser's errors ------------------------------------------------------------------


def test_head_answers_every_get_route_without_a_body(server):
    """HEAD is GET's status and headers; then the next answer on the same connection starts at once (no
    body bytes in between)."""
    schema = httpx.get(f"{server.base}/openapi.json", timeout=5).json()
    paths = sorted({p for p, methods in schema["paths"].items() if "get" in methods}
                   | {"/docs", "/openapi.json", "/api-doc/openapi.json"})
    assert {"/health", "/info", "/metrics"} <= set(paths)
    auth = {"Authorization": f"Bearer {KEY}"}
    served = httpx.get(f"{server.base}/v1/models", headers=auth, timeout=5).json()["data"][0]["id"]
    paths = [path.replace("{model}", served) for path in paths]  # OpenAI's models.retrieve
    for path in paths:
        get = httpx.get(f"{server.base}{path}", headers=auth, timeout=5)
        with socket.create_connection(("127.0.0.1", server.port)) as s:
            s.sendall(f"HEAD {path} HTTP/1.1\r\nHost: t\r\n".encode() + AUTH + b"\r\n"
                      b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n")
            head, extra = read_answer(s, head_only=True)
            assert head.status == get.status_code == 200, path
            assert head.headers.get("content-type") == get.headers.get("content-type"), path
            if path != "/metrics":  # counters move between the two calls
                assert int(head.headers["content-length"]) == len(get.content), path
            assert extra == b"" or extra.startswith(b"HTTP/1.1 200"), (path, extra[:80])
            s.settimeout(5)
            while extra.count(b"\r\n\r\n") < 1:
                extra += s.recv(65536)
            assert extra.startswith(b"HTTP/1.1 200"), (path, extra[:80])
    with socket.create_connection(("127.0.0.1", server.port)) as s:
        s.sendall(b"HEAD /predict HTTP/1.1\r\nHost: t\r\n" + AUTH + b"\r\n")
        post_only, extra = read_answer(s, head_only=True)
    assert post_only.status == 405 and post_only.headers["content-type"] == "application/json" and extra == b""


@pytest.mark.parametrize("request_bytes, status, error_type", [
    (b"GARBAGE\r\n\r\n", 400, "BadRequest"),
    (b"GET /health HTTP/1.1\r\nHost: t\r\nno colon here\r\n\r\n", 400, "BadRequest"),
    (b"GET /health HTTP/1.1\r\nHost: t\r\nContent-Length: nope\r\n\r\n", 400, "BadRequest"),
    (b"GET /health HTTP/1.1\r\nHost: t\r\nX-Big: " + b"a" * 20_000 + b"\r\n\r\n", 431, "BadRequest"),
    (b"POST /predict HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n" + AUTH + b"\r\nzz\r\n\r\n", 400,
     "BadRequest"),
])
def test_parser_errors_are_json(server, request_bytes, status, error_type):
    answer = exchange(server.port, request_bytes)
    assert_error(answer, status, error_type)
    assert answer.closed


# -- SIGTERM past the shutdown timeout ----------------------------------------------------------------


def test_sigterm_past_the_shutdown_timeout_answers_503_and_exits_0(small_server):
    """Three requests wait 4 s for their batch; SIGTERM with a 1 s --shutdown-timeout: each gets the JSON
    503 of the table with Retry-After, the process exits 0, and its log (this whole module's) holds no
    traceback. Last in this module: it stops the server."""
    held = hold_requests(small_server, 3)
    try:
        small_server.proc.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        answers = [read_answer(s)[0] for s in held]
        answered = time.monotonic() - signalled
        code = small_server.proc.wait(timeout=20)
    finally:
        for s in held:
            s.close()
    log = small_server.log.read_text()
    for answer in answers:
        assert "--shutdown-timeout" in assert_error(answer, 503, "Unhealthy"), log
        assert answer.headers["retry-after"] == "5" and answer.closed
    assert 0.9 <= answered < 4  # cut by the timeout, before the batch's 4 s were up
    assert code == 0, log
    assert "Traceback" not in log and "Exception in ASGI application" not in log, log

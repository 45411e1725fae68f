"""The ASGI middleware every request crosses before a route, in this order:

0. A head larger than 16 KiB is answered 431 (uvicorn's parser only bounds one that arrives in pieces).
1. `HEAD` is answered as the `GET` of the same path, without the body (every GET route gets HEAD).
2. The API key, from the `Authorization` header alone: a request without it is answered 401 before one
   byte of its body is read. Every route needs the key except GET on `PUBLIC` paths (TEI's: health,
   metrics, the OpenAPI pages), so a route added later is protected without a word.
3. A body sent as anything but JSON (a form, text/plain) is answered 415 before reading it.
4. The body: a `Content-Length` above `--payload-limit` is refused before reading; a chunked body is
   counted as it arrives and refused once past the limit; a body slower than `--body-timeout` is
   answered 408. All three close the connection, so the rest of the body is never read. A body that would
   take the bytes of bodies held at once, all requests together, past `--max-payload-in-flight` is read to
   its end without being kept and answered 429: each costs up to ~4 times its size while it is parsed and
   served.
5. While every permit of `--max-concurrent-requests` is taken, a POST (each takes one at least) is answered
   429 `overloaded` without parsing its body, read to its end and dropped as in 4: parsed first, a flood of
   refused batches cost the event loop the JSON and validation of each.
6. A request still running when the server stops past `--shutdown-timeout` (uvicorn cancels its
   task) is answered the JSON 503 `shutting_down` instead of uvicorn's plain-text 500 and a traceback.

The layer below (the socket, the request head, connection counts) is `protocol.py`.
"""

from __future__ import annotations

import asyncio
import hmac
import time
from dataclasses import dataclass

from starlette.middleware.cors import CORSMiddleware
from starlette.responses import Response

from coulisse.interfaces.server.errors import error_response
from coulisse.interfaces.server.limits import CONNECTION, REQUEST
from coulisse.interfaces.server.metrics import ServerMetrics

# GET (and HEAD) on these needs no key, as in TEI: health (also SageMaker's /ping and the Inference API's
# GET /), metrics, and the API's documentation with its assets.
PUBLIC = frozenset({"/", "/ping", "/health", "/metrics", "/docs", "/openapi.json", "/api-doc/openapi.json"})
# POST routes that te_request_count leaves out, as TEI does (they run no model).
UNCOUNTED = frozenset({"/tokenize", "/decode"})
# Swagger UI's files (docs.py's ASSETS): a browser loads them by <script src> and <link href>, which send no key.
PUBLIC_PREFIXES = ("/docs/", "/docs-assets/")


class Drain:
    """Set by `coulisse serve` when uvicorn starts its graceful shutdown: from then on, a cancelled
    request is the shutdown timeout's doing, not a bug."""

    stopping: bool = False


@dataclass(frozen=True)
class GuardLimits:
    api_key: str | None
    payload_limit: int
    body_timeout: float
    # Several models in one server: `/{name}/health` is as public as `/health` (routing.py).
    model_prefixes: tuple[str, ...] = ()
    max_payload_in_flight: int = REQUEST.max_payload_in_flight  # raised to payload_limit where below it


class PayloadBudget:
    """Bytes of request bodies held at once, server-wide: each request takes its share as its body arrives
    (`Lease.take`) and gives it back when it is answered."""

    def __init__(self, limit: int):
        self.limit, self.used = limit, 0

    def lease(self) -> Lease:
        return Lease(self)


class Lease:
    def __init__(self, budget: PayloadBudget):
        self.budget, self.held = budget, 0

    def take(self, n: int) -> bool:
        if self.budget.used + n > self.budget.limit:
            return False
        self.budget.used += n
        self.held += n
        return True

    def give_back(self) -> None:
        self.budget.used -= self.held
        self.held = 0

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, *exc) -> None:
        self.give_back()


def header(scope, name: bytes) -> bytes | None:
    for key, value in scope["headers"]:
        if key == name:
            return value
    return None


def without_prefix(path: str, prefixes: tuple[str, ...]) -> str:
    """The path a model's own app routes: `/{name}/health` -> `/health` (longest prefix first)."""
    for prefix in prefixes:
        if path == prefix or path.startswith(prefix + "/"):
            return path[len(prefix):] or "/"
    return path


def public(scope, prefixes: tuple[str, ...] = ()) -> bool:
    path = without_prefix(scope["path"], prefixes)
    return scope["method"] == "GET" and (path in PUBLIC or path.startswith(PUBLIC_PREFIXES))


def authorized(scope, expected: bytes) -> bool:
    """`Authorization: Bearer KEY`, as FastAPI's HTTPBearer parses it, compared in constant time."""
    scheme, _, given = (header(scope, b"authorization") or b"").partition(b" ")
    if scheme.lower() != b"bearer":
        given = b""
    return hmac.compare_digest(given.strip(), expected)


def head_size(scope) -> int:
    """The request head's size on the wire, to within a few bytes (request line, `name: value\\r\\n`)."""
    line = len(scope["method"]) + len(scope.get("raw_path") or b"") + len(scope.get("query_string", b"")) + 12
    return line + sum(len(name) + len(value) + 4 for name, value in scope["headers"])


def declared_length(scope) -> int | None:
    """The Content-Length, or None for a chunked body (uvicorn's parser already refused a malformed one)."""
    value = header(scope, b"content-length")
    return int(value) if value is not None and value.strip().isdigit() else None


def unreadable_body(scope) -> str | None:
    """Why a request's body will not be read as JSON, in words for the 415 ("the body is sent ..."), else None.
    A browser may send a form, text/plain or a body without a Content-Type (a Blob) to any origin without asking
    first; JSON needs its preflight, so refusing the rest keeps web pages off the API. FastAPI since 0.132 leaves a
    body without a Content-Type unparsed (which would be a 422 "must be a JSON object" about a JSON object), and
    TEI answers it 415: so does this. A compressed body is refused by its Content-Encoding, which nothing here
    decodes (read as it is, gzip's bytes would be "not valid UTF-8")."""
    if scope["method"] in ("GET", "HEAD"):
        return None
    value = header(scope, b"content-type")
    if value is None:
        has_body = header(scope, b"transfer-encoding") is not None or bool(declared_length(scope))
        return "without a Content-Type" if has_body else None  # an empty body is said as empty, by its route
    kind = value.split(b";")[0].strip().lower().decode("latin-1")
    if not (kind == "application/json" or kind.endswith("+json")):
        return f"as {kind or 'an empty media type'}"
    coding = (header(scope, b"content-encoding") or b"").strip().lower().decode("latin-1")
    if coding not in ("", "identity"):
        return f"with Content-Encoding: {coding}, which this server does not decode"
    return None


def without_body(send):
    async def send_head(message):
        if message["type"] == "http.response.body":
            message = {**message, "body": b""}
        await send(message)

    return send_head


class Guard:
    def __init__(self, app, limits: GuardLimits, metrics: ServerMetrics, drain: Drain, permits=None):
        """`permits`: the routes' `app.Permits`, read only (None: no refusal before the body)."""
        self.app, self.limits, self.metrics, self.drain, self.permits = app, limits, metrics, drain, permits
        self.key = limits.api_key.encode() if limits.api_key else None
        self.budget = PayloadBudget(max(limits.max_payload_in_flight, limits.payload_limit))

    async def refuse(self, kind: str, message: str, scope, receive, send) -> None:
        self.metrics.request_failure.inc(err=kind)
        await error_response(kind, message)(scope, receive, send)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = False

        async def tracked_send(message):
            nonlocal started
            started = True
            await send(message)

        try:
            await self.guarded(scope, receive, tracked_send)
        except asyncio.CancelledError:
            if not self.drain.stopping:
                raise
            # uvicorn cancelled the request past --shutdown-timeout and does not wait for it: answer it
            # and end quietly, as the JSON 503 of the table. A response already begun is cut as it is.
            if not started:
                await self.refuse("shutting_down", "the server stopped before the answer was ready "
                                  "(--shutdown-timeout); retry on another instance", scope, receive, send)

    async def guarded(self, scope, receive, send) -> None:
        if head_size(scope) > CONNECTION.max_head_bytes:  # uvicorn's parser bounds only a head read in pieces
            return await self.refuse("head_size", f"the request line and headers are larger than "
                                     f"{CONNECTION.max_head_bytes} bytes", scope, receive, send)
        if scope["method"] == "HEAD":
            scope, send = {**scope, "method": "GET"}, without_body(send)
        if self.key is not None and not public(scope, self.limits.model_prefixes) and not authorized(scope, self.key):
            return await self.refuse("unauthorized", "missing or wrong API key: send `Authorization: Bearer "
                                     "<key>`", scope, receive, send)
        if (why := unreadable_body(scope)) is not None:
            return await self.refuse("media_type", f"the body is sent {why}; every route reads uncompressed JSON: "
                                     "send `Content-Type: application/json` (curl: -H 'Content-Type: "
                                     "application/json'; Python requests: json=body, not data=)", scope, receive,
                                     send)
        length = declared_length(scope)
        if length is not None and length > self.limits.payload_limit:
            return await self.refuse("payload_size", self.too_large(f"{length} bytes"), scope, receive, send)
        if not length and header(scope, b"transfer-encoding") is None:
            return await self.app(scope, receive, send)
        with self.budget.lease() as lease:  # held until the request is answered: its body lives that long
            refused = self.overloaded(scope) if scope["method"] == "POST" else None
            body = await self.read_body(scope, receive, send, lease, length, refused)
            if body is not None:
                await self.app(scope, replay(body, receive), send)

    def overloaded(self, scope) -> tuple[str, str] | None:
        if self.permits is None or not self.permits.full:
            return None
        if without_prefix(scope["path"], self.limits.model_prefixes) not in UNCOUNTED:
            # counted as the routes count a request they refuse, under a method of its own: "single" or "batch"
            # is the body's, which is not read
            self.metrics.request_count.inc(method="unparsed")
        return "overloaded", self.permits.refusal()

    def too_large(self, size: str) -> str:
        return (f"the body ({size}) is larger than {self.limits.payload_limit} bytes (--payload-limit); "
                "send fewer or shorter inputs per request")

    async def read_body(self, scope, receive, send, lease: Lease, length: int | None,
                        refused: tuple[str, str] | None = None) -> bytes | None:
        """The whole body within the deadline and the size limit, its bytes taken from `lease` (all at once where
        `length` is declared); None when already answered. A body past the budget, or already `refused` (kind,
        message), is read to its end and dropped, then answered 429 on a connection that stays open: closed with
        the body unread, the client would get a reset instead of the answer."""
        if refused is not None:
            over: tuple[str, str] | None = refused
        elif length is not None and not lease.take(length):
            over = "payload_budget", self.over_budget(length)
        else:
            over = None
        chunks, size = [], 0
        deadline = time.monotonic() + self.limits.body_timeout
        while True:
            try:
                message = await asyncio.wait_for(receive(), max(deadline - time.monotonic(), 0))
            except asyncio.TimeoutError:
                await self.refuse("body_timeout", f"{size} bytes of the body arrived in "
                                  f"{self.limits.body_timeout:g} s (--body-timeout); send it faster",
                                  scope, receive, send)
                return None
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limits.payload_limit:
                await self.refuse("payload_size", self.too_large(f"over {size} bytes"), scope, receive, send)
                return None
            if over is None and length is None and not lease.take(len(chunk)):
                lease.give_back()  # while the rest is read and dropped, the others may have it
                over = "payload_budget", self.over_budget(size)
            if over is None:
                chunks.append(chunk)
            if not message.get("more_body", False):
                if over is not None:
                    await self.refuse(*over, scope, receive, send)
                    return None
                return b"".join(chunks)

    def over_budget(self, size: int) -> str:
        return (f"the requests in flight hold {self.budget.used} bytes of body and this one's {size} would pass "
                f"{self.budget.limit} (--max-payload-in-flight); retry later")


def replay(body: bytes, receive):
    replayed = False

    async def receive_again():
        nonlocal replayed
        if not replayed:
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()  # after the body: waits for the client to disconnect

    return receive_again


class TEICors(CORSMiddleware):
    """Starlette's CORS layer, answering a preflight it does not allow as TEI's (tower-http) does: 200 without
    the `access-control-allow-origin` (or a method or header the browser asked for) it would allow, so the
    browser refuses, where Starlette answers 400 in plain text."""

    def preflight_response(self, request_headers):
        response = super().preflight_response(request_headers)
        if response.status_code != 400:
            return response
        headers = {k: v for k, v in response.headers.items() if k.lower() not in ("content-length", "content-type")}
        return Response(status_code=200, headers=headers)

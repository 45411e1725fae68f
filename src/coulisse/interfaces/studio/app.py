"""The studio's HTTP side: three GET routes over a `Studio`, on the server's uvicorn stack.

    GET /              the page (studio/views.py); ?text=... adds the results; a bad query: the page, 400
    GET /api/explain   the same query -> JSON (`Exploration.to_dict`); a bad query: {"error", "error_type"}, 400
    GET /health        200 "ok" (the exact pipeline loaded before the socket opened)

It listens on the loopback interface unless told otherwise, and answers only requests whose `Host` names
that interface: a web page elsewhere that rebinds its domain to 127.0.0.1 (DNS rebinding) gets 400, not the
studio; one that embeds or fetches the studio's address (`Sec-Fetch-Site: cross-site`, not a navigation) 403.
The connection layer is `coulisse serve`'s (server/protocol.py: a head deadline, a connection cap, JSON 400/431),
with room in the head for a text in the query string.
"""

from __future__ import annotations

import asyncio
import logging
import re
import signal

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse

from coulisse.engine.threads import torch_thread
from coulisse.errors import CoulisseError
from coulisse.interfaces.server.metrics import ServerMetrics
from coulisse.interfaces.server.protocol import ProtocolLimits, guarded_protocol
from coulisse.interfaces.studio.explore import Studio, kept_query, parse_query
from coulisse.interfaces.studio.views import render_studio

log = logging.getLogger(__name__)

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
MAX_HEAD_BYTES = 1 << 20  # a text travels in the query string: ~100,000 characters, percent-encoded
HEADER_TIMEOUT = 10.0
MAX_CONNECTIONS = 64


HOST_HEADER = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)(:[0-9]{1,5})?")


def host_name(value: str) -> str:
    """The host of a `Host` header, without its port (`[::1]:8765` -> `::1`); "" for anything that is not
    a host and a port, which a browser never sends (`evil.example@127.0.0.1`, `127.0.0.1:8765, evil`)."""
    match = HOST_HEADER.fullmatch(value)
    return match.group(1).strip("[]").lower() if match else ""


def cross_site_resource(scope) -> bool:
    """A request another site's page made for a resource (Fetch Metadata: `<img src=...?text=...>` ran the model in
    a visitor's browser, unseen: audit 46); following a link to the studio (a navigation) stays allowed, and so does
    a browser that sends no such header."""
    headers = dict(scope["headers"])
    return (headers.get(b"sec-fetch-site") == b"cross-site"
            and not (headers.get(b"sec-fetch-mode") == b"navigate" and headers.get(b"sec-fetch-dest") == b"document"))


class HostCheck:
    """ASGI middleware: a request whose Host header is not one of `allowed` is answered 400, one another site's
    page made for a resource 403."""

    def __init__(self, app, allowed: frozenset[str] | None):
        self.app, self.allowed = app, allowed

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and cross_site_resource(scope):
            response = PlainTextResponse("a page on another site asked the studio for this (an image, a script, a "
                                         "fetch); open the studio's address yourself.", status_code=403)
            return await response(scope, receive, send)
        if scope["type"] == "http" and self.allowed is not None:
            given = dict(scope["headers"]).get(b"host", b"").decode("latin-1")
            if host_name(given) not in self.allowed:
                response = PlainTextResponse(f"Host {given!r} is not this studio's address; open "
                                             "http://127.0.0.1:<port>/ (or pass --allow-remote).", status_code=400)
                return await response(scope, receive, send)
        await self.app(scope, receive, send)


# The pages need nothing from anywhere (inline style and script, a data: favicon, a form sent to the studio
# itself): a browser refuses anything else, a frame on another site's page included.
SECURITY_HEADERS = [
    (b"content-security-policy", b"default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
                                 b"img-src data:; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
]


class SecurityHeaders:
    """ASGI middleware: every answer carries `SECURITY_HEADERS` (defence in depth: the pages escape every
    value, audit 41 found no way in; these would stop a script that got in from reaching anything)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def with_headers(message):
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *SECURITY_HEADERS]}
            await send(message)

        await self.app(scope, receive, with_headers)


async def on_torch(work, *args):
    """`work(*args)` on the process's torch thread, where the studio's models were loaded (one OpenMP team:
    coulisse/engine/threads.py), without holding the event loop."""
    return await asyncio.wrap_future(torch_thread().submit(work, *args))


def params(request: Request) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for name, value in request.query_params.multi_items():
        out.setdefault(name, []).append(value)
    return out


def create_app(studio: Studio, allowed_hosts: frozenset[str] | None = frozenset(LOOPBACK_NAMES)) -> FastAPI:
    """The app; `allowed_hosts=None` answers any Host (--allow-remote)."""
    app = FastAPI(title="coulisse studio", docs_url=None, redoc_url=None, openapi_url=None)

    @app.get("/", response_class=HTMLResponse)
    async def page(request: Request) -> HTMLResponse:
        given = params(request)
        query = kept_query(given)  # the form as sent, on an error
        try:
            query = parse_query(given, studio.task)
            if not query.text.strip():
                return HTMLResponse(render_studio(studio.model, query, task=studio.task, language=studio.language))
            exploration = await on_torch(studio.explore, query)
        except CoulisseError as error:
            return HTMLResponse(render_studio(studio.model, query, error=f"{type(error).__name__}: {error}",
                                              task=studio.task, language=studio.language), 400)
        return HTMLResponse(render_studio(studio.model, query, exploration, task=studio.task,
                                          language=studio.language))

    @app.get("/api/explain")
    async def explain(request: Request) -> JSONResponse:
        try:
            exploration = await on_torch(studio.explore, parse_query(params(request), studio.task))
        except CoulisseError as error:
            return JSONResponse({"error": str(error), "error_type": type(error).__name__}, 400)
        return JSONResponse(exploration.to_dict())

    @app.get("/health")
    async def health() -> PlainTextResponse:
        return PlainTextResponse("ok")

    app.add_middleware(HostCheck, allowed=allowed_hosts)
    app.add_middleware(SecurityHeaders)  # outermost: the Host check's 400 carries them too
    return app


class StudioServer(uvicorn.Server):
    """uvicorn, saying where to point the browser once the socket listens (the port too, when it was 0)."""

    async def startup(self, sockets=None) -> None:
        await super().startup(sockets)
        if self.started:
            host, port = self.servers[0].sockets[0].getsockname()[:2]
            shown = f"[{host}]" if ":" in host else host
            print(f"coulisse studio: http://{shown}:{port}/  (Ctrl-C stops it)", flush=True)


def run(studio: Studio, host: str, port: int, allow_remote: bool) -> None:
    # --host as typed ("::1", "[::1]", "localhost"): a name a Host header gives (IPv6 bracketed there)
    allowed = None if allow_remote else frozenset({*LOOPBACK_NAMES, host.strip("[]").lower()})
    app = create_app(studio, allowed)
    protocol = guarded_protocol(ProtocolLimits(HEADER_TIMEOUT, MAX_CONNECTIONS, MAX_HEAD_BYTES), ServerMetrics())
    config = uvicorn.Config(app, host=host, port=port, http=protocol, loop="asyncio", timeout_keep_alive=5,
                            timeout_graceful_shutdown=5,
                            h11_max_incomplete_event_size=MAX_HEAD_BYTES, access_log=False, log_level="warning",
                            server_header=False)
    # uvicorn stops on SIGTERM and re-raises it under the previous handler: a no-op one lets the command
    # return 0 (Ctrl-C still exits 130, as the CLI reports a stop asked for).
    signal.signal(signal.SIGTERM, lambda signum, frame: None)
    StudioServer(config).run()

"""One log line per request, at INFO on the `coulisse.access` logger, as TEI logs each request (its tracing span,
INFO): what a client's `x-request-id` and a status on a dashboard are matched against.

    POST /embed 200 12.4 ms id=5d0c9b... peer=127.0.0.1:51234 tokenization_ms=1 queue_ms=0 inference_ms=10

Every request gets one, whoever answered it: a route, an error handler, the key or body checks (`AccessLog`,
outermost in the app), and the answers the HTTP/1.1 layer writes itself, which no app sees (`logged_protocol`:
408 for a head too slow, 400 and 431 for a head that does not parse, 503 past --max-connections). A request whose
client left before its answer is logged 499 (TEI's and nginx's status for it), whether or not the app wrote one.
The query string is left out: no route reads one, and a client may put a key there; headers never appear. The
path is written as JSON escapes it, so a path cannot forge a line. `coulisse serve` sets the logger's level:
INFO (the default, `--access-log`) or WARNING (`--no-access-log`); in a program of one's own, logging's
configuration decides, as for every logger.
"""

from __future__ import annotations

import json
import logging
import time

from coulisse.interfaces.server.errors import ERRORS
from coulisse.interfaces.server.metrics import ServerMetrics

log = logging.getLogger("coulisse.access")
GONE = 499  # the client closed the connection before its answer
TIMINGS = (b"x-tokenization-time", b"x-queue-time", b"x-inference-time")  # TEI's headers, in ms


def line(method: str | None, path: str | None, status: int, ms: float | None, request_id: str | None, peer,
         timings: dict[str, str] | None = None) -> tuple[str, dict]:
    """The access line of one answer, and its fields (`extra` of the record: JSON's keys under --json-output).
    None for what the request did not have (no method or path below the app; no request id)."""
    shown = json.dumps(path, ensure_ascii=False)[1:-1] if path is not None else "-"
    where = f"{peer[0]}:{peer[1]}" if peer else None
    took = f"{ms:.1f} ms" if ms is not None else "- ms"
    timings = timings or {}
    text = f"{method or '-'} {shown} {status} {took} id={request_id or '-'} peer={where or '-'}" + "".join(
        f" {name}={value}" for name, value in timings.items())
    fields = {"method": method, "path": path, "status": status, "duration_ms": round(ms, 1) if ms is not None else None,
              "request_id": request_id, "peer": where, **{name: _number(value) for name, value in timings.items()}}
    return text, fields


def _number(text: str) -> int | float | str:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


class AccessLog:
    """ASGI, outermost: the line of each request once the app is done with it (its answer sent, or abandoned)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or not log.isEnabledFor(logging.INFO):
            return await self.app(scope, receive, send)
        start = time.perf_counter()
        answered: dict = {}

        async def watched(message):
            if message["type"] == "http.response.start":
                answered.update(status=message["status"], headers=dict(message.get("headers", ())))
            await send(message)

        failed = False
        try:
            await self.app(scope, receive, watched)
        except BaseException:
            failed = True  # uvicorn answers 500, or nothing if the server cancelled it
            raise
        finally:
            status = answered.get("status") or (500 if failed else GONE)
            headers = answered.get("headers", {})
            timings = {f"{name[2:-5].decode()}_ms": headers[name].decode("latin-1") for name in TIMINGS
                       if name in headers}
            request_id = headers[b"x-request-id"].decode("latin-1") if b"x-request-id" in headers else None
            text, fields = line(scope["method"], scope["path"], status, (time.perf_counter() - start) * 1000,
                                request_id, scope.get("client"), timings)
            log.info("%s", text, extra=fields)


def logged_protocol(protocol: type, metrics: ServerMetrics) -> type:
    """uvicorn's protocol class (protocol.py's) with the line of each answer it writes on the socket itself,
    which it counts in `metrics` (te_request_failure) and no app sees."""

    class Logged(protocol):
        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            if self.app is not self.config.loaded_app:  # past --max-connections: its 503 is another app's
                self.app = AccessLog(self.app)

        def head_timed_out(self) -> None:
            self.logging_written(super().head_timed_out, ("head_timeout",))

        def send_400_response(self, msg: str) -> None:
            self.logging_written(lambda: super(Logged, self).send_400_response(msg), ("bad_request", "head_size"))

        def logging_written(self, answer, kinds: tuple[str, ...]) -> None:
            """Run `answer`; log the error it wrote, known by the failure it counted (none: it closed an idle
            connection, or cut an answer already begun)."""
            before = {kind: metrics.request_failure.value(err=kind) for kind in kinds}
            answer()
            for kind in kinds:
                if metrics.request_failure.value(err=kind) > before[kind] and log.isEnabledFor(logging.INFO):
                    text, fields = line(None, None, ERRORS[kind].status, None, None, self.client)
                    log.info("%s", text, extra=fields)

    return Logged

"""The HTTP/1.1 layer below the app: uvicorn's h11 protocol with what it lacks against hostile clients.

uvicorn (0.30 to 0.54 read) has no deadline for a request head: its keep-alive timer starts only after
a first response and any byte cancels it, so a client that sends a header a byte every few seconds
holds its connection forever. Its parser errors and its connection cap answer plain text. Here:

- a head deadline (`--header-timeout`), armed when the connection opens and after each answer, and
  disarmed once a head is complete: a partial head is answered 408 (JSON), an idle connection closed;
  a fresh connection that sends nothing closes after `--keep-alive-timeout`, as an idle one does;
- past `--max-connections` open connections, the new one's request is answered the JSON 503
  `connections` with `Retry-After`, then closed (uvicorn's `limit_concurrency` is left off);
- the parser's 400 (and 431 for a head over 16 KiB) in the error table's JSON.

The h11 protocol is used whether or not httptools is installed, so every deployment behaves alike.
`DrainingServer` tells the app's `Guard` when a graceful shutdown begins.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from coulisse.interfaces.server.errors import error_response, raw_error_response
from coulisse.interfaces.server.guard import Drain
from coulisse.interfaces.server.metrics import ServerMetrics

READ_SIZE = 65_536


@dataclass(frozen=True)
class ProtocolLimits:
    header_timeout: float
    max_connections: int
    max_head_bytes: int


def guarded_protocol(limits: ProtocolLimits, metrics: ServerMetrics) -> type[H11Protocol]:
    """uvicorn's `http=`: one protocol instance per connection, all sharing `limits` and `metrics`."""

    async def over_capacity(scope, receive, send) -> None:
        metrics.request_failure.inc(err="connections")
        response = error_response("connections", f"more than {limits.max_connections} connections are open "
                                  "(--max-connections); retry later")
        await response(scope, receive, send)

    class GuardedH11Protocol(H11Protocol):
        head_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            if hasattr(transport, "max_size"):
                # asyncio reads up to 256 KiB per recv, and uvicorn parses all of it into the request's body
                # before the app can refuse it: 64 KiB per read (uvicorn's own high-water mark) caps what a
                # client without the key costs until its 401.
                transport.max_size = READ_SIZE
            if len(self.connections) > limits.max_connections:
                self.app = over_capacity  # this connection's requests; the others keep the real app
            self.timeout_keep_alive_task = self.loop.call_later(self.timeout_keep_alive,
                                                                self.timeout_keep_alive_handler)
            self.arm_head_timer()

        def connection_lost(self, exc: Exception | None) -> None:
            self.disarm_head_timer()
            super().connection_lost(exc)

        def handle_events(self) -> None:
            super().handle_events()
            if self.conn.their_state is not h11.IDLE:  # a whole head arrived: the body is Guard's
                self.disarm_head_timer()

        def on_response_complete(self) -> None:
            if not self.transport.is_closing():
                self.arm_head_timer()  # before uvicorn reads a pipelined head, which disarms it
            super().on_response_complete()

        def arm_head_timer(self) -> None:
            self.disarm_head_timer()
            self.head_timer = self.loop.call_later(limits.header_timeout, self.head_timed_out)

        def disarm_head_timer(self) -> None:
            if self.head_timer is not None:
                self.head_timer.cancel()
                self.head_timer = None

        def head_timed_out(self) -> None:
            self.head_timer = None
            if self.transport.is_closing() or (self.cycle is not None and not self.cycle.response_complete):
                return  # a request is being answered
            if self.conn.their_state is h11.IDLE and self.conn.trailing_data[0]:
                metrics.request_failure.inc(err="head_timeout")
                self.transport.write(raw_error_response(
                    "head_timeout", f"the request line and headers did not arrive within "
                    f"{limits.header_timeout:g} s (--header-timeout)"))
            self.transport.close()

        def send_400_response(self, msg: str) -> None:
            """uvicorn calls this on a parser error (h11's RemoteProtocolError)."""
            if len(self.conn.trailing_data[0]) > limits.max_head_bytes:
                kind, message = "head_size", (f"the request line and headers are larger than "
                                              f"{limits.max_head_bytes} bytes")
            else:
                kind, message = "bad_request", ("the request is not valid HTTP/1.1 (request line, a header, or "
                                                "the body's framing)")
            running = self.cycle is not None and not self.cycle.response_complete
            if running:
                self.cycle.disconnected = True  # the app's next receive() sees the client gone
            if not (running and self.cycle.response_started):  # else the answer is cut where it is
                metrics.request_failure.inc(err=kind)
                self.transport.write(raw_error_response(kind, message))
            self.transport.close()

    return GuardedH11Protocol


class DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, drain: Drain):
        super().__init__(config)
        self.drain = drain

    async def shutdown(self, sockets=None) -> None:
        self.drain.stopping = True
        await super().shutdown(sockets)

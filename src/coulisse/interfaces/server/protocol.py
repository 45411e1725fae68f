"""The HTTP/1.1 layer below the app: uvicorn's h11 protocol with what it lacks against hostile clients.

uvicorn (0.30 to 0.55 read) has no deadline for a request head: its keep-alive timer starts only after
a first response and any byte cancels it, so a client that sends a header a byte every few seconds
holds its connection forever. It has no deadline for an answer either: one written to a client that never
reads stays in memory as long as the client keeps the socket. Its parser errors and its connection cap
answer plain text. Here:

- a head deadline (`--header-timeout`), armed when the connection opens and when the first byte of a next
  request arrives, disarmed once the head is complete: a partial head is answered 408 (JSON), a fresh
  connection that sends nothing is closed. Between requests a connection may stay idle
  `--keep-alive-timeout` (uvicorn's timer), longer than clients keep theirs (docs/server.md, "Connections");
- past `--max-connections` open connections, the connection that has waited longest for a request (idle, or
  sending its head slowly) is closed to make room, once it has waited `EVICTABLE_AFTER_S`; a flood of idle
  or slow sockets then cannot lock newcomers out. Where none has, the new connection's request is answered
  the JSON 503 `connections` with `Retry-After`, and closed; a liveness probe (GET /health, /ping) is answered
  as usual, so a flood does not get the server restarted (uvicorn's `limit_concurrency` is left off);
- a send deadline (`--send-timeout`): an answer the client takes no byte of for that long (the transport's
  buffer past its high-water mark and not shrinking) is dropped and the connection aborted;
- the parser's 400 (and 431 for a head over 16 KiB) in the error table's JSON.

The h11 protocol is used whether or not httptools is installed, so every deployment behaves alike.
`DrainingServer` tells the app's `Guard` when a graceful shutdown begins.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
from dataclasses import dataclass
from typing import ClassVar

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from coulisse.interfaces.server.errors import error_response, raw_error_response
from coulisse.interfaces.server.guard import Drain
from coulisse.interfaces.server.limits import CONNECTION
from coulisse.interfaces.server.metrics import ServerMetrics

READ_SIZE = 65_536
# A connection closed to make room past --max-connections has waited at least this long for a request: a
# client that just connected is still sending its head.
EVICTABLE_AFTER_S = 1.0
LIVENESS = frozenset({"health", "ping"})  # /health, /ping (and GET /), /{model}/health with several models

log = logging.getLogger(__name__)

try:  # the kernel's send queue of a socket (Linux): what a slow reader drains before the transport's buffer moves
    from fcntl import ioctl
    from termios import TIOCOUTQ
except ImportError:  # elsewhere, the transport's buffer alone
    ioctl = None  # type: ignore[assignment]


def unsent(transport: asyncio.Transport) -> int:
    """Bytes written that the client has not taken: the transport's buffer and, where the platform says it, the
    kernel's send queue (several MB: without it a client reading 10 kB/s would seem to take nothing for minutes)."""
    n = transport.get_write_buffer_size()
    sock = transport.get_extra_info("socket")
    if ioctl is not None and sock is not None:
        with contextlib.suppress(OSError, ValueError):
            n += struct.unpack("i", ioctl(sock.fileno(), TIOCOUTQ, b"\0\0\0\0"))[0]
    return n


@dataclass(frozen=True)
class ProtocolLimits:
    header_timeout: float
    max_connections: int
    max_head_bytes: int
    send_timeout: float = CONNECTION.send_timeout


def liveness(scope) -> bool:
    """A health probe: GET (or HEAD) on /health, /ping or /, /health and /ping with a model's prefix too."""
    segments = scope["path"].strip("/").split("/")
    return scope["method"] in ("GET", "HEAD") and (scope["path"] == "/" or len(segments) <= 2
                                                   and segments[-1] in LIVENESS)


def closing(send):
    """`send` with `Connection: close` on the answer: the connection ends with it."""
    async def send_and_close(message):
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message.get("headers", ()), (b"connection", b"close")]}
        await send(message)

    return send_and_close


def over_capacity(app, limits: ProtocolLimits, metrics: ServerMetrics):
    """`app` for a connection past --max-connections that no waiting one made room for: a liveness probe is
    answered as usual, then the connection closed; any other request gets the JSON 503 `connections`."""
    async def answer(scope, receive, send) -> None:
        if scope["type"] == "http" and liveness(scope):
            return await app(scope, receive, closing(send))
        metrics.request_failure.inc(err="connections")
        response = error_response("connections", f"more than {limits.max_connections} connections are open "
                                  "(--max-connections); retry later")
        await response(scope, receive, send)

    return answer


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a head deadline, a connection cap and a send deadline (the module's docstring).
    One instance per connection; `guarded_protocol` makes the subclass a server runs, which holds what all its
    connections share."""

    protocol_limits: ClassVar[ProtocolLimits]  # what it was built with, for whoever reads a running server's config
    protocol_metrics: ClassVar[ServerMetrics]
    # The connections waiting for a request head (fresh, idle between requests, or sending one), oldest first,
    # each with the loop time it began to wait.
    waiting: ClassVar[dict[GuardedH11Protocol, float]]
    head_timer: asyncio.TimerHandle | None = None
    send_timer: asyncio.TimerHandle | None = None
    untaken: int = 0  # `unsent` bytes when the send timer was armed

    # -- uvicorn's events -------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if hasattr(transport, "max_size"):
            # asyncio reads up to 256 KiB per recv, and uvicorn parses all of it into the request's body
            # before the app can refuse it: 64 KiB per read (uvicorn's own high-water mark) caps what a
            # client without the key costs until its 401.
            transport.max_size = READ_SIZE
        limits = self.protocol_limits
        if len(self.connections) > limits.max_connections and not self.make_room(self.loop.time()):
            # this connection's requests; the others keep the real app
            self.app = over_capacity(self.app, limits, self.protocol_metrics)
        self.timeout_keep_alive_task = self.loop.call_later(self.timeout_keep_alive,
                                                            self.timeout_keep_alive_handler)
        self.wait_for_head()
        self.arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self.waiting.pop(self, None)
        self.disarm_head_timer()
        self.disarm_send_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.head_timer is None and self.conn.their_state is h11.IDLE:
            self.arm_head_timer()  # the first byte of a next request: its head has --header-timeout
        super().data_received(data)

    def handle_events(self) -> None:
        super().handle_events()
        if self.conn.their_state is not h11.IDLE:  # a whole head arrived: the body is Guard's
            self.waiting.pop(self, None)
            self.disarm_head_timer()

    def on_response_complete(self) -> None:
        if not self.transport.is_closing():
            self.wait_for_head()
            if self.conn.trailing_data[0]:
                self.arm_head_timer()  # part of a pipelined head is there already; uvicorn reads it next
        super().on_response_complete()

    # -- past --max-connections -------------------------------------------------------------------

    def wait_for_head(self) -> None:
        self.waiting.pop(self, None)
        self.waiting[self] = self.loop.time()  # the newest

    @classmethod
    def make_room(cls, now: float) -> bool:
        """Close the connection that has waited longest for a request, if it has waited `EVICTABLE_AFTER_S` and
        holds no answer still being sent; False where none has."""
        for connection, since in cls.waiting.items():
            if now - since < EVICTABLE_AFTER_S:
                return False
            if not connection.transport.is_closing() and connection.transport.get_write_buffer_size() == 0:
                connection.evict()  # leaves `waiting`: iterate no further
                return True
        return False

    def evict(self) -> None:
        self.waiting.pop(self, None)
        if self.conn.their_state is h11.IDLE and self.conn.trailing_data[0]:  # a head begun: say why
            self.protocol_metrics.request_failure.inc(err="connections")
            self.transport.write(raw_error_response(
                "connections", f"more than {self.protocol_limits.max_connections} connections are open "
                "(--max-connections): this one, which sent no whole request for the longest, was closed; retry"))
        self.transport.close()  # an idle one, as its keep-alive timeout would

    # -- --header-timeout -------------------------------------------------------------------------

    def arm_head_timer(self) -> None:
        self.disarm_head_timer()
        self.head_timer = self.loop.call_later(self.protocol_limits.header_timeout, self.head_timed_out)

    def disarm_head_timer(self) -> None:
        if self.head_timer is not None:
            self.head_timer.cancel()
            self.head_timer = None

    def head_timed_out(self) -> None:
        self.head_timer = None
        if self.transport.is_closing() or (self.cycle is not None and not self.cycle.response_complete):
            return  # a request is being answered
        if self.conn.their_state is h11.IDLE and self.conn.trailing_data[0]:
            self.protocol_metrics.request_failure.inc(err="head_timeout")
            self.transport.write(raw_error_response(
                "head_timeout", f"the request line and headers did not arrive within "
                f"{self.protocol_limits.header_timeout:g} s (--header-timeout)"))
        self.transport.close()

    # -- --send-timeout ---------------------------------------------------------------------------

    def pause_writing(self) -> None:
        """The transport's buffer passed its high-water mark: the client reads slower than we write."""
        super().pause_writing()
        self.arm_send_timer()

    def resume_writing(self) -> None:
        self.disarm_send_timer()
        super().resume_writing()

    def arm_send_timer(self) -> None:
        self.disarm_send_timer()
        self.untaken = unsent(self.transport)
        self.send_timer = self.loop.call_later(self.protocol_limits.send_timeout, self.send_timed_out)

    def disarm_send_timer(self) -> None:
        if self.send_timer is not None:
            self.send_timer.cancel()
            self.send_timer = None

    def send_timed_out(self) -> None:
        self.send_timer = None
        left = unsent(self.transport)
        if self.transport.get_write_buffer_size() and left < self.untaken:
            return self.arm_send_timer()  # the client took some of it: another period
        if self.transport.get_write_buffer_size():
            self.protocol_metrics.request_failure.inc(err="send_timeout")
            log.info("a client took no byte of its answer in %g s (--send-timeout): %d bytes dropped, "
                     "connection closed", self.protocol_limits.send_timeout, left)
            self.transport.abort()  # close() would keep the buffer until the client reads it

    # -- the parser's errors ----------------------------------------------------------------------

    def send_400_response(self, msg: str) -> None:
        """uvicorn calls this on a parser error (h11's RemoteProtocolError)."""
        limits = self.protocol_limits
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
            self.protocol_metrics.request_failure.inc(err=kind)
            self.transport.write(raw_error_response(kind, message))
        self.transport.close()


def guarded_protocol(limits: ProtocolLimits, metrics: ServerMetrics) -> type[H11Protocol]:
    """uvicorn's `http=`: one protocol instance per connection, all sharing `limits`, `metrics` and the table of
    connections waiting for a head (one server's own: each call makes a new one)."""

    class ServerProtocol(GuardedH11Protocol):
        protocol_limits = limits
        protocol_metrics = metrics
        waiting = {}

    return ServerProtocol


def uvicorn_config(app, host: str, port: int, limits: ProtocolLimits, *, keep_alive_timeout: float,
                   shutdown_timeout: float, access_log: bool = False, json_logs: bool = False) -> uvicorn.Config:
    """How `coulisse serve` runs `app` (its `state.metrics` counts the protocol's refusals). The access log is
    coulisse's (access_log.py) in place of uvicorn's, which has no request id, duration, 499 or 408. With
    `json_logs`, uvicorn's loggers get no handler of their own: their records reach the root logger's, JSON's."""
    from coulisse.interfaces.server.access_log import logged_protocol

    logging.getLogger("coulisse.access").setLevel(logging.INFO if access_log else logging.WARNING)
    protocol = logged_protocol(guarded_protocol(limits, app.state.metrics), app.state.metrics)
    return uvicorn.Config(app, host=host, port=port, http=protocol, loop="asyncio",
                          timeout_graceful_shutdown=shutdown_timeout, timeout_keep_alive=keep_alive_timeout,
                          h11_max_incomplete_event_size=limits.max_head_bytes, access_log=False,
                          log_level="info", server_header=False, **({"log_config": None} if json_logs else {}))


class DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, drain: Drain):
        super().__init__(config)
        self.drain = drain

    async def shutdown(self, sockets=None) -> None:
        self.drain.stopping = True
        await super().shutdown(sockets)

"""The server's limits and their defaults, written once: `ServerSettings` (so `create_app(pipe)`, the batcher it
starts) and the `coulisse serve` options all read them from here. Plain dataclasses: the CLI imports this module at
start-up, so it must not pull numpy, torch or fastapi in.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class BatchLimits:
    """When the batcher closes a batch: on a token budget, a count of inputs, or a wait (while idle)."""

    max_batch_tokens: int = 2048
    max_batch_requests: int = 64
    # 0: an idle model takes what is queued at once (a request's inputs are queued together); while it is busy
    # the queue fills anyway. 2 ms only added 2 ms to every request: the bundled model served one client 197
    # req/s (5.0 ms p50) at 2 ms, 417 (2.4 ms) at 0; all-MiniLM-L6-v2 19.5 -> 14.9 ms p50; 16 clients lost
    # nothing (audit 39, /work/notes/audit39/serverperf.md; 2-core AMX Xeon). TEI has no such wait either.
    max_wait_ms: float = 0.0


@dataclass(frozen=True)
class RequestLimits:
    """What one request may ask (inputs: else 422; body bytes: else 413), and how many may be in flight (else 429)."""

    max_client_batch_size: int = 32
    max_concurrent_requests: int = 512
    payload_limit: int = 2_000_000  # bytes of request body
    # Bytes of request bodies held at once, server-wide (else 429): each costs up to ~4 times its size in memory
    # while it is parsed and served (a 2 MB body of emoji: 7.6 MB), so this bounds that to ~250 MB.
    max_payload_in_flight: int = 64_000_000


@dataclass(frozen=True)
class ConnectionLimits:
    """What one client may hold: a connection slot, and the server's time while it sends (else 408)."""

    # A connection carries one request at a time: at least max_concurrent_requests, so that the 429 of a
    # busy model stays reachable; below the usual 1024 open files a process may hold.
    max_connections: int = 768
    header_timeout: float = 10.0  # seconds from the connection (or the last answer) to a complete head
    body_timeout: float = 30.0  # seconds for the whole body: 2 MB at 67 kB/s
    # An idle connection between requests closes after this long: longer than clients and proxies keep theirs
    # (httpx 5 s, aiohttp 15 s, nginx and AWS load balancers 60 s, Go 90 s), so they close it first and never
    # reuse one the server is closing; past --max-connections the longest idle goes first (protocol.py).
    keep_alive_timeout: float = 120.0
    send_timeout: float = 60.0  # seconds a client may take no byte of its answer before it is dropped (nginx's)
    max_head_bytes: int = 16_384  # request line and headers (h11's default), else 431


BATCH = BatchLimits()
REQUEST = RequestLimits()
CONNECTION = ConnectionLimits()

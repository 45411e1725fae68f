"""The server's limits and their defaults, written once: `ServerSettings`, the batcher and the
`coulisse serve` options all read them from here. Plain dataclasses: the CLI imports this module at
start-up, so it must not pull numpy, torch or fastapi in.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class BatchLimits:
    """When the batcher closes a batch: on a token budget, a count of inputs, or a wait (while idle)."""

    max_batch_tokens: int = 2048
    max_batch_requests: int = 64
    max_wait_ms: float = 2.0


@dataclass(frozen=True)
class RequestLimits:
    """What one request may ask (else 413), and how many may be in flight (else 429)."""

    max_client_batch_size: int = 32
    max_concurrent_requests: int = 512
    payload_limit: int = 2_000_000  # bytes of request body


BATCH = BatchLimits()
REQUEST = RequestLimits()

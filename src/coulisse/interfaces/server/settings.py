"""What a served model runs with: `ServerSettings`, one per model, built by `coulisse serve` from its options (or by
a program around `create_app`), read by the app, its routes and the model's `Service`. Defaults are limits.py's.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from coulisse.interfaces.server.limits import BATCH, CONNECTION, REQUEST


@dataclass(frozen=True)
class ServerSettings:
    model_id: str = ""
    # None: `coulisse serve`'s default (limits.BATCH), lowered to the pipeline's own budget
    # (`pipeline(max_batch_tokens=, max_batch_size=)`, the one the engine runs) where that is smaller. A batch is cut
    # once, by the batcher; a larger server budget would make the engine cut it again.
    max_batch_tokens: int | None = None
    max_batch_requests: int | None = None
    max_wait_ms: float = BATCH.max_wait_ms
    max_client_batch_size: int = REQUEST.max_client_batch_size
    max_concurrent_requests: int = REQUEST.max_concurrent_requests
    auto_truncate: bool = True
    payload_limit: int = REQUEST.payload_limit
    max_payload_in_flight: int = REQUEST.max_payload_in_flight  # bytes of bodies held at once (at least payload_limit)
    body_timeout: float = CONNECTION.body_timeout  # seconds for a whole request body to arrive, else 408
    api_key: str | None = field(default=None, repr=False)  # never in a log line, not even a debug one
    pooling: str | None = None
    dtype: str = "float32"
    served_model_name: str | None = None  # TEI's: the name /info, OpenAI's `model` and /v1/models use
    cors_allow_origin: list[str] | None = None  # browsers' origins allowed; None: no CORS headers
    threads: int | None = None  # --threads: the count for every batch; None: the engine's thread policy
    fast: bool = False  # --fast: `dtype` is then what it resolved to on this CPU
    wait_policy: str = ""  # how idle OpenMP threads wait, in words (`options.wait_policy_in_effect`)
    # TEI's --default-prompt-name / --default-prompt: before a text whose request names no prompt; else none
    default_prompt_name: str | None = None
    default_prompt: str | None = None

"""The model behind the routes: tokenize, queue, post-process. Knows nothing of HTTP.

An adapter over the pipeline's public stages: `pipe.preprocess` (stage 1, on a tokenizer thread),
`pipe.forward` over the batch's items (stage 2, the batcher's worker thread, batched across requests),
`pipe.postprocess` (stage 3: labels and scores; for /embed the pipeline's pooling, so `/embed` equals
`pipeline("feature-extraction", pooling="auto", normalize=...)` — sentence-transformers' Pooling,
Normalize, `max_seq_length` and `do_lower_case` included).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from coulisse import __version__
from coulisse.engine import Item
from coulisse.errors import InputError
from coulisse.interfaces.server.batching import Batcher, BatchLimits, ForwardError, Result
from coulisse.interfaces.server.errors import ServerError
from coulisse.interfaces.server.limits import BATCH, REQUEST
from coulisse.interfaces.server.metrics import ServerMetrics
from coulisse.tasks.base import Batch, Pipeline
from coulisse.tokenizer import unicode_problem

log = logging.getLogger(__name__)

POOLINGS = ("mean", "cls")
TASKS = ("text-classification", "feature-extraction")  # /predict and /embed
# Returns when the client goes away; None where no client can (tests, in-process calls).
Disconnected = Callable[[], Awaitable[None]] | None


@dataclass(frozen=True)
class ServerSettings:
    model_id: str = ""
    # None: the pipeline's own budget (`pipeline(max_batch_tokens=, max_batch_size=)`), the one the engine
    # runs. A batch is cut once, by the batcher; a larger server budget would make the engine cut it again.
    max_batch_tokens: int | None = None
    max_batch_requests: int | None = None
    max_wait_ms: float = BATCH.max_wait_ms
    max_client_batch_size: int = REQUEST.max_client_batch_size
    max_concurrent_requests: int = REQUEST.max_concurrent_requests
    auto_truncate: bool = True
    payload_limit: int = REQUEST.payload_limit
    api_key: str | None = field(default=None, repr=False)  # never in a log line, not even a debug one
    pooling: str | None = None
    dtype: str = "float32"


@dataclass
class Timings:
    tokens: int = 0
    tokenization_s: float = 0.0
    queue_s: float = 0.0
    inference_s: float = 0.0


def check_unicode(sequences: list[tuple[str, str | None]]) -> None:
    """422 naming the input that holds a lone surrogate: JSON carries "\\ud800", UTF-8 and the tokenizer
    cannot; without this check the tokenizer's TypeError would answer 500."""
    for i, (text, pair) in enumerate(sequences):
        for j, member in enumerate((text, pair)):
            if member is not None and (problem := unicode_problem(member)):
                name = "inputs" if len(sequences) == 1 else f"inputs[{i}]"
                name += f"[{j}]" if pair is not None else ""
                raise ServerError("validation", f"Input validation error: {name} is {problem}")


def pooling_of(override: str | None) -> str:
    """The pipeline's pooling option for /embed: the folder's sentence-transformers choice ("auto")
    unless the server was started with --pooling."""
    if override and override not in POOLINGS:
        raise InputError(f"pooling={override!r}; use one of {', '.join(POOLINGS)}.")
    return override or "auto"


def budget(asked: int | None, engine: int, name: str) -> int:
    """The server's batch limit: the engine's unless a smaller one is asked for."""
    if asked is None:
        return engine
    if asked > engine:
        raise InputError(f"the server's batch limit {asked} exceeds the pipeline's {name}={engine}, which would "
                         f"cut every batch again; build it with pipeline(..., {name}={asked}).")
    return asked


class Service:
    def __init__(self, pipe: Pipeline, settings: ServerSettings, metrics: ServerMetrics):
        if pipe.task not in TASKS:
            raise InputError(f"coulisse serve runs {' or '.join(TASKS)} pipelines, not {pipe.task!r}.")
        self.pipe = pipe
        self.settings = settings
        self.metrics = metrics
        self.classifier = pipe.task == "text-classification"
        self.pooling = None if self.classifier else pooling_of(settings.pooling)
        # TEI's rule, the pipeline's too: sentence-transformers' max_seq_length when the folder has one.
        self.max_input_length = pipe.tokenizer.model_max_length
        if not self.classifier:
            found = pipe.sentence_config(self.pooling, None)
            self.pooling_mode = found.pooling  # what "auto" chose, for /info
            self.max_input_length = min(self.max_input_length, found.max_seq_length or self.max_input_length)
        self.function = pipe.options({})["function_to_apply"] if self.classifier else None
        limits = BatchLimits(budget(settings.max_batch_tokens, pipe.engine.max_batch_tokens, "max_batch_tokens"),
                             budget(settings.max_batch_requests, pipe.engine.max_batch_size, "max_batch_size"),
                             settings.max_wait_ms)
        self.limits = limits
        self.batcher = Batcher(pipe.forward, limits, metrics)
        # The tokenizer serializes calls with a lock; one thread keeps long inputs off the event loop.
        self._tokenizer_pool: ThreadPoolExecutor | None = None

    async def start(self) -> None:
        self._tokenizer_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="coulisse-tokenize")
        await self.batcher.start()

    async def stop(self) -> None:
        await self.batcher.stop()
        if self._tokenizer_pool is not None:
            self._tokenizer_pool.shutdown(wait=True)

    # -- stage 1 ----------------------------------------------------------------------------------

    def _preprocess(self, sequences: list[tuple[str, str | None]], truncate: bool,
                    normalize: bool | None) -> tuple[list[Item], Batch | None]:
        """`pipe.preprocess`: texts for /embed (one batch, its pooling inside); for /predict, single texts
        and text pairs may share a request, each kind one call."""
        if not self.classifier:
            batch = self.pipe.preprocess([text for text, _ in sequences], truncation=truncate,
                                         pooling=self.pooling, normalize=normalize)
            return batch.items, batch
        items: list[Item | None] = [None] * len(sequences)
        for paired in (False, True):
            where = [i for i, (_, pair) in enumerate(sequences) if (pair is not None) == paired]
            if where:
                inputs = [{"text": sequences[i][0], "text_pair": sequences[i][1]} if paired else sequences[i][0]
                          for i in where]
                for i, item in zip(where, self.pipe.preprocess(inputs, truncation=truncate), strict=True):
                    items[i] = item
        return items, None  # type: ignore[return-value]

    async def tokenize(self, sequences: list[tuple[str, str | None]], truncate: bool,
                       timings: Timings, normalize: bool | None = None) -> tuple[list[Item], Batch | None]:
        check_unicode(sequences)
        start = time.perf_counter()
        loop = asyncio.get_running_loop()
        items, batch = await loop.run_in_executor(self._tokenizer_pool, self._preprocess, sequences, truncate,
                                                  normalize)
        timings.tokenization_s = time.perf_counter() - start
        self.metrics.tokenization_duration.observe(timings.tokenization_s)
        for item in items:
            n = len(item.ids)
            if n > self.max_input_length:
                raise ServerError("input_length", f"Input validation error: `inputs` must have less than "
                                  f"{self.max_input_length} tokens. Given: {n}. Pass \"truncate\": true.")
            self.metrics.input_length.observe(n)
            timings.tokens += n
        return items, batch

    # -- stage 2 ----------------------------------------------------------------------------------

    async def infer(self, items: list[Item], disconnected: Disconnected,
                    timings: Timings) -> list[np.ndarray]:
        """Queue the items and wait for their rows, or for the client to leave (then drop them)."""
        try:
            futures = self.batcher.submit(items)
        except RuntimeError as e:
            raise ServerError("unhealthy", str(e)) from None
        gathered = asyncio.gather(*futures)
        watcher = asyncio.ensure_future(disconnected()) if disconnected is not None else None
        try:
            waiting = {gathered} if watcher is None else {gathered, watcher}
            done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if watcher is not None:
                watcher.cancel()
            if not gathered.done():
                gathered.cancel()  # cancels each entry: the batcher drops them before compute
        if gathered not in done:
            raise ServerError("cancelled", "the client disconnected before the answer was ready")
        try:
            results: list[Result] = gathered.result()
        except ForwardError as e:
            raise ServerError("backend", "inference failed") from e
        timings.queue_s = max(r.queue_s for r in results)
        timings.inference_s = max(r.inference_s for r in results)
        for r in results:
            self.metrics.queue_duration.observe(r.queue_s)
            self.metrics.inference_duration.observe(r.inference_s)
        return [r.row for r in results]

    # -- stage 3 ----------------------------------------------------------------------------------

    async def predict(self, sequences: list[tuple[str, str | None]], truncate: bool, raw_scores: bool,
                      disconnected: Disconnected, timings: Timings) -> list[list[dict]]:
        if not self.classifier:
            raise ServerError("model_type", "model is not a classifier model: this server was started with "
                              "--task feature-extraction; use /embed")
        items, _ = await self.tokenize(sequences, truncate, timings)
        rows = await self.infer(items, disconnected, timings)
        if not all(np.isfinite(row).all() for row in rows):
            raise ServerError("backend", "score is NaN or infinite")
        return self.pipe.postprocess(np.stack(rows), function_to_apply="none" if raw_scores else self.function,
                                     top_k=None, _legacy=False)

    async def embed(self, texts: list[str], truncate: bool, normalize: bool,
                    disconnected: Disconnected, timings: Timings) -> list[list[float]]:
        if self.classifier:
            raise ServerError("model_type", "model is not an embedding model: this server runs a sequence "
                              "classifier; use /predict, or start it with --task feature-extraction")
        items, batch = await self.tokenize([(t, None) for t in texts], truncate, timings, normalize)
        rows = await self.infer(items, disconnected, timings)
        return self.pipe.postprocess(rows, batch)

    # -- /info ------------------------------------------------------------------------------------

    def info(self) -> dict:
        config = self.pipe.config
        id2label = sorted(config.id2label.items()) if self.classifier else []
        model_type = ({"classifier": {"id2label": {str(i): label for i, label in id2label},
                                      "label2id": {label: i for i, label in id2label}}}
                      if self.classifier else {"embedding": {"pooling": self.pooling_mode}})
        s = self.settings
        return {
            "model_id": s.model_id or self.pipe.checkpoint.name, "model_sha": None, "model_dtype": s.dtype,
            "model_type": model_type, "task": self.pipe.task, "labels": [label for _, label in id2label],
            "max_concurrent_requests": s.max_concurrent_requests, "max_input_length": self.max_input_length,
            "max_batch_tokens": self.limits.max_batch_tokens, "max_batch_requests": self.limits.max_batch_requests,
            "max_client_batch_size": s.max_client_batch_size, "auto_truncate": s.auto_truncate,
            "tokenization_workers": 1, "version": __version__, "sha": None, "docker_label": None,
        }

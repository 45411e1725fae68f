"""The model behind the routes: tokenize, queue, post-process. Knows nothing of HTTP.

Stage 1 is the pipeline's own `preprocess` (its tokenizer), stage 2 its engine (`pipe.forward`
over `Item`s, called by the batcher's worker thread), stage 3 the task's numpy post-processing
(`label_scores` for classifiers; mean or CLS pooling then L2 norm for embeddings).
"""

from __future__ import annotations

import asyncio
import json
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
from coulisse.interfaces.server.metrics import ServerMetrics
from coulisse.pipelines import Pipeline
from coulisse.tasks.text_classification import default_function, label_scores

log = logging.getLogger(__name__)

POOLINGS = ("mean", "cls")
TASKS = ("text-classification", "feature-extraction")  # /predict and /embed
# Returns when the client goes away; None where no client can (tests, in-process calls).
Disconnected = Callable[[], Awaitable[None]] | None


@dataclass(frozen=True)
class ServerSettings:
    model_id: str = ""
    max_batch_tokens: int = 2048
    max_batch_requests: int = 64
    max_wait_ms: float = 2.0
    max_client_batch_size: int = 32
    max_concurrent_requests: int = 512
    auto_truncate: bool = True
    payload_limit: int = 2_000_000
    api_key: str | None = field(default=None, repr=False)  # never in a log line, not even a debug one
    pooling: str | None = None
    dtype: str = "float32"


@dataclass
class Timings:
    tokens: int = 0
    tokenization_s: float = 0.0
    queue_s: float = 0.0
    inference_s: float = 0.0


def pooling_of(pipe: Pipeline, override: str | None) -> str:
    """sentence-transformers' choice (1_Pooling/config.json) unless overridden; mean when absent."""
    if override:
        if override not in POOLINGS:
            raise InputError(f"pooling={override!r}; use one of {', '.join(POOLINGS)}.")
        return override
    path = pipe.checkpoint.directory / "1_Pooling" / "config.json"
    if path.is_file():
        config = json.loads(path.read_text(encoding="utf-8"))
        if config.get("pooling_mode_cls_token"):
            return "cls"
    return "mean"


def max_input_length(pipe: Pipeline) -> int:
    """TEI's rule: sentence-transformers' max_seq_length when the checkpoint has one, else the model's."""
    limit = pipe.tokenizer.model_max_length
    path = pipe.checkpoint.directory / "sentence_bert_config.json"
    if path.is_file():
        limit = min(limit, int(json.loads(path.read_text(encoding="utf-8")).get("max_seq_length", limit)))
    return limit


class Service:
    def __init__(self, pipe: Pipeline, settings: ServerSettings, metrics: ServerMetrics):
        if pipe.task not in TASKS:
            raise InputError(f"coulisse serve runs {' or '.join(TASKS)} pipelines, not {pipe.task!r}.")
        self.pipe = pipe
        self.settings = settings
        self.metrics = metrics
        self.classifier = pipe.task == "text-classification"
        self.max_input_length = max_input_length(pipe)
        self.function = default_function(pipe.config.problem_type, pipe.config.num_labels)
        self.pooling = None if self.classifier else pooling_of(pipe, settings.pooling)
        limits = BatchLimits(settings.max_batch_tokens, settings.max_batch_requests, settings.max_wait_ms)
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

    def _encode(self, texts: list[str], pairs: list[str] | None, truncate: bool) -> list[Item]:
        # `pipe.preprocess`, with TEI's length limit (it can be shorter than the tokenizer's).
        encodings = self.pipe.tokenizer.encode_batch(texts, pairs, truncation=truncate,
                                                     max_length=self.max_input_length)
        return [Item(e.ids, e.type_ids) for e in encodings]

    def _tokenize(self, sequences: list[tuple[str, str | None]], truncate: bool) -> list[Item]:
        """Single texts and text pairs may share a request; each kind is one tokenizer call."""
        items: list[Item | None] = [None] * len(sequences)
        for paired in (False, True):
            where = [i for i, (_, pair) in enumerate(sequences) if (pair is not None) == paired]
            if where:
                encoded = self._encode([sequences[i][0] for i in where],
                                       [sequences[i][1] for i in where] if paired else None, truncate)
                for i, item in zip(where, encoded, strict=True):
                    items[i] = item
        return items  # type: ignore[return-value]

    async def tokenize(self, sequences: list[tuple[str, str | None]], truncate: bool,
                       timings: Timings) -> list[Item]:
        start = time.perf_counter()
        loop = asyncio.get_running_loop()
        items = await loop.run_in_executor(self._tokenizer_pool, self._tokenize, sequences, truncate)
        timings.tokenization_s = time.perf_counter() - start
        self.metrics.tokenization_duration.observe(timings.tokenization_s)
        for item in items:
            n = len(item.ids)
            if n > self.max_input_length:
                raise ServerError("input_length", f"Input validation error: `inputs` must have less than "
                                  f"{self.max_input_length} tokens. Given: {n}. Pass \"truncate\": true.")
            self.metrics.input_length.observe(n)
            timings.tokens += n
        return items

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
        rows = await self.infer(await self.tokenize(sequences, truncate, timings), disconnected, timings)
        function = "none" if raw_scores else self.function
        out = []
        for row in rows:
            if not np.isfinite(row).all():
                raise ServerError("backend", "score is NaN or infinite")
            out.append(label_scores(row, self.pipe.config.id2label, function, top_k=None, legacy=False))
        return out

    async def embed(self, texts: list[str], truncate: bool, normalize: bool,
                    disconnected: Disconnected, timings: Timings) -> list[list[float]]:
        if self.classifier:
            raise ServerError("model_type", "model is not an embedding model: this server runs a sequence "
                              "classifier; use /predict, or start it with --task feature-extraction")
        items = await self.tokenize([(t, None) for t in texts], truncate, timings)
        rows = await self.infer(items, disconnected, timings)
        return [self.pool(hidden, normalize).tolist() for hidden in rows]

    def pool(self, hidden: np.ndarray, normalize: bool) -> np.ndarray:
        """Hidden states `(length, H)` -> one vector `(H,)`: sentence-transformers' pooling, no padding."""
        vector = hidden[0] if self.pooling == "cls" else hidden.mean(axis=0)
        if normalize:
            vector = vector / max(float(np.linalg.norm(vector)), 1e-12)
        return vector.astype(np.float32)

    # -- /info ------------------------------------------------------------------------------------

    def info(self) -> dict:
        config = self.pipe.config
        id2label = sorted(config.id2label.items()) if self.classifier else []
        model_type = ({"classifier": {"id2label": {str(i): label for i, label in id2label},
                                      "label2id": {label: i for i, label in id2label}}}
                      if self.classifier else {"embedding": {"pooling": self.pooling}})
        s = self.settings
        return {
            "model_id": s.model_id or self.pipe.checkpoint.name, "model_sha": None, "model_dtype": s.dtype,
            "model_type": model_type, "task": self.pipe.task, "labels": [label for _, label in id2label],
            "max_concurrent_requests": s.max_concurrent_requests, "max_input_length": self.max_input_length,
            "max_batch_tokens": s.max_batch_tokens, "max_batch_requests": s.max_batch_requests,
            "max_client_batch_size": s.max_client_batch_size, "auto_truncate": s.auto_truncate,
            "tokenization_workers": 1, "version": __version__, "sha": None, "docker_label": None,
        }

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
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from functools import partial
from typing import TypeVar

import numpy as np

from coulisse import __version__
from coulisse.engine import Item
from coulisse.engine.threads import thread_policy
from coulisse.errors import InputError
from coulisse.hub_cache import snapshot_commit
from coulisse.interfaces.server.batching import Batcher, BatchLimits, ForwardError, Result, Worker
from coulisse.interfaces.server.bounds import CHARS_PER_TOKEN, characters_of, check_characters, cut_characters, parts
from coulisse.interfaces.server.embedding import Prompts, cut_dimensions, id_item, library_error
from coulisse.interfaces.server.errors import ServerError
from coulisse.interfaces.server.limits import BATCH
from coulisse.interfaces.server.metrics import ServerMetrics
from coulisse.interfaces.server.settings import ServerSettings
from coulisse.interfaces.server.task_bounds import (
    PREPROCESS_FIELD,
    ZERO_SHOT,
    bounded,
    check_parameters,
    joined,
    probes,
    too_many,
)
from coulisse.tasks.base import POST, PRE, Batch, Pipeline
from coulisse.tokenizer import unicode_problem

log = logging.getLogger(__name__)

POOLINGS = ("mean", "cls")
# What follows "`inputs` must have less than N tokens. Given: M": how a TEI body asks for truncation. A route whose
# body has no `truncate` (OpenAI's, /similarity's `parameters`) says its own way.
TRUNCATE_HINT = '. Pass "truncate": true.'
OPENAI_TRUNCATE_HINT = (". OpenAI's body has no truncate field: the server truncates when started with --auto-truncate "
                        "(AUTO_TRUNCATE=true); or send shorter inputs.")
PARAMETERS_TRUNCATE_HINT = '. Pass "parameters": {"truncate": true}.'
SPLADE = "splade"  # TEI's --pooling splade: a masked-LM head pooled into sparse embeddings (sparse-embedding)
# Every task of the registry: /predict and /rerank serve text-classification, /embed and its kin
# feature-extraction, `POST /` in the Inference API's shape every one of them (inference_api.py).
TASKS = ("text-classification", "feature-extraction", "token-classification", "question-answering",
         "fill-mask", "zero-shot-classification", "sparse-embedding")
# Returns when the client goes away; None where no client can (tests, in-process calls).
Disconnected = Callable[[], Awaitable[None]] | None
T, R = TypeVar("T"), TypeVar("R")


@dataclass
class Timings:
    tokens: int = 0
    characters: int = 0  # TEI's compute_chars: the inputs' characters (a token id counts one)
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


def check_not_empty(sequences: list[tuple[str | list[int], str | None]], name: str = "inputs") -> None:
    """TEI's 400 `empty` for an empty text, before any prompt is added: the pipeline would encode it as its
    special tokens alone, which no client means. Either text of a pair too (TEI: only both), as the schema says;
    an empty token id list too, as TEI's EncodingInput::Ids."""
    for i, (text, pair) in enumerate(sequences):
        if len(text) == 0 or pair == "":
            what = "an empty text" if isinstance(text, str) else "an empty list of token ids"
            where = "" if len(sequences) == 1 and pair is None and isinstance(text, str) else \
                f": {name}[{i}]{'' if pair is None else [0 if text == '' else 1]} is {what}"
            raise ServerError("empty", f"`{name}` cannot be empty{where}")


def characters(inputs) -> int:
    """The characters of every text in an Inference API body's `inputs` (a text, a list, a QA dict)."""
    if isinstance(inputs, str):
        return len(inputs)
    if isinstance(inputs, dict):
        inputs = list(inputs.values())
    return sum(characters(x) for x in inputs) if isinstance(inputs, (list, tuple)) else 0


def pooling_of(override: str | None, sparse: bool = False) -> str:
    """The pipeline's pooling option for /embed: the folder's sentence-transformers choice ("auto")
    unless the server was started with --pooling; "splade" for a sparse-embedding pipeline, and only there."""
    if sparse or override == SPLADE:
        if not sparse or override not in (None, SPLADE):
            raise InputError(f"pooling={override!r} with a {'sparse' if sparse else 'dense'} embedding pipeline; "
                             "pooling 'splade' goes with pipeline('sparse-embedding', ...), and only it.")
        return SPLADE
    if override and override not in POOLINGS:
        raise InputError(f"pooling={override!r}; use one of {', '.join((*POOLINGS, SPLADE))}.")
    return override or "auto"


def budget(asked: int | None, default: int, engine: int, name: str) -> int:
    """The server's batch limit: the one asked for, else `default` (`coulisse serve`'s); never past the engine's."""
    if asked is None:
        return min(default, engine)
    if asked > engine:
        raise InputError(f"the server's batch limit {asked} exceeds the pipeline's {name}={engine}, which would "
                         f"cut every batch again; build it with pipeline(..., {name}={asked}).")
    return asked


class Service:
    def __init__(self, pipe: Pipeline, settings: ServerSettings, metrics: ServerMetrics, worker: Worker | None = None):
        """`worker`: the thread the batches run on, one for all the models of a server (`batching.Worker`)."""
        if pipe.task not in TASKS:
            raise InputError(f"coulisse serve runs {' or '.join(TASKS)} pipelines, not {pipe.task!r}.")
        self.pipe = pipe
        self.settings = settings
        self.metrics = metrics
        self.classifier = pipe.task == "text-classification"
        # TEI's embedding model; a SPLADE one (sparse) also answers /embed_sparse, and refuses what TEI refuses
        self.sparse = pipe.task == "sparse-embedding"
        self.embedding = pipe.task == "feature-extraction" or self.sparse
        # TEI's reranker: a cross-encoder, a sequence classifier with one output.
        self.reranker = self.classifier and pipe.config.num_labels == 1
        self.pooling = pooling_of(settings.pooling, self.sparse) if self.embedding else None
        # TEI's rule, the pipeline's too: sentence-transformers' max_seq_length when the folder has one.
        self.max_input_length = pipe.tokenizer.model_max_length
        self.prompts = Prompts(pipe.checkpoint.directory, settings.default_prompt_name, settings.default_prompt)
        if self.embedding:
            found = pipe.sentence_config(self.pooling, None)
            self.pooling_mode = found.pooling  # what "auto" chose, for /info
            self.max_input_length = pipe.token_limit(found)
        self.function = pipe.options({})["function_to_apply"] if self.classifier else None
        limits = BatchLimits(budget(settings.max_batch_tokens, BATCH.max_batch_tokens, pipe.engine.max_batch_tokens,
                                    "max_batch_tokens"),
                             budget(settings.max_batch_requests, BATCH.max_batch_requests, pipe.engine.max_batch_size,
                                    "max_batch_size"),
                             settings.max_wait_ms)
        self.limits = limits
        self.threads = thread_policy(settings.threads)
        self.batcher = Batcher(self._forward, limits, metrics, worker)
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

    def _preprocess(self, sequences: list[tuple[str | list[int], str | None]], truncate: bool,
                    normalize: bool | None, side: str = "right", prompt: str = "", first: int = 0,
                    total: int | None = None) -> tuple[list[Item], Batch | None]:
        """`pipe.preprocess`: texts for /embed (one batch, its pooling and prompt inside; token ids as given);
        for /predict, single texts and text pairs may share a request, each kind one call. `sequences` may be
        a part of the request's `total` inputs, from its input `first` on (named so in errors)."""
        if self.embedding:
            return self._preprocess_embed([text for text, _ in sequences], truncate, normalize, side, prompt,
                                          first, total)
        items: list[Item | None] = [None] * len(sequences)
        for paired in (False, True):
            where = [i for i, (_, pair) in enumerate(sequences) if (pair is not None) == paired]
            if where:
                inputs = [{"text": sequences[i][0], "text_pair": sequences[i][1]} if paired
                          else prompt + sequences[i][0] for i in where]
                batch = self.pipe.preprocess(inputs, truncation=truncate, truncation_side=side)
                for i, item in zip(where, batch, strict=True):
                    items[i] = item
        return items, None  # type: ignore[return-value]

    def _preprocess_embed(self, inputs: list[str | list[int]], truncate: bool, normalize: bool | None,
                          side: str = "right", prompt: str = "", first: int = 0,
                          total: int | None = None) -> tuple[list[Item], Batch]:
        total = len(inputs) if total is None else total
        if prompt:  # TEI: token ids are decoded (special tokens skipped), prompted and encoded again as a text
            inputs = [x if isinstance(x, str) else self._decoded(x, first + i, total) for i, x in enumerate(inputs)]
        where = [i for i, x in enumerate(inputs) if isinstance(x, str)]
        items: list[Item | None] = [None] * len(inputs)
        context = self.pipe.sentence_config(self.pooling, normalize)
        if where and self.sparse:  # the pipeline's own preprocess: its pooling is the model's head
            batch = self.pipe.preprocess([inputs[i] for i in where], truncation=truncate, truncation_side=side,
                                         prompt=prompt)
            context = batch.context
            for i, item in zip(where, batch.items, strict=True):
                items[i] = item
        elif where:
            batch = self.pipe.preprocess([inputs[i] for i in where], truncation=truncate, pooling=self.pooling,
                                         normalize=normalize, truncation_side=side, prompt=prompt)
            context = batch.context
            for i, item in zip(where, batch.items, strict=True):
                items[i] = item
        vocab = len(self.pipe.tokenizer)
        for i, x in enumerate(inputs):
            if items[i] is None:
                field = "inputs" if total == 1 else f"inputs[{first + i}]"
                items[i] = id_item(x, vocab, self.max_input_length, truncate, field, side)  # type: ignore[arg-type]
        return items, Batch(items, list(inputs), False, context=context)  # type: ignore[arg-type]

    def _decoded(self, ids: list[int], i: int, n: int) -> str:
        vocab = len(self.pipe.tokenizer)
        id_item(ids, vocab, len(ids), False, "inputs" if n == 1 else f"inputs[{i}]")  # ids outside the vocabulary: 422
        return self.pipe.tokenizer.decode(ids, skip_special_tokens=True)

    async def tokenize(self, sequences: list[tuple[str | list[int], str | None]], truncate: bool,
                       timings: Timings, normalize: bool | None = None, side: str = "right",
                       prompt: str = "", hint: str = TRUNCATE_HINT) -> tuple[list[Item], Batch | None]:
        """Stage 1 off the event loop. `side`: which end truncation cuts ("left" keeps the end); `prompt`: what
        goes before each text (token ids are then decoded to a text first, as TEI does). What a request may cost
        the tokenizer thread is bounds.py's: a truncated input past TEI's characters is cut first, and the
        inputs take turns with other requests' in parts. `hint`: how the route's body asks for truncation, said
        after an input too long."""
        check_unicode([(t, p) for t, p in sequences if isinstance(t, str)])
        limit = self.max_input_length * CHARS_PER_TOKEN
        if not truncate:
            check_characters(sequences, limit, hint)
        else:
            sequences = cut_characters(sequences, limit, side)
        start = time.perf_counter()
        try:
            done = await self.in_turns(lambda part: self._preprocess(
                [s for _, s in part], truncate, normalize, side, prompt, part[0][0], len(sequences)),
                list(enumerate(sequences)), lambda indexed: characters_of(indexed[1]))
        except InputError as e:  # what the tokenizer refuses (a pair too costly to cut from the left)
            raise library_error(e, "inputs") from None
        items = [item for part, _ in done for item in part]
        batch = None
        if done[0][1] is not None:  # /embed's: one batch of every part's items, the context of one with texts
            texts = [b for _, b in done if any(isinstance(x, str) for x in b.inputs)] or [done[0][1]]
            batch = Batch(items, [x for _, b in done for x in b.inputs], False, context=texts[0].context)
        timings.tokenization_s = time.perf_counter() - start
        self.metrics.tokenization_duration.observe(timings.tokenization_s)
        for item in items:
            n = len(item.ids)
            if n > self.max_input_length:
                raise ServerError("input_length", f"Input validation error: `inputs` must have less than "
                                  f"{self.max_input_length} tokens. Given: {n}{hint}")
            self.metrics.input_length.observe(n)
            timings.tokens += n
        return items, batch

    # -- stage 2 ----------------------------------------------------------------------------------

    def _forward(self, items: list[Item]) -> list[np.ndarray]:
        """`pipe.forward` on the batcher's worker thread, on the thread policy's count (set in that thread)."""
        return self.threads.run(lambda: self.pipe.forward(items))

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
                # The first cancelled entry sets CancelledError on `gathered` as an exception; read it, else
                # asyncio logs "exception was never retrieved" at ERROR for a client that merely hung up.
                gathered.add_done_callback(lambda f: f.cancelled() or f.exception())
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
                      disconnected: Disconnected, timings: Timings, side: str = "right") -> list[list[dict]]:
        if not self.classifier:
            raise ServerError("model_type", f"model is not a classifier model: model {self.served_model_name!r} runs "
                              f"{self.pipe.task}; {self.route_hint()}")
        check_not_empty(sequences)
        prompt = self.prompts.text(None)  # TEI: the server's default prompt, before single texts only
        if prompt and any(pair is not None for _, pair in sequences):
            raise ServerError("validation", "Input validation error: the server's default prompt "
                              "(--default-prompt-name / --default-prompt) goes before single texts, and TEI refuses "
                              "it with a text pair, as coulisse does: send single texts, or serve this model "
                              "without a default prompt")
        timings.characters = sum(len(text) + len(pair or "") for text, pair in sequences)
        items, _ = await self.tokenize(sequences, truncate, timings, side=side, prompt=prompt)
        rows = await self.infer(items, disconnected, timings)
        if not all(np.isfinite(row).all() for row in rows):
            raise ServerError("backend", "score is NaN or infinite")
        return self.pipe.postprocess(np.stack(rows), function_to_apply="none" if raw_scores else self.function,
                                     top_k=None, _legacy=False)

    async def embed(self, texts: list[str | list[int]], truncate: bool, normalize: bool,
                    disconnected: Disconnected, timings: Timings, *, prompt_name: str | None = None,
                    dimensions: int | None = None, pooled: bool = True, side: str = "right",
                    hint: str = TRUNCATE_HINT) -> list:
        """Pooled vectors (or, `pooled=False`, every token's hidden state: /embed_all). The prompt goes before
        each text (token ids are decoded first); `dimensions` cuts each vector, then renormalizes when `normalize`.
        `hint`: as `tokenize`'s."""
        if not self.embedding:
            raise ServerError("model_type", f"model is not an embedding model: model {self.served_model_name!r} runs "
                              f"{self.pipe.task}; {self.route_hint()}")
        if self.sparse and not pooled:  # TEI's refusals for a SPLADE model, same status (424)
            raise ServerError("model_type", "`embed_all` is not available for SPLADE models")
        if self.sparse and normalize:
            raise ServerError("model_type", "`normalize` is not available for SPLADE models: pass "
                              "\"normalize\": false to /embed, or use /embed_sparse")
        check_not_empty([(t, None) for t in texts])
        timings.characters = sum(len(t) for t in texts)  # before the prompt, as TEI counts them
        prompt = self.prompts.text(prompt_name)  # pooled past its tokens where the Pooling leaves them out
        items, batch = await self.tokenize([(t, None) for t in texts], truncate, timings, normalize, side, prompt,
                                           hint)
        rows = await self.infer(items, disconnected, timings)
        if not pooled:  # the token embeddings, `(length, H)` per input, written as JSON off the loop (answers.py)
            return [np.asarray(row, dtype=np.float32) for row in rows]
        if self.sparse:  # the vocabulary-sized weights, zeros included, as TEI's /embed gives them
            vectors = [t.to_dense().tolist() for t in self.pipe.postprocess(rows, batch, return_tensors=True)]
            return cut_dimensions(vectors, dimensions, False)
        return cut_dimensions(self.pipe.postprocess(rows, batch), dimensions, normalize)

    async def embed_sparse(self, texts: list[str | list[int]], truncate: bool, disconnected: Disconnected,
                           timings: Timings, *, prompt_name: str | None = None, side: str = "right") -> list:
        """SPLADE's non-zero weights of each input, as TEI's /embed_sparse: [{"index", "value"}] by index."""
        if not self.sparse:
            raise ServerError("model_type", "Model is not an embedding model with SPLADE pooling; "
                              f"{self.route_hint()}")
        check_not_empty([(t, None) for t in texts])
        timings.characters = sum(len(t) for t in texts)
        items, batch = await self.tokenize([(t, None) for t in texts], truncate, timings, None, side,
                                           self.prompts.text(prompt_name))
        rows = await self.infer(items, disconnected, timings)
        sparse = [t.coalesce() for t in self.pipe.postprocess(rows, batch, return_tensors=True)]
        return [[{"index": i, "value": v} for i, v in zip(t.indices()[0].tolist(), t.values().tolist(), strict=True)]
                for t in sparse]

    async def run_task(self, inputs, parameters: dict, disconnected: Disconnected, timings: Timings,
                       admit: Callable[[int], AbstractContextManager] | None = None):
        """Any task, through the pipeline's own contract: options checked (a bad one is a 422 naming it),
        `preprocess` on the tokenizer thread within task_bounds.py's bounds, `forward` in the batcher,
        `postprocess`. `admit(n)`: the permits of the n model inputs preprocess made, held while they run."""
        pipe = self.pipe
        try:
            options = pipe.options(parameters)
            check_parameters(pipe, options)
        except InputError as e:
            raise library_error(e, "parameters") from None
        side = options.get("truncation_side") or pipe.tokenizer.truncation_side
        texts = bounded(pipe.task, inputs, options, self.max_input_length * CHARS_PER_TOKEN, side)
        if self.classifier and isinstance(texts, str):  # TEI's /predict: the default prompt (its characters uncounted)
            texts = self.prompts.text(None) + texts
        start = time.perf_counter()
        batch = await self._task_batch(texts, pipe.stage_options(options, PRE), side)
        timings.tokenization_s = time.perf_counter() - start
        self.metrics.tokenization_duration.observe(timings.tokenization_s)
        if len(batch.items) > self.settings.max_client_batch_size:
            raise too_many(pipe.task, len(batch.items), self.settings.max_client_batch_size, options)
        timings.tokens = sum(len(item.ids) for item in batch.items)
        timings.characters = characters(inputs)
        for item in batch.items:
            self.metrics.input_length.observe(len(item.ids))
        with admit(len(batch.items)) if admit is not None else nullcontext():
            rows = await self.infer(batch.items, disconnected, timings)
        # off the event loop: question answering's spans cost ~40 ms over 12 windows, ~220 ms with top_k=100 (a
        # 2-core Xeon), during which no other request or probe would be answered
        return await self.off_loop(partial(pipe.postprocess, rows, batch, **pipe.stage_options(options, POST)))

    async def _task_batch(self, texts, pre: dict, side: str) -> Batch:
        """`preprocess` on the tokenizer thread: zero-shot's labels in turns, a windowed text's windows counted in
        growing prefixes first (task_bounds.py); what it refuses is a 422 naming the field it is about."""
        pipe, limit = self.pipe, self.settings.max_client_batch_size
        try:
            if pipe.task == ZERO_SHOT:
                template = pre["hypothesis_template"]
                return joined(await self.in_turns(
                    lambda labels: pipe.preprocess(texts, **{**pre, "candidate_labels": labels}),
                    pre["candidate_labels"], lambda label: len(texts) + len(template) + len(label)))
            for probe, n in probes(pipe.task, texts, pre, side):
                counted = len(await self.off_loop(partial(pipe.preprocess, probe, **pre)))
                if counted > limit:
                    raise too_many(pipe.task, counted, limit, pre, n, side)
            return await self.off_loop(partial(pipe.preprocess, texts, **pre))
        except InputError as e:
            raise library_error(e, PREPROCESS_FIELD.get(pipe.task, "inputs")) from None

    async def rerank(self, query: str, texts: list[str], truncate: bool, raw_scores: bool,
                     disconnected: Disconnected, timings: Timings, side: str = "right") -> list[float]:
        """The cross-encoder's score of each (query, text) pair: its one logit, or its sigmoid."""
        if not self.reranker:
            what = f"{self.pipe.config.num_labels} labels" if self.classifier else self.pipe.task
            raise ServerError("model_type", f"model is not a re-ranker model (a sequence classifier with one "
                              f"output; this one runs {what}); {self.route_hint()}")
        for name, text in (("query", query), *((f"texts[{i}]", t) for i, t in enumerate(texts))):
            if problem := unicode_problem(text):  # named as the client sent it, not as a pair of /predict
                raise ServerError("validation", f"Input validation error: {name} is {problem}")
        results = await self.predict([(query, text) for text in texts], truncate, raw_scores, disconnected, timings,
                                     side)
        return [result[0]["score"] for result in results]

    async def off_loop(self, work: Callable[[], object]):
        """Tokenizer work (/decode), and a task's post-processing (`run_task`), on the tokenizer thread, off the
        event loop."""
        return await asyncio.get_running_loop().run_in_executor(self._tokenizer_pool, work)

    async def in_turns(self, work: Callable[[list[T]], R], inputs: list[T], size: Callable[[T], int]) -> list[R]:
        """`work` over `inputs` on the tokenizer thread, one job per part of about `bounds.TURN_CHARACTERS`
        (`size` of each input): between two parts of a long request, the jobs other requests queued run."""
        loop = asyncio.get_running_loop()
        return [await loop.run_in_executor(self._tokenizer_pool, work, part) for part in parts(inputs, size)]

    @property
    def served_model_name(self) -> str:
        return self.settings.served_model_name or self.settings.model_id or self.pipe.checkpoint.name

    def route_hint(self) -> str:
        """Where this server's task is served, for a 424 on another task's route."""
        routes = {"text-classification": "use /predict or POST /", "feature-extraction": "use /embed or POST /",
                  "sparse-embedding": "use /embed_sparse or POST /"}
        return routes.get(self.pipe.task, "use POST / with the Inference API's {\"inputs\", \"parameters\"}")

    # -- /info ------------------------------------------------------------------------------------

    def info(self) -> dict:
        config = self.pipe.config
        id2label = sorted(config.id2label.items()) if not self.embedding else []
        labels = {"id2label": {str(i): label for i, label in id2label},
                  "label2id": {label: i for i, label in id2label}}
        # TEI's tagged model type; the heads TEI lacks are tagged by their labels, `task` says which.
        model_type = ({"embedding": {"pooling": self.pooling_mode}} if self.embedding
                      else {"reranker": labels} if self.reranker else {"classifier": labels})
        s = self.settings
        return {
            "model_id": s.model_id or self.pipe.checkpoint.name, "model_dtype": s.dtype,
            "model_sha": snapshot_commit(self.pipe.checkpoint.directory),  # TEI's: the revision's commit
            "served_model_name": self.served_model_name,
            "model_type": model_type, "task": self.pipe.task, "labels": [label for _, label in id2label],
            "max_concurrent_requests": s.max_concurrent_requests, "max_input_length": self.max_input_length,
            "max_batch_tokens": self.limits.max_batch_tokens, "max_batch_requests": self.limits.max_batch_requests,
            "max_client_batch_size": s.max_client_batch_size, "auto_truncate": s.auto_truncate,
            "tokenization_workers": 1, "version": __version__, "sha": None, "docker_label": None,
            # coulisse's own: what --fast resolved to and how the engine runs (TEI clients ignore these).
            "fast": s.fast, "engine": self.pipe.preparation.describe(), "threads": self.threads.as_dict(),
            "omp_wait_policy": s.wait_policy or None,
        }

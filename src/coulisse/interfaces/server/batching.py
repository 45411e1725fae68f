"""Dynamic batching, as text-embeddings-inference does it (core/src/queue.rs, core/src/infer.rs).

One asyncio task owns the queue. Each input of each request is one entry; the task closes a batch
when the queued tokens reach `max_batch_tokens`, when `max_batch_requests` inputs wait, or when
the oldest entry has waited `max_wait_ms` *and* the worker is free: while the worker runs a batch
there is no reason to close the next one early, so it keeps filling. The forward pass runs on a
single worker thread (torch already uses every core inside one call), never on the event loop.
Entries whose client went away are cancelled futures and are dropped before they cost compute.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial

import numpy as np

from coulisse.engine import Item
from coulisse.interfaces.server.limits import BATCH, BatchLimits
from coulisse.interfaces.server.metrics import ServerMetrics

log = logging.getLogger(__name__)

Forward = Callable[[list[Item]], Sequence[np.ndarray]]


@dataclass
class Result:
    """One input's model output, with where its time went."""

    row: np.ndarray
    queue_s: float
    inference_s: float


class ForwardError(RuntimeError):
    """The forward pass raised; `__cause__` holds the original exception."""


@dataclass(eq=False)
class Entry:
    item: Item
    future: asyncio.Future
    enqueued: float = field(default_factory=time.monotonic)

    @property
    def tokens(self) -> int:
        return len(self.item.ids)


class Batcher:
    def __init__(self, forward: Forward, limits: BatchLimits = BATCH,
                 metrics: ServerMetrics | None = None):
        self.forward = forward
        self.limits = limits
        self.metrics = metrics or ServerMetrics()
        self._queue: deque[Entry] = deque()
        self._queued_tokens = 0
        self._wakeup: asyncio.Event | None = None
        self._inflight: asyncio.Future | None = None
        self._task: asyncio.Task | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._closing = False

    # -- lifecycle --------------------------------------------------------------------------------

    async def start(self) -> None:
        self._wakeup = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="coulisse-forward")
        self._closing = False
        self._task = asyncio.create_task(self._run(), name="coulisse-batcher")

    async def stop(self) -> None:
        """Finish what is queued and running, then stop the task and the worker thread."""
        if self._task is None:
            return
        self._closing = True
        self._wakeup.set()
        try:
            await self._task
        except ForwardError:
            pass  # already logged when the loop crashed
        finally:
            self._executor.shutdown(wait=True)
            self._task = None

    @property
    def alive(self) -> bool:
        return self._task is not None and not self._task.done() and not self._closing

    # -- producer side (request handlers) ---------------------------------------------------------

    def submit(self, items: Sequence[Item]) -> list[asyncio.Future]:
        """Queue one entry per item; each future resolves to a `Result` or raises `ForwardError`."""
        if not self.alive:
            raise RuntimeError("the batcher is not running (server starting or shutting down)")
        loop = asyncio.get_running_loop()
        entries = [Entry(item, loop.create_future()) for item in items]
        self._queue.extend(entries)
        self._queued_tokens += sum(e.tokens for e in entries)
        self.metrics.queue_size.set(len(self._queue))
        self._wakeup.set()
        return [e.future for e in entries]

    # -- the task that owns the queue -------------------------------------------------------------

    async def _run(self) -> None:
        try:
            while True:
                batch = await self._next_batch()
                if batch is None:
                    break
                await self._worker_free()
                batch = [e for e in batch if not self._dropped(e)]  # clients may have left meanwhile
                if batch:
                    self._dispatch(batch)
            await self._worker_free()
        except Exception as exc:
            log.exception("the batching loop crashed: this is a bug")
            for entry in self._queue:
                if not entry.future.done():
                    entry.future.set_exception(ForwardError("the batching loop crashed"))
            self._queue.clear()
            raise ForwardError("the batching loop crashed") from exc

    async def _next_batch(self) -> list[Entry] | None:
        """Wait until a batch should close and take it; None once closing with nothing queued."""
        loop = asyncio.get_running_loop()
        limits = self.limits
        while True:
            if not self._queue:
                if self._closing:
                    return None
                await self._wait(None)
                continue
            busy = self._inflight is not None and not self._inflight.done()
            full = (self._queued_tokens >= limits.max_batch_tokens
                    or len(self._queue) >= limits.max_batch_requests)
            wait_s = self._queue[0].enqueued + limits.max_wait_ms / 1000 - time.monotonic()
            if full or (not busy and (wait_s <= 0 or self._closing)):
                return self._take()
            # Busy: the worker's completion wakes us. Idle: the oldest entry's deadline does.
            await self._wait(None if busy else loop.call_later(wait_s, self._wakeup.set))

    async def _wait(self, timer: asyncio.TimerHandle | None) -> None:
        self._wakeup.clear()
        try:
            await self._wakeup.wait()
        finally:
            if timer is not None:
                timer.cancel()

    def _take(self) -> list[Entry]:
        """FIFO entries up to the token budget and the count (at least one, however long)."""
        batch: list[Entry] = []
        tokens = 0
        budget = self.limits.max_batch_tokens
        while self._queue and len(batch) < self.limits.max_batch_requests:
            entry = self._queue[0]
            if batch and tokens + entry.tokens > budget and not entry.future.cancelled():
                break
            self._queue.popleft()
            self._queued_tokens -= entry.tokens
            if self._dropped(entry):
                continue
            batch.append(entry)
            tokens += entry.tokens
        self.metrics.queue_size.set(len(self._queue))
        if batch:
            self.metrics.batch_size.observe(len(batch))
            self.metrics.batch_tokens.observe(tokens)
        return batch

    def _dropped(self, entry: Entry) -> bool:
        if entry.future.cancelled():
            self.metrics.batch_dropped.inc()
            return True
        return False

    async def _worker_free(self) -> None:
        while self._inflight is not None and not self._inflight.done():
            await self._wait(None)

    # -- the worker thread ------------------------------------------------------------------------

    def _dispatch(self, batch: list[Entry]) -> None:
        started = time.monotonic()
        items = [e.item for e in batch]
        self._inflight = asyncio.get_running_loop().run_in_executor(self._executor, self._forward, items)
        self._inflight.add_done_callback(partial(self._deliver, batch, started))

    def _forward(self, items: list[Item]) -> tuple[Sequence[np.ndarray | Exception], float]:
        """The batch's rows. When it fails, its inputs run again one by one, so one input the model cannot
        run (a crafted token id) fails its own request only, not its batch neighbours' (the corpus jobs'
        rule); the rows of those that fail again are their exceptions."""
        start = time.perf_counter()
        try:
            rows: Sequence[np.ndarray | Exception] = self._rows(items)
        except Exception as exc:
            if len(items) == 1:
                raise
            log.warning("forward pass failed for a batch of %d inputs (%s: %s); running them one by one",
                        len(items), type(exc).__name__, exc)
            rows = []
            for item in items:
                try:
                    rows.append(self._rows([item])[0])
                except Exception as e:  # noqa: BLE001 - this input's own failure, answered to its request
                    rows.append(e)
        return rows, time.perf_counter() - start

    def _rows(self, items: list[Item]) -> Sequence[np.ndarray]:
        rows = self.forward(items)
        if len(rows) != len(items):
            raise RuntimeError(f"forward returned {len(rows)} rows for {len(items)} inputs: this is a bug")
        return rows

    def _deliver(self, batch: list[Entry], started: float, done: asyncio.Future) -> None:
        """On the loop: hand each entry its row (or the failure), then wake the queue task."""
        self._wakeup.set()
        exc = done.exception() if not done.cancelled() else asyncio.CancelledError()
        if exc is not None:
            log.error("forward pass failed for a batch of %d inputs", len(batch), exc_info=exc)
            for entry in batch:
                if not entry.future.done():
                    error = ForwardError(f"{type(exc).__name__}: {exc}")
                    error.__cause__ = exc
                    entry.future.set_exception(error)
            return
        rows, seconds = done.result()
        self.metrics.batch_duration.observe(seconds)
        for entry, row in zip(batch, rows, strict=True):
            if entry.future.done():
                continue
            if isinstance(row, Exception):
                log.error("forward pass failed for one input", exc_info=row)
                error = ForwardError(f"{type(row).__name__}: {row}")
                error.__cause__ = row
                entry.future.set_exception(error)
            else:
                entry.future.set_result(Result(row, started - entry.enqueued, seconds))

"""Dynamic batching, as text-embeddings-inference does it (core/src/queue.rs, core/src/infer.rs).

One asyncio task owns the queue. Each input of each request is one entry; the task closes a batch
when the queued tokens reach `max_batch_tokens`, when `max_batch_requests` inputs wait, or when
the oldest entry has waited `max_wait_ms` *and* the worker is free: while the worker runs a batch
there is no reason to close the next one early, so it keeps filling.

Batches take the waiting requests' inputs in turn, one of each request, round and round, not the inputs in
the order they came (TEI's queue): a request that just had an input taken goes behind the others, and a new
request joins behind them all. A short request then waits for one input of each request ahead of it, not for
all their inputs (before, on a 2-core Xeon, a short MiniLM request beside 16 clients each sending 20 long
reviews waited 7.6 s p50 in the queue). An input that does not fit the batch's remaining budget leaves its
turn to the next request's and stays at the front: it starts the next batch (the first input of a batch is
always taken, however long), so none waits for ever.

The forward pass runs on a single worker thread (torch already uses every core inside one call), never on the
event loop: the process's `torch_thread()`, where the models were loaded (one OpenMP team: engine/threads.py),
shared by every model served (`Worker`).
Entries whose client went away are cancelled futures and are dropped before they cost compute. Once the server
stops (SIGTERM), what is queued runs oldest request first, so that those a --shutdown-timeout can answer do.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial

import numpy as np

from coulisse.engine import Item
from coulisse.engine.threads import torch_thread
from coulisse.interfaces.server.limits import BatchLimits
from coulisse.interfaces.server.metrics import ServerMetrics

log = logging.getLogger(__name__)

# GET /health answers 503 when a forward has run this long (no batch within the token budget takes a tenth of it
# on two cores), or when this many batches in a row failed whole.
STUCK_AFTER_S = 120.0
FAILURES_UNHEALTHY = 3

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
    order: int = 0  # when it came, across requests: a batch is run in this order

    @property
    def tokens(self) -> int:
        return len(self.item.ids)


class Worker:
    """The thread the forwards run on, as the batchers of one server (one per model) share it: one batch runs there
    at a time, and the batchers take turns, first come first served (an asyncio lock). A batcher closes a batch
    only when the thread is free, whoever's batch ran, so that its queue keeps filling meanwhile and a client that
    leaves is dropped before compute; a batch handed to a busy thread would wait there, beyond reach."""

    def __init__(self, executor: ThreadPoolExecutor | None = None):
        self.executor = executor  # None: `torch_thread()`, at start (shared, never shut down here)
        self.lock: asyncio.Lock | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiting: list[asyncio.Event] = []

    def start(self) -> None:
        if self.executor is None:
            self.executor = torch_thread()
        if self._loop is not asyncio.get_running_loop():  # a lock belongs to the loop it is used on
            self._loop, self.lock, self._waiting = asyncio.get_running_loop(), asyncio.Lock(), []

    @property
    def busy(self) -> bool:
        return self.lock is not None and self.lock.locked()

    def wake_when_free(self, event: asyncio.Event) -> None:
        self._waiting.append(event)

    def release(self) -> None:
        """The batch ended: the thread is free; the batchers that waited for it are woken in the order they began."""
        self.lock.release()
        waiting, self._waiting = self._waiting, []
        for event in waiting:
            event.set()


class Batcher:
    def __init__(self, forward: Forward, limits: BatchLimits,
                 metrics: ServerMetrics | None = None, worker: Worker | None = None):
        """`worker`: the thread the forwards run on, shared with the server's other models (its own otherwise)."""
        self.forward = forward
        self.limits = limits
        self.metrics = metrics or ServerMetrics()
        # Each waiting request's inputs, in the order their turns come (the ring of the module docstring).
        self._requests: OrderedDict[int, deque[Entry]] = OrderedDict()
        self._request_ids = itertools.count()
        self._orders = itertools.count()
        self._queued = 0
        self._queued_tokens = 0
        self._wakeup: asyncio.Event | None = None
        self._inflight: asyncio.Future | None = None
        self._task: asyncio.Task | None = None
        self.worker = worker or Worker()
        self._closing = False
        self._running_since: float | None = None  # the forward on the thread now, when one is
        self._failed_in_a_row = 0  # batches whose every input failed, since the last that answered one
        self._last_failure = ""

    # -- lifecycle --------------------------------------------------------------------------------

    async def start(self) -> None:
        self._wakeup = asyncio.Event()
        self.worker.start()
        self._closing = False
        self._task = asyncio.create_task(self._run(), name="coulisse-batcher")

    async def stop(self) -> None:
        """Finish what is queued and running, then stop the task (the worker thread stays: it is shared)."""
        if self._task is None:
            return
        self._closing = True
        self._wakeup.set()
        try:
            await self._task
        except ForwardError:
            pass  # already logged when the loop crashed
        finally:
            self._task = None

    @property
    def alive(self) -> bool:
        return self._task is not None and not self._task.done() and not self._closing

    def health_problem(self, now: float | None = None) -> str | None:
        """Why the model cannot answer, for GET /health (503), or None: the batching loop stopped; a forward has
        run for STUCK_AFTER_S (a hung model thread answers nothing, and a probe should restart it); or the last
        FAILURES_UNHEALTHY batches failed whole (a broken model). An input that fails among answered neighbours
        does not count (the batch is run again input by input); one alone in its batch does, as TEI's /health
        answers 503 after any failed forward (audit 44): the server checks every input a client can send (ids
        against the vocabulary, lengths against the limit) before it is batched, so none is known to fail there."""
        if not self.alive:
            return "the batching loop is not running"
        now = time.monotonic() if now is None else now
        if self._running_since is not None and now - self._running_since >= STUCK_AFTER_S:
            return f"a forward pass has run for {now - self._running_since:.0f} s: the model thread looks stuck"
        if self._failed_in_a_row >= FAILURES_UNHEALTHY:
            return f"the last {self._failed_in_a_row} batches failed ({self._last_failure})"
        return None

    # -- producer side (request handlers) ---------------------------------------------------------

    def submit(self, items: Sequence[Item]) -> list[asyncio.Future]:
        """Queue one entry per item; each future resolves to a `Result` or raises `ForwardError`."""
        if not self.alive:
            raise RuntimeError("the batcher is not running (server starting or shutting down)")
        loop = asyncio.get_running_loop()
        entries = [Entry(item, loop.create_future(), order=next(self._orders)) for item in items]
        if entries:
            self._requests[next(self._request_ids)] = deque(entries)
        self._queued += len(entries)
        self._queued_tokens += sum(e.tokens for e in entries)
        self.metrics.queue_size.set(self._queued)
        self._wakeup.set()
        return [e.future for e in entries]

    # -- the task that owns the queue -------------------------------------------------------------

    async def _run(self) -> None:
        try:
            while True:
                batch = await self._next_batch()
                if batch is None:
                    break
                await self.worker.lock.acquire()  # after the batch running now, any model's
                try:
                    batch = [e for e in batch if not self._dropped(e)]  # clients may have left meanwhile
                    if batch:
                        self._dispatch(batch)  # `_deliver` releases the thread
                    else:
                        self.worker.release()
                except BaseException:
                    if self._inflight is None or self._inflight.done():
                        self.worker.release()
                    raise
            await self._worker_free()
        except Exception as exc:
            log.exception("the batching loop crashed: this is a bug")
            for entries in self._requests.values():
                for entry in entries:
                    if not entry.future.done():
                        entry.future.set_exception(ForwardError("the batching loop crashed"))
            self._requests.clear()
            self._queued = self._queued_tokens = 0
            raise ForwardError("the batching loop crashed") from exc

    async def _next_batch(self) -> list[Entry] | None:
        """Wait until a batch should close and take it; None once closing with nothing queued."""
        loop = asyncio.get_running_loop()
        limits = self.limits
        while True:
            if not self._queued:
                if self._closing:
                    return None
                await self._wait(None)
                continue
            busy = self.worker.busy  # this model's batch or another's
            full = (self._queued_tokens >= limits.max_batch_tokens
                    or self._queued >= limits.max_batch_requests)
            if full or busy or self._closing:
                wait_s = 0.0  # not read: these close now, or the busy worker's completion wakes us
            else:  # the oldest input's deadline (the first request in turn need not hold it)
                oldest = min(entries[0].enqueued for entries in self._requests.values())
                wait_s = oldest + limits.max_wait_ms / 1000 - time.monotonic()
            if full or (not busy and (wait_s <= 0 or self._closing)):
                return self._take()
            # Busy: the thread's release wakes us. Idle: the oldest entry's deadline does.
            if busy:
                self.worker.wake_when_free(self._wakeup)
            await self._wait(None if busy else loop.call_later(wait_s, self._wakeup.set))

    async def _wait(self, timer: asyncio.TimerHandle | None) -> None:
        self._wakeup.clear()
        try:
            await self._wakeup.wait()
        finally:
            if timer is not None:
                timer.cancel()

    def _take(self) -> list[Entry]:
        """Entries up to the token budget and the count (at least one, however long): one of each request in
        its turn, each request served going behind the others (at shutdown, the oldest requests' first); the
        batch in the order its entries came."""
        budget, count = self.limits.max_batch_tokens, self.limits.max_batch_requests
        if self._closing:
            batch, tokens = self._take_oldest(budget, count)
        else:
            batch, tokens = self._take_in_turn(budget, count)
        batch.sort(key=lambda e: e.order)
        self.metrics.queue_size.set(self._queued)
        if batch:
            self.metrics.batch_size.observe(len(batch))
            self.metrics.batch_tokens.observe(tokens)
        return batch

    def _take_oldest(self, budget: int, count: int) -> tuple[list[Entry], int]:
        """At shutdown, the oldest requests whole first (TEI's order): in turn, requests of equal size all finished
        together, every one past a --shutdown-timeout that would have let the first ones answer (audit 43)."""
        batch: list[Entry] = []
        tokens = 0
        for key in sorted(self._requests):  # request ids count up: the order they came
            entries = self._requests[key]
            while entries and len(batch) < count:
                if self._dropped(entries[0]):
                    self._pop(entries)
                elif batch and tokens + entries[0].tokens > budget:
                    break
                else:
                    entry = self._pop(entries)
                    batch.append(entry)
                    tokens += entry.tokens
            if entries:
                break  # the batch is full: this request goes on in the next one
            del self._requests[key]
        return batch, tokens

    def _take_in_turn(self, budget: int, count: int) -> tuple[list[Entry], int]:
        batch: list[Entry] = []
        tokens = 0
        progressed = True
        while progressed and self._requests and len(batch) < count:
            progressed = False
            for key in list(self._requests):
                if len(batch) >= count:
                    break
                entries = self._requests[key]
                while entries and self._dropped(entries[0]):  # clients that left: no compute, no budget
                    self._pop(entries)
                if entries and not (batch and tokens + entries[0].tokens > budget):
                    entry = self._pop(entries)
                    batch.append(entry)
                    tokens += entry.tokens
                    progressed = True
                    self._requests.move_to_end(key)  # its next turn comes after every other request's
                if not entries:
                    del self._requests[key]
        return batch, tokens

    def _pop(self, entries: deque[Entry]) -> Entry:
        entry = entries.popleft()
        self._queued -= 1
        self._queued_tokens -= entry.tokens
        return entry

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
        self._running_since = started
        self._inflight = asyncio.get_running_loop().run_in_executor(self.worker.executor, self._forward, items)
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
        """On the loop: free the thread, hand each entry its row (or the failure), then wake the queue task."""
        self.worker.release()
        self._wakeup.set()
        self._running_since = None
        exc = done.exception() if not done.cancelled() else asyncio.CancelledError()
        failed = exc
        if exc is None and all(isinstance(row, Exception) for row in done.result()[0]):
            failed = done.result()[0][0]
        self._failed_in_a_row = self._failed_in_a_row + 1 if failed is not None else 0
        if failed is not None:
            self._last_failure = f"{type(failed).__name__}: {str(failed)[:200]}"
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

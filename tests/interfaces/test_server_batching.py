"""The batching queue: when batches close, what gets dropped, and that batching never changes a result."""

from __future__ import annotations

import asyncio
import gc
import logging
import threading
import time

import numpy as np
import pytest

pytest.importorskip("fastapi")
import httpx  # noqa: E402

from coulisse.engine import Item  # noqa: E402
from coulisse.interfaces.server import ServerSettings, create_app  # noqa: E402
from coulisse.interfaces.server.batching import Batcher, BatchLimits, ForwardError, Worker  # noqa: E402


class FakeForward:
    """Records each batch (the ids of its items); can hold the worker until released."""

    def __init__(self, hold_first: bool = False, fail: bool = False):
        self.batches: list[list[int]] = []
        self.release = threading.Event()
        self.running = threading.Event()
        self.hold_first, self.fail = hold_first, fail

    def __call__(self, items: list[Item]) -> list[np.ndarray]:
        self.running.set()
        if self.hold_first and not self.batches:
            self.release.wait(10)
        self.batches.append([it.ids[0] for it in items])
        if self.fail:
            raise ValueError("boom")
        return [np.array([it.ids[0], len(it.ids)], dtype=np.float32) for it in items]


def items(n: int, length: int = 10, start: int = 0) -> list[Item]:
    return [Item([start + i] * length) for i in range(n)]


def run(limits: BatchLimits, forward: FakeForward, scenario):
    async def main():
        batcher = Batcher(forward, limits)
        await batcher.start()
        try:
            return await scenario(batcher)
        finally:
            await batcher.stop()

    return asyncio.run(main())


def test_batches_close_on_the_token_budget():
    forward = FakeForward()

    async def scenario(b):
        return await asyncio.gather(*b.submit(items(6, length=10)))

    results = run(BatchLimits(max_batch_tokens=25, max_batch_requests=100, max_wait_ms=50), forward, scenario)
    assert forward.batches == [[0, 1], [2, 3], [4, 5]]
    assert [int(r.row[0]) for r in results] == list(range(6))  # each future gets its own row


def test_batches_close_on_the_request_count():
    forward = FakeForward()

    async def scenario(b):
        await asyncio.gather(*b.submit(items(7)))

    run(BatchLimits(max_batch_tokens=10_000, max_batch_requests=3, max_wait_ms=50), forward, scenario)
    assert [len(b) for b in forward.batches] == [3, 3, 1]


def test_an_input_longer_than_the_budget_still_runs_alone():
    forward = FakeForward()

    async def scenario(b):
        await asyncio.gather(*b.submit([Item([0] * 50), Item([1] * 5)]))

    run(BatchLimits(max_batch_tokens=20, max_batch_requests=10, max_wait_ms=0), forward, scenario)
    assert forward.batches == [[0], [1]]


def test_an_idle_worker_waits_at_most_the_deadline():
    forward = FakeForward()

    async def scenario(b):
        start = time.monotonic()
        first = b.submit(items(1))
        await asyncio.sleep(0.02)
        second = b.submit(items(1, start=1))
        await asyncio.gather(*first, *second)
        return time.monotonic() - start

    elapsed = run(BatchLimits(max_batch_requests=100, max_wait_ms=150), forward, scenario)
    assert forward.batches == [[0, 1]]  # the second arrived within the first one's deadline
    assert 0.14 <= elapsed < 5


def test_the_next_batch_fills_while_the_current_one_runs():
    """With no deadline the first input runs at once; all that arrives meanwhile forms the next batch."""
    forward = FakeForward(hold_first=True)

    async def scenario(b):
        first = b.submit(items(1))
        while not forward.running.is_set():
            await asyncio.sleep(0.001)
        later = [f for i in range(5) for f in b.submit(items(1, start=1 + i))]
        await asyncio.sleep(0.05)  # the worker is busy: no reason to close the next batch yet
        forward.release.set()
        await asyncio.gather(*first, *later)

    run(BatchLimits(max_batch_tokens=10_000, max_batch_requests=100, max_wait_ms=0), forward, scenario)
    assert forward.batches == [[0], [1, 2, 3, 4, 5]]


def test_a_request_of_many_inputs_holds_a_short_one_back_one_batch_at_most():
    """A batch takes one input of each waiting request in turn: the one-sentence request queued behind a request
    of ten long inputs runs in the next batch, not after the ten (the queue was FIFO by input: head-of-line
    blocking, measured at seconds on a 2-core server). The batch keeps the order its inputs came in."""
    forward = FakeForward()

    async def scenario(b):
        long = b.submit(items(10, length=100))  # both queued before the batching task runs (same loop turn)
        short = b.submit([Item([50] * 5)])
        (row,) = await asyncio.gather(*short)
        waiting = sum(not f.done() for f in long)
        await asyncio.gather(*long)
        return int(row.row[0]), waiting

    row, waiting = run(BatchLimits(max_batch_tokens=250, max_batch_requests=100, max_wait_ms=0), forward, scenario)
    assert row == 50 and waiting == 8
    assert forward.batches == [[0, 1, 50], [2, 3], [4, 5], [6, 7], [8, 9]]


def test_requests_take_turns_and_an_input_left_out_starts_the_next_batch():
    """Two requests of six inputs share each batch. An input that does not fit the budget left leaves its turn
    to the next request's and starts the next batch, so none waits for ever."""
    forward = FakeForward()

    async def scenario(b):
        await asyncio.gather(*b.submit(items(6)), *b.submit(items(6, start=10)))
        heavy = b.submit([Item([20] * 40), Item([21] * 40), Item([22] * 40)])
        light = b.submit([Item([30] * 90)])
        await asyncio.gather(*heavy, *light)

    run(BatchLimits(max_batch_tokens=100, max_batch_requests=4, max_wait_ms=0), forward, scenario)
    assert forward.batches == [[0, 1, 10, 11], [2, 3, 12, 13], [4, 5, 14, 15],
                               [20, 21], [30], [22]]


def test_a_new_request_waits_one_turn_of_each_request_not_their_inputs():
    """Behind six requests of four inputs, with three inputs a batch, a one-input request runs in the third
    batch, after one input of each request ahead of it (a queue that served the oldest requests first would run
    it after 18 inputs, in the seventh batch). Each request's inputs keep their order."""
    forward = FakeForward()

    async def scenario(b):
        futures = [f for r in range(6) for f in b.submit(items(4, start=10 * r))]
        futures += b.submit([Item([99] * 5)])
        await asyncio.gather(*futures)

    run(BatchLimits(max_batch_tokens=10_000, max_batch_requests=3, max_wait_ms=0), forward, scenario)
    assert forward.batches[:3] == [[0, 10, 20], [30, 40, 50], [1, 11, 99]]
    ran = [i for batch in forward.batches for i in batch]
    assert sorted(ran) == sorted([10 * r + i for r in range(6) for i in range(4)] + [99])
    assert all([i for i in ran if i // 10 == r and i != 99] == [10 * r + i for i in range(4)] for r in range(6))


def test_models_sharing_the_thread_take_turns_and_close_no_batch_while_another_runs():
    """Several models of one server run their batches on one thread. While model A's batch runs, model B closes
    nothing: its queue keeps filling, and the inputs of a client that left are dropped before compute (handed to a
    busy thread, they waited there beyond reach). When the thread frees, the batchers that waited take their
    turns first come first served: B before A's next batch."""
    ran: list[str] = []

    class Logged(FakeForward):
        def __init__(self, name, **kwargs):
            super().__init__(**kwargs)
            self.name = name

        def __call__(self, items):
            rows = super().__call__(items)
            ran.append(f"{self.name}{self.batches[-1]}")
            return rows

    a, b = Logged("A", hold_first=True), Logged("B")
    limits = BatchLimits(max_batch_tokens=10_000, max_batch_requests=100, max_wait_ms=0)

    async def main():
        worker = Worker()
        first, second = Batcher(a, limits, worker=worker), Batcher(b, limits, worker=worker)
        await first.start()
        await second.start()
        try:
            held = first.submit(items(1))
            while not a.running.is_set():
                await asyncio.sleep(0.001)
            gone = second.submit(items(2, start=10))
            kept = second.submit(items(1, start=20))
            later = first.submit(items(1, start=1))
            await asyncio.sleep(0.05)
            closed_meanwhile = list(b.batches)
            for f in gone:
                f.cancel()  # what a client that disconnects does
            a.release.set()
            await asyncio.gather(*held, *kept, *later)
            return closed_meanwhile, second.metrics.batch_dropped.value()
        finally:
            await first.stop()
            await second.stop()

    closed_meanwhile, dropped = asyncio.run(main())
    assert closed_meanwhile == [] and dropped == 2
    assert ran == ["A[0]", "B[20]", "A[1]"]


def test_cancelled_inputs_are_dropped_before_compute():
    forward = FakeForward(hold_first=True)

    async def scenario(b):
        first = b.submit(items(1))
        while not forward.running.is_set():
            await asyncio.sleep(0.001)
        gone, kept = b.submit(items(3, start=1)), b.submit(items(1, start=4))
        for f in gone:
            f.cancel()  # what a disconnected client's request does
        forward.release.set()
        await asyncio.gather(*first, *kept)
        return b.metrics.batch_dropped.value()

    dropped = run(BatchLimits(max_batch_requests=100, max_wait_ms=0), forward, scenario)
    assert forward.batches == [[0], [4]] and dropped == 3


def test_a_failed_forward_fails_its_batch_only():
    forward = FakeForward(fail=True)

    async def scenario(b):
        with pytest.raises(ForwardError, match="boom"):
            await asyncio.gather(*b.submit(items(2)))
        forward.fail = False
        return await asyncio.gather(*b.submit(items(1, start=7)))

    (result,) = run(BatchLimits(max_wait_ms=0), forward, scenario)
    assert int(result.row[0]) == 7


def test_one_input_the_model_cannot_run_fails_alone_not_its_batch_neighbours():
    """A batch that fails runs again input by input: the poison input's request gets the error, the others
    their rows (one request's crafted input must not fail every request batched with it)."""
    class Poisoned(FakeForward):
        def __call__(self, items):
            self.batches.append([it.ids[0] for it in items])
            if any(it.ids[0] == 666 for it in items):
                raise IndexError("index out of range in self")
            return [np.array([it.ids[0], len(it.ids)], dtype=np.float32) for it in items]

    forward = Poisoned()

    async def scenario(b):
        good = b.submit(items(3))
        poison = b.submit([Item([666] * 5)])
        more = b.submit(items(2, start=10))
        rows = await asyncio.gather(*good, *more)
        with pytest.raises(ForwardError, match="IndexError: index out of range"):
            await poison[0]
        return rows

    rows = run(BatchLimits(max_batch_tokens=10_000, max_wait_ms=50), forward, scenario)
    assert [int(r.row[0]) for r in rows] == [0, 1, 2, 10, 11]
    assert forward.batches[0] == [0, 1, 2, 666, 10, 11]  # one batch, then each input alone
    assert forward.batches[1:] == [[0], [1], [2], [666], [10], [11]]


def test_health_says_a_broken_model_and_a_stuck_thread_and_heals():
    """/health answered 200 while every forward failed and while the model thread hung (audit 44); TEI answers
    503 after a failed forward, so a liveness probe restarts the pod. Here: three batches in a row that fail
    whole, or a forward running for STUCK_AFTER_S; one answered batch heals it; an input that fails alone among
    answered neighbours is that input's failure, not the model's."""
    from coulisse.interfaces.server import batching

    forward = FakeForward(fail=True)

    async def scenario(b):
        assert b.health_problem() is None
        for n in range(batching.FAILURES_UNHEALTHY):
            with pytest.raises(ForwardError):
                await asyncio.gather(*b.submit(items(2, start=10 * n)))
        broken = b.health_problem()
        forward.fail = False
        await asyncio.gather(*b.submit(items(1)))
        healed = b.health_problem()
        forward.hold_first, forward.batches = True, []
        forward.running.clear()
        held = b.submit(items(1))
        while not forward.running.is_set():
            await asyncio.sleep(0.01)
        stuck = b.health_problem(now=time.monotonic() + batching.STUCK_AFTER_S)
        fresh = b.health_problem()
        forward.release.set()
        await asyncio.gather(*held)
        return broken, healed, stuck, fresh, b.health_problem()

    broken, healed, stuck, fresh, after = run(BatchLimits(max_wait_ms=0), forward, scenario)
    assert broken == f"the last {batching.FAILURES_UNHEALTHY} batches failed (ValueError: boom)"
    assert healed is None and fresh is None and after is None
    assert stuck is not None and "the model thread looks stuck" in stuck


def test_inputs_that_fail_alone_leave_the_model_healthy():
    from coulisse.interfaces.server import batching

    class Poisoned(FakeForward):
        def __call__(self, items):
            if any(it.ids[0] == 666 for it in items):
                raise IndexError("index out of range in self")
            return [np.array([it.ids[0], len(it.ids)], dtype=np.float32) for it in items]

    async def scenario(b):
        for _ in range(batching.FAILURES_UNHEALTHY + 1):
            poison = b.submit([Item([666] * 5)])
            await asyncio.gather(*b.submit(items(2)), *poison, return_exceptions=True)
        return b.health_problem()

    assert run(BatchLimits(max_batch_tokens=10_000, max_wait_ms=50), Poisoned(), scenario) is None


def test_stop_finishes_what_is_queued():
    forward = FakeForward()

    async def main():
        b = Batcher(forward, BatchLimits(max_batch_requests=2, max_wait_ms=500))
        await b.start()
        futures = b.submit(items(5))
        await b.stop()
        return [f.done() and not f.cancelled() for f in futures], b.alive

    done, alive = asyncio.run(main())
    assert all(done) and not alive
    assert sorted(i for batch in forward.batches for i in batch) == list(range(5))


def test_at_shutdown_the_oldest_requests_run_first_and_whole():
    """In turn, four requests of four inputs would all finish in the last batch; once stopping, the queue runs
    them oldest first, so the first ones finish early (a --shutdown-timeout answers them)."""
    forward = FakeForward(hold_first=True)

    async def main():
        b = Batcher(forward, BatchLimits(max_batch_requests=4, max_wait_ms=0))
        await b.start()
        first = b.submit(items(1, start=90))
        while not forward.running.is_set():  # the worker holds this one while the others queue
            await asyncio.sleep(0.01)
        requests = [b.submit(items(4, start=10 * r)) for r in range(4)]
        stopping = asyncio.ensure_future(b.stop())
        await asyncio.sleep(0.05)
        forward.release.set()
        await stopping
        return all(f.done() for r in [first, *requests] for f in r)

    assert asyncio.run(main())
    # the batch that filled while the worker was held may have been closed in turn, before the stop; every one
    # after it runs the oldest request's inputs first (in turn: [1, 11, 21, 31], [2, 12, 22, 32], ...)
    assert forward.batches[0] == [90] and len(forward.batches) == 5
    rest = [i for batch in forward.batches[2:] for i in batch]
    assert rest == sorted(rest) and len(rest) == 12, forward.batches


# -- through the HTTP app --------------------------------------------------------------------------


TEXTS = [f"Critique n°{i} : " + " ".join(["bon"] * (i % 7) + ["mauvais"] * (i % 5)) + " film."
         for i in range(24)]


async def serve(app, scenario):
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")
    async with app.router.lifespan_context(app), client:
        return await scenario(client)


def test_results_do_not_depend_on_batch_neighbours(classifier):
    """Concurrent clients share batches; each answer matches the same text sent alone."""
    app = create_app(classifier, ServerSettings(max_wait_ms=20, max_batch_requests=64))

    batches = app.state.metrics.batch_size.count

    async def scenario(client):
        alone = [(await client.post("/predict", json={"inputs": t})).json() for t in TEXTS]
        assert batches() == len(TEXTS)
        together = await asyncio.gather(*(client.post("/predict", json={"inputs": t}) for t in TEXTS))
        assert batches() < 2 * len(TEXTS), "concurrent requests should have shared batches"
        mixed = await asyncio.gather(*(client.post("/predict", json={"inputs": [[t] for t in TEXTS[i:i + 3]]})
                                       for i in range(0, len(TEXTS), 3)))
        return alone, [r.json() for r in together], [x for r in mixed for x in r.json()]

    alone, together, mixed = asyncio.run(serve(app, scenario))
    for a, t, m in zip(alone, together, mixed, strict=True):
        for other in (t, m):
            assert [r["label"] for r in other] == [r["label"] for r in a]
            # Packed attention keeps sequences apart; the matmul over a taller batch may round the last bit.
            assert [r["score"] for r in other] == pytest.approx([r["score"] for r in a], abs=1e-6)


def test_a_client_that_leaves_costs_no_compute(classifier, monkeypatch, caplog):
    """... and logs nothing at ERROR: the cancelled wait's outcome is retrieved (asyncio logs "_GatheringFuture
    exception was never retrieved" when the future is collected otherwise)."""
    seen: list[int] = []
    forward = classifier.forward

    def counting(items, progress=None):
        seen.append(len(items))
        return forward(items)

    monkeypatch.setattr(classifier, "forward", counting)
    app = create_app(classifier, ServerSettings(max_wait_ms=300))
    sent = []

    async def receive():
        if not sent:
            sent.append(1)
            return {"type": "http.request", "body": b'{"inputs": [["a"], ["b"], ["c"]]}', "more_body": False}
        return {"type": "http.disconnect"}  # the client hangs up while its inputs wait in the queue

    async def send(message):
        pass

    async def main():
        async with app.router.lifespan_context(app):
            scope = {"type": "http", "method": "POST", "path": "/predict", "raw_path": b"/predict",
                     "query_string": b"", "headers": [(b"content-type", b"application/json")],
                     "http_version": "1.1", "scheme": "http", "server": ("t", 80), "client": ("c", 1),
                     "root_path": "", "app": app, "state": {}}
            await app(scope, receive, send)
            await asyncio.sleep(0.4)  # past the deadline: the batch would have run by now

    with caplog.at_level(logging.WARNING):
        asyncio.run(main())
        gc.collect()
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
    assert seen == [] and app.state.metrics.batch_dropped.value() == 3
    assert app.state.metrics.request_failure.value(err="cancelled") == 1


def test_by_default_an_idle_model_takes_a_request_whole_and_at_once():
    """The default wait is 0 (2 ms only added 2 ms to every request: audit 39): a request's inputs are queued
    together, so an idle model still takes them as one batch, not the first alone; while it is busy the next
    requests gather."""
    forward = FakeForward(hold_first=True)
    assert BatchLimits().max_wait_ms == 0

    async def scenario(b):
        first = b.submit(items(5))
        while not forward.running.is_set():
            await asyncio.sleep(0.001)
        later = [b.submit(items(3, start=10 * k)) for k in (1, 2)]  # queued while the model is busy
        forward.release.set()
        await asyncio.gather(*first, *[f for request in later for f in request])

    run(BatchLimits(), forward, scenario)
    assert forward.batches == [[0, 1, 2, 3, 4], [10, 11, 12, 20, 21, 22]]

"""The engine's thread policy: the user's count or every core, applied in the thread that runs the batch."""

from __future__ import annotations

import threading

import pytest
import torch

from coulisse.engine.threads import ThreadPolicy, thread_policy, threads_spin


@pytest.fixture
def restore_threads():
    previous = torch.get_num_threads()
    yield
    torch.set_num_threads(previous)


def test_the_users_count_wins_else_every_core():
    assert thread_policy(None, available=4, spin=False) == ThreadPolicy(4, "coulisse", False)
    assert thread_policy(3, available=4, spin=True) == ThreadPolicy(3, "--threads", True)
    assert thread_policy(None, available=4, spin=False).describe() == "4 threads (coulisse); idle threads sleep"
    assert thread_policy(1, available=4, spin=True).describe() == "1 thread (--threads); idle threads spin"
    assert thread_policy(3, available=4, spin=True).as_dict() == {"threads": 3, "chosen_by": "--threads",
                                                                  "idle_threads_spin": True, "cpu_limit": None}


@pytest.mark.parametrize(("environ", "spin"), [
    ({}, True),  # libgomp's default: ~300,000 spins
    ({"OMP_WAIT_POLICY": "PASSIVE"}, False), ({"OMP_WAIT_POLICY": "passive"}, False),
    ({"OMP_WAIT_POLICY": "ACTIVE"}, True),
    ({"OMP_WAIT_POLICY": "PASSIVE", "GOMP_SPINCOUNT": "1000"}, True),  # libgomp: the count wins
    ({"GOMP_SPINCOUNT": "0"}, False), ({"GOMP_SPINCOUNT": "300000"}, True),
    ({"KMP_BLOCKTIME": "0"}, False),  # Intel's OpenMP
])
def test_whether_threads_spin_follows_the_runtimes_variables(environ, spin):
    assert threads_spin(environ) is spin


def test_run_sets_the_count_in_the_calling_thread(restore_threads):
    """OpenMP's count is per thread: what the forward sees inside is the policy's, on a worker thread too
    (the server's batcher runs its forwards on one), whatever the process's count was."""
    torch.set_num_threads(2)
    seen = []

    def work():
        for threads in (1, 2, 1):
            seen.append(ThreadPolicy(threads, "--threads", False).run(torch.get_num_threads))

    worker = threading.Thread(target=work)
    worker.start()
    worker.join()
    assert seen == [1, 2, 1]


def test_a_pipelines_threads_apply_to_its_runs_and_leave_the_host_count(restore_threads, monkeypatch):
    """`pipeline(threads=1)` used to set torch's count for the whole process at build, for good: a host
    program's own torch work then ran on it, and the last pipeline built decided for every other (audit 39)."""
    from coulisse import pipeline
    from coulisse.engine.engine import Engine

    torch.set_num_threads(2)
    one = pipeline("text-classification", model="coulisse/mini-allocine", threads=1)
    two = pipeline("text-classification", model="coulisse/mini-allocine", threads=2)
    assert torch.get_num_threads() == 2 and one.preparation.threads == 1
    seen = []
    run = Engine._run

    def spy(self, *args, **kwargs):
        seen.append(torch.get_num_threads())
        return run(self, *args, **kwargs)

    monkeypatch.setattr(Engine, "_run", spy)
    torch.set_num_threads(3)  # the host's own count
    one("Un film excellent.")
    two("Un film excellent.")
    one("Quel navet.")
    assert seen == [1, 2, 1]
    assert torch.get_num_threads() == 3


def test_pipelines_of_other_counts_run_at_once_and_leave_the_host_count(restore_threads):
    """Overlapping runs in several threads each gave back the count they found, which another thread's run had
    set: the process's count was left at 1, what every later thread started from (audit 39, review)."""
    from coulisse import pipeline

    torch.set_num_threads(2)
    one = pipeline("text-classification", model="coulisse/mini-allocine", threads=1)
    two = pipeline("text-classification", model="coulisse/mini-allocine", threads=2)
    texts = ["Un film excellent."] * 40
    # each pipeline against its own answers: 1 and 2 threads may round apart on another CPU's kernels
    expected = {id(one): one(texts), id(two): two(texts)}
    errors, counts = [], []

    def work(pipe):
        try:
            for _ in range(5):
                assert pipe(texts) == expected[id(pipe)]
        except Exception as e:  # noqa: BLE001 (reported below)
            errors.append(e)

    workers = [threading.Thread(target=work, args=(pipe,)) for pipe in (one, two, one, two)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert not errors, errors
    fresh = threading.Thread(target=lambda: counts.append(torch.get_num_threads()))  # starts from the process's
    fresh.start()
    fresh.join()
    assert torch.get_num_threads() == 2 and counts == [2]


def test_the_torch_thread_is_one_thread_for_the_process():
    """Every server and studio of the process hands its torch work to the same thread (one OpenMP team), whoever
    asks for it."""
    from coulisse.engine.threads import torch_thread

    assert torch_thread() is torch_thread()
    first = torch_thread().submit(threading.get_ident).result()
    assert first != threading.get_ident()
    seen = []
    for _ in range(3):  # asked from other threads too
        t = threading.Thread(target=lambda: seen.append(torch_thread().submit(threading.get_ident).result()))
        t.start()
        t.join()
    assert seen == [first] * 3

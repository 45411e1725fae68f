"""How many threads a batch runs on: chosen once for a server, applied in the thread that runs each batch.

Why it needs choosing: on a machine with few cores and another busy process, torch's OpenMP team waits at
every barrier for a thread the kernel has descheduled, and a short request is hundreds of small parallel
regions. libgomp's default wait spins ~300,000 times (a few ms) before sleeping, burning the time slice the
late thread needs: measured on 2 cores shared with busy processes (bench/contention.py; docs/benchmarks.md,
"Under contention"), one short sentence through a camembert-base pipeline took 1.5-3.8 s p50 on 2 spinning
threads. Corpus jobs therefore set OMP_WAIT_POLICY=PASSIVE before torch loads (`interfaces/options.py`,
`set_wait_policy`: the runtime reads it once, at load, which this module, loaded with torch, cannot do):
240-330 ms there, and twice the reviews per second. The server sets a short spin (GOMP_SPINCOUNT=1000,
`SERVER_SPINCOUNT`): as contention-safe as PASSIVE, and a little faster on a quiet machine (below).

Every batch runs on every thread, a short request included: with threads that sleep (or barely spin) a
second thread costs little and gets more of a shared CPU; one thread for short batches was measured and
lost (camembert-base through the server: 278-511 ms p50 vs 184-293 ms). So the count is the user's
`--threads` (COULISSE_THREADS), else all physical cores (torch's default), at most the container's CPU quota
rounded up (`cpu_limit.py`: torch's team over a quota it cannot use waits out the quota's periods).

OpenMP's thread count belongs to the calling thread, so `run` sets it in the thread that runs the batch:
the server's forward thread runs the policy's count whatever another thread set.

OpenMP's team belongs to the calling thread too: libgomp gives each thread that opens a parallel region a team
of its own, kept for that thread's life, and once the teams hold more threads than there are CPUs it cuts every
idle thread's spin to 100 ("throttled"), whatever GOMP_SPINCOUNT says. A server that loads its models on the main
thread and runs its forwards on another therefore has two teams and runs every forward throttled: measured on a
2-core Xeon (AMX), one short review through all-MiniLM-L6-v2 took 11.3 ms p50 from a worker thread against 6.8 ms
from the thread that had loaded it, and a longer GOMP_SPINCOUNT had no effect. So a long-lived process runs all
its torch work (load, warm-up, forwards) on one thread, `torch_thread()`, and the spin count it runs on is the one
set (docs/server.md, "Threads and contention": a dedicated machine may spin longer).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

import torch

from coulisse.engine.cpu_limit import cpu_limit, in_cpus, thread_cap

T = TypeVar("T")


@dataclass(frozen=True)
class ThreadPolicy:
    threads: int
    chosen_by: str  # "--threads" (the user's count) or "coulisse" (all physical cores, at most the CPU limit's)
    spin: bool  # whether idle OpenMP threads spin (the wait variables the runtime read), for /info
    cpu_limit: float | None = None  # the container's CPU quota in CPUs (`cpu_limit.py`), None without one

    def run(self, forward: Callable[[], T]) -> T:
        """`forward()` on the policy's count, set in the calling thread (well under a microsecond)."""
        torch.set_num_threads(self.threads)
        return forward()

    def describe(self) -> str:
        wait = "spin" if self.spin else "sleep"
        limit = "" if self.cpu_limit is None else f", under a CPU limit of {in_cpus(self.cpu_limit)}"
        return f"{self.threads} thread{'s' if self.threads > 1 else ''} ({self.chosen_by}{limit}); idle threads {wait}"

    def as_dict(self) -> dict:
        return {"threads": self.threads, "chosen_by": self.chosen_by, "idle_threads_spin": self.spin,
                "cpu_limit": self.cpu_limit}


def threads_spin(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether idle OpenMP threads spin, from the variables the runtime read at load (libgomp spins ~300,000
    times by default; Intel's OpenMP 200 ms): only a passive policy or a zero spin count or block time
    makes them sleep at once."""
    if environ.get("OMP_WAIT_POLICY", "").strip().upper() == "PASSIVE":
        return environ.get("GOMP_SPINCOUNT", "0").strip() not in ("0", "")
    return not (environ.get("GOMP_SPINCOUNT", "").strip() == "0" or environ.get("KMP_BLOCKTIME", "").strip() == "0")


def thread_policy(threads: int | None, available: int | None = None, spin: bool | None = None) -> ThreadPolicy:
    """`threads`: the user's count (`--threads`); None: `available` (default: torch's count now, all physical
    cores unless set, at most this process's CPU limit rounded up: `capped`). `spin` (default: `threads_spin()`
    of this process's environment) is reported only."""
    spin = threads_spin() if spin is None else spin
    if available is not None:  # the caller's count and machine (tests)
        return ThreadPolicy(threads or available, "coulisse" if threads is None else "--threads", spin)
    limit = cpu_limit()
    if threads is not None:
        return ThreadPolicy(threads, "--threads", spin, limit)
    return ThreadPolicy(capped(torch.get_num_threads()), "coulisse", spin, limit)


def capped(count: int) -> int:
    """`count` threads, at most this process's CPU quota rounded up (`cpu_limit.py`): a count coulisse chooses."""
    cap = thread_cap()
    return count if cap is None else min(count, cap)


_torch_thread: ThreadPoolExecutor | None = None
_torch_thread_lock = threading.Lock()


def _after_fork_in_child() -> None:
    """A forked child has none of its parent's threads: its first server or studio makes its own."""
    global _torch_thread, _torch_thread_lock
    _torch_thread, _torch_thread_lock = None, threading.Lock()


if hasattr(os, "register_at_fork"):  # not on Windows, which never forks
    os.register_at_fork(after_in_child=_after_fork_in_child)


def torch_thread() -> ThreadPoolExecutor:
    """The process's one thread for torch work in a server or the studio (one OpenMP team: see above). Made on
    the first call and kept for the process's life: each server's batcher and each studio hands it its work,
    the loading of their models included. Never shut it down; it idles between calls."""
    global _torch_thread
    with _torch_thread_lock:
        if _torch_thread is None:
            _torch_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="coulisse-torch")
        return _torch_thread


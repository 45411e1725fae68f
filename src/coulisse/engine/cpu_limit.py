"""The CPUs a container may use: its cgroup's CPU quota (Kubernetes' `limits.cpu`, `docker run --cpus`).

torch sizes its OpenMP team from the CPUs the process may run on (its affinity, which a cpuset narrows), not from
a quota: in a pod limited to 2 CPUs on a 64-core node it runs 32 threads, which spend the period's quota in a
sixteenth of the period and then all wait for the next one (CFS throttling), a barrier's late thread included.
Measured on a 2-core Xeon (AMX) in a cgroup of 1 CPU: one short review through a camembert-base-sized pipeline
took 75.0 ms p50 on torch's 2 threads against 41.4 ms on 1 (42.6 ms on 1 thread without the quota), and 64
reviews ran at 6.3 reviews/s against 6.9 (docs/benchmarks.md, "A container's CPU limit"). So the thread count
coulisse chooses is at most the quota rounded up (1.5 CPUs: 2 threads, 10.0 reviews/s there against 6.9 on 1),
as Go's runtime (1.25) and the JVM size theirs. `--threads` (COULISSE_THREADS) or a pipeline's `threads=` still
decide: a count the user gave is never changed.

Read once per process, from the process's own cgroup and its ancestors under the mount (the tightest applies:
`cgroups.py`): cgroup v2's `cpu.max` ("max 100000", or quota and period), cgroup v1's `cpu.cfs_quota_us` (-1:
none) over `cpu.cfs_period_us`. Nothing found, or a file that cannot be read: no limit.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path

from coulisse.engine.cgroups import tightest


@functools.cache
def cpu_limit() -> float | None:
    """This process's CPU quota in CPUs (1.5 for `--cpus 1.5`), None where no cgroup limits it (read once)."""
    return read_cpu_limit()


def thread_cap() -> int | None:
    """The most threads worth running under this process's CPU quota (the quota rounded up), None without one."""
    limit = cpu_limit()
    return None if limit is None else max(1, math.ceil(limit))


def in_cpus(limit: float) -> str:
    """A quota as a person says it: "1 CPU", "1.5 CPUs"."""
    return f"{limit:g} CPU" + ("" if limit == 1 else "s")


def read_cpu_limit(root: Path = Path("/")) -> float | None:
    """The tightest CPU quota over this process's cgroups (v1's cpu controller, v2) and their ancestors under
    each mount, in CPUs; `root` is where the file system starts (tests give a folder laid out like one)."""
    return tightest("cpu", _limit, root)


def _limit(folder: Path) -> float | None:
    try:
        if (folder / "cpu.max").exists():  # v2: "max 100000" or "150000 100000"
            quota, _, period = (folder / "cpu.max").read_text().strip().partition(" ")
            return None if quota == "max" else _ratio(quota, period or "100000")
        if (folder / "cpu.cfs_quota_us").exists():  # v1: -1 is none
            quota = (folder / "cpu.cfs_quota_us").read_text().strip()
            return None if quota.startswith("-") else _ratio(quota, (folder / "cpu.cfs_period_us").read_text())
    except (OSError, UnicodeDecodeError):
        pass
    return None


def _ratio(quota: str, period: str) -> float | None:
    try:
        q, p = int(quota), int(period)
    except ValueError:
        return None
    return q / p if q > 0 and p > 0 else None

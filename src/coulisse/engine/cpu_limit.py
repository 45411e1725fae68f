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

Read once per process, from the process's own cgroup and its ancestors under the mount (the tightest applies):
cgroup v2's `cpu.max` ("max 100000", or quota and period), cgroup v1's `cpu.cfs_quota_us` (-1: none) over
`cpu.cfs_period_us`; where the cgroup is found from /proc/self/cgroup and /proc/self/mountinfo, in a cgroup
namespace (a container's own view: "0::/") or not. Nothing found, or a file that cannot be read: no limit.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


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
    limits = [limit for folder, mount in cgroup_folders("cpu", root) for limit in limits_up_to(folder, mount, _limit)]
    return min(limits, default=None)


def cgroup_folders(controller: str, root: Path = Path("/")) -> list[tuple[Path, Path]]:
    """(this process's cgroup folder, its hierarchy's mount point) for cgroup v2 and v1's `controller` ("cpu",
    "memory"), under `root`; [] where /proc cannot be read."""
    try:
        memberships = (root / "proc/self/cgroup").read_text()
        mountinfo = (root / "proc/self/mountinfo").read_text()
    except (OSError, UnicodeDecodeError):
        return []
    return [(root / folder.lstrip("/"), root / mount.lstrip("/"))
            for folder, mount in _cgroup_folders(memberships, mountinfo, controller)]


def _cgroup_folders(memberships: str, mountinfo: str, controller: str) -> Iterator[tuple[str, str]]:
    """(the process's cgroup folder, its mount point) for the cgroup v2 hierarchy and v1's `controller`."""
    paths: dict[str, str] = {}  # "v2" or the v1 controller -> the process's path in that hierarchy
    for line in memberships.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        number, controllers, path = parts
        if number == "0" and controllers == "":
            paths["v2"] = path
        elif controller in controllers.split(","):
            paths[controller] = path
    for mount_root, mount_point, fstype, options in _mounts(mountinfo):
        kind = "v2" if fstype == "cgroup2" else controller if fstype == "cgroup" and controller in options else None
        if kind is not None and kind in paths:
            yield _under(mount_root, mount_point, paths[kind]), mount_point


def _mounts(mountinfo: str) -> Iterator[tuple[str, str, str, set[str]]]:
    """(root in the file system, mount point, type, super options) of each line of /proc/self/mountinfo."""
    for line in mountinfo.splitlines():
        fields, sep, rest = line.partition(" - ")
        left, right = fields.split(), rest.split()
        if sep and len(left) >= 5 and len(right) >= 3:
            yield _unescaped(left[3]), _unescaped(left[4]), right[0], set(right[2].split(","))


def _unescaped(field: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)  # mountinfo writes " " as \040


def _under(mount_root: str, mount_point: str, path: str) -> str:
    """The folder of cgroup `path` where its hierarchy is mounted at `mount_point` from `mount_root`."""
    if mount_root == "/":
        relative = path
    elif path == mount_root or path.startswith(mount_root.rstrip("/") + "/"):
        relative = path[len(mount_root):]
    else:  # a cgroup namespace or a bind mount of the process's own cgroup: the mount point is that cgroup
        relative = ""
    return mount_point.rstrip("/") + "/" + relative.strip("/")


def limits_up_to(folder: Path, mount: Path, limit_of: Callable[[Path], T | None]) -> Iterator[T]:
    """Each limit (`limit_of` a cgroup folder) set from `folder` up to `mount`, the hierarchy's top as this
    process sees it."""
    while True:
        limit = limit_of(folder)
        if limit is not None:
            yield limit
        if folder == mount or mount not in folder.parents:
            return
        folder = folder.parent


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

"""This process's cgroups as the kernel shows them (/proc/self/cgroup, /proc/self/mountinfo), and the tightest
limit set along them: what a container's CPU quota and memory limit (`cpu_limit.py`, `memory_limit.py`) are read
through.

The process's cgroup folder is found under each hierarchy's mount, in a cgroup namespace (a container's own view:
"0::/", the mount point is its cgroup) or not (the path under the mount's root); its ancestors up to the mount
each may set a limit, and the tightest applies. cgroup v2's one hierarchy and v1's controller (`cpu`, `memory`)
are both read: a hybrid host has both. Nothing found, or a file that cannot be read: no limit.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

T = TypeVar("T", int, float)


def tightest(controller: str, limit_of: Callable[[Path], T | None], root: Path = Path("/")) -> T | None:
    """The smallest limit (`limit_of` a cgroup folder, None: none there) over this process's cgroups for
    `controller` and their ancestors; `root` is where the file system starts (tests give a folder laid out like
    one)."""
    limits = [limit for folder, mount in cgroup_folders(controller, root)
              for limit in limits_up_to(folder, mount, limit_of)]
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

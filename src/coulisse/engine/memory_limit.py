"""The memory a container may use: its cgroup's limit (Kubernetes' `limits.memory`, `docker run --memory`).

A process over it is killed by the kernel without a word (exit 137, no log line): `coulisse serve` compares the
limit with what it holds once its models are loaded plus what its bodies in flight may take, and says at start
when they may not fit, with the setting that bounds them (audit 48: a server with the bundled model, 302 MiB at
rest, was killed under a 300 MB limit by 60 concurrent 1.9 MB requests with the defaults, and served them with
`--max-payload-in-flight 16000000`).

Read as the CPU quota is (`cgroups.py`): this process's cgroup and its ancestors under the mount, the tightest
limit; cgroup v2's `memory.max` ("max": none), v1's `memory.limit_in_bytes` (a value near 2**63: none).
"""

from __future__ import annotations

from pathlib import Path

from coulisse.engine.cgroups import tightest
from coulisse.weights.mapped import resident_bytes

__all__ = ["memory_limit", "resident_bytes"]

NO_LIMIT = 1 << 60  # v1 writes "no limit" as the largest page-aligned value under 2**63


def memory_limit(root: Path = Path("/")) -> int | None:
    """This process's memory limit in bytes (the tightest over its cgroups and their ancestors), None without one;
    `root` is where the file system starts (tests give a folder laid out like one)."""
    return tightest("memory", _limit, root)


def _limit(folder: Path) -> int | None:
    for name in ("memory.max", "memory.limit_in_bytes"):
        try:
            text = (folder / name).read_text().strip()
        except (OSError, UnicodeDecodeError):
            continue
        if text == "max":
            return None
        try:
            value = int(text)
        except ValueError:
            return None
        return value if 0 < value < NO_LIMIT else None
    return None

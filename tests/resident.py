"""Resident memory of mapped files, read from /proc (Linux): what the tests of released pages measure."""

from __future__ import annotations

import os


def resident_kb(path) -> int:
    """Resident kB of every mapping of `path` in this process (/proc/self/smaps)."""
    target, total, inside = os.path.realpath(path), 0, False
    with open("/proc/self/smaps", encoding="utf-8") as f:
        for line in f:
            head = line.split()
            if "-" in head[0] and len(head) >= 5 and not head[0].endswith(":"):  # a mapping's header line
                inside = len(head) >= 6 and head[5] == target
            elif inside and head[0] == "Rss:":
                total += int(head[1])
    return total

"""The commit record of a resumable job: `<output>.coulisse-state.json`, next to the output.

A chunk is committed in two steps: its bytes are appended to the output and fsync'ed, then this record
(rows read, bytes or parts written, counters) is replaced atomically (temporary file, fsync, rename,
fsync of the folder). Whatever kills the process, the record therefore never points past durable
output; anything in the output beyond it is an uncommitted tail (possibly a half-written line) that
`--resume` cuts before going on. The record is removed once the job has finished.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from coulisse.errors import InputError

VERSION = 1


@dataclass
class JobState:
    rows: int = 0  # input rows committed (error rows included)
    position: int = 0  # output bytes committed (CSV/TSV/JSONL) or Parquet parts committed
    classified: int = 0
    errored: int = 0
    truncated: int = 0
    key: dict[str, Any] = field(default_factory=dict)  # what must not change between a run and its resume
    version: int = VERSION


def state_path(output: str | Path) -> Path:
    output = Path(output)
    return output.with_name(output.name + ".coulisse-state.json")


def fsync_dir(directory: str | Path) -> None:
    """Make a rename or a new file in `directory` durable (no-op where folders cannot be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def save(path: Path, state: JobState) -> None:
    write_atomic(path, json.dumps(asdict(state), ensure_ascii=False, sort_keys=True).encode())


def load(path: Path) -> JobState | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise InputError(f"cannot read the resume state {path}: {e}; pass --overwrite to start over.") \
            from None
    if data.get("version") != VERSION:
        raise InputError(f"{path} was written by another coulisse version; pass --overwrite to start over.")
    return JobState(**data)


def check_key(saved: dict[str, Any], current: dict[str, Any], output: str) -> None:
    """A resume must see the same input and options, or its rows would not line up with the first run's."""
    changed = [k for k in sorted(set(saved) | set(current)) if saved.get(k) != current.get(k)]
    if changed:
        details = "; ".join(f"{k}: was {saved.get(k)!r}, now {current.get(k)!r}" for k in changed)
        raise InputError(f"cannot resume {output}: {details}. Rerun with the first run's input and options, "
                         "or pass --overwrite to start over.")


def remove(path: Path) -> None:
    for p in (path, path.with_name(path.name + ".tmp")):
        p.unlink(missing_ok=True)

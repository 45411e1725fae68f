"""A named pipe where a file is expected, and a watchdog that keeps a test from hanging on it forever."""

from __future__ import annotations

import contextlib
import errno
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def fifo_at(path: Path, *, unblock_after: float = 20.0) -> Iterator[Path]:
    """Make `path` a FIFO. Should code under test open it for reading (the bug), a watchdog writes "{}" to it
    after `unblock_after` seconds, so that the test fails instead of hanging the run."""
    os.mkfifo(path)
    done = threading.Event()

    def watchdog() -> None:
        deadline = time.monotonic() + unblock_after
        while not done.is_set():
            if time.monotonic() > deadline:
                try:  # succeeds only once a reader has the pipe open
                    fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
                except OSError as e:
                    if e.errno not in (errno.ENXIO, errno.ENOENT):
                        raise
                else:
                    os.write(fd, b"{}")
                    os.close(fd)
                    return
            done.wait(0.2)

    thread = threading.Thread(target=watchdog, daemon=True)
    thread.start()
    try:
        yield path
    finally:
        done.set()
        thread.join()

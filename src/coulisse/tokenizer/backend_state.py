"""The state of the one Rust backend that a tokenizer and its shallow copies share, and how it is kept sound.

The backend holds settings that each call changes (truncation) and that a copy or a pickle loses
(`split_special_tokens`): `ready_backend` puts it as every call expects it, and `ForkSafeLock` guards it across
threads and forked processes while keeping the record of the truncation set on it.
"""

from __future__ import annotations

import os
import threading

from tokenizers import Tokenizer as Backend


def ready_backend(backend: Backend, settings: dict) -> None:
    """The backend as every call expects it: no padding or truncation of its own (each call sets what it asks), and
    tokenizer_config.json's `split_special_tokens` (special tokens written in a text read as text, as transformers
    sets it on its backend), which the backend's JSON does not keep across a copy or a pickle."""
    backend.no_padding()
    backend.no_truncation()
    if settings.get("split_special_tokens") is True and hasattr(backend, "encode_special_tokens"):
        backend.encode_special_tokens = True


class ForkSafeLock:
    """A lock that a forked child finds free: a thread of the parent that held it at fork() (tokenizing, in a
    server or a thread pool) has no counterpart in the child, which would wait for it forever (40 % of the children
    of such a fork hung, audit 45). Shared as a plain lock is (a shallow copy of a tokenizer shares it).
    It guards one backend, and keeps the record of the truncation set on that backend (`truncation`): every
    tokenizer that shares the backend shares the lock, hence the record (a copy with its own record skipped
    clearing a limit that the original had set: audit 46). A forked child keeps it, as it keeps the backend."""

    def __init__(self) -> None:
        self._pid, self._lock = os.getpid(), threading.Lock()
        self.truncation: tuple[int, int, str, str] | None = None  # None: no truncation

    def __enter__(self) -> ForkSafeLock:
        if self._pid != os.getpid():  # the first use in a forked child: a lock of its own
            self._pid, self._lock = os.getpid(), threading.Lock()
        self._lock.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self._lock.release()

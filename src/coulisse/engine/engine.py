"""The forward stage for many inputs at once: the only code that touches the model and its device.

Inputs are sorted by length and cut into batches by a token budget rather than a fixed count, so a
batch of short reviews holds many and a batch of long ones few. Each batch runs packed (no padding
in the linear layers, see `coulisse.models.bert`), and results come back in the caller's order.
Since no token ever sees another sequence, exact and int8 results do not depend on how inputs were grouped
(beyond float rounding); bf16's do, by up to ~1e-2 on a logit: oneDNN's bf16 GEMM picks its kernel by the
batch's row count, and each layer rounds its output to bf16 (audit 44).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

from coulisse.engine.cpu_limit import thread_cap
from coulisse.errors import InputError
from coulisse.models import EncoderModel, Packed
from coulisse.weights.mapped import heap_trimmer, keep_activations_on_heap

log = logging.getLogger(__name__)

# Measured on base-size models over real reviews (docs/benchmarks.md): 1-2k tokens per batch keep the GEMMs
# efficient; larger batches lose more to attention's padding and cache misses than they gain.
DEFAULT_BATCH_TOKENS = 1024
DEFAULT_BATCH_SIZE = 256  # inputs per batch, whatever their length


@dataclass
class Item:
    """One tokenized input: ids (special tokens included) and, for BERT, token types. `numbered_as`: the ids whose
    positions it takes (default its own): an occlusion's variant keeps its text's positions, the pads standing
    for words numbered as those words were, and a pad the text itself holds as the pipeline numbers it (see
    `Packed.from_lists`)."""

    ids: list[int]
    type_ids: list[int] | None = None
    numbered_as: Sequence[int] | None = None


class Engine:
    def __init__(self, model: EncoderModel, *, max_batch_tokens: int = DEFAULT_BATCH_TOKENS,
                 max_batch_size: int = DEFAULT_BATCH_SIZE,
                 device: str | torch.device = "cpu", uses_token_types: bool = False, threads: int | None = None):
        self.model = model
        # The pipeline's `threads`: set for each run in the calling thread, the caller's count given back after
        # (torch's count is the process's: a pipeline must not change it for the host program's own work). None:
        # torch's count, at most a container's CPU quota rounded up (`_threads`).
        self.threads = threads
        self.max_batch_tokens = max_batch_tokens
        self.max_batch_size = max_batch_size
        self.device = torch.device(device)
        self.uses_token_types = uses_token_types
        # A BERT with type_vocab_size 1 reads single texts only: its batches are checked for a pair's type 1. With
        # 2 or more, the load check (`checkpoint.check_tokenizer`) proved the tokenizer's pairs fit: no check.
        self.type_limit = 1 if uses_token_types and model.config.type_vocab_size == 1 else None
        self.offset = model.config.position_offset
        if self.device.type == "cpu":
            keep_activations_on_heap()  # glibc's thresholds, once per process (weights/mapped.py)

    def plan(self, lengths: Sequence[int], max_batch_size: int | None = None) -> list[list[int]]:
        """Indices of each batch: longest first, closed when the token budget or the count is reached
        (`max_batch_size`, when given, lowers the count for this plan only)."""
        count = min(self.max_batch_size, max_batch_size or self.max_batch_size)
        order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
        batches: list[list[int]] = []
        current: list[int] = []
        tokens = 0
        for i in order:
            if current and (tokens + lengths[i] > self.max_batch_tokens or len(current) >= count):
                batches.append(current)
                current, tokens = [], 0
            current.append(i)
            tokens += lengths[i]
        if current:
            batches.append(current)
        return batches

    def forward(self, items: Sequence[Item], select_token_id: int | None = None) -> torch.Tensor:
        """One packed batch: `(B, labels)` for a sequence head, else `(T, ...)` (only the rows of
        `select_token_id` when given); on the CPU in fp32."""
        types = [it.type_ids or [0] * len(it.ids) for it in items] if self.uses_token_types else None
        if types is not None and self.type_limit is not None:
            top = max((max(t, default=0) for t in types), default=0)
            if top >= self.type_limit:
                raise InputError(f"an input has the token type {top}, but this model embeds only types 0 to "
                                 f"{self.type_limit - 1} (type_vocab_size in config.json): it reads single texts, "
                                 "not (text, text_pair) pairs. Pass each text alone, or use a model trained on pairs.")
        p = Packed.from_lists([it.ids for it in items], types, self.offset, self.device,
                              numbered_as=[it.numbered_as for it in items])
        with torch.inference_mode():
            out = self.model.forward_packed(p, select_token_id).float().cpu()
        if self.device.type == "cpu":
            # Activations of every shape come and go; glibc keeps the freed heap, fragmented, and RSS
            # creeps up batch after batch. Handed back once it has grown by a budget, not after every
            # batch: each trim makes the next batch fault its activations back in (weights/mapped.py).
            heap_trimmer.after_batch()
        return out

    def run(self, items: Sequence[Item], progress: Callable[[int], None] | None = None,
            select_token_id: int | None = None, max_batch_size: int | None = None) -> list[np.ndarray]:
        """Per input, in input order: a logits row `(labels,)` for a sequence head, else one row per
        token `(length, ...)` (hidden states, or token logits) — or, with `select_token_id`, one row per
        occurrence of that token `(count, ...)` (fill-mask's masked positions). On `threads` threads when the
        engine has a count (a few microseconds to set and give back)."""
        if _forking_thread == threading.get_ident():  # a forked child, on the thread that forked: see `forked_thread`
            return forked_thread().submit(self.run, items, progress, select_token_id, max_batch_size).result()
        with on_threads(self._threads()):
            return self._run(items, progress, select_token_id, max_batch_size)

    def _threads(self) -> int | None:
        """The pipeline's count; without one, torch's, at most this process's CPU quota rounded up (a container's
        limit: `cpu_limit.py`); None where that leaves torch's count as it is."""
        if self.device.type != "cpu":
            return None
        if self.threads is not None:
            return self.threads
        cap = thread_cap()
        return None if cap is None or torch.get_num_threads() <= cap else cap

    def _run(self, items: Sequence[Item], progress: Callable[[int], None] | None,
             select_token_id: int | None, max_batch_size: int | None) -> list[np.ndarray]:
        lengths = [len(it.ids) for it in items]
        counts = lengths if select_token_id is None else [it.ids.count(select_token_id) for it in items]
        results: list[np.ndarray | None] = [None] * len(items)
        for batch in self.plan(lengths, max_batch_size):
            out = self.forward([items[i] for i in batch], select_token_id).numpy()
            if self.model.per_token:
                splits = np.cumsum([counts[i] for i in batch])[:-1]
                for rows, i in zip(np.split(out, splits), batch, strict=True):
                    results[i] = rows
            else:
                for row, i in zip(out, batch, strict=True):
                    results[i] = row
            if progress is not None:
                progress(len(batch))
        return results  # type: ignore[return-value]


_RUNS = threading.Lock()
_running = 0  # blocks of `on_threads` open now, in any thread
_host_threads = 0  # torch's count when the first of them opened: what every one gives back

# fork(): the child inherits torch's OpenMP state but none of its threads. libgomp keeps a team per thread that
# opened a parallel region, so in a child forked after torch ran on several threads, the thread that forked (the
# child's only one) waits forever at its next parallel region of more than one thread, for a team that is gone: a
# `multiprocessing` pool with the fork start method, `datasets.map(num_proc=...)`, joblib's multiprocessing backend
# or `os.fork()` hung (plain torch and transformers' pipelines hang the same way; audit 45). So in a child forked
# after coulisse ran torch on several threads, the thread that forked runs torch on one (loading a pipeline there,
# a SentenceEncoder's normalization, `model(**inputs)` by hand all finish), and the engine's batches run on a
# thread started in the child, which opens a team of its own, on the parent's count of threads.
_ran_parallel = False  # coulisse ran torch on more than one thread in this process (or the one it was forked from)
_forking_thread: int | None = None  # in such a forked child, the thread that forked; else None
_forked_thread: ThreadPoolExecutor | None = None
_parent_threads = 1  # torch's count in the thread that forked, before the child set it to 1


def forked_thread() -> ThreadPoolExecutor:
    """A forked child's thread for the engine's batches (made on first use, kept for the child's life)."""
    global _forked_thread
    with _RUNS:
        if _forked_thread is None:
            _forked_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="coulisse-forked",
                                                initializer=torch.set_num_threads, initargs=(_parent_threads,))
        return _forked_thread


def _after_fork_in_child() -> None:
    global _RUNS, _running, _forking_thread, _forked_thread, _parent_threads
    # the parent's locks may have been held by one of its threads, which the child does not have
    _RUNS, _running, _forked_thread = threading.Lock(), 0, None
    if _ran_parallel:
        _forking_thread, _parent_threads = threading.get_ident(), torch.get_num_threads()
        torch.set_num_threads(1)


if hasattr(os, "register_at_fork"):  # not on Windows, which never forks
    os.register_at_fork(after_in_child=_after_fork_in_child)


@contextlib.contextmanager
def on_threads(threads: int | None) -> Iterator[None]:
    """torch on `threads` threads inside the block, the caller's count given back after; None: unchanged.

    torch's count is the calling thread's (OpenMP) and also the process's (the one a new thread starts from).
    Blocks of pipelines with other counts may overlap in several threads: each giving back the count it found
    would leave the one a later block set (a thread of a `threads=1` pipeline found 1, set by another thread's
    block, and left it). So every block gives back the count found when the first of the overlapping ones
    opened."""
    global _running, _host_threads, _ran_parallel
    if _forking_thread == threading.get_ident():  # a forked child's thread that forked: one thread (see above)
        threads = 1
    elif not _ran_parallel and max(threads or 0, torch.get_num_threads()) > 1:
        _ran_parallel = True
    if threads is None:
        yield
        return
    with _RUNS:
        if _running == 0:
            _host_threads = torch.get_num_threads()
        _running += 1
        host = _host_threads
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        with _RUNS:
            _running -= 1
        if torch.get_num_threads() != host:
            torch.set_num_threads(host)

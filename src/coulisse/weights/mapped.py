"""Give memory-mapped checkpoint pages back to the OS once the model no longer reads them.

safetensors and `torch.load(mmap=True)` map the weight file: loading copies nothing, and a page joins
the process's resident set the first time it is read. Once the CPU fast paths have repacked the linear
weights (fp32, oneDNN layout) or quantized them (int8), the model never reads those pages again, yet
they stay resident and count in RSS next to their repacked copies (≈ 340 MB for a base-size model).

`madvise(MADV_DONTNEED)` drops a range of a file mapping from the resident set. It is safe on any
range we never wrote to: a later read faults the page back in from the page cache, unchanged. Our
weights are read-only, so tensors still in use (embeddings, LayerNorms) lose nothing, they are paged
in again on demand. Only ranges inside file-backed mappings are touched, never anonymous memory
(where DONTNEED would zero the data). Linux only; elsewhere these functions do nothing.

The freed heap is the other half of the same bookkeeping: `release_freed_memory` hands the pages of
garbage (fp32 originals after repacking, a batch's activations) back with glibc's `malloc_trim`.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import mmap
import os
import sys
from collections.abc import Iterable
from pathlib import Path

import torch

log = logging.getLogger(__name__)

MADV_DONTNEED = 4  # <sys/mman.h> on Linux, every architecture
PAGE = mmap.PAGESIZE


def _madvise():
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.madvise
    except (OSError, AttributeError):
        return None
    fn.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
    fn.restype = ctypes.c_int
    return fn


def file_mappings() -> list[tuple[int, int, str]]:
    """(start, end, path) of every file-backed mapping of this process, from /proc/self/maps."""
    out = []
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as f:
            for line in f:
                parts = line.split(maxsplit=5)
                # address perms offset dev inode [path]; anonymous mappings have inode 0.
                if len(parts) == 6 and parts[4] != "0" and parts[5].startswith("/"):
                    start, end = (int(x, 16) for x in parts[0].split("-"))
                    out.append((start, end, parts[5].rstrip("\n").removesuffix(" (deleted)")))
    except OSError:
        pass
    return out


def _drop(madvise, start: int, end: int) -> int:
    start = -(-start // PAGE) * PAGE  # only whole pages inside the range
    end = end // PAGE * PAGE
    if end <= start:
        return 0
    if madvise(start, end - start, MADV_DONTNEED) != 0:
        log.debug("madvise failed: %s", os.strerror(ctypes.get_errno()))
        return 0
    return end - start


def _extent(t: torch.Tensor) -> int:
    """Bytes from a tensor's first element to just past its last one (any strides)."""
    return (1 + sum((n - 1) * abs(s) for n, s in zip(t.shape, t.stride(), strict=True))) * t.element_size()


def release_tensor_pages(tensors: Iterable[torch.Tensor]) -> int:
    """Drop the resident pages of tensors that view a mapped file; return the bytes released.

    Call it only on tensors that are no longer read (or are read-only: they come back on demand).
    Tensors in ordinary (anonymous) memory are skipped.
    """
    madvise = _madvise()
    if madvise is None:
        return 0
    spans = [(t.data_ptr(), t.data_ptr() + _extent(t)) for t in tensors if t.device.type == "cpu" and t.numel()]
    if not spans:
        return 0
    maps = [(lo, hi) for lo, hi, _ in file_mappings()]
    released = 0
    for start, end in spans:
        for lo, hi in maps:
            if lo <= start < hi:
                released += _drop(madvise, start, min(end, hi))
                break
    return released


def release_file_pages(paths: Iterable[Path]) -> int:
    """Drop every resident page of every mapping of these files (e.g. a checkpoint's weight files)."""
    madvise = _madvise()
    if madvise is None:
        return 0
    wanted = {os.path.realpath(p) for p in paths}
    released = sum(_drop(madvise, lo, hi) for lo, hi, path in file_mappings() if path in wanted)
    if released:
        log.debug("released %.0f MB of mapped checkpoint pages", released / 2**20)
    return released


@functools.cache
def _malloc_trim():
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc: nothing to do
        return None


def release_freed_memory() -> None:
    """Hand freed heap pages back to the OS (glibc keeps them otherwise): after weights are repacked or
    quantized the fp32 originals are garbage, and after a batch its activations are; peak RSS should
    not keep counting them."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)

"""Give memory-mapped checkpoint pages back to the OS once the model no longer reads them.

safetensors and `torch.load(mmap=True)` map the weight file: loading copies nothing, and a page joins
the process's resident set the first time it is read. Once the CPU fast paths have repacked the linear
weights (fp32, oneDNN layout) or quantized them (int8), the model never reads those pages again, yet
they stay resident and count in RSS next to their repacked copies (≈ 340 MB for a base-size model).

`madvise(MADV_DONTNEED)` drops a range of a file mapping from the resident set. It is safe on any
page nobody wrote to: a later read faults the page back in from the page cache, unchanged, so tensors
still in use (embeddings, LayerNorms) lose nothing. A written page of a private mapping is the process's
own copy, and DONTNEED would throw the write away: a weight edited in place (an optimizer's step on a
transformers model mapping the same file, a head edited by hand) would silently return to the file's
value (audit 46). So every range is read in `/proc/self/pagemap` first, and the pages written (anonymous
copies, or swapped out) are kept; only ranges inside file-backed mappings are touched, never anonymous
memory. Where pagemap cannot be read, nothing is dropped. Linux only; elsewhere these functions do nothing.

The freed heap is the other half of the same bookkeeping: `release_freed_memory` hands the pages of
garbage (fp32 originals after repacking, a batch's activations) back with glibc's `malloc_trim`. After
a batch it is `HeapTrimmer`'s call: trimming after every batch made the next batch fault its
activations back in page by page (≈ 250,000 page faults and 0.7 s of kernel time over 160 reviews, 8 %
of the int8 forward: docs/benchmarks.md, "Session 11"), so the trimmer only trims once the resident set
has grown by a budget since the batch after the last trim. And glibc's own policies returned the rest at
every batch (`keep_activations_on_heap`), until the CPU engine set them once per process.
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


# /proc/self/pagemap: one 64-bit entry per page (Documentation/admin-guide/mm/pagemap.rst)
PAGE_PRESENT, PAGE_SWAPPED, PAGE_OF_FILE = 1 << 63, 1 << 62, 1 << 61


def _written(start: int, end: int) -> torch.Tensor | None:
    """For each page of [start, end) (page-aligned), whether it was written: present but no longer the file's
    page (a private copy), or swapped out (only anonymous pages are). None when pagemap cannot be read."""
    count = (end - start) // PAGE
    try:
        with open("/proc/self/pagemap", "rb", buffering=0) as f:
            f.seek(start // PAGE * 8)
            raw = f.read(count * 8)
    except OSError:
        return None
    if len(raw) != count * 8:
        return None
    entries = torch.frombuffer(bytearray(raw), dtype=torch.int64)
    present = entries < 0  # bit 63, the sign bit
    return (present & (entries & PAGE_OF_FILE == 0)) | (entries & PAGE_SWAPPED != 0)


def _drop(madvise, start: int, end: int) -> int:
    """Drop the unwritten pages of [start, end) (whole pages only); return the bytes of the ranges dropped."""
    start = -(-start // PAGE) * PAGE  # only whole pages inside the range
    end = end // PAGE * PAGE
    if end <= start:
        return 0
    written = _written(start, end)
    if written is None:
        return 0
    runs, first = [], 0  # [first, page) runs of unwritten pages
    for page in written.nonzero().flatten().tolist() + [len(written)]:
        if page > first:
            runs.append((start + first * PAGE, start + page * PAGE))
        first = page + 1
    dropped = 0
    for lo, hi in runs:
        if madvise(lo, hi - lo, MADV_DONTNEED) != 0:
            log.debug("madvise failed: %s", os.strerror(ctypes.get_errno()))
            continue
        dropped += hi - lo
    return dropped


def _extent(t: torch.Tensor) -> int:
    """Bytes from a tensor's first element to just past its last one (any strides)."""
    return (1 + sum((n - 1) * abs(s) for n, s in zip(t.shape, t.stride(), strict=True))) * t.element_size()


def release_tensor_pages(tensors: Iterable[torch.Tensor], whole_mapping: bool = False,
                         mappings: list[tuple[int, int, str]] | None = None) -> int:
    """Drop the resident pages of tensors that view a mapped file; return the bytes released.

    Call it only on tensors that are no longer read, or read again later (they come back on demand); pages
    written since the file was mapped stay (module docstring).
    Tensors in ordinary (anonymous) memory are skipped. `whole_mapping`: drop every page of the file
    mappings that hold them, not only theirs (a page fault maps the file's cached neighbours too, up to
    64 kB around it, so tensors released before may have come back while these were read). `mappings`:
    `file_mappings()` read once by a caller that releases tensors one at a time (~1 ms a read).
    """
    madvise = _madvise()
    if madvise is None:
        return 0
    spans = [(t.data_ptr(), t.data_ptr() + _extent(t)) for t in tensors if t.device.type == "cpu" and t.numel()]
    if not spans:
        return 0
    maps = [(lo, hi) for lo, hi, _ in (file_mappings() if mappings is None else mappings)]
    released = 0
    for start, end in spans:
        for lo, hi in maps:
            if lo <= start < hi:
                released += _drop(madvise, lo, hi) if whole_mapping else _drop(madvise, start, min(end, hi))
                break
    return released


def release_file_pages(paths: Iterable[Path]) -> int:
    """Drop every resident page of every mapping of these files (e.g. a checkpoint's weight files), another
    library's included, but for the pages written in place (module docstring)."""
    madvise = _madvise()
    if madvise is None:
        return 0
    wanted = {os.path.realpath(p) for p in paths}
    released = sum(_drop(madvise, lo, hi) for lo, hi, path in file_mappings() if path in wanted)
    if released:
        log.debug("released %.0f MB of mapped checkpoint pages", released / 2**20)
    return released


@functools.cache
def _glibc(name: str):
    """glibc's function `name` (malloc_trim, mallopt), or None where the C library is another."""
    try:
        return getattr(ctypes.CDLL("libc.so.6"), name)
    except (OSError, AttributeError):  # not glibc: its allocator's own policies stand
        return None


def release_freed_memory() -> None:
    """Hand freed heap pages back to the OS (glibc keeps them otherwise): after weights are repacked or
    quantized the fp32 originals are garbage, and after a batch its activations are; peak RSS should
    not keep counting them."""
    trim = _glibc("malloc_trim")
    if trim is not None:
        trim(0)


TRIM_GROWTH = 64 << 20  # bytes of resident growth a process may gather from freed activations before a trim

# glibc's mallopt parameters (<malloc.h>), and what the CPU engine sets them to
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
HEAP_MMAP_THRESHOLD = 64 << 20
HEAP_TRIM_THRESHOLD = 256 << 20


@functools.cache
def keep_activations_on_heap() -> bool:
    """Serve a batch's activations from the heap and keep what they free there, once per process (glibc only).

    glibc maps each allocation above its mmap threshold afresh (zeroed pages, faulted in one by one) and
    unmaps it when freed; the threshold starts at 128 kB and rises to the largest chunk freed so far, but
    batches of varied lengths keep asking for a little more than the last, and its automatic trim returns
    the top of the heap as soon as it is freed. Over 160 reviews (int8, base-size model) that was
    12,000–96,000 page faults a run; with the thresholds at 64 MB (mmap) and 256 MB (trim), set here when the
    engine is built, 1,600–17,000, the run ~3 % faster, peak RSS as before (docs/benchmarks.md, session 16;
    set before the model loads, RSS rose to 655 MB in one process of four). The resident set
    stays bounded by `HeapTrimmer`, which trims when it has grown by `TRIM_GROWTH`. Not done where the
    process already tunes malloc (`GLIBC_TUNABLES` naming malloc, `MALLOC_MMAP_THRESHOLD_`,
    `MALLOC_TRIM_THRESHOLD_`) or with `COULISSE_MALLOC_TUNING=0`. Returns whether it set them."""
    if os.environ.get("COULISSE_MALLOC_TUNING", "1") == "0" or "glibc.malloc" in os.environ.get("GLIBC_TUNABLES", ""):
        return False
    if "MALLOC_MMAP_THRESHOLD_" in os.environ or "MALLOC_TRIM_THRESHOLD_" in os.environ:
        return False
    mallopt = _glibc("mallopt")
    if mallopt is None:
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    done = mallopt(M_MMAP_THRESHOLD, HEAP_MMAP_THRESHOLD) == 1 and mallopt(M_TRIM_THRESHOLD, HEAP_TRIM_THRESHOLD) == 1
    log.debug("malloc: activations kept on the heap (mmap threshold 64 MB, trim threshold 256 MB): %s", done)
    return done


def resident_bytes() -> int | None:
    """This process's resident set size in bytes (`/proc/self/statm`), or None where there is no /proc."""
    try:
        with open("/proc/self/statm", encoding="ascii") as f:
            return int(f.read().split()[1]) * PAGE
    except (OSError, ValueError, IndexError):
        return None


class HeapTrimmer:
    """When to hand a batch's freed activations back: once the resident set has grown by `growth` bytes.

    glibc keeps freed heap pages; activations of every shape come and go, the heap fragments, and RSS
    creeps up batch after batch (≈ 130–185 MB over 160 reviews for a base-size model). Trimming after
    every batch bounds that, but the next batch then faults its whole working set back in, zeroed page
    by page by the kernel. So the first batch after a trim sets a mark (its RSS holds the working set
    of a batch: the steady state), and a trim comes only when RSS exceeds that mark by `growth` — at most
    that much garbage stays resident, and most batches reuse the heap as it is. Process-wide, like the heap
    it looks at; concurrent callers can at worst trim once too often. Where RSS cannot be read it trims
    after every batch, as before."""

    def __init__(self, growth: int = TRIM_GROWTH):
        self.growth = growth
        self.limit: int | None = None  # RSS above which the next batch trims; None: the next batch sets it
        self.trims = 0

    def after_batch(self) -> bool:
        """Call after each batch; return whether it trimmed."""
        rss = resident_bytes()
        if rss is not None and self.limit is None:
            self.limit = rss + self.growth
            return False
        if rss is not None and rss <= self.limit:
            return False
        release_freed_memory()
        self.trims += 1
        self.limit = None
        return True


heap_trimmer = HeapTrimmer()

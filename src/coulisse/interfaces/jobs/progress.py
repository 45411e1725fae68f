"""The progress bar on stderr: rows done, rows/s and an ETA.

The bar advances by bytes read for text files (their row count is unknown until the end, bytes give an
honest ETA) and by rows for Parquet; the rate shown is always rows per second. A resumed job's bar starts where
the reader is, past the committed rows (tqdm's `initial`): the percentage is of the whole input, and so is the
row count shown (the committed rows included); the rate and the ETA are this run's.
"""

from __future__ import annotations

import sys
import time

from coulisse.interfaces.formatting import count

MININTERVAL = 0.5  # seconds between redraws at most


def wanted(quiet: bool, force: bool | None) -> bool:
    """--progress always shows the bar; otherwise only on a terminal, and never with --quiet."""
    if force is not None:
        return force
    return not quiet and sys.stderr.isatty()


class Progress:
    def __init__(self, reader, quiet: bool = False, force: bool | None = None, desc: str = "classify",
                 done: int = 0):
        self.reader = reader
        self.bar = None
        self.done = done  # rows committed by the run a resume goes on from
        self.rows = 0  # rows of this run
        self.start = time.perf_counter()
        if not wanted(quiet, force):
            return
        from tqdm import tqdm

        # The first frame reads `classify:   0%|          | [00:00<?, 0 rows]`: nothing done yet (a
        # header already read is not progress), and tqdm puts its ", " before the postfix, so the
        # postfix goes where tqdm's own statistics end. A resume starts at the reader's position, past the
        # committed rows: from 0, its first update would jump by all of them, and tqdm's dynamic `miniters`
        # would then wait for another jump that size before it redrew. One update per chunk: each may redraw.
        self.last = reader.position if done else 0
        fmt = "{desc}: {percentage:3.0f}%|{bar}| [{elapsed}<{remaining}{postfix}]"
        if reader.total is None:
            fmt = "{desc}: [{elapsed}{postfix}]"
        self.bar = tqdm(total=reader.total, file=sys.stderr, desc=desc, bar_format=fmt, initial=self.last,
                        mininterval=MININTERVAL, miniters=1, dynamic_ncols=True, postfix=count(done, "row"))

    def update(self, rows: int) -> None:
        self.rows += rows
        if self.bar is None:
            return
        position = self.reader.position
        rate = self.rows / max(time.perf_counter() - self.start, 1e-9)
        self.bar.set_postfix_str(f"{count(self.done + self.rows, 'row')}, {rate:,.1f} rows/s", refresh=False)
        self.bar.update(position - self.last)
        self.last = position

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()

"""The progress bar on stderr: rows done, rows/s and an ETA.

The bar advances by bytes read for text files (their row count is unknown until the end, bytes give an
honest ETA) and by rows for Parquet; the rate shown is always rows per second.
"""

from __future__ import annotations

import sys
import time

from coulisse.interfaces.formatting import count


def wanted(quiet: bool, force: bool | None) -> bool:
    """--progress always shows the bar; otherwise only on a terminal, and never with --quiet."""
    if force is not None:
        return force
    return not quiet and sys.stderr.isatty()


class Progress:
    def __init__(self, reader, quiet: bool = False, force: bool | None = None, desc: str = "classify"):
        self.reader = reader
        self.bar = None
        self.rows = 0
        self.start = time.perf_counter()
        if not wanted(quiet, force):
            return
        from tqdm import tqdm

        self.by_rows = reader.format == "parquet" or reader.total is None
        # The first frame reads `classify:   0%|          | [00:00<?, 0 rows]`: nothing done yet (a
        # header already read is not progress), and tqdm puts its ", " before the postfix, so the
        # postfix goes where tqdm's own statistics end.
        self.last = 0
        fmt = "{desc}: {percentage:3.0f}%|{bar}| [{elapsed}<{remaining}{postfix}]"
        if reader.total is None:
            fmt = "{desc}: [{elapsed}{postfix}]"
        self.bar = tqdm(total=reader.total, file=sys.stderr, desc=desc, bar_format=fmt,
                        mininterval=0.5, dynamic_ncols=True, postfix=count(0, "row"))

    def update(self, rows: int) -> None:
        self.rows += rows
        if self.bar is None:
            return
        position = self.reader.position
        rate = self.rows / max(time.perf_counter() - self.start, 1e-9)
        self.bar.set_postfix_str(f"{count(self.rows, 'row')}, {rate:,.1f} rows/s", refresh=False)
        self.bar.update(position - self.last)
        self.last = position

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()

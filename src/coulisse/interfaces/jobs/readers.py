"""Streaming readers: one Row at a time, in file order, whatever the file holds. `Reader` opens the input, reads
it through the source of its format (`sources.py`), picks the text column and checks each row's text.

A bad record never stops a job: invalid UTF-8, a malformed CSV or JSON line, a missing, null or blank
text all become rows with an `error` that names the line. Files are read as bytes and decoded line by
line (UTF-8, or `--encoding`) so that an encoding error can be reported where it is; memory stays bounded
by one record (and the first 64 KiB of a pipe, read ahead). Read as UTF-8 by default, an input whose start is
not UTF-8 is refused instead, before any row is read (`encodings.py`).

The bytes read are hashed as they are read (`Reader.fingerprint`: what a resume compares, see `state.py`),
and `Reader.check_unchanged` tells whether the file was rewritten, truncated, appended to or replaced
since it was opened: the job calls it after reading each chunk, before committing it.
"""

from __future__ import annotations

import itertools
import os
import re
import shlex
import sys
from collections.abc import Iterator
from typing import BinaryIO

from coulisse.errors import InputError
from coulisse.interfaces.jobs.encodings import UTF8, check_encoding, checked_start
from coulisse.interfaces.jobs.formats import STDIO, Row, input_format
from coulisse.interfaces.jobs.sources import (
    CsvSource,
    JsonlSource,
    Lines,
    ParquetSource,
    TxtSource,
    _numeric,
    _stdin_source,
    json_type,
)
from coulisse.interfaces.jobs.state import sha256_file
from coulisse.tokenizer import unicode_problem

PEEK_ROWS = 1000  # rows read ahead, at most, to find the columns of a JSONL file


class InputChangedError(InputError):
    """The input file changed while a job was reading it."""


class Reader:
    """Rows of one input file with the text to classify picked out and checked."""

    def __init__(self, path: str, column: str | None = None, batch_rows: int = 1024,
                 stdin: BinaryIO | None = None, encoding: str | None = None, not_text: tuple[str, ...] = ()):
        self.path = path
        self.format = input_format(path)
        # None: UTF-8, its start checked (`encodings.checked_start`). Parquet's strings are UTF-8 whatever is
        # asked: it takes none, and none is recorded for a resume.
        self.encoding = None if self.format == "parquet" else check_encoding(encoding)
        self._stream: BinaryIO | None = None
        self._parquet: ParquetSource | None = None
        self._opened: os.stat_result | None = None  # the file as opened: what check_unchanged compares
        self._whole: dict | None = None
        try:  # a refused input (its header, its columns) never reaches `with`: close the file here
            self.source = self._open(batch_rows, stdin)
            self._rows = iter(self.source)
            self._peeked = self._peek() if isinstance(self.source, (JsonlSource, CsvSource)) else []
            self.columns: list[str] = list(self.source.columns)
            self.schema = getattr(self.source, "schema", None)
            string_columns = [c for c in self.source.string_columns if c not in not_text]
            self.text_column = pick_column(column, self.columns, string_columns, path,
                                           header_line=isinstance(self.source, CsvSource))
        except BaseException:
            self.close()
            raise

    def _open(self, batch_rows: int, stdin: BinaryIO | None):
        if self.format == "stdin":
            return _stdin_source(stdin or sys.stdin.buffer, self.encoding)
        if self.format == "parquet":
            try:
                self._opened = os.stat(self.path)
            except OSError as e:
                raise InputError(f"cannot read {self.path!r}: {e.strerror}.") from None
            self._parquet = ParquetSource(self.path, batch_rows)
            return self._parquet
        try:
            self._stream = open(self.path, "rb")  # noqa: SIM115 (closed by close())
        except OSError as e:
            raise InputError(f"cannot read {self.path!r}: {e.strerror}.") from None
        self._opened = os.fstat(self._stream.fileno())
        lines = Lines(checked_start(self._stream, self.encoding, self.path), self.encoding or UTF8)
        if self.format in ("csv", "tsv"):
            return CsvSource(lines, "," if self.format == "csv" else "\t", self.path)
        return JsonlSource(lines) if self.format == "jsonl" else TxtSource(lines)

    def _peek(self) -> list[Row]:
        """Read ahead to the first valid record: JSONL takes its columns from it, CSV its string columns."""
        peeked = []
        for row in itertools.islice(self._rows, PEEK_ROWS):
            peeked.append(row)
            if row.error is None:
                self.source.learn_columns(row)
                break
        return peeked

    @property
    def total(self) -> int | None:
        """Progress total: rows for Parquet, bytes for a file, None for stdin."""
        if isinstance(self.source, ParquetSource):
            return self.source.total
        return os.path.getsize(self.path) if self._stream is not None else None

    @property
    def position(self) -> int:
        return self.source.position if isinstance(self.source, ParquetSource) else self.source.lines.position

    def rows(self) -> Iterator[Row]:
        for row in itertools.chain(self._peeked, self._rows):
            yield self._check_text(row)

    def fingerprint(self) -> dict:
        """The input read so far: {"bytes": n, "sha256": hex of those n bytes}. A Parquet file, read by row
        groups rather than in order, is hashed whole, once ("whole": true)."""
        if isinstance(self.source, ParquetSource):
            if self._whole is None:
                self._whole = {"bytes": self._opened.st_size, "sha256": sha256_file(self.path), "whole": True}
                self.check_unchanged()  # the bytes hashed are the bytes opened
            return self._whole
        lines = self.source.lines
        return {"bytes": lines.position, "sha256": lines.sha256.hexdigest()}

    def check_unchanged(self) -> None:
        """Raise InputChangedError if the file at the input's path is not the one opened, unchanged: same
        device, inode, size, mtime and ctime (which no user can set back). stdin is not checked."""
        if self._opened is None:
            return
        try:
            now = os.stat(self.path)
        except OSError as e:
            raise InputChangedError(f"the input {self.path} changed while the job read it: it is gone "
                                    f"({e.strerror}).") from None
        was = self._opened
        if (now.st_dev, now.st_ino) != (was.st_dev, was.st_ino):
            what = "it was replaced by another file"
        elif now.st_size != was.st_size:
            what = f"its size went from {was.st_size:,} to {now.st_size:,} bytes"
        elif (now.st_mtime_ns, now.st_ctime_ns) != (was.st_mtime_ns, was.st_ctime_ns):
            what = "it was modified (its mtime or ctime moved)"
        else:
            return
        raise InputChangedError(f"the input {self.path} changed while the job read it: {what}.")

    def _check_text(self, row: Row) -> Row:
        if row.error is not None:
            return row
        column = self.text_column
        if column not in row.values:
            row.error = f"{row.where}: no {column!r} value"
        else:
            row.text, row.error = check_text(row.values[column], column, row.where)
        return row

    def close(self) -> None:
        if self._stream is not None:
            self._stream.close()
        if self._parquet is not None:
            self._parquet.close()

    def __enter__(self) -> Reader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def pick_column(requested: str | None, columns: list[str], string_columns: list[str], name: str, *,
                header_line: bool = False) -> str:
    """--column, else `text`, else the only string column (of those that may be the text: not evaluate's label
    column). A CSV's only string column whose name reads like a review is refused rather than taken: a file
    written without a header line would lose its first row to it, unsaid."""
    if requested is not None:
        if columns and requested not in columns:
            stdin = (" (stdin is read as JSONL, or as one text per line, the column text: for a CSV, pass the "
                     "file, -i FILE.csv)") if name == STDIO else ""
            raise InputError(f"{name} has no column {requested!r}; its columns are {', '.join(columns)}{stdin}.")
        return requested
    if "text" in columns or not columns:
        return "text"
    if len(string_columns) == 1:
        column = string_columns[0]
        if header_line and reads_like_text(column):
            given = shlex.quote(column) if len(column) <= 80 else "NAME"
            raise InputError(f"{name} has no 'text' column, and its only text column's name, {column[:80]!r}, "
                             "reads like a text: a file without a header line would have its first row taken for "
                             f"one. Add a header line (text), or pass --column {given} if that is the column's name.")
        return column
    raise InputError(f"{name} has no 'text' column and {len(string_columns)} string columns "
                     f"({', '.join(string_columns) or 'none'}); pass --column NAME.")


# What a column's name rarely holds and a review's first line often does: sentence punctuation, quotes,
# apostrophes; more than three words, or a number.
TEXT_MARKS = re.compile(r"[.!?…,;:\"«»“”'’]")


def reads_like_text(name: str) -> bool:
    return (TEXT_MARKS.search(name) is not None or len(name.split()) > 3 or len(name) > 48 or _numeric(name)
            or not name.strip())


def check_text(value, column: str, where: str) -> tuple[str | None, str | None]:
    """(value, None) for a text the model can read; else (None, why not): null, not a string, blank, or
    text the tokenizer refuses (a lone surrogate). Shared by the readers and `coulisse.ray`."""
    if value is None:
        return None, f"{where}: {column!r} is null"
    if not isinstance(value, str):
        return None, f"{where}: {column!r} is {json_type(value)}, not a string"
    if not value.strip():
        return None, f"{where}: {column!r} is {'empty' if not value else 'only whitespace'}"
    if problem := unicode_problem(value):
        return None, f"{where}: {column!r} is {problem}"
    return value, None

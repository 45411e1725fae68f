"""Streaming readers: one Row at a time, in file order, whatever the file holds.

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

import codecs
import csv
import hashlib
import itertools
import json
import logging
import os
import re
import shlex
import sys
from collections.abc import Iterable, Iterator
from typing import Any, BinaryIO

from coulisse.errors import InputError
from coulisse.interfaces.jobs.encodings import UTF8, InputEncodingError, check_encoding, checked_start
from coulisse.interfaces.jobs.formats import STDIO, Row, input_format, require
from coulisse.interfaces.jobs.state import sha256_file
from coulisse.tokenizer import unicode_problem

log = logging.getLogger(__name__)

PEEK_ROWS = 1000  # rows read ahead, at most, to find the columns of a JSONL file
# Python's csv refuses fields over 128 KiB; a long review is a row to classify (truncated), not a bad record.
CSV_FIELD_LIMIT = 64 * 1024 * 1024


class InputChangedError(InputError):
    """The input file changed while a job was reading it."""


class Lines:
    """Decoded lines of a byte stream, counted and hashed; bytes the encoding cannot decode are replaced and
    remembered by line number."""

    def __init__(self, raw: Iterable[bytes], encoding: str = UTF8):
        self.raw = iter(raw)
        self.encoding = encoding
        self.line = 0
        self.position = 0
        self.sha256 = hashlib.sha256()  # of the `position` bytes read so far
        self.bad: dict[int, tuple[str, str]] = {}  # line -> (what is wrong, how to fix it)

    def __iter__(self) -> Iterator[str]:
        return self

    def __next__(self) -> str:
        raw = next(self.raw)
        self.line += 1
        self.position += len(raw)
        self.sha256.update(raw)
        if self.line == 1 and self.encoding == UTF8 and raw.startswith(codecs.BOM_UTF8):
            raw = raw[len(codecs.BOM_UTF8):]
        try:
            return raw.decode(self.encoding)
        except UnicodeDecodeError as e:
            where = f"byte 0x{raw[e.start]:02x} at byte {e.start + 1} of the line"
            self.bad[self.line] = ((f"invalid UTF-8 ({where})", "re-encode the file as UTF-8")
                                   if self.encoding == UTF8 else
                                   (f"not valid {self.encoding} ({where})", "pass the file's own --encoding"))
            return raw.decode(self.encoding, errors="replace")

    def take_bad(self, first: int, last: int) -> str | None:
        """The first decoding error in lines first..last, as an error row says it. Every line up to `last` is
        forgotten (memory stays bounded): lines before `first` belong to no record (the header takes its own)."""
        taken = sorted(n for n in self.bad if n <= last)
        found = [(n, self.bad.pop(n)) for n in taken]
        return next((f"line {n}: {what}; {fix}" for n, (what, fix) in found if n >= first), None)


def _numeric(value: str) -> bool:
    try:
        float(value)
    except ValueError:
        return False
    return True


def _where(first: int, last: int) -> str:
    return f"line {first}" if first >= last else f"lines {first}-{last}"


def _check_header_bytes(lines: Lines, last: int, name: str) -> None:
    """A header line the encoding cannot decode is refused: it names every column, so it cannot be one error
    row as a damaged record is, and read with U+FFFD in it, it would rename a column in the output unsaid."""
    line = min((n for n in lines.bad if n <= last), default=None)
    if line is not None:
        what, fix = lines.bad.pop(line)
        raise InputEncodingError(f"{name}: the header line (line {line}) is {what}; the header names the columns, "
                                 f"so it cannot become an error row as a damaged record does: fix that line, or {fix}.")


class CsvSource:
    """CSV or TSV with a header line. A record whose field count differs from the header's is an error.

    A .csv whose header line holds semicolons and no comma is read with ';' between fields: what a spreadsheet
    in French (and other languages that write decimals with a comma) saves as CSV. Read with ',', such a file
    would be one column, and a lone `text;note` column would be taken as the text, grade included."""

    def __init__(self, lines: Lines, delimiter: str, name: str):
        self.lines = lines
        csv.field_size_limit(max(csv.field_size_limit(), CSV_FIELD_LIMIT))  # process-wide: only ever raised
        header = next(lines, None)
        if delimiter == "," and header is not None and ";" in header and "," not in header:
            delimiter = ";"
        self.reader = csv.reader(itertools.chain([] if header is None else [header], lines), delimiter=delimiter,
                                 strict=True)
        try:
            self.columns = next(self.reader)
        except StopIteration:
            self.columns = []
        except csv.Error as e:
            raise InputError(f"{name}: the header line is not valid CSV ({e}).") from None
        _check_header_bytes(lines, self.reader.line_num, name)
        # A column without a name (Excel's trailing separators, `text;note;;`) is named as pandas names it
        self.columns = [c if c.strip() else f"Unnamed: {i}" for i, c in enumerate(self.columns)]
        duplicated = sorted({c for c in self.columns if self.columns.count(c) > 1})
        if duplicated:
            raise InputError(f"{name}: the header names {', '.join(map(repr, duplicated))} more than once; "
                             "give every column a distinct name.")
        self.string_columns = list(self.columns)

    def learn_columns(self, row: Row) -> None:
        """Every CSV value is a string; those of the first row that read as numbers do not count."""
        self.string_columns = [c for c, v in row.values.items() if v is not None and not _numeric(v)]

    def __iter__(self) -> Iterator[Row]:
        first = self.reader.line_num + 1
        while True:
            try:
                fields, error = next(self.reader), None
            except StopIteration:
                return
            except csv.Error as e:
                fields, error = [], f"malformed CSV ({e})"
            last = self.reader.line_num
            if fields or error:
                yield self._row(fields, error, first, last)
            first = last + 1

    def _row(self, fields: list[str], error: str | None, first: int, last: int) -> Row:
        where = _where(first, last)
        if error is None and len(fields) != len(self.columns):
            error = f"malformed CSV: {len(fields)} fields where the header has {len(self.columns)}"
        bad = self.lines.take_bad(first, last)
        values: dict[str, Any] = dict(itertools.zip_longest(self.columns, fields[:len(self.columns)]))
        if bad:
            return Row(values, where, error=bad)
        return Row(values, where, error=f"{where}: {error}" if error else None)


class JsonlSource:
    """One JSON object per line (a bare JSON string is taken as {"text": ...}); blank lines are skipped."""

    def __init__(self, lines: Lines):
        self.lines = lines
        self.columns: list[str] = []
        self.string_columns: list[str] = []

    def __iter__(self) -> Iterator[Row]:
        for text in self.lines:
            n = self.lines.line
            if not text.strip():
                continue
            where = f"line {n}"
            bad = self.lines.take_bad(n, n)
            try:
                value = json.loads(text.rstrip("\r\n"), parse_constant=_not_json, parse_float=_finite_float)
            except json.JSONDecodeError as e:
                yield Row({}, where, error=bad or f"{where}: invalid JSON ({e.msg} at column {e.colno})")
                continue
            except ValueError as e:  # NaN, Infinity, 1e999: Python reads them, JSON has no such number
                yield Row({}, where, error=bad or f"{where}: {e}")
                continue
            except RecursionError:
                yield Row({}, where, error=bad or f"{where}: JSON nested too deeply to read")
                continue
            if isinstance(value, str):
                value = {"text": value}
            if not isinstance(value, dict):
                yield Row({}, where, error=f"{where}: {json_type(value)}, not a JSON object")
                continue
            yield Row(value, where, error=bad)

    def learn_columns(self, row: Row) -> None:
        self.columns = list(row.values)
        self.string_columns = [k for k, v in row.values.items() if isinstance(v, str)]


class TxtSource:
    """One text per line; every line is a row (an empty line is an error row), so row i is line i."""

    columns = ["text"]
    string_columns = ["text"]

    def __init__(self, lines: Lines):
        self.lines = lines

    def __iter__(self) -> Iterator[Row]:
        for text in self.lines:
            n = self.lines.line
            where = f"line {n}"
            yield Row({"text": text.rstrip("\r\n")}, where, error=self.lines.take_bad(n, n))


class ParquetSource:
    """Record batches of a Parquet file; columns keep their Arrow types."""

    def __init__(self, path: str, batch_rows: int):
        pq = require("pyarrow.parquet", "reading .parquet")
        try:
            self.file = pq.ParquetFile(path)
        except Exception as e:  # pyarrow raises ArrowInvalid, OSError, ... for a corrupt file
            raise InputError(f"{path}: not a readable Parquet file ({e}).") from None
        self.schema = self.file.schema_arrow
        self.columns = list(self.schema.names)
        duplicated = sorted({c for c in self.columns if self.columns.count(c) > 1})
        if duplicated:  # pyarrow writes them (pandas and Spark refuse): one would be written over the other
            self.close()
            raise InputError(f"{path}: the schema names {', '.join(map(repr, duplicated))} more than once; "
                             "give every column a distinct name (pyarrow: table.rename_columns).")
        self.string_columns = [f.name for f in self.schema if _is_text(f.type)]
        self.batch_rows = batch_rows
        self.total = self.file.metadata.num_rows
        self.position = 0

    def __iter__(self) -> Iterator[Row]:
        for batch in self.file.iter_batches(batch_size=self.batch_rows):
            for values in batch.to_pylist():
                self.position += 1
                yield Row(values, f"row {self.position}")

    def close(self) -> None:
        self.file.close()  # pyarrow keeps the file open until then, or until garbage collection


def _is_text(kind) -> bool:
    """An Arrow type whose values read as Python strings: string, large_string, string_view, and a dictionary of
    those (what pandas writes for a `category` column of texts)."""
    import pyarrow as pa

    if pa.types.is_dictionary(kind):
        kind = kind.value_type
    return pa.types.is_string(kind) or pa.types.is_large_string(kind) or str(kind) == "string_view"


def _stdin_source(stream: BinaryIO, encoding: str | None):
    """stdin holds JSONL when its first non-blank line is a JSON object, else one text per line."""
    raw = checked_start(stream, encoding, STDIO)
    peeked: list[bytes] = []
    content = b""
    for line in raw:
        peeked.append(line)
        # the first line's UTF-8 byte-order mark is no content (`Lines` drops it): JSONL after one is JSONL
        content = (line.removeprefix(codecs.BOM_UTF8) if len(peeked) == 1 else line).strip()
        if content:
            break
    lines = Lines(itertools.chain(peeked, raw), encoding or UTF8)
    if content.startswith(b"{"):
        return JsonlSource(lines)
    if _reads_like_a_header(content.decode(encoding or UTF8, errors="replace")):
        log.warning("stdin's first line %r reads like a CSV header, but stdin is read as JSONL or one text per line "
                    "(that line is classified as a text): for a CSV or TSV, pass the file, -i FILE.csv",
                    content[:80].decode(encoding or UTF8, errors="replace"))
    return TxtSource(lines)


# Column names a review file's header holds: with only names around separators, a first line is a header.
HEADER_NAMES = {"text", "texte", "review", "reviews", "avis", "commentaire", "comment", "content", "sentence",
                "phrase", "label", "id", "polarity", "rating", "note", "title", "titre"}


def _reads_like_a_header(line: str) -> bool:
    """'id,review' or 'avis;note': two or more short names, one of HEADER_NAMES, between commas, semicolons or
    tabs. A text such as 'Bof, nul.' is not one."""
    fields = [f.strip().strip('"').lower() for f in re.split(r"[,;\t]", line)]
    return (len(fields) >= 2 and any(f in HEADER_NAMES for f in fields)
            and all(re.fullmatch(r"[a-z_][a-z0-9_ ]{0,30}", f) for f in fields))


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


def json_type(value) -> str:
    """A value's type in JSON's words, with its article (a number, an object): what a JSONL file's author wrote;
    a Parquet cell's own type name otherwise."""
    for kind, name in ((bool, "a boolean"), ((int, float), "a number"), (dict, "an object"), (list, "an array"),
                       (type(None), "null")):
        if isinstance(value, kind):
            return name
    return f"a {type(value).__name__}"


def _not_json(constant: str):
    raise ValueError(f"{constant} is not a JSON number (JSON has no NaN or infinity); write it as a string or "
                     "null")


def _finite_float(literal: str) -> float:
    value = float(literal)
    if value in (float("inf"), float("-inf")):
        raise ValueError(f"the number {literal[:40]} is too large for a 64-bit float; write it as a string")
    return value


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

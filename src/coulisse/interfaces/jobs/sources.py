"""One source per input format, each a stream of Rows in file order: CSV/TSV (a header line, ';' for a French
spreadsheet's CSV), JSONL, one text per line, Parquet, and stdin (JSONL or text, told from its first line).

`Lines` decodes a byte stream line by line, counting and hashing the bytes read (what `readers.Reader` fingerprints)
and remembering the lines the encoding cannot decode, so that each becomes the error of its own row. A malformed
record is an error row naming its line, never the end of the job.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import itertools
import json
import logging
import re
from collections.abc import Iterable, Iterator
from typing import Any, BinaryIO

from coulisse.errors import InputError
from coulisse.interfaces.jobs.encodings import UTF8, InputEncodingError, checked_start
from coulisse.interfaces.jobs.formats import STDIO, Row, require

log = logging.getLogger(__name__)

# Python's csv refuses fields over 128 KiB; a long review is a row to classify (truncated), not a bad record.
CSV_FIELD_LIMIT = 64 * 1024 * 1024


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

"""Output sinks. Each commit makes one chunk of rows durable and returns the new committed position.

CSV, TSV and JSONL are appended to the output file (position: bytes). Parquet cannot be appended to (its
footer comes last), so each chunk is a durable part file in `<output>.parts/` (position: parts), and
`finish` streams the parts into `<output>.tmp`, one row group each. Then the job's record says the output is
complete (runner.py), and only then `complete` renames it into place and deletes the parts: a stop at any point
leaves either the parts, which a resume assembles again, or a record that says the output is complete, which a
resume only tidies up. No output in place is ever reported as an interrupted job.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
import re
import shutil
import sys
from pathlib import Path
from typing import Any

from coulisse.errors import InputError
from coulisse.interfaces.jobs.formats import Added, Prediction, Row, require
from coulisse.interfaces.jobs.state import fsync_dir

SURROGATES = re.compile("[\ud800-\udfff]")


def utf8(text: str, escape: bool = False) -> bytes:
    """UTF-8 bytes of `text`. A lone surrogate (a JSONL input may carry "\\ud800" in any column) has no
    UTF-8 form: JSONL writes it back as the same `\\ud800` escape (`escape`, lossless: it only occurs inside
    JSON strings), CSV/TSV, which have no escapes, as U+FFFD, as the readers do with invalid UTF-8.
    Never `surrogatepass`: its bytes are not UTF-8, and the output must be readable by any reader."""
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", errors="backslashreplace") if escape else _replace_surrogates(text).encode()


def _dropped_keys(have, want) -> str | None:
    """An object key (a struct field) of Arrow type `have`, at any depth, that type `want` has not: what a cast
    from `have` to `want` would drop. None when none is."""
    import pyarrow as pa

    if pa.types.is_struct(have) and pa.types.is_struct(want):
        names = {want.field(i).name: want.field(i).type for i in range(want.num_fields)}
        for i in range(have.num_fields):
            field = have.field(i)
            if field.name not in names:
                return f"the key {field.name!r}"
            if (deeper := _dropped_keys(field.type, names[field.name])) is not None:
                return deeper
        return None
    if (pa.types.is_list(have) or pa.types.is_large_list(have)) and (pa.types.is_list(want)
                                                                      or pa.types.is_large_list(want)):
        return _dropped_keys(have.value_type, want.value_type)
    return None


def _replace_surrogates(value: Any) -> Any:
    """Strings (also inside lists and dicts) with each lone surrogate replaced by U+FFFD."""
    if isinstance(value, str):
        return SURROGATES.sub("\ufffd", value)
    if isinstance(value, list):
        return [_replace_surrogates(v) for v in value]
    if isinstance(value, dict):
        return {_replace_surrogates(k): _replace_surrogates(v) for k, v in value.items()}
    return value


def cell(value: Any) -> str:
    """A value in a CSV cell: strings unchanged, null empty, other JSON values as JSON."""
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    if isinstance(value, (bool, int, float, list, dict)):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def json_line(record: dict) -> str:
    """One JSONL record. A float that is not finite (a Parquet input's NaN or inf) is written null: JSON has no
    NaN, and the readers here (jq, JSON.parse, coulisse's own) refuse Python's bare `NaN` (audit 42)."""
    try:
        return json.dumps(record, ensure_ascii=False, default=str, allow_nan=False)
    except ValueError:
        return json.dumps(_finite(record), ensure_ascii=False, default=str, allow_nan=False)


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


class Encoder:
    """Rows and predictions -> bytes of one text format."""

    def __init__(self, fmt: str, columns: list[str], added: Added):
        self.fmt = fmt
        self.columns = columns
        self.added = added

    def header(self) -> bytes:
        if self.fmt == "jsonl":
            return b""
        return self._csv([self.columns + self.added.names])

    def encode(self, rows: list[Row], preds: list[Prediction]) -> bytes:
        if self.fmt == "jsonl":
            # Each record keeps its own keys, in order, and their values: JSONL has no fixed columns.
            lines = [json_line({**r.values, **p.values(self.added.for_record(r.values))})
                     for r, p in zip(rows, preds, strict=True)]
            return utf8("\n".join(lines) + "\n", escape=True) if lines else b""
        table = []
        for r, p in zip(rows, preds, strict=True):
            added = p.values(self.added)
            table.append([cell(r.values.get(c)) for c in self.columns] + [cell(v) for v in added.values()])
        return self._csv(table)

    def _csv(self, table: list[list[str]]) -> bytes:
        buffer = io.StringIO()
        writer = csv.writer(buffer, delimiter="," if self.fmt == "csv" else "\t", lineterminator="\n")
        writer.writerows(table)
        return utf8(buffer.getvalue())


class FileSink:
    """CSV/TSV/JSONL output file: position = bytes committed."""

    def __init__(self, path: str, encoder: Encoder):
        self.path = Path(path)
        self.encoder = encoder
        self.file: Any = None

    def open(self, position: int) -> int:
        """Cut the file back to the committed `position` (0: start it, header included)."""
        if position == 0:
            self.file = open(self.path, "wb")  # noqa: SIM115 (closed by finish())
            fsync_dir(self.path.absolute().parent)
            header = self.encoder.header()
            self.file.write(header)
            return self._sync(len(header))
        size = self.path.stat().st_size if self.path.exists() else -1
        if size < position:
            raise InputError(f"cannot resume {self.path}: it holds {max(size, 0)} bytes but {position} were "
                             "committed; it was changed since. Pass --overwrite to start over.")
        os.truncate(self.path, position)  # drop the uncommitted tail, maybe half a line
        self.file = open(self.path, "ab")  # noqa: SIM115
        return position

    def commit(self, rows: list[Row], preds: list[Prediction]) -> int:
        self.file.write(self.encoder.encode(rows, preds))
        return self._sync(self.file.tell())

    def _sync(self, position: int) -> int:
        self.file.flush()
        os.fsync(self.file.fileno())
        return position

    def finish(self) -> None:
        if self.file is not None:
            self.file.close()

    def close(self) -> None:
        """Whatever happened: close without raising. After a failed write (a full disk), the bytes still
        buffered are an uncommitted tail that --resume cuts; flushing them again at garbage collection
        would only print the same error a second time."""
        if self.file is not None:
            with contextlib.suppress(OSError):
                self.file.close()

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


class StdoutSink(FileSink):
    """JSONL on stdout: nothing to resume."""

    def __init__(self, encoder: Encoder):
        super().__init__("-", encoder)

    def open(self, position: int) -> int:
        self.file = sys.stdout.buffer
        self.file.write(self.encoder.header())
        return 0

    def commit(self, rows: list[Row], preds: list[Prediction]) -> int:
        self.file.write(self.encoder.encode(rows, preds))
        self.file.flush()
        return 0

    def finish(self) -> None:
        self.file.flush()

    def close(self) -> None:
        pass  # stdout is not ours to close


class ParquetSink:
    """Parquet output built from durable parts: position = parts committed."""

    def __init__(self, path: str, columns: list[str], added: Added, schema=None):
        self.pa = require("pyarrow", "writing .parquet")
        self.pq = require("pyarrow.parquet", "writing .parquet")
        self.path = Path(path)
        self.parts = self.path.with_name(self.path.name + ".parts")
        self.columns = columns
        self.names = _replace_surrogates(columns)  # Arrow field names are UTF-8 too
        self.added = added
        self.input_schema = schema
        self.schema = None
        self.count = 0

    def _part(self, i: int) -> Path:
        return self.parts / f"part-{i:06d}.parquet"

    def open(self, position: int) -> int:
        if position == 0 and self.parts.exists():
            shutil.rmtree(self.parts)
        self.parts.mkdir(parents=True, exist_ok=True)
        for p in self.parts.iterdir():  # uncommitted parts and temporary files
            if not (p.name.startswith("part-") and p.suffix == ".parquet" and int(p.stem[5:]) < position):
                p.unlink()
        missing = next((i for i in range(position) if not self._part(i).exists()), None)
        if missing is not None:
            raise InputError(f"cannot resume {self.path}: part {missing} of {self.parts} is missing (a committed "
                             "part was deleted); pass --overwrite to start over.")
        if position:
            self.schema = self.pq.read_schema(self._part(0))
        self.count = position
        return position

    def _schema(self, records: list[dict]):
        """Carried columns keep the input's Arrow types (else the first chunk's); added ones are fixed. A Parquet
        input pandas wrote keeps its pandas metadata, the added columns listed in it: pd.read_parquet then gives
        back its index (not a `__index_level_0__` column) and its nullable dtypes (an Int64 with a missing value
        was float64, 9007199254740993 read 9007199254740992.0, audit 44)."""
        pa = self.pa
        if self.input_schema is not None:
            carried = [self.input_schema.field(c) for c in self.columns]
        else:
            inferred = pa.Table.from_pylist(_replace_surrogates(records)).schema if records else None
            carried = []
            for c in self.names:
                kind = inferred.field(c).type if inferred is not None else pa.null()
                carried.append(pa.field(c, pa.string() if pa.types.is_null(kind) else kind))
        added = self.added.arrow_fields(pa)
        return pa.schema(carried + added, metadata=self._pandas_metadata(added))

    def _pandas_metadata(self, added: list) -> dict | None:
        raw = (self.input_schema.metadata or {}).get(b"pandas") if self.input_schema is not None else None
        if raw is None:
            return None
        try:
            meta = json.loads(raw)
            columns = [c for c in meta["columns"] if c.get("field_name") in self.columns]
        except (ValueError, KeyError, TypeError, AttributeError):  # not what pandas writes: left out
            return None
        for field in added:
            number = self.pa.types.is_floating(field.type)
            columns.append({"name": field.name, "field_name": field.name,
                            "pandas_type": "float64" if number else "unicode",
                            "numpy_type": "float64" if number else "object", "metadata": None})
        return {b"pandas": json.dumps({**meta, "columns": columns}).encode()}

    def _fit(self, records: list[dict]) -> list[dict]:
        """JSON values that a column of text cannot hold, written as their JSON text: in a carried column that holds
        strings (a text that is a number, whose row carries its error), or that the first chunk typed as text
        (a field null there and a number later). Such rows stopped the job, and `--resume` stopped it again
        (audit 40). A column of numbers that later holds text still stops it, in one line."""
        pa = self.pa
        texts = set()
        for c in self.names:
            if self.schema is not None:
                if pa.types.is_string(self.schema.field(c).type):
                    texts.add(c)
            elif any(isinstance(r.get(c), str) for r in records) or all(r.get(c) is None for r in records):
                texts.add(c)
        if not texts:
            return records
        return [{k: json.dumps(v, ensure_ascii=False) if k in texts and v is not None and not isinstance(v, str)
                 else v for k, v in r.items()} for r in records]

    def _check_kept(self, records: list[dict]) -> None:
        """That the schema fixed by the first chunk holds this chunk's JSON values as they are: Arrow casts a
        later 4.5 into an integer column as 4, and drops an object's keys the first chunk's did not have, without
        a word (audit 42). Such a chunk is a column that changed type: refused (ArrowInvalid), as a text is."""
        pa = self.pa
        own = pa.Table.from_pylist(records)  # the chunk's own types
        for field in self.schema:
            if field.name not in own.column_names or own.schema.field(field.name).type == field.type:
                continue
            column = own.column(field.name)
            if (lost := _dropped_keys(column.type, field.type)) is not None:
                raise pa.ArrowInvalid(f"column {field.name!r} holds {lost}, which the first chunk's {field.type} "
                                      "does not")
            column.cast(field.type, safe=True)  # ArrowInvalid where a value would change (4.5 -> 4)

    def commit(self, rows: list[Row], preds: list[Prediction]) -> int:
        records = [{**{n: r.values.get(c) for c, n in zip(self.columns, self.names, strict=True)},
                    **p.values(self.added)}
                   for r, p in zip(rows, preds, strict=True)]
        try:
            if self.input_schema is None:  # JSON's values: one column may hold several kinds
                records = self._fit(records)
            typed_here = self.schema is None  # from these records: nothing of theirs to check against it
            if typed_here:
                self.schema = self._schema(records)
            try:
                table = self.pa.Table.from_pylist(records, schema=self.schema)
            except UnicodeEncodeError:  # Arrow strings are UTF-8 without escapes: U+FFFD, as in CSV
                records = _replace_surrogates(records)
                table = self.pa.Table.from_pylist(records, schema=self.schema)
            if self.input_schema is None and not typed_here:
                self._check_kept(records)
        except (self.pa.ArrowInvalid, self.pa.ArrowTypeError, self.pa.ArrowNotImplementedError) as e:
            raise InputError(f"cannot write {self.path}: a column changed type ({e}); write .jsonl to keep "
                             "mixed types.") from None
        except OverflowError:  # a JSON integer past 64 bits (an id, a hash): Parquet's integers hold 64
            raise InputError(f"cannot write {self.path}: a number is larger than Parquet's 64-bit integers "
                             "(an id or a hash written as a number); write .jsonl or .csv, which keep it.") from None
        tmp = self.parts / f"tmp-{self.count:06d}.parquet"
        self.pq.write_table(table, tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, self._part(self.count))
        fsync_dir(self.parts)
        self.count += 1
        return self.count

    def finish(self) -> None:
        """The parts, streamed into `<output>.tmp` (durable), which `complete` renames into place. Needs about
        the output's size again while both exist; a failed write (a full disk) removes the half-written `.tmp`."""
        schema = self.schema or self._schema([])
        tmp = _assembling(self.path)
        try:
            with self.pq.ParquetWriter(tmp, schema) as writer:
                for i in range(self.count):
                    writer.write_table(self.pq.read_table(self._part(i), schema=schema))
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    def close(self) -> None:
        pass  # parts are written whole, each in its own call

    def remove(self) -> None:
        if self.parts.exists():
            shutil.rmtree(self.parts)
        _assembling(self.path).unlink(missing_ok=True)
        self.path.unlink(missing_ok=True)


def _assembling(output: Path) -> Path:
    return output.with_name(output.name + ".tmp")


def complete(output: str | Path) -> None:
    """After `finish`: a Parquet output assembled at `<output>.tmp` renamed into place, and its parts deleted
    (nothing to do for the other formats). Safe to call again after a stop in it."""
    output = Path(output)
    assembled = _assembling(output)
    if output.suffix.lower() == ".parquet" and assembled.exists():
        os.replace(assembled, output)
        fsync_dir(output.absolute().parent)
    parts = output.with_name(output.name + ".parts")
    if parts.exists():
        shutil.rmtree(parts)


def finished_problem(output: str | Path, fmt: str, position: int | list[int], rows: int) -> str:
    """What says that `output` is not as a job's last step leaves it (`finish`, then the record says finished,
    then `complete`), checked cheaply against the record: sizes, and the row count a Parquet footer or a .npy
    header holds; "" when it is. A CSV/TSV/JSONL output's rows are not counted (a quoted field spans lines)."""
    output = Path(output)
    if fmt == "npy":
        from coulisse.interfaces.jobs.embed import npy_problem

        return npy_problem(output, position, rows)
    if fmt == "parquet":
        found = next((p for p in (output, _assembling(output)) if p.is_file()), None)
        if found is None:
            return f"neither {output.name} nor {_assembling(output).name} is there"
        try:
            held = _parquet().ParquetFile(found).metadata.num_rows
        except Exception as e:  # pyarrow's errors on a file that is not Parquet have no common base
            return f"{found.name} cannot be read as Parquet ({' '.join(str(e).split())[:120]})"
        return f"{found.name} holds {held:,} rows, the record {rows:,}" if held != rows else ""
    size = output.stat().st_size if output.is_file() else None
    return f"{output.name} holds {size or 0:,} bytes, the record {position:,}" if size != position else ""


def _parquet():
    import pyarrow.parquet as pq

    return pq


def make_sink(path: str, fmt: str, columns: list[str], added: Added, schema=None):
    if path == "-":
        return StdoutSink(Encoder("jsonl", columns, added))
    if fmt == "parquet":
        return ParquetSink(path, columns, added, schema)
    if fmt == "npy":
        from coulisse.interfaces.jobs.embed import NpySink

        return NpySink(path, added)
    return FileSink(path, Encoder(fmt, columns, added))

"""The text encoding of a job's input: `--encoding` checked, and the start of an input read as UTF-8 checked.

Files are read as bytes, split on the byte 0x0a and decoded line by line (`sources.Lines`), so that a line the
encoding cannot decode is one error row that names it. A file that is not UTF-8 at all would then be a file of
error rows, exit 0 (a CSV that Excel saved in cp1252: every line with an accent). So an input read as UTF-8 by
default (no `--encoding`) whose first 64 KiB hold a byte UTF-8 cannot decode is refused when it is opened,
before any row is read, in one line that names the line and the byte and suggests `--encoding cp1252` or
iconv. Past that start, an invalid line is an error row as before: a poisoned row deep in a big file never
stops its job.

Why 64 KiB: hundreds of rows of typical reviews (a few hundred bytes each), where a French text in another
encoding shows an accent within a few lines, and a sliver of any big corpus; a fixed byte count, so whether a
file is refused does not depend on --batch-rows. A file is read there and rewound (nothing kept); a pipe has
those bytes read ahead and kept for its rows (it cannot be read twice, and the refusal must come before the
model loads and anything is written). `--encoding utf-8`, given, skips the check: a UTF-8 file with a damaged
line near its top still runs, that line an error row (a CSV's header line, which names the columns, is refused:
`sources.CsvSource`).

The other way round, a UTF-8 file read with `--encoding cp1252` decodes without an error, every "é" an "Ã©": an
input read with another encoding whose first 64 KiB are UTF-8 with a character beyond ASCII is refused too
(`check_not_utf8`), saying which character and how it would have read.
"""

from __future__ import annotations

import codecs
import itertools
import shlex
import string
from collections.abc import Iterator
from pathlib import Path

from coulisse.errors import InputError
from coulisse.interfaces.jobs.formats import STDIO, input_format

UTF8 = "utf-8"
START_BYTES = 64 * 1024  # read as UTF-8 by default, an input is refused when these first bytes are not UTF-8


class InputEncodingError(InputError):
    """The input is not in the encoding it is read with: read as UTF-8 by default, its start is not UTF-8."""


def check_encoding(name: str | None, said: str | None = None) -> str | None:
    """`--encoding` as its codec's canonical name; None (not given: UTF-8, the start checked) stays None.
    utf8, UTF-8 and utf-8-sig are all "utf-8": a byte-order mark is skipped either way. Lines are split on the
    byte 0x0a and decoded alone, so a codec must write ASCII as ASCII (cp1252, latin-1, shift_jis... do;
    utf-16 and utf-32 do not). `said`: how the message names the value (default `--encoding NAME`)."""
    if name is None:
        return None
    said = said or f"--encoding {name}"
    try:
        canonical = codecs.lookup(name).name
    except LookupError:
        raise InputError(f"{said}: Python knows no such encoding; pass a codec name such as utf-8, cp1252 (what "
                         "Excel saves a CSV in on a Western European Windows) or latin-1.") from None
    if canonical in (UTF8, "utf-8-sig"):
        return UTF8
    probe = string.printable  # digits, letters, punctuation, space, \t \n \r
    try:
        ascii_as_ascii = probe.encode(canonical) == probe.encode("ascii") and \
            probe.encode("ascii").decode(canonical) == probe
    except LookupError:  # base64, rot13: codecs from bytes to bytes, or str to str
        raise InputError(f"{said}: {canonical} is not a text encoding; pass the encoding the file's text is "
                         "written in, such as utf-8, cp1252 or latin-1.") from None
    except UnicodeError:
        ascii_as_ascii = False
    if not ascii_as_ascii:
        raise InputError(f"{said}: jobs read files line by line, which needs an encoding that writes ASCII as "
                         f"ASCII (utf-8, cp1252, latin-1, shift_jis...), and {canonical} does not; convert the "
                         f"file to UTF-8 first: iconv -f {name} -t utf-8 FILE > FILE-utf8.")
    return canonical


def check_start(data: bytes, encoding: str | None, name: str, whole: bool = False) -> None:
    """Refuse an input (InputEncodingError) whose first bytes, `data` (START_BYTES or fewer; `whole`: the whole
    input), say it is not in the encoding it is read with. Without an encoding (UTF-8 by default), they must be
    UTF-8: a character cut at the end of `data` is not an error. With another --encoding, a UTF-8 byte-order mark
    is refused: such a file is UTF-8, and its first column's name would start with the mark as other letters."""
    bom = data.startswith(codecs.BOM_UTF8)
    if encoding == UTF8:
        return
    check_layout(data, name)
    if encoding is not None:
        if bom:
            raise InputEncodingError(f"{named(name)} starts with a UTF-8 byte-order mark: it is UTF-8, not "
                                     f"{encoding}; leave --encoding out (or pass --encoding utf-8).")
        check_not_utf8(data, encoding, name, whole)
        return
    body = data[len(codecs.BOM_UTF8):] if bom else data
    try:
        codecs.getincrementaldecoder(UTF8)().decode(body, final=whole)
    except UnicodeDecodeError as e:
        line_start = body.rfind(b"\n", 0, e.start) + 1  # byte numbers within line 1 do not count the mark
        raise not_utf8(name, body.count(b"\n", 0, e.start) + 1, body[e.start], e.start - line_start) from None


CR_TO_LF = "tr '\\r' '\\n'"  # the filter that turns an old Mac's line ends into line feeds


def check_layout(data: bytes, name: str) -> None:
    """Two exports that no line reader here can read, refused in words before any row: UTF-16 with its byte-order
    mark (Excel's "Unicode Text"; as cp1252, its rows would be letters between NUL bytes), and lines ended by a
    carriage return alone (an old Mac, Excel's "CSV (Macintosh)"; read by line feeds, the file is one row)."""
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raise InputEncodingError(f"{named(name)} is UTF-16 (its first bytes are {data[:2].hex(' ').upper()}: Excel's "
                                 "\"Unicode Text\" export, for one); coulisse reads UTF-8 and the encodings that write "
                                 f"ASCII as ASCII: {_converted(name, 'iconv -f utf-16 -t utf-8', 'utf8')}.")
    if b"\r" in data.rstrip(b"\r") and b"\n" not in data:
        raise InputEncodingError(f"{named(name)}'s lines end with a carriage return alone (\\r: an old Mac, or "
                                 "Excel's \"CSV (Macintosh)\"), which coulisse does not read as line ends: "
                                 f"{_converted(name, CR_TO_LF, 'lf', reads_stdin_only=True)}.")


def _converted(name: str, command: str, tag: str, reads_stdin_only: bool = False) -> str:
    """How to convert the input with `command` (which writes to stdout) into `<stem>-<tag><suffix>`: the file given
    to it (redirected for a command that reads only stdin, as `tr`), or for stdin, the pipe."""
    if name == STDIO:
        return f"pipe it through {command}"
    path = Path(name)
    converted = str(path.with_name(f"{path.stem}-{tag}{path.suffix}"))
    source = f"< {shlex.quote(name)}" if reads_stdin_only else shlex.quote(name)
    return f"convert it: {command} {source} > {shlex.quote(converted)}"


def check_not_utf8(data: bytes, encoding: str, name: str, whole: bool) -> None:
    """Refuse an input read with another `encoding` whose first bytes are UTF-8 with letters beyond ASCII: read
    as cp1252, "é" (bytes c3 a9) would be "Ã©" in every row, and nothing would say so. Text in cp1252, latin-1 or
    shift_jis with an accent or a kana is almost never valid UTF-8 (an "é" alone, byte e9, is not), so the check
    refuses UTF-8 files, not files in the encoding named. Pure ASCII reads the same either way and runs."""
    first = next((i for i, byte in enumerate(data) if byte >= 0x80), None)
    if first is None:
        return
    try:
        codecs.getincrementaldecoder(UTF8)().decode(data, final=whole)
    except UnicodeDecodeError:
        return
    line = data.count(b"\n", 0, first) + 1
    size = next((n for n in (2, 3, 4) if data[first:first + n].decode(UTF8, errors="ignore")), None)
    if size is None:  # the start ends inside that character: too little to go on
        return
    char = data[first:first + size]
    misread = char.decode(encoding, errors="replace")
    raise InputEncodingError(
        f"{named(name)} is UTF-8, not {encoding}: line {line} holds {char.decode(UTF8)!r} (bytes "
        f"{char.hex(' ')}), which {encoding} would read as {misread!r}, and so on in every row. Leave --encoding "
        f"out (or pass --encoding utf-8); if the file really is {encoding}, convert it first: "
        f"iconv -f {encoding} -t utf-8.")


def checked_start(stream, encoding: str | None, name: str) -> Iterator[bytes]:
    """The lines of `stream` (a file or stdin opened in binary), its start checked first (`check_start`) before
    any row is read. A seekable stream (a file, or stdin redirected from one) is read there and rewound: nothing
    is kept. A pipe has its first START_BYTES (and the rest of a line) read ahead and kept for the rows, a bounded
    look-ahead: it cannot be read twice, and a refusal must come before anything is written."""
    limit = len(codecs.BOM_UTF8) if encoding == UTF8 else START_BYTES
    if getattr(stream, "seekable", lambda: False)():
        where = stream.tell()
        data = stream.read(limit)
        stream.seek(where)
        check_start(data, encoding, name, whole=len(data) < limit)
        return iter(stream)
    stream = iter(stream)
    head: list[bytes] = []
    size = 0
    for line in stream:
        head.append(line)
        size += len(line)
        if size >= limit:
            break
    check_start(b"".join(head)[:limit], encoding, name, whole=size < limit)
    return itertools.chain(head, stream)


def check_file_starts(files: list[str], encoding: str | None) -> None:
    """The start of each text file among `files`, checked as the readers check it, before anything slow: the
    Hub asked for a default model, a model loaded, Ray started. stdin, which cannot be read twice, and Parquet
    are left to the readers."""
    encoding = check_encoding(encoding)
    for path in files:
        if path == STDIO or input_format(path) == "parquet":
            continue
        try:
            with open(path, "rb") as f:
                check_start(f.read(START_BYTES), encoding, path, whole=f.read(1) == b"")
        except OSError as e:
            raise InputError(f"cannot read {path!r}: {e.strerror}.") from None


def named(name: str) -> str:
    return "stdin" if name == STDIO else name


def not_utf8(name: str, line: int, byte: int, at: int) -> InputEncodingError:
    """The one line that refuses an input whose start is not UTF-8: where (`at`: the byte's index in its line),
    the byte, and the ways out."""
    try:
        seen = f" ({bytes([byte]).decode('cp1252')!r} in cp1252)"
    except UnicodeDecodeError:  # 0x81, 0x8d, 0x8f, 0x90 and 0x9d are not cp1252
        seen = ""
    convert = _converted(name, "iconv -f cp1252 -t utf-8", "utf8")
    return InputEncodingError(
        f"{named(name)} is not UTF-8: line {line} holds byte 0x{byte:02x}{seen} at byte {at + 1} of the line. "
        "A CSV saved by Excel on Windows is most often cp1252: pass --encoding cp1252 (or the file's own "
        f"encoding), or {convert}. To read it as UTF-8 all the same, each such line an error row, pass "
        "--encoding utf-8.")

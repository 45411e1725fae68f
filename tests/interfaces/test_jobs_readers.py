"""The readers' edges: a header line the encoding cannot decode is refused (it names the columns, so it cannot be an
error row, nor be taken for the first record's); a decoding error belongs to the record whose lines hold it; an
input refused while the Reader opens it leaves no file open (audit 46, F4 and F5). Read without a model."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from coulisse.errors import InputError
from coulisse.interfaces.cli import cli
from coulisse.interfaces.jobs import command
from coulisse.interfaces.jobs.encodings import InputEncodingError
from coulisse.interfaces.jobs.readers import Reader
from coulisse.interfaces.jobs.sources import Lines


@pytest.mark.parametrize(("encoding", "byte", "said"), [("utf-8", 0xFF, "invalid UTF-8"),
                                                        ("cp1252", 0x81, "not valid cp1252")])
def test_a_header_the_encoding_cannot_decode_is_refused_naming_its_line_and_byte(tmp_path, encoding, byte, said):
    """With --encoding given, no start check runs: the header's bad byte is said by the reader, not carried into
    the first record (which is valid) as its error."""
    source = tmp_path / "in.csv"
    source.write_bytes(b"id,te" + bytes([byte]) + b"xt\n1,bien\n")
    with pytest.raises(InputEncodingError) as refused:
        Reader(str(source), encoding=encoding)
    message = str(refused.value)
    assert "\n" not in message and "header" in message
    assert f"(line 1) is {said} (byte 0x{byte:02x} at byte 6 of the line)" in message


def test_a_header_spread_over_lines_is_refused_at_the_line_that_holds_the_byte(tmp_path):
    source = tmp_path / "in.csv"
    source.write_bytes(b'id,"te\nxt\xff"\n1,bien\n')  # a quoted name over lines 1-2
    with pytest.raises(InputEncodingError, match=r"\(line 2\) is invalid UTF-8 \(byte 0xff at byte 3 "):
        Reader(str(source), encoding="utf-8")


def test_the_rows_after_a_sound_header_keep_their_own_errors(tmp_path):
    """The first record's bad byte is its own error row, naming its line; the next record reads."""
    source = tmp_path / "in.csv"
    source.write_bytes(b"id,text\n1,caf\xe9\n2,bien\n")
    with Reader(str(source), encoding="utf-8") as reader:
        rows = list(reader.rows())
    assert [r.text for r in rows] == [None, "bien"]
    assert rows[0].error.startswith("line 2: invalid UTF-8 (byte 0xe9 at byte 6 of the line)")
    assert rows[1].error is None


def test_take_bad_answers_for_its_lines_only():
    """A decoding error on a line before `first` (no record's) is not given to the record at first..last."""
    lines = Lines([b"ok\n", b"caf\xe9\n", b"ok\n", b"caf\xe9\n"])
    assert len(list(lines)) == 4
    assert lines.take_bad(3, 3) is None
    assert lines.take_bad(4, 4).startswith("line 4: invalid UTF-8")
    assert lines.bad == {}  # every line up to `last` is forgotten: memory stays bounded


def test_the_cli_refuses_a_bad_header_before_the_model_loads_and_writes_nothing(tmp_path, monkeypatch):
    def load_pipeline(*args, **kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(command, "load_pipeline", load_pipeline)
    source, output = tmp_path / "in.csv", tmp_path / "out.csv"
    source.write_bytes(b"\xfftext\nbien\n")
    result = CliRunner(env={k: None for k in os.environ if k.startswith("COULISSE_")}).invoke(
        cli, ["classify", "-m", str(tmp_path), "-i", str(source), "-o", str(output), "--encoding", "utf-8"])
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: InputEncodingError: ") and "(line 1)" in lines[0]
    assert "0xff" in lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.csv"]


def open_descriptors(path: Path) -> list[int]:
    """This process's file descriptors open on `path`."""
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:  # the descriptor listdir itself used, closed since
            continue
        if target == str(path.resolve()):
            found.append(int(fd))
    return found


def parquet(path: Path, names: list[str]) -> None:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    pq.write_table(pa.table([pa.array(["a"]) for _ in names], names=names), path)


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts descriptors through /proc")
@pytest.mark.parametrize(("name", "content", "options"), [
    ("dup.csv", b"text,text\na,b\n", {}),  # the header names a column twice
    ("quote.csv", b'"text\n', {}),  # the header is not valid CSV
    ("byte.csv", b"te\xffxt\na\n", {"encoding": "utf-8"}),  # the header is not UTF-8
    ("start.csv", b"text\ncaf\xe9\n", {}),  # the start is not UTF-8
    ("two.csv", b"title,body\na,b\n", {}),  # two string columns, none named text
    ("column.jsonl", b'{"text": "a"}\n', {"column": "body"}),  # no such column
    ("dup.parquet", ["text", "text"], {}),
    ("two.parquet", ["title", "body"], {}),
])
def test_an_input_refused_on_opening_leaves_no_file_open(tmp_path, name, content, options):
    """The job's `with Reader(...)` never gets a Reader whose __init__ raised, so __exit__ cannot close it."""
    path = tmp_path / name
    if name.endswith(".parquet"):
        parquet(path, content)
    else:
        path.write_bytes(content)
    with pytest.raises(InputError) as refused:
        Reader(str(path), **options)
    # While the refusal is held (a caller logging it, Ray keeping it), its traceback holds the Reader: the file
    # must be closed by then, not when the garbage collector gets to it (with a ResourceWarning).
    assert refused.value.__traceback__ is not None
    assert open_descriptors(path) == []


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts descriptors through /proc")
def test_a_parquet_reader_closes_its_file(tmp_path):
    path = tmp_path / "in.parquet"
    parquet(path, ["text"])
    with Reader(str(path)) as reader:
        assert [r.text for r in reader.rows()] == ["a"]
    assert open_descriptors(path) == []

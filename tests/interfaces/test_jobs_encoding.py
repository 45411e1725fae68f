"""The input's encoding: `--encoding` decodes files and stdin; a file read as UTF-8 by default whose start is not
UTF-8 is refused in one line before anything is written, while invalid bytes past its first 64 KiB stay one
error row; evaluate's report counts agree with its predictions file.

The texts hold é, ’, œ, € and …: the last four are cp1252 bytes (0x92, 0x9c, 0x80, 0x85) that latin-1 reads as
control characters, so a job that decoded cp1252 as latin-1, or ignored --encoding, would not give the UTF-8
file's predictions.
"""

from __future__ import annotations

import csv
import io
import json
import os

import pytest
from click.testing import CliRunner

from coulisse.interfaces.cli import cli
from coulisse.interfaces.jobs.encodings import InputEncodingError
from coulisse.interfaces.jobs.evaluate import LabelMap
from coulisse.interfaces.jobs.readers import Reader
from coulisse.interfaces.jobs.runner import JobInterrupted, JobOptions, classify_file

TEXTS = ["Très bon film, un vrai chef-d’œuvre.", "Quel ennui… j’ai dormi avant la fin.",
         "12 € la place pour ça ? Non merci.", "Les acteurs sont géniaux, l’histoire émouvante.", "Bof.",
         "Une œuvre ratée, à éviter.", "Magnifique ! Je le reverrai.", "Un scénario creux, des dialogues plats."]
LABELS = ["POSITIVE", "NEGATIVE", "NEGATIVE", "POSITIVE", "NEGATIVE", "NEGATIVE", "POSITIVE", "NEGATIVE"]
START = 64 * 1024  # the documented start of a file that must be UTF-8 when no --encoding is given (docs/jobs.md)


def invoke(*args, env: dict | None = None, stdin: bytes | None = None):
    clean = {k: None for k in os.environ if k.startswith("COULISSE_")}
    return CliRunner(env={**clean, **(env or {})}).invoke(cli, list(args), input=stdin)


def write(path, fmt: str, encoding: str, texts: list[str] = TEXTS, labels: list[str] | None = None) -> bytes:
    """The texts as `fmt` in `encoding` (an `id` and a `label` column where the format has columns)."""
    labels = labels or LABELS
    if fmt in ("csv", "tsv"):
        out = io.StringIO(newline="")
        w = csv.writer(out, delimiter="," if fmt == "csv" else "\t", lineterminator="\n")
        w.writerow(["id", "text", "label"])
        w.writerows([i, t, label] for i, (t, label) in enumerate(zip(texts, labels, strict=True)))
        text = out.getvalue()
    elif fmt == "jsonl":
        text = "".join(json.dumps({"id": i, "text": t, "label": label}, ensure_ascii=False) + "\n"
                       for i, (t, label) in enumerate(zip(texts, labels, strict=True)))
    else:
        text = "".join(t + "\n" for t in texts)
    data = text.encode(encoding)
    path.write_bytes(data)
    return data


def rows_of(path) -> list[dict]:
    if path.suffix == ".csv":
        with open(path, encoding="utf-8", newline="") as f:
            return list(csv.DictReader(f))
    # split on "\n" alone: splitlines() would also cut at U+0085, which latin-1 makes of cp1252's "…"
    return [json.loads(line) for line in path.read_text(encoding="utf-8").split("\n") if line]


def test_the_texts_tell_cp1252_from_latin1():
    joined = "".join(TEXTS)
    assert joined.encode("cp1252").decode("cp1252") == joined
    with pytest.raises(UnicodeEncodeError):
        joined.encode("latin-1")
    assert joined.encode("cp1252").decode("latin-1") != joined


@pytest.mark.parametrize("fmt", ["csv", "tsv", "jsonl", "txt"])
def test_a_cp1252_file_read_with_its_encoding_gives_the_utf8_files_output(tf_camembert_dir, tmp_path, fmt):
    model, out = str(tf_camembert_dir), "csv" if fmt == "csv" else "jsonl"
    write(tmp_path / f"utf8.{fmt}", fmt, "utf-8")
    write(tmp_path / f"cp1252.{fmt}", fmt, "cp1252")
    reference = invoke("classify", "-m", model, "-i", str(tmp_path / f"utf8.{fmt}"), "-o", str(tmp_path / f"a.{out}"))
    assert reference.exit_code == 0, reference.output
    result = invoke("classify", "-m", model, "-i", str(tmp_path / f"cp1252.{fmt}"), "-o", str(tmp_path / f"b.{out}"),
                    "--encoding", "cp1252")
    assert result.exit_code == 0, result.output
    assert (tmp_path / f"b.{out}").read_bytes() == (tmp_path / f"a.{out}").read_bytes()  # UTF-8 out, same rows
    rows = rows_of(tmp_path / f"b.{out}")
    assert [r["text"] for r in rows] == TEXTS and all(r["error"] in (None, "") for r in rows)
    # Read as latin-1, the same bytes are other texts: what --encoding cp1252 is for.
    result = invoke("classify", "-m", model, "-i", str(tmp_path / f"cp1252.{fmt}"), "-o", str(tmp_path / f"c.{out}"),
                    "--encoding", "latin-1")
    assert result.exit_code == 0, result.output
    assert [r["text"] for r in rows_of(tmp_path / f"c.{out}")] != TEXTS


def test_stdin_is_decoded_with_the_encoding_too(tf_camembert_dir, tmp_path):
    model = str(tf_camembert_dir)
    utf8 = invoke("classify", "-m", model, "-i", "-", "--quiet", stdin="\n".join(TEXTS).encode("utf-8"))
    assert utf8.exit_code == 0, utf8.output
    cp1252 = invoke("classify", "-m", model, "-i", "-", "--quiet", "--encoding", "cp1252",
                    stdin="\n".join(TEXTS).encode("cp1252"))
    assert cp1252.exit_code == 0, cp1252.output
    assert cp1252.stdout == utf8.stdout
    assert [json.loads(line)["text"] for line in cp1252.stdout.split("\n") if line] == TEXTS


@pytest.mark.parametrize("command", ["classify", "embed", "evaluate"])
def test_a_file_that_is_not_utf8_is_refused_in_one_line_and_nothing_is_written(tf_camembert_dir, tmp_path, command):
    source = tmp_path / "avis.csv"
    data = write(source, "csv", "cp1252")
    line = data.split(b"\n")[1]  # the header is ASCII: the first text's line is the first bad one
    at = next(i for i, b in enumerate(line) if b >= 0x80)
    before = sorted(p.name for p in tmp_path.iterdir())
    output = ["-o", str(tmp_path / "report"), "--no-plots"] if command == "evaluate" else \
        ["-o", str(tmp_path / "out.jsonl")]
    result = invoke(command, "-m", str(tf_camembert_dir), "-i", str(source), *output)
    assert result.exit_code == 1, result.output
    assert result.output.count("\n") == 1 and "Traceback" not in result.output, result.output
    message = result.output
    assert message.startswith(f"Error: InputEncodingError: {source} is not UTF-8: line 2 holds byte 0x{line[at]:02x}")
    assert f"at byte {at + 1} of the line" in message
    assert "--encoding cp1252" in message and "iconv -f cp1252 -t utf-8" in message
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no output, record, lock or report folder


@pytest.mark.parametrize("fmt", ["tsv", "txt"])
def test_excels_unicode_text_and_old_mac_line_ends_are_refused_in_words(tf_camembert_dir, tmp_path, fmt):
    """UTF-16 with its mark was told "pass --encoding cp1252", which then classified letters between NUL bytes;
    lines ended by \\r alone made one row of a .txt (and Python's "universal-newline mode" hint of a .csv)."""
    unicode_text = tmp_path / f"unicode.{fmt}"
    unicode_text.write_bytes("text\tnote\nbon film\t5\n".encode("utf-16"))  # Python writes the LE mark first
    for extra in ([], ["--encoding", "cp1252"]):
        result = invoke("classify", "-m", str(tf_camembert_dir), "-i", str(unicode_text), *extra)
        assert result.exit_code == 1 and result.output.count("\n") == 1, result.output
        assert f"{unicode_text} is UTF-16 (its first bytes are FF FE" in result.output
        assert "iconv -f utf-16 -t utf-8" in result.output
    old_mac = tmp_path / f"mac.{fmt}"
    old_mac.write_bytes(b"text\tnote\rbon film\t5\rnul\t1\r")
    result = invoke("classify", "-m", str(tf_camembert_dir), "-i", str(old_mac))
    assert result.exit_code == 1 and result.output.count("\n") == 1, result.output
    assert "lines end with a carriage return alone" in result.output and "tr '\\r' '\\n'" in result.output
    piped = invoke("classify", "-m", str(tf_camembert_dir), "-i", "-", stdin=b"bon film\rnul\r")
    assert piped.exit_code == 1 and "stdin's lines end with a carriage return alone" in piped.output
    crlf = tmp_path / f"crlf.{fmt}"  # Windows' \r\n stays read as it was
    crlf.write_bytes(b"text\tnote\r\nbon film\t5\r\n")
    assert invoke("classify", "-m", str(tf_camembert_dir), "-i", str(crlf)).exit_code == 0


def test_stdin_that_is_not_utf8_is_refused_in_one_line(tf_camembert_dir):
    result = invoke("classify", "-m", str(tf_camembert_dir), "-i", "-", stdin="\n".join(TEXTS).encode("cp1252"))
    assert result.exit_code == 1 and result.output.count("\n") == 1, result.output
    assert "stdin is not UTF-8: line 1 holds byte 0xe8" in result.output and "--encoding cp1252" in result.output
    assert result.stdout == ""  # not one row written


def test_a_pipe_is_checked_from_the_lines_it_reads_ahead():
    """A pipe cannot be rewound (the CLI tests' stdin can): its start is read ahead, checked, then read as rows."""
    lines = [t.encode("cp1252") + b"\n" for t in TEXTS]
    with pytest.raises(InputEncodingError, match="stdin is not UTF-8: line 1 holds byte 0xe8"):
        Reader("-", stdin=iter(lines))
    with Reader("-", stdin=iter(lines), encoding="cp1252") as reader:
        assert [r.text for r in reader.rows()] == TEXTS


def test_encoding_utf8_given_keeps_such_lines_as_error_rows(tf_camembert_dir, tmp_path):
    source, output = tmp_path / "avis.csv", tmp_path / "out.csv"
    write(source, "csv", "cp1252")
    result = invoke("classify", "-m", str(tf_camembert_dir), "-i", str(source), "-o", str(output),
                    "--encoding", "utf-8")
    assert result.exit_code == 0, result.output
    rows = rows_of(output)
    ascii_only = [t.isascii() for t in TEXTS]
    assert [r["error"] == "" for r in rows] == ascii_only
    assert all("invalid UTF-8" in r["error"] for r, ok in zip(rows, ascii_only, strict=True) if not ok)


def lines_up_to(size: int) -> list[bytes]:
    """Valid UTF-8 text lines (accents included, no comma: one CSV field each), `size` bytes or a line more."""
    lines, total = [], 0
    while total < size:
        line = f"{TEXTS[len(lines) % len(TEXTS)].replace(',', '')} {len(lines)}\n".encode()
        lines.append(line)
        total += len(line)
    return lines


@pytest.mark.parametrize("fmt", ["txt", "csv"])
def test_invalid_bytes_past_the_start_are_one_error_row(tmp_path, fmt):
    """Without --encoding, the first 64 KiB must be UTF-8; invalid bytes after them are an error row, the rows
    around it read. Read without a model: the readers' rows."""
    header = [b"text\n"] if fmt == "csv" else []
    bad = "Un chef-d’œuvre à voir.\n".encode("cp1252")
    at = bad.index("’".encode("cp1252")) + 1
    inside = header + lines_up_to(START - len(header[0] if header else b"") - len(bad))[:-1]
    assert sum(map(len, inside)) + at <= START  # the bad byte is among the first START bytes
    source = tmp_path / f"inside.{fmt}"
    source.write_bytes(b"".join([*inside, bad, *inside[len(header):]]))
    with pytest.raises(InputEncodingError, match=f"line {len(inside) + 1} holds byte 0x92 .* at byte {at} "):
        Reader(str(source))
    good = lines_up_to(START - len(header[0] if header else b""))
    past = header + good
    assert sum(map(len, past)) >= START  # the bad line begins after them
    source = tmp_path / f"past.{fmt}"
    source.write_bytes(b"".join([*past, bad, *good]))
    with Reader(str(source)) as reader:
        rows = list(reader.rows())
    assert len(rows) == 2 * len(good) + 1
    errors = [(i, r.error) for i, r in enumerate(rows) if r.error is not None]
    line = len(past) + 1
    assert errors == [(len(good), f"line {line}: invalid UTF-8 (byte 0x92 at byte {at} of the line); re-encode "
                                  "the file as UTF-8")]
    assert rows[len(good) + 1].text == good[0].decode().rstrip("\n")


def test_a_late_poison_row_does_not_stop_the_job(tf_camembert_dir, tmp_path):
    """The same through the CLI: exit 0, one error row, the others classified."""
    source, output = tmp_path / "big.txt", tmp_path / "out.jsonl"
    good = lines_up_to(START + 1)
    source.write_bytes(b"".join([*good, b"caf\xe9 cr\xe8me\n", *good[:10]]))
    result = invoke("classify", "-m", str(tf_camembert_dir), "-i", str(source), "-o", str(output), "-b", "256")
    assert result.exit_code == 0, result.output
    rows = rows_of(output)
    assert len(rows) == len(good) + 11
    assert [i for i, r in enumerate(rows) if r["error"]] == [len(good)]
    assert rows[len(good)]["error"].startswith(f"line {len(good) + 1}: invalid UTF-8 (byte 0xe9")
    assert f"{len(good) + 10:,} rows classified, 1 errored" in result.stderr


def test_a_utf8_byte_order_mark(tf_camembert_dir, tmp_path):
    """Skipped as today, with no --encoding or a UTF-8 one; refused with another encoding (the file is UTF-8)."""
    model, source = str(tf_camembert_dir), tmp_path / "bom.csv"
    write(source, "csv", "utf-8-sig")
    outputs = []
    for i, extra in enumerate([[], ["--encoding", "utf-8-sig"], ["--encoding", "UTF8"]]):
        result = invoke("classify", "-m", model, "-i", str(source), "-o", str(tmp_path / f"{i}.csv"), *extra)
        assert result.exit_code == 0, result.output
        outputs.append((tmp_path / f"{i}.csv").read_bytes())
    assert outputs[0] == outputs[1] == outputs[2]
    assert [r["text"] for r in rows_of(tmp_path / "0.csv")] == TEXTS
    assert list(rows_of(tmp_path / "0.csv")[0])[0] == "id"
    result = invoke("classify", "-m", model, "-i", str(source), "-o", str(tmp_path / "x.csv"), "--encoding", "cp1252")
    assert result.exit_code == 1 and result.output.count("\n") == 1, result.output
    assert "starts with a UTF-8 byte-order mark: it is UTF-8, not cp1252" in result.output


@pytest.mark.parametrize("encoding", ["cp1252", "latin-1"])
@pytest.mark.parametrize("fmt", ["csv", "txt"])
def test_a_utf8_file_read_with_another_encoding_is_refused_in_one_line(tf_camembert_dir, tmp_path, encoding, fmt):
    """Read as cp1252, UTF-8's "é" (c3 a9) decodes without an error as "Ã©": every row would be garbled, exit 0."""
    source = tmp_path / f"avis.{fmt}"
    write(source, fmt, "utf-8")
    before = sorted(p.name for p in tmp_path.iterdir())
    result = invoke("classify", "-m", str(tf_camembert_dir), "-i", str(source), "-o", str(tmp_path / "out.csv"),
                    "--encoding", encoding)
    assert result.exit_code == 1 and result.output.count("\n") == 1, result.output
    canonical = "cp1252" if encoding == "cp1252" else "iso8859-1"
    line = 2 if fmt == "csv" else 1  # the CSV's header is ASCII
    assert result.output.startswith(f"Error: InputEncodingError: {source} is UTF-8, not {canonical}: line {line} "
                                    "holds 'è' (bytes c3 a8), which"), result.output
    assert "'Ã¨'" in result.output and "leave --encoding out" in result.output.lower()
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_a_pipe_read_with_another_encoding_is_checked_for_utf8_too():
    utf8 = [t.encode("utf-8") + b"\n" for t in TEXTS]
    with pytest.raises(InputEncodingError, match="stdin is UTF-8, not cp1252: line 1 holds 'è'"):
        Reader("-", stdin=iter(utf8), encoding="cp1252")
    ascii_only = [b"Bof.\n", b"Pas mal du tout.\n"]  # reads the same in both: runs
    with Reader("-", stdin=iter(ascii_only), encoding="cp1252") as reader:
        assert [r.text for r in reader.rows()] == ["Bof.", "Pas mal du tout."]


@pytest.mark.parametrize(("value", "words"), [
    ("klingon", "--encoding klingon: Python knows no such encoding"),
    ("utf-16", "--encoding utf-16: jobs read files line by line, which needs an encoding that writes ASCII as ASCII"),
    ("rot13", "--encoding rot13: rot-13 is not a text encoding"),
])
def test_an_encoding_that_cannot_be_used_is_refused_in_one_line(tmp_path, value, words):
    source = tmp_path / "in.csv"
    write(source, "csv", "utf-8")
    for command, output in (("classify", "out.csv"), ("evaluate", "report")):
        result = invoke(command, "-m", "unused", "-i", str(source), "-o", str(tmp_path / output), "--encoding", value)
        assert result.exit_code == 1 and result.output.count("\n") == 1, result.output
        assert f"Error: InputError: {words}" in result.output
    result = invoke("classify", "-m", "unused", "-i", str(source), env={"COULISSE_ENCODING": value})
    assert result.exit_code == 1 and f"COULISSE_ENCODING={value}:" in result.output, result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.csv"]


def test_encoding_where_it_does_not_apply_is_a_usage_error(tmp_path):
    result = invoke("classify", "--encoding", "cp1252", "Bof.")
    assert result.exit_code == 2 and "--encoding applies to --input jobs and --ray jobs" in result.output
    result = invoke("classify", "-i", str(tmp_path / "in.parquet"), "--encoding", "cp1252")
    assert result.exit_code == 2 and "Parquet, whose strings are UTF-8" in result.output
    result = invoke("evaluate", "-i", str(tmp_path / "in.parquet"), "--encoding", "cp1252", "--no-plots")
    assert result.exit_code == 2 and "Parquet, whose strings are UTF-8" in result.output


def test_resume_reads_the_encoding_back_and_refuses_another(tf_camembert_dir, tmp_path):
    import coulisse

    pipe = coulisse.pipeline("sentiment-analysis", model=str(tf_camembert_dir))
    source, reference, output = tmp_path / "in.csv", tmp_path / "ref.csv", tmp_path / "out.csv"
    write(source, "csv", "cp1252", TEXTS * 4, LABELS * 4)
    model = str(tf_camembert_dir)
    job = JobOptions(input=str(source), output=str(reference), batch_rows=8, model=model, encoding="cp1252")
    classify_file(job, lambda: pipe)

    def stop(rows, preds):
        raise KeyboardInterrupt

    with pytest.raises(JobInterrupted):
        classify_file(JobOptions(**{**job.__dict__, "output": str(output)}), lambda: pipe, on_chunk=stop)
    refused = invoke("classify", "-o", str(output), "--resume", "--encoding", "latin-1")
    assert refused.exit_code == 1 and refused.output.count("\n") == 1, refused.output
    assert "--encoding iso8859-1" in refused.output and "the first run had --encoding cp1252" in refused.output
    resumed = invoke("classify", "-o", str(output), "--resume", "--quiet")  # the encoding from the record
    assert resumed.exit_code == 0, resumed.output
    assert output.read_bytes() == reference.read_bytes()
    assert [r["text"] for r in rows_of(output)] == TEXTS * 4


def test_evaluate_reads_cp1252_as_the_utf8_file(tf_camembert_dir, tmp_path):
    model = str(tf_camembert_dir)
    write(tmp_path / "utf8.csv", "csv", "utf-8")
    write(tmp_path / "cp1252.csv", "csv", "cp1252")
    a = invoke("evaluate", "-m", model, "-i", str(tmp_path / "utf8.csv"), "-o", str(tmp_path / "a"), "--no-plots")
    b = invoke("evaluate", "-m", model, "-i", str(tmp_path / "cp1252.csv"), "-o", str(tmp_path / "b"), "--no-plots",
               "--encoding", "cp1252")
    assert a.exit_code == 0 and b.exit_code == 0, (a.output, b.output)
    assert b.stdout.split(" -> ")[0] == a.stdout.split(" -> ")[0]  # the same scores, on every row
    assert f"on {len(TEXTS)} rows" in b.stdout
    assert (tmp_path / "b" / "predictions.csv").read_bytes() == (tmp_path / "a" / "predictions.csv").read_bytes()
    assert "- Input read as cp1252" in (tmp_path / "b" / "report.md").read_text(encoding="utf-8")


def test_evaluate_counts_agree_with_the_predictions(tf_camembert_dir, tmp_path):
    """Rows whose text could not be classified (cp1252 lines read as UTF-8, an empty text) and a missing label:
    the report and the result line say the metrics cover N of M rows, and every count in report.md is the
    predictions file's. The old report said "classified: 10 (every row)" beside 9 rows not classified."""
    source, report = tmp_path / "in.csv", tmp_path / "report"
    texts = [*TEXTS, "", "Pas mal du tout.", "Correct sans plus."]
    labels = [*LABELS, "POSITIVE", "", "NEGATIVE"]
    write(source, "csv", "cp1252", texts, labels)
    result = invoke("evaluate", "-m", str(tf_camembert_dir), "-i", str(source), "-o", str(report), "--no-plots",
                    "--encoding", "utf-8")
    assert result.exit_code == 0, result.output
    rows = rows_of(report / "predictions.csv")
    label_map = LabelMap({0: "NEGATIVE", 1: "POSITIVE"})
    errored = sum(bool(r["error"]) for r in rows)
    classified = len(rows) - errored
    unlabelled = sum(not r["error"] and not r["label"] for r in rows)
    evaluated = sum(not r["error"] and label_map(r["label"]) >= 0 for r in rows)
    assert len(rows) == len(texts) and errored > 1 and unlabelled == 1 and 0 < evaluated < classified
    text = (report / "report.md").read_text(encoding="utf-8")
    assert (f"- Rows read: {len(rows)}; selected: {len(rows)} (every row); classified: {classified}; evaluated: "
            f"**{evaluated}**") in text
    assert f"- Rows whose text could not be classified: {errored} " in text
    assert f"- Rows without a label: {unlabelled}\n" in text
    why = f"({errored} could not be classified, {unlabelled} without a label)"
    assert f"These metrics cover {evaluated} of {len(rows)} rows {why}." in text
    assert f"on {evaluated} of {len(rows)} rows {why} -> " in result.stdout
    kept = [r for r in rows if not r["error"] and label_map(r["label"]) >= 0]
    accuracy = sum(r["label"] == r["predicted_label"] for r in kept) / len(kept)
    assert result.stdout.startswith(f"accuracy {accuracy:.4f}")


def test_a_byte_the_given_encoding_lacks_is_an_error_row_that_names_it(tmp_path):
    """cp1252 has no character at 0x81: with --encoding cp1252, that line is an error row (no start check: the
    encoding was given), the others read."""
    source = tmp_path / "in.txt"
    lines = [t.encode("cp1252") + b"\n" for t in TEXTS[:3]]
    source.write_bytes(lines[0] + b"caf\x81\n" + lines[1] + lines[2])
    with Reader(str(source), encoding="cp1252") as reader:
        rows = list(reader.rows())
    assert [r.text for r in rows] == [TEXTS[0], None, TEXTS[1], TEXTS[2]]
    assert rows[1].error == "line 2: not valid cp1252 (byte 0x81 at byte 4 of the line); pass the file's own --encoding"

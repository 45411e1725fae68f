"""Corpus jobs: every input format round-trips, rows keep their order and columns, bad rows are flagged."""

from __future__ import annotations

import csv
import io
import json

import pytest
from click.testing import CliRunner

from coulisse.errors import InputError
from coulisse.interfaces.cli import cli
from coulisse.interfaces.jobs.runner import JobOptions, classify_file

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

TEXTS = [
    "J'ai adoré ce film, du début à la fin.",
    "Quel ennui... je me suis endormi avant la moitié.",
    "Un scénario sans queue ni tête, des dialogues creux et une fin bâclée.",
    "La photographie est superbe, mais le rythme est trop lent.",
    "Bof.",
    "Un chef-d'œuvre ! Je suis sorti de la salle bouleversé.",
    'Elle a dit "jamais", puis, tabulation:\tvirgule, fin.',
    "Une ligne\navec un retour à la ligne au milieu.",
] * 5  # 40 rows: several chunks with batch_rows=16


@pytest.fixture(scope="module")
def pipe(tf_camembert_dir):
    import coulisse

    return coulisse.pipeline("sentiment-analysis", model=str(tf_camembert_dir))


@pytest.fixture(scope="module")
def expected(pipe):
    return pipe(TEXTS)


def records(n: int = len(TEXTS)) -> list[dict]:
    return [{"id": i, "text": TEXTS[i], "note": f"n{i}"} for i in range(n)]


def write_input(path, fmt: str, rows: list[dict]) -> None:
    if fmt in ("csv", "tsv"):
        with open(path, "w", encoding="utf-8", newline="") as f:
            w = csv.DictWriter(f, list(rows[0]), delimiter="," if fmt == "csv" else "\t")
            w.writeheader()
            w.writerows(rows)
    elif fmt == "jsonl":
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    elif fmt == "parquet":
        pq.write_table(pa.Table.from_pylist(rows), path)
    else:
        path.write_text("".join(r["text"].replace("\n", " ") + "\n" for r in rows), encoding="utf-8")


def read_output(path) -> list[dict]:
    suffix = path.suffix
    if suffix in (".csv", ".tsv"):
        with open(path, encoding="utf-8", newline="") as f:
            return list(csv.DictReader(f, delimiter="," if suffix == ".csv" else "\t"))
    if suffix == ".jsonl":
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    return pq.read_table(path).to_pylist()


def run(pipe, input_path, output_path, **options):
    options.setdefault("batch_rows", 16)
    return classify_file(JobOptions(input=str(input_path), output=str(output_path), **options), lambda: pipe)


@pytest.mark.parametrize("out_fmt", ["csv", "tsv", "jsonl", "parquet"])
@pytest.mark.parametrize("in_fmt", ["csv", "tsv", "jsonl", "parquet", "txt"])
def test_round_trip(pipe, expected, tmp_path, in_fmt, out_fmt):
    rows = records()
    source = tmp_path / f"in.{in_fmt}"
    write_input(source, in_fmt, rows)
    summary = run(pipe, source, tmp_path / f"out.{out_fmt}")
    assert (summary.rows, summary.classified, summary.errored) == (len(rows), len(rows), 0)
    out = read_output(tmp_path / f"out.{out_fmt}")
    assert len(out) == len(rows)
    carried = ["text"] if in_fmt == "txt" else ["id", "text", "note"]
    assert list(out[0]) == carried + ["label", "score", "error"]  # carried columns first, in order
    text_only = in_fmt == "txt"
    pipe_expected = pipe([t.replace("\n", " ") for t in TEXTS]) if text_only else expected
    for i, (got, want) in enumerate(zip(out, pipe_expected, strict=True)):
        if not text_only:
            typed = in_fmt in ("jsonl", "parquet") and out_fmt in ("jsonl", "parquet")
            assert got["id"] == (i if typed else str(i)) and got["note"] == f"n{i}"
        assert got["text"] == (rows[i]["text"].replace("\n", " ") if text_only else rows[i]["text"])
        assert got["label"] == want["label"]
        assert float(got["score"]) == pytest.approx(want["score"], abs=1e-6)
        assert got["error"] in (None, "")


def test_stdin_jsonl_and_lines(pipe, expected, tmp_path):
    stream = io.BytesIO("".join(json.dumps({"text": t}) + "\n" for t in TEXTS[:6]).encode())
    classify_file(JobOptions(input="-", output=str(tmp_path / "a.jsonl")), lambda: pipe, stdin=stream)
    assert [r["label"] for r in read_output(tmp_path / "a.jsonl")] == [e["label"] for e in expected[:6]]
    stream = io.BytesIO("\n".join(TEXTS[:6]).encode())  # not JSON: one text per line
    classify_file(JobOptions(input="-", output=str(tmp_path / "b.csv")), lambda: pipe, stdin=stream)
    out = read_output(tmp_path / "b.csv")
    assert [r["text"] for r in out] == "\n".join(TEXTS[:6]).split("\n")


def test_stdin_jsonl_after_a_byte_order_mark_is_jsonl(pipe, expected, tmp_path):
    """Read as text lines before (each raw JSON line classified as a review), where the same bytes as a file are
    JSONL (audit 42)."""
    stream = io.BytesIO(b"\xef\xbb\xbf" + "".join(json.dumps({"text": t, "id": i}) + "\n"
                                                  for i, t in enumerate(TEXTS[:3])).encode())
    classify_file(JobOptions(input="-", output=str(tmp_path / "a.jsonl")), lambda: pipe, stdin=stream)
    out = read_output(tmp_path / "a.jsonl")
    assert [(r["id"], r["text"], r["label"]) for r in out] == [(i, t, e["label"]) for i, (t, e) in
                                                              enumerate(zip(TEXTS[:3], expected, strict=False))]


def test_a_value_the_first_chunks_parquet_types_would_change_stops_the_job(pipe, tmp_path):
    """The first chunk types a JSONL input's Parquet columns: a later 4.5 in a column of whole numbers was
    written 4, a later object's new key dropped, and a number past 64 bits ended in a traceback (audit 42)."""
    later = {"float": {"note": 4.5}, "key": {"meta": {"a": 1, "src": "web"}}, "bigint": {"id": 2**64 + 1}}
    for case, value in later.items():
        first = {"note": 4, "meta": {"a": 0}, "id": 1}
        source = tmp_path / f"{case}.jsonl"
        source.write_text(json.dumps({"text": TEXTS[0], **first}) + "\n"
                          + json.dumps({"text": TEXTS[1], **first, **value}) + "\n", encoding="utf-8")
        with pytest.raises(InputError) as refused:
            run(pipe, source, tmp_path / f"{case}.parquet", batch_rows=1)
        said = str(refused.value)
        assert ("larger than Parquet's 64-bit integers" if case == "bigint" else "a column changed type") in said
        assert "write .jsonl" in said
        run(pipe, source, tmp_path / f"{case}.jsonl.out.jsonl", batch_rows=1)  # JSONL keeps them as they are
        assert read_output(tmp_path / f"{case}.jsonl.out.jsonl")[1] | value == read_output(
            tmp_path / f"{case}.jsonl.out.jsonl")[1]
    fine = tmp_path / "fine.jsonl"  # what fits the first chunk's types, as written: 2.0 into int64, fewer keys
    fine.write_text(json.dumps({"text": TEXTS[0], "n": 1, "m": {"a": 1, "b": 2}}) + "\n"
                    + json.dumps({"text": TEXTS[1], "n": 2.0, "m": {"b": 3}}) + "\n", encoding="utf-8")
    run(pipe, fine, tmp_path / "fine.parquet", batch_rows=1)
    assert [(r["n"], r["m"]) for r in read_output(tmp_path / "fine.parquet")] == [(1, {"a": 1, "b": 2}),
                                                                                 (2, {"a": None, "b": 3})]


def test_non_finite_floats_are_null_in_jsonl(pipe, tmp_path):
    """A Parquet input's NaN and inf were written as Python's bare NaN and Infinity, which no JSON reader takes
    (coulisse's own refused its output as input)."""
    source = tmp_path / "in.parquet"
    pq.write_table(pa.table({"text": TEXTS[:3], "f": [float("nan"), float("inf"), 0.5],
                             "nested": [[float("-inf")], [1.0], []]}), source)
    run(pipe, source, tmp_path / "out.jsonl")
    out = [json.loads(line, parse_constant=lambda c: pytest.fail(f"{c} in the output"))
           for line in (tmp_path / "out.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [(r["f"], r["nested"]) for r in out] == [(None, [None]), (None, [1.0]), (0.5, [])]
    run(pipe, tmp_path / "out.jsonl", tmp_path / "again.jsonl")  # read back as an input: every row classified
    assert not any(r["error"] for r in read_output(tmp_path / "again.jsonl"))


def test_bad_csv_rows_are_flagged_not_fatal(pipe, tmp_path):
    source = tmp_path / "bad.csv"
    source.write_bytes(b"text,id\n"
                       b"Super film,1\n"
                       b",2\n"                     # empty text
                       b"   ,3\n"                  # whitespace only
                       b"un,deux,trois\n"          # too many fields
                       b"seul\n"                   # too few fields
                       b"\"ferme\"mal,6\n"         # malformed quoting
                       b"caf\xe9 latin-1,7\n"      # invalid UTF-8
                       b"\n"                       # blank line: not a record
                       b"\"sur deux\nlignes\",9\n"
                       b"Nul,10\n")
    # Read as UTF-8 by default, invalid UTF-8 this near the top refuses the file (test_jobs_encoding.py);
    # --encoding utf-8, given, makes it one error row, as it is past the file's first 64 KiB.
    summary = run(pipe, source, tmp_path / "out.csv", encoding="utf-8")
    out = read_output(tmp_path / "out.csv")
    errors = [r["error"] for r in out]
    assert [r["label"] != "" for r in out] == [True, False, False, False, False, False, False, True, True]
    assert errors[1] == "line 3: 'text' is empty"
    assert errors[2] == "line 4: 'text' is only whitespace"
    assert errors[3] == "line 5: malformed CSV: 3 fields where the header has 2"
    assert errors[4] == "line 6: malformed CSV: 1 fields where the header has 2"
    assert errors[5].startswith("line 7: malformed CSV")
    assert errors[6].startswith("line 8: invalid UTF-8 (byte 0xe9")
    assert out[7]["text"] == "sur deux\nlignes" and out[8]["id"] == "10"
    assert (summary.classified, summary.errored) == (3, 6)


def test_bad_jsonl_rows_are_flagged_not_fatal(pipe, tmp_path):
    source = tmp_path / "bad.jsonl"
    source.write_bytes(b'{"text": "Super film", "k": 1}\n'
                       b'{"text": null, "k": 2}\n'
                       b'{"k": 3}\n'
                       b'{"text": 42, "k": 4}\n'
                       b'{"text": "oops", \n'
                       b'[1, 2]\n'
                       b'{"text": "caf\xe9", "k": 7}\n'
                       b'"juste un texte"\n'
                       b'{"text": "x", "id": 1e999}\n'
                       b'{"text": "x", "id": NaN}\n'
                       b'{"text": ["x"]}\n'
                       b'null\n')
    run(pipe, source, tmp_path / "out.jsonl", encoding="utf-8")  # an invalid line near the top: see above
    out = read_output(tmp_path / "out.jsonl")  # every line of it JSON, none "Infinity" or "NaN"
    assert [r["error"] for r in out] == [
        None, "line 2: 'text' is null", "line 3: no 'text' value", "line 4: 'text' is a number, not a string",
        "line 5: invalid JSON (Expecting property name enclosed in double quotes at column 18)",
        "line 6: an array, not a JSON object",
        "line 7: invalid UTF-8 (byte 0xe9 at byte 14 of the line); re-encode the file as UTF-8", None,
        "line 9: the number 1e999 is too large for a 64-bit float; write it as a string",
        "line 10: NaN is not a JSON number (JSON has no NaN or infinity); write it as a string or null",
        "line 11: 'text' is an array, not a string", "line 12: null, not a JSON object"]
    assert [r.get("k") for r in out] == [1, 2, 3, 4, None, None, 7, None, None, None, None, None]
    for line in (tmp_path / "out.jsonl").read_text().splitlines():  # strict JSON: no Infinity, no NaN
        json.loads(line, parse_constant=lambda name, line=line: pytest.fail(f"{name} written: {line}"))
    assert out[0]["label"] and out[7]["text"] == "juste un texte" and out[7]["label"]
    assert all(r["label"] is None and r["score"] is None for i, r in enumerate(out) if i not in (0, 7))


def test_jsonl_values_a_text_column_cannot_hold_go_to_parquet_as_their_json(pipe, expected, tmp_path):
    """JSONL -> Parquet: a text that is a number (its row carries the error) and a field null through the first
    chunk then a number stopped the job with a traceback or "a column changed type", and `--resume` stopped it
    again (audit 40). They are written as their JSON text; the other rows as from a .jsonl output."""
    rows = [{"id": i, "text": TEXTS[i], "note": None if i < 20 else 4} for i in range(len(TEXTS))]
    rows[3]["text"] = 42
    rows[30]["text"] = {"fr": "un film"}
    source = tmp_path / "in.jsonl"
    write_input(source, "jsonl", rows)
    run(pipe, source, tmp_path / "out.parquet")
    run(pipe, source, tmp_path / "out.jsonl")
    out, reference = read_output(tmp_path / "out.parquet"), read_output(tmp_path / "out.jsonl")
    assert [r["text"] for r in out] == [json.dumps(r["text"], ensure_ascii=False) if not isinstance(r["text"], str)
                                        else r["text"] for r in rows]
    assert [r["note"] for r in out] == [None] * 20 + ["4"] * 20
    assert [(r["label"], r["error"]) for r in out] == [(r["label"], r["error"]) for r in reference]
    assert [r["error"] for r in out if r["error"]] == ["line 4: 'text' is a number, not a string",
                                                       "line 31: 'text' is an object, not a string"]
    assert [r["label"] for i, r in enumerate(out) if i not in (3, 30)] == \
        [e["label"] for i, e in enumerate(expected) if i not in (3, 30)]


def test_csv_with_semicolons_as_a_french_spreadsheet_saves_it(pipe, expected, tmp_path):
    """A .csv whose header has semicolons and no comma has ';' between its fields (Excel in French): read as
    such, the text is the text column's alone, quotes and commas inside it kept; the output is ordinary CSV."""
    source = tmp_path / "avis.csv"
    rows = [{"text": TEXTS[i], "note": str(i)} for i in range(8)]
    with open(source, "w", encoding="utf-8-sig", newline="") as f:  # with the BOM Excel writes
        w = csv.DictWriter(f, ["text", "note"], delimiter=";")
        w.writeheader()
        w.writerows(rows)
    assert any("," in r["text"] for r in rows) and any('"' in r["text"] for r in rows)
    run(pipe, source, tmp_path / "out.csv")
    out = read_output(tmp_path / "out.csv")
    assert [(r["text"], r["note"], r["error"]) for r in out] == [(r["text"], r["note"], "") for r in rows]
    assert [r["label"] for r in out] == [e["label"] for e in expected[:8]]
    # Commas between fields stay what they are, semicolons inside texts included.
    source.write_text("text,note\nBon; vraiment bon,5\n", encoding="utf-8")
    run(pipe, source, tmp_path / "comma.csv")
    assert [(r["text"], r["note"]) for r in read_output(tmp_path / "comma.csv")] == [("Bon; vraiment bon", "5")]


def test_column_choice(pipe, tmp_path):
    source = tmp_path / "in.csv"
    source.write_text("review,stars\nTrès bon,5\nMauvais,1\n", encoding="utf-8")
    run(pipe, source, tmp_path / "a.csv")  # the only non-numeric column
    assert [r["review"] for r in read_output(tmp_path / "a.csv")] == ["Très bon", "Mauvais"]
    source.write_text("review,title\nTrès bon,A\nMauvais,B\n", encoding="utf-8")
    with pytest.raises(InputError, match="no 'text' column and 2 string columns"):
        run(pipe, source, tmp_path / "b.csv")
    with pytest.raises(InputError, match="has no column 'body'"):
        run(pipe, source, tmp_path / "c.csv", column="body")
    run(pipe, source, tmp_path / "d.csv", column="title")
    assert [r["title"] for r in read_output(tmp_path / "d.csv")] == ["A", "B"]


@pytest.mark.parametrize("first", ["Quel navet !", "Un chef-d’œuvre", "12", "ennuyeux du début à la fin"])
def test_a_csv_without_a_header_line_is_refused_not_read_from_its_second_row(pipe, tmp_path, first):
    """Reviews saved one per line as .csv: the first would be the header, taken as the only column's name and
    never classified. A name that reads like a text is refused, naming it; a plain name still works."""
    source = tmp_path / "in.csv"
    source.write_text(f"{first}\nSuper film\nNul\n", encoding="utf-8")
    with pytest.raises(InputError, match=f"its only text column's name, {first!r}, reads like a text") as e:
        run(pipe, source, tmp_path / "a.csv")
    assert "Add a header line (text), or pass --column" in str(e.value)
    assert not (tmp_path / "a.csv").exists()
    run(pipe, source, tmp_path / "b.csv", column=first)  # the way out it names
    assert [r[first] for r in read_output(tmp_path / "b.csv")] == ["Super film", "Nul"]
    for name in ("avis", "Review Text", "commentaire_client"):
        source.write_text(f"{name}\nSuper film\nNul\n", encoding="utf-8")
        run(pipe, source, tmp_path / "c.csv", overwrite=True)
        assert [r[name] for r in read_output(tmp_path / "c.csv")] == ["Super film", "Nul"]


def test_all_scores_and_clashing_names(pipe, tmp_path):
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps({"text": t, "label": "x", "error": 0}) + "\n" for t in TEXTS[:4]))
    run(pipe, source, tmp_path / "out.jsonl", all_scores=True)
    out = read_output(tmp_path / "out.jsonl")
    assert list(out[0]) == ["text", "label", "error", "predicted_label", "predicted_score",
                            "predicted_score_NEGATIVE", "predicted_score_POSITIVE", "coulisse_error"]
    for r in out:
        assert r["label"] == "x" and r["error"] == 0
        assert r["predicted_score_NEGATIVE"] + r["predicted_score_POSITIVE"] == pytest.approx(1.0, abs=1e-6)
        assert r["predicted_score"] == max(r["predicted_score_NEGATIVE"], r["predicted_score_POSITIVE"])


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_a_file_classified_again_keeps_every_earlier_prediction(pipe, expected, tmp_path, fmt):
    """A job's output (or evaluate's predictions) classified again by another model: its predicted_* and
    coulisse_error were taken too, and the names were given once more: JSONL overwrote the first model's values,
    CSV wrote each name twice (refused as the next input), Parquet stopped on Arrow's duplicate field (audit 44)."""
    source = tmp_path / f"in.{fmt}"
    write_input(source, fmt, [{"text": t} for t in TEXTS[:6]])
    first, second, third = (tmp_path / f"{n}.{fmt}" for n in ("first", "second", "third"))
    run(pipe, source, first)
    run(pipe, first, second, all_scores=True)
    run(pipe, second, third)
    earlier = read_output(second)
    out = read_output(third)
    assert list(out[0]) == [*earlier[0], "predicted_2_label", "predicted_2_score", "coulisse_error_2"]
    assert list(earlier[0]) == ["text", "label", "score", "error", "predicted_label", "predicted_score",
                                "predicted_score_NEGATIVE", "predicted_score_POSITIVE", "coulisse_error"]
    for row, before, want in zip(out, earlier, expected[:6], strict=True):
        assert {k: row[k] for k in before} == before  # every value of the input as it was
        assert row["predicted_2_label"] == want["label"] == before["label"] == before["predicted_label"]
    # a name taken from the second model's --all-scores columns moves the prefix on, as label and score do
    run(pipe, third, tmp_path / f"fourth.{fmt}", all_scores=True)
    assert "predicted_3_score_POSITIVE" in read_output(tmp_path / f"fourth.{fmt}")[0]


def test_a_later_jsonl_record_keeps_its_own_label_score_and_error(pipe, expected, tmp_path):
    """The added names come from the first record; a later record with its own label, score or error keeps
    them, and gets its prediction under the renamed columns, as a first record with those keys would."""
    source = tmp_path / "in.jsonl"
    rows = [{"text": TEXTS[0]}, {"text": TEXTS[1], "label": "GOLD_NEG", "score": 5, "error": "note"},
            {"text": TEXTS[2], "error": None}, {"text": TEXTS[3]}]
    source.write_text("".join(json.dumps(r) + "\n" for r in rows))
    run(pipe, source, tmp_path / "out.jsonl")
    out = read_output(tmp_path / "out.jsonl")
    assert out[1] == {**rows[1], "predicted_label": expected[1]["label"], "predicted_score": out[1]["predicted_score"],
                      "coulisse_error": None}
    assert out[1]["predicted_score"] == pytest.approx(expected[1]["score"], abs=1e-6)
    assert list(out[2]) == ["text", "error", "label", "score", "coulisse_error"] and out[2]["error"] is None
    for i in (0, 3):
        assert list(out[i]) == ["text", "label", "score", "error"] and out[i]["label"] == expected[i]["label"]


def test_parquet_keeps_arrow_types(pipe, tmp_path):
    table = pa.table({"when": pa.array([1, 2], pa.int16()), "text": ["Super", "Nul"],
                      "tags": [["a"], []], "w": pa.array([0.5, None], pa.float32())})
    pq.write_table(table, tmp_path / "in.parquet")
    run(pipe, tmp_path / "in.parquet", tmp_path / "out.parquet")
    out = pq.read_table(tmp_path / "out.parquet")
    assert out.schema.names[:4] == table.schema.names
    assert [out.schema.field(n).type for n in table.schema.names] == list(table.schema.types)
    assert out.select(table.schema.names).equals(table)


def test_excels_unnamed_trailing_columns_are_named_as_pandas_names_them(pipe, expected, tmp_path):
    """`text;note;;`, Excel's trailing separators once a column to the right was used: refused ("the header
    names '' more than once"); now read, the columns named `Unnamed: 2`... as pandas reads them. Two columns of
    one name are still refused, naming it."""
    source = tmp_path / "excel.csv"
    source.write_text(f"text;note;;\n{TEXTS[0]};5;;\n{TEXTS[1]};1;;\n", encoding="utf-8")
    run(pipe, source, tmp_path / "out.csv")
    out = read_output(tmp_path / "out.csv")
    assert list(out[0])[:4] == ["text", "note", "Unnamed: 2", "Unnamed: 3"]
    assert [(r["text"], r["label"]) for r in out] == [(t, e["label"]) for t, e in zip(TEXTS[:2], expected,
                                                                                       strict=False)]
    source.write_text(f"text,note,note\n{TEXTS[0]},5,6\n", encoding="utf-8")
    with pytest.raises(InputError, match="the header names 'note' more than once"):
        run(pipe, source, tmp_path / "dup.csv")


def test_a_parquet_schema_naming_a_column_twice_is_refused(pipe, tmp_path):
    """pyarrow writes `text, n, n`: the second `n` was written over the first in CSV and JSONL, and a Parquet
    output failed with a KeyError traceback (audit 42); refused as the CSV header is, naming it."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    source = tmp_path / "dup.parquet"
    pq.write_table(pa.table([pa.array(TEXTS[:2]), pa.array([1, 2]), pa.array([3, 4])], names=["text", "n", "n"]),
                   source)
    for out in ("out.csv", "out.jsonl", "out.parquet"):
        with pytest.raises(InputError, match="the schema names 'n' more than once"):
            run(pipe, source, tmp_path / out)


def test_a_categorical_or_string_view_column_is_a_text_column(pipe, expected, tmp_path):
    """pandas writes a `category` column of texts as a dictionary of strings: with another name than `text`, it
    was no "string column" and the file was refused ("0 string columns (none)")."""
    for kind in (pa.dictionary(pa.int32(), pa.string()), pa.string_view()):
        source = tmp_path / "in.parquet"
        pq.write_table(pa.table({"review": pa.array(TEXTS[:3]).cast(kind), "id": [1, 2, 3]}), source)
        run(pipe, source, tmp_path / "out.jsonl", overwrite=True)
        out = read_output(tmp_path / "out.jsonl")
        assert [(r["review"], r["label"]) for r in out] == [(t, e["label"]) for t, e in
                                                           zip(TEXTS[:3], expected, strict=False)]


def test_cli_keeps_text_mode_and_runs_files(tf_camembert_dir, tmp_path):
    runner = CliRunner()
    model = ["-m", str(tf_camembert_dir)]
    result = runner.invoke(cli, ["classify", *model, "--json", "Super film"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["text"] == "Super film"
    write_input(tmp_path / "in.csv", "csv", records(5))
    result = runner.invoke(cli, ["classify", *model, "-i", str(tmp_path / "in.csv"), "-o",
                                 str(tmp_path / "out.jsonl"), "--progress"], env={"COULISSE_BATCH_ROWS": "2"})
    assert result.exit_code == 0, result.output
    assert "classify: 100%|" in result.stderr and "5 rows, " in result.stderr  # the bar, though not a TTY
    assert "5 rows classified, 0 errored" in result.stderr and "rows/s" in result.stderr
    assert len(read_output(tmp_path / "out.jsonl")) == 5
    result = runner.invoke(cli, ["classify", *model, "-i", str(tmp_path / "in.csv"), "--quiet"])
    assert result.exit_code == 0 and len(result.stdout.splitlines()) == 5 and not result.stderr
    result = runner.invoke(cli, ["classify", *model, "-i", str(tmp_path / "in.csv")],
                           env={"COULISSE_BATCH_ROWS": "0"})
    # the env fallback is read, and its bad value named by the variable before any model loads
    assert result.exit_code == 2 and "environment variable COULISSE_BATCH_ROWS: 0 is not in the range x>=1" \
        in result.output, result.output
    result = runner.invoke(cli, ["classify", *model, "-i", str(tmp_path / "in.csv"), "Super"])
    assert result.exit_code == 2 and "not both" in result.output


def test_a_csv_piped_on_stdin_is_pointed_to_the_file_path(pipe, tmp_path, caplog):
    """stdin is JSONL or one text per line: a CSV piped in had its header classified as a review, unsaid, and
    --column said only "its columns are text" (audit 44)."""
    import logging

    from coulisse.interfaces.jobs.sources import _reads_like_a_header

    data = b"id,review\n1,Super film\n2,Nul\n"
    with caplog.at_level(logging.WARNING, logger="coulisse.interfaces.jobs.sources"):
        classify_file(JobOptions(input="-", output=str(tmp_path / "out.jsonl")), lambda: pipe,
                      stdin=io.BytesIO(data))
    assert any("'id,review' reads like a CSV header" in r.getMessage() and "-i FILE.csv" in r.getMessage()
               for r in caplog.records)
    with pytest.raises(InputError, match=r"no column 'review'.*stdin is read as JSONL, or as one text per line"):
        classify_file(JobOptions(input="-", output=str(tmp_path / "col.jsonl"), column="review"), lambda: pipe,
                      stdin=io.BytesIO(data))
    for header in ("avis;note", "text\tlabel", '"id","Review Text"'):
        assert _reads_like_a_header(header), header
    for text in ("Bof, nul.", "Super, génial !", "Un film, un vrai", "J'ai adoré"):
        assert not _reads_like_a_header(text), text


@pytest.mark.parametrize(("name", "hint"), [("reviews.xlsx", "Save As 'CSV UTF-8'"),
                                            ("reviews.json", "orient='records', lines=True"),
                                            ("reviews.xml", "")])
def test_a_spreadsheet_or_a_json_document_says_how_to_convert_it(tmp_path, name, hint):
    from coulisse.interfaces.jobs.formats import input_format

    with pytest.raises(InputError, match="cannot tell the format") as refused:
        input_format(str(tmp_path / name))
    assert hint in str(refused.value) and "use one of .csv" in str(refused.value)


def test_a_parquet_file_pandas_wrote_reads_back_with_its_index_and_dtypes(pipe, expected, tmp_path):
    """pandas' metadata was dropped from the output: a filtered frame's index came back as a
    `__index_level_0__` column, and an Int64 column with a missing value as float64, its large ints rounded
    (audit 44). Kept, with the added columns listed, across chunks (parts) and a resume."""
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame({"review": TEXTS[:6], "n": pd.array([9007199254740993, None, 3, 4, 5, 6], dtype="Int64")},
                         index=pd.Index(range(100, 106), name="rid"))
    frame = frame[frame.index != 102]
    source, output = tmp_path / "in.parquet", tmp_path / "out.parquet"
    frame.to_parquet(source)

    def stop(rows, preds):  # after the first chunk: one part written, the rest for the resume
        raise KeyboardInterrupt

    from coulisse.interfaces.jobs.runner import JobInterrupted

    with pytest.raises(JobInterrupted):
        classify_file(JobOptions(input=str(source), output=str(output), column="review", batch_rows=2),
                      lambda: pipe, on_chunk=stop)
    run(pipe, source, output, column="review", batch_rows=2, resume=True)
    out = pd.read_parquet(output)
    assert list(out.index) == [100, 101, 103, 104, 105] and out.index.name == "rid"
    assert str(out["n"].dtype) == "Int64" and out["n"].iloc[0] == 9007199254740993 and out["n"].isna().iloc[1]
    assert list(out.columns) == ["review", "n", "label", "score", "error"]
    want = [expected[i]["label"] for i in (0, 1, 3, 4, 5)]
    assert list(out["label"]) == want and str(out["score"].dtype) == "float64"

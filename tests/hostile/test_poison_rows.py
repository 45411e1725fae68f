"""Poison rows: every row is data, never a crash.

A lone surrogate (JSON's "\\ud800"), a NUL, a JSONL line nested 100,000 deep, an empty text and a 1 MB text,
inside a job of a few hundred rows (and of 5,000, marked slow) in every input format that can carry them: the
job ends (exit 0), the bad rows are error rows with a reason, every other row equals a run without them, and
`--resume` works. A row the engine fails on is isolated. The server answers a lone surrogate with 422 naming the input.
"""

from __future__ import annotations

import csv
import json
import random

import pytest
from click.testing import CliRunner

import coulisse
from coulisse.interfaces.cli import cli
from coulisse.interfaces.jobs.runner import JobInterrupted, JobOptions, classify_file

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

WORDS = ["film", "acteur", "scénario", "génial", "nul", "ennuyeux", "magnifique", "histoire", "musique", "fin",
         "drôle", "triste", "lent", "émouvant", "raté"]
CLEAN = 300
BATCH = 32
DEEP = 100_000
SURROGATE = "\ud800"
# What each poison text becomes: an error whose reason contains the text given, or None (a result), in the
# order they are spread over the file. The surrogate, invalid UTF-8 bytes in CSV, TSV and TXT, comes after the
# ~1 MB text: invalid UTF-8 in a file's first 64 KiB refuses the whole file (tests/interfaces/
# test_jobs_encoding.py), and what is guaranteed here is a poisoned row deep in a file.
POISONS = {
    "nul": ("bon\x00film", None),
    "empty": ("", "is empty"),
    "huge": ("film génial " * 90_000, None),  # ~1 MB: classified, truncated to the model's limit
    "surrogate": ("x " + SURROGATE + " y", "not valid Unicode (lone surrogate at position 2)"),
    "deep": ("[" * DEEP + "]" * DEEP, None),  # in CSV, TSV, TXT and Parquet, brackets are just a long text
}
# In UTF-8 files, a surrogate can only be its 3-byte CESU form, which is invalid UTF-8 (an error row too).
SURROGATE_BYTES = "\ud800".encode("utf-8", "surrogatepass")


def clean_rows(n: int = CLEAN) -> list[dict]:
    rng = random.Random(7)
    return [{"id": i, "text": " ".join(rng.choices(WORDS, k=rng.randint(2, 12)))} for i in range(n)]


def poisoned_rows(fmt: str, n: int = CLEAN) -> tuple[list[dict], dict[int, str | None]]:
    """Clean rows with the poisons spread among them; returns the rows and, per poison row, its expected error."""
    rows = clean_rows(n)
    expected: dict[int, str | None] = {}
    cases = dict(POISONS)
    if fmt == "parquet":
        del cases["surrogate"]  # Arrow strings are UTF-8: a Parquet file cannot hold one
    if fmt == "jsonl":
        cases["deep"] = (None, "nested too deeply")  # the whole line is nested, not the text
    for k, (name, (text, _)) in enumerate(cases.items()):
        rows.insert(5 + k * (n // 5 + 1), {"id": f"poison-{name}", "text": text})
    for i, r in enumerate(rows):
        if str(r["id"]).startswith("poison-"):
            expected[i] = cases[r["id"][len("poison-"):]][1]
    return rows, expected


def write_input(path, fmt: str, rows: list[dict]) -> None:
    if fmt in ("csv", "tsv", "txt"):
        delimiter = "\t" if fmt == "tsv" else ","
        with open(path, "wb") as f:
            if fmt != "txt":
                f.write(f"id{delimiter}text\n".encode())
            for r in rows:
                text = r["text"]
                if text is None:  # only JSONL has a deep line
                    continue
                raw = text.encode("utf-8", "surrogatepass")  # a surrogate: its (invalid) CESU bytes
                if fmt == "txt":
                    f.write(raw + b"\n")
                else:
                    f.write(f"{r['id']}{delimiter}".encode() + b'"' + raw + b'"\n')
    elif fmt == "jsonl":
        with open(path, "w", encoding="utf-8") as f:
            for r in rows:
                if r["text"] is None:
                    f.write(f'{{"id": "{r["id"]}", "text": {"[" * DEEP}"x"{"]" * DEEP}}}\n')
                else:
                    f.write(json.dumps(r) + "\n")  # ensure_ascii: a surrogate travels as "\ud800"
    else:
        pq.write_table(pa.Table.from_pylist([{"id": str(r["id"]), "text": r["text"]} for r in rows]), path)


def read_output(path) -> list[dict]:
    if path.suffix in (".csv", ".tsv"):
        with open(path, encoding="utf-8", newline="") as f:
            return list(csv.DictReader(f, delimiter="," if path.suffix == ".csv" else "\t"))
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    return pq.read_table(path).to_pylist()


def out_format(fmt: str) -> str:
    return "jsonl" if fmt == "txt" else fmt


def run(pipe, source, output, stop_after: int | None = None, **options):
    seen = []

    def on_chunk(rows, preds):
        seen.append(len(rows))
        if stop_after is not None and len(seen) == stop_after:
            raise KeyboardInterrupt

    job = JobOptions(input=str(source), output=str(output), **{"batch_rows": BATCH, **options})
    return classify_file(job, lambda: pipe, on_chunk=on_chunk)


def score(value) -> float:
    return float(value)


@pytest.fixture(scope="module")
def pipe(tf_camembert_dir):
    return coulisse.pipeline("sentiment-analysis", model=str(tf_camembert_dir))


@pytest.fixture(scope="module")
def baseline(pipe, tmp_path_factory):
    """Per output format, the clean rows' labels and scores, from a run without the poison rows."""
    out = {}
    for fmt in ("csv", "tsv", "jsonl", "parquet"):
        d = tmp_path_factory.mktemp(f"clean-{fmt}")
        write_input(d / f"in.{fmt}", fmt, clean_rows())
        run(pipe, d / f"in.{fmt}", d / f"out.{fmt}")
        out[fmt] = [(r["label"], score(r["score"])) for r in read_output(d / f"out.{fmt}")]
    return out


def check(rows: list[dict], expected: dict[int, str | None], clean: list) -> None:
    """Rows are placed by position: txt has no id column, and JSONL's deep line has no values."""
    assert len(rows) == len(clean) + len(expected)
    good = []
    for i, row in enumerate(rows):
        if i in expected:
            reason = expected[i]
            if reason is None:
                assert row["error"] in (None, ""), row["error"]
                assert row["label"] in ("POSITIVE", "NEGATIVE")
            else:
                assert reason in row["error"], row["error"]
                assert row["label"] in (None, "")
        else:
            assert row["error"] in (None, ""), row["error"]
            good.append((row["label"], score(row["score"])))
    assert [g[0] for g in good] == [c[0] for c in clean]
    assert [g[1] for g in good] == pytest.approx([c[1] for c in clean], abs=1e-5)


@pytest.mark.parametrize("fmt", ["csv", "tsv", "jsonl", "parquet", "txt"])
def test_poison_rows_are_error_rows_and_the_job_ends(pipe, baseline, tmp_path, fmt):
    rows, expected = poisoned_rows(fmt)
    if fmt in ("csv", "tsv", "txt"):  # the surrogate arrives as invalid UTF-8 bytes
        expected = {i: ("invalid UTF-8" if r and "Unicode" in r else r) for i, r in expected.items()}
    source = tmp_path / f"in.{fmt}"
    write_input(source, fmt, rows)
    output = tmp_path / f"out.{out_format(fmt)}"
    summary = run(pipe, source, output)
    assert summary.rows == len(rows)
    assert summary.errored == sum(r is not None for r in expected.values())
    check(read_output(output), expected, baseline[out_format(fmt)])

    # Interrupted after seven chunks (224 rows: past every poison but the last, the invalid bytes included, which
    # the resume reads again through the input's hash), then resumed: the same bytes as the run above.
    resumed = tmp_path / f"resumed.{out_format(fmt)}"
    with pytest.raises(JobInterrupted):
        run(pipe, source, resumed, stop_after=7)
    run(pipe, source, resumed, resume=True)
    assert read_output(resumed) == read_output(output)


@pytest.fixture(scope="module")
def clean_5000(pipe, tmp_path_factory):
    """The 5,000 clean rows' labels and scores from one run of the same job without the poisons (JSONL in
    and out: scores as Python floats, the same values every format's reader and writer carry). One run
    serves the five formats: a reader that changed clean texts would now fail, not hide behind its own
    reference."""
    d = tmp_path_factory.mktemp("clean-5000")
    write_input(d / "clean.jsonl", "jsonl", clean_rows(5000))
    run(pipe, d / "clean.jsonl", d / "clean-out.jsonl", batch_rows=500)
    return [(r["label"], score(r["score"])) for r in read_output(d / "clean-out.jsonl")]


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["csv", "tsv", "jsonl", "parquet", "txt"])
def test_poison_rows_inside_a_5000_row_job(pipe, clean_5000, tmp_path, fmt):
    """The issue's size: the poisons spread over a 5,000-row job; it ends, and every other row equals a run of
    the same job without them."""
    rows, expected = poisoned_rows(fmt, n=5000)
    if fmt in ("csv", "tsv", "txt"):
        expected = {i: ("invalid UTF-8" if r and "Unicode" in r else r) for i, r in expected.items()}
    clean = clean_5000
    write_input(tmp_path / f"in.{fmt}", fmt, rows)
    output = tmp_path / f"out.{out_format(fmt)}"
    summary = run(pipe, tmp_path / f"in.{fmt}", output, batch_rows=500)
    assert summary.rows == len(rows) and len(clean) == 5000
    assert summary.errored == sum(r is not None for r in expected.values())
    check(read_output(output), expected, clean)


def test_surrogates_in_carried_columns_are_written(pipe, tmp_path):
    """JSONL writes a lone surrogate back as its `\\ud800` escape (lossless); CSV and Parquet, which have no
    escape for it, as U+FFFD; every output is valid UTF-8."""
    source = tmp_path / "in.jsonl"
    source.write_text('{"text": "super film", "note": "a\\udc80b", "\\ud801key": ["\\ud802"]}\n'
                      '{"text": "film nul", "note": "ok"}\n', encoding="utf-8")
    run(pipe, source, tmp_path / "out.jsonl")
    raw = (tmp_path / "out.jsonl").read_bytes()
    raw.decode("utf-8")
    first = json.loads(raw.splitlines()[0])
    assert first["note"] == "a\udc80b" and first["\ud801key"] == ["\ud802"] and first["error"] is None
    for fmt in ("csv", "parquet"):
        run(pipe, source, tmp_path / f"out.{fmt}")
        rows = read_output(tmp_path / f"out.{fmt}")
        assert rows[0]["note"] == "a\ufffdb" and rows[1]["note"] == "ok"
        assert rows[0]["\ufffdkey"] == ('["\ufffd"]' if fmt == "csv" else ["\ufffd"])
        assert rows[0]["label"] in ("POSITIVE", "NEGATIVE")


def test_a_row_the_engine_fails_on_is_isolated(pipe, baseline, tmp_path, monkeypatch):
    rows = clean_rows()
    rows.insert(40, {"id": "boom", "text": "BOOM film"})
    write_input(tmp_path / "in.csv", "csv", rows)
    preprocess = pipe.preprocess

    def fragile(texts, *args, **kwargs):
        if any("BOOM" in t for t in texts):
            raise RuntimeError("the engine choked")
        return preprocess(texts, *args, **kwargs)

    monkeypatch.setattr(pipe, "preprocess", fragile)
    summary = run(pipe, tmp_path / "in.csv", tmp_path / "out.csv")
    assert summary.errored == 1
    check(read_output(tmp_path / "out.csv"), {40: "the model failed on this row (RuntimeError: the engine choked)"},
          baseline["csv"])


def test_cli_exits_0_on_poison_rows(tf_camembert_dir, tmp_path):
    rows, _ = poisoned_rows("jsonl")
    write_input(tmp_path / "in.jsonl", "jsonl", rows)
    result = CliRunner().invoke(cli, ["classify", "-m", str(tf_camembert_dir), "-i", str(tmp_path / "in.jsonl"),
                                      "-o", str(tmp_path / "out.jsonl"), "--quiet"])
    assert result.exit_code == 0, result.output


# -- server ------------------------------------------------------------------------------------------------

fastapi = pytest.importorskip("fastapi")
from starlette.testclient import TestClient  # noqa: E402

from coulisse.interfaces.server import create_app  # noqa: E402


def post(client, route: str, body: str):
    # Raw bytes: httpx's json= encodes with ensure_ascii=False, which cannot carry a lone surrogate.
    return client.post(route, content=body.encode(), headers={"content-type": "application/json"})


@pytest.mark.parametrize("task, route", [("sentiment-analysis", "/predict"), ("feature-extraction", "/embed")])
def test_server_answers_a_lone_surrogate_with_422(tf_camembert_dir, task, route):
    served = coulisse.pipeline(task, model=str(tf_camembert_dir))
    with TestClient(create_app(served), raise_server_exceptions=False) as client:
        r = post(client, route, '{"inputs": "x \\ud800"}')
        assert r.status_code == 422, r.text
        body = r.json()
        assert body == {"error": "Input validation error: inputs is not valid Unicode (lone surrogate at position 2)",
                        "error_type": "Validation"}
        # A batch: TEI's /predict reads a flat list as one text or one pair, a batch as a list of lists.
        batch = '[["ok"], ["bien"], ["\\udfff"]]' if route == "/predict" else '["ok", "bien", "\\udfff"]'
        r = post(client, route, '{"inputs": ' + batch + "}")
        assert r.status_code == 422 and "inputs[2]" in r.json()["error"], r.text
        assert "not valid Unicode" in r.json()["error"], r.text
        r = post(client, route, '{"inputs": "bon\\u0000film"}')  # a NUL is text: answered
        assert r.status_code == 200, r.text
        assert post(client, route, '{"inputs": "super film"}').status_code == 200


@pytest.mark.parametrize("body, name", [
    ('{"query": "q \\ud800", "texts": ["a", "b"]}', "query"),
    ('{"query": "q", "texts": ["a", "b \\udfff"]}', "texts[1]"),
])
def test_rerank_names_the_field_that_holds_a_lone_surrogate(factory, body, name):
    """/rerank's fields by the names the client sent (it runs as pairs of /predict inside, whose names were
    `inputs[0][0]`)."""
    served = coulisse.pipeline("text-classification", model=str(factory.checkpoint("bert", num_labels=1)))
    with TestClient(create_app(served), raise_server_exceptions=False) as client:
        r = post(client, "/rerank", body)
    assert r.status_code == 422, r.text
    assert r.json()["error"] == f"Input validation error: {name} is not valid Unicode (lone surrogate at position 2)"

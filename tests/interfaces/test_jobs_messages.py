"""What a corpus job tells the user: the summary line and the progress bar's frames."""

from __future__ import annotations

import json
import re
import time
from types import SimpleNamespace

import pytest
from click.testing import CliRunner

from coulisse.interfaces.cli import cli
from coulisse.interfaces.jobs.progress import Progress
from coulisse.interfaces.jobs.runner import JobOptions, Summary, classify_file


def test_summary_counts_in_words_and_times_to_significant_digits():
    one = Summary("out.csv", rows=1, classified=1, truncated=1, seconds=0.0423).describe()
    assert one.startswith("1 row classified, 0 errored; 1 row in 0.0423 s (23.6 rows/s). 1 text reached "
                          "the model's token limit, the part past it cut"), one
    many = Summary("out.csv", rows=300, classified=299, errored=1, resumed_from=100, truncated=2,
                   seconds=12.345).describe()
    assert "299 rows classified, 1 errored" in many and "resumed after 100 rows" in many
    assert "200 rows in 12.3 s (16.2 rows/s)" in many and "2 texts reached the model's token limit" in many
    assert "0.0 s" not in Summary("-", rows=300, classified=300, seconds=0.004).describe()
    loaded = Summary("-", rows=300, classified=300, seconds=0.004, load_seconds=2.314).describe()
    assert "300 rows in 0.004 s (75,000.0 rows/s, after 2.31 s loading the model)" in loaded, loaded


def test_the_summary_times_the_loop_and_the_loading_apart(tf_camembert_dir, tmp_path):
    """The rate divides by the chunk loop alone; the model's loading is measured and shown beside it."""
    import coulisse

    source = tmp_path / "in.txt"
    source.write_text("Un film superbe.\nQuel ennui.\n", encoding="utf-8")
    pipe = coulisse.pipeline("sentiment-analysis", model=str(tf_camembert_dir))

    def load():
        time.sleep(0.2)  # a slow load, which must not count in the rows/s
        return pipe

    summary = classify_file(JobOptions(input=str(source), output=str(tmp_path / "out.jsonl")), load)
    assert summary.load_seconds >= 0.2 and summary.seconds > 0
    assert summary.rows_per_second == pytest.approx(2 / summary.seconds)
    assert "loading the model)" in summary.describe()


def test_the_summary_says_the_precision_unless_exact(tf_camembert_dir, tmp_path):
    """`--quantize int8` or `--fast` (whatever this CPU's fast mode is): the summary says what the weights ran
    in; exact float32, the default, goes unsaid."""
    import coulisse

    source = tmp_path / "in.txt"
    source.write_text("Un film superbe.\n", encoding="utf-8")
    for quantize, said in ((None, None), ("int8", "; int8 weights)")):
        pipe = coulisse.pipeline("sentiment-analysis", model=str(tf_camembert_dir), quantize=quantize)
        summary = classify_file(JobOptions(input=str(source), output=str(tmp_path / f"{quantize}.jsonl")),
                                lambda pipe=pipe: pipe)
        line = summary.describe()
        assert (said in line) if said else ("weights" not in line), line


def test_the_first_progress_frame_shows_nothing_done(capsys):
    reader = SimpleNamespace(format="csv", total=1000, position=8)  # the header is read
    progress = Progress(reader, force=True)
    reader.position = 400
    progress.update(1)
    progress.close()
    frames = [f.strip() for f in capsys.readouterr().err.split("\r") if f.strip()]
    assert re.fullmatch(r"classify:\s+0%\|\s*\| \[00:00<\?, 0 rows\]", frames[0]), frames
    assert re.fullmatch(r"classify:\s+40%\|.*\| \[00:\d\d<.*, 1 row, [\d,.]+ rows/s\]", frames[-1]), frames


def test_the_cli_summary_of_a_one_row_file(tf_camembert_dir, tmp_path):
    source = tmp_path / "one.txt"
    source.write_text("Un film superbe.\n", encoding="utf-8")
    result = CliRunner().invoke(cli, ["classify", "-m", str(tf_camembert_dir), "-i", str(source),
                                      "-o", str(tmp_path / "out.jsonl")])
    assert result.exit_code == 0, result.output
    assert re.search(r"^1 row classified, 0 errored; 1 row in [\d.]+(e-\d+)? s ", result.stderr, re.M), \
        result.stderr


def test_a_resumed_bar_starts_at_the_committed_rows_and_redraws_every_chunk(tf_camembert_dir, tmp_path, capsys,
                                                                           monkeypatch):
    """The bar of a resumed job starts at the reader's position past the committed rows, and shows the input's
    rows (the committed ones included), as the percentage is of the whole input. It used to start at 0 and jump
    by every skipped byte at the first chunk, after which tqdm's dynamic `miniters` waited for a jump that size:
    a frozen bar and a wrong ETA."""
    import coulisse
    from coulisse.interfaces.jobs import progress as progress_module
    from coulisse.interfaces.jobs.runner import JobInterrupted
    from coulisse.interfaces.jobs.state import state_path

    monkeypatch.setattr(progress_module, "MININTERVAL", 0, raising=False)  # a frame whenever tqdm would draw one
    source, output = tmp_path / "in.txt", tmp_path / "out.csv"
    source.write_text("".join(f"critique numéro {i} : un film {'superbe' if i % 2 else 'raté'}.\n"
                              for i in range(100)), encoding="utf-8")
    pipe = coulisse.pipeline("sentiment-analysis", model=str(tf_camembert_dir))

    def stop(rows, preds, done=[]):  # noqa: B006 (the calls' counter)
        done.append(1)
        if len(done) == 5:
            raise KeyboardInterrupt

    with pytest.raises(JobInterrupted):
        classify_file(JobOptions(input=str(source), output=str(output), batch_rows=8), lambda: pipe, on_chunk=stop)
    committed = json.loads(state_path(output).read_text())["input"]["bytes"]
    capsys.readouterr()
    classify_file(JobOptions(input=str(source), output=str(output), batch_rows=8, resume=True, progress=True),
                  lambda: pipe)
    frames = [f.strip() for f in capsys.readouterr().err.split("\r") if f.strip()]
    shown = [(int(m[1]), int(m[2])) for m in (re.search(r"(\d+)%.*?(\d+) rows", f) for f in frames) if m]
    start = round(100 * committed / source.stat().st_size)
    assert shown[0] == (start, 40), frames
    rows = [r for _, r in shown]
    assert sorted(set(rows)) == [40, 48, 56, 64, 72, 80, 88, 96, 100], frames  # one frame per chunk, none skipped
    assert [p for p, _ in shown] == sorted(p for p, _ in shown) and shown[-1][0] == 100, frames

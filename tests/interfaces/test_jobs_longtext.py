"""--long-text chunk: windows cover the whole text, and a text's logits are the mean of its windows'."""

from __future__ import annotations

import json

import numpy as np
import pytest
from factory import LONG_REVIEW as LONG
from factory import WINDOW_LIMIT

from coulisse.engine import Item
from coulisse.errors import InputError
from coulisse.interfaces.jobs.formats import Row
from coulisse.interfaces.jobs.predict import Predictor
from coulisse.interfaces.jobs.runner import JobOptions, classify_file
from coulisse.tasks.text_classification import softmax
from coulisse.tasks.windows import split_windows, window_starts

MAX_LENGTH = WINDOW_LIMIT


@pytest.fixture(scope="module")
def pipe(windowed_classifier):
    return windowed_classifier


@pytest.mark.parametrize("length", [1, 5, 10, 11, 22, 23, 100, 101])
@pytest.mark.parametrize(("size", "stride"), [(10, 0), (10, 3), (10, 9), (1, 0)])
def test_window_starts_cover_everything_with_the_stride(length, size, stride):
    starts = window_starts(length, size, stride)
    covered = set()
    for s in starts:
        covered |= set(range(s, min(s + size, length)))
    assert covered == set(range(length))
    assert starts[-1] + size >= length and (len(starts) == 1 or starts[-2] + size < length)  # no extra window
    assert all(b - a == size - stride for a, b in zip(starts, starts[1:], strict=False))


@pytest.mark.parametrize("stride", [0, 5, 21])
def test_windows_fill_the_limit_and_cover_the_text(pipe, stride):
    tokenizer = pipe.tokenizer
    whole = tokenizer.encode_batch([LONG], truncation=False)[0]
    content = whole.ids[1:-1]  # <s> ... </s>
    assert len(content) > 3 * MAX_LENGTH
    windows = split_windows([whole], MAX_LENGTH, stride).items
    size = MAX_LENGTH - 2
    assert all(w.ids[0] == whole.ids[0] and w.ids[-1] == whole.ids[-1] for w in windows)
    assert all(len(w.ids) == MAX_LENGTH for w in windows[:-1]) and len(windows[-1].ids) <= MAX_LENGTH
    rebuilt = list(windows[0].ids[1:-1])
    for w in windows[1:]:
        assert w.ids[1:1 + stride] == rebuilt[len(rebuilt) - stride:]  # the overlap repeats the tail
        rebuilt += w.ids[1 + stride:-1]
    assert rebuilt == content
    assert windows[0].ids == tokenizer.encode_batch([LONG], truncation=True)[0].ids  # the truncated text
    assert len(windows) == len(window_starts(len(content), size, stride))


def test_chunk_logits_are_the_mean_of_independent_windows(pipe):
    texts = [LONG, "Court et bon.", LONG[:300]]
    predictor = Predictor(pipe, "chunk", stride=6)
    got = predictor.logits(texts)
    for text, logits in zip(texts, got, strict=True):
        windows = split_windows(pipe.tokenizer.encode_batch([text], truncation=False), MAX_LENGTH, 6).items
        alone = [pipe.forward([Item(w.ids, w.type_ids)])[0] for w in windows]  # one window per engine call
        np.testing.assert_allclose(logits, np.mean(alone, axis=0), rtol=1e-5, atol=1e-6)
    # A text that fits in one window is read as in truncate mode: the same ids, the same logits (up to
    # the last bits, which depend on what else shares the engine batch).
    short = pipe.tokenizer.encode_batch(["Court et bon."], truncation=False)
    assert split_windows(short, MAX_LENGTH, 6).items[0].ids == pipe.preprocess(["Court et bon."])[0].ids
    np.testing.assert_allclose(got[1], Predictor(pipe).logits(["Court et bon."])[0], rtol=1e-5, atol=1e-6)
    preds = predictor([Row({}, text=t) for t in texts])
    for pred, logits in zip(preds, got, strict=True):
        np.testing.assert_allclose(pred.scores, softmax(logits), rtol=1e-6)


def test_truncate_mode_counts_truncated_texts(pipe, tmp_path):
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps({"text": t}) + "\n" for t in [LONG, "Court.", LONG]))
    out = tmp_path / "out.jsonl"
    summary = classify_file(JobOptions(input=str(source), output=str(out)), lambda: pipe)
    assert summary.truncated == 2 and "2 texts reached the model's token limit" in summary.describe()
    chunked = classify_file(JobOptions(input=str(source), output=str(tmp_path / "c.jsonl"), long_text="chunk",
                                       stride=4), lambda: pipe)
    # chunk mode counts the texts read in several windows, and says so (no "truncated", nothing was cut)
    assert chunked.truncated == 2
    assert ("2 texts were longer than the model's token limit: read in overlapping windows, their logits averaged"
            in chunked.describe()) and "truncated" not in chunked.describe()
    rows = [json.loads(line) for line in (tmp_path / "c.jsonl").read_text().splitlines()]
    expected = Predictor(pipe, "chunk", 4)([Row({}, text=LONG)])[0]
    assert rows[0]["label"] == expected.label and rows[0]["score"] == pytest.approx(expected.score, abs=1e-6)


def test_bad_stride(pipe, tmp_path):
    with pytest.raises(InputError, match="stride 22: the tokens two windows share must be"):
        Predictor(pipe, "chunk", stride=22).logits([LONG])
    with pytest.raises(InputError, match="--stride only applies with --long-text chunk"):
        classify_file(JobOptions(input="x.csv", output=str(tmp_path / "o.csv"), stride=3), lambda: pipe)
    with pytest.raises(InputError, match="--long-text 'split'"):
        Predictor(pipe, "split")

"""The report folder of `coulisse evaluate`: report.md, three PNG plots, and the predictions file."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np

from coulisse.errors import InputError
from coulisse.interfaces.formatting import count
from coulisse.interfaces.jobs import plots
from coulisse.interfaces.jobs.evaluate import Evaluation
from coulisse.interfaces.jobs.metrics import Metrics, compute

PLOTS = {"confusion": "confusion_matrix.png", "reliability": "reliability.png",
         "histogram": "score_histogram.png"}


MARKDOWN_PUNCTUATION = re.compile(r"([!-/:-@\[-`{-~])")  # CommonMark escapes any ASCII punctuation


def md(text: str) -> str:
    """`text` as literal Markdown inline text, in a table cell too: a label `*bad*` or `a|b` shows as written
    (not emphasis, not a new column); a line break becomes a space."""
    return MARKDOWN_PUNCTUATION.sub(r"\\\1", " ".join(str(text).splitlines()))


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(r) + " |"
                                                                           for r in rows]


def _selection(ev: Evaluation) -> str:
    o = ev.options
    parts = []
    if o.limit is not None:
        parts.append(f"the first {count(o.limit, 'row')}")
    if o.sample is not None:  # a sample as large as the rows, or larger, takes them all: said so
        parts.append(f"a random sample of {o.sample:,}, seed {o.seed}" if ev.summary.rows >= o.sample else
                     f"all of them: --sample {o.sample:,} is more than there are")
    return ", then ".join(parts) if parts else "every row"


def covered(ev: Evaluation, metrics: Metrics, name: Callable[[str], str] = repr) -> str:
    """The rows the metrics cover, in words: `415 rows`, or `1 of 4 rows (3 could not be classified)` when rows
    of the job were left out, each reason counted (the counts add up to the job's rows); `name` writes the labels
    left out (quoted for the terminal, as Markdown text in the report)."""
    rows, c = ev.summary.rows, ev.collected
    if metrics.total == rows:
        return count(rows, "row")
    reasons = [(ev.summary.errored, "could not be classified"), (c.missing, "without a label"),
               (c.unknown.total(), f"{unknown_reason(ev)}: {_named(c.unknown, 3, name)}")]
    return f"{metrics.total:,} of {count(rows, 'row')} ({', '.join(f'{n:,} {why}' for n, why in reasons if n)})"


def unknown_reason(ev: Evaluation) -> str:
    """Why rows with an unknown label are out: with a --label-map, the map leaves their label out."""
    return "with a label --label-map does not map" if ev.options.label_map else "with a label the model does not know"


def _named(values: Counter, most: int, name: Callable[[str], str]) -> str:
    named = ", ".join(name(v) for v, _ in values.most_common(most))
    return named + (", ..." if len(values) > most else "")


def _counts(ev: Evaluation, metrics: Metrics) -> list[str]:
    c, s = ev.collected, ev.summary
    lines = [f"- Rows read: {c.read:,}; selected: {s.rows:,} ({_selection(ev)}); classified: {s.classified:,}; "
             f"evaluated: **{metrics.total:,}**",
             f"- Rows whose text could not be classified: {s.errored:,} (see `error` in the predictions)",
             f"- Rows without a label: {c.missing:,}"]
    if c.unknown:
        found = ", ".join(f"{md(v)} ({n:,})" for v, n in c.unknown.most_common(10))
        why = "not mapped by `--label-map` (nor one of the model's)" if ev.options.label_map else \
            "unknown to the model"
        lines.append(f"- Rows left out, their label {why}: {c.unknown.total():,}: {found}")
    if (problem := ev.unused_key_problem()) is not None:
        lines.append(f"- **{md(problem)}**")
    job = ev.options.job
    long_text = job.long_text + (f", stride {job.stride}" if job.stride is not None else "")
    lines.append(f"- Long texts: {long_text}; {count(s.truncated, 'text')} reached the model's token limit")
    lines.append(f"- Precision: {ev.precision}")
    if job.encoding is not None and not ev.options.input.lower().endswith(".parquet"):  # Parquet takes none
        lines.append(f"- Input read as {job.encoding}")
    if ev.caveat:
        lines += ["", f"> {ev.caveat}"]
    return lines


def _confusion(metrics: Metrics) -> list[str]:
    rows = [[f"**{md(t)}**"] + [f"{metrics.confusion[i, j]:,}" for j in range(len(metrics.labels))]
            for i, t in enumerate(metrics.labels)]
    return _table(["true \\ predicted", *map(md, metrics.labels)], rows)


def _bound(value: float) -> str:
    """A bin's bound as short as its width allows: 0.1, 0.05, 0.333 (--bins 20 printed (0.6, 0.6]: audit 43)."""
    text = f"{value:.3f}".rstrip("0")
    return text + "0" if text.endswith(".") else text


def _calibration(metrics: Metrics) -> list[str]:
    rows = []
    for i, b in enumerate(metrics.bins):
        if not b.count:
            continue
        bounds = f"{'[' if i == 0 else '('}{_bound(b.low)}, {_bound(b.high)}]"
        rows.append([bounds, f"{b.count:,}", f"{b.accuracy:.3f}", f"{b.confidence:.3f}",
                     f"{b.accuracy - b.confidence:+.3f}"])
    return _table(["top-1 score", "rows", "accuracy", "mean score", "accuracy - score"], rows)


def render(ev: Evaluation, metrics: Metrics, predictions: str) -> str:
    def image(alt: str, name: str) -> list[str]:
        return [f"![{alt}]({PLOTS[name]})", ""] if ev.options.plots else []  # --no-plots: none drawn

    histogram = ["## Scores by true label", "", *image("score histogram", "histogram")] if ev.options.plots else []
    per_class = [[md(label), f"{metrics.precision[k]:.4f}", f"{metrics.recall[k]:.4f}", f"{metrics.f1[k]:.4f}",
                  f"{int(metrics.support[k]):,}"] for k, label in enumerate(metrics.labels)]
    partial = [f"These metrics cover {covered(ev, metrics, md)}.", ""] if metrics.total < ev.summary.rows else []
    lines = [f"# Evaluation of `{ev.model}` on `{ev.options.input}`", "", *_counts(ev, metrics), "",
             "## Scores", "", *partial,
             *_table(["accuracy", "macro-F1", f"ECE ({len(metrics.bins)} bins)"],
                     [[f"{metrics.accuracy:.4f}", f"{metrics.macro_f1:.4f}", f"{metrics.ece:.4f}"]]), "",
             "## Per label", "", *_table(["label", "precision", "recall", "F1", "support"], per_class), "",
             "## Confusion matrix", "", "Rows are true labels, columns predicted ones.", "",
             *_confusion(metrics), "", *image("confusion matrix", "confusion"),
             "## Calibration", "",
             "Rows binned by their top-1 score: a calibrated model is right as often as its score says.", "",
             *_calibration(metrics), "", *image("reliability diagram", "reliability"),
             *histogram,
             "## Predictions", "", f"Every row, with its prediction: [{predictions}]({predictions}).", ""]
    return "\n".join(lines)


def write_report(ev: Evaluation) -> Metrics:
    directory = Path(ev.options.report_dir)
    c = ev.collected
    y_true = np.asarray(c.y_true, dtype=np.int64)
    probs = np.asarray(c.probs, dtype=np.float64).reshape(len(c.y_true), len(ev.labels))
    confidence = probs.max(axis=1) if len(probs) else np.zeros(0)
    metrics = compute(y_true, c.y_pred, confidence, ev.labels, ev.options.bins)
    if not metrics.total:
        raise InputError(f"no row of {ev.options.input} has both a classifiable text and a known label: "
                         f"nothing to evaluate (predictions are in {ev.options.job.output}).")
    if ev.options.plots:
        plots.confusion_plot(metrics, directory / PLOTS["confusion"])
        plots.reliability_plot(metrics, directory / PLOTS["reliability"])
        plots.score_histogram(metrics, y_true, probs, directory / PLOTS["histogram"])
    predictions = Path(ev.options.job.output).name
    (directory / "report.md").write_text(render(ev, metrics, predictions), encoding="utf-8")
    return metrics

"""Corpus jobs: `coulisse classify --input FILE --output FILE`, `coulisse embed --input` and `evaluate`.

    formats.py   extensions -> formats, rows, predictions, added column names
    sources.py   CSV/TSV/JSONL/TXT/Parquet/stdin, one row at a time; bad records become error rows
    readers.py   the column to read, each row checked, the input checked unchanged on --resume
    writers.py   appended CSV/TSV/JSONL, Parquet from durable parts, stdout
    state.py     the commit record that makes --resume exact
    predict.py   chunks through pipe.preprocess / pipe.forward / label_scores; long-text windows
    embed.py     `embed --input`: chunks through the feature-extraction stages; the .npy output
    runner.py    the resumable loop
    metrics.py, plots.py, report.py, evaluate.py   `coulisse evaluate`
    command.py   the click side: `classify --input`, `embed --input` and the `evaluate` command

Importing this package is cheap: torch, pyarrow and matplotlib load only when a job runs.
"""

from __future__ import annotations

__all__ = ["JobOptions", "Summary", "classify_file"]


def __getattr__(name: str):
    if name in __all__:
        from coulisse.interfaces.jobs import runner

        return getattr(runner, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))

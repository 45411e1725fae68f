"""The resumable corpus job: read a chunk, classify it, commit it, record the commit; repeat.

Exactness of `--resume`: the state record (see `state.py`) holds the number of input rows whose output
is durable and the output position that ends them. A resumed run cuts the output back to that position,
skips that many input rows, and goes on with the same chunk size, so every chunk is the same set of rows
as in an uninterrupted run; the engine's results depend only on a chunk's rows, hence the same bytes.
The input's size and mtime, the text column and every option that changes the output are part of the
record and must match.
"""

from __future__ import annotations

import itertools
import logging
import os
import signal
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from coulisse.errors import CoulisseError, InputError
from coulisse.interfaces.formatting import count, duration
from coulisse.interfaces.jobs import state as job_state
from coulisse.interfaces.jobs.formats import STDIO, Added, Prediction, Row, output_format
from coulisse.interfaces.jobs.predict import Predictor
from coulisse.interfaces.jobs.progress import Progress
from coulisse.interfaces.jobs.readers import Reader
from coulisse.interfaces.jobs.writers import make_sink

log = logging.getLogger(__name__)

DEFAULT_BATCH_ROWS = 1024


class JobInterrupted(CoulisseError):
    """The job was stopped by a signal; what was committed stays, and --resume continues.

    `exit_code` is what a shell reports for a process killed by that signal: 128 + its number.
    """

    def __init__(self, message: str, signum: int = signal.SIGINT):
        super().__init__(message)
        self.exit_code = 128 + signum


@dataclass
class JobOptions:
    input: str
    output: str = STDIO
    column: str | None = None
    all_scores: bool = False
    long_text: str = "truncate"
    stride: int | None = None
    resume: bool = False
    overwrite: bool = False
    quiet: bool = False
    progress: bool | None = None  # None: when stderr is a terminal
    batch_rows: int = DEFAULT_BATCH_ROWS
    model: str = ""  # recorded in the resume key
    quantize: str = "none"  # recorded in the resume key: int8 changes the scores


@dataclass
class Summary:
    output: str
    rows: int = 0
    classified: int = 0
    errored: int = 0
    truncated: int = 0
    resumed_from: int = 0
    seconds: float = 0.0  # this run's chunk loop (read, classify, commit, finish): what the rate divides
    load_seconds: float = 0.0  # loading the model, before the loop

    @property
    def rows_per_second(self) -> float:
        done = self.rows - self.resumed_from
        return done / self.seconds if self.seconds > 0 else 0.0

    def describe(self) -> str:
        text = f"{count(self.classified, 'row')} classified, {self.errored:,} errored"
        if self.errored:
            text += " (see the error column)"
        if self.resumed_from:
            text += f"; resumed after {count(self.resumed_from, 'row')}"
        done = self.rows - self.resumed_from
        text += f"; {count(done, 'row')} in {duration(self.seconds)} ({self.rows_per_second:,.1f} rows/s"
        text += f", after {duration(self.load_seconds)} loading the model)" if self.load_seconds else ")"
        if self.truncated:
            text += (f". {count(self.truncated, 'text')} reached the model's token limit and "
                     f"{'was' if self.truncated == 1 else 'were'} truncated (--long-text chunk reads "
                     f"{'it' if self.truncated == 1 else 'them'} whole)")
        return text + (f" -> {self.output}" if self.output != STDIO else "")


def check_options(options: JobOptions) -> None:
    if options.batch_rows < 1:
        raise InputError(f"--batch-rows {options.batch_rows}; pass a positive number of rows.")
    if options.output == STDIO and options.resume:
        raise InputError("--resume needs an --output file: stdout cannot be resumed.")
    if options.resume and options.overwrite:
        raise InputError("--resume and --overwrite contradict each other; pass one.")
    if options.stride is not None and options.long_text != "chunk":
        raise InputError("--stride only applies with --long-text chunk.")
    if options.input != STDIO and options.output != STDIO and \
            Path(options.input).absolute() == Path(options.output).absolute():
        raise InputError(f"--output {options.output} is the input file; write somewhere else.")


def prepare_output(options: JobOptions) -> job_state.JobState | None:
    """Before any model is loaded: the saved state to resume from, or None for a fresh start."""
    check_options(options)
    if options.output == STDIO:
        return None
    out = Path(options.output)
    path = job_state.state_path(out)
    saved = job_state.load(path)
    parts = out.with_name(out.name + ".parts")
    exists = (out.exists() and out.stat().st_size > 0) or parts.exists()
    if options.resume:
        if saved is None and exists:
            raise InputError(f"{out} exists but has no resume state ({path.name}): it is finished or was not "
                             "written by coulisse. Pass --overwrite to redo it.")
        return saved
    if (saved is not None or exists) and not options.overwrite:
        what = "holds an interrupted job" if saved is not None else "exists and is not empty"
        raise InputError(f"{out} {what}; pass --resume to continue it or --overwrite to replace it.")
    return None


def input_identity(path: str) -> dict:
    if path == STDIO:
        return {"input": STDIO}
    stat = os.stat(path)
    return {"input": str(Path(path).absolute()), "input_size": stat.st_size,
            "input_mtime_ns": stat.st_mtime_ns}


def job_key(options: JobOptions, reader: Reader, out_format: str) -> dict:
    return {**input_identity(options.input), "column": reader.text_column, "format": out_format,
            "all_scores": options.all_scores, "long_text": options.long_text, "stride": options.stride,
            "batch_rows": options.batch_rows, "model": options.model, "quantize": options.quantize}


def chunks(rows: Iterable[Row], size: int) -> Iterator[list[Row]]:
    it = iter(rows)
    while chunk := list(itertools.islice(it, size)):
        yield chunk


OnChunk = Callable[[list[Row], list[Prediction]], None]
RowsFilter = Callable[[Iterator[Row]], Iterator[Row]]


def classify_file(options: JobOptions, load_pipe: Callable[[], object], *, on_chunk: OnChunk | None = None,
                  rows_filter: RowsFilter | None = None, on_open: Callable[[Reader], None] | None = None,
                  stdin=None) -> Summary:
    """Run one corpus job; see the module's docstring for what `--resume` guarantees.

    Everything that can be checked without the model (options, the output, the input's columns) is
    checked before `load_pipe` is called.
    """
    saved = prepare_output(options)
    out_format = output_format(options.output)
    with Reader(options.input, options.column, options.batch_rows, stdin) as reader:
        if on_open is not None:
            on_open(reader)
        loading = time.perf_counter()
        pipe = load_pipe()
        loaded = time.perf_counter() - loading
        predictor = Predictor(pipe, options.long_text, options.stride)
        added = Added.for_columns(reader.columns, predictor.labels, options.all_scores)
        sink = make_sink(options.output, out_format, reader.columns, added, reader.schema)
        current = job_state.JobState(key=job_key(options, reader, out_format))
        if saved is not None:
            job_state.check_key(saved.key, current.key, options.output)
            current = saved
        elif options.output != STDIO:
            sink.remove()
            job_state.save(job_state.state_path(options.output), current)
        rows = itertools.islice(reader.rows(), current.rows, None)
        summary = _loop(options, reader, sink, predictor, current,
                        rows_filter(rows) if rows_filter else rows, on_chunk)
    summary.load_seconds = loaded
    return summary


def _loop(options, reader, sink, predictor, current, rows, on_chunk) -> Summary:
    summary = Summary(options.output, resumed_from=current.rows)
    path = job_state.state_path(options.output) if options.output != STDIO else None
    progress = Progress(reader, options.quiet, options.progress)
    start = time.perf_counter()
    written = current.rows  # rows on stdout, which has no record
    try:
        sink.open(current.position)
        for chunk in chunks(rows, options.batch_rows):
            preds = predictor(chunk)
            current.position = sink.commit(chunk, preds)
            _count(current, preds, predictor)
            if path is not None:
                job_state.save(path, current)
            written = current.rows
            if on_chunk is not None:
                on_chunk(chunk, preds)
            progress.update(len(chunk))
        sink.finish()
    except KeyboardInterrupt as stop:
        raise _interrupted(options.output, path, written, getattr(stop, "signum", signal.SIGINT)) from None
    finally:
        progress.close()
    if path is not None:
        job_state.remove(path)
    summary.seconds = time.perf_counter() - start
    summary.rows, summary.classified, summary.errored = current.rows, current.classified, current.errored
    summary.truncated = current.truncated
    return summary


def _interrupted(output: str, path: Path | None, written: int, signum: int) -> JobInterrupted:
    """The count a stop reports is the record's, read back from disk: a signal between a chunk's count
    and its record, or inside the record's write, leaves `current.rows` a chunk ahead of it."""
    if path is None:
        return JobInterrupted(f"interrupted after {count(written, 'row')} written to stdout.", signum)
    recorded = job_state.load(path)
    rows = recorded.rows if recorded is not None else 0
    return JobInterrupted(f"interrupted: {count(rows, 'row')} {'is' if rows == 1 else 'are'} safely in "
                          f"{output}; rerun with --resume to go on.", signum)


def _count(current: job_state.JobState, preds: list[Prediction], predictor: Predictor) -> None:
    errored = sum(p.error is not None for p in preds)
    current.rows += len(preds)
    current.errored += errored
    current.classified += len(preds) - errored
    current.truncated = current.truncated + predictor.truncated
    predictor.truncated = 0

"""The resumable corpus job: read a chunk, classify it, commit it, record the commit; repeat.

Exactness of `--resume`: the state record (see `state.py`) holds the number of input rows whose output
is durable and the output position that ends them. A resumed run cuts the output back to that position,
skips that many input rows, and goes on with the same chunk size, so every chunk is the same set of rows
as in an uninterrupted run; the engine's results depend only on a chunk's rows, hence the same bytes.
The record also fingerprints the job (the input's bytes read, the model's files, every option that
changes results; see `state.py`): a resume that differs in any of them is refused before the model loads
where it can be. The output is locked for the whole job (`lock.py`), and the input is checked after each
chunk is read: a file rewritten, truncated or appended to under the job stops it before that chunk is
committed. A write that fails (a full disk) stops it too, with what was committed kept for --resume.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import json
import logging
import os
import signal
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

from coulisse.errors import CoulisseError, InputError
from coulisse.interfaces.formatting import count
from coulisse.interfaces.jobs import state as job_state
from coulisse.interfaces.jobs.formats import STDIO, Added, Prediction, Row, output_format
from coulisse.interfaces.jobs.lock import OutputError, OutputLock, check_output_path
from coulisse.interfaces.jobs.predict import Predictor
from coulisse.interfaces.jobs.progress import Progress
from coulisse.interfaces.jobs.readers import InputChangedError, Reader
from coulisse.interfaces.jobs.resume import check_resumed, fingerprint, recorded_input, recorded_model
from coulisse.interfaces.jobs.summary import Summary
from coulisse.interfaces.jobs.writers import complete, finished_problem, make_sink

log = logging.getLogger(__name__)

DEFAULT_BATCH_ROWS = 1024


class JobFailedError(CoulisseError):
    """The job ran to its end but no row got a result: every row is an error row (exit 1)."""


class JobInterrupted(CoulisseError):
    """The job was stopped by a signal; what was committed stays, and --resume continues.

    `exit_code` is what a shell reports for a process killed by that signal: 128 + its number.
    """

    def __init__(self, message: str, signum: int = signal.SIGINT):
        super().__init__(message)
        self.signum = signum
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
    fast: bool = False  # --fast: recorded in the key when given; what it resolved to, in `engine`
    revision: str | None = None  # --revision of a Hub id: recorded in the key when given
    task: str = "classify"  # or "embed" (`embed_file`): a sentence embedding per row instead of labels
    pooling: str = "auto"  # embed: the feature-extraction pipeline's pooling and normalize options
    normalize: bool | None = None
    encoding: str | None = None  # the input's; None: UTF-8, its start checked (jobs/encodings.py)
    not_text: tuple[str, ...] = ()  # columns never taken for the text when none is named (evaluate's labels)


def check_options(options: JobOptions) -> None:
    if options.batch_rows < 1:
        raise InputError(f"--batch-rows {options.batch_rows}; pass a positive number of rows.")
    if options.output == STDIO and options.resume:
        raise InputError("--resume needs an --output file: stdout cannot be resumed.")
    if options.resume and options.overwrite:
        raise InputError("--resume and --overwrite contradict each other; pass one.")
    if options.stride is not None and options.long_text != "chunk":
        raise InputError("--stride only applies with --long-text chunk.")
    if options.input != STDIO and options.output != STDIO and same_file(options.input, options.output):
        raise InputError(f"--output {options.output} is the input file; write somewhere else.")


def same_file(a: str, b: str) -> bool:
    """The same path, or two names of one file (a hard link, a symlink): writing one would clobber the other."""
    if Path(a).absolute() == Path(b).absolute():
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist (yet)
        return False


def prepare_output(options: JobOptions, reader: Reader | None = None) -> job_state.JobState | None:
    """Before any model is loaded: the saved state to resume from, or None for a fresh start. A record that
    says the output is complete is checked against the output and, given its `reader`, the input."""
    check_options(options)
    if options.output == STDIO:
        return None
    out = Path(options.output)
    path = job_state.state_path(out)
    saved = None if options.overwrite else job_state.load(path)  # --overwrite is the way out of a bad record
    parts = out.with_name(out.name + ".parts")
    exists = (out.exists() and out.stat().st_size > 0) or parts.exists()
    if saved is not None and saved.finished and not options.overwrite:
        if problem := finished_problem(out, saved.key.get("format", ""), saved.position, saved.rows):
            raise InputError(f"{path} says {out} is complete, but {problem}: the record does not describe this "
                             "output; pass --overwrite to redo the job.")
        if reader is not None:
            _check_read_whole(options.output, saved, reader)
        if options.resume:
            return saved  # `_run` removes what the stop left
        raise InputError(f"{out} is complete ({count(saved.rows, 'row')}), but its job was stopped before it had "
                         f"removed its record {path.name}: pass --resume to finish that (nothing is computed again), "
                         "or --overwrite to redo the job.")
    if options.resume:
        if saved is None and exists:
            raise InputError(f"{out} exists but has no resume state ({path.name}): it is finished or was not "
                             "written by coulisse. Pass --overwrite to redo it.")
        return saved
    if saved is not None and not options.overwrite:
        raise InputError(f"{out} holds an interrupted job; pass --resume to continue it or --overwrite to replace it.")
    if exists and not options.overwrite:  # no record: nothing a --resume could go on with (audit 48: it sent there)
        raise InputError(f"{out} exists and is not empty, with no interrupted job to resume (no {path.name}); pass "
                         "--overwrite to replace it, or write to another --output.")
    return None


def job_key(options: JobOptions, reader: Reader, out_format: str) -> dict:
    """The options as given (the input's content is compared apart, by hash)."""
    key = {"input": recorded_input(options.input), "column": reader.text_column, "format": out_format,
           "all_scores": options.all_scores, "long_text": options.long_text, "stride": options.stride,
           "batch_rows": options.batch_rows, "model": recorded_model(options.model), "quantize": options.quantize}
    if options.task == "embed":
        key.update(task="embed", pooling=options.pooling, normalize=options.normalize)
    if options.fast:  # only when given: a record without it is a run without it
        key["fast"] = True
    if options.revision is not None:  # the same
        key["revision"] = options.revision
    if reader.encoding is not None:  # the same: a record without it read UTF-8, its start checked
        key["encoding"] = reader.encoding
    return key


def engine_key(pipe) -> dict:
    """What the loaded pipeline chose that changes results, whoever built it (the CLI or a caller)."""
    preparation = getattr(pipe, "preparation", None)
    options = json.loads(json.dumps(getattr(pipe, "defaults", {}), sort_keys=True, default=repr))
    # dtype and quantization as resolved: under --fast, this CPU's fast mode (`state.precision`).
    return {"dtype": str(pipe.dtype).removeprefix("torch."), "device": str(pipe.device),
            "quantization": getattr(preparation, "quantize", None),
            "max_length": pipe.tokenizer.model_max_length, "task_options": options}


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

    Everything that can be checked without the model (options, the output and its lock, the input's
    columns; on a resume, the recorded options, the input's committed bytes and the model's files) is
    checked before `load_pipe` is called.
    """
    check_options(options)
    out_format = output_format(options.output, options.task)
    with Reader(options.input, options.column, options.batch_rows, stdin, options.encoding,
                options.not_text) as reader:
        if on_open is not None:
            on_open(reader)  # evaluate creates the output's folder here, once the input is known good
        if options.output != STDIO:
            check_output_path(options.output)
        with OutputLock(options.output):
            return _run(options, reader, out_format, load_pipe, on_chunk, rows_filter)


def _run(options, reader, out_format, load_pipe, on_chunk, rows_filter) -> Summary:
    saved = prepare_output(options, reader)
    if saved is not None and saved.finished:
        return _tidied(options, saved)
    key = job_key(options, reader, out_format)
    rows = reader.rows()
    model = check_resumed(options, saved, key, reader, rows) if saved is not None else None
    loading = time.perf_counter()
    pipe = load_pipe()
    loaded = time.perf_counter() - loading
    predictor, added = _row_model(pipe, options, reader)
    sink = make_sink(options.output, out_format, reader.columns, added, reader.schema)
    current = job_state.JobState(key=key)
    if options.output != STDIO:
        current = _fingerprinted(options, saved, current, pipe, model, reader, sink, predictor)
    summary = _loop(options, reader, sink, predictor, current, rows_filter(rows) if rows_filter else rows,
                    on_chunk)
    summary.load_seconds = loaded
    summary.precision = job_state.precision(engine_key(pipe))
    summary.error_column = added.error
    return summary


def _check_read_whole(output: str, saved: job_state.JobState, reader: Reader) -> None:
    """A record that says finished was saved once the whole input was read: a file read by lines has as many
    bytes as the record read (a Parquet input is hashed whole, stdin cannot be measured)."""
    size = None if saved.input.get("whole") else reader.total
    if size is not None and size != saved.input["bytes"]:
        raise InputError(f"{job_state.state_path(output)} says {output} is complete after {saved.input['bytes']:,} "
                         f"bytes of its input, but the input has {size:,}: the record does not describe this job; "
                         "pass --overwrite to redo it.")


def _tidied(options: JobOptions, saved: job_state.JobState) -> Summary:
    """A job stopped after its output was complete, before it had put it in place (Parquet) and removed its
    parts and record: do that; the summary is the record's, nothing computed."""
    complete(options.output)
    job_state.remove(job_state.state_path(options.output))
    embed = options.task == "embed"
    return Summary(options.output, rows=saved.rows, classified=saved.classified, errored=saved.errored,
                   truncated=saved.truncated, resumed_from=saved.rows, verb="embedded" if embed else "classified",
                   long_text=options.long_text, precision=job_state.precision(saved.engine), finished=True)


def _row_model(pipe, options: JobOptions, reader: Reader):
    """What turns a chunk of rows into results, and the names of the columns it adds."""
    if options.task == "embed" and pipe.task == "sparse-embedding":
        from coulisse.interfaces.jobs.embed import SparseColumns, SparseEmbedder

        embedder = SparseEmbedder(pipe, options.pooling, options.normalize)
        return embedder, SparseColumns.for_columns(reader.columns, embedder.dim)
    if options.task == "embed":
        from coulisse.interfaces.jobs.embed import EmbedColumns, Embedder

        embedder = Embedder(pipe, options.pooling, options.normalize)
        return embedder, EmbedColumns.for_columns(reader.columns, embedder.dim)
    predictor = Predictor(pipe, options.long_text, options.stride)
    return predictor, Added.for_columns(reader.columns, predictor.labels, options.all_scores)


def embed_file(options: JobOptions, load_pipe: Callable[[], object], **kwargs) -> Summary:
    """`coulisse embed -i`: the same resumable job, with a sentence embedding per row (`jobs/embed.py`);
    `load_pipe` gives a feature-extraction pipeline. Keywords as `classify_file`'s."""
    return classify_file(replace(options, task="embed"), load_pipe, **kwargs)


def _fingerprinted(options, saved, current, pipe, model, reader, sink, predictor) -> job_state.JobState:
    """The loaded pipeline's side of the fingerprint: checked against a resumed record, or recorded."""
    directory = Path(pipe.checkpoint.directory)
    if model is None or model[0] != directory:
        model = fingerprint(directory)
    current.model, current.engine = model[1], engine_key(pipe)
    if hasattr(predictor, "fingerprint"):
        current.engine.update(predictor.fingerprint())
    if saved is not None:
        job_state.check_model(saved.model, current.model, options.output)
        job_state.check_precision(saved.engine, current.engine, options.fast, options.output)
        job_state.check_unrecorded_prompt(saved.engine, current.engine, options.output)
        job_state.check_key(saved.engine, current.engine, options.output)
        return saved
    current.input = reader.fingerprint()
    with _writing(options.output, 0):
        sink.remove()
        job_state.save(job_state.state_path(options.output), current)
    return current


@contextmanager
def _writing(output: str, committed: int):
    """A failed write (ENOSPC, EIO, EFBIG...) stops the job in one line; what was committed stays."""
    try:
        yield
    except OSError as e:
        if e.errno == errno.EPIPE:
            raise  # stdout closed by its reader (`| head`): click exits quietly
        name = errno.errorcode.get(e.errno, "") if e.errno else ""
        cause = f"{e.strerror} ({name})" if e.strerror and name else " ".join(str(e).split())
        if output == STDIO:
            raise OutputError(f"cannot write to stdout: {cause}; {count(committed, 'row')} were written.") \
                from None
        with contextlib.suppress(CoulisseError):  # the record on disk is what --resume will find
            recorded = job_state.load(job_state.state_path(output))
            committed = recorded.rows if recorded is not None else 0
        fix = {errno.ENOSPC: "free some space", errno.EDQUOT: "free some space (or raise the quota)",
               errno.EACCES: "make the folder and file writable", errno.EPERM: "make the folder and file writable",
               errno.EROFS: "write on a file system mounted read-write"}.get(e.errno, "fix the cause")
        kept = (f"the {count(committed, 'row')} committed before are kept: {fix} and rerun with --resume"
                if committed else f"no row was committed: {fix} and rerun")
        raise OutputError(f"cannot write {output}: {cause}; {kept}.") from None


def checked_chunks(reader: Reader, rows: Iterable[Row], size: int) -> Iterator[list[Row]]:
    """Chunks of rows, each read from an input that has not changed since it was opened."""
    it = chunks(rows, size)
    while True:
        try:
            chunk = next(it)
        except StopIteration:
            return
        except Exception:
            reader.check_unchanged()  # a reader failing on a file rewritten under it: say that instead
            raise
        reader.check_unchanged()
        yield chunk


def _loop(options, reader, sink, predictor, current, rows, on_chunk) -> Summary:
    embed = options.task == "embed"
    summary = Summary(options.output, resumed_from=current.rows, verb="embedded" if embed else "classified",
                      long_text=options.long_text)
    path = job_state.state_path(options.output) if options.output != STDIO else None
    progress = Progress(reader, options.quiet, options.progress, "embed" if embed else "classify", current.rows)
    start = time.perf_counter()
    written = current.rows  # rows on stdout, which has no record
    try:
        with _writing(options.output, current.rows):
            sink.open(current.position)
        for chunk in checked_chunks(reader, rows, options.batch_rows):
            preds = predictor(chunk)
            with _writing(options.output, written):
                current.position = sink.commit(chunk, preds)
                _count(current, preds, predictor)
                if path is not None:
                    current.input = reader.fingerprint()
                    job_state.save(path, current)
            written = current.rows
            if summary.first_error is None:
                summary.first_error = next((p.error for p in preds if p.error is not None), None)
            if on_chunk is not None:
                on_chunk(chunk, preds)
            progress.update(len(chunk))
        with _writing(options.output, written):
            sink.finish()
            if path is not None:  # the output is complete: say so before it goes into place and the parts go
                current.finished, current.input = True, reader.fingerprint()  # read to its end
                job_state.save(path, current)
                complete(options.output)
    except KeyboardInterrupt as stop:
        raise _interrupted(options.output, path, written, getattr(stop, "signum", signal.SIGINT)) from None
    except InputChangedError as e:
        where = f"committed to {options.output} are kept: --resume goes on after them if the bytes they came " \
                "from are unchanged, --overwrite starts over" if path is not None else "written to stdout"
        raise InputChangedError(f"{e} The job stopped; the {count(written, 'row')} {where}.") from None
    finally:
        progress.close()
        sink.close()
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
    if recorded is not None and recorded.finished:
        return JobInterrupted(f"interrupted after {output} was complete ({count(rows, 'row')}); rerun with --resume "
                              "to finish tidying up (nothing is computed again).", signum)
    return JobInterrupted(f"interrupted: {count(rows, 'row')} {'is' if rows == 1 else 'are'} safely in "
                          f"{output}; rerun with --resume to go on.", signum)


def _count(current: job_state.JobState, preds: list[Prediction], predictor: Predictor) -> None:
    errored = sum(p.error is not None for p in preds)
    current.rows += len(preds)
    current.errored += errored
    current.classified += len(preds) - errored
    current.truncated = current.truncated + predictor.truncated
    predictor.truncated = 0

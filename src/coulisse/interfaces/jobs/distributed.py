"""`coulisse classify|embed -i 'data/*.parquet' -o out/ --ray`: a corpus job on a Ray cluster, resumable by shard.

The driver reads every input file with the single-machine readers (so the rows, the error rows and the
text column are the single-machine job's, and `--encoding` decodes them there: actors only see texts), cuts
each file into shards of --batch-rows rows, and sends the texts of each shard not yet committed to a pool of
actors, each holding one pipeline and the job's row model (`Predictor` for classify, `Embedder` for embed:
jobs/row_models.py). Every text file's start is checked before Ray starts, as a single job checks its input's
(jobs/encodings.py). The results come back to the driver, which writes the shard's rows and results to
`out/<file>-<shard><ext>` through a temporary file and a rename: a shard file exists whole or not at all (the
folder, its manifest and shards: jobs/shards.py). Embeddings: the columns of `embed -i FILE.parquet|.jsonl`;
a `.npy` output is refused (one array cannot be written by shards).

A rerun of the same command skips the shard files already there, so the folder ends with every shard exactly
once, each equal to what an uninterrupted run writes: shard names sort in input order, and a shard's rows
are in input order. `out/_coulisse-job.json` records the inputs (paths, sizes, mtimes), the options that
change results and a digest of the model's files as the actors loaded them; a rerun that differs is refused.
A finished job records there how many shards each input gave: a rerun that finds them all says so without
starting Ray (a local one takes seconds to start, and its actors to load). Ray restarts an actor whose
process dies and retries its shards (`max_restarts`, `max_task_retries`); past that the job stops and a
rerun goes on. Why not Ray Data's `write_parquet`: its files are named per write task and its blocks are cut
by size, neither tied to input rows, so a rerun could not tell which rows are done; and its CSV/JSON readers
fail a whole file on one bad line.
"""

from __future__ import annotations

import glob
import itertools
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from coulisse.errors import InputError
from coulisse.hub import local_model
from coulisse.interfaces.formatting import count, duration
from coulisse.interfaces.jobs.encodings import check_encoding, check_file_starts
from coulisse.interfaces.jobs.formats import input_format
from coulisse.interfaces.jobs.lock import OutputError, OutputLock, check_writable
from coulisse.interfaces.jobs.readers import Reader
from coulisse.interfaces.jobs.resume import recorded_model
from coulisse.interfaces.jobs.row_models import added_columns
from coulisse.interfaces.jobs.shards import (  # noqa: F401  (callers and tests name them through this module)
    FORMATS,
    MANIFEST,
    TMP,
    Shard,
    changed_inputs,
    commit_shard,
    committed_shards,
    open_output,
    read_manifest,
    shard_name,
)
from coulisse.interfaces.jobs.state import digest, model_fingerprint, write_atomic

log = logging.getLogger(__name__)

VERSION = 1


@dataclass
class RayOptions:
    input: str
    output: str
    column: str | None = None
    all_scores: bool = False
    long_text: str = "truncate"
    stride: int | None = None
    batch_rows: int = 1024  # rows per shard
    model: str = ""
    quantize: str = "none"
    threads: int | None = None  # per actor
    actors: int | None = None
    address: str | None = None
    shard_format: str = "parquet"
    overwrite: bool = False
    quiet: bool = False
    max_restarts: int = 3  # per actor; its shards are retried as often
    task: str = "classify"  # or "embed": a sentence embedding per row (jobs/embed.py)
    pooling: str = "auto"  # embed: the feature-extraction pipeline's options
    normalize: bool | None = None
    encoding: str | None = None  # of the text inputs, read on the driver; None: UTF-8, each start checked
    fast: bool = False  # --fast: the precision the driver's kernel plan picks (`fast_mode`), run by every actor
    fast_mode: str | None = None  # set by `run` from this machine's plan: "int8", "bfloat16" or "float32"
    revision: str | None = None  # --revision of a Hub id, which each node resolves


@dataclass
class RaySummary:
    output: str
    actors: int = 0
    threads: int = 0
    shards: int = 0
    skipped: int = 0  # shards committed by an earlier run
    rows: int = 0  # rows classified in this run
    errored: int = 0
    truncated: int = 0
    seconds: float = 0.0
    task: str = "classify"
    precision: str = ""  # what the actors' weights ran in: said unless float32
    first_error: str | None = None  # this run's first error row's reason
    error_column: str = "error"

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else 0.0

    def describe(self) -> str:
        if not self.actors:  # a rerun of a finished job: Ray was not started
            return f"nothing left to do: {count(self.skipped, 'shard')} already committed, skipped -> {self.output}"
        text = (f"{count(self.rows, 'row')} in {count(self.shards, 'shard')} ({self.errored:,} errored) on "
                f"{count(self.actors, 'actor')} x {count(self.threads, 'thread')}")
        if self.skipped:
            text += f"; {count(self.skipped, 'shard')} already committed, skipped"
        text += f"; {duration(self.seconds)} ({self.rows_per_second:,.1f} rows/s"
        text += f"; {self.precision} weights)" if self.precision not in ("", "float32") else ")"
        if self.truncated:
            text += f"; {count(self.truncated, 'text')} truncated to the model's limit"
            text += " (--long-text chunk)" if self.task == "classify" else ""
        return f"{text} -> {self.output}"

    def failure(self) -> str | None:
        """The one line a job exits 1 with when every row of this run failed, as the single-machine job's
        (runner.Summary.failure). A rerun that skipped committed shards does not know their rows' errors
        (it would have to read the shards back), so only a run that skipped none can tell."""
        if self.rows == 0 or self.errored < self.rows or self.skipped:
            return None
        first = f"; the first: {self.first_error}" if self.first_error else ""
        return (f"every row failed ({self.errored:,} of {count(self.rows, 'row')} errored{first}); the reasons are "
                f"in the {self.error_column} column of the shards in {self.output}.")


def input_files(pattern: str) -> list[str]:
    """The files of --input: a path or a glob, sorted (their order is the shards' order)."""
    if pattern == "-":
        raise InputError("--ray reads files, not stdin; pass --input FILE or a glob such as 'data/*.parquet'.")
    files = sorted(p for p in glob.glob(os.path.expanduser(pattern), recursive=True) if os.path.isfile(p))
    if not files:
        raise InputError(f"--input {pattern!r}: no file matches; pass a file or a glob such as 'data/*.parquet'.")
    for f in files:
        input_format(f)  # an unknown extension is refused before anything starts
    return files


def job_key(options: RayOptions, files: list[str]) -> dict:
    inputs = []
    for f in files:
        st = os.stat(f)
        inputs.append({"path": str(Path(f).absolute()), "bytes": st.st_size, "mtime_ns": st.st_mtime_ns})
    key = {"version": VERSION, "inputs": inputs, "column": options.column, "all_scores": options.all_scores,
           "long_text": options.long_text, "stride": options.stride, "batch_rows": options.batch_rows,
           "model": options.model, "quantize": options.quantize, "format": options.shard_format}
    if options.task == "embed":  # as the single-machine record has them (runner.job_key)
        key.update(task="embed", pooling=options.pooling, normalize=options.normalize)
    if options.encoding is not None:  # only when given, as runner.job_key: a manifest without it read UTF-8
        key["encoding"] = check_encoding(options.encoding)
    if options.fast:  # only when given: a manifest without it ran the exact fp32 (or --quantize)
        key.update(fast=True, fast_mode=options.fast_mode)
    if options.revision is not None:  # the same
        key["revision"] = options.revision
    return key


def check_options(options: RayOptions) -> None:
    if options.batch_rows < 1:
        raise InputError(f"--batch-rows {options.batch_rows}; pass a positive number of rows.")
    if options.stride is not None and options.long_text != "chunk":
        raise InputError("--stride only applies with --long-text chunk.")
    if Path(options.output).suffix == ".npy":
        raise InputError(f"--output {options.output}: --ray writes a folder of Parquet or JSONL shards "
                         "(--shard-format), not one .npy file; pass a folder.")
    if options.shard_format not in FORMATS:
        raise InputError(f"--shard-format {options.shard_format!r}; use one of {', '.join(FORMATS)}.")
    for name in ("actors", "threads"):
        value = getattr(options, name)
        if value is not None and value < 1:
            raise InputError(f"--{name} {value}; pass a positive number.")
    check_encoding(options.encoding)
    if options.fast and options.quantize != "none":
        raise InputError(f"--fast picks the precision itself; drop --quantize {options.quantize}, or drop --fast.")


def run(options: RayOptions, on_shard: Callable[[str, object], None] | None = None) -> RaySummary:
    """Run the job; `on_shard(name, pool)` is called after each commit (tests kill actors from it)."""
    from coulisse.interfaces.jobs.cluster import Pool, connect

    check_options(options)
    if options.fast and options.fast_mode is None:  # once, here: every actor runs the driver's choice
        from coulisse.engine.cpu import this_machine

        options = replace(options, fast_mode=this_machine().fast)
        log.info("--fast: %s on every actor (the fast mode of this machine's kernel plan: coulisse info)",
                 options.fast_mode)
    # A model folder as an absolute path: the actors of a `ray start` cluster run in Ray's own working folder,
    # where a relative one names nothing (and a rerun naming it absolutely is the same job).
    options = replace(options, model=recorded_model(options.model))
    files = input_files(options.input)
    check_file_starts(files, options.encoding)
    for path in files:  # the text column of each (a --column typo), said before Ray starts and the models load
        with Reader(path, options.column, options.batch_rows, encoding=options.encoding):
            pass
    out = Path(options.output)
    if not out.parent.absolute().is_dir():
        raise InputError(f"--output {out}: the folder {out.parent.absolute()} does not exist; create it first.")
    if not out.is_dir():
        check_writable(out, "--output", folder=True)
    out.mkdir(exist_ok=True)
    with OutputLock(str(out / "_coulisse"), said=f"{out}/", then="rerun the same command"):
        manifest = open_output(out, job_key(options, files), options.overwrite)
        committed = committed_shards(out, files, manifest, options.shard_format)
        if committed is not None and same_model_here(options.model, manifest, options.revision):
            return RaySummary(str(out), skipped=committed, task=options.task)  # nothing left: no Ray started
        with connect(options.address) as local, Pool(options, local) as pool:
            engine = json.loads(json.dumps(pool.info["engine"], sort_keys=True))  # as read back
            if manifest["model_files"] not in (None, pool.digest) or manifest.get("engine") not in (None, engine):
                raise InputError(f"--output {out} was written with other model files than the actors loaded "
                                 f"({options.model}); pass --overwrite to start over with these.")
            manifest["model_files"] = pool.digest
            manifest["engine"] = engine  # embed: the pooling "auto" resolved to (runner's record has it too)
            manifest["precision"] = pool.info.get("precision")  # what the actors' weights ran in
            write_atomic(out / MANIFEST, json.dumps(manifest, sort_keys=True).encode())
            summary = RaySummary(str(out), pool.size, pool.threads, task=options.task,
                                 precision=pool.info.get("precision", ""))
            start = time.perf_counter()
            manifest["shards"] = _loop(options, files, out, pool, summary, on_shard)
            summary.seconds = time.perf_counter() - start
        manifest["complete"] = True
        write_atomic(out / MANIFEST, json.dumps(manifest, sort_keys=True).encode())
    return summary


def same_model_here(model: str, manifest: dict, revision: str | None = None) -> bool:
    """Whether `model` is a folder on this machine, the bundled model or a Hub id in this machine's Hugging Face
    cache (offline: its snapshot, as a load here finds it before asking the Hub) whose files are those the job
    recorded, hashed without loading it as a single-machine rerun does. A Hub id not in the cache here goes to
    the cluster, whose actors resolve it on their nodes and check there."""
    if not model:
        return False
    directory = local_model(model, revision)  # hub.resolve_model's order, without the network
    if directory is None:
        return False
    return manifest.get("model_files") == digest(model_fingerprint(directory))


def _loop(options, files, out, pool, summary, on_shard) -> list[int]:
    """Every shard not yet committed, through the pool; returns each input file's number of shards."""

    def commit(done) -> None:
        shard, preds, truncated = done
        try:
            commit_shard(out, shard, preds, options.shard_format)
        except OSError as e:  # a full or read-only disk: said as the single-machine job says it, with the way on
            raise OutputError(f"cannot write the shard {shard.name} in {out}: {e.strerror or e}; the shards "
                              f"committed before it stay: fix the cause and rerun the same command to go on.") \
                from None
        summary.shards += 1
        summary.rows += len(preds)
        summary.errored += sum(p.error is not None for p in preds)
        if summary.first_error is None:
            summary.first_error = next((p.error for p in preds if p.error is not None), None)
            summary.error_column = shard.added.error
        summary.truncated += truncated
        if on_shard is not None:
            on_shard(shard.name, pool)

    counts = []
    for index, path in enumerate(files):
        with Reader(path, options.column, options.batch_rows, encoding=options.encoding) as reader:
            added = added_columns(options, reader.columns, pool.info)
            rows = reader.rows()
            for number in itertools.count():
                chunk = list(itertools.islice(rows, options.batch_rows))
                if not chunk:
                    break
                reader.check_unchanged()
                name = shard_name(index, path, number, options.shard_format)
                if (out / name).exists():
                    summary.skipped += 1
                    continue
                while pool.full():
                    commit(pool.next_done())
                pool.submit(Shard(name, chunk, reader.columns, added, reader.schema))
            counts.append(number)
    while pool.busy():
        commit(pool.next_done())
    return counts


def run_cli(ctx, task: str = "classify") -> None:
    """`coulisse classify --ray` / `coulisse embed --ray`: the job from the command's parameters."""
    import click

    from coulisse.interfaces.jobs.command import bound_kernel_cache, stop_on_sigterm
    from coulisse.interfaces.options import FAST_KEY, REVISION_KEY

    params = ctx.params
    try:
        import ray  # noqa: F401
    except ImportError:
        raise click.ClickException('--ray needs Ray, which is not installed: pip install "coulisse[ray]"') \
            from None
    if params["input_path"] is None or params["output"] in (None, "-"):
        raise click.UsageError("--ray needs --input FILE|GLOB and --output FOLDER.")
    if params["texts"]:
        raise click.UsageError("give TEXT arguments or --input FILE, not both.")
    if params["resume"] and params["overwrite"]:
        raise click.UsageError("--resume and --overwrite contradict each other; pass one.")
    model = params["model"]
    if model is None and task == "embed":
        raise click.UsageError("give --model: an encoder (Hub id or folder), or set COULISSE_MODEL.")
    if model is None:
        from coulisse.hub_fallback import default_model

        model = default_model("text-classification", ctx.meta.get(REVISION_KEY))  # here: every node loads it
    names = ("column", "all_scores", "long_text", "stride", "batch_rows", "quantize", "threads", "actors",
             "address", "shard_format", "overwrite", "quiet", "pooling", "normalize", "encoding")
    options = RayOptions(input=params["input_path"], output=params["output"], model=model, task=task,
                         fast=bool(ctx.meta.get(FAST_KEY)), revision=ctx.meta.get(REVISION_KEY),
                         **{name: params[name] for name in names if name in params})
    bound_kernel_cache()
    with stop_on_sigterm():
        try:
            summary = run(options)
        except KeyboardInterrupt as stop:
            from coulisse.interfaces.jobs.runner import JobInterrupted
            from coulisse.interfaces.jobs.shards import shards_in

            done = shards_in(Path(options.output))
            raise JobInterrupted(f"interrupted; {done:,} shard{'s' * (done != 1)} committed in {options.output} "
                                 "stay: rerun the same command to go on.", getattr(stop, "signum", 2)) from None
    if (failure := summary.failure()) is not None:
        from coulisse.interfaces.jobs.runner import JobFailedError

        raise JobFailedError(failure)
    if not options.quiet:
        click.echo(summary.describe(), err=True)

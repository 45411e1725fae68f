"""The click side of corpus jobs: `classify --input` (called by the `classify` command) and `evaluate`.

Nothing heavy is imported here at module level: `coulisse --help` must stay fast.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

import click

DEFAULT_MODEL = "tblard/tf-allocine"  # as the `coulisse` group's; kept here to avoid a circular import


@contextmanager
def stop_on_sigterm():
    """SIGTERM stops a job like Ctrl-C: the committed chunks stay and the message says how to resume."""
    def interrupt(signum, frame):
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, interrupt)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def bound_kernel_cache() -> None:
    """Keep a long job's memory flat: oneDNN caches one kernel per distinct packed-batch shape (up to
    1,024), which made a 1,000,000-row job peak 80 MiB higher than a 1,000-row one; a cap of 16 measured
    no slower (docs/benchmarks.md). Read when torch loads, so set before; a user's setting wins."""
    if "torch" not in sys.modules:
        os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "16")


def run_job(texts: tuple[str, ...], input_path: str | None, load: Callable[[], object], **options) -> None:
    """`coulisse classify --input FILE [--output FILE]`: a resumable corpus job."""
    bound_kernel_cache()
    from coulisse.interfaces.jobs.runner import JobOptions, classify_file

    if input_path is None:
        raise click.UsageError("--output needs --input FILE (TEXT arguments are printed on stdout).")
    if texts:
        raise click.UsageError("give TEXT arguments or --input FILE, not both.")
    job = JobOptions(input=input_path, output=options.pop("output") or "-", **options)
    folder = Path(job.output).absolute().parent
    if job.output != "-" and not folder.is_dir():
        raise click.BadParameter(f"{job.output}: the folder {folder} does not exist.", param_hint="--output")
    with stop_on_sigterm():
        summary = classify_file(job, load)
    if not job.quiet:
        click.echo(summary.describe(), err=True)


def job_options(f):
    """Options that `evaluate` shares with `classify --input`, each with its COULISSE_* fallback."""
    options = [
        click.option("-c", "--column", default=None, envvar="COULISSE_COLUMN",
                     help="Text column (default: 'text', else the only string column)."),
        click.option("--long-text", type=click.Choice(["truncate", "chunk"]), default="truncate",
                     show_default=True, envvar="COULISSE_LONG_TEXT",
                     help="Texts over the model's limit: keep the start, or average the logits of "
                          "overlapping windows that cover the whole text."),
        click.option("--stride", type=int, default=None, envvar="COULISSE_STRIDE",
                     help="With --long-text chunk: tokens shared by consecutive windows "
                          "(default: a quarter of the window)."),
        click.option("-b", "--batch-rows", type=int, default=1024, show_default=True,
                     envvar="COULISSE_BATCH_ROWS", help="Rows read, classified and committed at a time."),
        click.option("--quiet", is_flag=True, envvar="COULISSE_QUIET", help="No progress bar, no summary."),
        click.option("--progress/--no-progress", default=None, envvar="COULISSE_PROGRESS",
                     help="Show the progress bar even when stderr is not a terminal (or never)."),
        click.option("-m", "--model", default=DEFAULT_MODEL, show_default=True, envvar="COULISSE_MODEL",
                     help="Hub id or local folder of the checkpoint."),
        click.option("-t", "--threads", type=int, default=None, envvar="COULISSE_THREADS",
                     help="CPU threads (default: all physical cores)."),
        click.option("-q", "--quantize", type=click.Choice(["none", "int8"]), default="none",
                     envvar="COULISSE_QUANTIZE", show_default=True, help="int8: dynamic int8 linear layers."),
    ]
    for option in reversed(options):
        f = option(f)
    return f


@click.command()
@click.option("-i", "--input", "input_path", required=True, envvar="COULISSE_INPUT",
              help="Labelled file: .csv, .tsv, .jsonl, .parquet, or - for JSONL on stdin.")
@click.option("-l", "--label-column", default="label", show_default=True, envvar="COULISSE_LABEL_COLUMN",
              help="Column of true labels: the model's label names or ids.")
@click.option("-o", "--output-dir", default="coulisse-evaluation", show_default=True,
              envvar="COULISSE_OUTPUT_DIR", help="Report folder: report.md, PNG plots, predictions.")
@click.option("-n", "--limit", type=int, default=None, envvar="COULISSE_LIMIT", help="Only the first N rows.")
@click.option("-s", "--sample", type=int, default=None, envvar="COULISSE_SAMPLE",
              help="A uniform random sample of N rows (after --limit), kept in file order.")
@click.option("--seed", type=int, default=0, show_default=True, envvar="COULISSE_SEED",
              help="Seed of --sample.")
@click.option("--bins", type=int, default=10, show_default=True, envvar="COULISSE_BINS",
              help="Score bins of the calibration table.")
@click.option("--overwrite", is_flag=True, envvar="COULISSE_OVERWRITE",
              help="Replace a report already there.")
@job_options
def evaluate(input_path, label_column, output_dir, limit, sample, seed, bins, overwrite, column, long_text,
             stride, batch_rows, quiet, progress, model, threads, quantize):
    """Evaluate a classifier on a labelled file: accuracy, macro-F1, per-label precision and recall,
    confusion matrix, calibration; writes report.md, PNG plots and every prediction to a folder.

    \b
    Examples:
      coulisse evaluate -i reviews.csv --label-column label -o report/
      coulisse evaluate -i reviews.parquet -m ./my-model --sample 500 --seed 1
      coulisse evaluate -i reviews.jsonl --long-text chunk --limit 1000
    """
    from coulisse.interfaces.cli import load_pipeline
    from coulisse.interfaces.jobs.evaluate import EvalOptions, evaluate_file
    from coulisse.interfaces.jobs.report import write_report
    from coulisse.interfaces.jobs.runner import JobInterrupted, JobOptions

    if bins < 1:
        raise click.BadParameter(f"{bins}; pass a positive number of bins.", param_hint="--bins")
    job = JobOptions(input=input_path, column=column, long_text=long_text, stride=stride,
                     batch_rows=batch_rows, quiet=quiet, progress=progress, overwrite=overwrite, model=model)
    options = EvalOptions(input_path, label_column, output_dir, limit, sample, seed, bins, job)
    bound_kernel_cache()

    def load():
        return load_pipeline("text-classification", model, threads, quantize)

    with stop_on_sigterm():
        try:
            result = evaluate_file(options, load)
        except JobInterrupted:
            raise click.ClickException("interrupted; run the evaluation again (--overwrite).") from None
    metrics = write_report(result)
    if not quiet:
        click.echo(result.summary.describe(), err=True)
    click.echo(f"accuracy {metrics.accuracy:.4f}  macro-F1 {metrics.macro_f1:.4f}  ECE {metrics.ece:.4f}  "
               f"on {metrics.total:,} rows -> {output_dir}/report.md", file=sys.stdout)

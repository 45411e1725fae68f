"""The click side of corpus jobs: `classify --input` (called by the `classify` command) and `evaluate`.

Nothing heavy is imported here at module level: `coulisse --help` must stay fast.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click
from click.core import ParameterSource

from coulisse.errors import InputError
from coulisse.interfaces.jobs.encodings import check_encoding, check_file_starts
from coulisse.interfaces.options import (
    FAST_KEY,
    REVISION_KEY,
    Choice,
    fast_option,
    given_revision,
    load_pipeline,
    model_option,
    quantize_option,
    set_wait_policy,
    stop_on_sigterm,
    threads_option,
)

if TYPE_CHECKING:
    from coulisse.interfaces.jobs.runner import JobOptions


def bound_kernel_cache() -> None:
    """Keep a long job's memory flat: oneDNN caches one kernel per distinct packed-batch shape (up to
    1,024), which made a 1,000,000-row job peak 80 MiB higher than a 1,000-row one; a cap of 16 measured
    no slower (docs/benchmarks.md). Read when torch loads, so set before; a user's setting wins."""
    if "torch" not in sys.modules:
        os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "16")
    os.environ.setdefault("LRU_CACHE_CAPACITY", "16")  # ideep's cache of the same kernels, read at first use


# What a resumed job reads from its state record: the record's key -> the `classify` parameter (and --fast,
# which is no parameter: `_resumed_fast`).
RESUMED = {"input": "input_path", "model": "model", "quantize": "quantize", "column": "column",
           "all_scores": "all_scores", "long_text": "long_text", "stride": "stride", "batch_rows": "batch_rows",
           "encoding": "encoding"}
# The same for `embed --input`.
EMBED_RESUMED = {"input": "input_path", "model": "model", "quantize": "quantize", "column": "column",
                 "batch_rows": "batch_rows", "pooling": "pooling", "normalize": "normalize", "encoding": "encoding"}
ENCODING_HELP = ("Encoding of the input (file or stdin): any Python codec that writes ASCII as ASCII, such as cp1252 "
                 "(Excel's CSV on Windows) or latin-1. Default: UTF-8, and an input whose first 64 KiB are not UTF-8 "
                 "is refused; --encoding utf-8 reads it anyway, such lines becoming error rows.")


def _checked_encoding(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """--encoding as its codec's canonical name; an unknown codec is refused in one line (an InputError, which
    the CLI prints alone) that names COULISSE_ENCODING when the value came from there."""
    from_variable = ctx.get_parameter_source(param.name) is ParameterSource.ENVIRONMENT
    return check_encoding(value, f"COULISSE_ENCODING={value}" if from_variable else None)


def encoding_option():
    return click.option("--encoding", default=None, metavar="NAME", envvar="COULISSE_ENCODING",
                        callback=_checked_encoding, help=ENCODING_HELP)


def check_encoding_applies(ctx: click.Context) -> None:
    """--encoding typed for a Parquet input is a usage error, not a no-op: Parquet's strings are UTF-8. (From
    COULISSE_ENCODING, set for CSV jobs, it is left alone, as `check_mode_options` leaves variables.)"""
    path = ctx.params.get("input_path")
    if ctx.params.get("encoding") is None or ctx.get_parameter_source("encoding") is not ParameterSource.COMMANDLINE:
        return
    if path is not None and path.lower().endswith(".parquet"):
        raise click.UsageError(f"--encoding applies to text inputs (.csv .tsv .jsonl .txt, stdin); {path} is "
                               "Parquet, whose strings are UTF-8: leave --encoding out.")


def run_job(ctx: click.Context) -> None:
    """`coulisse classify --input FILE [--output FILE]`: a resumable corpus job, from the command's
    parameters (`ctx.params`); with --resume, the first run's options come from its state record."""
    _run_corpus_job(ctx, "classify")


def run_embed_job(ctx: click.Context) -> None:
    """`coulisse embed --input FILE [--output FILE]`: the same resumable job, with a sentence embedding per row
    (`jobs/embed.py`); with --resume, the first run's options come from its state record."""
    _run_corpus_job(ctx, "embed")


# The parameters each job passes to JobOptions, and the record's keys a resume reads back.
JOB_PARAMS = {
    "classify": (("column", "all_scores", "long_text", "stride", "resume", "overwrite", "quiet", "progress",
                  "batch_rows", "model", "quantize", "encoding"), RESUMED),
    "embed": (("column", "resume", "overwrite", "quiet", "progress", "batch_rows", "model", "quantize", "pooling",
               "normalize", "encoding"), EMBED_RESUMED),
}


def _run_corpus_job(ctx: click.Context, task: str) -> None:
    """`classify --input` or `embed --input` (`task`), from the command's parameters."""
    bound_kernel_cache()
    set_wait_policy()  # before torch loads, as the kernel cache's bound
    from coulisse.interfaces.jobs.runner import JobOptions, classify_file

    names, resumed_keys = JOB_PARAMS[task]
    params = dict(ctx.params)
    if params["output"] not in (None, "-"):
        from coulisse.interfaces.jobs.formats import output_format
        from coulisse.interfaces.jobs.lock import OutputLock, check_output_path

        # A folder that is missing or read-only, an extension no writer has, or another job writing the output,
        # is said first, before the state record is read and the model resolved (the Hub, maybe: seconds);
        # the job takes the lock again for its run.
        check_output_path(params["output"])
        output_format(params["output"], task)
        with OutputLock(params["output"]):
            pass
    if params["resume"] and params["output"]:
        params.update(resumed_options(ctx, params, resumed_keys))
    check_job_input(params)  # before the default model is looked up (the Hub, maybe)
    check_file_starts([params["input_path"]], params["encoding"])
    revision = ctx.meta.get(REVISION_KEY)
    if params["model"] is None and task == "embed":
        raise click.UsageError("give --model: an encoder (Hub id or folder), or set COULISSE_MODEL.")
    if params["model"] is None:
        from coulisse.hub_fallback import default_model

        # Recorded as resolved: a resume must not switch between tf-allocine and the bundled model.
        params["model"] = default_model("text-classification", revision)
    job = JobOptions(input=params["input_path"], output=params["output"] or "-", task=task,
                     fast=bool(ctx.meta.get(FAST_KEY)), revision=revision, **{name: params[name] for name in names})
    pipeline_task = _pipeline_task(job)

    def load():
        return load_pipeline(pipeline_task, job.model, params["threads"], job.quantize, throughput=True,
                             revision=job.revision)

    with stop_on_sigterm():
        summary = classify_file(job, load)  # `job.task` picks the rows' model and columns
    finish(summary, job.quiet)


def _pipeline_task(job: JobOptions) -> str:
    """The pipeline a job loads. An embedding job runs SPLADE (sparse weights per row) for --pooling splade or a
    SparseEncoder folder read with auto, which resolves the model: said after every cheaper check."""
    if job.task == "classify":
        return "text-classification"
    from coulisse.interfaces.jobs.row_models import is_sparse

    if not is_sparse(job.model, job.pooling, job.revision):
        return "feature-extraction"
    if job.output.endswith(".npy"):
        raise click.UsageError(f"--output {job.output}: .npy holds dense arrays; write SPLADE weights to .parquet "
                               "or .jsonl (indices and values per row).")
    return "sparse-embedding"


def check_job_input(params: dict) -> None:
    """A corpus job has an input, from --input or, with --resume, from the first run's record."""
    if params["input_path"] is None:
        output = params["output"]
        if params["resume"] and output not in (None, "-"):
            from coulisse.interfaces.jobs import state as job_state

            raise InputError(f"nothing to resume at {output}: there is no job record "
                             f"{job_state.state_path(output).name} next to it (the job finished, or never "
                             "started). Run it with --input FILE.")
        raise click.UsageError("--output needs --input FILE (TEXT arguments are printed on stdout).")
    if params["texts"]:
        raise click.UsageError("give TEXT arguments or --input FILE, not both.")


# The options one mode of `classify` / `embed` reads, and what to use in the others. A mode is "text" (TEXT
# arguments or stdin lines, printed), "job" (--input / --output) or "ray" (--ray).
MODE_OPTIONS: dict[str, tuple[frozenset[str], str]] = {
    "top_k": (frozenset({"text"}), "a job writes the best label, and every label's score with --all-scores"),
    "all_scores": (frozenset({"job", "ray"}), "for TEXT arguments, -k N prints the N best labels"),
    "column": (frozenset({"job", "ray"}), ""),
    "resume": (frozenset({"job", "ray"}), ""),
    "overwrite": (frozenset({"job", "ray"}), ""),
    "quiet": (frozenset({"job", "ray"}), ""),
    "progress": (frozenset({"job", "ray"}), ""),
    "batch_rows": (frozenset({"job", "ray"}), ""),
    "address": (frozenset({"ray"}), ""),
    "actors": (frozenset({"ray"}), ""),
    "shard_format": (frozenset({"ray"}), ""),
    "encoding": (frozenset({"job", "ray"}), "TEXT arguments and stdin lines are read as UTF-8; --input - reads "
                 "stdin as a job, in any --encoding"),
}
MODE_NAMES = {"text": "TEXT arguments", "job": "--input jobs", "ray": "--ray jobs"}


def check_mode_options(ctx: click.Context) -> None:
    """An option typed on the command line that the chosen mode would ignore is a usage error, not a
    silent no-op (`classify --all-scores "Bien."`, `classify -i x.csv -o y.csv --actors 4`). The same
    option from its COULISSE_* variable is left alone: a variable set for jobs must not break TEXT runs."""
    params = ctx.params
    mode = "ray" if params.get("on_ray") else "text" if params["input_path"] is None and params["output"] is None \
        else "job"
    for name, value in params.items():
        if ctx.get_parameter_source(name) is not ParameterSource.COMMANDLINE:
            continue
        if name == "as_json" and value and mode != "text" and params["output"] not in (None, "-"):
            raise click.UsageError(f"--json prints TEXT results as JSON lines; a job writes the format of --output "
                                   f"{params['output']} (.jsonl for JSON lines).")
        if name not in MODE_OPTIONS or mode in MODE_OPTIONS[name][0]:
            continue
        option = next(p for p in ctx.command.params if p.name == name)
        typed = _as_typed(option, value) if option.secondary_opts else max(option.opts, key=len)
        modes, hint = MODE_OPTIONS[name]
        where = " and ".join(MODE_NAMES[m] for m in sorted(modes, key=list(MODE_NAMES).index))
        raise click.UsageError(f"{typed} applies to {where}, not to {MODE_NAMES[mode]}"
                               + (f"; {hint}." if hint else "."))
    check_encoding_applies(ctx)


def finish(summary, quiet: bool) -> None:
    """The summary line; a job in which every row failed exits 1 with one line instead (it says how many,
    the first reason and where the rest are), so that `coulisse classify ... && next-step` stops there."""
    from coulisse.interfaces.jobs.runner import JobFailedError

    failure = summary.failure()
    if failure is not None:
        raise JobFailedError(failure)
    if not quiet:
        click.echo(summary.describe(), err=True)


def resumed_options(ctx: click.Context, params: dict, keys: dict[str, str] = RESUMED) -> dict:
    """The options of the run that --resume continues, read from `<output>.coulisse-state.json`.

    A value the user set (argument or COULISSE_* variable) that differs from the recorded one is refused
    rather than ignored: the rows already written were computed with the recorded one. No record: {}.
    """
    from coulisse.interfaces.jobs import state as job_state
    from coulisse.interfaces.jobs.resume import RENAMEABLE

    path = job_state.state_path(params["output"])
    saved = job_state.load(path)
    if saved is None:
        return {}
    _resumed_fast(ctx, params, saved, path)
    _resumed_revision(ctx, params, saved, path)
    resumed = {}
    for key, name in keys.items():
        if key not in saved.key:
            continue
        recorded, given = saved.key[key], params[name]
        explicit = ctx.get_parameter_source(name) in (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)
        if explicit and key in RENAMEABLE:  # another name of the same file or model is fine: the runner compares
            resumed[name] = given          # their bytes with the record's before the model loads (jobs/resume.py)
            continue
        if explicit and given != recorded:
            option = next(p for p in ctx.command.params if p.name == name)
            flag = max(option.opts, key=len)
            if getattr(option, "is_flag", False):  # said as typed: --all-scores, --no-normalize, neither
                raise InputError(f"cannot resume {params['output']} with {_as_typed(option, given)}: the first run "
                                 f"had {_as_typed(option, recorded)} (recorded in {path.name}). Leave it as the first "
                                 "run had it, or pass --overwrite to start over.")
            raise InputError(f"cannot resume {params['output']} with {flag} {_shown(given)}: the first run had "
                             f"{flag} {_shown(recorded)} (recorded in {path.name}). Leave {flag} out to go on "
                             "with the recorded value, or pass --overwrite to start over.")
        resumed[name] = recorded
    return resumed


def _as_typed(option: click.Option, value) -> str:
    """A flag's value as the command line says it: `--all-scores` or `no --all-scores`; for a pair,
    `--normalize`, `--no-normalize`, or neither (None: the default)."""
    flag = max(option.opts, key=len)
    if option.secondary_opts:
        off = max(option.secondary_opts, key=len)
        return flag if value is True else off if value is False else f"neither {flag} nor {off}"
    return flag if value else f"no {flag}"


def _resumed_revision(ctx: click.Context, params: dict, saved, path: Path) -> None:
    """--revision is read back from the record as --fast is: given against the record, it is refused."""
    recorded, given = saved.key.get("revision"), ctx.meta.get(REVISION_KEY)
    explicit = ctx.get_parameter_source("revision") in (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)
    if explicit and given != recorded:
        raise InputError(f"cannot resume {params['output']} with --revision {given}: the first run had "
                         f"{'--revision ' + recorded if recorded else 'no --revision'} (recorded in {path.name}). "
                         "Leave --revision out to go on with the recorded one, or pass --overwrite to start over.")
    ctx.meta[REVISION_KEY] = recorded


def _resumed_fast(ctx: click.Context, params: dict, saved, path: Path) -> None:
    """--fast is read back from the record like the options of `RESUMED` (it is not a parameter: `fast_option`
    keeps it in the context's meta, where `load_pipeline` and the job read it). Given against the record, or a
    --quantize given where the first run's --fast chose the precision, it is refused in one line."""
    from coulisse.interfaces.jobs.state import precision

    recorded = bool(saved.key.get("fast"))
    given = bool(ctx.meta.get(FAST_KEY))
    ran = f"it ran {precision(saved.engine)}; " if saved.engine else ""
    quantize = params.get("quantize")
    explicit = (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)
    if recorded and quantize not in (None, "none") and ctx.get_parameter_source("quantize") in explicit:
        raise InputError(f"cannot resume {params['output']} with --quantize {quantize}: the first run had --fast, "
                         f"which picks the precision itself ({ran}recorded in {path.name}). Leave --quantize out, "
                         "or pass --overwrite to start over.")
    if given != recorded and ctx.get_parameter_source("fast") in explicit:
        had = "--fast" if recorded else f"no --fast ({ran}recorded in {path.name})"
        raise InputError(f"cannot resume {params['output']} with {'--fast' if given else 'no --fast'}: the first run "
                         f"had {had}. Leave --fast out to go on as the first run did, or pass --overwrite to start "
                         "over.")
    ctx.meta[FAST_KEY] = recorded


def _shown(value) -> str:
    return "(default)" if value is None else str(value)


def job_options(f):
    """Options that `evaluate` shares with `classify --input`, each with its COULISSE_* fallback."""
    options = [
        click.option("-c", "--column", default=None, envvar="COULISSE_COLUMN",
                     help="Text column (default: 'text', else the only string column)."),
        click.option("--long-text", type=Choice(["truncate", "chunk"]), default="truncate",
                     show_default=True, envvar="COULISSE_LONG_TEXT",
                     help="Texts over the model's limit: keep the start, or average the logits of "
                          "overlapping windows that cover the whole text."),
        click.option("--stride", type=click.IntRange(min=0), default=None, envvar="COULISSE_STRIDE",
                     help="With --long-text chunk: tokens shared by consecutive windows "
                          "(default: a quarter of the window)."),
        click.option("-b", "--batch-rows", type=click.IntRange(min=1), default=1024, show_default=True,
                     envvar="COULISSE_BATCH_ROWS", help="Rows read, classified and committed at a time."),
        click.option("--quiet", is_flag=True, envvar="COULISSE_QUIET", help="No progress bar, no summary."),
        click.option("--progress/--no-progress", default=None, envvar="COULISSE_PROGRESS",
                     help="Show the progress bar even when stderr is not a terminal (or never)."),
        encoding_option(),
        model_option(default_help=None),
        threads_option(),
        quantize_option(help_text="int8: dynamic int8 linear layers."),
        fast_option(),
    ]
    for option in reversed(options):
        f = option(f)
    return f


@click.command()
@click.option("-i", "--input", "input_path", required=True, envvar="COULISSE_INPUT",
              help="Labelled file: .csv, .tsv, .jsonl, .parquet, or - for JSONL on stdin.")
@click.option("-l", "--label-column", default="label", show_default=True, envvar="COULISSE_LABEL_COLUMN",
              help="Column of true labels: the model's label names or ids.")
@click.option("--label-map", "label_map", default=None, envvar="COULISSE_LABEL_MAP",
              help="The file's labels as the model's, where they differ: 'positif=POSITIVE,négatif=NEGATIVE' "
                   "(a model's name or id after each =).")
@click.option("-o", "--output-dir", default="coulisse-evaluation", show_default=True,
              envvar="COULISSE_OUTPUT_DIR", help="Report folder: report.md, PNG plots, predictions.")
@click.option("-n", "--limit", type=click.IntRange(min=1), default=None, envvar="COULISSE_LIMIT",
              help="Only the first N rows.")
@click.option("-s", "--sample", type=click.IntRange(min=1), default=None, envvar="COULISSE_SAMPLE",
              help="A uniform random sample of N rows (after --limit), kept in file order.")
@click.option("--seed", type=int, default=0, show_default=True, envvar="COULISSE_SEED",
              help="Seed of --sample.")
@click.option("--bins", type=int, default=10, show_default=True, envvar="COULISSE_BINS",
              help="Score bins of the calibration table.")
@click.option("--overwrite", is_flag=True, envvar="COULISSE_OVERWRITE",
              help="Replace a report already there.")
@click.option("--plots/--no-plots", default=True, show_default=True, envvar="COULISSE_PLOTS",
              help="Draw the PNG plots (needs matplotlib: pip install \"coulisse[jobs]\").")
@job_options
def evaluate(input_path, label_column, label_map, output_dir, limit, sample, seed, bins, overwrite, plots, column,
             long_text, stride, batch_rows, quiet, progress, encoding, model, threads, quantize):
    """Evaluate a classifier on a labelled file: accuracy, macro-F1, per-label precision and recall,
    confusion matrix, calibration; writes report.md, PNG plots and every prediction to a folder.

    \b
    Examples:
      coulisse evaluate -i reviews.csv --label-column label -o report/
      coulisse evaluate -i reviews.parquet -m ./my-model --sample 500 --seed 1 -o report-sample/
      coulisse evaluate -i reviews.jsonl --long-text chunk --limit 1000 --no-plots -o report-long/
      coulisse evaluate -i avis-excel.csv --encoding cp1252 --label-map positif=POSITIVE,négatif=NEGATIVE -o avis/
    """
    bound_kernel_cache()
    set_wait_policy()  # before torch loads, which the imports below do
    from coulisse.interfaces.jobs.evaluate import EvalOptions, check_request, parse_label_map
    from coulisse.interfaces.jobs.runner import JobOptions

    if bins < 1:
        raise click.BadParameter(f"{bins}; pass a positive number of bins.", param_hint="--bins")
    check_encoding_applies(click.get_current_context())
    job = JobOptions(input=input_path, column=column, long_text=long_text, stride=stride,
                     batch_rows=batch_rows, quiet=quiet, progress=progress, overwrite=overwrite, model=model,
                     quantize=quantize, encoding=encoding)
    options = EvalOptions(input_path, label_column, output_dir, limit, sample, seed, bins, job, plots,
                          parse_label_map(label_map))
    check_request(options)  # before the default model is looked up (the Hub, maybe)
    check_file_starts([input_path], encoding)
    revision = given_revision()
    if model is None:
        from coulisse.hub_fallback import default_model

        model = job.model = default_model("text-classification", revision)  # the report names the model that ran

    def load():
        return load_pipeline("text-classification", model, threads, quantize, throughput=True, revision=revision)

    result = _run_evaluation(options, load)
    _report_evaluation(result, output_dir, quiet)


def _run_evaluation(options, load):
    """Every row predicted and scored (SIGTERM stops it as Ctrl-C does); a run in which no row could be predicted
    exits 1 in one line, with no report over zero rows."""
    from coulisse.interfaces.jobs.evaluate import evaluate_file
    from coulisse.interfaces.jobs.runner import JobInterrupted

    with stop_on_sigterm():
        try:
            result = evaluate_file(options, load)
        except JobInterrupted as e:
            # No report yet, so the folder holds no finished one: the same command starts over, no --overwrite.
            raise JobInterrupted("interrupted before the report was written; run the same command again to start "
                                 "the evaluation over.", e.signum) from None
    failure = result.summary.failure()
    if failure is not None:  # no prediction to score: one line, exit 1, no report over zero rows
        from coulisse.interfaces.jobs.runner import JobFailedError

        raise JobFailedError(failure)
    return result


def _report_evaluation(result, output_dir: str, quiet: bool) -> None:
    """The report written to `output_dir`, its headline on stdout, the summary and any caveat on stderr; a label
    map key that dropped a class from the scores fails once the report is written."""
    from coulisse.interfaces.jobs.report import covered, write_report

    metrics = write_report(result)
    if not quiet:
        click.echo(result.summary.describe(), err=True)
        if result.caveat:
            click.echo(f"note: {result.caveat}", err=True)
    click.echo(f"accuracy {metrics.accuracy:.4f}  macro-F1 {metrics.macro_f1:.4f}  ECE {metrics.ece:.4f}  "
               f"on {covered(result, metrics)} -> {Path(output_dir) / 'report.md'}", file=sys.stdout)
    problem = result.unused_key_problem()
    if problem is not None:
        if result.collected.unknown:  # a typo'd key dropped a class from the scores: written, but a failure
            raise click.ClickException(problem)
        click.echo(f"warning: {problem}", err=True)  # a key for a label this file lacks: nothing lost

"""The `coulisse` command. Every option has an environment fallback (COULISSE_<NAME>).

Errors that coulisse raises on purpose print as one line, without a traceback, and exit 1.
"""

from __future__ import annotations

import json
import logging
import sys

import click

from coulisse import __version__
from coulisse.errors import CoulisseError

DEFAULT_MODEL = "tblard/tf-allocine"


class Group(click.Group):
    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except CoulisseError as e:
            raise click.ClickException(f"{type(e).__name__}: {e}") from None


def model_option(default: str | None = DEFAULT_MODEL):
    return click.option("-m", "--model", default=default, show_default=True, envvar="COULISSE_MODEL",
                        help="Hub id or local folder of the checkpoint.")


def engine_options(f):
    f = click.option("-t", "--threads", type=int, default=None, envvar="COULISSE_THREADS",
                     help="CPU threads (default: all physical cores).")(f)
    f = click.option("-q", "--quantize", type=click.Choice(["none", "int8"]), default="none",
                     envvar="COULISSE_QUANTIZE", show_default=True,
                     help="int8: dynamic int8 linear layers (faster on CPU, near-identical scores).")(f)
    return f


def load_pipeline(task: str, model: str, threads: int | None = None, quantize: str = "none", **kwargs):
    from coulisse.pipelines import pipeline

    if quantize != "none":
        kwargs["quantize"] = quantize
    return pipeline(task, model=model, threads=threads, **kwargs)


def read_texts(texts: tuple[str, ...]) -> list[str]:
    if texts:
        return list(texts)
    if sys.stdin.isatty():
        raise click.UsageError("give TEXT arguments, or pipe lines on stdin.")
    lines = [line.rstrip("\n") for line in sys.stdin]
    return [line for line in lines if line.strip()]


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "-V", "--version")
@click.option("-v", "--verbose", count=True, help="-v: what is loaded and how; -vv: debug.")
def cli(verbose: int) -> None:
    """coulisse: transformer encoders behind the pipeline — tokenizer, encoder, head, post-processing.

    \b
    Examples:
      coulisse classify "Je déteste tellement ça !"
      coulisse explain --model tblard/tf-allocine "J'ai adoré ce film."
    """
    level = {0: logging.WARNING, 1: logging.INFO}.get(verbose, logging.DEBUG)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)


@cli.command()
@click.argument("texts", nargs=-1)
@model_option()
@click.option("-k", "--top-k", type=int, default=1, show_default=True, help="Labels shown per text.")
@click.option("-j", "--json", "as_json", is_flag=True, help="One JSON object per input (text, label, score).")
@engine_options
@click.option("-i", "--input", "input_path", default=None, envvar="COULISSE_INPUT",
              help="Corpus job: read FILE (.csv .tsv .jsonl .parquet .txt, or - for stdin) instead of TEXTS.")
@click.option("-o", "--output", default=None, envvar="COULISSE_OUTPUT",
              help="Corpus job output (.csv .tsv .jsonl .parquet; default: JSONL on stdout).")
@click.option("-c", "--column", default=None, envvar="COULISSE_COLUMN",
              help="Text column (default: 'text', else the only string column).")
@click.option("-a", "--all-scores", is_flag=True, envvar="COULISSE_ALL_SCORES",
              help="Add a score_<LABEL> column per label.")
@click.option("--long-text", type=click.Choice(["truncate", "chunk"]), default="truncate", show_default=True,
              envvar="COULISSE_LONG_TEXT", help="Texts over the model's limit: keep the start, or average "
              "the logits of overlapping windows that cover the whole text.")
@click.option("--stride", type=int, default=None, envvar="COULISSE_STRIDE",
              help="With --long-text chunk: tokens shared by consecutive windows (default: a quarter).")
@click.option("--resume", is_flag=True, envvar="COULISSE_RESUME",
              help="Continue an interrupted job where its output ends.")
@click.option("--overwrite", is_flag=True, envvar="COULISSE_OVERWRITE", help="Replace a non-empty output.")
@click.option("--quiet", is_flag=True, envvar="COULISSE_QUIET", help="No progress bar, no summary.")
@click.option("--progress/--no-progress", default=None, envvar="COULISSE_PROGRESS",
              help="Show the progress bar even when stderr is not a terminal (or never).")
@click.option("-b", "--batch-rows", type=int, default=1024, show_default=True, envvar="COULISSE_BATCH_ROWS",
              help="Rows read, classified and committed at a time.")
def classify(texts, model, top_k, as_json, threads, quantize, input_path, output, column, all_scores,
             long_text, stride, resume, overwrite, quiet, progress, batch_rows):
    """Classify TEXTS (or lines of stdin) with a sequence classifier; or a whole file with --input.

    \b
    Examples:
      coulisse classify "J'ai adoré ce film." "Quel ennui..."
      cat reviews.txt | coulisse classify --json
      coulisse classify -m ./my-model -k 2 "Pas mal du tout"
      coulisse classify -i reviews.csv -o labelled.csv --all-scores
      coulisse classify -i reviews.parquet -o labelled.parquet --resume
      coulisse classify -i long_reviews.jsonl -o out.jsonl --long-text chunk --stride 64

    With --input, rows are committed to --output chunk by chunk: after an interruption, --resume
    continues where the output ends, and the result equals an uninterrupted run's.
    """
    if input_path is not None or output is not None:
        from coulisse.interfaces.jobs.command import run_job

        def load():
            return load_pipeline("text-classification", model, threads, quantize)

        return run_job(texts, input_path, load, output=output, column=column, all_scores=all_scores,
                       long_text=long_text, stride=stride, resume=resume, overwrite=overwrite, quiet=quiet,
                       progress=progress, batch_rows=batch_rows, model=model)
    lines = read_texts(texts)
    pipe = load_pipeline("text-classification", model, threads, quantize)
    results = pipe(lines, top_k=top_k)
    for text, result in zip(lines, results, strict=True):
        best = result[0]
        if as_json:
            record = {"text": text, "label": best["label"], "score": best["score"]}
            if top_k > 1:
                record["scores"] = result
            click.echo(json.dumps(record, ensure_ascii=False))
        else:
            shown = text if len(text) <= 60 else text[:57] + "..."
            labels = "  ".join(f"{r['label']} {r['score']:.4f}" for r in result)
            click.echo(f"{labels}  {shown}")


@cli.command()
@click.argument("text")
@model_option()
@click.option("--task", type=click.Choice(["text-classification", "feature-extraction"]),
              default="text-classification", show_default=True)
@click.option("--question", default=None, help="question-answering: the question; TEXT is the context.")
@click.option("--labels", default=None, help="zero-shot-classification: candidate labels, comma-separated.")
@click.option("--template", default=None,
              help="zero-shot-classification: hypothesis with {} for the label (default: the model's language).")
def explain(text, model, task, question, labels, template):
    """Show every stage behind the pipeline for TEXT: tokens, ids, mask, hidden states, logits, labels.

    \b
    Examples:
      coulisse explain "J'ai attendu un cours d'HuggingFace toute ma vie."
      coulisse explain --task question-answering -m ./qa --question "Où ?" "Le camembert vient de Normandie."
      coulisse explain --task zero-shot-classification -m ./nli --labels sport,cinéma "Le PSG a gagné."
    """
    from coulisse.interfaces.explain import check_request, explain_text

    check_request(task, question, labels, template)  # before loading a model
    pipe = load_pipeline(task, model)
    click.echo(explain_text(pipe, text, question=question, labels=labels, template=template))

def _register_commands() -> None:
    """Commands that live beside the interface they drive: corpus jobs, server, task verbs, bench."""
    from coulisse.interfaces import bench_command, qa_commands, task_commands
    from coulisse.interfaces.jobs.command import evaluate
    from coulisse.interfaces.server.command import serve

    cli.add_command(bench_command.bench)
    cli.add_command(serve)
    cli.add_command(evaluate)
    qa_commands.register(cli)
    task_commands.register(cli)


_register_commands()


def main() -> None:
    cli(prog_name="coulisse")

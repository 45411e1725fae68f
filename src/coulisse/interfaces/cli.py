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
def classify(texts, model, top_k, as_json, threads, quantize):
    """Classify TEXTS (or lines of stdin) with a sequence classifier.

    \b
    Examples:
      coulisse classify "J'ai adoré ce film." "Quel ennui..."
      cat reviews.txt | coulisse classify --json
      coulisse classify -m ./my-model -k 2 "Pas mal du tout"
    """
    lines = read_texts(texts)
    pipe = load_pipeline("text-classification", model, threads, quantize)
    results = pipe(lines, top_k=top_k)
    for text, result in zip(lines, results):
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
def explain(text, model, task):
    """Show every stage behind the pipeline for TEXT: tokens, ids, mask, hidden states, logits, labels.

    \b
    Example:
      coulisse explain "J'ai attendu un cours d'HuggingFace toute ma vie."
    """
    from coulisse.interfaces.explain import explain_text

    pipe = load_pipeline(task, model)
    click.echo(explain_text(pipe, text))


def main() -> None:
    cli(prog_name="coulisse")


if __name__ == "__main__":
    main()

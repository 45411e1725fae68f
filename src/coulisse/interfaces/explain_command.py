"""`coulisse explain`: every stage behind the pipeline for a text, on the terminal, as one offline HTML page
(--html) or as the studio's JSON document (--json), with word attributions where the task answers with a label.

`--task` offers every task that `coulisse.interfaces.explain.STAGES` renders; that module imports numpy and torch
only inside its renderers, so reading the table here keeps `--help` light.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from coulisse.interfaces.attribution_view import (
    ATTRIBUTION_MAX_STEPS,
    ATTRIBUTION_METHODS,
    attribution_lines,
    check_attribution_request,
    cli_target,
    explain_options,
    use_color,
)
from coulisse.interfaces.explain import BATCH_TASKS, STAGES, batch_lines, explain_text
from coulisse.interfaces.explain_input import check_request
from coulisse.interfaces.formatting import one_line, printable, terminal_width
from coulisse.interfaces.inspection import write_report
from coulisse.interfaces.options import (
    Choice,
    hypothesis_template,
    load_pipeline,
    model_option,
    positive,
    read_texts,
    some_labels,
    task_option,
    with_mask,
)


@click.command()
@click.argument("texts", nargs=-1)
@model_option()
@task_option(STAGES, default="text-classification", show_default=True)
@click.option("--question", default=None, help="question-answering: the question; TEXT is the context.")
@click.option("--labels", default=None, callback=some_labels,
              help="zero-shot-classification: candidate labels, comma-separated.")
@click.option("--template", default=None, callback=hypothesis_template,
              help="zero-shot-classification: hypothesis with {} for the label (default: the model's language).")
@click.option("-a", "--attributions", is_flag=True,
              help="Also score every word's push towards the label: coloured on a terminal, top words listed.")
@click.option("--html", "html_path", type=click.Path(dir_okay=False), default=None,
              help="Write every TEXT's stages, attention and the task's view (attributions for a label) to one "
              "offline HTML page.")
@click.option("--method", type=Choice(ATTRIBUTION_METHODS), default="integrated_gradients", show_default=True,
              help="Attributions: Integrated Gradients (fp32 gradients) or occlusion (each word's vectors replaced "
                   "by the pad token's, positions kept).")
@click.option("--steps", type=int, default=None, callback=positive,
              help="Integrated Gradients: gradient evaluations of the first pass (default 32, at most "
              f"{ATTRIBUTION_MAX_STEPS}).")
@click.option("--target", default=None,
              help="Label to explain, name or id (default: the predicted one; zero-shot: one of --labels).")
@click.option("-j", "--json", "as_json", is_flag=True,
              help="Print TEXT's explanation as one JSON document: the studio's /api/explain answer (compare=0), "
              "the words' attributions included where the task scores words.")
def explain(texts, model, task, question, labels, template, attributions, html_path, method, steps, target, as_json):
    """Show every stage behind the pipeline for TEXT: tokens, ids, mask, hidden states, logits, labels.

    \b
    Examples:
      coulisse explain "J'ai attendu un cours d'HuggingFace toute ma vie."
      coulisse explain --attributions "Un film excellent, mais trop long."
      coulisse explain --html report.html "Un film excellent." "Quel navet !"
      coulisse explain --task fill-mask -m camembert-base --html masks.html "Ce film est <mask>."
      coulisse explain --task question-answering -m ./qa --question "Où ?" "Le camembert vient de Normandie."
      coulisse explain --task zero-shot-classification -m ./nli --labels sport,cinéma "Le PSG a gagné."
      coulisse explain --json "Un film excellent." | jq .attribution.tokens

    --html writes one offline page for every task: the token table, hidden-state norms, the attention of
    every layer and head, and the task's own view (labels, entities, masks, answer span, embedding, sparse
    entries). --attributions and --html score each word where the task answers with a label
    (text-classification, zero-shot-classification): Integrated Gradients over the word vectors, from the
    pad token's to the text's, or occlusion; NO_COLOR or a pipe turns colours off. For zero-shot, the words
    that pushed the text towards a candidate label (--target, default the top one), for the entailment
    logit of its hypothesis. --json prints the document `coulisse studio`'s /api/explain answers for the same
    text, task and options, with the exact weights alone (compare=0); where the task scores words, its
    `attribution` holds them (--method chooses how; --attributions adds nothing to it).
    """
    lines = read_texts(texts)
    _check_explain_output(lines, attributions, html_path, steps, target, as_json)
    check_request(task, question, labels, template)  # before loading a model
    check_attribution_request(task, method, steps, attributions, html_path is not None or as_json, target)
    pipe = load_pipeline(task, model)
    if task == "fill-mask":  # either spelling, as `coulisse fill-mask` takes it
        lines = [with_mask(text, pipe.tokenizer.special_tokens["mask"]) for text in lines]
    if as_json:
        click.echo(explain_json(pipe, lines[0], question=question, labels=labels, template=template, method=method,
                                target=target))
        return
    options = {"method": method, "steps": steps, "target": cli_target(pipe, target, labels)}
    asked = {"question": question, "labels": labels, "template": template}
    if html_path is not None:
        _write_explain_page(pipe, lines, html_path, options, asked)
        if not attributions:
            return
    _print_explanations(pipe, task, lines, attributions, options, asked)


def _check_explain_output(lines: list[str], attributions: bool, html_path: str | None, steps: int | None,
                          target: str | None, as_json: bool) -> None:
    """What `explain` is asked to write (--json, --html, --target), checked before the model loads."""
    if as_json:  # the document's `attribution` is what --attributions adds: with --json, -a changes nothing
        if html_path is not None:
            raise click.UsageError("--json prints one document on stdout and --html writes a page; run them apart.")
        if steps is not None:  # the studio's target= is the CLI's --target; it has no steps
            raise click.UsageError("--json prints the studio's document, whose attribution takes the default steps: "
                                   "it has no --steps; drop it, or use --attributions without --json.")
        if len(lines) > 1:
            raise click.UsageError(f"--json explains one TEXT, and {len(lines)} were given; run it once per text.")
    if target is not None and not attributions and html_path is None and not as_json:
        raise click.UsageError("--target chooses the label that --attributions, --html or --json explains; add one "
                               "of them.")
    if html_path is not None and not Path(html_path).resolve().parent.is_dir():
        raise click.UsageError(f"--html {html_path}: the folder {Path(html_path).resolve().parent} does not exist; "
                               "create it, or write the page elsewhere.")
    if html_path is not None:
        from coulisse.interfaces.jobs.lock import check_writable

        check_writable(html_path, "--html")  # before the model loads and the page is computed


def _write_explain_page(pipe, lines: list[str], html_path: str, options: dict, asked: dict) -> None:
    """`explain --html`: the page for every text, one headline per text on stdout."""
    for x in write_report(pipe, lines, html_path, **options, **asked):
        click.echo(f"{printable(x.head.headline)}  {one_line(x.text)}")
    click.echo(f"wrote {html_path} ({len(lines)} text{'s' if len(lines) > 1 else ''})", err=True)


def _print_explanations(pipe, task: str, lines: list[str], attributions: bool, options: dict, asked: dict) -> None:
    """Every text's stages on the terminal (with its words' attributions when asked), then the batch's view."""
    color = use_color(sys.stdout)
    for n, text in enumerate(lines):
        if n:
            click.echo("\n" + "=" * min(72, terminal_width()))
        out = explain_text(pipe, text, **asked)
        if attributions:
            explained = pipe.explain(text, **options, **explain_options(pipe, asked["labels"], asked["template"]))
            out += "\n" + "\n".join(attribution_lines(explained, color))
        click.echo(out, color=color)
    if len(lines) > 1 and task in BATCH_TASKS:
        click.echo("\n" + "=" * min(72, terminal_width()) + "\n" + "\n".join(batch_lines(pipe, lines)))


def explain_json(pipe, text: str, **asked: str | None) -> str:
    """The studio's /api/explain document for `text` (its query parsed as the studio parses one), exact
    weights alone."""
    from coulisse.interfaces.studio.explore import Studio, parse_query

    params = {name: [value] for name, value in {"text": text, **asked}.items() if value is not None}
    query = parse_query({**params, "compare": ["0"]}, pipe.task)
    exploration = Studio(pipe, lambda: None).explore(query)
    return json.dumps(exploration.to_dict(), ensure_ascii=False, allow_nan=False)

"""`coulisse qa` and `coulisse zero-shot`: extractive question answering and NLI zero-shot classification."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import click

from coulisse.interfaces.formatting import one_line, printable
from coulisse.interfaces.options import (
    engine_options,
    hypothesis_template,
    load_pipeline,
    model_option,
    positive,
    read_texts,
    require_model,
    some_labels,
)

# A value without spaces ending in a file extension, or holding a path separator, names a file: when there is no
# such file it is a typo (`-c ctx.tx`), not a context of one word, and answering from the name itself says nothing.
LOOKS_LIKE_A_PATH = re.compile(r"^\S*(?:[/\\]\S*|\.[A-Za-z][A-Za-z0-9]{0,4})$")


def read_context(value: str) -> str:
    """`-` reads stdin, an existing file is read, anything else is the context itself, unless it names a file
    that is not there or a folder (refused)."""
    if value == "-":
        return _not_blank(sys.stdin.read(), "stdin")
    path = Path(value)
    try:
        is_file, is_dir = path.is_file(), path.is_dir()
    except (OSError, ValueError):  # not a possible path (too long, NUL...): the text itself
        is_file = is_dir = False
    if is_dir:
        raise click.BadParameter(f"{value} is a folder; pass a file to read, - for stdin, or the context's text.",
                                 param_hint="--context")
    if not is_file:
        if LOOKS_LIKE_A_PATH.match(value):
            raise click.BadParameter(f"no file {value!r}; pass an existing file, - for stdin, or the context's "
                                     "text itself (a text with spaces).", param_hint="--context")
        return value
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise click.BadParameter(f"cannot read {value}: {e}", param_hint="--context") from None
    return _not_blank(text, value)


def _not_blank(text: str, source: str) -> str:
    """A context read from a file or stdin holds some text (the pipeline's "context is empty" named no file)."""
    if not text.strip():
        raise click.BadParameter(f"{source} holds no text; pass a file with the context, or the context's text.",
                                 param_hint="--context")
    return text


@click.command()
@click.argument("questions", nargs=-1, required=True)
@click.option("-c", "--context", required=True, envvar="COULISSE_CONTEXT",
              help="The context: a FILE to read, - for stdin, or the text itself (a value shaped like a file "
                   "name, such as notes.txt or a/b, must be an existing file).")
@model_option(default_help=None)
@click.option("-k", "--top-k", type=int, default=1, show_default=True, callback=positive,
              help="Answers shown per question.")
@click.option("-l", "--max-answer-len", type=int, default=15, show_default=True, callback=positive,
              envvar="COULISSE_MAX_ANSWER_LEN", help="Longest answer, in tokens.")
@click.option("-s", "--max-seq-len", type=int, default=None, envvar="COULISSE_MAX_SEQ_LEN", callback=positive,
              help="Tokens per window (question + context part); default min(384, the model's limit).")
@click.option("-d", "--doc-stride", type=click.IntRange(min=0), default=None, envvar="COULISSE_DOC_STRIDE",
              help="Tokens shared by consecutive windows of a long context (default: min(128, half one)).")
@click.option("-n", "--impossible", "handle_impossible_answer", is_flag=True, envvar="COULISSE_IMPOSSIBLE",
              help="Allow the empty answer (the context does not say).")
@click.option("-j", "--json", "as_json", is_flag=True, help="One JSON object per question.")
@engine_options
def qa(questions, context, model, top_k, max_answer_len, max_seq_len, doc_stride, handle_impossible_answer,
       as_json, threads, quantize):
    """Answer QUESTIONS from a context with an extractive question-answering model (SQuAD, FQuAD, PIAF...).

    Answers are spans of the context, found as transformers 4's question-answering pipeline found them;
    long contexts are read in overlapping windows.

    \b
    Examples:
      coulisse qa -m etalab-ia/camembert-base-squadFR-fquad-piaf --context article.txt "Qui l'a fondée ?"
      coulisse qa -m ./my-qa-model -c "Le camembert vient de Normandie." "D'où vient le camembert ?"
      coulisse qa -m ./my-qa-model -c notes.txt -k 3 --json "Quand ?" "Où ?"
    """
    model = require_model(model, "a question-answering checkpoint")
    text = read_context(context)
    pipe = load_pipeline("question-answering", model, threads, quantize)
    options = {"top_k": top_k, "max_answer_len": max_answer_len, "max_seq_len": max_seq_len,
               "doc_stride": doc_stride, "handle_impossible_answer": handle_impossible_answer}
    options = {k: v for k, v in options.items() if v is not None}
    results = pipe(question=list(questions), context=text, **options)
    if len(questions) == 1:
        results = [results]
    for question, result in zip(questions, results, strict=True):
        answers = result if isinstance(result, list) else [result]
        if as_json:
            record = {"question": question, **(answers[0] if answers else {"answer": None})}
            if top_k > 1:
                record["answers"] = answers
            click.echo(json.dumps(record, ensure_ascii=False))
            continue
        click.echo(one_line(question, 200))
        if not answers:
            click.echo("  (no answer)")
        for a in answers:
            shown = repr(a["answer"]) if a["answer"] else "(no answer in the context)"
            click.echo(f"  {a['score']:.4f}  [{a['start']}:{a['end']}]  {shown}")


@click.command("zero-shot")
@click.argument("texts", nargs=-1)
@click.option("-l", "--labels", required=True, envvar="COULISSE_LABELS", callback=some_labels,
              help="Candidate labels, comma-separated: 'sport,politique,cinéma'.")
@model_option(default_help=None)
@click.option("-H", "--hypothesis-template", default=None, envvar="COULISSE_HYPOTHESIS_TEMPLATE",
              callback=hypothesis_template,
              help="Hypothesis with {} for the label; default in the model's language: "
              "'Ce texte parle de {}.' for French models, else 'This example is {}.'.")
@click.option("-M", "--multi-label", is_flag=True, envvar="COULISSE_MULTI_LABEL",
              help="Score each label on its own (entailment vs contradiction) instead of sharing 1.")
@click.option("-k", "--top-k", type=int, default=None, callback=positive,
              help="Labels shown per text (default: all).")
@click.option("-j", "--json", "as_json", is_flag=True,
              help="One JSON object per text (sequence, labels, scores).")
@engine_options
def zero_shot(texts, labels, model, hypothesis_template, multi_label, top_k, as_json, threads, quantize):
    """Classify TEXTS (or lines of stdin) into labels chosen now, with an NLI model (zero-shot).

    \b
    Examples:
      coulisse zero-shot -m ./camembert-xnli --labels sport,politique,cinéma "Le PSG a gagné hier soir."
      coulisse zero-shot -m ./nli-model -l "urgent,pas urgent" -H "Ce message est {}." --json "Au secours !"
      cat titres.txt | coulisse zero-shot -m ./nli-model -l économie,santé,culture -M
    """
    model = require_model(model, "an NLI sequence classifier")
    lines = read_texts(texts)
    pipe = load_pipeline("zero-shot-classification", model, threads, quantize)
    options = {"candidate_labels": labels, "multi_label": multi_label}
    if hypothesis_template:
        options["hypothesis_template"] = hypothesis_template
    for result in pipe(lines, **options):
        pairs = list(zip(result["labels"], result["scores"], strict=True))[:top_k]
        if as_json:
            shown = {**result, "labels": [p[0] for p in pairs], "scores": [p[1] for p in pairs]}
            click.echo(json.dumps(shown, ensure_ascii=False))
        else:
            shown = "  ".join(f"{printable(label)} {score:.4f}" for label, score in pairs)
            click.echo(f"{shown}  {one_line(result['sequence'])}")

"""What `coulisse explain` shows of an input, read as the pipeline's call reads it.

Every view, terminal and HTML, reads its input through `read_input`: the pipeline's own preprocess with the
pipeline's own options (`preprocessed`), so the tokens, ids, embedding and answer it shows are those `pipe(text)`
computes (a feature-extraction pipeline that pools none: pooling='auto''s embedding). Pair tasks show a text
pair in stage 1: question-answering the question and the context (TEXT), in the pipeline's order, its first
window; zero-shot-classification TEXT and the first label's hypothesis (every pair follows). `check_request`
refuses, before any loading, what a task cannot use. Light at import: the tasks are imported inside the functions.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from coulisse.errors import InputError


def check_request(task: str, question: str | None = None, labels: Any = None,
                  template: str | None = None) -> None:
    """What a pair task needs, and nothing a task cannot use: one-line InputErrors, before any loading."""
    if task == "question-answering" and not question:
        raise InputError("explain --task question-answering needs --question: TEXT is the context, the "
                         "question is asked about it.")
    if task == "zero-shot-classification" and not labels:
        raise InputError("explain --task zero-shot-classification needs --labels a,b,c: the candidate labels "
                         "(and --template 'This example is {}.' to word the hypotheses).")
    if question and task != "question-answering":
        raise InputError(f"--question is for --task question-answering, not {task}.")
    if (labels or template) and task != "zero-shot-classification":
        raise InputError(f"--labels and --template are for --task zero-shot-classification, not {task}.")


def built_labels(pipe, labels: Any, template: str | None) -> tuple[Any, str | None]:
    """zero-shot-classification's candidate labels and template, where the explain call gives none: those the
    pipeline was built with (`pipeline(..., candidate_labels=[...])`), as `zs(text)` reads them."""
    if pipe.task != "zero-shot-classification":
        return labels, template
    built = getattr(pipe, "defaults", {})
    return (built.get("candidate_labels") if labels is None else labels,
            built.get("hypothesis_template") if template is None else template)


POOLED_TASKS = ("feature-extraction", "sparse-embedding")  # read as sentence-transformers folders say


@dataclass
class Read:
    """One input as `pipe(text)` reads it (`read_input`): what every view shows of it."""

    options: dict[str, Any]  # the call's options: the pipeline's own, under what the view adds
    batch: Any  # coulisse.tasks.base.Batch: the pipeline's preprocess of the input, with those options
    encoding: Any  # the shown item's encoding (offsets, specials): the first window, the first label's pair
    sequences: tuple[str, ...]  # the texts the encoding holds, in the model's order
    mine: int = 0  # which of them is the text (a pooled embedding's: prompted and lowercased, as read)
    limit: int = 0  # the tokens the pipeline's stage reads at most (a window's, for question-answering)
    cut: int = 0  # the text's tokens it leaves out (0 for question-answering: its windows read them all)
    side: str = "right"  # the end truncation cuts: "left" keeps the end of a text
    notes: list[str] = field(default_factory=list)

    @property
    def text(self) -> str:
        return self.sequences[self.mine]

    @property
    def pair(self) -> bool:
        return len(self.sequences) > 1


def preprocessed(pipe, inputs: Any, **given: Any):
    """The options of the call `pipe(inputs, **given)` (the pipeline's own, under `given`) and its preprocess
    of `inputs` with them: (options, batch). Every view reads its input here, so what it shows is what the
    call computes (STYLE 11: explain is an adapter over the pipeline's stages)."""
    from coulisse.tasks.base import PRE

    options = pipe.options(given)
    return options, pipe.preprocess(inputs, **pipe.stage_options(options, PRE))


def read_input(pipe, text: str, *, question: str | None = None, labels: Any = None, template: str | None = None,
               label: str | None = None) -> Read:
    """`text` as the pipeline reads it: its preprocess with its own options (`preprocessed`), and the encoding
    the views show. A question-answering context: its first window; zero-shot: the pair of `label` (default the
    first candidate); a feature-extraction pipeline that pools none: the sentence embedding of pooling='auto'."""
    from coulisse.tasks.question_answering import Example

    if pipe.task == "question-answering":
        options, batch = preprocessed(pipe, [Example(question, text)])
        sequences, mine = ((question, text), 1) if pipe.question_first else ((text, question), 0)
        limit = pipe.window_sizes(options["max_seq_len"], options["doc_stride"])[0]
        return Read(options, batch, batch.context[0].encoding, sequences, mine, limit)
    if pipe.task == "zero-shot-classification":
        options, batch = preprocessed(pipe, text, candidate_labels=labels, hypothesis_template=template)
        template, label = options["hypothesis_template"], label or options["candidate_labels"][0]
        encoding = pipe.encode_pairs([text], [label], template)[0]  # the pairs' encoder, as preprocess calls it
        seen = Read(options, batch, encoding, (text, template.format(label)), 0, pipe.tokenizer.model_max_length)
    elif pipe.task == "text-classification":
        options, batch = preprocessed(pipe, text)
        seen = _classification_read(pipe, text, options, batch)
    else:
        pools = pipe.task == "feature-extraction" and pipe.options({})["pooling"] is None
        try:
            with _quiet(pipe):
                options, batch = preprocessed(pipe, text, **({"pooling": "auto"} if pools else {}))
        except InputError as e:  # said of this text, in explain's words (preprocess numbers its own texts from 0)
            if pipe.task == "fill-mask" and "has no mask token" in str(e):
                raise InputError(f"{text!r} has no mask token ({pipe.tokenizer.special_tokens['mask']}) in the "
                                 "tokens the model reads; put one where a word is missing.") from None
            raise
        seen = _single_read(pipe, options, batch)
    seen.side = options.get("truncation_side") or pipe.tokenizer.truncation_side
    whole = pipe.tokenizer.encode_batch([seen.text], truncation=False, add_special_tokens=False)[0]
    kept = [s == seen.mine and not m for s, m in zip(seen.encoding.sequence_ids, seen.encoding.special_tokens_mask,
                                                    strict=True)]
    seen.cut = max(len(whole.ids) - sum(whole.special_tokens_mask) - sum(kept), 0)
    return seen


@contextmanager
def _quiet(pipe):
    """Token classification's "truncated; pass stride=N" warning is not said where explain reads a long text: its
    stages show the first window, and its entities read the whole text in windows (`entity_options`)."""
    if pipe.task != "token-classification":
        yield
        return
    logger = logging.getLogger(type(pipe).__module__)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _classification_read(pipe, text: str, options: dict[str, Any], batch) -> Read:
    """text-classification's input as its call reads it (`truncation_side`, `max_length`, `text_pair`...). A text
    that `long_text="chunk"` reads in several windows has no one input to show: refused."""
    from coulisse.tasks.base import PRE

    reading = pipe.stage_options(options, PRE)
    if batch.owners is not None and len(batch.items) > 1:
        raise InputError(f"this pipeline reads the text in {len(batch.items)} windows (long_text='chunk'), and "
                         "explain shows one input's tokens and attention; build it with long_text='truncate' to see "
                         "them, or call pipe.explain(text) for the words' scores over every window.")
    encoding = pipe.read_texts([text], {**reading, "long_text": "truncate"})[0]
    if encoding.ids != batch.items[0].ids:
        raise RuntimeError("explain read other ids than the pipeline's preprocess; this is a bug.")
    pair = reading["text_pair"] or None
    limit = pipe.cap_length(reading["max_length"]) or pipe.tokenizer.model_max_length
    return Read(options, batch, encoding, (text,) if pair is None else (text, pair), 0, limit)


def _single_read(pipe, options: dict[str, Any], batch) -> Read:
    """A text read alone (fill-mask, token-classification, a pooled embedding): the text as the stage read it
    (a folder's prompt before it, lowercased where it says so), the tokens the stage keeps, and what to say of
    them."""
    tok, read, ids = pipe.tokenizer, batch.inputs[0], batch.items[0].ids
    asked = options.get("tokenize_kwargs") or options.get("tokenizer_kwargs") or {}
    sentence = batch.context if pipe.task in POOLED_TASKS else None  # the folder's settings, as the stage read them
    max_length = asked.get("max_length") or (sentence.max_seq_length if sentence is not None else None)
    limit = pipe.cap_length(max_length) or tok.model_max_length
    if pipe.task == "token-classification":
        encoding = batch.context[0][0]  # the text's first window, as the stage encoded it
    else:  # the stage hands ids only: the same cut again, for the offsets, checked against them
        specials = asked.get("add_special_tokens", True)
        encoding = tok.encode_batch([read], max_length=len(ids), add_special_tokens=specials,
                                    direction=options.get("truncation_side"))[0]
    if encoding.ids != ids:
        raise RuntimeError("explain read other ids than the pipeline's preprocess; this is a bug.")
    seen = Read(options, batch, encoding, (read,), 0, limit)
    if sentence is None:
        return seen
    if prompt := pipe.prompt_text(options.get("pooling", "auto"), options["prompt_name"], options["prompt"]):
        seen.notes.append(f"The folder's default prompt {prompt!r} comes before the text, as sentence-transformers' "
                          "encode puts it." if options["prompt"] is None and options["prompt_name"] is None else
                          f"The prompt {prompt!r} comes before the text.")
    if sentence.lowercase:
        seen.notes.append("The folder lowercases the text first (do_lower_case).")
    if asked.get("max_length") is None and sentence.max_seq_length and limit < tok.model_max_length:
        seen.notes.append(f"The folder's max_seq_length cuts the input at {limit} tokens (the tokenizer's limit is "
                          f"{tok.model_max_length}).")
    return seen


def read_as(pipe, text: str) -> tuple[str, int, list[str]]:
    """What the model reads of `text` (a pooled embedding's prompted, lowercased text), the tokens the pipeline
    reads at most, and what to say of it: `read_input`'s, for a task that reads a text alone."""
    if pipe.task in ("question-answering", "zero-shot-classification"):
        return text, pipe.tokenizer.model_max_length, []
    seen = read_input(pipe, text)
    return seen.text, seen.limit, seen.notes


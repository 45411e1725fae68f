"""What one request in the Inference API's shape (`POST /`, `/invocations`: `Service.run_task`) may cost, by the
rules bounds.py sets for TEI's routes, whatever the served task:

- characters: a text the task truncates is cut to TEI's bound before the tokenizer sees it; one it reads whole
  (question answering's context, fill-mask's text, token classification's with `stride`) is refused past it (422),
  as /tokenize refuses one; so is a zero-shot hypothesis, which is never truncated;
- model inputs: at most --max-client-batch-size of them (TEI's `batch_size` 422), each holding a permit of
  --max-concurrent-requests. Windows are counted after `preprocess`; a long windowed text is windowed in growing
  prefixes first, so that a refusal costs a few times the windows allowed: a 128,000-character context with
  doc_stride=370 of 384 was 4,660 windows, 1 s of the tokenizer thread and 500 MB before anything counted them;
- turns on the tokenizer thread: zero-shot encodes its premise once per label, so its (premise, hypothesis) pairs
  go in parts of about TURN_CHARACTERS, as TEI's routes' inputs do.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from coulisse.interfaces.server.bounds import check_characters, cut_characters
from coulisse.interfaces.server.errors import ServerError
from coulisse.tasks.base import Batch, Pipeline
from coulisse.tokenizer import unicode_problem

ZERO_SHOT = "zero-shot-classification"
# The first prefix of a windowed text windowed to count its windows, each next one twice as long: at 4 tokens a
# character (byte-level BPE) and windows one token apart, 128 characters are ~500 windows, a few ms.
FIRST_PROBE = 128
# Where `preprocess`'s refusals belong, once the text was checked here: zero-shot's are its hypotheses' (a label or
# the template with a lone surrogate, a hypothesis longer than the model), which the client sent as parameters.
PREPROCESS_FIELD = {ZERO_SHOT: "parameters"}
WINDOWS = {"question-answering": ("windows of the context", ("max_seq_len", "doc_stride"),
                                  "send a shorter context, a smaller doc_stride (the tokens windows share) or a larger "
                                  "max_seq_len"),
           "token-classification": ("windows of the text", ("stride",),
                                    "send a shorter text, a smaller stride (the tokens windows share), or leave stride "
                                    "out to truncate the text")}


def read_whole(task: str, options: dict, side: str) -> str | None:
    """Why the task reads its text whole (said after a refusal), or None where it truncates it (then it is cut)."""
    if task == "question-answering":
        return ". Question answering reads the context whole, in windows, each with the question: send a shorter " \
               "context."
    if task == "fill-mask" and not (options.get("tokenizer_kwargs") or {}).get("truncation"):
        return ". Fill-mask reads the text whole, as transformers does: send a shorter text."
    if task == "token-classification" and options.get("stride") is not None:
        return ". With stride, token classification reads the text whole, in windows: send a shorter text, or leave " \
               "stride out to truncate it."
    if task == "token-classification" and side == "left":  # a cut start would move every entity's offsets
        return ". This model's tokenizer truncates from the left, and entities' offsets count from the text's start: " \
               "send a shorter text."
    if task == "text-classification" and (options.get("long_text") == "chunk" or not options.get("truncation", True)):
        return ". This pipeline reads the text whole (long_text='chunk' or truncation=False): send a shorter text."
    return None


def bounded(task: str, inputs: Any, options: dict, limit: int, side: str) -> Any:
    """The request's inputs as the tokenizer may take them: the text the task truncates cut to `limit` characters
    (TEI's), keeping the end truncation keeps (`side`); a 422 for a text it reads whole past `limit`, and for a lone
    surrogate, so that what `preprocess` still refuses of a zero-shot request is its parameters'."""
    if task == "question-answering":  # the pair counts both texts, as TEI counts a pair
        check_characters([(inputs["question"], inputs["context"])], limit, read_whole(task, options, side))
        return inputs
    if problem := unicode_problem(inputs):
        raise ServerError("validation", f"Input validation error: inputs is {problem}")
    if task == ZERO_SHOT:  # the premise gives up tokens to the hypothesis (only_first), never the other way
        named = [(f"candidate_labels[{i}]", label) for i, label in enumerate(options["candidate_labels"])]
        for name, value in [*named, ("hypothesis_template", options["hypothesis_template"])]:
            if problem := unicode_problem(value):  # here, by the request's index: the labels go in parts
                raise ServerError("validation", f"Input validation error: parameters.{name} is {problem}")
        check_characters([(options["hypothesis_template"], label) for label in options["candidate_labels"]], limit,
                         ". A hypothesis (the template with the label) is never truncated: send a shorter label.",
                         "parameters.candidate_labels")
    if (reason := read_whole(task, options, side)) is not None:
        check_characters([(inputs, None)], limit, reason)
        return inputs
    return cut_characters([(inputs, None)], limit, side)[0][0]


def check_parameters(pipe: Pipeline, options: dict) -> None:
    """What `preprocess` would refuse of the parameters alone, checked with them (InputError): question answering's
    window sizes against the model."""
    if pipe.task == "question-answering":
        pipe.window_sizes(options.get("max_seq_len"), options.get("doc_stride"))


def probes(task: str, inputs: Any, options: dict, side: str) -> Iterator[tuple[Any, int]]:
    """The inputs with their windowed text cut to its first (`side` "left": last) 128, 256, ... characters, while that
    is at most half of it: a prefix's windows are the text's first ones, so a prefix of too many refuses the text."""
    if task == "question-answering":
        text = inputs["context"]

        def rebuilt(part: str) -> Any:
            return {**inputs, "context": part}
    elif task == "token-classification" and options.get("stride") is not None:
        text = inputs

        def rebuilt(part: str) -> Any:
            return part
    else:
        return
    n = FIRST_PROBE
    while n <= len(text) // 2:
        yield rebuilt(cut_characters([(text, None)], n, side)[0][0]), n
        n *= 2


def too_many(task: str, n: int, limit: int, options: dict, prefix: int | None = None,
             side: str = "right") -> ServerError:
    """TEI's `batch_size` error for a request of `n` model inputs (those of the first `prefix` characters of its
    windowed text, where it was counted in a prefix), naming what made them and the parameters given."""
    what, names, fix = WINDOWS.get(task, ("model inputs", (), "send a shorter text"))
    if prefix is not None:
        what += f" in its {'last' if side == 'left' else 'first'} {prefix} characters"
    given = "".join(f", {name}={options[name]}" for name in names if options.get(name) is not None)
    return ServerError("batch_size", f"{what} (one model input each{given}) {n} > maximum allowed batch size {limit} "
                       f"(--max-client-batch-size); {fix}")


def joined(batches: list[Batch]) -> Batch:
    """Zero-shot's batches of one premise with parts of its labels, as the one batch of all of them."""
    return Batch([item for b in batches for item in b.items], batches[0].inputs, batches[0].single,
                 context=[label for b in batches for label in b.context])

"""Stage 3 for extractive question answering: transformers 4.x's pipeline, ported to numpy.

Transformers 5 removed `pipeline("question-answering")`; this is the 4.x behaviour (4.57), step for step:

    preprocess   question first (for right-padding tokenizers), context cut into windows of `max_seq_len`
                 tokens that overlap by `doc_stride` (truncation "only_second" + overflowing tokens);
                 p_mask marks what cannot be in an answer: the question and special tokens, but not [CLS]/<s>
    forward      every window through the packed engine; the head gives a start and an end logit per token
    postprocess  per window: masked softmax of starts and ends, the outer product of the two as span scores
                 (end >= start, at most `max_answer_len` tokens), the best spans mapped to character
                 offsets in the context through whole words; equal answers (case-insensitively) from several
                 windows add their scores; the null answer scores the lowest start[CLS] x end[CLS] of all
                 windows.

Tokens come from the tokenizer as transformers 4 converted it (`Tokenizer.as_transformers4`): for
SentencePiece files, a word's first token spans the space before it, so answers keep transformers 4's
offsets (" 1889,").
`max_question_len` is accepted and, as in transformers 4 with a fast tokenizer, has no effect: only its
slow-tokenizer path truncated questions.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
from tokenizers import Encoding

from coulisse.engine import Item
from coulisse.errors import InputError, UnsupportedModelError
from coulisse.tasks.base import PRE, UNUSED, Batch, Option, Pipeline, boolean, padding_option, positive_int
from coulisse.tasks.functional import softmax
from coulisse.tasks.streams import as_stream


def _positive(name: str, value: Any) -> int:
    return positive_int(name, value, allow_zero=name == "doc_stride")


OPTIONS = {
    "top_k": Option(1, check=_positive, doc="answers per question, best first"),
    "doc_stride": Option(None, PRE, check=_positive,
                         doc="tokens shared by the windows of a long context (default min(128, half a window))"),
    "max_answer_len": Option(15, check=_positive, doc="longest answer, in tokens"),
    "max_seq_len": Option(None, PRE, check=_positive,
                          doc="tokens of one window, question included (default min(384, the model's limit))"),
    "max_question_len": Option(64, PRE, check=_positive,
                               doc="accepted as in transformers 4, which does not read it either"),
    "handle_impossible_answer": Option(False, check=boolean, doc="allow the empty answer (no answer in the context)"),
    "align_to_words": Option(True, check=boolean, doc="widen answers to whole words"),
    "padding": Option(False, UNUSED, check=padding_option,
                      doc="accepted as transformers 4 takes it; no effect (no answer moves)"),
}
NULL_SCORE = 1000000.0  # transformers' "large and positive" start for the lowest null score


@dataclass
class Example:
    question: str
    context: str


@dataclass
class Window:
    """One window of one example: its encoding, and 1 for tokens that cannot be in an answer."""

    example: int  # index of the example it belongs to
    encoding: Encoding
    p_mask: np.ndarray  # (L,) int


# -- inputs -----------------------------------------------------------------------------------------------


def _example(item: Any) -> Example:
    if not isinstance(item, dict):
        raise InputError(f"{item!r:.60} is not a question; pass {{'question': ..., 'context': ...}} "
                         "dicts, or question= and context= keywords.")
    for key in ("question", "context"):
        if key not in item:
            raise InputError(f"a question dict needs 'question' and 'context' keys; got {sorted(item)}.")
        if item[key] is None:
            raise InputError(f"{key} is None; pass a non-empty string.")
        if not isinstance(item[key], str):
            raise InputError(f"{key} must be a string, got {type(item[key]).__name__} ({item[key]!r:.40}).")
        if not item[key]:
            raise InputError(f"{key} is empty; pass a non-empty string.")
    return Example(item["question"], item["context"])


def parse_inputs(args: tuple, question: Any = None, context: Any = None) -> list[Example]:
    """The call signatures of transformers 4's QuestionAnsweringArgumentHandler."""
    if args:
        if len(args) == 1:
            inputs = args[0]
        elif len(args) == 2 and all(isinstance(a, str) for a in args):
            inputs = [{"question": args[0], "context": args[1]}]
        else:
            inputs = list(args)
    elif question is not None and context is not None:
        if isinstance(question, list) and isinstance(context, str):
            inputs = [{"question": q, "context": context} for q in question]
        elif isinstance(question, list) and isinstance(context, list):
            if len(question) != len(context):
                raise InputError(f"got {len(question)} questions but {len(context)} contexts; pass as "
                                 "many of each, or one context for all questions.")
            inputs = [{"question": q, "context": c} for q, c in zip(question, context, strict=True)]
        elif isinstance(question, str) and isinstance(context, str):
            inputs = [{"question": question, "context": context}]
        else:
            raise InputError(f"question ({type(question).__name__}) and context ({type(context).__name__}) "
                             "must be strings, or lists of strings.")
    else:
        raise InputError("pass question= and context=, or {'question': ..., 'context': ...} dicts.")
    if isinstance(inputs, dict):
        inputs = [inputs]
    elif isinstance(inputs, Iterable) and not isinstance(inputs, str):
        inputs = list(inputs)
    else:
        raise InputError(f"{inputs!r:.60} is not a question; pass question= and context=.")
    if not inputs:
        raise InputError("no questions given; pass at least one.")
    return [_example(item) for item in inputs]


# -- the numpy core: transformers 4.57's decode_spans and select_starts_ends ---------------------------------


def decode_spans(start: np.ndarray, end: np.ndarray, topk: int, max_answer_len: int,
                 undesired_tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Best `topk` spans from start and end probabilities `(1, L)`; `undesired_tokens` is 1 where allowed."""
    outer = np.matmul(np.expand_dims(start, -1), np.expand_dims(end, 1))  # (1, L, L)
    candidates = np.tril(np.triu(outer), max_answer_len - 1)  # end >= start, at most max_answer_len tokens
    scores_flat = candidates.flatten()
    if topk == 1:
        idx_sort = [np.argmax(scores_flat)]
    elif len(scores_flat) < topk:
        idx_sort = np.argsort(-scores_flat)
    else:
        idx = np.argpartition(-scores_flat, topk)[0:topk]
        idx_sort = idx[np.argsort(-scores_flat[idx])]
    starts, ends = np.unravel_index(idx_sort, candidates.shape)[1:]
    # As in transformers, the (row, column) pair from nonzero() is matched, so token 0 always passes.
    allowed = undesired_tokens.nonzero()
    desired = np.isin(starts, allowed) & np.isin(ends, allowed)
    starts, ends = starts[desired], ends[desired]
    return starts, ends, candidates[0, starts, ends]


def select_starts_ends(start: np.ndarray, end: np.ndarray, p_mask: np.ndarray, min_null_score: float,
                       top_k: int, handle_impossible_answer: bool, max_answer_len: int):
    """Start/end logits `(L,)` of one window -> spans, scores, and the lowest null score seen so far."""
    allowed = np.abs(np.asarray(p_mask)[None] - 1)  # (1, L); windows are never padded
    masked = allowed == 0.0
    start = np.where(masked, -10000.0, start[None]).astype(np.float32)
    end = np.where(masked, -10000.0, end[None]).astype(np.float32)
    start, end = softmax(start), softmax(end)
    if handle_impossible_answer:
        min_null_score = min(min_null_score, (start[0, 0] * end[0, 0]).item())
    start[0, 0] = end[0, 0] = 0.0  # the null answer is not a span
    starts, ends, scores = decode_spans(start, end, top_k, max_answer_len, allowed)
    return starts, ends, scores, min_null_score


def char_span(enc: Encoding, s: int, e: int, sequence_index: int, align_to_words: bool) -> tuple[int, int]:
    """Character offsets of tokens s..e in the context, widened to whole words when asked."""
    if align_to_words:
        try:
            start_word, end_word = enc.token_to_word(s), enc.token_to_word(e)
            return (enc.word_to_chars(start_word, sequence_index=sequence_index)[0],
                    enc.word_to_chars(end_word, sequence_index=sequence_index)[1])
        except Exception:  # tokens outside any word (specials): keep to token offsets, as transformers does
            pass
    return enc.offsets[s][0], enc.offsets[e][1]


# -- the pipeline ----------------------------------------------------------------------------------------


class QuestionAnsweringPipeline(Pipeline):
    """(question, context) -> answer spans and scores (`top_k`, `doc_stride`, `max_answer_len`), transformers 4's
    "question-answering"."""

    task = "question-answering"
    head = "question-answering"
    OPTIONS = OPTIONS

    def __init__(self, checkpoint, **kwargs: Any):
        outputs = checkpoint.config.num_labels
        if outputs != 2:  # transformers unpacks (start, end) from them and fails on "too many values"
            raise UnsupportedModelError(
                f"{checkpoint.model_dir / 'config.json'} gives its question-answering head {outputs} output"
                f"{'s' if outputs != 1 else ''} (num_labels={outputs}); an extractive QA head has 2, a start and an "
                "end logit per token. This checkpoint is not a QA model: use one fine-tuned for question-answering.")
        super().__init__(checkpoint, **kwargs)
        # Windows and offsets as transformers 4 tokenized them (it differs on SentencePiece files only).
        self.window_tokenizer = self.tokenizer.as_transformers4()

    @property
    def question_first(self) -> bool:
        return self.tokenizer.padding_side == "right"

    def window_sizes(self, max_seq_len: int | None = None, doc_stride: int | None = None) -> tuple[int, int]:
        """(max_seq_len, doc_stride) as transformers 4 defaults them: min(384, the model's limit), and
        min(128, half a window)."""
        max_seq_len = max_seq_len or min(self.tokenizer.model_max_length, 384)
        if doc_stride is None:
            doc_stride = min(max_seq_len // 2, 128)
        if doc_stride > max_seq_len:
            raise InputError(f"doc_stride ({doc_stride}) is larger than max_seq_len ({max_seq_len}); "
                             "lower it.")
        if max_seq_len > self.config.max_positions:
            raise InputError(f"max_seq_len={max_seq_len} exceeds the {self.config.max_positions} positions "
                             f"of {self.checkpoint.name}; pass at most {self.config.max_positions}.")
        return max_seq_len, doc_stride

    def windows(self, examples: list[Example], max_seq_len: int, doc_stride: int) -> list[Window]:
        """Preprocess: every example's windows, in order, with their p_mask."""
        first = self.question_first
        questions = [x.question for x in examples]
        contexts = [x.context for x in examples]
        per_example = self.window_tokenizer.encode_windows(
            questions if first else contexts, contexts if first else questions, max_length=max_seq_len,
            stride=doc_stride, strategy="only_second" if first else "only_first",
            direction=self.tokenizer.truncation_side)  # the twin's copy would not follow a later change
        cls_id = self.tokenizer.convert_tokens_to_ids(self.tokenizer.special_tokens["cls"])
        windows = []
        for i, encodings in enumerate(per_example):
            for enc in encodings:
                p_mask = np.array([int(s != 1) if first else 0 for s in enc.sequence_ids], dtype=np.int64)
                if cls_id is not None:
                    p_mask[np.asarray(enc.ids) == cls_id] = 0  # some models answer "impossible" with [CLS]
                windows.append(Window(i, enc, p_mask))
        return windows

    def parse_call(self, args: tuple, kwargs: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        """`qa(question=..., context=...)`, lists of both, `qa({"question": ..., "context": ...})` or a list
        of such dicts."""
        kwargs = dict(kwargs)
        if len(args) == 1 and as_stream(args[0]) is not None:  # a generator or dataset of question dicts
            return args[0], kwargs
        return parse_inputs(args, kwargs.pop("question", None), kwargs.pop("context", None)), kwargs

    def preprocess(self, inputs: Any, doc_stride: int | None = None, max_seq_len: int | None = None,
                   max_question_len: int = 64) -> Batch:
        """Examples (or what `qa(...)` accepts as one argument) -> every window of every example, in order
        (the batch's context)."""
        examples = inputs if isinstance(inputs, list) and inputs and all(isinstance(x, Example) for x in inputs) \
            else parse_inputs((inputs,))
        max_seq_len, doc_stride = self.window_sizes(max_seq_len, doc_stride)
        windows = self.windows(examples, max_seq_len, doc_stride)
        items = [Item(w.encoding.ids, w.encoding.type_ids) for w in windows]
        return Batch(items, examples, len(examples) == 1, context=windows)

    def postprocess(self, outputs: list[np.ndarray], batch: Batch, **options: Any) -> dict | list:
        """Windows' `(L, 2)` logits -> answers per example. One answer is a dict; `top_k` > 1 gives a
        list; several questions, a list of those."""
        grouped: list[tuple[list[Window], list[np.ndarray]]] = [([], []) for _ in batch.inputs]
        for window, out in zip(batch.context, outputs, strict=True):
            grouped[window.example][0].append(window)
            grouped[window.example][1].append(out)
        results = [self.example_answers(x, *grouped[i], **options) for i, x in enumerate(batch.inputs)]
        return results[0] if batch.single else results

    def example_answers(self, example: Example, windows: list[Window], logits: list[np.ndarray], *,
                        top_k: int = 1, handle_impossible_answer: bool = False, max_answer_len: int = 15,
                        align_to_words: bool = True) -> dict | list[dict]:
        """One example's windows and their `(L, 2)` logits -> answers, as transformers 4 returns them."""
        min_null_score = NULL_SCORE
        answers: list[dict] = []
        pre_topk = top_k * 2 + 10 if align_to_words else top_k  # word alignment may merge candidates
        sequence_index = 1 if self.question_first else 0
        for window, out in zip(windows, logits, strict=True):
            starts, ends, scores, min_null_score = select_starts_ends(
                out[:, 0], out[:, 1], window.p_mask, min_null_score, pre_topk, handle_impossible_answer,
                max_answer_len)
            for s, e, score in zip(starts, ends, scores, strict=True):
                start, end = char_span(window.encoding, int(s), int(e), sequence_index, align_to_words)
                text = example.context[start:end]
                same = next((a for a in answers if a["answer"].lower() == text.lower()), None)
                if same:
                    same["score"] += score.item()
                else:
                    answers.append({"score": score.item(), "start": start, "end": end, "answer": text})
        if handle_impossible_answer:
            answers.append({"score": min_null_score, "start": 0, "end": 0, "answer": ""})
        answers = sorted(answers, key=lambda a: a["score"], reverse=True)[:top_k]
        return answers[0] if len(answers) == 1 else answers

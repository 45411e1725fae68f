"""What the studio computes for one query, through the pipeline's public stages; no HTTP here.

Two pipelines of the same checkpoint: the exact one (fp32, loaded at start) and the int8 one (loaded on
first use). A query names the one whose views the page details (`quantize`) and whether both answer side by
side (`compare`). Long texts follow `coulisse classify --long-text`: `truncate` answers on the first
`model_max_length` tokens (the page shows where the cut falls), `chunk` on the mean of the windows' logits
(`interfaces/jobs/predict.py`'s windows; the page shows each window's span and answer).

The long-text modes are text-classification's. A studio of another task of `coulisse explain` shows that
task's views of `coulisse explain --html` for the weights asked (with the question of question-answering, the
labels and template of zero-shot-classification); side by side, each weights' answer in the task's terms
(`report`'s views) and whether they agree (`Agreement`: the same entities, best tokens, answer span, ranking,
heaviest entries; an embedding's cosine).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from coulisse.errors import InputError
from coulisse.interfaces.attribution_view import ATTRIBUTION_METHODS, ATTRIBUTION_TASKS, cli_target
from coulisse.interfaces.explain_input import read_as
from coulisse.interfaces.head_views import Agreement
from coulisse.interfaces.inspection import Inspection, head_view, inspect_text
from coulisse.tasks.text_classification import apply_function
from coulisse.tasks.windows import LONG_TEXT, average_logits, default_stride, split_windows, window_starts

log = logging.getLogger(__name__)

QUANTIZE = ("none", "int8")
WEIGHTS = {"none": "fp32", "int8": "int8"}  # the query's value -> what the page calls those weights
MAX_TEXT_CHARS = 100_000  # a chunked text of this size is ~60 windows of 512 tokens: seconds, not minutes
YES, NO = ("1", "on", "true", "yes"), ("0", "off", "false", "no")


@dataclass(frozen=True)
class Query:
    text: str = ""
    quantize: str = "none"  # the weights whose views are detailed
    long_text: str = "truncate"
    stride: int | None = None  # chunk mode: tokens shared by consecutive windows (default: a quarter)
    method: str = "integrated_gradients"
    target: str = ""  # the label whose words are scored, a name or an id (empty: the answer's label)
    compare: bool = True  # exact and int8 side by side
    question: str = ""  # question-answering: the question; `text` is the context
    labels: str = ""  # zero-shot-classification: the candidate labels, comma-separated
    template: str = ""  # zero-shot-classification: the hypothesis, {} for the label (empty: the model's language)


# what the page's form and /api/explain read: another name (a typo, `methode=occlusion`) is refused, not ignored
PARAMETERS = tuple(f.name for f in dataclasses.fields(Query))


def kept_query(params: dict[str, list[str]]) -> Query:
    """What a refused query's form keeps: its texts, and each choice that is one of its values on its own,
    so the page that says what was wrong shows the rest as it was sent."""
    texts = {name: (params.get(name) or [""])[-1][:MAX_TEXT_CHARS] for name in ("text", "question", "labels",
                                                                                 "template", "target")}
    choices = {name: value for name, allowed in (("quantize", QUANTIZE), ("long_text", LONG_TEXT),
                                                 ("method", ATTRIBUTION_METHODS))
               if (value := _last(params, name, "")) in allowed}
    compare = _last(params, "compare", "1").lower()
    return Query(**texts, **choices, compare=compare not in NO)


def _last(params: dict[str, list[str]], name: str, default: str) -> str:
    values = params.get(name) or [default]
    return values[-1].strip()


def _choice(value: str, name: str, choices: Iterable[str]) -> str:
    if value not in choices:
        raise InputError(f"{name}={value!r} is not one of {', '.join(choices)}; pick one of those.")
    return value


def parse_query(params: dict[str, list[str]], task: str = "text-classification") -> Query:
    """A query string's values (every value of each name; a repeated name's last wins, so that a form's
    hidden `compare=0` before its checkbox's `compare=1` reads as the box says) -> a checked Query, for a
    studio of `task` (what a text pair needs is checked with the text, by `Studio.explore`)."""
    if unknown := sorted(set(params) - set(PARAMETERS)):
        raise InputError(f"{unknown[0]}={_last(params, unknown[0], '')!r}: the studio has no such parameter; it reads "
                         f"{', '.join(PARAMETERS)}.")
    text = (params.get("text") or [""])[-1]
    if len(text) > MAX_TEXT_CHARS:
        raise InputError(f"the text has {len(text)} characters, more than the studio's {MAX_TEXT_CHARS}; "
                         "explain a part of it, or classify the file with `coulisse classify --input`.")
    if task != "text-classification":  # the long-text modes are classification's
        given = [name for name, on in (("long_text", _last(params, "long_text", "truncate") != "truncate"),
                                       ("stride", bool(_last(params, "stride", "")))) if on]
        if given:
            raise InputError(f"{', '.join(given)}: text-classification's, and this studio explains {task}; drop "
                             f"{'it' if len(given) == 1 else 'them'}.")
    long_text = _choice(_last(params, "long_text", "truncate"), "long_text", LONG_TEXT)
    stride_text = _last(params, "stride", "")
    stride = None
    if stride_text:
        digits = stride_text.removeprefix("-")
        if not (digits.isascii() and digits.isdecimal()):  # not '²' (int() refuses it) nor '٣' (int() reads 3)
            raise InputError(f"stride={stride_text!r} is not a whole number of tokens; give one, e.g. 64.")
        if stride_text.startswith("-"):
            raise InputError(f"stride={stride_text}: the tokens two windows share cannot be negative; give 0 or "
                             "more, e.g. 64.")
        if long_text != "chunk":
            raise InputError("stride applies with long_text=chunk only; drop it or choose chunk.")
        stride = int(stride_text)
    compare = _last(params, "compare", "1").lower()
    if compare not in YES + NO:
        raise InputError(f"compare={compare!r}; use 1 (exact and int8 side by side) or 0.")
    method = _choice(_last(params, "method", "integrated_gradients"), "method", ATTRIBUTION_METHODS)
    if method != "integrated_gradients" and task not in ATTRIBUTION_TASKS:
        raise InputError(f"method={method}: {task} has no word scores (only {' and '.join(ATTRIBUTION_TASKS)}); "
                         "drop it.")
    target = _last(params, "target", "")
    if target and task not in ATTRIBUTION_TASKS:
        raise InputError(f"target={target}: {task} has no word scores (only {' and '.join(ATTRIBUTION_TASKS)}); "
                         "drop it.")
    question, labels = (params.get("question") or [""])[-1], _last(params, "labels", "")
    template = (params.get("template") or [""])[-1]
    if question and task != "question-answering":
        raise InputError(f"question is for a question-answering studio, and this one explains {task}; drop it.")
    if (labels or template) and task != "zero-shot-classification":
        raise InputError(f"labels and template are for a zero-shot-classification studio, and this one explains "
                         f"{task}; drop them.")
    return Query(text=text, quantize=_choice(_last(params, "quantize", "none"), "quantize", QUANTIZE),
                 long_text=long_text, stride=stride, method=method, target=target, compare=compare in YES,
                 question=question,
                 labels=labels, template=template)


@dataclass
class Answer:
    """One pipeline's answer to the whole text (truncated, or the mean of its windows' logits)."""

    weights: str  # fp32 or int8
    labels: list[str]  # id order
    logits: list[float]
    scores: list[float]
    label: str
    score: float


@dataclass
class Window:
    """A window of `--long-text chunk`: tokens [start, end) of the untruncated encoding (special tokens
    included in its indexing, added around each window), the characters they cover, the window's answer."""

    start: int
    end: int
    chars: tuple[int, int]
    answer: Answer


@dataclass
class Exploration:
    query: Query
    model: str
    answers: dict[str, Answer]  # fp32 / int8: those the query needs
    tokens: int  # the whole text's tokens, special tokens included
    limit: int  # the model's model_max_length
    windows: list[Window]  # chunk mode, for the detailed weights
    inspection: Inspection
    task: str = "text-classification"
    sides: dict[str, Any] = field(default_factory=dict)  # another task: weights -> its view (report_heads.HEADS)
    agreement: Agreement | None = None  # exact against int8, when both answered

    @property
    def detailed(self) -> Answer:
        return self.answers[WEIGHTS[self.query.quantize]]

    @property
    def answer(self) -> str:
        """The detailed weights' answer to the query, in words. text-classification: the page's Answer, for
        the whole text as `long_text` reads it (chunk: the mean of the windows' logits, `coulisse classify
        --long-text chunk`'s, where the stages detailed are the first window's); another task: its heading's."""
        if not self.answers:
            return self.inspection.head.headline
        a = self.detailed
        return f"{a.label} {a.score:.4f}"  # as the heading words it (head_views.Classified.headline)

    def to_dict(self) -> dict[str, Any]:
        x = self.inspection
        return {
            "model": self.model, "task": self.task, "query": asdict(self.query),
            "answer": self.answer,
            "answers": ({k: asdict(a) for k, a in self.answers.items()} if self.answers else
                        {k: {"weights": k, "answer": v.headline, "view": asdict(v)} for k, v in self.sides.items()}),
            "delta": delta(self.answers),
            "agreement": None if self.agreement is None else asdict(self.agreement),
            "length": {"tokens": self.tokens, "limit": self.limit, "truncated_at": x.truncated_at},
            "windows": [asdict(w) for w in self.windows],
            "tokens": [asdict(t) for t in x.tokens],
            "view": asdict(x.head),  # what the task's stage shows (report_heads.HEADS): scores, entities, masks...
            "attribution": None if x.attribution is None else x.attribution.to_dict(),
        }


def delta(answers: dict[str, Answer]) -> dict[str, float] | None:
    """int8 − fp32, per label, when both answered."""
    if set(answers) != {"fp32", "int8"}:
        return None
    return {name: b - a for name, a, b in zip(answers["fp32"].labels, answers["fp32"].scores,
                                             answers["int8"].scores, strict=True)}


def label_agreement(answers: dict[str, Answer]) -> Agreement | None:
    """Exact against int8 for text-classification: the same label, and how far apart the scores are."""
    diff = delta(answers)
    if diff is None:
        return None
    exact, int8 = answers["fp32"], answers["int8"]
    worst = f"largest |Δ score| {max(abs(d) for d in diff.values()):.2e}"
    if exact.label == int8.label:
        return Agreement(True, f"Same label ({exact.label}); {worst}.")
    return Agreement(False, f"The labels differ: {exact.label} against {int8.label}; {worst}.")


def answer_of(pipe, weights: str, logits: np.ndarray) -> Answer:
    """Logits -> every label's score and the answer, through the pipeline's post-processing."""
    function = pipe.options({})["function_to_apply"]
    labels = [pipe.config.id2label[i] for i in range(len(logits))]
    top = pipe.postprocess(logits, function_to_apply=function)
    return Answer(weights, labels, [float(v) for v in logits], apply_function(logits, function).tolist(),
                  top["label"], float(top["score"]))


def window_spans(encoding, max_length: int, stride: int | None) -> list[tuple[int, int]]:
    """[start, end) in `encoding`'s token indices of each window `split_windows` cuts (same sizes, same
    starts), so that the page can say which characters each window read."""
    mask = encoding.special_tokens_mask
    head = next((i for i, m in enumerate(mask) if not m), len(mask))
    tail = next((i for i, m in enumerate(reversed(mask)) if not m), 0) if head < len(mask) else 0
    size = max_length - head - tail
    body = len(mask) - head - tail
    step = default_stride(size) if stride is None else stride
    return [(head + s, head + min(s + size, body)) for s in window_starts(body, size, step)]


def answer_text(pipe, weights: str, query: Query) -> tuple[Answer, list[Window]]:
    """The answer of `coulisse classify --long-text <mode>` for the query's text, and its windows."""
    if query.long_text == "truncate":
        logits = np.asarray(pipe.forward(pipe.preprocess([query.text]).items)[0], dtype=np.float32)
        return answer_of(pipe, weights, logits), []
    tok = pipe.tokenizer
    whole = tok.encode_batch([query.text], truncation=False)[0]
    windows = split_windows([whole], tok.model_max_length, query.stride)
    rows = [np.asarray(r, dtype=np.float32) for r in pipe.forward(windows.items)]
    spans = window_spans(whole, tok.model_max_length, query.stride)
    offsets = whole.offsets
    shown = [Window(a, b, (offsets[a][0], offsets[b - 1][1]) if b > a else (0, 0), answer_of(pipe, weights, r))
             for (a, b), r in zip(spans, rows, strict=True)]
    return answer_of(pipe, weights, average_logits(rows, windows.owners, 1)[0]), shown


class Studio:
    """The pipelines and the lock that serialises their use: one query at a time runs on the CPU's threads
    (the studio is one person's; two explanations at once would only share the cores)."""

    def __init__(self, exact, load_int8: Callable[[], Any]):
        self.exact = exact
        self.load_int8 = load_int8
        self.int8 = None
        self.lock = threading.Lock()

    @property
    def model(self) -> str:
        return self.exact.checkpoint.name

    @property
    def task(self) -> str:
        return self.exact.task

    @functools.cached_property
    def language(self) -> str | None:
        """The model's one language, which the page marks its texts in (None: it names none)."""
        from coulisse.interfaces.inspection import pipe_language

        return pipe_language(self.exact)

    def pipeline(self, weights: str):
        if weights == "fp32":
            return self.exact
        if self.int8 is None:
            log.info("loading the int8 pipeline of %s (first query that needs it)", self.model)
            self.int8 = self.load_int8()
        return self.int8

    def explore(self, query: Query) -> Exploration:
        if not query.text.strip():
            raise InputError("the text is empty; type or paste one in the box.")
        if self.task != "text-classification":
            return self._explore_task(query)
        wanted = WEIGHTS[query.quantize]
        with self.lock:
            chosen = self.pipeline(wanted)
            answers, windows = {}, []
            for weights in ("fp32", "int8") if query.compare else (wanted,):
                answers[weights], shown = answer_text(self.pipeline(weights), weights, query)
                if weights == wanted:
                    windows = shown
            # the words are scored towards the answer shown (chunk: the mean of the windows'), unless asked
            target = cli_target(chosen, query.target) if query.target else answers[wanted].label
            inspection = inspect_text(chosen, query.text, method=query.method, target=target)
            tokens = len(chosen.tokenizer.encode_batch([query.text], truncation=False)[0].ids)
        limit = chosen.tokenizer.model_max_length
        if len(windows) > 1:
            inspection.notes.append(f"Long text, chunk mode: the views below show the first window (the tokens "
                                    f"truncation keeps), its words scored towards {inspection.attribution.label}; "
                                    f"the answer above is the mean of the {len(windows)} windows' logits.")
        return Exploration(query, self.model, answers, tokens, limit, windows, inspection,
                           agreement=label_agreement(answers))

    def _explore_task(self, query: Query) -> Exploration:
        """Another task of `coulisse explain`: its views, for the weights asked."""
        question, labels, template = query.question or None, query.labels or None, query.template or None
        if self.task == "question-answering" and not (question or "").strip():
            raise InputError("the text is the context: write the question asked about it in the question box "
                             "(question=...).")
        if self.task == "zero-shot-classification" and not labels:
            raise InputError("write the candidate labels in the labels box, comma-separated (labels=sport,cinéma).")
        wanted = WEIGHTS[query.quantize]
        with self.lock:
            chosen = self.pipeline(wanted)
            target = cli_target(chosen, query.target, labels) if query.target else None
            inspection = inspect_text(chosen, query.text, method=query.method, target=target, question=question,
                                      labels=labels, template=template)
            read, limit, _ = read_as(chosen, query.text)  # a pooled embedding: the folder's prompt and length
            pair = None
            if self.task == "question-answering":  # the pair, read in windows of max_seq_len tokens
                limit = chosen.window_sizes()[0]
                read, pair = (question, read) if chosen.question_first else (read, question)
            tokens = len(chosen.tokenizer.encode_batch([read], None if pair is None else [pair],
                                                       truncation=False)[0].ids)
            sides = {}
            if query.compare:  # the other weights' answer alone: no attention maps, no attributions
                for weights in ("fp32", "int8"):
                    sides[weights] = inspection.head if weights == wanted else head_view(
                        self.pipeline(weights), query.text, question=question, labels=labels, template=template)
        agreement = sides["fp32"].against(sides["int8"]) if sides else None
        return Exploration(query, self.model, {}, tokens, limit, [], inspection, self.task, sides, agreement)

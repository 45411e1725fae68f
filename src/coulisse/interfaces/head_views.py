"""What the HTML page shows after the encoder: one view per task, its data and the function that gathers it.

Each view is a dataclass with a `headline` (the answer in a few words) and, where two answers can differ,
`against` (whether two answers to one input are the same in the task's terms: the studio's exact-vs-int8
panel). `HEAD_VIEWS` maps a task to the function that gathers its view through the pipeline's public stages,
as `coulisse.interfaces.explain.STAGES` does for the terminal; `coulisse.interfaces.report_heads.HEADS` renders it.
Light at import (numpy and torch inside the functions): the CLI imports the page's builders at start-up.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from coulisse.errors import InputError
from coulisse.interfaces.explain import activation_words, entity_options, sentence_embedding, zero_shot_words
from coulisse.interfaces.explain_input import Read
from coulisse.interfaces.formatting import one_line

EMBEDDING_COSINE_GATE = 0.99  # int8's quality gate: this mean cosine to fp32's embeddings (bench/quality_int8.py)


@dataclass
class Agreement:
    """Two answers to the same input (the same checkpoint's exact and int8 weights, in the studio): whether
    they are the same answer, in the task's terms, and how far apart they are, in words."""

    same: bool
    words: str


def _worst(a: list[float], b: list[float]) -> float:
    return max((abs(x - y) for x, y in zip(a, b, strict=True)), default=0.0)


def _quoted(word: str) -> str:
    return f"«{one_line(word.strip(), 30, '…')}»"


@dataclass
class Classified:
    """text-classification: the head's logits, the function that made them probabilities, the answer."""

    logits: list[float]
    scores: list[float]
    function: str  # softmax, sigmoid or none
    id2label: dict[int, str]
    answer: dict[str, Any]  # the pipeline's result: label, score

    @property
    def headline(self) -> str:
        return self.worded(str)

    def worded(self, value: Callable[[str], str]) -> str:
        return f"{value(self.answer['label'])} {self.answer['score']:.4f}"


@dataclass
class Ranked:
    """zero-shot-classification: one (text, hypothesis) pair per candidate label, its NLI logits, the ranking."""

    labels: list[str]  # the candidate labels, in the order given
    hypotheses: list[str]
    nli_logits: list[list[float]]  # (labels, NLI classes)
    entailment: int
    contradiction: int
    id2label: dict[int, str]
    how: str  # the post-processing, in words
    scores: list[float]  # per label, in the order given
    answer: dict[str, Any]  # the pipeline's result: labels and scores, ranked

    @property
    def headline(self) -> str:
        return self.worded(str)

    def worded(self, value: Callable[[str], str]) -> str:
        return f"{value(self.answer['labels'][0])} {self.answer['scores'][0]:.4f}"

    def against(self, other: Ranked) -> Agreement:
        mine, theirs = self.answer["labels"], other.answer["labels"]
        worst = f"largest |Δ score| {_worst(self.scores, other.scores):.2e}"
        if mine == theirs:
            return Agreement(True, f"Same ranking of the {len(mine)} labels; {worst}.")
        return Agreement(False, f"The rankings differ: {' > '.join(mine)} against {' > '.join(theirs)}; {worst}.")


@dataclass
class Tagged:
    """token-classification: each token's best label and its probability, and the pipeline's entities."""

    labels: list[tuple[str, float]]  # per token the model saw
    entities: list[dict[str, Any]]  # aggregation_strategy="simple"

    @property
    def headline(self) -> str:
        return self.worded(str)

    def worded(self, value: Callable[[str], str]) -> str:
        if not self.entities:
            return "no entity"
        shown = ", ".join(f"{value(x['entity_group'])} «{value(one_line(x['word'].strip(), 30, '…'))}»"
                          for x in self.entities[:3])
        more = f", … ({len(self.entities)} in all)" if len(self.entities) > 3 else ""
        return f"{shown}{more}"

    def against(self, other: Tagged) -> Agreement:
        """Entities are the same when their label and characters are."""
        def key(x):
            return x["entity_group"], x["start"], x["end"]

        mine, theirs = {key(x): x for x in self.entities}, {key(x): x for x in other.entities}
        shared = [k for k in mine if k in theirs]
        worst = max((abs(mine[k]["score"] - theirs[k]["score"]) for k in shared), default=0.0)
        if not mine and not theirs:
            return Agreement(True, "No entity in either.")
        if mine.keys() == theirs.keys():
            return Agreement(True, f"Same {len(mine)} entit{'y' if len(mine) == 1 else 'ies'} (label and "
                                   f"characters); largest |Δ score| {worst:.2e}.")

        def listed(xs, ys):
            only = [f"{x['entity_group']} {_quoted(x['word'])}" for k, x in xs.items() if k not in ys]
            return (", ".join(only[:3]) + (f", … ({len(only)})" if len(only) > 3 else "")) or "none"

        return Agreement(False, f"The entities differ: {len(shared)} the same; only in the first: "
                                f"{listed(mine, theirs)}; only in the second: {listed(theirs, mine)}.")


@dataclass
class Filled:
    """fill-mask: for each masked position, the pipeline's best proposals."""

    masks: list[list[dict[str, Any]]]  # per mask: score, token, token_str, sequence
    vocab_size: int

    @property
    def headline(self) -> str:
        return self.worded(str)

    def worded(self, value: Callable[[str], str]) -> str:
        return " · ".join(f"«{value(one_line(m[0]['token_str'].strip(), 30, '…'))}» {m[0]['score']:.4f}"
                          for m in self.masks if m)

    def against(self, other: Filled) -> Agreement:
        firsts = [(a[0], b[0]) for a, b in zip(self.masks, other.masks, strict=True) if a and b]
        differ = [(n, a, b) for n, (a, b) in enumerate(firsts, 1) if a["token"] != b["token"]]
        shared = sum(len({p["token"] for p in a} & {p["token"] for p in b})
                     for a, b in zip(self.masks, other.masks, strict=True))
        shown = sum(min(len(a), len(b)) for a, b in zip(self.masks, other.masks, strict=True))
        worst = max((abs(a["score"] - b["score"]) for a, b in firsts if a["token"] == b["token"]), default=0.0)
        tops = f"the proposals shown share {shared} of {shown} tokens"
        if not differ:
            return Agreement(True, f"Same best token for each mask; {tops}; largest |Δ score| of the best "
                                   f"{worst:.2e}.")
        said = "; ".join(f"mask {n}: {_quoted(a['token_str'])} against {_quoted(b['token_str'])}"
                         for n, a, b in differ)
        return Agreement(False, f"The best tokens differ ({said}); {tops}.")


@dataclass
class Window:
    """question-answering: one window of the context, the tokens likeliest to start and end the answer."""

    tokens: list[str]
    starts: list[tuple[int, float]]  # (token index, probability over the tokens allowed to bound an answer)
    ends: list[tuple[int, float]]
    best: tuple[int, int, float] | None  # start token, end token, span score


@dataclass
class Answered:
    """question-answering: the question, the windows the pipeline read, its answer in the context."""

    question: str
    context: str
    windows: list[Window]
    answer: dict[str, Any] | None  # the pipeline's: answer, score, start, end

    @property
    def headline(self) -> str:
        return self.worded(str)

    def worded(self, value: Callable[[str], str]) -> str:
        if not self.answer:
            return "no answer"
        return f"«{value(one_line(self.answer['answer'].strip(), 40, '…'))}» {self.answer['score']:.4f}"

    def against(self, other: Answered) -> Agreement:
        def span(answer):
            return None if not answer else (answer["start"], answer["end"])

        if span(self.answer) == span(other.answer):
            if not self.answer:
                return Agreement(True, "No answer from either.")
            return Agreement(True, f"Same answer span (characters {self.answer['start']} to {self.answer['end']}); "
                                   f"|Δ score| {abs(self.answer['score'] - other.answer['score']):.2e}.")

        def said(answer):
            return "no answer" if not answer else f"{_quoted(answer['answer'])} ({answer['start']}–{answer['end']})"

        return Agreement(False, f"The answers differ: {said(self.answer)} against {said(other.answer)}.")


@dataclass
class Pooled:
    """feature-extraction: how the token vectors become one embedding, and that embedding."""

    how: str
    vector: list[float]

    @property
    def headline(self) -> str:
        return self.worded(str)

    def worded(self, value: Callable[[str], str]) -> str:
        import numpy as np

        return f"embedding ({len(self.vector)},), norm {float(np.linalg.norm(self.vector)):.4f}"

    def against(self, other: Pooled) -> Agreement:
        """Close when the cosine is at least int8's quality gate for embeddings (0.99)."""
        import numpy as np

        a, b = np.asarray(self.vector, dtype=np.float64), np.asarray(other.vector, dtype=np.float64)
        cosine = float(a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-30))
        worst = _worst(self.vector, other.vector)
        return Agreement(cosine >= EMBEDDING_COSINE_GATE,
                         f"Cosine {cosine:.6f} between the two embeddings (int8's quality gate: ≥ "
                         f"{EMBEDDING_COSINE_GATE} on average); largest |Δ| of a component {worst:.2e}.")


@dataclass
class Expanded:
    """sparse-embedding (SPLADE): the heaviest entries of the pooled vocabulary weights."""

    activation: str  # in words, e.g. log(1 + ReLU(logit))
    strategy: str  # max or sum over the tokens
    vocab_size: int
    active: int
    entries: list[tuple[str, float, bool, int | None]]  # token, weight, in the text, the token it comes from

    @property
    def headline(self) -> str:
        return self.worded(str)

    def worded(self, value: Callable[[str], str]) -> str:
        top = ", ".join(value(entry[0]) for entry in self.entries[:3])
        return f"{self.active:,} active entries: {top}"

    def against(self, other: Expanded) -> Agreement:
        """The same heaviest entries (as a set: equal weights may swap places)."""
        mine, theirs = {x[0]: x[1] for x in self.entries}, {x[0]: x[1] for x in other.entries}
        shared = [t for t in mine if t in theirs]
        worst = max((abs(mine[t] - theirs[t]) for t in shared), default=0.0)
        return Agreement(mine.keys() == theirs.keys(),
                         f"The {len(mine)} heaviest entries share {len(shared)} tokens; largest |Δ weight| among "
                         f"them {worst:.2e}; {self.active:,} against {other.active:,} active entries.")


def _classified(pipe, text: str, *, seen: Read, **_):
    import numpy as np

    from coulisse.tasks.text_classification import apply_function

    function = seen.options["function_to_apply"]
    logits = np.asarray(pipe.forward(seen.batch.items)[0], dtype=np.float32)
    return Classified(logits.tolist(), apply_function(logits, function).tolist(), function,
                      dict(pipe.config.id2label), pipe.postprocess(logits, function_to_apply=function))


def _ranked(pipe, text: str, *, seen: Read, **_):
    import numpy as np

    from coulisse.tasks.zero_shot import zero_shot_scores

    batch, template, multi_label = seen.batch, seen.options["hypothesis_template"], seen.options["multi_label"]
    candidates = batch.context
    outputs = pipe.forward(batch)
    logits = np.stack(outputs)  # (labels, NLI classes)
    ent, con = pipe.entailment_id, pipe.contradiction_id
    how = "a " + zero_shot_words(multi_label, len(candidates))
    scores = zero_shot_scores(logits, ent, con, multi_label)
    return Ranked(list(candidates), [template.format(label) for label in candidates], logits.tolist(), ent, con,
                  dict(pipe.config.id2label), how, [float(s) for s in scores],
                  pipe.postprocess(outputs, batch, multi_label=multi_label))


def _tagged(pipe, text: str, *, seen: Read, output, notes: list[str], **_):
    from coulisse.tasks.functional import softmax

    probabilities = softmax(output.float().cpu().numpy())  # (T, labels)
    id2label = pipe.config.id2label
    labels = [(id2label[int(row.argmax())], float(row.max())) for row in probabilities]
    given = entity_options(pipe, seen)
    if seen.cut:  # the whole text, in windows
        how = "as `coulisse ner` reads it" if "stride" in given else "the pipeline's stride"
        notes.append(f"The text is longer than the model's {pipe.tokenizer.model_max_length} tokens: the entities "
                     f"come from windows sharing {given.get('stride', seen.options['stride'])} tokens, {how}; the "
                     "token views show the first window.")
    return Tagged(labels, pipe(text, **given))


def _filled(pipe, text: str, *, seen: Read, **_):
    if pipe.tokenizer.mask_token_id not in seen.encoding.ids:
        raise InputError(f"{text!r} has no mask token ({pipe.tokenizer.special_tokens['mask']}) in the tokens the "
                         "model reads; put one where a word is missing.")
    results = pipe(text, top_k=5)
    return Filled([results] if isinstance(results[0], dict) else results, pipe.config.vocab_size)


def _answered(pipe, text: str, *, seen: Read, question: str, notes: list[str], **_):
    import numpy as np

    from coulisse.tasks.base import POST
    from coulisse.tasks.functional import softmax
    from coulisse.tasks.question_answering import NULL_SCORE, select_starts_ends

    options, batch = seen.options, seen.batch
    logits = pipe.forward(batch)
    post = pipe.stage_options(options, POST)
    shown = []
    for window, lg in zip(batch.context, logits, strict=True):
        allowed = np.flatnonzero(window.p_mask == 0)
        top = {}
        for col in (0, 1):
            p = softmax(lg[allowed, col])  # over the tokens allowed to bound an answer
            order = np.argsort(-p, kind="stable")[:5]
            top[col] = [(int(allowed[i]), float(p[i])) for i in order]
        starts, ends, scores, _ = select_starts_ends(lg[:, 0], lg[:, 1], window.p_mask, NULL_SCORE, 1,
                                                     post["handle_impossible_answer"], post["max_answer_len"])
        best = (int(starts[0]), int(ends[0]), float(scores[0])) if len(starts) else None
        shown.append(Window(list(window.encoding.tokens), top[0], top[1], best))
    if len(shown) > 1:
        notes.append(f"The context is longer than one window: the pipeline reads it in {len(shown)} windows; the "
                     "token and attention views show the first.")
    answer = pipe.postprocess(logits, batch, **post)
    answer = answer[0] if isinstance(answer, list) and answer else answer
    return Answered(question, text, shown, answer or None)


def _pooled(pipe, text: str, *, seen: Read, **_):
    vector, how = sentence_embedding(pipe, text, seen=seen)
    return Pooled(how, vector.tolist())


def _expanded(pipe, text: str, *, seen: Read, trace, shown: int = 20, **_):
    import torch

    head = pipe.model.head
    with torch.inference_mode():
        weights = head.token_weights(trace.hidden_states[-1])  # (T, vocab): the model's stage before pooling
    source = weights.argmax(0)
    entries = pipe(text)
    present = set(seen.encoding.ids)
    return Expanded(activation_words(head), head.strategy, int(weights.shape[1]), len(entries),
                    [(str(x["token"]), float(x["value"]), x["index"] in present,
                      int(source[x["index"]]) if head.strategy == "max" else None) for x in entries[:shown]])


# task -> what the HTML report shows after the encoder (the report's view of the answer)
HEAD_VIEWS = {
    "text-classification": _classified,
    "feature-extraction": _pooled,
    "token-classification": _tagged,
    "fill-mask": _filled,
    "question-answering": _answered,
    "zero-shot-classification": _ranked,
    "sparse-embedding": _expanded,
}

"""The HTML views of `coulisse explain --html`: pure functions from an `Inspection` to a string.

Every task of `coulisse explain` has a page. The tokenizer, encoder and attention views are the same for all
of them; what follows the encoder is the task's own view (`HEADS`: one dataclass and one renderer per task,
as the terminal has one renderer per task in `coulisse.interfaces.explain.STAGES`). Tasks whose answer is a
label (text-classification, zero-shot-classification) also colour each word by its attribution.

One self-contained page: inline CSS and a little inline JavaScript (the attention heat map is drawn on a
canvas from data embedded in the page), no font, script or image fetched from anywhere, so the file opens
offline and can be mailed. Each view is its own function returning an HTML fragment (`render_section`,
`render_summary`, and the parts they are made of), so that a live page (a studio) can reuse them.

Colours: a diverging palette, blue for what pushes towards the explained label, red for what pushes
against it, white for nothing; intensity is |score| / the largest |score| of the text.
"""

from __future__ import annotations

import base64
import html
import json
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from coulisse.interfaces.formatting import one_line

MAX_ATTENTION_TOKENS = 128  # the heat map's side: longer inputs show their first tokens (the data grows as n²)
MAX_TAIL_ROWS = 40  # truncated tokens listed in the token table
TOWARDS, AGAINST, NEUTRAL = (33, 102, 172), (178, 24, 43), (255, 255, 255)
EMBEDDING_COSINE_GATE = 0.99  # int8's quality gate: this mean cosine to fp32's embeddings (bench/quality_int8.py)


@dataclass
class TokenRow:
    piece: str
    id: int
    special: bool
    mask: int | None  # attention mask: 1 for every token the model saw; None for the truncated tail (not input)
    start: int
    end: int
    truncated: bool = False
    score: float | None = None
    sequence: int | None = None  # a pair's tokens: 0 or 1, the text their offsets index; None: special or alone


# -- what follows the encoder, one view per task --------------------------------------------------------------


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
        return f"embedding ({len(self.vector)},), norm {float(np.linalg.norm(self.vector)):.4f}"

    def against(self, other: Pooled) -> Agreement:
        """Close when the cosine is at least int8's quality gate for embeddings (0.99)."""
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


@dataclass
class Inspection:
    """Everything the page shows for one text (what `coulisse.interfaces.explain.inspect_text` gathers)."""

    text: str
    model: str
    task: str
    tokens: list[TokenRow]  # the model's tokens, then the truncated tail (`truncated=True`)
    hidden_size: int
    layer_norms: list[float]  # mean L2 norm of the token vectors: embeddings, then after each layer
    attentions: Any  # np.ndarray (layers, heads, T, T), T = tokens the model saw
    rollout: Any  # np.ndarray (T, T)
    head: Any  # the task's view: Classified, Ranked, Tagged, Filled, Answered, Pooled or Expanded
    attribution: Any = None  # coulisse.tasks.attributions.Attribution, for the tasks that answer with a label
    notes: list[str] = field(default_factory=list)
    sequences: tuple[str, ...] = ()  # a pair task's two texts, in the model's order (TokenRow.sequence indexes it)
    text_sequence: int | None = None  # which of them `text` is; None for a text alone
    language: str | None = None  # the model's one language ("fr"), which the page marks its texts in

    @property
    def lang(self) -> str:
        """The attribute that marks a text of this model's language, so that a screen reader reads a French
        review with a French voice (the page around it is English); nothing where the model names no language."""
        return lang_attribute(self.language)

    @property
    def seen(self) -> list[TokenRow]:
        return [t for t in self.tokens if not t.truncated]

    @property
    def truncated_at(self) -> int | None:
        """The character where the model's view of the text ends, when the text was cut."""
        if not any(t.truncated for t in self.tokens):
            return None
        mine = self.text_sequence
        return max((t.end for t in self.seen if not t.special and t.sequence == mine), default=0)

    def chars(self, t: TokenRow) -> str:
        """The characters a token stands for, in the text its offsets index."""
        if t.special:
            return ""
        return (self.sequences[t.sequence] if t.sequence is not None else self.text)[t.start:t.end]


def e(value: Any) -> str:
    return html.escape(str(value), quote=True)


# A language tag as HTML's lang takes it (BCP 47's common shape: "fr", "pt-BR", "zh-Hant"); a model card's
# "French" or "multilingual" is none, and marks nothing.
LANGUAGE_TAG = re.compile(r"[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})*")


def lang_attribute(language: str | None) -> str:
    """` lang="fr"` for a model's language that is a language tag, else nothing."""
    return f' lang="{e(language)}"' if language and LANGUAGE_TAG.fullmatch(language) else ""


def iso(value: Any) -> str:
    """`value` escaped and isolated: a right-to-left label or token (Arabic, Hebrew) keeps the numbers and
    punctuation beside it in their places."""
    return f"<bdi>{e(value)}</bdi>"


def headline_html(head) -> str:
    """A view's headline with the texts it quotes (labels, tokens, answers) isolated."""
    return head.worded(iso)


def diverging_rgb(value: float, scale: float) -> tuple[int, int, int]:
    """White at 0, blue (towards) at +scale, red (against) at -scale."""
    t = 0.0 if scale <= 0 else max(-1.0, min(1.0, value / scale))
    end = TOWARDS if t >= 0 else AGAINST
    return tuple(round(n + abs(t) * (c - n)) for n, c in zip(NEUTRAL, end, strict=True))


def luminance(rgb: tuple[int, int, int]) -> float:
    """WCAG 2's relative luminance of an sRGB colour."""
    def linear(c: int) -> float:
        c /= 255
        return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4

    r, g, b = (linear(c) for c in rgb)
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def ink(background: tuple[int, int, int]) -> str:
    """Black or white, whichever contrasts more with `background`: at least 4.58:1 on any colour (the two tie
    at luminance 0.179), above WCAG AA's 4.5:1 for text."""
    light = luminance(background)
    return "#fff" if 1.05 / (light + 0.05) > (light + 0.05) / 0.05 else "#000"


def _style(value: float, scale: float) -> str:
    rgb = diverging_rgb(value, scale)
    return f"background:rgb({rgb[0]},{rgb[1]},{rgb[2]});color:{ink(rgb)}"


def _signed(value: float) -> str:
    return f"{value:+.4f}"


# -- views ---------------------------------------------------------------------------------------------


def render_words(x: Inspection) -> str:
    """The text, each word coloured by its attribution; the title shows the value, pieces and ids."""
    a = x.attribution
    scale = max((abs(w.attribution) for w in a.words), default=0.0)
    out, at = [], 0
    for w in a.words:
        out.append(e(x.text[at:w.start]))
        pieces = " | ".join(x.seen[i].piece for i in w.tokens)
        ids = " ".join(str(a.ids[i]) for i in w.tokens)
        way = "towards" if w.attribution >= 0 else "against"
        title = f"{w.text}\n{_signed(w.attribution)}: {way} {a.label}\npieces: {pieces}\nids: {ids}"
        out.append(f'<span class="word {way}" data-score="{w.attribution:.6g}" '
                   f'style="{_style(w.attribution, scale)}" title="{e(title)}">{e(w.text)}</span>')
        at = w.end
    cut = x.truncated_at
    if cut is not None and cut >= at:
        out.append(e(x.text[at:cut]))
        out.append(f'<span class="truncated" title="cut at the model\'s limit: not seen"><span class="hidden"> (not '
                   f'seen by the model, cut at its limit:) </span>{e(x.text[cut:])}</span>')
    else:
        out.append(e(x.text[at:]))
    legend = (f'<div class="legend"><span><span class="against">against</span> {iso(a.label)} {_signed(-scale)}'
              f'</span><span class="ramp" aria-hidden="true"></span><span>{_signed(scale)} towards {iso(a.label)}'
              '</span><span>(words against are underlined)</span></div>')
    method = ("Integrated Gradients" if a.method == "integrated_gradients"
              else "Occlusion (each word's vectors replaced by the pad token's)")
    how = f"{a.steps} gradient evaluations, " if a.steps else ""
    gap = (f"completeness gap {a.gap:+.2e} of F(x) − F(baseline) = {a.delta:+.4f}" if a.method == "integrated_gradients"
           else f"sum {sum(a.scores):+.4f}, F(x) − F(baseline) = {a.delta:+.4f}")
    hypothesis = a.extra.get("hypothesis")
    f = (f"the {e(a.extra.get('nli_label', 'entailment'))} logit of the pair (text, {iso(hypothesis)})"
         if hypothesis is not None else f"the logit of {iso(a.label)}")
    meta = (f'<p class="meta">{method} on the {e(a.weights)} weights, {how}baseline: each word\'s vector replaced '
            f'by the {e(a.baseline)} token\'s, positions kept; F = {f}, before softmax; {gap}</p>')
    return (f'<p class="attributed" dir="auto"{x.lang}>{"".join(out)}</p>{legend}{meta}{render_top_words(x)}'
            + render_word_scores(x))


def render_word_scores(x: Inspection) -> str:
    """Every word's score as a table, folded: the colours and their hover titles say it to a mouse, this to a
    keyboard (the summary takes the focus) and a screen reader."""
    a = x.attribution
    rows = "".join(f'<tr><td class="num">{n}</td><td>{iso(w.text)}</td><td class="num">{_signed(w.attribution)}</td>'
                   f"<td>{'towards' if w.attribution >= 0 else 'against'} {iso(a.label)}</td></tr>"
                   for n, w in enumerate(a.words, 1))
    return (f'<details class="word-scores"><summary>every word\'s score ({len(a.words)} words)</summary>'
            '<table class="word-scores"><thead><tr><th>#</th><th>word</th><th>score</th><th>pushes</th></tr></thead>'
            f"<tbody>{rows}</tbody></table></details>")


def render_top_words(x: Inspection, k: int = 5) -> str:
    a = x.attribution
    rows = []
    for sign, name in ((1, "towards"), (-1, "against")):
        words = " · ".join(f"{iso(w.text)} ({_signed(w.attribution)})" for w in a.top_words(k, sign)) or "—"
        rows.append(f"<li><strong>{name} {iso(a.label)}:</strong> {words}</li>")
    return f'<ul class="top-words">{"".join(rows)}</ul>'


def render_tokens(x: Inspection) -> str:
    """The token table: piece, id, (for a pair: which text), special, mask, offsets, the characters, and the
    token's attribution where the task has them."""
    scored = x.attribution is not None
    scale = max((abs(t.score) for t in x.tokens if t.score is not None), default=0.0)
    rows = []
    tail = [t for t in x.tokens if t.truncated]
    shown = x.seen + tail[:MAX_TAIL_ROWS]
    for i, t in enumerate(shown):
        score = "" if t.score is None else f'<td class="num" style="{_style(t.score, scale)}">{_signed(t.score)}</td>'
        mask = (f'<td class="num">{t.mask}</td>' if t.mask is not None else
                '<td class="num" title="not in the input: cut by truncation, so it has no mask either">—</td>')
        seq = f"<td>{'—' if t.sequence is None else 'AB'[t.sequence]}</td>" if x.sequences else ""
        rows.append(f'<tr class="{"truncated" if t.truncated else "seen"}"><td class="num">{i}</td>'
                    f"<td><code>{iso(t.piece)}</code></td><td class=\"num\">{t.id}</td>{seq}"
                    f"<td>{'yes' if t.special else ''}</td>{mask}"
                    f"<td class=\"num\">[{t.start}:{t.end}]</td><td{x.lang}>{iso(x.chars(t))}</td>"
                    f"{(score or '<td></td>') if scored else ''}</tr>")
    columns = ["#", "piece", "id", *(["text (A/B)"] if x.sequences else []), "special", "mask", "offsets", "text",
               *(["attribution"] if scored else [])]
    if len(tail) > MAX_TAIL_ROWS:
        rows.append(f'<tr class="truncated"><td colspan="{len(columns)}">… {len(tail) - MAX_TAIL_ROWS} more '
                    "truncated tokens</td></tr>")
    note = (f"<p>{len(x.seen)} tokens seen; {len(tail)} cut by truncation (greyed, not seen by the model).</p>"
            if tail else f"<p>{len(x.seen)} tokens, none truncated.</p>")
    if x.sequences:
        a, b = (one_line(text, 70, "…") for text in x.sequences)
        note += (f"<p>A pair: text A “{iso(a)}” and text B “{iso(b)}”, one input; each token's offsets index "
                 "its own text.</p>")
    head = "<tr>" + "".join(f"<th>{c}</th>" for c in columns) + "</tr>"
    return f'{note}<table class="tokens"><thead>{head}</thead><tbody>{"".join(rows)}</tbody></table>'


def render_bars(values: list[float], names: list[str], css: str, width: int = 420, fmt: str = "{:.4f}",
                maximum: float | None = None) -> str:
    """A horizontal bar chart as inline SVG: one `<rect>` per value. The names' column is as wide as the longest
    name needs (~7 px a character at 12 px), up to 36 characters; a longer name is cut with "…" and said whole in
    its `<title>` (a zero-shot label, a fill-mask token: a fixed column cut their starts off, audit 41)."""
    top = maximum if maximum is not None else max((abs(v) for v in values), default=1.0) or 1.0
    longest = min(36, max((len(name) for name in names), default=0))
    row, label_w, value_w = 22, max(60, 7 * longest + 12), 70
    width += label_w - 130  # the bars keep their length
    bars = []
    for i, (v, name) in enumerate(zip(values, names, strict=True)):
        y = i * row
        w = max(1.0, abs(v) / top * (width - label_w - value_w))
        shown = name if len(name) <= longest else one_line(name, longest, "…")
        bars.append(f'<g class="bar"><title>{e(name)}</title>'
                    f'<text x="{label_w - 6}" y="{y + 15}" text-anchor="end">{e(shown)}</text>'
                    f'<rect x="{label_w}" y="{y + 3}" width="{w:.1f}" height="{row - 6}"></rect>'
                    f'<text x="{label_w + w + 6:.1f}" y="{y + 15}">{e(fmt.format(v))}</text></g>')
    height = row * len(values)
    # role="img" makes what is inside presentational: its name says every value, or a screen reader hears none
    said = "; ".join(f"{name} {fmt.format(v)}" for v, name in zip(values, names, strict=True))
    return (f'<svg class="{css}" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
            f'role="img" aria-label="{e(said)}">{"".join(bars)}</svg>')


def _answer(label: str, score: float | None = None) -> str:
    score_html = "" if score is None else f' <span class="score">{score:.4f}</span>'
    return f'<p class="answer">Answer: <strong class="label">{iso(label)}</strong>{score_html}</p>'


def render_classified(x: Inspection) -> str:
    h: Classified = x.head
    names = [h.id2label[i] for i in range(len(h.logits))]
    logits = ", ".join(f"{iso(n)} {v:+.4f}" for n, v in zip(names, h.logits, strict=True))
    what = {"softmax": "softmax", "sigmoid": "sigmoid per label", "none": "no function (raw scores)"}[h.function]
    mapping = ", ".join(f"{i}: {iso(repr(n))}" for i, n in enumerate(names))
    return (f'<p>logits (raw scores, one per label): {logits}</p><p>{what} → probabilities, each position named '
            f'by <code>id2label {{{mapping}}}</code>:</p>'
            + render_bars(h.scores, names, "scores", maximum=1.0 if h.function != "none" else None)
            + _answer(h.answer["label"], h.answer["score"]))


def render_ranked(x: Inspection) -> str:
    h: Ranked = x.head
    nli = ", ".join(f"{i}: {iso(repr(h.id2label[i]))}" for i in sorted(h.id2label))
    rows = "".join(f"<tr><td>{iso(label)}</td><td>{iso(hypothesis)}</td><td class=\"num\">{row[h.entailment]:+.4f}</td>"
                   f"<td class=\"num\">{row[h.contradiction]:+.4f}</td><td class=\"num\">{score:.4f}</td></tr>"
                   for label, hypothesis, row, score in zip(h.labels, h.hypotheses, h.nli_logits, h.scores,
                                                            strict=True))
    table = ('<table class="hypotheses"><thead><tr><th>label</th><th>hypothesis (text B)</th><th>entailment logit'
             '</th><th>contradiction logit</th><th>score</th></tr></thead>'
             f"<tbody>{rows}</tbody></table>")
    return (f"<p>One input per candidate label: the text (A) and a hypothesis made from the label (B), through the "
            f"same encoder and an NLI head, <code>id2label {{{nli}}}</code>. The views above show the pair whose "
            f"hypothesis is “{iso(x.sequences[1])}”.</p>{table}"
            f"<p>{e(h.how)} → ranking:</p>"
            + render_bars(h.answer["scores"], h.answer["labels"], "scores", maximum=1.0)
            + _answer(h.answer["labels"][0], h.answer["scores"][0]))


ENTITY_COLOURS = ("#fdd49e", "#c6dbef", "#c7e9c0", "#dadaeb", "#fcbba1", "#d9d9d9", "#fee391", "#9ecae1")


def render_entities_in_text(x: Inspection) -> str:
    """The text, each entity of the pipeline marked with its label."""
    h: Tagged = x.head
    groups = sorted({ent["entity_group"] for ent in h.entities})
    colour = {g: ENTITY_COLOURS[i % len(ENTITY_COLOURS)] for i, g in enumerate(groups)}
    out, at = [], 0
    for ent in h.entities:
        if ent["start"] < at:  # never overlapping with the pipeline's aggregation; kept safe all the same
            continue
        out.append(e(x.text[at:ent["start"]]))
        out.append(f'<mark class="entity" style="background:{colour[ent["entity_group"]]}" '
                   f'title="{e(ent["entity_group"])} {ent["score"]:.4f}">{e(x.text[ent["start"]:ent["end"]])}'
                   f'<sup>{iso(ent["entity_group"])}</sup></mark>')
        at = ent["end"]
    out.append(e(x.text[at:]))
    return f'<p class="tagged" dir="auto"{x.lang}>{"".join(out)}</p>'


def render_tagged(x: Inspection) -> str:
    h: Tagged = x.head
    entities = "".join(f'<tr><td>{iso(ent["entity_group"])}</td><td class="num">{ent["score"]:.4f}</td>'
                       f'<td class="num">[{ent["start"]}:{ent["end"]}]</td><td>{iso(ent["word"])}</td></tr>'
                       for ent in h.entities)
    entities = ('<table class="entities"><thead><tr><th>entity</th><th>score</th><th>characters</th><th>word</th>'
                f"</tr></thead><tbody>{entities}</tbody></table>" if h.entities else "<p>No entity.</p>")
    tokens = "".join(f'<tr><td class="num">{i}</td><td><code>{iso(t.piece)}</code></td><td>{iso(label)}</td>'
                     f'<td class="num">{score:.4f}</td></tr>'
                     for i, (t, (label, score)) in enumerate(zip(x.seen, h.labels, strict=True)))
    return ("<p>The head gives every token one logit per label; a softmax per token, then its best label "
            "(<code>aggregation_strategy='simple'</code> joins neighbouring tokens of one entity and drops 'O' and "
            f"the special tokens), the entities marked above:</p>{entities}"
            '<details><summary>every token\'s label</summary><table class="token-labels"><thead><tr><th>#</th>'
            f"<th>piece</th><th>label</th><th>probability</th></tr></thead><tbody>{tokens}</tbody></table></details>")


def render_filled(x: Inspection) -> str:
    h: Filled = x.head
    out = [f"<p>Only the masked positions go through the masked-LM head: one logit for each of the "
           f"{h.vocab_size:,} entries of the vocabulary, a softmax, the best {len(h.masks[0])}.</p>"]
    for n, proposals in enumerate(h.masks, 1):
        names = [p["token_str"] for p in proposals]
        out.append(f"<p>mask {n}:</p>" + render_bars([p["score"] for p in proposals], names, "scores", maximum=1.0))
        out.append(f'<p class="filled" dir="auto"{x.lang}>{e(proposals[0]["sequence"])}</p>')
    best = h.masks[0][0]
    return "".join(out) + _answer(best["token_str"], best["score"])


def render_answer_in_context(x: Inspection) -> str:
    """The question, and the context with the pipeline's answer marked."""
    h: Answered = x.head
    context = e(h.context)
    if h.answer:
        a = h.answer
        context = (f'{e(h.context[:a["start"]])}<mark class="answer-span" title="{a["score"]:.4f}">'
                   f'{e(h.context[a["start"]:a["end"]])}</mark>{e(h.context[a["end"]:])}')
    return (f'<p>Question: “<span{x.lang}>{iso(h.question)}</span>”</p>'
            f'<p class="context" dir="auto"{x.lang}>{context}</p>')


def render_answered(x: Inspection) -> str:
    h: Answered = x.head
    out = ["<p>The head gives every token a start and an end logit; a softmax over the tokens allowed to bound "
           "an answer (the context's, and the first for 'no answer') makes them probabilities; a span scores "
           "p(start) × p(end), end ≥ start, widened to whole words.</p>"]
    if len(h.windows) > 1:
        out.append(f"<p>The context is longer than a window: the pipeline reads it in {len(h.windows)} windows "
                   "(the views above show the pair truncated at the model's limit).</p>")
    for n, w in enumerate(h.windows, 1):
        rows = "".join(f'<tr><td class="num">{r}</td><td>{s} <code>{iso(w.tokens[s])}</code> {ps:.4f}</td>'
                       f'<td>{t} <code>{iso(w.tokens[t])}</code> {pt:.4f}</td></tr>'
                       for r, ((s, ps), (t, pt)) in enumerate(zip(w.starts, w.ends, strict=True), 1))
        best = ("no span" if w.best is None else
                f"best span: tokens {w.best[0]}..{w.best[1]}, score {w.best[2]:.4f}")
        title = f"window {n}: " if len(h.windows) > 1 else ""
        out.append(f'<p>{title}{e(best)}</p><table class="spans"><thead><tr><th>rank</th><th>start token, '
                   "probability</th><th>end token, probability</th></tr></thead>"
                   f"<tbody>{rows}</tbody></table>")
    out.append(_answer(h.answer["answer"], h.answer["score"]) if h.answer else _answer("(none)"))
    return "".join(out)


def render_pooled(x: Inspection) -> str:
    h: Pooled = x.head
    shown = min(16, len(h.vector))
    return (f"<p>{e(h.how)}.</p><p>embedding shape ({len(h.vector)},), norm "
            f"{float(np.linalg.norm(h.vector)):.4f}; its first {shown} components:</p>"
            + render_bars(h.vector[:shown], [f"[{i}]" for i in range(shown)], "components", fmt="{:+.4f}"))


def render_expanded(x: Inspection) -> str:
    h: Expanded = x.head
    names = [token + ("" if present else " *") for token, _, present, _ in h.entries]
    rows = "".join(f'<tr><td class="num">{weight:.4f}</td><td><code>{iso(token)}</code></td>'
                   f"<td>{'yes' if present else 'no: an expansion'}</td>"
                   f"<td>{'' if at is None else f'{at} <code>{iso(x.seen[at].piece)}</code>'}</td></tr>"
                   for token, weight, present, at in h.entries)
    return (f"<p>The masked-LM head on every token (one logit per entry of the {h.vocab_size:,}-entry vocabulary), "
            f"then {e(h.activation)}, {e(h.strategy)} over the tokens: one weight per entry. {h.active:,} entries "
            f"are active ({1 - h.active / h.vocab_size:.1%} zeros); the {len(h.entries)} heaviest "
            "(*: not in the text, an expansion):</p>"
            + render_bars([w for _, w, _, _ in h.entries], names, "scores")
            + '<table class="entries"><thead><tr><th>weight</th><th>entry</th><th>in the text</th>'
              f"<th>from token</th></tr></thead><tbody>{rows}</tbody></table>")


# the task's view -> (its stage's title, its renderer)
HEADS = {
    Classified: ("3-4. Head and post-processing: logits → probabilities → label", render_classified),
    Ranked: ("3-5. Hypotheses, NLI head and post-processing: one pair per label → entailment → ranking",
             render_ranked),
    Tagged: ("3-4. Head and post-processing: every token → logits → label → entities", render_tagged),
    Filled: ("3-4. Head and post-processing: masked positions → vocabulary → best tokens", render_filled),
    Answered: ("3-4. Head and post-processing: start and end logits → best span → answer", render_answered),
    Pooled: ("3. Pooling: hidden states → one sentence embedding", render_pooled),
    Expanded: ("3-4. Head and pooling: every token → vocabulary logits → one weight per entry", render_expanded),
}
# the answer shown in the text itself, above the stages (as the attributions are for a label)
IN_TEXT = {
    Tagged: ("The entities in the text", render_entities_in_text),
    Answered: ("The answer in the context", render_answer_in_context),
}


def render_hidden(x: Inspection) -> str:
    n = len(x.seen)
    names = ["embeddings"] + [f"layer {i}" for i in range(1, len(x.layer_norms))]
    return (f'<p>last_hidden_state shape: (batch=1, sequence={n}, hidden={x.hidden_size}); mean L2 norm of the '
            f"token vectors after each stage:</p>" + render_bars(x.layer_norms, names, "norms", fmt="{:.3f}"))


def _bytes(values: np.ndarray) -> str:
    """Probabilities in [0, 1] as base64 bytes (0-255): a page of a few hundred kB, not tens of MB."""
    return base64.b64encode(np.clip(np.rint(values * 255), 0, 255).astype(np.uint8).tobytes()).decode("ascii")


def _words(values: np.ndarray) -> str:
    """Probabilities in [0, 1] as base64 little-endian 16-bit words (0-65535): the rollout, one matrix, whose mass
    spreads over every token (~1/n a cell): in bytes most cells of a long text would read 0."""
    scaled = np.clip(np.rint(values * 65535), 0, 65535).astype("<u2")
    return base64.b64encode(scaled.tobytes()).decode("ascii")


def render_attention(x: Inspection, index: int) -> str:
    """Layer x head selector and a canvas heat map (query rows, key columns), plus attention rollout."""
    attentions = np.asarray(x.attentions, dtype=np.float32)
    layers, heads, total, _ = attentions.shape
    n = min(total, MAX_ATTENTION_TOKENS)
    data = {"tokens": [t.piece for t in x.seen[:n]], "layers": layers, "heads": heads, "n": n,
            "probs": _bytes(attentions[:, :, :n, :n]), "rollout": _words(np.asarray(x.rollout)[:n, :n])}
    payload = json.dumps(data, ensure_ascii=True).replace("<", "\\u003c")
    # The page opens on the last layer's head mean: rollout keeps about half of each row on the diagonal (the
    # residual as half an identity), which on a model of a layer or two is most of what it shows (audit 41).
    layer_options = '<option value="rollout">rollout (all layers)</option>' + "".join(
        f'<option value="{i}"{" selected" if i == layers - 1 else ""}>layer {i + 1}</option>' for i in range(layers))
    head_options = '<option value="mean">mean of heads</option>' + "".join(
        f'<option value="{h}">head {h + 1}</option>' for h in range(heads))
    cropped = f" (first {n} of {total} tokens)" if n < total else ""
    return (f'<div class="attention" id="attention-{index}"><p>Rows: each token (query); columns: the tokens '
            f"it attends to (keys){cropped}. Rollout multiplies the layers' head means, with the residual "
            "connection as half an identity; its colours scale to its largest value off the diagonal, where that "
            f'half identity adds to every token.</p><label>layer <select class="layer">{layer_options}</select>'
            f'</label> <label>head <select class="head">{head_options}</select></label>'
            '<div class="canvas-wrap" tabindex="0" role="region" aria-label="attention heat map, scrolls">'
            '<canvas class="heatmap" width="0" height="0" role="img" aria-label="attention '
            'heat map of the view chosen above; its values are in the table that follows"></canvas></div>'
            # What a colour means: white is 0, the darkest blue the view's largest value (the script says it)
            '<p class="scale">colour scale: <span class="scale-low">0</span> <span class="scale-bar"></span> '
            '<span class="scale-top"></span></p>'
            # The canvas says its values to a mouse only (a hover title): the same view as a table, which the
            # script fills and refills with the selects, for a keyboard (the summary takes the focus, the table's
            # box scrolls) and a screen reader (each cell named by its row and column headers).
            '<details class="attention-values"><summary>the heat map\'s values as a table (the view chosen above)'
            '</summary><table class="attention-values"><caption></caption><thead></thead><tbody></tbody></table>'
            f'</details><script type="application/json" class="attention-data">{payload}</script></div>')


def render_section(x: Inspection, index: int, numbered: bool = True, level: int = 2) -> str:
    """Every view of one text: its heading names the text and the answer; where the task answers with a label,
    the words that pushed towards it come first; then each stage in pipeline order, the task's own last.
    `numbered`: the heading starts "Text <index>" (a page of several texts). `level`: the heading's, its views'
    one below (the studio's detail sits under a heading of its own)."""
    notes = "".join(f'<p class="note">{e(n)}</p>' for n in x.notes)
    heading = f"“<span{x.lang}>{iso(one_line(x.text, 60, '…'))}</span>” → {headline_html(x.head)}"
    heading = f"Text {index}: {heading}" if numbered else heading
    h, sub = f"h{level}", f"h{level + 1}"
    words = ("" if x.attribution is None else
             f"<{sub}>Which words pushed towards {iso(x.attribution.label)}</{sub}>{render_words(x)}")
    if type(x.head) in IN_TEXT:
        name, render_in_text = IN_TEXT[type(x.head)]
        words += f"<{sub}>{e(name)}</{sub}>{render_in_text(x)}"
    title, render_head = HEADS[type(x.head)]
    return (f'<section class="input" id="input-{index}"><{h}>{heading}</{h}>{notes}{words}'
            f"<{sub}>1. Tokenizer: {'text pair' if x.sequences else 'text'} → tokens → ids</{sub}>{render_tokens(x)}"
            f"<{sub}>2. Encoder: ids → hidden states</{sub}>{render_hidden(x)}"
            f"<{sub}>Attention</{sub}>{render_attention(x, index)}"
            f"<{sub}>{e(title)}</{sub}>{render_head(x)}"
            "</section>")


def render_summary(inspections: list[Inspection]) -> str:
    scored = any(x.attribution is not None for x in inspections)
    rows = []
    for i, x in enumerate(inspections, 1):
        shown = one_line(x.text, 80, "…")
        # towards the label explained, which --target (or the studio's target) may set apart from the answer
        a = x.attribution
        top = ("" if not scored else "<td></td>" if a is None else
               f"<td>{iso(a.label)}: {' · '.join(iso(w.text) for w in a.top_words(3)) or '—'}</td>")
        rows.append(f'<tr><td class="num">{i}</td><td><a href="#input-{i}" dir="auto"{x.lang}>{e(shown)}</a></td>'
                    f'<td class="label">{headline_html(x.head)}</td>{top}</tr>')
    top_head = "<th>top words towards the label explained</th>" if scored else ""
    return ('<table class="summary"><thead><tr><th>#</th><th>text</th><th>answer</th>'
            f'{top_head}</tr></thead><tbody>{"".join(rows)}</tbody></table>')


INLINE_LIMIT = 3_000_000  # characters of a page shown in a notebook's cell; past it, its summary and how to save it


@dataclass
class Report:
    """`coulisse.explain.report(...)`'s answer: the inspections, the page made of them (`html()`, `save(path)`), and the
    page inline in a notebook (`_repr_html_`: in an iframe, so that its style and script stay its own)."""

    inspections: list[Inspection]
    title: str = "coulisse explain"

    def html(self) -> str:
        return render_page(self.inspections, self.title)

    def save(self, path) -> Any:
        from pathlib import Path

        path = Path(path)
        path.write_text(self.html(), encoding="utf-8")
        return path

    def __repr__(self) -> str:
        """Outside a notebook, what the page answers, a line per text (not the inspections' every field)."""
        n = len(self.inspections)
        where = f" through {self.inspections[0].model} ({self.inspections[0].task})" if n else ""
        lines = [f"Report: {n} text{'' if n == 1 else 's'}{where}; .save(path) writes the page"]
        lines += [f"  {i}. {one_line(x.text, 60, '…')!r} -> {x.head.headline}"
                  for i, x in enumerate(self.inspections, 1)]
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        page = self.html()
        if len(page) > INLINE_LIMIT:  # ~150 kB a text: 50 texts made an 8 MB cell (and notebook file)
            return (f"<pre>{e(repr(self))}</pre><p>The page is {len(page) / 1e6:.1f} MB, too large to show in the "
                    f"notebook: <code>.save(\"report.html\")</code> writes it, to open in a browser; or report fewer "
                    f"texts (up to about {INLINE_LIMIT // 150_000} show inline).</p>")
        # sandboxed: the page's own script runs, in an origin of its own, not the notebook's
        return (f'<iframe srcdoc="{e(page)}" title="{e(self.title)}" sandbox="allow-scripts" '
                'style="width:100%;height:760px;border:1px solid #ddd"></iframe>')


def scrolling_tables(page: str) -> str:
    """Each table in a box of its own that scrolls sideways, so that a wide one never widens a phone's page;
    the box takes the keyboard's focus, to scroll it without a mouse, and is named after its table ("tokens
    table 2"), so that a screen reader's list of regions tells them apart. (Texts are escaped: every `<table`
    and `</table>` in `page` is markup.)"""
    table = re.compile(r'<table(?: class="([^"]*)")?')

    def kind(match: re.Match) -> str:
        return (match.group(1) or "").replace("-", " ") or "data"

    total = Counter(kind(m) for m in table.finditer(page))
    seen: Counter[str] = Counter()

    def box(match: re.Match) -> str:
        name = kind(match)
        seen[name] += 1
        label = f"{name} table" + (f" {seen[name]}" if total[name] > 1 else "")
        return f'<div class="table-box" tabindex="0" role="region" aria-label="{label}">{match.group(0)}'

    return table.sub(box, page).replace("</table>", "</table></div>")


def render_page(inspections: list[Inspection], title: str = "coulisse explain") -> str:
    """The whole self-contained document."""
    first = inspections[0]
    header = (f"<h1>{e(title)}</h1><p>Model: <code>{e(first.model)}</code>, task {e(first.task)}. Each text goes "
              "through the pipeline's stages: tokenizer, encoder, head, post-processing.</p>")
    summary = render_summary(inspections) if len(inspections) > 1 else ""
    body = "".join(render_section(x, i) for i, x in enumerate(inspections, 1))
    return ('<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{e(title)}</title><style>{STYLE}</style></head><body><main>"
            f"{scrolling_tables(header + summary + body)}</main>"
            f"<script>{SCRIPT}</script></body></html>\n")


STYLE = """
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:24px auto;max-width:1080px;color:#111;
padding:0 16px}
h1{font-size:22px}h2{font-size:19px;border-bottom:1px solid #ccc;padding-bottom:4px;margin-top:36px}
h3{font-size:15px;margin:22px 0 6px}
.attributed{font-size:18px;line-height:2;white-space:pre-wrap}
.word{padding:2px 1px;border-radius:3px;cursor:help}.word.against,.legend .against{text-decoration:underline}
.hidden{position:absolute;width:1px;height:1px;overflow:hidden;clip-path:inset(50%);white-space:nowrap}
.truncated{color:#666}.truncated td{color:#666;background:#f4f4f4}
.legend{display:flex;align-items:center;gap:8px;font-size:13px;color:#444}
.ramp{display:inline-block;width:220px;height:12px;border:1px solid #ccc;
background:linear-gradient(90deg,rgb(178,24,43),#fff,rgb(33,102,172))}
.meta,.note{font-size:13px;color:#444}.note{background:#fff7e0;padding:4px 8px}
table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ddd;padding:2px 6px;text-align:left}
.num{text-align:right;font-variant-numeric:tabular-nums}
svg text{font-size:12px;fill:#222}.scores rect{fill:#6a51a3}.norms rect{fill:#888}.components rect{fill:#4292c6}
.tagged,.context{font-size:17px;line-height:2;white-space:pre-wrap}.entity{padding:1px 3px;border-radius:3px}
.entity sup{font-size:10px;margin-left:3px;color:#333}.answer-span{background:#c7e9c0;padding:1px 2px}
.answer{font-size:17px}.canvas-wrap{overflow:auto;max-height:720px}
.scale{display:flex;align-items:center;gap:.4em;font-size:13px;margin:.3em 0}
.scale-bar{display:inline-block;width:10em;height:.8em;border:1px solid #888;
background:linear-gradient(to right,rgb(255,255,255),rgb(33,102,172))}
.table-box{max-width:100%;overflow-x:auto;margin:4px 0}svg{max-width:100%;height:auto}
body{overflow-wrap:break-word}.word-scores summary{cursor:pointer;font-size:13px;margin:6px 0}
"""

SCRIPT = """
(function () {
  function bytes(b64) {
    var s = atob(b64), out = new Uint8Array(s.length);
    for (var i = 0; i < s.length; i++) out[i] = s.charCodeAt(i);
    return out;
  }
  function setup(box) {
    var data = JSON.parse(box.querySelector('.attention-data').textContent);
    var probs = bytes(data.probs), n = data.n, h = data.heads;
    var words = bytes(data.rollout), rollout = new Float32Array(n * n);  // 16-bit, little-endian
    for (var r = 0; r < n * n; r++) rollout[r] = (words[2 * r] | (words[2 * r + 1] << 8)) / 65535;
    var layer = box.querySelector('.layer'), head = box.querySelector('.head');
    var canvas = box.querySelector('.heatmap'), ctx = canvas.getContext('2d');
    var cell = Math.max(6, Math.min(22, Math.floor(640 / n))), margin = 96, current = null;
    function matrix() {
      var m = new Float32Array(n * n);
      if (layer.value === 'rollout') {
        for (var i = 0; i < n * n; i++) m[i] = rollout[i];
        return m;
      }
      var l = +layer.value, heads = head.value === 'mean' ? [...Array(h).keys()] : [+head.value];
      heads.forEach(function (k) {
        var base = (l * h + k) * n * n;
        for (var i = 0; i < n * n; i++) m[i] += probs[base + i] / 255 / heads.length;
      });
      return m;
    }
    function draw() {
      head.disabled = layer.value === 'rollout';
      var m = matrix(), top = 0, off = layer.value === 'rollout';  // rollout: scaled off the diagonal
      for (var i = 0; i < m.length; i++) if (!off || i % (n + 1) !== 0) top = Math.max(top, m[i]);
      canvas.width = margin + n * cell; canvas.height = margin + n * cell;
      ctx.fillStyle = '#fff'; ctx.fillRect(0, 0, canvas.width, canvas.height);
      for (var q = 0; q < n; q++) for (var k = 0; k < n; k++) {
        var t = top > 0 ? Math.min(1, m[q * n + k] / top) : 0;
        ctx.fillStyle = 'rgb(' + Math.round(255 - t * 222) + ',' + Math.round(255 - t * 153) + ','
          + Math.round(255 - t * 83) + ')';
        ctx.fillRect(margin + k * cell, margin + q * cell, cell, cell);
      }
      // labels stay readable (10 px at least): past ~60 tokens every second one, or third...; the hover says all
      var size = Math.max(10, Math.min(12, cell)), every = Math.ceil(size / cell);
      ctx.fillStyle = '#222'; ctx.font = size + 'px sans-serif';
      data.tokens.forEach(function (tok, i) {
        if (i % every) return;
        var label = tok.length > 12 ? tok.slice(0, 11) + '…' : tok;
        ctx.textAlign = 'right'; ctx.fillText(label, margin - 4, margin + i * cell + cell * 0.8);
        ctx.save(); ctx.translate(margin + i * cell + cell * 0.8, margin - 4); ctx.rotate(-Math.PI / 2);
        ctx.textAlign = 'left'; ctx.fillText(label, 0, 0); ctx.restore();
      });
      box.querySelector('.scale-top').textContent = top.toFixed(3) + (off
        ? ' (the largest off the diagonal; the diagonal, above it, is the darkest)' : ' (the largest value here)');
      current = m;
      fill(m);
    }
    function fill(m) {  // the table alternative: rows are queries, columns keys, as on the canvas
      var table = box.querySelector('table.attention-values');
      var names = data.tokens.map(function (tok, i) { return (i + 1) + ' ' + tok; });
      function cell(tag, text, scope) {
        var c = document.createElement(tag);
        c.textContent = text;
        if (scope) c.scope = scope;
        return c;
      }
      table.querySelector('caption').textContent = 'Attention, ' + layer.options[layer.selectedIndex].text
        + (layer.value === 'rollout' ? '' : ', ' + head.options[head.selectedIndex].text)
        + ': row = query token, column = key token it attends to';
      var top = document.createElement('tr');
      top.appendChild(cell('th', 'query \u2193 key \u2192', 'col'));
      names.forEach(function (name) { top.appendChild(cell('th', name, 'col')); });
      table.tHead.replaceChildren(top);
      var rows = [];
      for (var q = 0; q < n; q++) {
        var row = document.createElement('tr');
        row.appendChild(cell('th', names[q], 'row'));
        for (var k = 0; k < n; k++) {
          var value = cell('td', m[q * n + k].toFixed(3));
          value.className = 'num';
          row.appendChild(value);
        }
        rows.push(row);
      }
      table.tBodies[0].replaceChildren.apply(table.tBodies[0], rows);
    }
    canvas.addEventListener('mousemove', function (ev) {
      var r = canvas.getBoundingClientRect();
      var k = Math.floor((ev.clientX - r.left - margin) / cell), q = Math.floor((ev.clientY - r.top - margin) / cell);
      canvas.title = (q >= 0 && k >= 0 && q < n && k < n && current)
        ? data.tokens[q] + ' → ' + data.tokens[k] + ': ' + current[q * n + k].toFixed(3) : '';
    });
    layer.addEventListener('change', draw); head.addEventListener('change', draw);
    draw();
  }
  document.querySelectorAll('.attention').forEach(setup);
})();
"""

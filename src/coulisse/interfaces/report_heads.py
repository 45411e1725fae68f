"""The page's view of each task's answer: one renderer per view of `coulisse.interfaces.head_views` (`HEADS`,
with its stage's title), and the answers that are shown in the text itself (`IN_TEXT`: entities, a span)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from coulisse.interfaces.head_views import Answered, Classified, Expanded, Filled, Pooled, Ranked, Tagged
from coulisse.interfaces.html_parts import e, iso, render_bars

if TYPE_CHECKING:
    from coulisse.interfaces.inspection import Inspection


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

"""The HTML views of `coulisse explain --html`: pure functions from an `Inspection` to a string.

Every task of `coulisse explain` has a page. The tokenizer, encoder and attention views are the same for all
of them (here); what follows the encoder is the task's own view (`coulisse.interfaces.report_heads.HEADS`: one
renderer per dataclass of `coulisse.interfaces.head_views`, as the terminal has one renderer per task in
`coulisse.interfaces.explain.STAGES`). Tasks whose answer is a label (text-classification,
zero-shot-classification) also colour each word by its attribution. `coulisse.interfaces.inspection` gathers
what they show.

One self-contained page: inline CSS and a little inline JavaScript (`coulisse.interfaces.page_assets`: the
attention heat map is drawn on a canvas from data embedded in the page), no font, script or image fetched from
anywhere, so the file opens offline and can be mailed. Each view is its own function returning an HTML fragment
(`render_section`, `render_summary`, and the parts they are made of, `coulisse.interfaces.html_parts`' among
them), so that a live page (a studio) can reuse them.
"""

from __future__ import annotations

import base64
import json
import re
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from coulisse.interfaces.formatting import one_line
from coulisse.interfaces.html_parts import diverging_rgb, e, headline_html, ink, iso, render_bars
from coulisse.interfaces.page_assets import SCRIPT, STYLE
from coulisse.interfaces.report_heads import HEADS, IN_TEXT

if TYPE_CHECKING:
    from coulisse.interfaces.inspection import Inspection

MAX_ATTENTION_TOKENS = 128  # the heat map's side: longer inputs show their first tokens (the data grows as n²)
MAX_TAIL_ROWS = 40  # truncated tokens listed in the token table


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

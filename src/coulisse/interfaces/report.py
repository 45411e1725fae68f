"""The HTML views of `coulisse explain --html`: pure functions from an `Inspection` to a string.

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
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from coulisse.interfaces.formatting import one_line

MAX_ATTENTION_TOKENS = 128  # the heat map's side: longer inputs show their first tokens (the data grows as n²)
MAX_TAIL_ROWS = 40  # truncated tokens listed in the token table
TOWARDS, AGAINST, NEUTRAL = (33, 102, 172), (178, 24, 43), (255, 255, 255)


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


@dataclass
class Inspection:
    """Everything the page shows for one text (what `coulisse.interfaces.explain.inspect_text` gathers)."""

    text: str
    model: str
    tokens: list[TokenRow]  # the model's tokens, then the truncated tail (`truncated=True`)
    hidden_size: int
    layer_norms: list[float]  # mean L2 norm of the token vectors: embeddings, then after each layer
    attentions: Any  # np.ndarray (layers, heads, T, T), T = tokens the model saw
    rollout: Any  # np.ndarray (T, T)
    logits: list[float]
    scores: list[float]
    function: str  # softmax, sigmoid or none
    id2label: dict[int, str]
    answer: dict[str, Any]  # the pipeline's result: label, score
    attribution: Any  # coulisse.tasks.attributions.Attribution
    notes: list[str] = field(default_factory=list)

    @property
    def seen(self) -> list[TokenRow]:
        return [t for t in self.tokens if not t.truncated]

    @property
    def truncated_at(self) -> int | None:
        """The character where the model's view of the text ends, when the text was cut."""
        if not any(t.truncated for t in self.tokens):
            return None
        return max((t.end for t in self.seen if not t.special), default=0)


def e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def diverging_rgb(value: float, scale: float) -> tuple[int, int, int]:
    """White at 0, blue (towards) at +scale, red (against) at -scale."""
    t = 0.0 if scale <= 0 else max(-1.0, min(1.0, value / scale))
    end = TOWARDS if t >= 0 else AGAINST
    return tuple(round(n + abs(t) * (c - n)) for n, c in zip(NEUTRAL, end, strict=True))


def _style(value: float, scale: float) -> str:
    r, g, b = diverging_rgb(value, scale)
    ink = "#fff" if abs(value) > 0.55 * scale and scale > 0 else "#111"
    return f"background:rgb({r},{g},{b});color:{ink}"


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
        out.append(f'<span class="word" data-score="{w.attribution:.6g}" style="{_style(w.attribution, scale)}" '
                   f'title="{e(title)}">{e(w.text)}</span>')
        at = w.end
    cut = x.truncated_at
    if cut is not None and cut >= at:
        out.append(e(x.text[at:cut]))
        out.append(f'<span class="truncated" title="cut at the model\'s limit: not seen">{e(x.text[cut:])}</span>')
    else:
        out.append(e(x.text[at:]))
    legend = (f'<div class="legend"><span>against {e(a.label)} {_signed(-scale)}</span>'
              f'<span class="ramp"></span><span>{_signed(scale)} towards {e(a.label)}</span></div>')
    method = ("Integrated Gradients" if a.method == "integrated_gradients" else "Occlusion (leave one token out)")
    how = f"{a.steps} gradient evaluations, " if a.steps else ""
    gap = (f"completeness gap {a.gap:+.2e} of F(x) − F(baseline) = {a.delta:+.4f}" if a.method == "integrated_gradients"
           else f"sum {sum(a.scores):+.4f}, F(x) − F(baseline) = {a.delta:+.4f}")
    meta = (f'<p class="meta">{method} on the {e(a.weights)} weights, {how}baseline: {e(a.baseline)} token; '
            f'{gap}</p>')
    return f'<p class="attributed">{"".join(out)}</p>{legend}{meta}{render_top_words(x)}'


def render_top_words(x: Inspection, k: int = 5) -> str:
    a = x.attribution
    rows = []
    for sign, name in ((1, "towards"), (-1, "against")):
        words = " · ".join(f"{e(w.text)} ({_signed(w.attribution)})" for w in a.top_words(k, sign)) or "—"
        rows.append(f"<li><strong>{name} {e(a.label)}:</strong> {words}</li>")
    return f'<ul class="top-words">{"".join(rows)}</ul>'


def render_tokens(x: Inspection) -> str:
    """The token table: piece, id, special, mask, offsets, the characters, the token's attribution."""
    scale = max((abs(t.score) for t in x.tokens if t.score is not None), default=0.0)
    rows = []
    tail = [t for t in x.tokens if t.truncated]
    shown = x.seen + tail[:MAX_TAIL_ROWS]
    for i, t in enumerate(shown):
        score = "" if t.score is None else f'<td class="num" style="{_style(t.score, scale)}">{_signed(t.score)}</td>'
        mask = (f'<td class="num">{t.mask}</td>' if t.mask is not None else
                '<td class="num" title="not in the input: cut by truncation, so it has no mask either">—</td>')
        rows.append(f'<tr class="{"truncated" if t.truncated else "seen"}"><td class="num">{i}</td>'
                    f"<td><code>{e(t.piece)}</code></td><td class=\"num\">{t.id}</td>"
                    f"<td>{'yes' if t.special else ''}</td>{mask}"
                    f"<td class=\"num\">[{t.start}:{t.end}]</td><td>{e(x.text[t.start:t.end])}</td>"
                    f"{score or '<td></td>'}</tr>")
    if len(tail) > MAX_TAIL_ROWS:
        rows.append(f'<tr class="truncated"><td colspan="8">… {len(tail) - MAX_TAIL_ROWS} more truncated '
                    "tokens</td></tr>")
    note = (f"<p>{len(x.seen)} tokens seen; {len(tail)} cut by truncation (greyed, not seen by the model).</p>"
            if tail else f"<p>{len(x.seen)} tokens, none truncated.</p>")
    head = ("<tr><th>#</th><th>piece</th><th>id</th><th>special</th><th>mask</th><th>offsets</th><th>text</th>"
            "<th>attribution</th></tr>")
    return f'{note}<table class="tokens"><thead>{head}</thead><tbody>{"".join(rows)}</tbody></table>'


def render_bars(values: list[float], names: list[str], css: str, width: int = 420, fmt: str = "{:.4f}",
                maximum: float | None = None) -> str:
    """A horizontal bar chart as inline SVG: one `<rect>` per value."""
    top = maximum if maximum is not None else max((abs(v) for v in values), default=1.0) or 1.0
    row, label_w, value_w = 22, 130, 70
    bars = []
    for i, (v, name) in enumerate(zip(values, names, strict=True)):
        y = i * row
        w = max(1.0, abs(v) / top * (width - label_w - value_w))
        bars.append(f'<g class="bar"><text x="{label_w - 6}" y="{y + 15}" text-anchor="end">{e(name)}</text>'
                    f'<rect x="{label_w}" y="{y + 3}" width="{w:.1f}" height="{row - 6}"></rect>'
                    f'<text x="{label_w + w + 6:.1f}" y="{y + 15}">{e(fmt.format(v))}</text></g>')
    height = row * len(values)
    return (f'<svg class="{css}" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
            f'role="img">{"".join(bars)}</svg>')


def render_scores(x: Inspection) -> str:
    names = [x.id2label[i] for i in range(len(x.logits))]
    logits = ", ".join(f"{e(n)} {v:+.4f}" for n, v in zip(names, x.logits, strict=True))
    what = {"softmax": "softmax", "sigmoid": "sigmoid per label", "none": "no function (raw scores)"}[x.function]
    mapping = ", ".join(f"{i}: {e(repr(n))}" for i, n in enumerate(names))
    return (f'<p>logits (raw scores, one per label): {logits}</p><p>{what} → probabilities, each position named '
            f'by <code>id2label {{{mapping}}}</code>:</p>'
            + render_bars(x.scores, names, "scores", maximum=1.0 if x.function != "none" else None)
            + f'<p class="answer">Answer: <strong class="label">{e(x.answer["label"])}</strong> '
              f'<span class="score">{x.answer["score"]:.4f}</span></p>')


def render_hidden(x: Inspection) -> str:
    n = len(x.seen)
    names = ["embeddings"] + [f"layer {i}" for i in range(1, len(x.layer_norms))]
    return (f'<p>last_hidden_state shape: (batch=1, sequence={n}, hidden={x.hidden_size}); mean L2 norm of the '
            f"token vectors after each stage:</p>" + render_bars(x.layer_norms, names, "norms", fmt="{:.3f}"))


def _bytes(values: np.ndarray) -> str:
    """Probabilities in [0, 1] as base64 bytes (0-255): a page of a few hundred kB, not tens of MB."""
    return base64.b64encode(np.clip(np.rint(values * 255), 0, 255).astype(np.uint8).tobytes()).decode("ascii")


def render_attention(x: Inspection, index: int) -> str:
    """Layer x head selector and a canvas heat map (query rows, key columns), plus attention rollout."""
    attentions = np.asarray(x.attentions, dtype=np.float32)
    layers, heads, total, _ = attentions.shape
    n = min(total, MAX_ATTENTION_TOKENS)
    data = {"tokens": [t.piece for t in x.seen[:n]], "layers": layers, "heads": heads, "n": n,
            "probs": _bytes(attentions[:, :, :n, :n]), "rollout": _bytes(np.asarray(x.rollout)[:n, :n])}
    payload = json.dumps(data, ensure_ascii=True).replace("<", "\\u003c")
    layer_options = '<option value="rollout">rollout (all layers)</option>' + "".join(
        f'<option value="{i}">layer {i + 1}</option>' for i in range(layers))
    head_options = '<option value="mean">mean of heads</option>' + "".join(
        f'<option value="{h}">head {h + 1}</option>' for h in range(heads))
    cropped = f" (first {n} of {total} tokens)" if n < total else ""
    return (f'<div class="attention" id="attention-{index}"><p>Rows: each token (query); columns: the tokens '
            f"it attends to (keys){cropped}. Rollout multiplies the layers' head means, with the residual "
            f'connection as half an identity.</p><label>layer <select class="layer">{layer_options}</select>'
            f'</label> <label>head <select class="head">{head_options}</select></label>'
            f'<div class="canvas-wrap"><canvas class="heatmap" width="0" height="0"></canvas></div>'
            f'<script type="application/json" class="attention-data">{payload}</script></div>')


def render_section(x: Inspection, index: int, numbered: bool = True) -> str:
    """Every view of one text: its heading names the text and the answer; the words that pushed towards the
    answer come first, then each stage in pipeline order. `numbered`: the heading starts "Text <index>" (a
    page of several texts)."""
    notes = "".join(f'<p class="note">{e(n)}</p>' for n in x.notes)
    heading = f"“{one_line(x.text, 60, '…')}” → {x.answer['label']} {x.answer['score']:.4f}"
    heading = f"Text {index}: {heading}" if numbered else heading
    return (f'<section class="input" id="input-{index}"><h2>{e(heading)}</h2>{notes}'
            f'<h3>Which words pushed towards {e(x.attribution.label)}</h3>{render_words(x)}'
            f"<h3>1. Tokenizer: text → tokens → ids</h3>{render_tokens(x)}"
            f"<h3>2. Encoder: ids → hidden states</h3>{render_hidden(x)}"
            f"<h3>Attention</h3>{render_attention(x, index)}"
            f"<h3>3-4. Head and post-processing: logits → probabilities → label</h3>{render_scores(x)}"
            "</section>")


def render_summary(inspections: list[Inspection]) -> str:
    rows = []
    for i, x in enumerate(inspections, 1):
        shown = one_line(x.text, 80, "…")
        top = " · ".join(e(w.text) for w in x.attribution.top_words(3)) or "—"
        rows.append(f'<tr><td class="num">{i}</td><td><a href="#input-{i}">{e(shown)}</a></td>'
                    f'<td class="label">{e(x.answer["label"])}</td><td class="num">{x.answer["score"]:.4f}</td>'
                    f"<td>{top}</td></tr>")
    return ('<table class="summary"><thead><tr><th>#</th><th>text</th><th>answer</th><th>score</th>'
            f'<th>top words towards the answer</th></tr></thead><tbody>{"".join(rows)}</tbody></table>')


def render_page(inspections: list[Inspection], title: str = "coulisse explain") -> str:
    """The whole self-contained document."""
    first = inspections[0]
    header = (f"<h1>{e(title)}</h1><p>Model: <code>{e(first.model)}</code>. Each text goes through the pipeline's "
              "stages: tokenizer, encoder, head, post-processing.</p>")
    summary = render_summary(inspections) if len(inspections) > 1 else ""
    body = "".join(render_section(x, i) for i, x in enumerate(inspections, 1))
    return ('<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{e(title)}</title><style>{STYLE}</style></head><body>{header}{summary}{body}"
            f"<script>{SCRIPT}</script></body></html>\n")


STYLE = """
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:24px auto;max-width:1080px;color:#111;
padding:0 16px}
h1{font-size:22px}h2{font-size:19px;border-bottom:1px solid #ccc;padding-bottom:4px;margin-top:36px}
h3{font-size:15px;margin:22px 0 6px}
.attributed{font-size:18px;line-height:2;white-space:pre-wrap}
.word{padding:2px 3px;border-radius:3px;cursor:help}
.truncated{color:#999}.truncated td{color:#999;background:#f4f4f4}
.legend{display:flex;align-items:center;gap:8px;font-size:13px;color:#444}
.ramp{display:inline-block;width:220px;height:12px;border:1px solid #ccc;
background:linear-gradient(90deg,rgb(178,24,43),#fff,rgb(33,102,172))}
.meta,.note{font-size:13px;color:#444}.note{background:#fff7e0;padding:4px 8px}
table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ddd;padding:2px 6px;text-align:left}
.num{text-align:right;font-variant-numeric:tabular-nums}
svg text{font-size:12px;fill:#222}.scores rect{fill:#6a51a3}.norms rect{fill:#888}
.answer{font-size:17px}.canvas-wrap{overflow:auto;max-height:720px}
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
    var probs = bytes(data.probs), rollout = bytes(data.rollout), n = data.n, h = data.heads;
    var layer = box.querySelector('.layer'), head = box.querySelector('.head');
    var canvas = box.querySelector('.heatmap'), ctx = canvas.getContext('2d');
    var cell = Math.max(6, Math.min(22, Math.floor(640 / n))), margin = 96, current = null;
    function matrix() {
      var m = new Float32Array(n * n);
      if (layer.value === 'rollout') {
        for (var i = 0; i < n * n; i++) m[i] = rollout[i] / 255;
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
      var m = matrix(), top = 0;
      for (var i = 0; i < m.length; i++) top = Math.max(top, m[i]);
      canvas.width = margin + n * cell; canvas.height = margin + n * cell;
      ctx.fillStyle = '#fff'; ctx.fillRect(0, 0, canvas.width, canvas.height);
      for (var q = 0; q < n; q++) for (var k = 0; k < n; k++) {
        var t = top > 0 ? m[q * n + k] / top : 0;
        ctx.fillStyle = 'rgb(' + Math.round(255 - t * 222) + ',' + Math.round(255 - t * 153) + ','
          + Math.round(255 - t * 83) + ')';
        ctx.fillRect(margin + k * cell, margin + q * cell, cell, cell);
      }
      ctx.fillStyle = '#222'; ctx.font = Math.min(12, cell) + 'px sans-serif';
      data.tokens.forEach(function (tok, i) {
        var label = tok.length > 12 ? tok.slice(0, 11) + '…' : tok;
        ctx.textAlign = 'right'; ctx.fillText(label, margin - 4, margin + i * cell + cell * 0.8);
        ctx.save(); ctx.translate(margin + i * cell + cell * 0.8, margin - 4); ctx.rotate(-Math.PI / 2);
        ctx.textAlign = 'left'; ctx.fillText(label, 0, 0); ctx.restore();
      });
      current = m;
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

"""The studio's page: pure functions from an `Exploration` to HTML, around `interfaces/report.py`'s views.

The page is the report's (its CSS, its attention script, `render_section` for the detailed views) with, above
them, a form that submits by GET, the exact-vs-int8 panel and the long-text panel. Nothing is fetched from
anywhere but the page itself: inline CSS and JavaScript, an empty data: favicon (so the browser asks for none).
"""

from __future__ import annotations

from coulisse.interfaces.attribution_view import ATTRIBUTION_TASKS
from coulisse.interfaces.html_parts import e, headline_html, iso, lang_attribute, render_bars
from coulisse.interfaces.page_assets import SCRIPT, STYLE
from coulisse.interfaces.report import render_section, scrolling_tables
from coulisse.interfaces.studio.explore import QUANTIZE, WEIGHTS, Answer, Exploration, Query, delta
from coulisse.tasks.windows import LONG_TEXT

CONTEXT_CHARS = 160  # characters shown on each side of the truncation point
NAMES = {"fp32": "exact (fp32)", "int8": "int8"}
METHODS = {"integrated_gradients": "Integrated Gradients",
           "occlusion": "occlusion (each word replaced by the pad token)"}
LONG_TEXT_NAMES = {"truncate": "truncate at the model's limit", "chunk": "chunk: windows, mean of their logits"}


def _options(choices, names: dict[str, str], chosen: str) -> str:
    return "".join(f'<option value="{e(c)}"{" selected" if c == chosen else ""}>{e(names.get(c, c))}</option>'
                   for c in choices)


PLACEHOLDERS = {"text-classification": "Type a text to classify", "question-answering": "Type the context",
                "fill-mask": "Type a text with its mask token where a word is missing"}


def render_form(q: Query, task: str = "text-classification", language: str | None = None) -> str:
    """GET /?text=...: works without JavaScript. `compare` is a hidden 0 then the box's 1 (last one wins).
    The fields are the task's: the long-text modes for text-classification, the question for
    question-answering, the labels and template for zero-shot-classification. The text boxes are marked in the
    model's `language` (a French voice, a French spell-check)."""
    lang = lang_attribute(language)
    stride = "" if q.stride is None else str(q.stride)
    placeholder = PLACEHOLDERS.get(task, "Type a text")
    pair = ""
    if task == "question-answering":
        pair = (f'<label class="pair">question <input type="text" name="question" dir="auto"{lang} size="80" '
                f'value="{e(q.question)}"></label>')
    elif task == "zero-shot-classification":
        pair = (f'<label class="pair">labels <input type="text" name="labels" dir="auto" size="40" '
                f'value="{e(q.labels)}" placeholder="sport,cinéma,politique"></label> <label class="pair">template '
                f'<input type="text" name="template" dir="auto" size="40" value="{e(q.template)}" '
                'placeholder="the model\'s language"></label>')
    classify = ('<input type="hidden" name="compare" value="0">'
                f'<label><input type="checkbox" name="compare" value="1"{" checked" if q.compare else ""}> '
                "exact and int8 side by side</label> ")
    if task == "text-classification":
        classify += (f'<label>long text <select name="long_text">{_options(LONG_TEXT, LONG_TEXT_NAMES, q.long_text)}'
                     f'</select></label> <label>stride <input type="number" name="stride" min="0" '
                     f'value="{e(stride)}"></label> ')
    method = (f'<label>attributions <select name="method">{_options(METHODS, METHODS, q.method)}</select></label> '
              f'<label>towards <input type="text" name="target" dir="auto" size="12" value="{e(q.target)}" '
              'placeholder="the answer"></label> ' if task in ATTRIBUTION_TASKS else "")
    # A newline right after <textarea> is dropped by the HTML parser: one is written, so that a text that starts
    # with a newline keeps it when sent again (its offsets would all move by one).
    # labelled in words that stay once it holds a text (a placeholder alone goes: audit 45)
    return ('<form class="ask" method="get" action="/">'
            f'<label class="text">{"context" if task == "question-answering" else "text"}'
            f'<textarea name="text" dir="auto"{lang} rows="5" cols="100" placeholder="{e(placeholder)}">\n{e(q.text)}'
            f'</textarea></label>{pair}'
            f'<div class="controls"><label>weights <select name="quantize">'
            f'{_options(QUANTIZE, {"none": "exact (fp32)", "int8": "int8"}, q.quantize)}</select></label> '
            f'{classify}{method}<button type="submit">Explain</button></div></form>')


def _side(a: Answer) -> str:
    logits = ", ".join(f"{iso(n)} {v:+.4f}" for n, v in zip(a.labels, a.logits, strict=True))
    return (f'<div class="side" data-weights="{a.weights}"><h3>{NAMES[a.weights]}</h3>'
            f'<p class="side-answer"><strong class="side-label">{iso(a.label)}</strong> '
            f'<span class="side-score">{a.score:.4f}</span></p>'
            + render_bars(a.scores, a.labels, "side-scores", width=380, maximum=1.0)
            + f'<p class="meta">logits: {logits}</p></div>')


def render_answers(x: Exploration) -> str:
    """The answer of each weights asked for; both: side by side, with every label's score and Δ."""
    what = ("the mean of the windows' logits" if x.query.long_text == "chunk"
            else f"the first {x.limit} tokens" if x.tokens > x.limit else "the whole text")
    sides = "".join(_side(a) for a in x.answers.values())
    out = (f'<section class="compare"><h2 id="answer" tabindex="-1">Answer</h2><p>On {what}.</p>'
           f'<div class="sides">{sides}</div>')
    diff = delta(x.answers)
    if diff is None:
        return out + "</section>"
    exact, int8 = x.answers["fp32"], x.answers["int8"]
    rows = "".join(f'<tr data-label="{e(n)}"><td>{iso(n)}</td><td class="num fp32">{a:.6f}</td>'
                   f'<td class="num int8">{b:.6f}</td><td class="num delta">{diff[n]:+.2e}</td></tr>'
                   for n, a, b in zip(exact.labels, exact.scores, int8.scores, strict=True))
    same = ("Same label." if exact.label == int8.label else
            f"The labels differ: {iso(exact.label)} exact, {iso(int8.label)} int8.")
    worst = max(abs(d) for d in diff.values())
    return (out + '<table class="delta"><thead><tr><th>label</th><th>exact</th><th>int8</th>'
            f'<th>Δ int8 − exact</th></tr></thead><tbody>{rows}</tbody></table>'
            f'<p class="meta">{same} Largest |Δ| {worst:.2e}: dynamic int8 linear layers (weights per output '
            "channel, activations per row) against the fp32 weights.</p></section>")


def render_sides(x: Exploration) -> str:
    """Another task, both weights asked: each one's answer in the task's words, and whether they agree."""
    if not x.sides:
        return ""
    sides = "".join(f'<div class="side" data-weights="{w}"><h3>{NAMES[w]}</h3>'
                    f'<p class="side-answer">{headline_html(view)}</p></div>' for w, view in x.sides.items())
    a = x.agreement
    return (f'<section class="compare"><h2 id="answer" tabindex="-1">Answer</h2><div class="sides">{sides}</div>'
            f'<p class="meta agreement" data-same="{"true" if a.same else "false"}">Exact against int8'
            f": {e(a.words)}</p></section>")


def render_truncation(x: Exploration) -> str:
    """Where truncation cuts the text: the characters on each side of the model's last token."""
    if x.tokens <= x.limit:
        return (f'<section class="long-text"><p class="fits">{x.tokens} tokens (special tokens included) of '
                f"the model's {x.limit}: nothing cut.</p></section>")
    text, cut = x.query.text, x.inspection.truncated_at or 0
    before = ("…" if cut > CONTEXT_CHARS else "") + text[max(0, cut - CONTEXT_CHARS):cut]
    after = text[cut:cut + CONTEXT_CHARS] + ("…" if len(text) - cut > CONTEXT_CHARS else "")
    return ('<section class="long-text truncate"><h2>Long text: truncation</h2>'
            f'<p>The text has <strong class="token-count">{x.tokens}</strong> tokens; the model reads the first '
            f'<strong class="limit">{x.limit}</strong> (special tokens included). The cut falls at character '
            f'<strong class="cut-at">{cut}</strong> of {len(text)}: {len(text) - cut} characters '
            f"({x.tokens - x.limit} tokens) are not seen. long_text=chunk reads them in windows.</p>"
            f'<p class="cut-context" dir="auto"{x.inspection.lang}>{e(before)}'
            '<mark class="cut-mark" title="the model stops here">✂</mark>'
            f'<span class="truncated">{e(after)}</span></p></section>')


def render_windows(x: Exploration) -> str:
    """The windows of long_text=chunk: a strip of their token spans, then each window's characters and answer."""
    windows, total, width, row = x.windows, max(x.tokens, 1), 760, 18
    strip = []
    for n, w in enumerate(windows, 1):
        left, size = w.start / total * width, (w.end - w.start) / total * width
        title = f"window {n}: tokens [{w.start}:{w.end}), characters [{w.chars[0]}:{w.chars[1]}), {w.answer.label}"
        strip.append(f'<g class="window"><title>{e(title)}</title><rect x="{left:.1f}" y="{(n - 1) * row + 2}" '
                     f'width="{max(size, 1):.1f}" height="{row - 4}"></rect><text x="{left + 4:.1f}" '
                     f'y="{(n - 1) * row + 14}">{n}</text></g>')
    height = row * len(windows)
    # the table below says the same to a screen reader, and to a phone, where the strip's numbers shrink
    svg = (f'<svg class="windows" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
           'aria-hidden="true">'
           f'{"".join(strip)}</svg>')
    rows = []
    for n, w in enumerate(windows, 1):
        start, end = w.chars
        shown = x.query.text[start:end]
        shown = shown if len(shown) <= 90 else shown[:44] + " … " + shown[-44:]
        rows.append(f'<tr class="window-row"><td class="num">{n}</td><td class="num">[{w.start}:{w.end})</td>'
                    f'<td class="num">[{start}:{end})</td><td dir="auto"{x.inspection.lang}>{e(shown)}</td>'
                    f'<td class="label">{iso(w.answer.label)}</td>'
                    f'<td class="num">{w.answer.score:.4f}</td></tr>')
    if len(windows) > 1:
        shared = f"{windows[0].end - windows[1].start} tokens" + (" (a quarter of a window)" if x.query.stride is None
                                                                  else "")
    else:
        shared = "nothing: the text fits in one, the tokens truncation keeps"
    a = x.detailed
    return ('<section class="long-text chunk"><h2>Long text: windows</h2>'
            f'<p>{x.tokens} tokens cut into <strong class="window-count">{len(windows)}</strong> '
            f'window{"s" * (len(windows) != 1)} of at '
            f"most {x.limit} tokens (each gets the special tokens), consecutive ones sharing {shared}; the "
            f"answer is the mean of their logits, as <code>coulisse classify --long-text chunk</code> gives it: "
            f'<strong>{iso(a.label)}</strong> {a.score:.4f} ({NAMES[a.weights]}).</p>{svg}'
            '<table class="windows"><thead><tr><th>#</th><th>tokens</th><th>characters</th><th>text</th>'
            f'<th>answer</th><th>score</th></tr></thead><tbody>{"".join(rows)}</tbody></table></section>')


def render_results(x: Exploration) -> str:
    # chunk mode: the stages are the first window's, whose answer (the heading below) is not the text's
    part = f" of the first window (of {len(x.windows)})" if len(x.windows) > 1 else ""
    detail = (f'<h2 class="detail">Every stage{part}, {NAMES[WEIGHTS[x.query.quantize]]} weights</h2>'
              + render_section(x.inspection, 1, numbered=False, level=3))
    if x.task != "text-classification":
        return render_sides(x) + detail
    long_text = render_windows(x) if x.query.long_text == "chunk" else render_truncation(x)
    return render_answers(x) + long_text + detail


def render_studio(model: str, query: Query, exploration: Exploration | None = None, error: str | None = None,
                  task: str = "text-classification", language: str | None = None) -> str:
    """The whole page: the form, an error if the query had one, then the results. The page's title says the
    answer (or the error): what a screen reader announces first when the page loads."""
    body = render_form(query, task, language)
    title = f"coulisse studio — {model}"
    if error:
        body += f'<p class="error" id="problem" role="alert" tabindex="-1">{e(error)}</p>'
        title = f"Error — {title}"
    if exploration is not None:
        body += render_results(exploration)
        title = f"{exploration.answer} — {title}"
    words = ("; the words are coloured by what pushed the answer" if task in ATTRIBUTION_TASKS else "")
    header = (f"<h1>coulisse studio</h1><p>Model: <code>{e(model)}</code>, task {e(task)}. A text goes through the "
              f"pipeline's stages: tokenizer, encoder, head, post-processing{words}.</p>")
    return ('<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1"><link rel="icon" href="data:,">'
            f"<title>{e(title)}</title><style>{STYLE}{STUDIO_STYLE}</style></head>"
            f"<body><main>{scrolling_tables(header + body)}</main>"
            f"<script>{SCRIPT}{FOCUS_SCRIPT}</script></body></html>\n")


# The page loads again after each query: the keyboard's focus goes to what the query gave, the error or the
# answer, whose heading a screen reader then reads (it started at the top of the page, audit 45).
FOCUS_SCRIPT = """
(function () {
  var target = document.getElementById('problem') || document.getElementById('answer');
  if (target) target.focus();
})();
"""

STUDIO_STYLE = """
.controls input[type=number]{width:5em}.controls select{max-width:100%}
label.text{display:block;font-size:14px}.pair{display:block;margin:6px 0;font-size:14px}
.ask textarea{width:100%;box-sizing:border-box;font:15px/1.4 system-ui,sans-serif;padding:6px}
.controls{display:flex;flex-wrap:wrap;gap:10px 18px;align-items:center;margin:6px 0 12px;font-size:14px}
.sides{display:flex;flex-wrap:wrap;gap:24px}.side{flex:1 1 380px}.side h3{margin:8px 0 4px}
.side-scores rect{fill:#6a51a3}.error{background:#fde0e0;padding:6px 10px;border-left:4px solid #b2182b}
.cut-context{white-space:pre-wrap;font-size:14px;background:#fafafa;padding:6px}
.cut-mark{background:#b2182b;color:#fff;padding:0 4px;margin:0 2px}
svg.windows rect{fill:rgba(33,102,172,0.35);stroke:#2166ac}h2.detail{margin-top:40px}
"""

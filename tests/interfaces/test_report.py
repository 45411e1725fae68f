"""`coulisse explain --html`: the report's HTML (`coulisse.interfaces.report`), read as a string and rendered by
headless Chromium (Debian's `chromium`; .ci/run installs it) with name resolution off: the DOM after the
page's script ran, console errors, every request the page made (Chromium's net log), and a screenshot kept
under tests/artifacts/ (ignored by git).
"""

from __future__ import annotations

import base64
import html
import json
import re
import shutil
import subprocess
from html import unescape
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from factory import LABELS, TEXTS

from coulisse import pipeline
from coulisse.errors import InputError
from coulisse.interfaces.html_parts import AGAINST, TOWARDS, diverging_rgb, render_bars
from coulisse.interfaces.inspection import write_report
from coulisse.interfaces.page_assets import STYLE
from coulisse.interfaces.report import MAX_ATTENTION_TOKENS, render_page

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
HOSTILE = '<script>alert("x")</script> Un <b>film</b> & « Amélie » </p>'
REPORT_TEXTS = [TEXTS[0], HOSTILE, TEXTS[-1]]  # the last is cut at 512 tokens


class Tree(HTMLParser):
    """Elements as (tag, attributes, text inside) in document order; enough to assert on a page."""

    def __init__(self):
        super().__init__()
        self.elements: list[list] = []
        self.open: list[list] = []

    def handle_starttag(self, tag, attrs):
        element = [tag, dict(attrs), ""]
        self.elements.append(element)
        if tag not in ("meta", "br", "img", "input", "link"):
            self.open.append(element)

    def handle_endtag(self, tag):
        while self.open:
            if self.open.pop()[0] == tag:
                break

    def handle_data(self, data):
        if self.open and self.open[-1][0] == "textarea" and not self.open[-1][2]:
            data = data.removeprefix("\n")  # as a browser's parser: a newline right after <textarea> is dropped
        for element in self.open:
            element[2] += data

    def find(self, tag: str, css: str | None = None) -> list[list]:
        return [e for e in self.elements if e[0] == tag and (css is None or css in e[1].get("class", "").split())]


def parse(html: str) -> Tree:
    tree = Tree()
    tree.feed(html)
    return tree


@pytest.fixture(scope="module")
def report(factory, tmp_path_factory):
    pipe = pipeline("text-classification", model=factory.checkpoint("camembert"))
    path = tmp_path_factory.mktemp("report") / "report.html"
    inspections = write_report(pipe, REPORT_TEXTS, path)
    return path, inspections, pipe


# -- the HTML as written ------------------------------------------------------------------------------------


def test_the_page_holds_every_view_of_every_text(report):
    path, inspections, pipe = report
    html = path.read_text(encoding="utf-8")
    tree = parse(html)
    assert len(tree.find("section", "input")) == 3
    assert len(tree.find("tr")) >= 4 and tree.find("table", "summary")  # several texts: a summary table
    words = tree.find("span", "word")
    assert len(words) == sum(len(x.attribution.words) for x in inspections)
    for span, word in zip(words, [w for x in inspections for w in x.attribution.words], strict=True):
        assert span[2] == word.text and float(span[1]["data-score"]) == pytest.approx(word.attribution, rel=1e-5)
        assert "background:rgb(" in span[1]["style"] and f"{word.attribution:+.4f}" in span[1]["title"]
    answers = pipe(REPORT_TEXTS)
    assert [e[2] for e in tree.find("strong", "label")] == [a["label"] for a in answers]
    # the course's id2label, numbers and names, as the terminal prints it
    mapping = ", ".join(f"{i}: {pipe.config.id2label[i]!r}" for i in sorted(pipe.config.id2label))
    assert [c[2] for c in tree.find("code")].count(f"id2label {{{mapping}}}") == 3
    charts = re.findall(r'<svg class="scores".*?</svg>', html)
    assert len(charts) == 3 and all(chart.count("<rect") == len(LABELS) for chart in charts)
    for chart, x in zip(charts, inspections, strict=True):
        assert [float(w) for w in re.findall(r'<rect [^>]*width="([0-9.]+)"', chart)] == pytest.approx(
            [max(1.0, s * (420 - 200)) for s in x.head.scores], abs=0.06)  # bar length ∝ probability


def test_the_summary_lists_the_top_words_of_the_label_explained(report, tmp_path):
    """The summary's column names the label the words were scored towards (`--target` may set it apart from the
    answer; the column said "towards the answer" and showed "—" beside an answer it did not explain: audit 38,
    finding 8), and lists that label's top words."""
    _, _, pipe = report
    texts = REPORT_TEXTS[:2]
    answers = [a["label"] for a in pipe(texts)]
    other = next(name for name in LABELS.values() if name != answers[0])
    inspections = write_report(pipe, texts, tmp_path / "target.html", target=other)
    html = (tmp_path / "target.html").read_text(encoding="utf-8")
    summary = re.search(r'<table class="summary">.*?</table>', html, re.S).group(0)
    assert "<th>top words towards the label explained</th>" in summary and "the answer" not in summary
    # the meta line says what F is (audit 38, finding 11)
    assert f"F = the logit of {other}, before softmax" in unescape(re.sub(r"<[^>]+>", "", html))
    body = summary.split("<tbody>", 1)[1]
    cells = [unescape(re.sub(r"<[^>]+>", "", re.findall(r"<td[^>]*>(.*?)</td>", r)[-1]))
             for r in re.findall(r"<tr>(.*?)</tr>", body)]
    assert len(cells) == len(texts)
    for cell, x in zip(cells, inspections, strict=True):
        assert x.attribution.label == other
        words = " · ".join(w.text for w in x.attribution.top_words(3)) or "—"
        assert cell == f"{other}: {words}", cell


def test_each_heading_names_its_text_and_the_pipelines_answer(report):
    """A section's heading says which text it is (one line, cut with an ellipsis) and what the pipeline
    answered for it; the summary table's links show the texts the same way."""
    path, inspections, pipe = report
    tree = parse(path.read_text(encoding="utf-8"))
    headings = [h[2] for h in tree.find("h2")]
    answers = pipe(REPORT_TEXTS)
    assert len(headings) == 3
    for i, (heading, text, answer) in enumerate(zip(headings, REPORT_TEXTS, answers, strict=True), 1):
        line = " ".join(text.split())
        shown = line if len(line) <= 60 else line[:59] + "…"
        assert heading == f"Text {i}: “{shown}” → {answer['label']} {answer['score']:.4f}"
    assert any(len(" ".join(t.split())) > 60 for t in REPORT_TEXTS)  # one heading is cut
    links = [a[2] for a in tree.find("a") if a[1].get("href", "").startswith("#input-")]
    assert [link.removesuffix("…") for link in links] == [" ".join(t.split())[:len(link.removesuffix("…"))]
                                                          for link, t in zip(links, REPORT_TEXTS, strict=True)]


def test_user_text_is_escaped_and_the_page_is_self_contained(report):
    path, _, _ = report
    html = path.read_text(encoding="utf-8")
    assert html.count("<script>") == 1  # the page's own; the text's is shown, not run
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in html
    # Nothing to fetch: no URL in src, href, CSS url() or @import; links only to anchors in the page.
    links = re.findall(r"""\b(?:src|href)\s*=\s*(["']?)([^"' >]*)""", html)
    assert links and all(quote == '"' and url.startswith("#input-") for quote, url in links)
    assert not re.search(r"url\(|@import|https?://", html)


def test_truncated_tail_and_cropped_attention(report):
    path, inspections, pipe = report
    long = inspections[2]
    assert long.truncated_at is not None and long.attribution.truncated
    seen, tail = long.seen, [t for t in long.tokens if t.truncated]
    # a cut token is not in the input: no mask (0 means padding), shown as "—"
    assert len(seen) == pipe.tokenizer.model_max_length and tail and all(t.mask is None for t in tail)
    assert all(t.mask == 1 for t in seen)
    tree = parse(path.read_text(encoding="utf-8"))
    assert TEXTS[-1][long.truncated_at:].strip() in tree.find("span", "truncated")[0][2]
    rows = tree.find("tr", "truncated")
    assert rows
    html = path.read_text(encoding="utf-8")
    cut_rows = re.findall(r'<tr class="truncated">(.*?)</tr>', html)
    assert cut_rows and all('title="not in the input: cut by truncation' in row and ">—</td>" in row
                            for row in cut_rows if "more truncated" not in row)
    data = json.loads(tree.find("script", "attention-data")[2][2])
    n = data["n"]
    assert n == MAX_ATTENTION_TOKENS and data["tokens"] == [t.piece for t in seen[:n]]
    probs = np.frombuffer(base64.b64decode(data["probs"]), dtype=np.uint8).reshape(data["layers"], data["heads"], n, n)
    # 8-bit codes: within half a step of the probabilities they stand for.
    assert np.abs(probs / 255 - long.attentions[:, :, :n, :n]).max() <= 0.5 / 255 + 1e-6


def test_pieces_are_the_vocabularys_and_hover_says_which_way(factory, tmp_path):
    """A character the vocabulary lacks is the unknown token, as convert_ids_to_tokens and the terminal show
    it (the encoding's own token is the raw character, which reads as if the vocabulary had it); a word's
    hover says "against" for a negative score."""
    pipe = pipeline("text-classification", model=factory.checkpoint("camembert"))
    text = "Un film ☃ magnifique mais trop long, vraiment."
    (x,) = write_report(pipe, [text], tmp_path / "r.html")
    unk = pipe.tokenizer.unk_token_id
    assert unk in [t.id for t in x.seen]
    assert [t.piece for t in x.seen] == pipe.tokenizer.convert_ids_to_tokens([t.id for t in x.seen])
    html = (tmp_path / "r.html").read_text(encoding="utf-8")
    assert f"<code><bdi>{pipe.tokenizer.unk_token.replace('<', '&lt;').replace('>', '&gt;')}</bdi></code>" in html
    for span in parse(html).find("span", "word"):
        score = float(span[1]["data-score"])
        assert (": against " if score < 0 else ": towards ") in span[1]["title"]


def test_attention_and_norms_come_from_the_model(report):
    _, inspections, pipe = report
    x = inspections[0]
    layers, heads = pipe.config.num_hidden_layers, pipe.config.num_attention_heads
    assert x.attentions.shape == (layers, heads, len(x.seen), len(x.seen))
    assert np.allclose(x.attentions.sum(-1), 1, atol=1e-5)
    inputs = pipe.tokenizer([x.text], return_tensors="pt")
    hidden = pipe.model(**inputs, output_hidden_states=True).last_hidden_state[0]
    assert x.layer_norms[-1] == pytest.approx(float(hidden.norm(dim=-1).mean()), rel=1e-5)
    assert len(x.layer_norms) == layers + 1


def test_render_is_pure_and_reusable(report):
    _, inspections, _ = report
    page = render_page(inspections[:1])
    assert page == render_page(inspections[:1])  # a function of its input alone
    assert 'class="summary"' not in page  # one text: no summary table


def test_an_int8_report_says_where_the_gradients_come_from(factory, tmp_path):
    pipe = pipeline("text-classification", model=factory.checkpoint("camembert"), quantize="int8")
    (x,) = write_report(pipe, [TEXTS[0]], tmp_path / "int8.html")
    assert x.attribution.weights == "fp32" and any("fp32 weights" in note for note in x.notes)
    assert "fp32 weights of the same checkpoint" in (tmp_path / "int8.html").read_text(encoding="utf-8")
    (y,) = write_report(pipe, [TEXTS[0]], tmp_path / "occlusion.html", method="occlusion")
    assert y.attribution.weights == "int8" and not y.notes


# -- the page in a browser ----------------------------------------------------------------------------------


def chromium(tmp_path: Path, page: Path, *extra: str) -> tuple[str, str, list[str]]:
    """Headless Chromium on `page`: (DOM after scripts, console lines, URLs the page requested)."""
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    if binary is None:
        pytest.skip("chromium is not installed (Debian: apt-get install chromium; .ci/run installs it)")
    net = tmp_path / "net.json"
    command = [binary, "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={tmp_path / 'profile'}",
               "--host-resolver-rules=MAP * ~NOTFOUND", "--disable-background-networking", "--disable-sync",
               "--disable-component-update", "--disable-extensions", "--no-first-run", "--enable-logging=stderr",
               "--v=0", f"--log-net-log={net}", *extra, page.as_uri()]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    console = [line for line in done.stderr.splitlines() if ":CONSOLE" in line]
    return done.stdout, console, page_requests(net)


def page_requests(net_log: Path) -> list[str]:
    """URLs that the page's frame asked for (Chromium's own background requests have other isolation keys)."""
    log = json.loads(net_log.read_text(encoding="utf-8"))
    start = log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
    return [e["params"]["url"] for e in log["events"] if e["type"] == start
            and "file://" in e["params"].get("network_isolation_key", "")
            and not e["params"]["url"].startswith("file:")]


@pytest.mark.slow
def test_the_checks_see_console_errors_and_requests(tmp_path):
    """The browser checks below can fail: a page that logs an error and fetches an image is caught."""
    bad = tmp_path / "bad.html"
    bad.write_text('<p>x</p><img src="http://example.com/a.png"><script>missing();</script>', encoding="utf-8")
    _, console, requests = chromium(tmp_path, bad, "--dump-dom")
    assert any("Uncaught ReferenceError" in line for line in console)
    assert requests == ["http://example.com/a.png"]


@pytest.mark.slow
def test_chromium_renders_the_report_offline(report, tmp_path):
    path, inspections, pipe = report
    dom, console, requests = chromium(tmp_path, path, "--dump-dom")
    assert console == [] and requests == []
    tree = parse(dom)
    assert len(tree.find("span", "word")) == sum(len(x.attribution.words) for x in inspections)
    canvases = tree.find("canvas", "heatmap")
    assert len(canvases) == 3
    for canvas, x in zip(canvases, inspections, strict=True):  # sized by the script: one cell per token
        n = min(len(x.seen), MAX_ATTENTION_TOKENS)
        width, height = int(canvas[1]["width"]), int(canvas[1]["height"])
        assert width == height and width >= 96 + 6 * n
    layers, heads = pipe.config.num_hidden_layers, pipe.config.num_attention_heads
    assert len(tree.find("option")) == 3 * (1 + layers + 1 + heads)  # rollout + layers, mean + heads


class Tables(HTMLParser):
    """The attention tables of a page: for each, its caption and rows of (tag, scope, text) cells."""

    def __init__(self):
        super().__init__()
        self.tables: list[dict] = []
        self.table: dict | None = None  # the attention table being read
        self.cell: list | None = None
        self.in_caption = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "table" and "attention-values" in attrs.get("class", ""):
            self.table = {"caption": "", "rows": []}
            self.tables.append(self.table)
        elif self.table is not None and tag == "caption":
            self.in_caption = True
        elif self.table is not None and tag == "tr":
            self.table["rows"].append([])
        elif self.table is not None and tag in ("th", "td"):
            self.cell = [tag, attrs.get("scope"), ""]
            self.table["rows"][-1].append(self.cell)

    def handle_endtag(self, tag):
        if tag == "table":
            self.table = None
        elif tag in ("th", "td"):
            self.cell = None
        elif tag == "caption":
            self.in_caption = False

    def handle_data(self, data):
        if self.cell is not None:
            self.cell[2] += data
        elif self.in_caption:
            self.table["caption"] += data


@pytest.mark.slow
def test_the_heat_maps_values_reach_a_keyboard_and_a_screen_reader(report, tmp_path):
    """The canvas shows a cell's value on mouse hover only; each heat map has its view as a table too, filled by
    the page's script: a focusable summary, rows and columns named by their tokens in header cells (what a screen
    reader reads with each value), the values those of the attention the page was built from (the view shown
    first: the last layer's mean of heads, each head's probabilities stored in a byte, so within half of 1/255,
    then 3 decimals; not the rollout, which keeps half of each row on the diagonal: audit 41)."""
    path, inspections, _ = report
    dom, console, _ = chromium(tmp_path, path, "--dump-dom")
    assert console == []
    tree = parse(dom)
    summaries = [s for s in tree.find("summary") if "heat map's values as a table" in s[2]]
    assert len(summaries) == len(inspections)  # a <summary> takes the keyboard's focus and opens its <details>
    canvases = tree.find("canvas", "heatmap")
    assert all(c[1].get("role") == "img" and "table" in c[1].get("aria-label", "") for c in canvases)
    tables = Tables()
    tables.feed(dom)
    assert len(tables.tables) == len(inspections)
    for table, x in zip(tables.tables, inspections, strict=True):
        n = min(len(x.seen), MAX_ATTENTION_TOKENS)
        layers = np.asarray(x.attentions).shape[0]
        assert f"layer {layers}, mean of heads" in table["caption"] and "row = query token" in table["caption"]
        header, *rows = table["rows"]
        names = [f"{i} {t.piece}" for i, t in enumerate(x.seen[:n], 1)]
        assert [c[2] for c in header[1:]] == names and all(c[:2] == ["th", "col"] for c in header)
        assert len(rows) == n
        assert [r[0][:3] for r in rows] == [["th", "row", name] for name in names]
        values = np.array([[float(c[2]) for c in r[1:]] for r in rows])
        assert all(c[0] == "td" for r in rows for c in r[1:])
        expected = np.asarray(x.attentions, dtype=np.float64)[-1].mean(0)[:n, :n]
        assert np.abs(values - expected).max() <= 0.5 / 255 + 0.0005
    # beside each heat map, what its colours mean: white 0, the darkest blue the view's largest value (audit 46)
    tops = tree.find("span", "scale-top")
    assert len(tops) == len(inspections) and len(tree.find("span", "scale-bar")) == len(inspections)
    for top, x in zip(tops, inspections, strict=True):
        n = min(len(x.seen), MAX_ATTENTION_TOKENS)
        largest = np.asarray(x.attentions, dtype=np.float64)[-1].mean(0)[:n, :n].max()
        shown = float(top[2].split()[0])
        assert abs(shown - largest) <= 0.5 / 255 + 0.0005 and "the largest value here" in top[2], top[2]


BAR_BOXES = """<script>
var out = [].map.call(document.querySelectorAll('g.bar'), function (g) {
  var name = g.querySelector('text'), box = name.getBBox();
  return [name.textContent, g.querySelector('title').textContent, box.x, box.x + box.width,
          g.querySelector('rect').getBBox().x];
});
var pre = document.createElement('pre'); pre.id = 'boxes'; pre.textContent = JSON.stringify(out);
document.body.appendChild(pre);
</script>"""


@pytest.mark.slow
def test_long_bar_names_are_drawn_whole_inside_the_chart(tmp_path):
    """Zero-shot labels and class names run long: each is drawn inside the chart, left of its bar (a column of
    130 px cut the start of any name past ~20 characters: audit 41); one too long for any column is cut at its
    end with "…" and said whole by its title."""
    names = ["documentaire animalier pour enfants", "film d'action américain", "x",
             "une étiquette bien trop longue pour tenir dans la colonne des noms"]
    page = tmp_path / "bars.html"
    page.write_text(f"<!DOCTYPE html><html><head><meta charset='utf-8'><style>{STYLE}</style></head><body>"
                    f"{render_bars([0.5, 0.3, 0.1, 0.1], names, 'scores')}{BAR_BOXES}</body></html>", encoding="utf-8")
    dom, console, _ = chromium(tmp_path, page, "--dump-dom", "--window-size=1100,600")
    assert console == []
    boxes = json.loads(unescape(re.search(r'<pre id="boxes">(.*?)</pre>', dom, re.S)[1]))
    assert [b[1] for b in boxes] == names
    assert [b[0] for b in boxes[:3]] == names[:3] and boxes[3][0].endswith("…")
    assert names[3].startswith(boxes[3][0][:-1])
    for shown, _, left, right, bar in boxes:
        assert left >= 0 and right <= bar, (shown, left, right, bar)


@pytest.mark.slow
def test_screenshot_shows_the_coloured_words(report, tmp_path):
    pil = pytest.importorskip("PIL.Image")
    path, inspections, _ = report
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / ".gitignore").write_text("*\n", encoding="utf-8")
    shot = ARTIFACTS / "report.png"
    shot.unlink(missing_ok=True)
    _, console, requests = chromium(tmp_path, path, "--hide-scrollbars", "--window-size=1100,1400",
                                    f"--screenshot={shot}")
    assert console == [] and requests == []
    image = pil.open(shot).convert("RGB")
    assert image.size == (1100, 1400)
    pixels = np.asarray(image).reshape(-1, 3).astype(int)
    # The first text's strongest word wears the palette's end colour (nothing else on the page is that colour).
    words = inspections[0].attribution.words
    strongest = max(words, key=lambda w: abs(w.attribution))
    colour = diverging_rgb(strongest.attribution, abs(strongest.attribution))
    assert colour in (TOWARDS, AGAINST)
    assert (np.abs(pixels - np.array(colour)).sum(1) <= 6).sum() > 50


def test_the_python_report_is_the_commands_page_and_shows_in_a_notebook(factory, tmp_path):
    """`coulisse.explain.report(pipe, texts)`: the page `explain --html` writes, saved where asked, and in a
    notebook an iframe whose document is that page (its style and script stay out of the notebook's)."""
    from coulisse.explain import report

    pipe = pipeline("text-classification", model=factory.checkpoint("camembert"))
    page = report(pipe, TEXTS[:2], method="occlusion")
    written = tmp_path / "cli.html"
    write_report(pipe, TEXTS[:2], written, method="occlusion")
    assert page.html() == written.read_text(encoding="utf-8")
    assert page.save(tmp_path / "saved.html").read_text(encoding="utf-8") == page.html()
    assert [x.head.headline for x in page.inspections] == [f"{a['label']} {a['score']:.4f}" for a in pipe(TEXTS[:2])]
    # Outside a notebook, a line per text with its answer, not every field of the inspections.
    assert repr(page).splitlines() == [
        f"Report: 2 texts through {pipe.checkpoint.name} (text-classification); .save(path) writes the page",
        *[f"  {i}. {t!r} -> {a['label']} {a['score']:.4f}" for i, (t, a) in enumerate(zip(TEXTS[:2], pipe(TEXTS[:2]),
                                                                                       strict=True), 1)]]
    (frame,) = parse(page._repr_html_()).find("iframe")
    assert frame[1]["srcdoc"] == page.html()  # the parser unescapes the attribute: the page itself
    assert frame[1]["sandbox"] == "allow-scripts"  # its script runs in an origin of its own, not the notebook's
    assert report(pipe, TEXTS[0], method="occlusion").html() == render_page(page.inspections[:1],
                                                                                      page.title)
    for bad, said in (([], "texts is an empty list"), ([""], r"texts\[0\] is empty"),
                      ("  ", r"texts\[0\] is only spaces"), (["ok", float("nan")], r"texts\[1\] is a float, nan")):
        with pytest.raises(InputError, match=said):  # the row named (a NaN of a column was "empty")
            report(pipe, bad)


def test_a_report_too_large_for_a_notebook_cell_shows_its_summary(factory, monkeypatch):
    """About 150 kB a text: a column of reviews made a cell (and the saved notebook) of hundreds of MB."""
    from coulisse.explain import report
    from coulisse.interfaces import report as pages

    pipe = pipeline("text-classification", model=factory.checkpoint("camembert"))
    page = report(pipe, TEXTS[:2], method="occlusion")
    monkeypatch.setattr(pages, "INLINE_LIMIT", len(page.html()) - 1)
    inline = page._repr_html_()
    assert "<iframe" not in inline and '.save("report.html")' in inline and len(inline) < 5_000
    assert html.escape(repr(page).splitlines()[0]) in inline


def test_the_python_report_scores_no_words_where_the_task_has_none(task_factory):
    from coulisse.explain import report, stages

    pipe = pipeline("fill-mask", model=task_factory.checkpoint("bert", "masked-lm"))
    with pytest.raises(InputError, match="fill-mask has no word scores"):
        report(pipe, "Le film est [MASK].", method="occlusion")
    (x,) = report(pipe, "Le film est [MASK].").inspections
    assert x.attribution is None and x.head.masks[0][0]["token"] == pipe("Le film est [MASK].")[0]["token"]
    out = stages(pipe, "Le film est [MASK].")  # the terminal's stages, as a string
    assert "3. Head: masked positions -> vocabulary logits" in out and repr(x.head.masks[0][0]["token_str"]) in out


def test_stages_of_several_texts_are_the_commands(factory):
    """`stages(pipe, [a, b])` (a learner's list, which `report` takes too): each text's stages, then the
    course's padded batch, as `coulisse explain a b` prints them; a list of lists says what a pair is."""
    from click.testing import CliRunner

    from coulisse.explain import stages
    from coulisse.interfaces.cli import cli

    folder = factory.checkpoint("camembert")
    pipe = pipeline("text-classification", model=folder)
    out = stages(pipe, TEXTS[:2])
    assert out.startswith(stages(pipe, TEXTS[0])) and stages(pipe, TEXTS[1]) in out
    assert "Batch: the 2 texts together, padded to one length" in out
    printed = CliRunner().invoke(cli, ["explain", "-m", str(folder), *TEXTS[:2]], env={"COLUMNS": "100"}).stdout
    assert " ".join(out.split()) == " ".join(printed.split())
    with pytest.raises(InputError, match="For a text pair"):
        stages(pipe, [[TEXTS[0], TEXTS[1]]])


def _contrast(a: tuple[int, ...], b: tuple[int, ...]) -> float:
    """WCAG 2's contrast ratio, written out here apart from the page's code."""
    def lum(rgb):
        c = [v / 255 for v in rgb]
        c = [v / 12.92 if v <= 0.04045 else ((v + 0.055) / 1.055) ** 2.4 for v in c]
        return 0.2126 * c[0] + 0.7152 * c[1] + 0.0722 * c[2]

    hi, lo = sorted((lum(a), lum(b)), reverse=True)
    return (hi + 0.05) / (lo + 0.05)


def test_every_word_colour_keeps_its_text_readable(report):
    """WCAG AA (4.5:1) between a word's ink and its background, at every strength of either sign (white ink
    from 0.55 of the scale gave 2.45:1 on the mid blue), on the page as written; the greyed truncated tail too."""
    from coulisse.interfaces.report import _style

    path, _, _ = report
    styles = re.findall(r"background:rgb\((\d+),(\d+),(\d+)\);color:#([0-9a-f]{3})\b",
                        path.read_text(encoding="utf-8"))
    styles += [re.search(r"rgb\((\d+),(\d+),(\d+)\);color:#([0-9a-f]{3})", _style(v / 100, 1.0)).groups()
               for v in range(-100, 101)]
    assert len(styles) > 201
    for *rgb, ink in styles:
        ink_rgb = tuple(int(c * 2, 16) for c in ink)
        assert _contrast(tuple(map(int, rgb)), ink_rgb) >= 4.5, (rgb, ink)
    css = re.search(r"\.truncated td\{color:#([0-9a-f]{3});background:#([0-9a-f]{6})", path.read_text("utf-8"))
    grey, back = tuple(int(c * 2, 16) for c in css[1]), tuple(int(css[2][i:i + 2], 16) for i in (0, 2, 4))
    assert _contrast(grey, back) >= 4.5 and _contrast(grey, (255, 255, 255)) >= 4.5

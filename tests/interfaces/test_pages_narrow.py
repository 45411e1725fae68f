"""The pages of `coulisse explain --html` and `coulisse studio` in headless Chromium, for readers the desktop
checks miss: right-to-left labels and texts (Arabic, Hebrew) beside numbers, a phone's 390-pixel-wide screen,
and a keyboard. A probe script appended to a copy of each page measures the laid-out boxes and writes them
into the DOM that `--dump-dom` prints.
"""

from __future__ import annotations

import json
import re
import shutil
from html import escape as html_escape
from pathlib import Path

import pytest
from test_report import chromium

from coulisse import pipeline
from coulisse.interfaces.inspection import write_report

LABELS = {0: "שלילי", 1: "إيجابي"}  # Hebrew, then Arabic: each a right-to-left label
TEXTS = ["هذا الفيلم رائع جدا 100 مرة، ممثلون 2024", "Un film excellent, mais trop long : 2 h 40 !"]
PROBE = """<script>
(function () {
  var LABELS = __LABELS__;
  function rect(node, start, end) {
    var r = document.createRange();
    r.setStart(node, start);
    r.setEnd(node, end);
    var b = r.getBoundingClientRect();
    return [b.left, b.right];
  }
  // where a label's characters and the score after it are drawn, found in the text nodes as laid out
  function measure(element) {
    var walker = document.createTreeWalker(element, NodeFilter.SHOW_TEXT), nodes = [], node, label = null;
    while ((node = walker.nextNode())) nodes.push(node);
    nodes.forEach(function (n, i) {
      LABELS.forEach(function (name) {
        var at = n.data.lastIndexOf(name);
        if (at >= 0) label = {i: i, at: at, end: at + name.length};
      });
    });
    if (!label) return null;
    for (var i = label.i; i < nodes.length; i++) {
      var from = i === label.i ? label.end : 0, found = /[0-9][.][0-9]{4}/.exec(nodes[i].data.slice(from));
      if (found) return [element.textContent, rect(nodes[label.i], label.at, label.end),
                         rect(nodes[i], from + found.index, from + found.index + found[0].length)];
    }
    return null;
  }
  var out = {scrollWidth: document.documentElement.scrollWidth, innerWidth: window.innerWidth, after: []};
  document.querySelectorAll('p.answer, h2, p.side-answer').forEach(function (p) {
    var m = measure(p);
    if (m) out.after.push(m);
  });
  var summary = document.querySelector('details.word-scores summary');
  if (summary) {
    summary.focus();
    out.focused = document.activeElement === summary;
    summary.dispatchEvent(new KeyboardEvent('keydown', {key: 'Enter', bubbles: true}));
    summary.click();  // what Enter on a focused summary does
    out.rows = [].map.call(summary.parentNode.querySelectorAll('tbody tr'), function (tr) {
      return [].map.call(tr.cells, function (c) { return c.innerText; });
    });
    out.shown = summary.parentNode.querySelector('table').getBoundingClientRect().height > 0;
  }
  var target = window.parent.document;  // the page itself, or the frame that holds it at a phone's width
  var pre = target.createElement('pre');
  pre.id = 'probe';
  pre.textContent = JSON.stringify(out);
  target.body.appendChild(pre);
})();
</script>"""


@pytest.fixture(scope="module")
def rtl_pipe(tf_camembert_dir, tmp_path_factory):
    folder = tmp_path_factory.mktemp("rtl") / "model"
    shutil.copytree(tf_camembert_dir, folder)
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    config["id2label"] = {str(i): name for i, name in LABELS.items()}
    config["label2id"] = {name: i for i, name in LABELS.items()}
    (folder / "config.json").write_text(json.dumps(config, ensure_ascii=False), encoding="utf-8")
    return pipeline("text-classification", model=folder)


def probe(tmp_path: Path, html: str, width: int | None = None) -> dict:
    """The probe's measures of `html`: in a window of 1100 pixels, or (`width`) in a frame that wide, 844
    high, since headless Chromium makes no window narrower than 500 pixels (the frame has the page's origin,
    srcdoc, so the probe writes into the window around it)."""
    probed = html.replace("</body>", PROBE.replace("__LABELS__", json.dumps(list(LABELS.values()))) + "</body>")
    if width is not None:
        probed = (f'<!DOCTYPE html><html><body style="margin:0"><iframe style="border:0;width:{width}px;'
                  f'height:844px" srcdoc="{html_escape(probed)}"></iframe></body></html>')
    page = tmp_path / "page.html"
    page.write_text(probed, encoding="utf-8")
    dom, console, requests = chromium(tmp_path, page, "--dump-dom", "--window-size=1100,844", "--hide-scrollbars")
    assert console == [] and requests == []
    found = re.search(r'<pre id="probe">(.*?)</pre>', dom, re.S)
    assert found, dom[-2000:]
    return json.loads(found[1].replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&"))


def assert_numbers_after_labels(measured: dict) -> None:
    assert measured["after"], "no label beside a number was measured"
    for text, label, score in measured["after"]:
        assert score[0] >= label[1] - 0.5, f"{text!r}: the number sits left of its label ({label} vs {score})"


def explain_page(rtl_pipe, tmp_path: Path) -> str:
    path = tmp_path / "report.html"
    write_report(rtl_pipe, TEXTS, path, steps=4)
    return path.read_text(encoding="utf-8")


@pytest.mark.slow
def test_explain_html_keeps_numbers_beside_right_to_left_labels(rtl_pipe, tmp_path):
    measured = probe(tmp_path, explain_page(rtl_pipe, tmp_path))
    assert_numbers_after_labels(measured)
    assert len(measured["after"]) >= 2 * len(TEXTS)  # each text's heading and answer


@pytest.mark.slow
def test_explain_html_fits_a_phone(rtl_pipe, tmp_path):
    measured = probe(tmp_path, explain_page(rtl_pipe, tmp_path), width=390)
    assert measured["innerWidth"] == 390
    assert measured["scrollWidth"] <= 390, measured["scrollWidth"]


@pytest.mark.slow
def test_word_scores_are_reachable_by_keyboard(rtl_pipe, tmp_path):
    html = explain_page(rtl_pipe, tmp_path)
    measured = probe(tmp_path, html)
    assert measured["focused"] and measured["shown"]
    spans = re.findall(r'<span class="word (?:towards|against)" data-score="([^"]+)"[^>]*>([^<]*)</span>', html)
    first_text = len(write_report(rtl_pipe, TEXTS[:1], tmp_path / "one.html", steps=4)[0].attribution.words)
    assert [[r[1], r[2]] for r in measured["rows"]] == [[w, f"{float(s):+.4f}"] for s, w in spans[:first_text]]


@pytest.mark.slow
def test_the_studio_page_fits_a_phone_and_keeps_numbers_in_place(rtl_pipe, tmp_path):
    pytest.importorskip("fastapi")
    from starlette.testclient import TestClient

    from coulisse.interfaces.studio.app import create_app
    from coulisse.interfaces.studio.explore import Studio

    client = TestClient(create_app(Studio(rtl_pipe, lambda: None)), base_url="http://127.0.0.1:8765")
    page = client.get("/", params={"text": TEXTS[0] + " " + "טקסט ארוך " * 300, "compare": "0",
                                   "long_text": "chunk"})
    assert page.status_code == 200, page.text
    measured = probe(tmp_path, page.text, width=390)
    assert measured["innerWidth"] == 390
    assert measured["scrollWidth"] <= 390, measured["scrollWidth"]
    assert_numbers_after_labels(measured)

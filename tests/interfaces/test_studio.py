"""`coulisse studio`: its routes in-process against the pipelines they adapt (answers, windows, truncation,
errors, the Host check), then the real command on 127.0.0.1 driven by headless Chromium with a query string,
network off (tests/interfaces/test_report.py's approach): the DOM after the page's script, console errors,
every request the page made, the numbers shown against the Python pipelines, a screenshot under
tests/artifacts/.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlencode

import numpy as np
import pytest
from click.testing import CliRunner
from factory import TEXTS
from test_report import Tables, parse

pytest.importorskip("fastapi")
from starlette.testclient import TestClient  # noqa: E402

from coulisse import pipeline  # noqa: E402
from coulisse.errors import InputError  # noqa: E402
from coulisse.interfaces.cli import cli  # noqa: E402
from coulisse.interfaces.html_parts import diverging_rgb  # noqa: E402
from coulisse.interfaces.jobs.predict import Predictor  # noqa: E402
from coulisse.interfaces.report import MAX_ATTENTION_TOKENS  # noqa: E402
from coulisse.interfaces.studio.app import create_app  # noqa: E402
from coulisse.interfaces.studio.command import is_loopback  # noqa: E402
from coulisse.interfaces.studio.explore import Studio, parse_query  # noqa: E402
from coulisse.tasks.windows import split_windows  # noqa: E402

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
LONG = TEXTS[-1]  # past 512 tokens
HOSTILE = '<script>alert("x")</script> Un <b>film</b> & « Amélie »'
REVIEW = "Un film excellent, des acteurs formidables, mais une fin vraiment bâclée."
LONG_REVIEW = " ".join(["Un film excellent, des acteurs formidables, mais une fin vraiment bâclée et trop longue."]
                       * 40)


def scores_by_label(results) -> dict[str, float]:
    return {r["label"]: r["score"] for r in results}


def cut_point(pipe, text: str) -> int:
    """Where truncation stops reading: the last character of the tokens the truncated encoding keeps (special
    tokens cover (0, 0))."""
    kept = pipe.tokenizer(text, truncation=True, return_offsets_mapping=True)
    return max(end for _, end in kept["offset_mapping"])


# -- in-process: the routes against the pipelines --------------------------------------------------------------


@pytest.fixture(scope="module")
def pipes(factory):
    model = factory.checkpoint("camembert")
    return pipeline("text-classification", model=model), pipeline("text-classification", model=model, quantize="int8")


@pytest.fixture(scope="module")
def loads(pipes):
    return []


@pytest.fixture(scope="module")
def client(pipes, loads):
    exact, int8 = pipes

    def load_int8():
        loads.append(1)
        return int8

    with TestClient(create_app(Studio(exact, load_int8)), base_url="http://127.0.0.1:8765") as c:
        yield c


def ask(client, route: str = "/api/explain", **query):
    return client.get(route + "?" + urlencode(query))


def test_int8_loads_on_the_first_query_that_needs_it(client, loads):
    assert ask(client, text=TEXTS[0], compare=0).status_code == 200 and loads == []
    assert ask(client, text=TEXTS[0]).status_code == 200 and loads == [1]  # compare is on by default
    assert ask(client, text=TEXTS[1], quantize="int8", compare=0).status_code == 200 and loads == [1]


def test_the_docs_name_every_query_parameter_and_json_key(client):
    """docs/studio.md's tables: each field of a query, and each key `/api/explain` answers, named there in
    backticks, so that a parameter or key added without its line fails here."""
    from dataclasses import fields

    from coulisse.interfaces.studio.explore import Query

    doc = (Path(__file__).resolve().parents[2] / "docs" / "studio.md").read_text(encoding="utf-8")
    for name in [f.name for f in fields(Query)] + list(ask(client, text=TEXTS[0], compare=0).json()):
        assert f"`{name}`" in doc, name


def test_the_json_route_answers_as_both_pipelines(client, pipes):
    exact, int8 = pipes
    r = ask(client, text=TEXTS[2], quantize="int8")
    assert r.status_code == 200, r.text
    got = r.json()
    for weights, pipe in (("fp32", exact), ("int8", int8)):
        answer, expected = got["answers"][weights], scores_by_label(pipe(TEXTS[2], top_k=None))
        assert dict(zip(answer["labels"], answer["scores"], strict=True)) == pytest.approx(expected, abs=1e-6)
        assert answer["label"] == pipe(TEXTS[2])[0]["label"]
    fp32, q8 = (dict(zip(got["answers"][w]["labels"], got["answers"][w]["scores"], strict=True))
                for w in ("fp32", "int8"))
    assert got["delta"] == pytest.approx({k: q8[k] - fp32[k] for k in fp32}, abs=1e-7)
    # the same verdict as every task's studio gives: the same label, and the largest |Δ|
    assert got["agreement"]["same"] == (exact(TEXTS[2])[0]["label"] == int8(TEXTS[2])[0]["label"])
    assert f"largest |Δ score| {max(abs(d) for d in got['delta'].values()):.2e}" in got["agreement"]["words"]
    attribution = exact.explain(TEXTS[2])  # int8's Integrated Gradients run on the fp32 weights
    assert [w["text"] for w in got["attribution"]["words"]] == [w.text for w in attribution.words]
    assert [w["attribution"] for w in got["attribution"]["words"]] == pytest.approx(
        [w.attribution for w in attribution.words], rel=1e-5, abs=1e-7)
    assert got["length"] == {"tokens": len(exact.tokenizer(TEXTS[2])["input_ids"]), "limit": 512,
                             "truncated_at": None}


def test_truncate_mode_says_where_the_cut_falls(client, pipes):
    exact, _ = pipes
    got = ask(client, text=LONG, compare=0).json()
    whole = exact.tokenizer([LONG], truncation=False)["input_ids"][0]
    assert len(whole) > 512 and got["length"]["tokens"] == len(whole)
    assert got["length"]["truncated_at"] == cut_point(exact, LONG)
    tail = [t for t in got["tokens"] if t["truncated"]]
    # cut tokens are not in the input: no mask (0 is padding's), as the table's "—" says
    assert tail and all(t["mask"] is None and t["start"] >= got["length"]["truncated_at"] for t in tail)
    assert all(t["mask"] == 1 for t in got["tokens"] if not t["truncated"])
    html = parse(ask(client, "/", text=LONG, compare=0).text)
    assert int(html.find("strong", "cut-at")[0][2]) == cut_point(exact, LONG)
    assert LONG[cut_point(exact, LONG):][:100] in html.find("span", "truncated")[0][2]


@pytest.mark.parametrize("stride", [None, 100])
def test_chunk_mode_is_classify_long_text_chunk(client, pipes, stride):
    exact, int8 = pipes
    query = {"text": LONG, "long_text": "chunk"} | ({} if stride is None else {"stride": stride})
    got = ask(client, **query).json()
    for weights, pipe in (("fp32", exact), ("int8", int8)):
        (expected,) = Predictor(pipe, "chunk", stride)._predict([LONG])  # what the corpus job writes
        assert got["answers"][weights]["scores"] == pytest.approx(expected.scores, abs=1e-6)
    whole = exact.tokenizer.encode_batch([LONG], truncation=False)[0]
    items = split_windows([whole], 512, stride).items
    windows = got["windows"]
    assert len(windows) == len(items) > 1
    # Independent of the code that cuts them: the windows cover the text's tokens, specials aside, each of at
    # most 510 tokens, consecutive ones sharing `stride` (a quarter of 510 by default).
    assert windows[0]["start"] == 1 and windows[-1]["end"] == len(whole.ids) - 1
    assert all(w["end"] - w["start"] <= 510 for w in windows)
    assert all(a["end"] - b["start"] == (510 // 4 if stride is None else stride) for a, b in
               zip(windows[:-1], windows[1:], strict=True))
    for w, item in zip(windows, items, strict=True):
        assert item.ids[1:-1] == whole.ids[w["start"]:w["end"]]
        assert w["chars"] == [whole.offsets[w["start"]][0], whole.offsets[w["end"] - 1][1]]
        logits = np.asarray(exact.forward([item])[0])
        assert w["answer"]["logits"] == pytest.approx(logits.tolist(), abs=1e-5)
    html = parse(ask(client, "/", **query).text)
    assert len(html.find("tr", "window-row")) == len(items)
    assert len(html.find("svg", "windows")) == 1


def test_chunk_modes_answer_is_classify_long_text_chunks(client, pipes, factory):
    """`answer`, the document's own answer, is what `coulisse classify --long-text chunk` prints for the text: the
    mean of the windows' logits, not the first window's answer (which the stages detailed on the page are, and
    their heading says so)."""
    query = {"text": LONG, "long_text": "chunk", "compare": 0}
    got = ask(client, **query).json()
    result = CliRunner().invoke(cli, ["classify", "-m", str(factory.checkpoint("camembert")), "--json",
                                      "--long-text", "chunk", LONG])
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)
    assert got["answer"] == f"{printed['label']} {printed['score']:.4f}"
    first = got["windows"][0]["answer"]
    assert len(got["windows"]) > 1 and got["answer"] != f"{first['label']} {first['score']:.4f}"  # it can fail
    html = parse(ask(client, "/", **query).text)
    assert html.find("h2", "detail")[0][2].startswith(f"Every stage of the first window (of {len(got['windows'])})")
    truncated = ask(client, text=LONG, compare=0).json()  # truncation: the first window's answer is the text's
    assert truncated["answer"] == f"{first['label']} {first['score']:.4f}"


def test_the_words_are_scored_towards_the_answer_shown(client, pipes, monkeypatch):
    """Chunk mode: the answer is the mean of the windows' logits; the words (the first window's, as the page's
    stages) are scored towards that answer's label, not the first window's own (audit 38, finding 2), unless
    `target` asks for another label, by name or id. The forward is rigged so that the first window answers
    another label than the mean (this tiny model's windows agree)."""
    exact, _ = pipes
    labels = len(exact.config.id2label)
    first_row, other_rows = np.zeros(labels, dtype=np.float32), np.zeros(labels, dtype=np.float32)
    first_row[0], other_rows[2] = 1.0, 5.0
    monkeypatch.setattr(exact, "forward", lambda items, *args, **kwargs: [
        first_row if i == 0 and len(items) > 1 else other_rows for i in range(len(items))])
    query = {"text": LONG, "long_text": "chunk", "compare": 0}
    got = ask(client, **query).json()
    first = got["windows"][0]["answer"]["label"]
    assert first == exact.config.id2label[0] and got["answers"]["fp32"]["label"] == exact.config.id2label[2]
    assert got["attribution"]["label"] == got["answers"]["fp32"]["label"]
    headings = [h[2] for h in parse(ask(client, "/", **query).text).find("h4")]  # under the detail's h2, h3
    assert f"Which words pushed towards {got['answers']['fp32']['label']}" in headings, headings
    for target in (first, "0"):
        asked = ask(client, **query, target=target).json()
        assert asked["attribution"]["label"] == first and asked["query"]["target"] == target
    r = ask(client, **query, target="joyeux")
    assert r.status_code == 400 and "target='joyeux' is not a label" in r.json()["error"]


def test_int8_words_are_scored_towards_the_int8_answer(client, pipes, monkeypatch):
    """quantize=int8: Integrated Gradients run on the fp32 weights, towards the int8 answer shown (they explained
    fp32's argmax). The int8 forward is rigged to answer a label fp32 does not."""
    exact, int8 = pipes
    other = int(np.argmin(exact.explain(TEXTS[2]).logits))
    rigged = np.full(len(exact.config.id2label), -5.0, dtype=np.float32)
    rigged[other] = 5.0
    monkeypatch.setattr(int8, "forward", lambda items, *args, **kwargs: [rigged] * len(items))
    got = ask(client, text=TEXTS[2], quantize="int8", compare=0).json()
    assert got["answers"]["int8"]["label"] == got["attribution"]["label"] == exact.config.id2label[other]


def test_bad_queries_are_one_line_400s(client):
    for query, words in (({"text": "x", "quantize": "int4"}, "quantize='int4'"),
                         ({"text": "x", "stride": 64}, "long_text=chunk"),
                         ({"text": "x", "long_text": "chunk", "stride": "-3"}, "stride=-3: the tokens two "
                          "windows share cannot be negative"),
                         ({"text": "x", "long_text": "chunk", "stride": "3.5"}, "stride='3.5' is not a whole"),
                         # digits str.isdigit() takes: int() refuses '²' (a 500 before) and reads '٣' as 3
                         ({"text": "x", "long_text": "chunk", "stride": "²"}, "stride='²' is not a whole"),
                         ({"text": "x", "long_text": "chunk", "stride": "٣"}, "stride='٣' is not a whole"),
                         ({"text": "x", "target": "²"}, "target='²' is not a label"),
                         ({"text": "x", "target": "٣"}, "target='٣' is not a label"),
                         ({"text": "x", "long_text": "chunk", "stride": 600}, "stride 600: the tokens two windows "
                          "share must be"),
                         ({"text": "x", "method": "shap"}, "method='shap'"),
                         ({"text": "x", "methode": "occlusion"}, "methode='occlusion': the studio has no such "
                          "parameter; it reads text, quantize,"),
                         ({"text": "   "}, "empty")):
        r = ask(client, **query)
        assert r.status_code == 400 and r.json()["error_type"] == "InputError", (query, r.text)
        assert words in r.json()["error"], (query, r.text)
        assert words in r.json()["error"] and "\n" not in r.json()["error"]
        assert "--" not in r.json()["error"], "a web page names no command-line flag"
        page = ask(client, "/", **query)
        assert page.status_code == (200 if query["text"].isspace() else 400)  # a blank box: just the form
    with pytest.raises(InputError, match="100001 characters, more than the studio's 100000"):
        parse_query({"text": ["x" * 100_001]})  # past what httpx puts in a URL; Chromium takes 2 MB
    page = ask(client, "/", text=HOSTILE, quantize="int4").text
    assert '<script>alert("x")' not in page and "&lt;script&gt;alert(&quot;x&quot;)" in page
    assert parse(page).find("p", "error") and page.count("<script>") == 1


def test_a_refused_query_keeps_the_forms_other_choices(client):
    """The page that says what was wrong shows what was sent: the text, and each choice valid on its own (the
    form came back with every option reset)."""
    page = parse(ask(client, "/", text="Un film.", quantize="int8", method="occlusion", compare="0",
                     long_text="chunk", stride="-3").text)
    assert page.find("p", "error")
    selected = {e[1]["value"] for e in page.find("option") if "selected" in e[1]}
    assert {"int8", "occlusion", "chunk"} <= selected
    box = next(e for e in page.find("input") if e[1].get("name") == "compare" and e[1].get("type") == "checkbox")
    assert "checked" not in box[1]
    assert page.find("textarea")[0][2] == "Un film."


def test_a_text_that_starts_with_a_newline_keeps_it_in_the_box(client):
    """A browser drops a newline right after <textarea>: the page writes one more, so the text sent again is the
    same text, and every character offset with it (audit 41)."""
    page = parse(ask(client, "/", text="\nUn film.\n", compare="0").text)
    assert page.find("textarea")[0][2] == "\nUn film.\n"


def test_the_page_without_a_text_is_the_form(client):
    r = client.get("/")
    tree = parse(r.text)
    assert r.status_code == 200 and tree.find("form", "ask") and not tree.find("section")
    form = tree.find("form", "ask")[0][1]
    assert form["method"] == "get" and form["action"] == "/"
    assert {e[1]["name"] for e in tree.elements if "name" in e[1]} == {"text", "quantize", "compare", "long_text",
                                                                         "stride", "method", "target", "viewport"}


def test_the_detailed_views_are_headed_by_the_text_and_its_answer(client, pipes):
    """One text on the page: its section's heading is the text and the answer of the weights shown, not the
    report's "Text 1"."""
    exact, int8 = pipes
    for quantize, pipe in (("none", exact), ("int8", int8)):
        tree = parse(ask(client, "/", text=REVIEW, quantize=quantize, compare=0).text)
        answer = pipe(REVIEW)[0]
        headings = [h[2] for h in tree.find("h3")]  # under the page's "Every stage" h2
        assert len(tree.find("section", "input")) == 1 and not any(h.startswith("Text ") for h in headings)
        assert f"“{REVIEW[:59]}…” → {answer['label']} {answer['score']:.4f}" in headings, quantize


def test_only_loopback_host_headers_are_answered(client, pipes):
    for host, status in (("127.0.0.1:8765", 200), ("localhost:8765", 200), ("[::1]:8765", 200),
                         ("127.0.0.1", 200), ("LOCALHOST:8765", 200),
                         ("evil.example:8765", 400), ("127.0.0.1.evil.example", 400), ("", 400),
                         # what no browser sends, and a lenient URL parser read as 127.0.0.1 (audit 41)
                         ("evil.example@127.0.0.1", 400), ("127.0.0.1:8765, evil.example", 400)):
        assert client.get("/health", headers={"host": host}).status_code == status, host
    with TestClient(create_app(Studio(pipes[0], lambda: pipes[1]), None), base_url="http://evil.example") as anyone:
        assert anyone.get("/health").status_code == 200  # --allow-remote


def test_another_sites_page_cannot_make_the_studio_run_the_model(client):
    """`<img src="http://127.0.0.1:8765/?text=...">` on any site ran the model in a visitor's browser, unseen
    (audit 46): a cross-site request for a resource is 403 (Fetch Metadata); following a link to the studio, the
    studio's own page and a client that sends no such header are answered."""
    query = {"text": "Un film."}
    for site, mode, dest, status in (("cross-site", "no-cors", "image", 403), ("cross-site", "cors", "empty", 403),
                                     ("cross-site", "navigate", "iframe", 403),
                                     ("cross-site", "navigate", "document", 200), ("same-origin", "cors", "empty", 200),
                                     ("none", "navigate", "document", 200)):
        headers = {"sec-fetch-site": site, "sec-fetch-mode": mode, "sec-fetch-dest": dest}
        for path in ("/", "/api/explain"):
            assert client.get(path, params=query, headers=headers).status_code == status, (site, mode, dest, path)
    assert client.get("/api/explain", params=query).status_code == 200


def test_every_answer_tells_the_browser_to_load_nothing_else(client):
    """Defence in depth (audit 41): a content security policy that allows the page's inline style and script
    and nothing from anywhere, no framing, no sniffing. The chromium tests check the pages still run under it
    (a refused resource is a console error there)."""
    for path, extra in (("/", {"text": "Un film."}), ("/api/explain", {"text": "Un film."}), ("/health", {}),
                        ("/", {"text": "x", "quantize": "int4"})):
        r = client.get(path, params=extra)
        policy = r.headers["content-security-policy"]
        assert "default-src 'none'" in policy and "frame-ancestors 'none'" in policy, (path, extra)
        assert "script-src 'unsafe-inline'" in policy and "connect-src" not in policy
        assert r.headers["x-frame-options"] == "DENY" and r.headers["x-content-type-options"] == "nosniff"
    assert "content-security-policy" in client.get("/health", headers={"host": "evil.example"}).headers


def test_a_non_loopback_host_is_refused_before_loading():
    assert all(is_loopback(h) for h in ("127.0.0.1", "127.3.4.5", "::1", "[::1]", "localhost", "LOCALHOST"))
    assert not any(is_loopback(h) for h in ("0.0.0.0", "::", "192.168.1.2", "example.com", "localhost.evil"))
    result = CliRunner().invoke(cli, ["studio", "--host", "0.0.0.0", "--model", "/nonexistent/model"])
    assert result.exit_code == 2 and "0.0.0.0 is not a loopback address" in result.output
    assert "--allow-remote" in result.output and "nonexistent" not in result.output  # refused before loading


# -- the command, in a browser -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def studio_url():
    """`coulisse studio` on the bundled model, on a free port of 127.0.0.1; stopped by SIGTERM (exit 0)."""
    process = subprocess.Popen([sys.executable, "-m", "coulisse", "studio", "-m", "coulisse/mini-allocine",
                                "--port", "0", "--threads", "1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    line = process.stdout.readline()
    found = re.search(r"http://127\.0\.0\.1:\d+/", line)
    if not found:
        process.kill()
        pytest.fail(f"coulisse studio did not start: {line!r} {process.stderr.read()}")
    yield found.group(0)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == 0, process.stderr.read()


@pytest.fixture(scope="module")
def bundled():
    exact = pipeline("text-classification", model="coulisse/mini-allocine")
    return exact, pipeline("text-classification", model="coulisse/mini-allocine", quantize="int8")


def browse(tmp_path: Path, url: str, *extra: str) -> tuple[str, list[str], list[str]]:
    """Headless Chromium on `url`, every host name unresolvable and 127.0.0.1 reachable: (DOM after scripts,
    console lines, URLs the page requested)."""
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    if binary is None:
        pytest.skip("chromium is not installed (Debian: apt-get install chromium; .ci/run installs it)")
    net = tmp_path / "net.json"
    command = [binary, "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={tmp_path / 'profile'}",
               "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1", "--disable-background-networking",
               # Autofill asks Google about every page with a form, keyed to the page's site: the browser's
               # request, not the page's.
               "--disable-sync", "--disable-features=AutofillServerCommunication", "--disable-component-update",
               "--disable-extensions", "--no-first-run",
               "--enable-logging=stderr", "--v=0", f"--log-net-log={net}", "--virtual-time-budget=10000", *extra,
               url]
    done = subprocess.run(command, capture_output=True, text=True, timeout=180)
    console = [line for line in done.stderr.splitlines() if ":CONSOLE" in line]
    return done.stdout, console, page_requests(net, url)


def page_requests(net_log: Path, url: str) -> list[str]:
    """URLs that the page asked for: requests keyed to its site (Chromium's own background ones are keyed
    to theirs)."""
    site = re.match(r"http://[^:/]+", url).group(0)
    log = json.loads(net_log.read_text(encoding="utf-8"))
    start = log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
    events = [e.get("params", {}) for e in log["events"] if e["type"] == start]  # the job's end has no params
    return [p["url"] for p in events if site in (p.get("network_isolation_key") or "")]


def only_the_studio(requests: list[str], base: str) -> bool:
    return bool(requests) and all(r.startswith(base) for r in requests)


def within_display(shown: str, value: float) -> bool:
    """`shown` is `value` printed with the digits it has: within half a unit of its last digit (and 1e-6 for
    the last bits that differ between two processes' matmuls)."""
    mantissa, _, exponent = shown.partition("e")
    decimals = len(mantissa.partition(".")[2])
    unit = 10.0 ** (-decimals + (int(exponent) if exponent else 0))
    return abs(float(shown) - value) <= unit / 2 + 1e-6


@pytest.mark.slow
def test_the_checks_see_a_request_leaving_the_page(tmp_path):
    """The net-log filter below catches a page on 127.0.0.1 that fetches from elsewhere."""
    import http.server
    import threading

    class Page(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            body = b'<p>x</p><img src="http://example.com/a.png">'
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Page)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/"
        _, _, requests = browse(tmp_path, url, "--dump-dom")
    finally:
        server.shutdown()
    assert url in requests and "http://example.com/a.png" in requests and not only_the_studio(requests, url)


@pytest.mark.slow
def test_chromium_shows_exact_and_int8_side_by_side(studio_url, bundled, tmp_path):
    exact, int8 = bundled
    url = studio_url + "?" + urlencode({"text": REVIEW, "quantize": "int8"})
    dom, console, requests = browse(tmp_path, url, "--dump-dom")
    assert console == [] and only_the_studio(requests, studio_url), (console, requests)
    tree = parse(dom)
    assert tree.find("textarea")[0][2] == REVIEW  # the box holds the text the answer is for
    sides = {e[1]["data-weights"]: e for e in tree.find("div", "side")}
    assert set(sides) == {"fp32", "int8"}
    labels, side_labels, side_scores = exact.config.id2label, tree.find("strong", "side-label"), \
        tree.find("span", "side-score")
    for (label, score), pipe in zip(zip(side_labels, side_scores, strict=True), (exact, int8), strict=True):
        (top,) = pipe(REVIEW)
        assert label[2] == top["label"] and within_display(score[2], top["score"])
    rows = [e for e in tree.find("tr") if "data-label" in e[1]]
    assert [r[1]["data-label"] for r in rows] == [labels[i] for i in sorted(labels)]
    for row in rows:
        cells = {c: e[2] for e in row_cells(tree, row) for c in e[1].get("class", "").split()
                 if c in ("fp32", "int8", "delta")}
        name = row[1]["data-label"]
        a, b = scores_by_label(exact(REVIEW, top_k=None))[name], scores_by_label(int8(REVIEW, top_k=None))[name]
        assert within_display(cells["fp32"], a) and within_display(cells["int8"], b)
        assert within_display(cells["delta"], b - a)
    # The detailed views: int8's answer, words scored on the fp32 weights, one coloured span per word.
    assert [e[2] for e in tree.find("strong", "label")] == [int8(REVIEW)[0]["label"]]
    words, attribution = tree.find("span", "word"), exact.explain(REVIEW)
    assert [w[2] for w in words] == [w.text for w in attribution.words]
    assert [float(w[1]["data-score"]) for w in words] == pytest.approx([w.attribution for w in attribution.words],
                                                                      rel=1e-4, abs=1e-6)
    assert all("background:rgb(" in w[1]["style"] for w in words)
    charts = re.findall(r'<svg class="(scores|side-scores)".*?</svg>', dom, re.S)
    assert charts == ["side-scores", "side-scores", "scores"]
    assert all(chart.count("<rect") == len(labels) for chart in re.findall(r'<svg class="[a-z-]*scores".*?</svg>',
                                                                         dom, re.S))
    (canvas,) = tree.find("canvas", "heatmap")  # sized by the page's script: one cell per token
    n = min(len(attribution.tokens), MAX_ATTENTION_TOKENS)
    assert int(canvas[1]["width"]) == int(canvas[1]["height"]) >= 96 + 6 * n
    tables = Tables()  # the heat map's values without a mouse: the same table as the report's, filled alike
    tables.feed(dom)
    (table,) = tables.tables
    assert "mean of heads" in table["caption"] and len(table["rows"]) == n + 1  # the last layer's, first
    assert all(len(row) == n + 1 and row[0][0] == "th" for row in table["rows"])


def row_cells(tree, row) -> list[list]:
    """The <td> elements of a <tr>, in document order."""
    at = tree.elements.index(row)
    cells = []
    for element in tree.elements[at + 1:]:
        if element[0] == "tr":
            break
        if element[0] == "td":
            cells.append(element)
    return cells


@pytest.mark.slow
def test_chromium_shows_the_truncation_point_and_the_windows(studio_url, bundled, tmp_path):
    exact, _ = bundled
    whole = exact.tokenizer.encode_batch([LONG_REVIEW], truncation=False)[0]
    assert len(whole.ids) > exact.tokenizer.model_max_length
    dom, console, requests = browse(tmp_path, studio_url + "?" + urlencode({"text": LONG_REVIEW, "compare": 0}),
                                    "--dump-dom")
    assert console == [] and only_the_studio(requests, studio_url)
    tree = parse(dom)
    cut = cut_point(exact, LONG_REVIEW)
    assert int(tree.find("strong", "cut-at")[0][2]) == cut
    assert int(tree.find("strong", "token-count")[0][2]) == len(whole.ids)
    assert tree.find("mark", "cut-mark") and tree.find("tr", "truncated")
    assert LONG_REVIEW[cut:].strip() in tree.find("span", "truncated")[1][2]  # the words view's greyed tail
    (a,) = [e for e in tree.find("div", "side")]
    assert a[1]["data-weights"] == "fp32"  # compare=0: the exact model alone

    dom, console, requests = browse(tmp_path, studio_url + "?" + urlencode(
        {"text": LONG_REVIEW, "long_text": "chunk", "stride": 64, "compare": 0}), "--dump-dom")
    assert console == [] and only_the_studio(requests, studio_url)
    tree = parse(dom)
    items = split_windows([whole], exact.tokenizer.model_max_length, 64).items
    assert len(tree.find("tr", "window-row")) == len(items) == int(tree.find("strong", "window-count")[0][2]) > 1
    assert dom.count('<g class="window">') == len(items)
    (expected,) = Predictor(exact, "chunk", 64)._predict([LONG_REVIEW])
    assert tree.find("strong", "side-label")[0][2] == expected.label
    assert within_display(tree.find("span", "side-score")[0][2], expected.score)


@pytest.mark.slow
def test_screenshot_of_the_studio(studio_url, bundled, tmp_path):
    pil = pytest.importorskip("PIL.Image")
    exact, _ = bundled
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / ".gitignore").write_text("*\n", encoding="utf-8")
    shot = ARTIFACTS / "studio.png"
    shot.unlink(missing_ok=True)
    _, console, requests = browse(tmp_path, studio_url + "?" + urlencode({"text": REVIEW}), "--hide-scrollbars",
                                  "--window-size=1100,1600", f"--screenshot={shot}")
    assert console == [] and only_the_studio(requests, studio_url)
    image = pil.open(shot).convert("RGB")
    assert image.size == (1100, 1600)
    pixels = np.asarray(image).reshape(-1, 3).astype(int)
    strongest = max(exact.explain(REVIEW).words, key=lambda w: abs(w.attribution))
    for colour in (diverging_rgb(strongest.attribution, abs(strongest.attribution)), (106, 81, 163)):  # word, bars
        assert (np.abs(pixels - np.array(colour)).sum(1) <= 6).sum() > 50, colour

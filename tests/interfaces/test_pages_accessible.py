"""What the pages of `coulisse explain --html` and `coulisse studio` give a reader who does not see the colours
and shapes: a screen reader (texts marked in the model's language, every chart's values in its name, the words
past the model's limit said to be unseen, regions named apart, the answer in the studio's title), a keyboard
(the heat map's scroll box takes the focus), greyscale vision (the sign of an attribution not by hue alone) and
a phone (the studio's selects never wider than the screen). Found by an audit with axe-core and Chromium
(audit 45); checked here on the HTML as written.
"""

from __future__ import annotations

import re

import pytest
from test_report import parse

from coulisse import pipeline
from coulisse.interfaces.inspection import write_report
from coulisse.interfaces.page_assets import STYLE

pytest.importorskip("fastapi")
from starlette.testclient import TestClient  # noqa: E402

from coulisse.interfaces.studio.app import create_app  # noqa: E402
from coulisse.interfaces.studio.explore import Studio  # noqa: E402
from coulisse.interfaces.studio.views import STUDIO_STYLE  # noqa: E402

REVIEW = "Un film magnifique, des acteurs excellents, mais une fin vraiment bâclée."
LONG = " ".join(["Un film excellent, des acteurs formidables, mais une fin bâclée et bien trop longue."] * 60)


@pytest.fixture(scope="module")
def french():
    return pipeline("text-classification", model="coulisse/mini-allocine")  # CamemBERT: its card says fr


@pytest.fixture(scope="module")
def page(french, tmp_path_factory):
    path = tmp_path_factory.mktemp("a11y") / "report.html"
    inspections = write_report(french, [REVIEW, LONG], path, steps=4)
    return path.read_text(encoding="utf-8"), inspections


def test_texts_are_marked_in_the_models_language(page):
    html, _ = page
    tree = parse(html)
    assert tree.find("html")[0][1]["lang"] == "en"  # the page's own words
    for paragraph in tree.find("p", "attributed"):
        assert paragraph[1].get("lang") == "fr"
    quoted = [s for s in tree.find("span") if s[1].get("lang") == "fr" and REVIEW[:20] in s[2]]
    assert quoted, "the section heading's quote of the text is not marked French"
    assert all(a[1].get("lang") == "fr" for a in tree.find("a") if a[1].get("href", "").startswith("#input-"))


def test_a_model_that_names_no_language_marks_none(factory, tmp_path):
    bert = pipeline("text-classification", model=factory.checkpoint("bert"))
    html = (tmp_path / "r.html")
    write_report(bert, [REVIEW], html, steps=4)
    assert re.findall(r'<(\w+)[^>]* lang="', html.read_text(encoding="utf-8")) == ["html"]


def test_every_chart_says_its_values_to_a_screen_reader(page):
    html, inspections = page
    charts = parse(html).find("svg")
    assert charts and all(c[1].get("aria-label") for c in charts if c[1].get("role") == "img")
    scores = [c for c in charts if "scores" in c[1].get("class", "").split()]
    head = inspections[0].head
    said = scores[0][1]["aria-label"]
    for i, probability in enumerate(head.scores):
        assert f"{head.id2label[i]} {probability:.4f}" in said, said


def test_the_words_past_the_limit_are_said_to_be_unseen(page):
    html, inspections = page
    assert inspections[1].truncated_at is not None
    cut = parse(html).find("span", "truncated")
    assert len(cut) == 1 and "not seen by the model" in cut[0][2]
    assert ".hidden{position:absolute" in STYLE  # read aloud, not shown


def test_the_sign_of_a_word_is_not_told_by_colour_alone(page):
    html, inspections = page
    words = parse(html).find("span", "word")
    assert len(words) == sum(len(x.attribution.words) for x in inspections)
    for span in words:
        way = "against" if float(span[1]["data-score"]) < 0 else "towards"
        assert way in span[1]["class"].split()
    assert ".word.against" in STYLE and "text-decoration:underline" in STYLE
    assert "(words against are underlined)" in html


def test_regions_are_named_apart_and_the_heat_map_takes_the_focus(page):
    html, _ = page
    tree = parse(html)
    boxes = [d[1]["aria-label"] for d in tree.find("div", "table-box")]
    assert boxes and len(set(boxes)) == len(boxes), boxes
    assert "tokens table 1" in boxes and "tokens table 2" in boxes
    wraps = tree.find("div", "canvas-wrap")
    assert wraps and all(w[1].get("tabindex") == "0" and w[1].get("aria-label") for w in wraps)
    assert len(tree.find("main")) == 1


@pytest.fixture(scope="module")
def studio(french):
    def no_int8():
        raise AssertionError("these pages never ask for int8")

    with TestClient(create_app(Studio(french, no_int8)), base_url="http://127.0.0.1:8765") as client:
        yield client


def test_the_studios_answer_is_in_its_title_and_its_text_box_labelled(studio, french):
    html = studio.get("/", params={"text": REVIEW, "compare": "0"}).text
    tree = parse(html)
    answer = french(REVIEW)[0]
    assert tree.find("title")[0][2].startswith(f"{answer['label']} {answer['score']:.4f} — coulisse studio")
    label = [lb for lb in tree.find("label", "text")]
    assert len(label) == 1 and "text" in label[0][2].split(REVIEW[:10])[0]  # the word before the box's text
    (box,) = tree.find("textarea")
    assert box[1].get("lang") == "fr" and box in tree.elements[tree.elements.index(label[0]):]
    assert len(tree.find("main")) == 1
    headings = [(h[0], h[2]) for h in tree.elements if h[0] in ("h2", "h3")]
    detail = next(i for i, h in enumerate(headings) if h[1].startswith("Every stage"))
    assert headings[detail][0] == "h2" and headings[detail + 1][0] == "h3"  # the text's views under it
    empty = parse(studio.get("/").text)
    assert empty.find("textarea")[0][1].get("lang") == "fr" and empty.find("title")[0][2].startswith("coulisse")
    # the focus goes to the answer when the page loads again (the script finds it by this id)
    answer = [h for h in tree.find("h2") if h[1].get("id") == "answer"]
    assert len(answer) == 1 and answer[0][1].get("tabindex") == "-1" and "getElementById('answer')" in html
    assert not any(h[1].get("id") == "answer" for h in empty.find("h2"))


def test_the_studios_error_is_in_its_title(studio):
    response = studio.get("/", params={"text": REVIEW, "stride": "-3"})
    assert response.status_code == 400
    tree = parse(response.text)
    assert tree.find("title")[0][2].startswith("Error — coulisse studio")
    (problem,) = tree.find("p", "error")
    assert problem[1].get("id") == "problem" and problem[1].get("tabindex") == "-1"  # the focus goes there


def test_the_studios_window_strip_leaves_its_numbers_to_the_table(studio):
    html = studio.get("/", params={"text": LONG, "long_text": "chunk", "compare": "0"}).text
    tree = parse(html)
    (strip,) = tree.find("svg", "windows")
    assert strip[1].get("aria-hidden") == "true" and tree.find("table", "windows")
    assert ".controls select{max-width:100%}" in STUDIO_STYLE  # a long option never widens a phone's page


def test_only_a_language_tag_marks_a_text():
    from coulisse.interfaces.html_parts import lang_attribute

    assert lang_attribute("fr") == ' lang="fr"' and lang_attribute("pt-BR") == ' lang="pt-BR"'
    for card in ("French", "multilingual", '"><script>alert(1)</script>', "", None):
        assert lang_attribute(card) == ""  # a model card's free text is no tag (audit 45, session review)

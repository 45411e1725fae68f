"""`coulisse studio --task`: a studio of another task of `coulisse explain` (fill-mask, question-answering,
zero-shot-classification here), its routes in-process against the pipelines it adapts: the task's fields in
the form, the answer and views of the weights asked, and one-line 400s for what the task cannot use.
tests/interfaces/test_studio.py holds the text-classification studio and the command in a browser.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from urllib.parse import urlencode

import pytest
from click.testing import CliRunner
from test_report import parse

pytest.importorskip("fastapi")
from starlette.testclient import TestClient  # noqa: E402

from coulisse import pipeline  # noqa: E402
from coulisse.interfaces.cli import cli  # noqa: E402
from coulisse.interfaces.studio.app import create_app  # noqa: E402
from coulisse.interfaces.studio.explore import Studio  # noqa: E402

QA_FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "qa"
CONTEXT = "Le camembert est un fromage de Normandie, créé en 1791 par Marie Harel à Camembert."
QUESTION = "Qui a créé le camembert ?"


def studio_client(task: str, folder: Path, loads: list | None = None):
    exact = pipeline(task, model=folder)

    def load_int8():
        if loads is not None:
            loads.append(1)
        return pipeline(task, model=folder, quantize="int8")

    return TestClient(create_app(Studio(exact, load_int8)), base_url="http://127.0.0.1:8765")


def ask(client, route: str = "/api/explain", **query):
    return client.get(route + "?" + urlencode(query))


def field_names(html: str) -> set[str]:
    return {e[1]["name"] for e in parse(html).elements if "name" in e[1] and e[0] != "meta"}


@pytest.fixture(scope="module")
def fill_mask(task_factory):
    folder = task_factory.checkpoint("camembert", "masked-lm")
    loads: list = []
    with studio_client("fill-mask", folder, loads) as client:
        yield client, folder, loads


def test_fill_mask_studio_answers_as_the_pipeline_for_the_weights_asked(fill_mask):
    client, folder, loads = fill_mask
    text = "Le film est <mask>."
    got = ask(client, text=text, compare="0").json()
    assert got["task"] == "fill-mask" and got["answers"] == {} and got["attribution"] is None and loads == []
    assert got["agreement"] is None
    expected = pipeline("fill-mask", model=folder)(text, top_k=5)
    (masks,) = got["view"]["masks"]
    assert [p["token"] for p in masks] == [p["token"] for p in expected]
    assert [p["score"] for p in masks] == pytest.approx([p["score"] for p in expected], abs=1e-6)
    int8 = ask(client, text=text, quantize="int8").json()
    assert loads == [1]  # the int8 pipeline loads on the first query that asks for it
    expected = pipeline("fill-mask", model=folder, quantize="int8")(text, top_k=5)
    assert [p["token"] for p in int8["view"]["masks"][0]] == [p["token"] for p in expected]
    page = ask(client, "/", text=text, compare="0").text
    headings = [h[2] for h in parse(page).find("h2")]
    assert "Every stage, exact (fp32) weights" in headings
    assert f"“{text}” → {got['answer']}" in [h[2] for h in parse(page).find("h3")]  # the text's heading, under it
    assert not parse(page).find("section", "compare") and not parse(page).find("section", "long-text")


def test_the_form_has_the_tasks_fields(fill_mask, nli_dir, tmp_path, camembert_spm):
    client, _, _ = fill_mask
    assert field_names(client.get("/").text) == {"text", "quantize", "compare"}
    qa = tmp_path / "qa"
    shutil.copytree(QA_FIXTURES / "camembert", qa)
    shutil.copy(camembert_spm, qa / "sentencepiece.bpe.model")
    with studio_client("question-answering", qa) as c:
        assert field_names(c.get("/").text) == {"text", "question", "quantize", "compare"}
    with studio_client("zero-shot-classification", nli_dir) as c:
        assert field_names(c.get("/").text) == {"text", "labels", "template", "quantize", "compare", "method",
                                                   "target"}


def test_what_the_task_cannot_use_is_a_one_line_400(fill_mask):
    client, _, _ = fill_mask
    for query, words in (({"long_text": "chunk"}, "long_text: text-classification's"),
                         ({"stride": "8"}, "stride: text-classification's"),
                         ({"method": "occlusion"}, "fill-mask has no word scores"),
                         ({"target": "positif"}, "fill-mask has no word scores"),
                         ({"question": "Quoi ?"}, "question is for a question-answering studio"),
                         ({"labels": "a,b"}, "labels and template are for a zero-shot-classification studio")):
        r = ask(client, text="Le film est <mask>.", **query)
        assert r.status_code == 400 and r.json()["error_type"] == "InputError", (query, r.text)
        assert words in r.json()["error"] and "\n" not in r.json()["error"] and "--" not in r.json()["error"]
    r = ask(client, text="Pas de masque.")
    assert r.status_code == 400 and "has no mask token" in r.json()["error"]


def test_question_answering_studio_marks_the_pipelines_answer(tmp_path, camembert_spm):
    qa = tmp_path / "qa"
    shutil.copytree(QA_FIXTURES / "camembert", qa)
    shutil.copy(camembert_spm, qa / "sentencepiece.bpe.model")
    with studio_client("question-answering", qa) as client:
        r = ask(client, "/", text=CONTEXT)
        assert r.status_code == 400 and "question box" in parse(r.text).find("p", "error")[0][2]
        assert parse(r.text).find("textarea")[0][2] == CONTEXT  # the box keeps the text
        page = ask(client, "/", text=CONTEXT, question=QUESTION).text
        expected = pipeline("question-answering", model=qa)(question=QUESTION, context=CONTEXT)
        (mark,) = parse(page).find("mark", "answer-span")
        assert mark[2] == CONTEXT[expected["start"]:expected["end"]]
        (box,) = [el for el in parse(page).find("input") if el[1].get("name") == "question"]
        assert box[1]["value"] == QUESTION
        # the length is the pair's, as the pipeline reads it (its windows of max_seq_len tokens)
        got = ask(client, text=CONTEXT, question=QUESTION, compare="0").json()
        pipe = pipeline("question-answering", model=qa)
        assert got["length"]["limit"] == min(384, pipe.tokenizer.model_max_length)
        assert got["length"]["tokens"] == len(got["tokens"]) == len(pipe.tokenizer(QUESTION, CONTEXT)["input_ids"])


def test_zero_shot_studio_ranks_and_scores_the_words(nli_dir):
    with studio_client("zero-shot-classification", nli_dir) as client:
        assert "labels box" in ask(client, text="Le PSG a gagné.").json()["error"]
        got = ask(client, text="Le PSG a gagné hier soir.", labels="sport,cinéma", method="occlusion").json()
    expected = pipeline("zero-shot-classification", model=nli_dir)("Le PSG a gagné hier soir.",
                                                                     candidate_labels="sport,cinéma")
    assert got["view"]["answer"]["labels"] == expected["labels"]
    assert got["view"]["answer"]["scores"] == pytest.approx(expected["scores"], abs=1e-6)
    assert got["attribution"]["label"] == expected["labels"][0] and got["attribution"]["method"] == "occlusion"


def entity_keys(entities) -> list:
    return [(x["entity_group"], x["start"], x["end"]) for x in entities]


def side_case(task, task_factory, nli_dir, minilm_dir, camembert_spm, tmp_path):
    """(model folder, query, the pipeline's public answer for a pipeline, a function of two such answers
    saying whether they are the same answer, a function checking a side's view against a public answer)."""
    import numpy as np

    if task == "token-classification":
        text = "Marie Harel vit à Camembert, en Normandie."
        return (task_factory.checkpoint("bert", "token-classification"), {"text": text},
                lambda pipe: pipe(text, aggregation_strategy="simple"),
                lambda a, b: entity_keys(a) == entity_keys(b),
                lambda view, answer: entity_keys(view["entities"]) == entity_keys(answer))
    if task == "fill-mask":
        text = "Le film est <mask>."
        return (task_factory.checkpoint("camembert", "masked-lm"), {"text": text},
                lambda pipe: pipe(text, top_k=5), lambda a, b: a[0]["token"] == b[0]["token"],
                lambda view, answer: [p["token"] for p in view["masks"][0]] == [p["token"] for p in answer])
    if task == "question-answering":
        qa = tmp_path / "qa"
        shutil.copytree(QA_FIXTURES / "camembert", qa)
        shutil.copy(camembert_spm, qa / "sentencepiece.bpe.model")
        return (qa, {"text": CONTEXT, "question": QUESTION},
                lambda pipe: pipe(question=QUESTION, context=CONTEXT),
                lambda a, b: (a["start"], a["end"]) == (b["start"], b["end"]),
                lambda view, answer: (view["answer"]["start"], view["answer"]["end"]) == (answer["start"],
                                                                                          answer["end"]))
    if task == "zero-shot-classification":
        text = "Le PSG a gagné hier soir."
        return (nli_dir, {"text": text, "labels": "sport,cinéma,politique"},
                lambda pipe: pipe(text, candidate_labels="sport,cinéma,politique"),
                lambda a, b: a["labels"] == b["labels"],
                lambda view, answer: view["answer"]["labels"] == answer["labels"])
    if task == "feature-extraction":
        text = "Le chat dort sur le canapé."

        def cosine(a, b):
            return float(np.dot(a, b) / np.linalg.norm(a) / np.linalg.norm(b))

        return (minilm_dir, {"text": text}, lambda pipe: np.asarray(pipe(text, pooling="auto")),
                lambda a, b: cosine(a, b) >= 0.99,
                lambda view, answer: np.abs(np.asarray(view["vector"]) - answer).max() <= 1e-5)
    from task_factory import sparse_encoder_folder

    text = "Le chat dort sur le canapé."
    folder, _ = sparse_encoder_folder(task_factory, "bert", tmp_path)
    return (folder, {"text": text}, lambda pipe: pipe(text),
            lambda a, b: {x["token"] for x in a[:20]} == {x["token"] for x in b[:20]},
            lambda view, answer: [x[0] for x in view["entries"]] == [x["token"] for x in answer[:20]])


SIDE_TASKS = ["token-classification", "fill-mask", "question-answering", "zero-shot-classification",
              "feature-extraction", "sparse-embedding"]


@pytest.mark.parametrize("task", SIDE_TASKS)
def test_exact_and_int8_side_by_side_are_each_pipelines_answer(task, task_factory, nli_dir, minilm_dir,
                                                                 camembert_spm, tmp_path):
    """Every task's studio sets the exact and the int8 answers side by side (on by default, as for
    text-classification), each the answer of a pipeline of those weights loaded on its own, whichever weights
    the views detail; it says they agree exactly when the task's own terms do (the same entities, best
    token, answer span, ranking or 20 heaviest entries; an embedding's cosine at int8's gate, 0.99)."""
    folder, query, answer, same, shows = side_case(task, task_factory, nli_dir, minilm_dir, camembert_spm,
                                                   tmp_path)
    exact = answer(pipeline(task, model=folder))
    int8 = answer(pipeline(task, model=folder, quantize="int8"))
    with studio_client(task, folder) as client:
        for quantize in ("none", "int8"):
            got = ask(client, quantize=quantize, **query).json()
            assert list(got["answers"]) == ["fp32", "int8"], got["answers"]
            assert shows(got["answers"]["fp32"]["view"], exact) and shows(got["answers"]["int8"]["view"], int8)
            assert got["answers"]["fp32" if quantize == "none" else "int8"]["answer"] == got["answer"]
            assert got["agreement"]["same"] == same(exact, int8), got["agreement"]
        page = parse(ask(client, "/", **query).text)
    (section,) = page.find("section", "compare")
    sides = [el[1]["data-weights"] for el in page.find("div", "side")]
    assert sides == ["fp32", "int8"]
    assert [el[2] for el in page.find("p", "side-answer")] == [got["answers"][w]["answer"] for w in sides]
    (verdict,) = page.find("p", "agreement")
    assert verdict[1]["data-same"] == ("true" if got["agreement"]["same"] else "false")
    assert verdict[2].endswith(got["agreement"]["words"])


def test_the_command_explores_the_task_it_is_given(task_factory, monkeypatch):
    import coulisse.interfaces.studio.app as app

    started = []
    monkeypatch.setattr(app, "run", lambda studio, host, port, allow_remote: started.append(studio))
    folder = task_factory.checkpoint("camembert", "masked-lm")
    result = CliRunner().invoke(cli, ["studio", "--task", "fill-mask", "-m", str(folder), "--port", "0"])
    assert result.exit_code == 0, result.output
    (studio,) = started
    assert studio.task == "fill-mask" and studio.pipeline("int8").preparation.quantize


@pytest.mark.slow
def test_chromium_shows_a_question_answering_studio(tmp_path, camembert_spm):
    """The real command, `--task question-answering`, in a browser with every other host unreachable: no console
    error, nothing fetched but the studio's page, the pipeline's answer marked in the context."""
    import re
    import signal
    import subprocess
    import sys

    from test_studio import browse, only_the_studio

    qa = tmp_path / "qa"
    shutil.copytree(QA_FIXTURES / "camembert", qa)
    shutil.copy(camembert_spm, qa / "sentencepiece.bpe.model")
    process = subprocess.Popen([sys.executable, "-m", "coulisse", "studio", "--task", "question-answering", "-m",
                                str(qa), "--port", "0", "--threads", "1"], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        found = re.search(r"http://127\.0\.0\.1:\d+/", process.stdout.readline())
        assert found, process.stderr.read()
        base = found.group(0)
        dom, console, requests = browse(tmp_path, base + "?" + urlencode({"text": CONTEXT, "question": QUESTION}),
                                        "--dump-dom")
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    assert console == [] and only_the_studio(requests, base), (console, requests)
    expected = pipeline("question-answering", model=qa)(question=QUESTION, context=CONTEXT)
    (mark,) = parse(dom).find("mark", "answer-span")
    assert mark[2] == CONTEXT[expected["start"]:expected["end"]]
    (canvas,) = parse(dom).find("canvas", "heatmap")
    assert int(canvas[1]["width"]) > 96  # drawn by the page's script


def test_an_embedding_studio_says_the_folders_limit(minilm_dir):
    """all-MiniLM-L6-v2 reads 256 tokens (its max_seq_length), not its tokenizer's 512: the studio's length
    and token table say so, for a text of ~1,000 tokens."""
    from sentence_transformers import SentenceTransformer

    text = "Le chat dort. " * 200
    with studio_client("feature-extraction", minilm_dir) as client:
        got = ask(client, text=text, compare="0").json()
    theirs = SentenceTransformer(str(minilm_dir), device="cpu")
    assert got["length"]["limit"] == 256
    assert got["length"]["tokens"] == len(theirs.tokenizer(text)["input_ids"])
    kept = [t["id"] for t in got["tokens"] if not t["truncated"]]
    assert kept == theirs.tokenize([text])["input_ids"][0].tolist()
    assert got["length"]["truncated_at"] == got["tokens"][len(kept)]["start"]


@pytest.mark.parametrize("task", ["text-classification", "fill-mask", "question-answering",
                                  "zero-shot-classification"])
def test_explain_json_is_the_studios_api_document(task, task_factory, nli_dir, tf_camembert_dir, camembert_spm,
                                                  tmp_path):
    """`coulisse explain --json` prints, as one JSON document, what the studio's /api/explain answers for the
    same text, task and options (compare=0: the exact weights)."""
    if task == "question-answering":
        folder = tmp_path / "qa"
        shutil.copytree(QA_FIXTURES / "camembert", folder)
        shutil.copy(camembert_spm, folder / "sentencepiece.bpe.model")
        query, flags = {"text": CONTEXT, "question": QUESTION}, ["--question", QUESTION, CONTEXT]
    elif task == "zero-shot-classification":
        folder, labels = nli_dir, "sport,cinéma,politique"
        query = {"text": "Le PSG a gagné hier soir.", "labels": labels, "method": "occlusion"}
        flags = ["--labels", labels, "--method", "occlusion", query["text"]]
    elif task == "fill-mask":
        folder = task_factory.checkpoint("camembert", "masked-lm")
        query, flags = {"text": "Le film est <mask>."}, ["Le film est <mask>."]
    else:  # --target is the studio's target= (it was refused: "it has no --target", audit 42)
        folder, query = tf_camembert_dir, {"text": "Un film excellent, mais trop long.", "target": "NEGATIVE"}
        flags = ["--target", "NEGATIVE", "Un film excellent, mais trop long."]
    result = CliRunner().invoke(cli, ["explain", "--json", "--task", task, "-m", str(folder), *flags])
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)  # one document: json.loads refuses anything after it
    with studio_client(task, folder) as client:
        served = ask(client, **query, compare="0")
    assert served.status_code == 200, served.text
    assert printed == served.json()
    if "target" in query:  # the label the words are scored towards, not the answer (POSITIVE here)
        assert printed["attribution"]["label"] == query["target"] != printed["answer"].split()[0]


def test_explain_json_refuses_what_the_document_has_no_room_for(tf_camembert_dir):
    base = ["explain", "--json", "-m", str(tf_camembert_dir)]
    for extra, words in ((["--html", "x.html"], "--html writes a page"), (["--steps", "4"], "has no --steps"),
                         (["autre texte"], "one TEXT")):
        result = CliRunner().invoke(cli, [*base, "Un film.", *extra])
        assert result.exit_code == 2 and words in result.output, result.output
    result = CliRunner().invoke(cli, [*base, "--task", "fill-mask", "Pas de masque."])
    assert result.exit_code == 1 and result.stdout == "" and len(result.stderr.strip().splitlines()) == 1


def test_explain_json_with_attributions_prints_the_same_document(tf_camembert_dir):
    """The document has an `attribution` (the help pipes `jq .attribution.tokens`): -a asks for what --json
    already prints, so it is no error (it was refused: "the studio's document, which has no --attributions")."""
    base = ["explain", "--json", "-m", str(tf_camembert_dir), "Un film excellent."]
    plain, with_a = CliRunner().invoke(cli, base), CliRunner().invoke(cli, [*base, "-a"])
    assert plain.exit_code == 0 and with_a.exit_code == 0, with_a.output
    document = json.loads(with_a.stdout)
    assert document == json.loads(plain.stdout)
    assert document["attribution"]["tokens"][1:3] == ["▁Un", "▁film"] and len(document["attribution"]["scores"]) > 2

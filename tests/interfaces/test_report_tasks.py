"""`coulisse explain --html` for every task of `coulisse explain`, not only text-classification: each page's
task view against an oracle that does not go through the report (transformers' models and pipelines, the
question-answering fixtures transformers 4 answered, the pipeline's own call), the token table against the
tokenizer's encoding of what the model reads, and the pages in headless Chromium (tests/interfaces/test_report.py
holds the text-classification page and the browser helpers).
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from test_report import chromium, parse

from coulisse import pipeline
from coulisse.interfaces.cli import cli
from coulisse.interfaces.explain import STAGES
from coulisse.interfaces.formatting import one_line
from coulisse.interfaces.inspection import write_report
from coulisse.interfaces.report_heads import HEADS

QA_FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "qa"
SENTENCE = "Jean-Baptiste vit à Montréal et travaille à Paris depuis 2019."


def heading_of(html: str) -> str:
    (h2,) = parse(html).find("h2")
    return h2[2]


def table_rows(html: str, css: str) -> list[list[str]]:
    """The cells' text of each body row of the table of class `css`."""
    table = re.search(rf'<table class="{css}">.*?<tbody>(.*?)</tbody>', html, re.S).group(1)
    return [[re.sub(r"<[^>]+>", "", cell) for cell in re.findall(r"<td[^>]*>(.*?)</td>", row)]
            for row in re.findall(r"<tr[^>]*>(.*?)</tr>", table)]


def bar_names(html: str, css: str) -> list[list[str]]:
    """Each bar chart of class `css`: its bars' names, in order."""
    return [re.findall(r'<text x="[0-9.]+" y="[0-9.]+" text-anchor="end">(.*?)</text>', chart)
            for chart in re.findall(rf'<svg class="{css}".*?</svg>', html, re.S)]


def unescape(text: str) -> str:
    import html

    return html.unescape(text)


def assert_common_views(x, pipe, ids: list[int]) -> None:
    """The token table is the model's input, and attention and norms come from a forward over it."""
    assert [t.id for t in x.seen] == ids
    assert [t.piece for t in x.seen] == pipe.tokenizer.convert_ids_to_tokens(ids)
    layers, heads = pipe.config.num_hidden_layers, pipe.config.num_attention_heads
    assert x.attentions.shape == (layers, heads, len(ids), len(ids))
    assert np.allclose(x.attentions.sum(-1), 1, atol=1e-5)
    assert len(x.layer_norms) == layers + 1


def assert_page(path: Path, x, pipe) -> str:
    html = path.read_text(encoding="utf-8")
    assert heading_of(html) == f"Text 1: “{one_line(x.text, 60, '…')}” → {x.head.headline}"
    title, _ = HEADS[type(x.head)]
    assert f"<h3>{title}</h3>" in html and f"task {pipe.task}" in html
    return html


# -- token-classification -----------------------------------------------------------------------------------


@pytest.mark.parametrize("arch", ["camembert", "bert"])
def test_token_classification_page_marks_the_pipelines_entities(task_factory, tmp_path, arch):
    folder = task_factory.checkpoint(arch, "token-classification")
    pipe = pipeline("token-classification", model=folder)
    (x,) = write_report(pipe, [SENTENCE], tmp_path / "ner.html")
    html = assert_page(tmp_path / "ner.html", x, pipe)
    hf_tok = task_factory.factory.hf_tokenizer(arch)
    inputs = hf_tok(SENTENCE, return_tensors="pt")
    assert_common_views(x, pipe, inputs["input_ids"][0].tolist())
    # Each token's label: the argmax of transformers' own model on the same input.
    reference = task_factory.model(arch, "token-classification")
    if arch == "distilbert":
        inputs.pop("token_type_ids", None)
    with torch.no_grad():
        logits = reference(**inputs).logits[0]
    probabilities = logits.softmax(-1)
    expected = [reference.config.id2label[int(i)] for i in probabilities.argmax(-1)]
    assert [label for label, _ in x.head.labels] == expected
    assert [score for _, score in x.head.labels] == pytest.approx(probabilities.max(-1).values.tolist(), abs=1e-4)
    # The highlighted spans are transformers' entities (aggregation "simple"), at their offsets in the text.
    oracle = task_factory.hf_pipeline("token-classification", folder)(SENTENCE, aggregation_strategy="simple")
    marks = parse(html).find("mark", "entity")
    assert oracle and len(marks) == len(oracle)
    for mark, entity in zip(marks, oracle, strict=True):
        assert mark[2] == SENTENCE[entity["start"]:entity["end"]] + entity["entity_group"]  # the word, then <sup>
        assert mark[1]["title"] == f"{entity['entity_group']} {entity['score']:.4f}"
    assert [row[0] for row in table_rows(html, "entities")] == [entity["entity_group"] for entity in oracle]


# -- fill-mask -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("arch", ["camembert", "bert"])
def test_fill_mask_page_shows_transformers_proposals(task_factory, tmp_path, arch):
    folder = task_factory.checkpoint(arch, "masked-lm")
    pipe = pipeline("fill-mask", model=folder)
    mask = pipe.tokenizer.mask_token
    texts = [f"Le film est {mask}.", f"Le {mask} est {mask} ce soir."]
    inspections = write_report(pipe, texts, tmp_path / "mask.html")
    html = (tmp_path / "mask.html").read_text(encoding="utf-8")
    oracle = task_factory.hf_pipeline("fill-mask", folder)
    charts = iter(bar_names(html, "scores"))
    for x, text in zip(inspections, texts, strict=True):
        expected = oracle(text, top_k=5)
        expected = [expected] if isinstance(expected[0], dict) else expected
        assert len(x.head.masks) == text.count(mask)
        for ours, theirs in zip(x.head.masks, expected, strict=True):
            assert [p["token"] for p in ours] == [p["token"] for p in theirs]
            assert [p["score"] for p in ours] == pytest.approx([p["score"] for p in theirs], abs=1e-5)
            assert [unescape(n) for n in next(charts)] == [p["token_str"] for p in ours]
        assert_common_views(x, pipe, task_factory.factory.hf_tokenizer(arch)(text)["input_ids"])
    assert [h[2].split(" → ", 1)[1] for h in parse(html).find("h2")] == [x.head.headline for x in inspections]
    # two texts: a summary table, whose answers are the headings' and which has no attribution column
    assert [row[2] for row in table_rows(html, "summary")] == [unescape(x.head.headline) for x in inspections]
    assert "top words" not in html


def test_fill_mask_without_a_mask_is_one_line(task_factory, tmp_path):
    folder = task_factory.checkpoint("camembert", "masked-lm")
    result = CliRunner().invoke(cli, ["explain", "--task", "fill-mask", "-m", str(folder), "--html",
                                      str(tmp_path / "m.html"), "Pas de masque ici."])
    assert result.exit_code == 1 and "has no mask token" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and not (tmp_path / "m.html").exists()


# -- question-answering --------------------------------------------------------------------------------------


def copy_qa(family: str, root: Path, camembert_spm: Path, minilm_dir: Path) -> tuple[Path, dict]:
    """A committed QA checkpoint with the vocabulary file the tests' packages ship; its cases by name."""
    d = root / family
    shutil.copytree(QA_FIXTURES / family, d)
    shutil.copy(camembert_spm if family == "camembert" else minilm_dir / "vocab.txt",
                d / ("sentencepiece.bpe.model" if family == "camembert" else "vocab.txt"))
    return d, {c["name"]: c for c in json.loads((d / "expected.json").read_text(encoding="utf-8"))["cases"]}


@pytest.fixture(scope="module", params=["camembert", "bert"])
def qa_folder(request, tmp_path_factory, camembert_spm, minilm_dir):
    return copy_qa(request.param, tmp_path_factory.mktemp("qa-report"), camembert_spm, minilm_dir)


@pytest.mark.parametrize("case", ["keywords", "long"])
def test_question_answering_page_highlights_transformers_answer(qa_folder, tmp_path, case):
    """The answer is the pipeline's, the span marked in the context: for "keywords", the answer transformers 4's
    pipeline gave (the committed fixtures). "long" is read in windows, and the views show the first as the
    pipeline encodes it; its fixture asked for top_k=3, whose first answer need not be top_k=1's (transformers
    sums the scores of candidates that widen to the same words, among 2·top_k + 10 per window), so that case
    is checked against the pipeline's own call."""
    folder, cases = qa_folder
    question, context = cases[case]["kwargs"]["question"], cases[case]["kwargs"]["context"]
    pipe = pipeline("question-answering", model=folder)
    expected = cases[case]["expected"] if case == "keywords" else pipe(question=question, context=context)
    (x,) = write_report(pipe, [context], tmp_path / "qa.html", question=question)
    html = assert_page(tmp_path / "qa.html", x, pipe)
    assert x.head.answer["answer"] == expected["answer"]
    assert x.head.answer["score"] == pytest.approx(expected["score"], rel=1e-3)
    (mark,) = parse(html).find("mark", "answer-span")
    assert mark[2] == context[expected["start"]:expected["end"]]
    first = pipe.tokenizer.encode_batch([question], [context], strategy="only_second", max_length=384,
                                        stride=128)[0]
    assert_common_views(x, pipe, first.ids)
    assert x.sequences == (question, context) and x.text_sequence == 1
    seq = [t.sequence for t in x.seen]
    assert seq == list(first.sequence_ids)
    # every row's text is the characters of its own text (question or context)
    for t, row in zip(x.seen, table_rows(html, "tokens"), strict=True):
        assert unescape(row[-1]) == ("" if t.special else x.sequences[t.sequence][t.start:t.end])
        assert row[3] == ("—" if t.sequence is None else "AB"[t.sequence])
    windows = len(x.head.windows)
    assert (windows > 1) == (case == "long")
    assert (f"reads it in {windows} windows" in html) == (windows > 1)
    for w in x.head.windows:  # probabilities over the tokens allowed to bound an answer, best first
        for top in (w.starts, w.ends):
            assert [p for _, p in top] == sorted((p for _, p in top), reverse=True) and 0 < top[0][1] <= 1


# -- zero-shot-classification -------------------------------------------------------------------------------


def test_zero_shot_page_ranks_the_labels_and_scores_the_words(nli_dir, tmp_path):
    import transformers

    text, labels, template = "Le PSG a battu l'OM trois buts à zéro hier soir.", "sport,politique,cinéma", \
        "Ce texte parle de {}."
    pipe = pipeline("zero-shot-classification", model=nli_dir)
    (x,) = write_report(pipe, [text], tmp_path / "zs.html", labels=labels, template=template, target="cinéma",
                        method="occlusion")
    html = assert_page(tmp_path / "zs.html", x, pipe)
    oracle = transformers.pipeline("zero-shot-classification", model=str(nli_dir), device="cpu")(
        text, candidate_labels=labels.split(","), hypothesis_template=template)
    assert x.head.answer["labels"] == oracle["labels"]
    assert x.head.answer["scores"] == pytest.approx(oracle["scores"], abs=1e-5)
    assert bar_names(html, "scores") == [oracle["labels"]]
    # The views show the pair of the label explained: text A, then that label's hypothesis.
    assert x.attribution.label == "cinéma" and x.sequences == (text, "Ce texte parle de cinéma.")
    hf = transformers.AutoTokenizer.from_pretrained(nli_dir)
    assert_common_views(x, pipe, hf(text, "Ce texte parle de cinéma.")["input_ids"])
    words = parse(html).find("span", "word")
    assert [w[2] for w in words] == [w.text for w in x.attribution.words]
    assert all(text[w.start:w.end] == w.text for w in x.attribution.words)  # words of the text, not the hypothesis
    rows = table_rows(html, "hypotheses")
    assert [r[1] for r in rows] == [template.format(label) for label in labels.split(",")]
    # the hypothesis's tokens are held, never scored: their attribution cell is blank, not +0.0000 (audit 38, 11)
    tokens = table_rows(html, "tokens")
    hypothesis = [r for r in tokens if r[3] == "B"]
    assert hypothesis and all(r[-1] == "" for r in hypothesis)
    assert all(r[-1] for r in tokens if r[3] in ("A", "—"))  # the text's tokens and the special ones are scored
    assert "F = the entailment logit of the pair (text, Ce texte parle de cinéma.), before softmax" in unescape(
        re.sub(r"<[^>]+>", "", html)), "the page does not say what F is"


# -- feature-extraction and sparse-embedding ------------------------------------------------------------------


def test_feature_extraction_page_shows_the_sentence_embedding(minilm_dir, tmp_path):
    """all-MiniLM-L6-v2's folder: sentence-transformers' own encoder gives the embedding the page shows."""
    from sentence_transformers import SentenceTransformer

    pipe = pipeline("feature-extraction", model=minilm_dir)
    (x,) = write_report(pipe, [SENTENCE], tmp_path / "emb.html")
    html = assert_page(tmp_path / "emb.html", x, pipe)
    expected = SentenceTransformer(str(minilm_dir), device="cpu").encode(SENTENCE)
    assert np.abs(np.asarray(x.head.vector) - expected).max() < 1e-5
    assert "mean of the token vectors, divided by its L2 norm" in x.head.how
    assert f"norm {np.linalg.norm(expected):.4f}" in x.head.headline
    assert bar_names(html, "components") == [[f"[{i}]" for i in range(16)]]
    assert_common_views(x, pipe, pipe.tokenizer.encode_batch([SENTENCE])[0].ids)


def test_sparse_embedding_page_names_each_heavy_entry_and_its_token(task_factory, tmp_path):
    import transformers
    from task_factory import sparse_encoder_folder

    folder, _ = sparse_encoder_folder(task_factory, "bert", tmp_path)
    text = "Le chat dort sur le canapé."
    pipe = pipeline("sparse-embedding", model=folder)
    (x,) = write_report(pipe, [text], tmp_path / "splade.html")
    html = assert_page(tmp_path / "splade.html", x, pipe)
    entries = pipe(text)
    assert x.head.active == len(entries) and len(x.head.entries) == 20
    reference = transformers.AutoModelForMaskedLM.from_pretrained(folder).eval()
    encoded = transformers.AutoTokenizer.from_pretrained(folder)(text, return_tensors="pt")
    with torch.no_grad():
        logits = reference(**encoded).logits[0]
    ids = encoded["input_ids"][0].tolist()
    rows = table_rows(html, "entries")
    for (token, weight, present, at), entry, row in zip(x.head.entries, entries, rows, strict=False):
        assert token == entry["token"] and weight == pytest.approx(entry["value"], abs=1e-6)
        assert present == (entry["index"] in ids) and at == int(logits[:, entry["index"]].argmax())
        assert row[2] == ("yes" if present else "no: an expansion")
    assert_common_views(x, pipe, ids)


# -- the command line and the browser -------------------------------------------------------------------------


def test_every_explain_task_has_a_page_view():
    from coulisse.interfaces.head_views import HEAD_VIEWS

    assert set(HEAD_VIEWS) == set(STAGES)


def test_cli_writes_a_page_for_a_task_without_labels(task_factory, tmp_path):
    folder = task_factory.checkpoint("camembert", "token-classification")
    page = tmp_path / "ner.html"
    result = CliRunner().invoke(cli, ["explain", "--task", "token-classification", "-m", str(folder), "--html",
                                      str(page), SENTENCE])
    assert result.exit_code == 0, result.output
    (x,) = write_report(pipeline("token-classification", model=folder), [SENTENCE], tmp_path / "again.html")
    assert result.stdout == f"{x.head.headline}  {one_line(SENTENCE)}\n"
    assert page.read_text(encoding="utf-8") == (tmp_path / "again.html").read_text(encoding="utf-8")


def test_word_scoring_options_are_refused_where_the_task_has_no_words_to_score(tmp_path):
    missing, runner = str(tmp_path / "no-model"), CliRunner()
    page = str(tmp_path / "p.html")
    for args, words in ((["--method", "occlusion"], ("--method chooses", "fill-mask has no word scores")),
                        (["--steps", "8"], ("--steps chooses",)),
                        (["--target", "x"], ("--target chooses",))):
        result = runner.invoke(cli, ["explain", "--task", "fill-mask", "-m", missing, "--html", page, *args, "x"])
        assert result.exit_code == 1, result.output
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("Error: InputError: ")
        assert all(w in lines[0] for w in words), lines[0]


@pytest.mark.slow
def test_chromium_renders_every_tasks_page_offline(task_factory, tmp_path, camembert_spm, minilm_dir):
    """Each task's page, in a browser with the network off: no console error, nothing requested, the attention
    canvas drawn by the page's script."""
    folder, cases = copy_qa("camembert", tmp_path, camembert_spm, minilm_dir)
    case = cases["keywords"]["kwargs"]
    mask = "<mask>"
    pages = {
        "token-classification": ([SENTENCE], {}),
        "fill-mask": ([f"Le film est {mask}."], {}),
        "question-answering": ([case["context"]], {"question": case["question"]}),
        "feature-extraction": ([SENTENCE], {}),
    }
    heads = {"token-classification": "token-classification", "fill-mask": "masked-lm", "feature-extraction": "base"}
    for task, (texts, options) in pages.items():
        model = folder if task == "question-answering" else task_factory.checkpoint("camembert", heads[task])
        pipe = pipeline(task, model=model)
        path = tmp_path / f"{task}.html"
        write_report(pipe, texts, path, **options)
        (tmp_path / task).mkdir()
        dom, console, requests = chromium(tmp_path / task, path, "--dump-dom")
        assert console == [] and requests == [], task
        (canvas,) = parse(dom).find("canvas", "heatmap")
        assert int(canvas[1]["width"]) > 96, task


def test_hostile_text_question_and_labels_are_shown_not_run(task_factory, nli_dir, tmp_path, camembert_spm,
                                                          minilm_dir):
    """Markup in a text, a question or a candidate label reaches every task's page as text: the page keeps its
    one script, and the markup is there escaped."""
    hostile = '<script>alert("x")</script> Jean <b>vit</b> à Paris & « Lyon » </p>'
    folder, cases = copy_qa("bert", tmp_path, camembert_spm, minilm_dir)
    pages = [
        ("token-classification", task_factory.checkpoint("bert", "token-classification"), hostile, {}),
        ("fill-mask", task_factory.checkpoint("bert", "masked-lm"), hostile + " [MASK].", {}),
        ("question-answering", folder, hostile, {"question": hostile}),
        ("zero-shot-classification", nli_dir, hostile, {"labels": "<i>sport</i>,cinéma", "template": "<b>{}</b>"}),
    ]
    for task, model, text, options in pages:
        path = tmp_path / f"{task}.html"
        write_report(pipeline(task, model=model), [text], path, **options)
        html = path.read_text(encoding="utf-8")
        assert html.count("<script>") == 1 and "<b>" not in html and "<i>" not in html, task
        assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in html, task


def test_a_long_text_gets_its_entities_from_windows_and_says_so(task_factory, tmp_path):
    """Past the model's limit, the token views show what truncation keeps (the rest greyed), and the entities
    come from windows over the whole text, as `coulisse ner` reads it (a quarter of a window shared)."""
    folder = task_factory.checkpoint("bert", "token-classification", model_max_length=32)
    pipe = pipeline("token-classification", model=folder)
    text = " ".join([SENTENCE] * 6)
    (x,) = write_report(pipe, [text], tmp_path / "long.html")
    assert x.truncated_at is not None and any(t.truncated for t in x.tokens) and len(x.seen) == 32
    assert x.head.entities == pipe(text, aggregation_strategy="simple", stride=8)
    assert any(entity["start"] >= x.truncated_at for entity in x.head.entities)  # found past the cut
    assert any("windows sharing 8 tokens" in note for note in x.notes)
    assert len(x.head.labels) == len(x.seen)  # a label for each token the model saw


# -- two answers to one input, in the task's terms (the studio's exact against int8) -------------------------


def entity(group: str, word: str, start: int, score: float) -> dict:
    return {"entity_group": group, "word": word, "start": start, "end": start + len(word), "score": score}


def proposals(*tokens_scores) -> list[dict]:
    return [{"token": t, "token_str": f"w{t}", "score": s} for t, s in tokens_scores]


def test_views_say_when_two_answers_are_the_same_in_the_tasks_terms():
    """Each task's `against`: the same answer where the task's answer is the same (entities by label and
    characters, the best token of each mask, the answer span, the ranking, the heaviest entries as a set, an
    embedding's cosine at int8's gate), not where a score merely moved; and each difference named."""
    from coulisse.interfaces.head_views import Answered, Expanded, Filled, Pooled, Ranked, Tagged

    marie, paris = entity("PER", "Marie", 0, 0.9), entity("LOC", "Paris", 12, 0.8)
    moved = {**marie, "score": 0.7}
    assert Tagged([], [marie, paris]).against(Tagged([], [moved, paris])).same
    assert "largest |Δ score| 2.00e-01" in Tagged([], [marie, paris]).against(Tagged([], [moved, paris])).words
    other = Tagged([], [marie]).against(Tagged([], [entity("PER", "Marie H", 0, 0.9)]))
    assert not other.same and "only in the first: PER «Marie»; only in the second: PER «Marie H»" in other.words
    assert Tagged([], []).against(Tagged([], [])).words == "No entity in either."

    first = Filled([proposals((5, 0.6), (7, 0.3))], 100)
    assert first.against(Filled([proposals((5, 0.5), (8, 0.2))], 100)).same
    swapped = first.against(Filled([proposals((7, 0.5), (5, 0.4))], 100))
    assert not swapped.same and "mask 1: «w5» against «w7»" in swapped.words and "share 2 of 2" in swapped.words

    def answered(answer):
        return Answered("Qui ?", "Marie vit à Paris.", [], answer)

    span = {"answer": "Marie", "start": 0, "end": 5, "score": 0.8}
    assert answered(span).against(answered({**span, "score": 0.5})).same
    assert not answered(span).against(answered({**span, "end": 9, "answer": "Marie vit"})).same
    assert "«Marie» (0–5) against no answer" in answered(span).against(answered(None)).words

    def ranked(labels, scores):
        return Ranked(labels, [], [], 0, 2, {}, "", scores, {"labels": labels, "scores": scores})

    assert ranked(["a", "b"], [0.6, 0.4]).against(ranked(["a", "b"], [0.55, 0.45])).same
    assert "a > b against b > a" in ranked(["a", "b"], [0.6, 0.4]).against(ranked(["b", "a"], [0.4, 0.6])).words

    x = np.array([1.0, 2.0, 3.0])
    near = Pooled("", x.tolist()).against(Pooled("", (x + [0.0, 0.0, 0.3]).tolist()))
    cosine = float(x @ (x + [0, 0, 0.3]) / np.linalg.norm(x) / np.linalg.norm(x + [0, 0, 0.3]))
    assert near.same and f"Cosine {cosine:.6f}" in near.words
    assert not Pooled("", x.tolist()).against(Pooled("", [3.0, 2.0, 1.0])).same  # cosine 10/14 ≈ 0.71

    def expanded(*entries):
        return Expanded("", "max", 100, len(entries), [(t, w, True, None) for t, w in entries])

    assert expanded(("chat", 2.0), ("dort", 1.0)).against(expanded(("dort", 1.1), ("chat", 1.2))).same
    differ = expanded(("chat", 2.0), ("dort", 1.0)).against(expanded(("chat", 2.0), ("lit", 1.0)))
    assert not differ.same and differ.words.startswith("The 2 heaviest entries share 1 tokens")


@pytest.mark.parametrize("prompted", [False, True])
def test_a_pooled_embedding_is_explained_as_the_folder_reads_it(prompted, minilm_dir, tmp_path):
    """A sentence-transformers folder cuts at its max_seq_length (256 for all-MiniLM-L6-v2, whose tokenizer
    allows 512) and puts its default prompt first: the token table, the attention and the terminal's stages
    show the tokens sentence-transformers feeds its model, not the tokenizer's 512, and the embedding is
    sentence-transformers' own."""
    from sentence_transformers import SentenceTransformer
    from test_sentence import PROMPTS, model_copy

    folder = minilm_dir
    if prompted:
        folder = model_copy(minilm_dir, tmp_path / "prompted", {"prompts": PROMPTS, "default_prompt_name": "passage"})
    text = "Le chat dort sur le canapé, au soleil. " * 40  # ~500 tokens
    pipe = pipeline("feature-extraction", model=folder)
    theirs = SentenceTransformer(str(folder), device="cpu")
    read = (PROMPTS["passage"] if prompted else "") + text
    (x,) = write_report(pipe, [text], tmp_path / "long.html")
    seen = [r for r in x.tokens if not r.truncated]
    assert [r.id for r in seen] == theirs.tokenize([read])["input_ids"][0].tolist()
    assert len(seen) == 256 and x.attentions.shape[-1] == 256 and x.text == read
    assert all(x.chars(r) == read[r.start:r.end] for r in seen)
    assert np.abs(np.asarray(x.head.vector) - theirs.encode(text)).max() < 1e-5
    assert "The folder's max_seq_length cuts the input at 256 tokens (the tokenizer's limit is 512)." in x.notes
    assert any(PROMPTS["passage"] in n for n in x.notes) == prompted
    result = CliRunner().invoke(cli, ["explain", "--task", "feature-extraction", "-m", str(folder), text])
    assert result.exit_code == 0, result.output
    out = " ".join(result.output.split())
    assert "truncation at 256 tokens" in out and "sequence=256," in out and "mean of the 256 token vectors" in out

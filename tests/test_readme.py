"""The README's "three stages" and drop-in snippets run as written, against a tiny checkpoint laid out like the
model it names (tests/fixtures/tf_camembert: tblard/tf-allocine's files, the real CamemBERT tokenizer)."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def section_code(title: str) -> str:
    """The ```python blocks of one `## title` section, joined: later blocks use earlier names."""
    text = README.read_text(encoding="utf-8")
    section = text.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]
    return "\n".join(re.findall(r"```python\n(.*?)```", section, re.S))


def test_the_three_stages_snippet_runs(tf_camembert_dir):
    code = section_code("The three stages")
    assert code, "the README has no Python block under '## The three stages'"
    # The first block names no model (the default, tblard/tf-allocine, or the bundled one offline): the fixture
    # stands in for it, as for the named one of coulisse.report's page.
    code, default = re.subn(r'pipeline\("sentiment-analysis"\)',
                            f'pipeline("sentiment-analysis", model={str(tf_camembert_dir)!r})', code)
    code, replaced = re.subn(r'model="[^"]+"', f"model={str(tf_camembert_dir)!r}", code)
    assert (default, replaced) == (1, 1), code
    namespace: dict = {}
    exec(compile(code, str(README), "exec"), namespace)  # a NameError here: the snippet uses an undefined name
    # The ids the README shows are the real tokenizer's, which the fixture carries.
    shown = re.search(r'inputs\["input_ids"\]\[0\]\s+# tensor\(\[([\d, ]+)', code)
    assert shown, "the README no longer shows the first ids"
    ids = [int(i) for i in shown.group(1).split(",") if i.strip()]
    assert namespace["inputs"]["input_ids"][0][: len(ids)].tolist() == ids
    assert tuple(namespace["outputs"].logits.shape) == (2, 2)


def subsection_code(title: str) -> str:
    """The ```python blocks of one `### title` subsection."""
    text = README.read_text(encoding="utf-8")
    section = re.split(r"\n##+ ", text.split(f"\n### {title}\n", 1)[1], maxsplit=1)[0]
    return "\n".join(re.findall(r"```python\n(.*?)```", section, re.S))


def test_the_drop_in_snippet_runs_on_a_plain_install(tf_camembert_dir, tmp_path, monkeypatch, capsys):
    """The drop-in snippet needs nothing but coulisse (no transformers, no undefined `dataset`): it streams a
    file of reviews and prints each one's best label, in order, as the pipeline answers them one by one."""
    import builtins

    code = subsection_code("Drop-in for transformers")
    assert "import transformers" not in code and "from transformers" not in code.replace("# was: from", "")
    code, replaced = re.subn(r'model="[^"]+"', f"model={str(tf_camembert_dir)!r}", code)
    assert replaced == 1, code
    reviews = ["Un film magnifique.", "Quel navet !", "Bof."]
    (tmp_path / "reviews.txt").write_text("\n".join(reviews) + "\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    real_import = builtins.__import__

    def no_transformers(name, *args, **kwargs):
        if name.split(".")[0] in {"transformers", "datasets"}:
            raise ModuleNotFoundError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_transformers)
    namespace: dict = {}
    exec(compile(code, str(README), "exec"), namespace)
    monkeypatch.setattr(builtins, "__import__", real_import)
    printed = capsys.readouterr().out.splitlines()
    answers = [namespace["classifier"]([text])[0][0] for text in reviews]  # one by one: each its own batch
    assert [line.split()[0] for line in printed] == [a["label"] for a in answers]
    # One by one vs batched: the same up to float rounding (a GEMM may block rows differently, ~1e-7 on a logit).
    for line, answer in zip(printed, answers, strict=True):
        assert abs(float(line.split()[1]) - answer["score"]) <= 1e-6


def test_what_the_readme_says_the_bundled_model_answers_is_what_it_answers():
    """The three stages' comment names the bundled model's labels for the course's two sentences (a reader
    offline runs it): they are its answers."""
    import ast

    from coulisse import pipeline

    code = section_code("The three stages")
    said = re.search(r"\(the bundled model: ([A-Z]+), ([A-Z]+)\)", code)
    assert said, "the README no longer says what the bundled model answers"
    raw = re.search(r"raw_inputs = (\[.*?\])\n", code).group(1)
    answers = pipeline("sentiment-analysis", model="coulisse/mini-allocine")(ast.literal_eval(raw))  # the README's list
    assert [a["label"] for a in answers] == list(said.groups())


def test_the_baseline_the_readme_describes_is_the_one_computed():
    """"Which words pushed the answer": the transformers call the README gives (the pad ids, the text's own
    positions) reproduces coulisse's F(baseline) on the bundled CamemBERT; the plain call on the pad ids, which the
    old wording ("every word replaced by the pad token") described, does not (audit 38, finding 4)."""
    code = subsection_code("Which words pushed the answer")
    assert "create_position_ids_from_input_ids" in code, "the README no longer shows the call"
    namespace: dict = {"pipeline": __import__("coulisse").pipeline}
    exec(compile(code, str(README), "exec"), namespace)
    a, model, baseline = namespace["a"], namespace["model"], namespace["baseline"]
    assert abs(namespace["f_baseline"] - a.baseline_logits[a.target]) <= 1e-5
    naive = model(baseline).logits[0, a.target].item()  # transformers renumbers the tokens after each pad id
    assert abs(naive - a.baseline_logits[a.target]) > 1e-3
    text = README.read_text(encoding="utf-8")
    assert "each word's vector is replaced by the\npad token's" in text and "keeps its position" in text


def test_the_courses_auto_classes_snippet_runs(tf_camembert_dir):
    """The notebook's cells with coulisse's Auto classes, on the fixture laid out as tblard/tf-allocine (its real
    tokenizer, a tiny encoder): the shape the README shows (but the hidden size, 768 on the real model) and
    the label map."""
    code = subsection_code("The course's Auto classes")
    code, replaced = re.subn(r'checkpoint = "tblard/tf-allocine"', f"checkpoint = {str(tf_camembert_dir)!r}", code)
    assert replaced == 1, code
    namespace: dict = {}
    exec(compile(code, str(README), "exec"), namespace)
    shown = re.search(r"last_hidden_state\.shape\s+# torch\.Size\(\[(\d+), (\d+), 768\]\)", code)
    assert shown, "the README no longer shows the hidden states' shape"
    hidden = namespace["AutoModel"].from_pretrained(str(tf_camembert_dir))(**namespace["inputs"]).last_hidden_state
    assert list(hidden.shape[:2]) == [int(shown.group(1)), int(shown.group(2))]
    assert str(namespace["model"].config.id2label) in code
    assert namespace["predictions"].shape == (2, 2)

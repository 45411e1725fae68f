"""The public API as a type checker reads it: `from coulisse import pipeline` is a lazy attribute at run time,
and py.typed ships, so mypy (and pyright / Pylance) must see the real function and each task's class, not
`Any` or a bare module attribute (audit 39: pyright reported 17 false errors on the README's example)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("mypy")

# The heavy libraries' own sources are not what is checked here (and take minutes to analyse).
CONFIG = """
[mypy]
warn_unused_configs = False
[mypy-torch.*,numpy.*,transformers.*,tokenizers.*,safetensors.*,huggingface_hub.*,click.*,sentencepiece.*]
follow_imports = skip
"""

USER = """
import coulisse
from coulisse import SentenceEncoder, pipeline

classifier = pipeline("sentiment-analysis", model="coulisse/mini-allocine")
results = classifier(["Un film excellent.", "Quel navet !"])
explanation = classifier.explain("Un film excellent.")
reveal_type(classifier)
reveal_type(pipeline("ner", model="x", aggregation_strategy="simple"))
reveal_type(pipeline("fill-mask", model="x"))
reveal_type(pipeline("feature-extraction", model="x", device=-1))
reveal_type(SentenceEncoder)
reveal_type(coulisse.__version__)
reveal_type(explanation)
reveal_type(classifier.explain(["Un film excellent."]))
print(explanation.ids, explanation.special, explanation.baseline_id, explanation.baseline_logits[explanation.target])


def update(n: int) -> bool | None:  # tqdm's update, which docs/dropin.md passes as progress=
    return None


classifier(["Un film excellent."], progress=update)
tokenizer = classifier.tokenizer  # transformers' keyword names
print(tokenizer.decode(token_ids=[5, 6]), tokenizer.tokenize("Un film.", pair="Bon."))
tokenizer.save_pretrained(save_directory="out")
classifier.save_pretrained(save_directory="out")
"""


def mypy(tmp_path, source: str) -> subprocess.CompletedProcess:
    (tmp_path / "mypy.ini").write_text(CONFIG)
    (tmp_path / "user.py").write_text(textwrap.dedent(source))
    return subprocess.run([sys.executable, "-m", "mypy", "--config-file", "mypy.ini", "--no-incremental",
                           "--python-executable", sys.executable, "user.py"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=600)


def test_the_readme_example_type_checks_with_each_tasks_class(tmp_path):
    run = mypy(tmp_path, USER)
    assert run.returncode == 0, run.stdout + run.stderr
    revealed = [line.split('Revealed type is "')[1].rstrip('"') for line in run.stdout.splitlines()
                if "Revealed type is" in line]
    assert revealed[:4] == ["coulisse.tasks.text_classification.TextClassificationPipeline",
                            "coulisse.tasks.token_classification.TokenClassificationPipeline",
                            "coulisse.tasks.fill_mask.FillMaskPipeline",
                            "coulisse.tasks.feature_extraction.FeatureExtractionPipeline"], run.stdout
    assert revealed[4].startswith("def (") and "coulisse.sentence.SentenceEncoder" in revealed[4], revealed[4]
    assert revealed[5] in ("builtins.str", "str")  # (spelt either way by mypy versions)
    assert revealed[6] == "coulisse.tasks.attributions.Attribution", run.stdout
    assert revealed[7].removeprefix("builtins.") == "list[coulisse.tasks.attributions.Attribution]", run.stdout


def test_a_misspelt_method_is_an_error_not_any(tmp_path):
    run = mypy(tmp_path, """
        from coulisse import pipeline

        pipeline("sentiment-analysis").explian("Un film excellent.")
    """)
    assert run.returncode == 1 and '"TextClassificationPipeline" has no attribute "explian"' in run.stdout, \
        run.stdout

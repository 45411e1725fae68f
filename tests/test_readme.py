"""The README's "three stages" snippet runs as written, against a tiny checkpoint laid out like the
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
    code, replaced = re.subn(r'model="[^"]+"', f"model={str(tf_camembert_dir)!r}", code)
    assert replaced == 2, code  # the three stages, then coulisse.report's page
    namespace: dict = {}
    exec(compile(code, str(README), "exec"), namespace)  # a NameError here: the snippet uses an undefined name
    # The ids the README shows are the real tokenizer's, which the fixture carries.
    shown = re.search(r'inputs\["input_ids"\]\[0\]\s+# tensor\(\[([\d, ]+)', code)
    assert shown, "the README no longer shows the first ids"
    ids = [int(i) for i in shown.group(1).split(",") if i.strip()]
    assert namespace["inputs"]["input_ids"][0][: len(ids)].tolist() == ids
    assert tuple(namespace["outputs"].logits.shape) == (2, 2)

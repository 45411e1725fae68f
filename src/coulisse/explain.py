"""`coulisse explain` from Python, for a notebook or a script: an interface named at the top, as `coulisse.ray`.

    from coulisse import pipeline
    from coulisse.explain import report, stages

    classifier = pipeline("sentiment-analysis", model="coulisse/mini-allocine")
    print(stages(classifier, "Un film excellent."))  # the terminal's stages: tokens, ids, logits, answer
    report(classifier, ["Un film excellent.", "Quel navet !"])  # the --html page, inline in a notebook
    report(classifier, "Quel navet !").save("report.html")

Both take every task of `coulisse explain --task` (`question=` for question-answering, `labels=` and `template=` for
zero-shot-classification, else those the pipeline was built with); `report` also takes `method=`, `steps=` and
`target=` where the task scores words (text-classification, zero-shot-classification). Both read each text as the
pipeline's call does, with the options the pipeline was built with (`truncation_side`, `max_length`,
`tokenize_kwargs`, a `prompt`, `max_seq_len`...): what they show is what `classifier(text)` computes (a
feature-extraction pipeline that pools none, whose call gives token vectors: the sentence embedding pooling='auto'
would give).
"""

from __future__ import annotations

from typing import Any

from coulisse.interfaces.explain import BATCH_TASKS, batch_lines, explain_text
from coulisse.interfaces.inspection import report
from coulisse.tokenizer.inputs import check_texts

__all__ = ["report", "stages"]

RULE = "=" * 72


def stages(pipe, texts: str | list[str], *, question: str | None = None, labels: Any = None,
           template: str | None = None) -> str:
    """The stages `coulisse explain` prints, as one string: for a text, or for each text of a list, one after
    the other and then (for the tasks that take texts alone) the course's padded batch of them all."""
    texts, single = check_texts(texts)
    out = [explain_text(pipe, text, question=question, labels=labels, template=template) for text in texts]
    if not single and len(texts) > 1 and pipe.task in BATCH_TASKS:
        out.append("\n".join(batch_lines(pipe, texts)).lstrip("\n"))
    return f"\n\n{RULE}\n".join(out)

"""`coulisse explain` from Python, for a notebook or a script: an interface named at the top, as `coulisse.ray`.

    from coulisse import pipeline
    from coulisse.explain import report, stages

    classifier = pipeline("sentiment-analysis", model="coulisse/mini-allocine")
    print(stages(classifier, "Un film excellent."))  # the terminal's stages: tokens, ids, logits, answer
    report(classifier, ["Un film excellent.", "Quel navet !"])  # the --html page, inline in a notebook
    report(classifier, "Quel navet !").save("report.html")

Both take every task of `coulisse explain --task` (`question=` for question-answering, `labels=` and
`template=` for zero-shot-classification); `report` also takes `method=`, `steps=` and `target=` where the
task scores words (text-classification, zero-shot-classification).
"""

from __future__ import annotations

from coulisse.interfaces.explain import explain_text as stages
from coulisse.interfaces.explain import report

__all__ = ["report", "stages"]

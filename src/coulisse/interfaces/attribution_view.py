"""`coulisse explain --attributions` in the terminal: which tasks score words, the options that choose how
(--method, --steps, --target: checked before any loading), and one text's attributions as lines, coloured
where the terminal shows colour. The HTML page colours the same words (`coulisse.interfaces.report`)."""

from __future__ import annotations

from typing import Any

from coulisse.errors import InputError
from coulisse.interfaces.explain import stage_title
from coulisse.interfaces.formatting import wrapped

ATTRIBUTION_METHODS = ("integrated_gradients", "occlusion")  # coulisse.tasks.attributions.METHODS, without torch
ATTRIBUTION_MAX_STEPS = 2**17  # coulisse.tasks.integrated_gradients.MAX_STEPS, without torch


ATTRIBUTION_TASKS = ("text-classification", "zero-shot-classification")


def check_attribution_request(task: str, method: str, steps: int | None, attributions: bool, html: bool = False,
                              target: str | None = None) -> None:
    """--attributions / --html and the options that score words (--method, --steps, --target), before any
    loading. --html writes a page for every task; it scores words where the task answers with a label."""
    if attributions and task not in ATTRIBUTION_TASKS:
        raise InputError(f"--attributions scores words for {' and '.join(ATTRIBUTION_TASKS)} models, not {task}; "
                         f"drop it: the stages show the {task} answer without it.")
    scoring = [name for name, given in (("--method", method != "integrated_gradients"), ("--steps", steps is not None),
                                        ("--target", target is not None)) if given]
    if not scoring:
        return
    verb = "chooses" if len(scoring) == 1 else "choose"
    if not (attributions or html):
        raise InputError(f"{' and '.join(scoring)} {verb} how --attributions, --html or --json score words; add "
                         "one of them.")
    if task not in ATTRIBUTION_TASKS:
        raise InputError(f"{' and '.join(scoring)} {verb} how words are scored, and {task} has no word scores "
                         f"(only {' and '.join(ATTRIBUTION_TASKS)}); drop {'it' if len(scoring) == 1 else 'them'}.")
    if method == "occlusion" and steps is not None:
        raise InputError(f"--steps {steps} is for --method integrated_gradients; occlusion runs one forward per "
                         "token. Drop --steps.")
    if steps is not None and steps > ATTRIBUTION_MAX_STEPS:
        raise InputError(f"--steps {steps} is above the maximum, {ATTRIBUTION_MAX_STEPS}; pass at most "
                         f"{ATTRIBUTION_MAX_STEPS} (the default, 32, is enough for smooth models, and kinks are "
                         "refined on their own).")


def cli_target(pipe, target: str | None, labels: Any = None) -> int | str | None:
    """--target: a label name, else a label id written as a number (zero-shot: a candidate label, or its
    index in --labels)."""
    if pipe.task == "zero-shot-classification":
        from coulisse.tasks.zero_shot import parse_labels

        names = parse_labels(labels)
    else:
        names = pipe.config.id2label.values()
    if target is None or target in names:
        return target
    return int(target) if target.isascii() and target.isdecimal() else target  # not '²' nor '٣'


def explain_options(pipe, labels: Any = None, template: str | None = None) -> dict[str, Any]:
    """What `pipe.explain` needs beyond the method: zero-shot's candidate labels and template."""
    if pipe.task != "zero-shot-classification":
        return {}
    return {"candidate_labels": labels, "hypothesis_template": template}


def use_color(stream) -> bool:
    """ANSI colours only on a terminal that shows them: never when NO_COLOR is set (https://no-color.org), nor on
    TERM=dumb (Emacs' shell, some CI logs)."""
    import os

    return (not os.environ.get("NO_COLOR") and os.environ.get("TERM") != "dumb" and hasattr(stream, "isatty")
            and stream.isatty())


def _ansi(word: str, value: float, scale: float) -> str:
    from coulisse.interfaces.html_parts import diverging_rgb

    r, g, b = (round(c / 255 * 5) for c in diverging_rgb(value, scale))  # the xterm 6x6x6 colour cube
    ink = 231 if scale and abs(value) > 0.55 * scale else 16
    return f"\x1b[48;5;{16 + 36 * r + 6 * g + b}m\x1b[38;5;{ink}m{word}\x1b[0m"


def attribution_lines(a, color: bool, k: int = 5) -> list[str]:
    """One text's attributions for the terminal: the words coloured (blue towards the label, red against),
    then the top words each way; without colour, the top words only. Numbered after the task's stages
    (zero-shot has one more: its hypotheses)."""
    scale = max((abs(w.attribution) for w in a.words), default=0.0)
    target, hypothesis = a.target, a.extra.get("hypothesis")
    what = (f"the {a.extra.get('nli_label', 'entailment')} logit of the pair (text, {hypothesis!r})"
            if hypothesis is not None else f"the logit of {a.label}")
    if a.extra.get("windows", 1) > 1:
        what += f", the mean over the {a.extra['windows']} windows the text is read in"
    # the positions stay: transformers on the pad ids would renumber the RoBERTa family's (README)
    values = (f"F = {what}. F(x) = {a.logits[target]:+.4f} for this text, F(baseline) = "
              f"{a.baseline_logits[target]:+.4f} for the baseline, the same text with each word's vector replaced "
              f"by the {a.baseline} token's, positions kept.")
    if a.method == "integrated_gradients":
        said = [f"{values} The words' scores add up to F(x) - F(baseline) = {a.delta:+.4f}: how much the words "
                f"move F from that empty text (negative: the empty text scores it higher).",
                f"method: Integrated Gradients, {a.steps} gradient evaluations; completeness gap (sum of the scores "
                f"minus that difference) {a.gap:+.2e}"]
    else:  # occlusion has no completeness: each score is one word's leave-one-out difference
        said = [f"{values} A token's score is F(x) minus F with that token's vector alone replaced by the "
                f"{a.baseline} token's, a word's the sum of its tokens'. They add up to {sum(a.scores):+.4f}, not "
                f"to F(x) - F(baseline) = {a.delta:+.4f}: words act together, and occlusion does not share that out.",
                "method: occlusion (each token replaced by the baseline token alone)"]
    out = [stage_title(6 if hypothesis is not None else 5, f"Attributions: which words pushed towards {a.label}"),
           *(wrapped(line) for line in said)]
    if color:
        text, at, parts = a.text, 0, []
        for w in a.words:
            parts += [text[at:w.start], _ansi(w.text, w.attribution, scale)]
            at = w.end
        parts.append(text[at:])
        out.append("".join(parts))
        out.append("(blue: towards, red: against)")
    for sign, name in ((1, "towards"), (-1, "against")):
        out.append(f"top words {name} {a.label}:")
        out += [f"  {w.attribution:+.4f}  {w.text}" for w in a.top_words(k, sign)] or ["  (none)"]
    return out

"""What `coulisse explain --html` shows of each text, gathered: an `Inspection` per text, and the page of them.

`inspect_text` runs one text through the pipeline's own (prepared) model and keeps what the page shows: the
tokens the model reads (and a text's truncated tail), hidden-state norms, attention probabilities, the task's
view of its answer (`coulisse.interfaces.head_views`) and, for the tasks that answer with a label, the words'
attributions. `report` gathers the page of several texts (`coulisse.explain.report`); `coulisse.interfaces.report`
renders it. Light at import (numpy and torch inside the functions): the CLI imports `write_report` at start-up.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from coulisse.errors import InputError
from coulisse.interfaces.attribution_view import ATTRIBUTION_TASKS, explain_options
from coulisse.interfaces.explain import STAGES
from coulisse.interfaces.explain_input import Read, built_labels, check_request, read_input
from coulisse.interfaces.head_views import HEAD_VIEWS


@dataclass
class TokenRow:
    piece: str
    id: int
    special: bool
    mask: int | None  # attention mask: 1 for every token the model saw; None for the truncated tail (not input)
    start: int
    end: int
    truncated: bool = False
    score: float | None = None
    sequence: int | None = None  # a pair's tokens: 0 or 1, the text their offsets index; None: special or alone


@dataclass
class Inspection:
    """Everything the page shows for one text (what `inspect_text` gathers)."""

    text: str
    model: str
    task: str
    tokens: list[TokenRow]  # the model's tokens, then the truncated tail (`truncated=True`)
    hidden_size: int
    layer_norms: list[float]  # mean L2 norm of the token vectors: embeddings, then after each layer
    attentions: Any  # np.ndarray (layers, heads, T, T), T = tokens the model saw
    rollout: Any  # np.ndarray (T, T)
    head: Any  # the task's view: Classified, Ranked, Tagged, Filled, Answered, Pooled or Expanded
    attribution: Any = None  # coulisse.tasks.attributions.Attribution, for the tasks that answer with a label
    notes: list[str] = field(default_factory=list)
    sequences: tuple[str, ...] = ()  # a pair task's two texts, in the model's order (TokenRow.sequence indexes it)
    text_sequence: int | None = None  # which of them `text` is; None for a text alone
    language: str | None = None  # the model's one language ("fr"), which the page marks its texts in

    @property
    def lang(self) -> str:
        """The attribute that marks a text of this model's language, so that a screen reader reads a French
        review with a French voice (the page around it is English); nothing where the model names no language."""
        from coulisse.interfaces.html_parts import lang_attribute

        return lang_attribute(self.language)

    @property
    def seen(self) -> list[TokenRow]:
        return [t for t in self.tokens if not t.truncated]

    @property
    def truncated_at(self) -> int | None:
        """The character where the model's view of the text ends, when the text was cut."""
        if not any(t.truncated for t in self.tokens):
            return None
        mine = self.text_sequence
        return max((t.end for t in self.seen if not t.special and t.sequence == mine), default=0)

    def chars(self, t: TokenRow) -> str:
        """The characters a token stands for, in the text its offsets index."""
        if t.special:
            return ""
        return (self.sequences[t.sequence] if t.sequence is not None else self.text)[t.start:t.end]


def inspect_text(pipe, text: str, *, method: str = "integrated_gradients", steps: int | None = None,
                 target: int | str | None = None, question: str | None = None, labels: Any = None,
                 template: str | None = None):
    """What the HTML report shows for one text, for any task of `STAGES`: the tokens the model reads (and a
    text's truncated tail), hidden-state norms and attention probabilities from the pipeline's own model, the
    task's view of its answer (`coulisse.interfaces.report_heads.HEADS`), and, for the tasks that answer with a
    label, the words' attributions. `question` (question-answering), `labels` and `template`
    (zero-shot-classification) as in `explain_text`."""
    import numpy as np

    from coulisse.tasks.attributions import attention_rollout, weights_of

    if pipe.task not in STAGES:
        raise InputError(f"coulisse explain has no stages for task {pipe.task!r}; it shows {', '.join(STAGES)}.")
    check_request(pipe.task, question, labels, template)
    attribution = None
    asked = {"question": question, "labels": labels, "template": template}
    # zero-shot shows the pair of the label its words are scored for; the others read first (a refusal comes
    # before the words are scored)
    seen = None if pipe.task == "zero-shot-classification" else read_input(pipe, text, **asked)
    if pipe.task in ATTRIBUTION_TASKS:
        attribution = pipe.explain(text, target=target, method=method, steps=steps,
                                   **explain_options(pipe, labels, template))
    if seen is None:
        seen = read_input(pipe, text, **asked, label=attribution.label)
    notes, kept = list(seen.notes), seen.encoding
    if attribution is not None and attribution.weights != (ran := weights_of(pipe.preparation)):
        notes.append(f"The answer and the attention come from the {ran} weights; Integrated Gradients need "
                     "gradients, taken on the fp32 weights of the same checkpoint.")
    if seen.cut and seen.side == "left":
        notes.append(f"The pipeline keeps the end of the text (truncation_side='left'): its first {seen.cut} "
                     "tokens are cut, unseen and unscored.")
    mine = seen.mine if seen.pair else None
    rows = _token_rows(pipe.tokenizer, seen, attribution)
    output, trace = _traced_forward(pipe, kept)
    attentions = np.stack([a[0].float().cpu().numpy() for a in trace.attentions])  # (layers, heads, T, T)
    norms = [float(h.float().norm(dim=-1).mean()) for h in trace.hidden_states]
    head = HEAD_VIEWS[pipe.task](pipe, text, seen=seen, output=output, trace=trace, **asked, notes=notes)
    # The rows' offsets index what the model reads: the text, or (a pooled embedding) the prompted text.
    return Inspection(seen.text, pipe.checkpoint.name, pipe.task, rows, pipe.config.hidden_size, norms, attentions,
                      attention_rollout(attentions), head, attribution, notes, seen.sequences if seen.pair else (),
                      mine, pipe_language(pipe))


def _token_rows(tok, seen: Read, attribution) -> list[TokenRow]:
    """The token table's rows: the tokens the model reads, each with its attribution where the words are
    scored, then the text's truncated tail (`truncated=True`)."""
    kept, mine = seen.encoding, seen.mine if seen.pair else None
    # The vocabulary's pieces (`<unk>` for what it lacks), as convert_ids_to_tokens and the terminal show them;
    # the encoding's own tokens would show the unknown characters as if they were a piece of the vocabulary.
    pieces = tok.convert_ids_to_tokens(kept.ids)
    scores = [None] * len(kept.ids)
    if attribution is not None:  # a pair's other text (zero-shot's hypothesis) is held, never scored: blank, not 0
        scores = [None if held and not special else score for score, held, special in
                  zip(attribution.scores, attribution.special, kept.special_tokens_mask, strict=True)]
    sequence_ids = kept.sequence_ids if seen.pair else [None] * len(kept.ids)
    rows = [TokenRow(t, i, bool(s), 1, o[0], o[1], score=score, sequence=q) for t, i, s, o, score, q in
            zip(pieces, kept.ids, kept.special_tokens_mask, kept.offsets, scores, sequence_ids, strict=True)]
    if seen.cut and seen.side == "right":  # the text's tail, unseen (a left cut is said in the notes)
        whole = tok.encode_batch([seen.text], truncation=False)[0]
        end = max((r.end for r in rows if not r.special and r.sequence == mine), default=0)
        rows += [TokenRow(t, i, False, None, o[0], o[1], truncated=True, sequence=mine) for t, i, s, o in
                 zip(tok.convert_ids_to_tokens(whole.ids), whole.ids, whole.special_tokens_mask, whole.offsets,
                     strict=True)
                 if not s and o[0] >= end]
    return rows


def pipe_language(pipe) -> str | None:
    """The one language the model declares (config, model card) or its family implies (CamemBERT: French): the
    pages mark its texts in it."""
    from coulisse.tasks.zero_shot import model_language

    return model_language(pipe.config.raw, pipe.config.model_type, pipe.checkpoint.model_dir)


def _traced_forward(pipe, kept):
    """The pipeline's own (prepared) model, int8 included, on one encoding: its output and what each layer
    held and attended to."""
    import torch

    from coulisse.models import Packed, Trace

    types = [list(kept.type_ids)] if pipe.engine.uses_token_types else None
    trace = Trace()
    with torch.inference_mode():
        output = pipe.model.forward_packed(Packed.from_lists([kept.ids], types, pipe.config.position_offset,
                                                             pipe.device), trace=trace)
    return output, trace


def head_view(pipe, text: str, *, question: str | None = None, labels: Any = None, template: str | None = None):
    """The task's view of its answer alone (`HEAD_VIEWS`: what `inspect_text` shows after the encoder), without
    the attention maps or the words' attributions: what the studio sets beside the detailed weights' answer."""
    if pipe.task not in HEAD_VIEWS:
        raise InputError(f"coulisse explain has no stages for task {pipe.task!r}; it shows {', '.join(STAGES)}.")
    check_request(pipe.task, question, labels, template)
    asked = {"question": question, "labels": labels, "template": template}
    seen, output, trace = read_input(pipe, text, **asked), None, None
    if pipe.task in ("token-classification", "sparse-embedding"):  # their views read the model's own output
        output, trace = _traced_forward(pipe, seen.encoding)
    return HEAD_VIEWS[pipe.task](pipe, text, seen=seen, output=output, trace=trace, **asked, notes=[])


def report(pipe, texts: str | list[str], *, question: str | None = None, labels: Any = None,
           template: str | None = None, method: str = "integrated_gradients", steps: int | None = None,
           target: int | str | None = None):
    """The page of `coulisse explain --html` for `texts` (a text or a list), as a `Report`: `.save(path)`
    writes it, and a notebook shows it inline. `question` (question-answering), `labels` and `template`
    (zero-shot-classification) as in `coulisse explain`; `method`, `steps` and `target` choose how the words are
    scored, for the tasks that answer with a label (text-classification, zero-shot-classification).

        >>> from coulisse import pipeline
        >>> from coulisse.explain import report
        >>> classifier = pipeline("sentiment-analysis", model="coulisse/mini-allocine")
        >>> report(classifier, ["Un film excellent.", "Quel navet !"]).save("report.html")
    """
    from coulisse.interfaces.report import Report
    from coulisse.tokenizer.inputs import check_texts

    texts, _ = check_texts(texts if isinstance(texts, str) else list(texts), "texts")  # a NaN named, with its row
    if (blank := next((i for i, t in enumerate(texts) if not t.strip()), None)) is not None:
        raise InputError(f"texts[{blank}] is {'empty' if not texts[blank] else 'only spaces'}; report() explains "
                         "texts with words: drop it.")
    if pipe.task not in ATTRIBUTION_TASKS and (method != "integrated_gradients" or steps is not None
                                               or target is not None):
        raise InputError(f"method, steps and target choose how words are scored, and {pipe.task} has no word scores "
                         f"(only {' and '.join(ATTRIBUTION_TASKS)}); drop them.")
    labels, template = built_labels(pipe, labels, template)
    options = {"question": question, "labels": labels, "template": template, "method": method, "steps": steps,
               "target": target}
    return Report([inspect_text(pipe, text, **options) for text in texts], f"coulisse explain — {pipe.checkpoint.name}")


def write_report(pipe, texts: list[str], path, **options) -> list:
    """Inspect every text and write the self-contained HTML page to `path`; return the inspections."""
    page = report(pipe, texts, **options)
    page.save(path)
    return page.inspections

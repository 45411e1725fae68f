"""Stage 3 for zero-shot classification: an NLI sequence classifier scores "TEXT entails 'about LABEL'".

Each (text, candidate label) becomes a premise/hypothesis pair, the hypothesis being `hypothesis_template`
filled with the label; the pair is truncated on the text's side only. As in transformers:

    multi_label=False   softmax of the entailment logits across the candidate labels (scores sum to 1)
    multi_label=True    per label, softmax of (contradiction, entailment), keeping entailment
                        (also used when there is a single candidate label)

The entailment id is the first label of `label2id` that starts with "entail" (case-insensitive); without one
the model is not an NLI classifier and the pipeline refuses it (transformers would quietly use the last one).
The contradiction id is the label that starts with "contra" (transformers takes it by position, which on an
order such as neutral / entailment / contradiction is the neutral label: docs/dropin.md); models without one
(e.g. entailment / not_entailment) use transformers' rule: the last id when entailment is 0, else id 0.

The default hypothesis template follows the model's language: French ("Ce texte parle de {}.") when the
checkpoint declares exactly one language and it is French (`language` in config.json, else in the model card's
README.md metadata), or, when it declares none, when it is a CamemBERT (`model_type` "camembert"); otherwise
transformers' English "This example is {}.".
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, overload

import numpy as np

from coulisse.engine import Item
from coulisse.errors import InputError, UnsupportedModelError, type_of
from coulisse.tasks import attributions
from coulisse.tasks.attributions import Attribution
from coulisse.tasks.base import PRE, Batch, Option, Pipeline
from coulisse.tasks.functional import softmax
from coulisse.tokenizer import check_texts, unicode_problem

log = logging.getLogger(__name__)

TEMPLATES = {"fr": "Ce texte parle de {}.", "en": "This example is {}."}
FRENCH_MODEL_TYPES = ("camembert",)


def nli_ids(label2id: dict[str, int], source: str = "config.json") -> tuple[int, int]:
    """(entailment id, contradiction id) from a label map, or UnsupportedModelError."""
    entailment = next((i for label, i in label2id.items() if label.lower().startswith("entail")), None)
    if entailment is None:
        raise UnsupportedModelError(
            f"label2id in {source} ({label2id}) has no label starting with 'entail'; zero-shot "
            "classification needs an NLI classifier (labels such as entailment / neutral / contradiction). "
            "Use one, or fix its label2id."
        )
    contradiction = next((i for label, i in label2id.items() if label.lower().startswith("contra")), None)
    if contradiction is None:
        contradiction = max(label2id.values()) if entailment == 0 else 0
        log.info("no 'contradiction' label in %s; multi-label scores contrast entailment with id %d",
                 source, contradiction)
    return entailment, contradiction


def _declared(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value.lower()]
    if isinstance(value, (list, tuple)):
        return [str(v).lower() for v in value]
    return []


def model_language(config_raw: dict, model_type: str, directory: Path | None) -> str | None:
    """The model's one language where it says so (config, then model card), else a family hint."""
    languages = _declared(config_raw.get("language"))
    readme = directory / "README.md" if directory else None
    if not languages and readme is not None and readme.is_file():
        try:
            from huggingface_hub.repocard import metadata_load

            languages = _declared((metadata_load(readme) or {}).get("language"))
        except Exception as e:  # a model card with broken metadata says nothing about the language
            log.debug("could not read the metadata of %s: %s", readme, e)
    if languages:
        return languages[0] if len(languages) == 1 else None
    return "fr" if model_type in FRENCH_MODEL_TYPES else None


def parse_labels(labels: Any) -> list[str]:
    """A list of labels, or one comma-separated string, as transformers accepts them."""
    if isinstance(labels, str):
        labels = [label.strip() for label in labels.split(",") if label.strip()]
    if labels is None or not isinstance(labels, (list, tuple)) or not labels:
        raise InputError(f"candidate_labels={labels!r}; pass a list of labels or a comma-separated string.")
    for i, label in enumerate(labels):
        if not isinstance(label, str):
            raise InputError(f"candidate_labels[{i}] is {type_of(label)} ({label!r:.40}), "
                             "not a string.")
    return list(labels)


def zero_shot_scores(logits: np.ndarray, entailment: int, contradiction: int,
                     multi_label: bool) -> np.ndarray:
    """Logits `(labels, nli_classes)` of one text -> one score per candidate label."""
    logits = np.asarray(logits, dtype=np.float32)
    if multi_label or len(logits) == 1:
        return softmax(logits[:, [contradiction, entailment]])[:, 1]
    return softmax(logits[:, entailment])


def template_problem(value: Any) -> str | None:
    """Why `value` cannot be a hypothesis template (None when it can), in words the CLI shows too."""
    try:
        fills = isinstance(value, str) and value.format("x") != value
    except (IndexError, KeyError, ValueError):  # "{0} {1}", "{label}", "{": not one plain {}
        fills = False
    if fills:
        return None
    return f"must hold one {{}} where the label goes, and no other braces; write e.g. {_example(value)!r}."


def _template(name: str, value: Any) -> str:
    if (problem := template_problem(value)) is not None:
        raise InputError(f"{name}={value!r} {problem}")
    return value


def _example(value: Any) -> str:
    """A template like the one given, in its own words: its text without braces, then {} (the default's form)."""
    words = value.replace("{", " ").replace("}", " ").split() if isinstance(value, str) else []
    if not words:
        return "This example is {}."
    return " ".join(words).rstrip(".!?:;, ") + " {}."


class ZeroShotClassificationPipeline(Pipeline):
    """Texts -> scores for labels named at call time (`candidate_labels`, `hypothesis_template`, `multi_label`),
    through an NLI classifier, transformers' "zero-shot-classification"."""

    task = "zero-shot-classification"
    head = "sequence-classification"
    OPTIONS = {
        "candidate_labels": Option(None, PRE, check=lambda name, v: parse_labels(v),
                                   doc="a list, or one comma-separated string (or the second positional argument)"),
        "hypothesis_template": Option(None, PRE, check=_template,
                                      doc="the hypothesis a label fills, one {} (default by the model's language)"),
        # transformers reads it when given at all (`if "multi_label" in kwargs`): None at a call is False there,
        # not the pipeline's default
        "multi_label": Option(False, none_is_value=True,
                              doc="each label scored on its own, not one softmax over the labels"),
    }

    def __init__(self, checkpoint, **kwargs: Any):
        super().__init__(checkpoint, **kwargs)
        self.entailment_id, self.contradiction_id = nli_ids(self.config.label2id,
                                                            f"{checkpoint.directory}/config.json")
        self.language = model_language(self.config.raw, self.config.model_type, checkpoint.directory)
        self.default_template = TEMPLATES.get(self.language or "en", TEMPLATES["en"])
        log.info("zero-shot: entailment id %d, contradiction id %d, default template %r (language %s)",
                 self.entailment_id, self.contradiction_id, self.default_template, self.language or "unknown")

    def resolve_options(self, options: dict[str, Any], given: dict[str, Any]) -> dict[str, Any]:
        options["candidate_labels"] = labels = parse_labels(options["candidate_labels"])  # None: no labels given
        if repeated := sorted({label for label in labels if labels.count(label) > 1}):
            log.warning("candidate_labels names %s more than once: each copy is scored, as transformers does%s; "
                        "drop the repeats.", ", ".join(map(repr, repeated)),
                        "" if options["multi_label"] else ", and the copies share the probability one label would get")
        options["hypothesis_template"] = options["hypothesis_template"] or self.default_template
        options["multi_label"] = bool(options["multi_label"])
        return options

    def parse_call(self, args: tuple, kwargs: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        """`zs(texts, candidate_labels=[...], ...)`; the labels may also come second, positionally, and the texts
        as `sequences=` (transformers' name)."""
        if not args and "sequences" in kwargs:
            kwargs = dict(kwargs)
            args = (kwargs.pop("sequences"),)
        if len(args) == 2 and "candidate_labels" not in kwargs:
            return args[0], {**kwargs, "candidate_labels": args[1]}
        if len(args) != 1:
            raise InputError(f"unexpected positional arguments {args[1:]!r:.80}; pass candidate_labels=.")
        return args[0], kwargs

    def encode_pairs(self, texts: list[str], labels: list[str], template: str) -> list:
        """Per text, per label: the (text, hypothesis) pair's encoding, truncated on the text's side only."""
        for what, values in (("sequences", texts), ("candidate_labels", labels), ("hypothesis_template", [template])):
            for i, value in enumerate(values):  # said here, by the caller's names (the pairs repeat them)
                if problem := unicode_problem(value):
                    where = what if what == "hypothesis_template" else f"{what}[{i}]"
                    raise InputError(f"{where} is {problem}; remove or replace it.")
        premises = [t for t in texts for _ in labels]
        hypotheses = [template.format(label) for _ in texts for label in labels]
        try:
            return self.tokenizer.encode_batch(premises, hypotheses, strategy="only_first")
        except InputError as e:  # the tokenizer's "cannot truncate": the hypothesis alone is longer than the limit
            raise InputError(f"cannot fit a hypothesis into {self.tokenizer.model_max_length} tokens ({e}); "
                             "shorten hypothesis_template or the labels.") from e

    def preprocess(self, inputs: Any, candidate_labels: list[str] | None = None,
                   hypothesis_template: str = TEMPLATES["en"]) -> Batch:
        """Per text, per label, one (text, hypothesis) pair; the labels travel in the batch."""
        texts, single = check_texts(inputs, "sequences")
        labels = parse_labels(candidate_labels)
        encodings = self.encode_pairs(texts, labels, hypothesis_template)
        return Batch([Item(e.ids, e.type_ids) for e in encodings], texts, single, context=labels)

    def postprocess(self, outputs: list[np.ndarray], batch: Batch, *, multi_label: bool = False):
        """Each text's logits `(labels, nli_classes)` -> labels sorted by score, as transformers gives them
        (a string gives one dict, a list a list)."""
        labels, n = batch.context, len(batch.context)
        results = [self.text_result(text, labels, np.stack(outputs[i * n:(i + 1) * n]), multi_label)
                   for i, text in enumerate(batch.inputs)]
        return results[0] if batch.single else results

    def text_result(self, sequence: str, labels: list[str], logits: np.ndarray, multi_label: bool = False) -> dict:
        """One text's logits `(labels, nli_classes)` -> {"sequence", "labels", "scores"}, best first."""
        scores = zero_shot_scores(logits, self.entailment_id, self.contradiction_id, multi_label)
        order = list(reversed(scores.argsort()))  # transformers' order, which decides between equal scores
        return {"sequence": sequence, "labels": [labels[i] for i in order], "scores": scores[order].tolist()}

    # -- explanations (coulisse.tasks.attributions) --------------------------------------------------------

    @overload
    def explain(self, inputs: str, candidate_labels: Any = None, target: int | str | None = None,
                hypothesis_template: str | None = None, multi_label: bool | None = None,
                method: str = "integrated_gradients", steps: int | None = None,
                baseline: str = "pad") -> Attribution: ...

    @overload
    def explain(self, inputs: list[str], candidate_labels: Any = None, target: int | str | None = None,
                hypothesis_template: str | None = None, multi_label: bool | None = None,
                method: str = "integrated_gradients", steps: int | None = None,
                baseline: str = "pad") -> list[Attribution]: ...

    def explain(self, inputs: str | list[str], candidate_labels: Any = None, target: int | str | None = None,
                hypothesis_template: str | None = None, multi_label: bool | None = None,
                method: str = "integrated_gradients", steps: int | None = None,
                baseline: str = "pad") -> Attribution | list[Attribution]:
        """Which words of each text pushed it towards one candidate label: `target`, a label of
        `candidate_labels` or its index (default: the label this pipeline ranks first for that text, with
        `multi_label` as in a call).

        A label's score grows with the entailment logit of the pair (text, hypothesis of that label): a softmax of
        the labels' entailment logits, or with `multi_label` a softmax of that pair's (contradiction, entailment),
        so the entailment logit alone is what is explained (not the contradiction logit beside it): the
        hypothesis and the special tokens stay as they are, only the text's tokens move to the baseline and get a
        score. The scores add up to F(x) − F(x') of that logit
        (`Attribution.delta`; Integrated Gradients' completeness, as for text classification). `label` is the
        candidate label; `extra` holds the hypothesis and the NLI class explained. `method`, `steps` and
        `baseline` as in `TextClassificationPipeline.explain`."""
        method, steps = attributions.check_request(method, steps, baseline)
        given = {"candidate_labels": candidate_labels, "hypothesis_template": hypothesis_template,
                 "multi_label": multi_label}
        options = self.options({k: v for k, v in given.items() if v is not None})
        labels, template = options["candidate_labels"], options["hypothesis_template"]
        chosen = _check_label(target, labels)
        scorer = attributions.Scorer(method, steps, baseline, attributions.baseline_token(self.tokenizer, baseline),
                                     lambda: self.gradient_model, self.forward,
                                     attributions.weights_of(self.preparation))
        texts, single = check_texts(inputs, "sequences")
        if chosen is None:  # the top label of each text, as a call ranks them
            answers = self(texts, candidate_labels=labels, hypothesis_template=template,
                           multi_label=options["multi_label"])
            targets = [answer["labels"][0] for answer in answers]
        else:
            targets = [chosen] * len(texts)
        nli = self.config.id2label[self.entailment_id]
        results = []
        for text, label in zip(texts, targets, strict=True):
            encoding, = self.encode_pairs([text], [label], template)
            whole, = self.tokenizer.encode_batch([text], truncation=False)
            premise = sum(1 for s in encoding.sequence_ids if s == 0)
            fixed = [bool(special) or sequence != 0
                     for special, sequence in zip(encoding.special_tokens_mask, encoding.sequence_ids, strict=True)]
            results.append(attributions.attribute(
                text, encoding, scorer, target=self.entailment_id,
                id2label={**self.config.id2label, self.entailment_id: label},
                uses_token_types=self.engine.uses_token_types,
                truncated=premise < sum(1 for s in whole.special_tokens_mask if not s), fixed=fixed,
                extra={"hypothesis": template.format(label), "nli_label": nli},
                word_ids=self.tokenizer.word_ids(encoding, text, template.format(label))))
        return results[0] if single else results


def _check_label(target: int | str | None, labels: list[str]) -> str | None:
    """`target` as one of the candidate labels: a label, or its index; None stays None."""
    if target is None:
        return None
    if isinstance(target, str):
        if target not in labels:
            raise InputError(f"target={target!r} is not one of the candidate labels ({', '.join(labels)}).")
        return target
    if isinstance(target, bool) or not isinstance(target, (int, np.integer)) or not 0 <= target < len(labels):
        raise InputError(f"target={target!r}; pass a candidate label or its index, 0 to {len(labels) - 1}.")
    return labels[int(target)]

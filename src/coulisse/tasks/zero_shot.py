"""Stage 3 for zero-shot classification: an NLI sequence classifier scores "TEXT entails 'about LABEL'".

Each (text, candidate label) becomes a premise/hypothesis pair, the hypothesis being `hypothesis_template`
filled with the label; the pair is truncated on the text's side only. As in transformers:

    multi_label=False   softmax of the entailment logits across the candidate labels (scores sum to 1)
    multi_label=True    per label, softmax of (contradiction, entailment), keeping entailment
                        (also used when there is a single candidate label)

The entailment id is the first label of `label2id` that starts with "entail" (case-insensitive); without one
the model is not an NLI classifier and the pipeline refuses it (transformers would quietly use the last one).
The contradiction id is the label that starts with "contra"; models without one (e.g. entailment /
not_entailment) use transformers' rule: the last id when entailment is 0, else id 0.

The default hypothesis template follows the model's language: French ("Ce texte parle de {}.") when the
checkpoint declares exactly one language and it is French (`language` in config.json, else in the model card's
README.md metadata), or, when it declares none, when it is a CamemBERT (`model_type` "camembert"); otherwise
transformers' English "This example is {}.".
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from coulisse.engine import Item
from coulisse.errors import InputError, UnsupportedModelError
from coulisse.pipelines import Pipeline
from coulisse.tokenizer import check_texts

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
            raise InputError(f"candidate_labels[{i}] is a {type(label).__name__} ({label!r:.40}), "
                             "not a string.")
    return list(labels)


def zero_shot_scores(logits: np.ndarray, entailment: int, contradiction: int,
                     multi_label: bool) -> np.ndarray:
    """Logits `(labels, nli_classes)` of one text -> one score per candidate label."""
    logits = np.asarray(logits, dtype=np.float32)
    if multi_label or len(logits) == 1:
        pair = logits[:, [contradiction, entailment]]
        e = np.exp(pair - pair.max(-1, keepdims=True))
        return (e / e.sum(-1, keepdims=True))[:, 1]
    entail = logits[:, entailment]
    e = np.exp(entail - entail.max())
    return e / e.sum()


class ZeroShotClassificationPipeline(Pipeline):
    task = "zero-shot-classification"
    head = "sequence-classification"

    def __init__(self, checkpoint, **kwargs: Any):
        super().__init__(checkpoint, **kwargs)
        self.entailment_id, self.contradiction_id = nli_ids(self.config.label2id,
                                                            f"{checkpoint.directory}/config.json")
        self.language = model_language(self.config.raw, self.config.model_type, checkpoint.directory)
        self.default_template = TEMPLATES.get(self.language or "en", TEMPLATES["en"])
        log.info("zero-shot: entailment id %d, contradiction id %d, default template %r (language %s)",
                 self.entailment_id, self.contradiction_id, self.default_template, self.language or "unknown")

    def _options(self, kwargs: dict[str, Any]) -> tuple[list[str], str, bool]:
        options = {**self.defaults, **kwargs}
        unknown = set(options) - {"candidate_labels", "hypothesis_template", "multi_label"}
        if unknown:
            raise InputError(f"unknown option(s) {sorted(unknown)}; zero-shot-classification takes "
                             "candidate_labels, hypothesis_template, multi_label.")
        labels = parse_labels(options.get("candidate_labels"))
        template = options.get("hypothesis_template") or self.default_template
        if not isinstance(template, str) or template.format(labels[0]) == template:
            raise InputError(f"hypothesis_template={template!r} has no {{}} where the label goes; "
                             "write e.g. 'Ce texte parle de {}.'.")
        return labels, template, bool(options.get("multi_label", False))

    def encode_pairs(self, texts: list[str], labels: list[str], template: str) -> list:
        """Per text, per label: the (text, hypothesis) pair's encoding, truncated on the text's side only."""
        premises = [t for t in texts for _ in labels]
        hypotheses = [template.format(label) for _ in texts for label in labels]
        try:
            return self.tokenizer.encode_batch(premises, hypotheses, strategy="only_first")
        except Exception as e:  # tokenizers: the hypothesis alone is longer than the model's limit
            raise InputError(f"cannot fit a hypothesis into {self.tokenizer.model_max_length} tokens ({e}); "
                             "shorten hypothesis_template or the labels.") from e

    def postprocess(self, sequence: str, labels: list[str], logits: np.ndarray,
                    multi_label: bool = False) -> dict:
        """One text's logits `(labels, nli_classes)` -> labels sorted by score, as transformers gives them."""
        scores = zero_shot_scores(logits, self.entailment_id, self.contradiction_id, multi_label)
        order = list(reversed(scores.argsort()))
        return {"sequence": sequence, "labels": [labels[i] for i in order], "scores": scores[order].tolist()}

    def __call__(self, sequences: Any, *args: Any, progress=None, **kwargs: Any):
        """`zs(texts, candidate_labels=[...], hypothesis_template=..., multi_label=...)`; labels may also come
        second positionally. A string gives one dict, a list gives a list."""
        if len(args) == 1 and "candidate_labels" not in kwargs:
            kwargs["candidate_labels"] = args[0]
        elif args:
            raise InputError(f"unexpected positional arguments {args!r:.80}; pass candidate_labels=.")
        labels, template, multi_label = self._options(kwargs)
        texts, single = check_texts(sequences, "sequences")
        encodings = self.encode_pairs(texts, labels, template)
        logits = self.forward([Item(e.ids, e.type_ids) for e in encodings], progress)
        n = len(labels)
        results = [self.postprocess(text, labels, np.stack(logits[i * n:(i + 1) * n]), multi_label)
                   for i, text in enumerate(texts)]
        return results[0] if single else results

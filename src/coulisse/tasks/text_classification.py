"""Stage 3 for sequence classification: logits -> probabilities -> labels (numpy only)."""

from __future__ import annotations

from typing import Any

import numpy as np

from coulisse.engine import Item
from coulisse.errors import InputError
from coulisse.tasks.base import PRE, Batch, Option, Pipeline, one_of, positive_int
from coulisse.tasks.functional import sigmoid, softmax
from coulisse.tokenizer import check_texts

FUNCTIONS = ("softmax", "sigmoid", "none")


def default_function(problem_type: str | None, num_labels: int) -> str:
    """transformers' rule: regression -> none; multi-label or a single label -> sigmoid; else softmax."""
    if problem_type == "regression":
        return "none"
    if problem_type == "multi_label_classification" or num_labels == 1:
        return "sigmoid"
    return "softmax"


def apply_function(logits: np.ndarray, function: str) -> np.ndarray:
    if function == "softmax":
        return softmax(logits)
    if function == "sigmoid":
        return sigmoid(logits)
    return logits  # "none", the table's third choice


def label_scores(logits: np.ndarray, id2label: dict[int, str], function: str,
                 top_k: int | None = 1, legacy: bool = True) -> dict | list[dict]:
    """One input's result, in transformers' shape: a dict for the default top-1, else a sorted list."""
    scores = apply_function(np.asarray(logits, dtype=np.float32), function)
    if top_k == 1 and legacy:
        best = int(scores.argmax())
        return {"label": id2label[best], "score": float(scores[best])}
    results = [{"label": id2label[i], "score": float(s)} for i, s in enumerate(scores)]
    if not legacy:
        results.sort(key=lambda r: r["score"], reverse=True)
        if top_k is not None:
            results = results[:top_k]
    return results


class TextClassificationPipeline(Pipeline):
    task = "text-classification"
    head = "sequence-classification"
    OPTIONS = {
        # transformers' legacy shape (a dict per input) holds while top_k is not passed at all
        "top_k": Option(1, check=lambda name, v: positive_int(name, v, allow_none=True)),
        "function_to_apply": Option(None, check=one_of(*FUNCTIONS)),
        "truncation": Option(True, PRE),
    }

    def resolve_options(self, options: dict[str, Any], given: dict[str, Any]) -> dict[str, Any]:
        options["function_to_apply"] = options["function_to_apply"] or default_function(
            self.config.problem_type, self.config.num_labels)
        options["_legacy"] = "top_k" not in given
        return options

    def stage_options(self, options: dict[str, Any], stage: str) -> dict[str, Any]:
        chosen = super().stage_options(options, stage)
        return {**chosen, "_legacy": options["_legacy"]} if stage != PRE else chosen

    def preprocess(self, inputs: Any, truncation: bool = True) -> Batch:
        """Plain texts, or {"text", "text_pair"} dicts for sentence-pair classifiers -> ids."""
        texts, pairs, single = self._split_inputs(inputs)
        encodings = self.tokenizer.encode_batch(texts, pairs, truncation=truncation)
        # transformers wraps a lone string's legacy result in a list, but not a lone {"text", ...} dict.
        return Batch([Item(e.ids, e.type_ids) for e in encodings], texts, single, context=isinstance(inputs, str))

    def postprocess(self, outputs: Any, batch: Batch | None = None, *, function_to_apply: str | None = None,
                    top_k: int | None = 1, _legacy: bool = True) -> dict | list:
        """Logits `(labels,)` or `(batch, labels)` (numpy, torch, or the forward stage's rows) -> labels and
        scores; with the batch, shaped as the call was (one result for one bare input)."""
        if hasattr(outputs, "logits"):
            outputs = outputs.logits
        array = outputs.detach().float().cpu().numpy() if hasattr(outputs, "detach") else np.asarray(outputs)
        function = function_to_apply or default_function(self.config.problem_type, self.config.num_labels)
        if array.ndim == 1:
            return label_scores(array, self.config.id2label, function, top_k, _legacy)
        results = [label_scores(row, self.config.id2label, function, top_k, _legacy) for row in array]
        if batch is not None and batch.single:
            return [results[0]] if _legacy and batch.context else results[0]
        return results

    def _split_inputs(self, inputs: Any) -> tuple[list[str], list[str] | None, bool]:
        """Plain texts, or {"text", "text_pair"} dicts for sentence-pair classifiers."""
        if isinstance(inputs, dict) or (isinstance(inputs, list) and inputs and isinstance(inputs[0], dict)):
            rows = [inputs] if isinstance(inputs, dict) else inputs
            if not all(isinstance(r, dict) and "text" in r for r in rows):
                raise InputError("text pairs must be dicts with 'text' (and 'text_pair') keys.")
            texts, _ = check_texts([r["text"] for r in rows])
            pairs = [r.get("text_pair") for r in rows]
            if any(p is not None for p in pairs):
                pairs, _ = check_texts(pairs, "text_pair")
            else:
                pairs = None
            return texts, pairs, isinstance(inputs, dict)
        texts, single = check_texts(inputs)
        return texts, None, single

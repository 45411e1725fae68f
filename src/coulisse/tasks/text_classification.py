"""Stage 3 for sequence classification: logits -> probabilities -> labels (numpy only)."""

from __future__ import annotations

from typing import Any

import numpy as np

from coulisse.errors import InputError
from coulisse.pipelines import Pipeline
from coulisse.tokenizer import check_texts

FUNCTIONS = ("softmax", "sigmoid", "none")


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


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
    if function == "none":
        return logits
    raise InputError(f"function_to_apply={function!r}; use one of {', '.join(FUNCTIONS)}.")


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

    def _options(self, kwargs: dict[str, Any]) -> tuple[str, int | None, bool]:
        options = {**self.defaults, **kwargs}
        unknown = set(options) - {"top_k", "function_to_apply", "truncation"}
        if unknown:
            raise InputError(f"unknown option(s) {sorted(unknown)}; text-classification takes top_k, "
                             "function_to_apply, truncation.")
        legacy = "top_k" not in options
        top_k = options.get("top_k", 1)
        if top_k is not None and (not isinstance(top_k, int) or top_k < 1):
            raise InputError(f"top_k={top_k!r}; pass a positive integer, or None for every label.")
        function = options.get("function_to_apply") or default_function(
            self.config.problem_type, self.config.num_labels)
        function = str(getattr(function, "value", function)).lower()
        if function not in FUNCTIONS:
            raise InputError(f"function_to_apply={function!r}; use one of {', '.join(FUNCTIONS)}.")
        return function, top_k, legacy

    def postprocess(self, logits, *, function_to_apply: str | None = None, top_k: int | None = 1,
                    _legacy: bool = True) -> dict | list:
        """Logits `(labels,)` or `(batch, labels)` (numpy or torch) -> labels and scores."""
        array = logits.detach().float().cpu().numpy() if hasattr(logits, "detach") else np.asarray(logits)
        if hasattr(logits, "logits"):
            array = logits.logits.float().numpy()
        function = function_to_apply or default_function(self.config.problem_type, self.config.num_labels)
        if array.ndim == 1:
            return label_scores(array, self.config.id2label, function, top_k, _legacy)
        return [label_scores(row, self.config.id2label, function, top_k, _legacy) for row in array]

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

    def __call__(self, inputs: Any, progress=None, **kwargs: Any) -> list:
        function, top_k, legacy = self._options(kwargs)
        texts, pairs, single = self._split_inputs(inputs)
        truncation = {**self.defaults, **kwargs}.get("truncation", True)
        logits = self.forward(self.preprocess(texts, pairs, truncation=truncation), progress)
        results = [label_scores(row, self.config.id2label, function, top_k, legacy) for row in logits]
        if single:
            # transformers wraps a lone string's legacy result in a list, but not a lone {"text", ...} dict.
            return [results[0]] if legacy and isinstance(inputs, str) else results[0]
        return results

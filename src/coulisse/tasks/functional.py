"""The numpy post-processing every task shares: softmax, sigmoid, the top k of a row."""

from __future__ import annotations

import numpy as np


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def top_k(scores: np.ndarray, k: int | None) -> np.ndarray:
    """Indices of the `k` best scores, best first; ties keep index order (a stable sort, as transformers'
    pipelines do); `k=None`: every index."""
    order = np.argsort(-np.asarray(scores), kind="stable")
    return order if k is None else order[:k]

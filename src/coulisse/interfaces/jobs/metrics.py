"""Classification metrics from predictions, in numpy (scikit-learn is only the tests' oracle).

Precision, recall and F1 of a class with no prediction (or no example) are 0, as scikit-learn's
`zero_division=0`; macro-F1 is the unweighted mean over all the model's labels. Calibration bins the
top-1 score in equal-width bins, the first one closed ([0, 0.1], (0.1, 0.2], ...), as
`sklearn.calibration.calibration_curve(strategy="uniform")`; ECE is the count-weighted mean gap
between a bin's accuracy and its mean score.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Bin:
    low: float
    high: float
    count: int
    accuracy: float  # NaN when empty
    confidence: float  # mean top-1 score; NaN when empty


@dataclass
class Metrics:
    labels: list[str]
    confusion: np.ndarray  # (true, predicted) counts
    precision: np.ndarray
    recall: np.ndarray
    f1: np.ndarray
    support: np.ndarray
    bins: list[Bin]

    @property
    def total(self) -> int:
        return int(self.confusion.sum())

    @property
    def accuracy(self) -> float:
        return float(np.trace(self.confusion) / self.total) if self.total else float("nan")

    @property
    def macro_f1(self) -> float:
        return float(self.f1.mean())

    @property
    def ece(self) -> float:
        gaps = [b.count * abs(b.accuracy - b.confidence) for b in self.bins if b.count]
        return float(sum(gaps) / self.total) if gaps else 0.0


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    return np.divide(num, den, out=np.zeros(len(num)), where=den > 0)


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, classes: int) -> np.ndarray:
    return np.bincount(y_true * classes + y_pred, minlength=classes * classes).reshape(classes, classes)


def calibration(correct: np.ndarray, confidence: np.ndarray, n_bins: int = 10) -> list[Bin]:
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    ids = np.searchsorted(edges[1:-1], confidence)
    bins = []
    for b in range(n_bins):
        inside = ids == b
        count = int(inside.sum())
        acc = float(correct[inside].mean()) if count else float("nan")
        conf = float(confidence[inside].mean()) if count else float("nan")
        bins.append(Bin(float(edges[b]), float(edges[b + 1]), count, acc, conf))
    return bins


def compute(y_true, y_pred, confidence, labels: list[str], n_bins: int = 10) -> Metrics:
    """Metrics of predicted label ids against true ones; `confidence` is each row's top-1 score."""
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    confidence = np.asarray(confidence, dtype=np.float64)
    cm = confusion_matrix(y_true, y_pred, len(labels))
    hits = np.diag(cm).astype(np.float64)
    precision = _ratio(hits, cm.sum(axis=0).astype(np.float64))
    recall = _ratio(hits, cm.sum(axis=1).astype(np.float64))
    f1 = _ratio(2 * precision * recall, precision + recall)
    bins = calibration((y_true == y_pred).astype(np.float64), confidence, n_bins)
    return Metrics(list(labels), cm, precision, recall, f1, cm.sum(axis=1), bins)

"""Weights: find the checkpoint file, read it whatever its format, and copy it into the model."""

from coulisse.weights.assign import check_unused, expected_shapes, gather_weights, normalize_keys
from coulisse.weights.formats import WEIGHT_FILES, read_weights

__all__ = ["WEIGHT_FILES", "expected_shapes", "gather_weights", "check_unused", "normalize_keys", "read_weights"]

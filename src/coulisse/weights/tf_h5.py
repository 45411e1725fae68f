"""Read a TensorFlow/Keras `tf_model.h5` with h5py alone, and name its tensors as PyTorch does.

Keras stores one group per top-level layer; the group's `weight_names` attribute lists datasets
such as `tf_camembert_for_sequence_classification/roberta/encoder/layer_._0/attention/self/query/kernel:0`.
The renaming rules are transformers' (`convert_tf_weight_name_to_pt_weight_name`): drop the model
scope and `:0`, `_._` separates list items, `kernel`/`gamma`/`embeddings` become `weight` and
`beta` becomes `bias`; kernels are stored (in, out) and are transposed to PyTorch's (out, in).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch


def pytorch_name(tf_name: str) -> tuple[str, bool]:
    """Return (PyTorch key, whether the array must be transposed)."""
    name = tf_name.replace(":0", "")
    name = re.sub(r"/[^/]*___([^/]*)/", r"/\1/", name)
    name = name.replace("_._", "/")
    name = re.sub(r"//+", "/", name)
    parts = name.split("/")
    if len(parts) > 1:
        parts = parts[1:]  # the model's own scope
    transpose = parts[-1] == "kernel"
    if parts[-1] in ("kernel", "embeddings", "gamma"):
        parts[-1] = "weight"
    elif parts[-1] == "beta":
        parts[-1] = "bias"
    return ".".join(parts), transpose


def _decode(names) -> list[str]:
    return [n.decode("utf-8") if isinstance(n, bytes) else str(n) for n in names]


def read_tf_h5(path: Path) -> dict[str, torch.Tensor]:
    import h5py

    tensors: dict[str, torch.Tensor] = {}
    with h5py.File(path, "r") as f:
        layer_names = _decode(f.attrs.get("layer_names", list(f.keys())))
        for layer in layer_names:
            group = f[layer]
            weight_names = _decode(group.attrs.get("weight_names", []))
            if not weight_names:  # no attribute: walk the datasets
                found: list[str] = []
                group.visititems(lambda n, o, found=found: found.append(n) if isinstance(o, h5py.Dataset) else None)
                weight_names = found
            for weight_name in weight_names:
                array = np.asarray(group[weight_name])
                key, transpose = pytorch_name(weight_name)
                if transpose:
                    array = array.T
                tensors[key] = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
    return tensors

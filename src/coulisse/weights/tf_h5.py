"""Read a TensorFlow/Keras `tf_model.h5` with h5py alone, and name its tensors as PyTorch does.

Keras stores one group per top-level layer; the group's `weight_names` attribute lists datasets
such as `tf_camembert_for_sequence_classification/roberta/encoder/layer_._0/attention/self/query/kernel:0`.
The renaming rules are transformers' (`convert_tf_weight_name_to_pt_weight_name`): drop the model
scope and `:0`, `_._` separates list items, `kernel`/`gamma`/`embeddings` become `weight` and
`beta` becomes `bias`; kernels are stored (in, out) and are transposed to PyTorch's (out, in).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import torch

from coulisse.errors import UnsafeCheckpointError


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


def _refuse(path: Path, name: str, what: str) -> UnsafeCheckpointError:
    return UnsafeCheckpointError(
        f"{path} is refused: {name!r} {what}; a tf_model.h5 saved by Keras keeps every weight inside the file "
        "— download the checkpoint again from a source you trust."
    )


def check_h5_file(f, path: Path) -> None:
    """Refuse, before any dataset is read, what could make h5py read other files or allocate more than the
    file holds: external links, external storage, virtual datasets, non-numeric types, and datasets whose
    declared size exceeds the file's size (a small file declaring a huge dataset of fill values)."""
    import h5py

    file_size = os.path.getsize(path)
    seen: set = set()
    pending = [("/", f)]
    while pending:
        prefix, group = pending.pop()
        if group.id in seen:  # hard links can make cycles
            continue
        seen.add(group.id)
        for key in group:
            name = prefix + key
            link = group.get(key, getlink=True)
            if isinstance(link, h5py.ExternalLink):
                raise _refuse(path, name, f"is an external link to {link.filename}:{link.path}")
            if isinstance(link, h5py.SoftLink):
                continue  # a path inside this file; its target is visited through its hard link
            if not isinstance(link, h5py.HardLink):
                raise _refuse(path, name, f"is a link of unknown kind ({type(link).__name__})")
            obj = group[key]
            if isinstance(obj, h5py.Group):
                pending.append((name + "/", obj))
            elif isinstance(obj, h5py.Dataset):
                _check_dataset(obj, name, path, file_size)


def _check_dataset(ds, name: str, path: Path, file_size: int) -> None:
    if ds.is_virtual:
        raise _refuse(path, name, "is a virtual dataset (its data lives in other files)")
    if ds.external:
        files = ", ".join(str(e[0]) for e in ds.external)
        raise _refuse(path, name, f"uses external storage ({files})")
    if ds.dtype.kind not in "fiub":
        raise _refuse(path, name, f"has the non-numeric type {ds.dtype}")
    declared = int(np.prod(ds.shape, dtype=object)) * ds.dtype.itemsize if ds.shape else ds.dtype.itemsize
    if declared > file_size:
        raise _refuse(path, name, f"declares shape {ds.shape} ({declared:,} bytes), more than the whole "
                                  f"file ({file_size:,} bytes)")


def read_tf_h5(path: Path) -> dict[str, torch.Tensor]:
    import h5py

    tensors: dict[str, torch.Tensor] = {}
    with h5py.File(path, "r") as f:
        check_h5_file(f, path)
        layer_names = _decode(f.attrs.get("layer_names", list(f.keys())))
        for layer in layer_names:
            group = f[layer]
            weight_names = _decode(group.attrs.get("weight_names", []))
            if not weight_names:  # no attribute: walk the datasets
                found: list[str] = []
                group.visititems(lambda n, o, found=found: found.append(n) if isinstance(o, h5py.Dataset) else None)
                weight_names = found
            for weight_name in weight_names:
                dataset = group[weight_name]
                if not isinstance(dataset, h5py.Dataset):
                    raise _refuse(path, f"{layer}/{weight_name}", "is not a dataset")
                array = dataset[()]
                key, transpose = pytorch_name(weight_name)
                if transpose:
                    array = array.T
                tensors[key] = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
    return tensors

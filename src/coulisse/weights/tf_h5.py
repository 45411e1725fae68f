"""Read a TensorFlow/Keras `tf_model.h5` with h5py alone, and name its tensors as PyTorch does.

Keras stores one group per top-level layer; the group's `weight_names` attribute lists datasets
such as `tf_camembert_for_sequence_classification/roberta/encoder/layer_._0/attention/self/query/kernel:0`.
The renaming rules are transformers' (`convert_tf_weight_name_to_pt_weight_name`): drop the model
scope and `:0`, `_._` separates list items, `kernel`/`gamma`/`embeddings` become `weight` and
`beta` becomes `bias`; kernels are stored (in, out) and are transposed to PyTorch's (out, in).

The file is untrusted: before any dataset is read, what would make h5py read another file is refused, each
dataset's declared shape and type are compared with the model's name table, and the bytes to read are
bounded by the file's size.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch

from coulisse.errors import UnsafeCheckpointError, WeightShapeError


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
    declared = _declared_bytes(ds)
    if declared > file_size:
        raise _refuse(path, name, f"declares shape {ds.shape} ({declared:,} bytes), more than the whole "
                                  f"file ({file_size:,} bytes)")


# A Keras tf_model.h5 stores every weight uncompressed, so the bytes it can make us read are the file's own.
# h5py users may recompress one (gzip, lzf): float weights then shrink by 1.1-1.5x, zero biases by more, so
# reading ten times the file's size is allowed before a file is taken for a decompression bomb.
MAX_EXPANSION = 10


def read_tf_h5(path: Path, expected: Callable[[str], tuple[int, ...] | None] | None = None
               ) -> dict[str, torch.Tensor]:
    """Every weight of the file under its PyTorch name. With `expected` (PyTorch name -> the shape the model's
    table wants, None for a tensor it does not use), each dataset's declared shape and type are checked
    against the table before anything is read, and datasets the table does not name are not read at all:
    they come back as meta tensors of their declared shape, enough to name them when unused."""
    import h5py

    with h5py.File(path, "r") as f:
        check_h5_file(f, path)
        plan: list[tuple[str, object, bool]] = []
        tensors: dict[str, torch.Tensor] = {}
        for weight_name, dataset in _weights(f, path):
            key, transpose = pytorch_name(weight_name)
            shape = tuple(reversed(dataset.shape)) if transpose else tuple(dataset.shape)
            wanted = None if expected is None else expected(key)
            if expected is not None and wanted is None:
                tensors[key] = torch.empty(shape, device="meta")  # not needed: never read
                continue
            if wanted is not None:
                _check_against_table(dataset, key, shape, wanted, path)
            plan.append((key, dataset, transpose))
        _check_read_budget([dataset for _, dataset, _ in plan], path)
        for key, dataset, transpose in plan:
            array = dataset[()]
            if transpose:
                array = array.T
            tensors[key] = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
    return tensors


def _weights(f, path: Path) -> Iterator[tuple[str, object]]:
    """(weight name, dataset) in the order Keras lists them, nothing read yet."""
    import h5py

    for layer in _decode(f.attrs.get("layer_names", list(f.keys()))):
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
            yield weight_name, dataset


def _check_against_table(dataset, key: str, shape: tuple[int, ...], wanted: tuple[int, ...], path: Path) -> None:
    if shape != tuple(wanted):
        raise WeightShapeError(
            f"tensor {key} in {path.name} has shape {shape}, but the config implies {tuple(wanted)}; "
            "check config.json (hidden_size, vocab_size, num_labels...)."
        )
    if dataset.dtype.kind != "f":
        raise _refuse(path, dataset.name, f"has type {dataset.dtype}, but {key} is a float parameter")


def _declared_bytes(dataset) -> int:
    return int(np.prod(dataset.shape, dtype=object)) * dataset.dtype.itemsize


def _check_read_budget(datasets: list, path: Path) -> None:
    """Before reading: an unfiltered dataset must store all its bytes (else h5py would hand back fill values
    from a file that holds none), and the bytes read in all may not exceed the file's size, or MAX_EXPANSION
    times it when some dataset is compressed."""
    file_size = os.path.getsize(path)
    compressed = False
    for dataset in datasets:
        declared, stored = _declared_bytes(dataset), dataset.id.get_storage_size()
        if dataset.id.get_create_plist().get_nfilters():
            compressed = True
        elif stored < declared:
            raise _refuse(path, dataset.name, f"declares {declared:,} bytes but the file stores only {stored:,} "
                                              "of them")
    total = sum(_declared_bytes(dataset) for dataset in datasets)
    ratio = MAX_EXPANSION if compressed else 1
    if total > file_size * ratio:
        bound = f"{ratio} times the file's size ({file_size:,} bytes, some compressed)" if compressed else \
            f"the file's size ({file_size:,} bytes)"
        raise UnsafeCheckpointError(
            f"{path} is refused: its weights would take {total:,} bytes once read, more than {bound}; a "
            "tf_model.h5 saved by Keras holds every weight it declares — download the checkpoint again from a "
            "source you trust."
        )

"""Find and read a checkpoint's weight files: safetensors, PyTorch `.bin` (sharded or not), TF `.h5`."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch

from coulisse.errors import ModelLoadError, UnsafeCheckpointError

log = logging.getLogger(__name__)

# In order of preference: safe and mmap-able first.
WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
    "tf_model.h5",
)


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path))


def _read_bin(path: Path) -> dict[str, torch.Tensor]:
    import zipfile

    # weights_only: a .bin is a pickle, and a pickle can run code. mmap needs the zip format of
    # torch >= 1.6; older checkpoints use the legacy format and are read into memory.
    state = torch.load(str(path), map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    if not isinstance(state, dict):
        raise ValueError(f"expected a state dict, found a {type(state).__name__}")
    return state


def _shard_path(index_path: Path, shard: object) -> Path:
    """The shard's path, which must stay inside the model folder, symlinks resolved: a `weight_map` naming
    `/etc/...` or `../x` would otherwise load files from anywhere. In the Hub cache, `snapshots/<rev>/`
    holds symlinks into the repository's `blobs/`, which is allowed too."""
    folder = index_path.parent.resolve()
    if not isinstance(shard, str) or not shard or Path(shard).is_absolute() or ".." in Path(shard).parts:
        raise UnsafeCheckpointError(
            f"shard path {shard!r} in {index_path} is refused: shards are file names inside the model "
            "folder. Fix the index's weight_map or download the checkpoint again."
        )
    shard_path = index_path.parent / shard
    roots = [folder]
    if folder.parent.name == "snapshots":
        roots.append(folder.parent.parent / "blobs")
    resolved = shard_path.resolve()
    if not any(resolved.is_relative_to(root) for root in roots):
        raise UnsafeCheckpointError(
            f"shard path {shard!r} in {index_path} is refused: it resolves to {resolved}, outside the model "
            f"folder {folder}. Fix the index's weight_map or download the checkpoint again."
        )
    return shard_path


def _read_sharded(index_path: Path, reader) -> dict[str, torch.Tensor]:
    index = json.loads(index_path.read_text(encoding="utf-8"))
    shards = sorted(set(index["weight_map"].values()))
    tensors: dict[str, torch.Tensor] = {}
    for shard in shards:
        shard_path = _shard_path(index_path, shard)
        if not shard_path.is_file():
            raise ModelLoadError(
                f"shard {shard} listed in {index_path.name} is missing from {index_path.parent}; "
                "download the complete checkpoint."
            )
        tensors.update(reader(shard_path))
    return tensors


def _read_h5(path: Path) -> dict[str, torch.Tensor]:
    from coulisse.weights.tf_h5 import read_tf_h5

    return read_tf_h5(path)


READERS = {
    "model.safetensors": _read_safetensors,
    "model.safetensors.index.json": lambda p: _read_sharded(p, _read_safetensors),
    "pytorch_model.bin": _read_bin,
    "pytorch_model.bin.index.json": lambda p: _read_sharded(p, _read_bin),
    "tf_model.h5": _read_h5,
}


def find_weight_file(directory: Path) -> Path:
    for name in WEIGHT_FILES:
        if (directory / name).is_file():
            return directory / name
    found = sorted(p.name for p in directory.iterdir()) if directory.is_dir() else []
    raise ModelLoadError(
        f"no usable weight file in {directory} (found: {', '.join(found) or 'nothing'}); coulisse reads "
        f"{', '.join(WEIGHT_FILES)}. Download the weights, or save them with `model.save_pretrained(dir)`."
    )


def read_weights(directory: Path) -> tuple[dict[str, torch.Tensor], Path]:
    """Return every tensor of the checkpoint in `directory` and the file they came from."""
    path = find_weight_file(directory)
    try:
        tensors = READERS[path.name](path)
    except ModelLoadError:
        raise
    except Exception as e:  # each format fails in its own way on a corrupt file
        # torch's messages run over several lines; the CLI prints one, and the cause stays chained.
        cause = " ".join(str(e).split())
        cause = cause if len(cause) <= 200 else cause[:197] + "..."
        raise ModelLoadError(
            f"could not read {path} ({type(e).__name__}: {cause}); the file is corrupt or truncated — "
            "download it again."
        ) from e
    log.info("read %d tensors from %s", len(tensors), path)
    return tensors, path

"""Find and read a checkpoint's weight files: safetensors, PyTorch `.bin` (sharded or not), TF `.h5`."""

from __future__ import annotations

import io
import logging
import pickle
import pickletools
import re
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path

import torch

from coulisse.errors import ModelLoadError, UnsafeCheckpointError, type_of
from coulisse.jsonfile import read_json

log = logging.getLogger(__name__)

Expected = Callable[[str], "tuple[int, ...] | None"]

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


def _is_torch_zip(path: Path) -> bool:
    """Whether torch.load reads `path` as a zip: torch tests the local-header magic at the start, which is
    stricter than zipfile.is_zipfile (the end-of-directory record anywhere)."""
    with open(path, "rb") as f:
        return f.read(4) == b"PK\x03\x04"


def _check_zip_records(path: Path) -> None:
    """Refuse a record torch would unpack beyond the file's size. torch.save stores every record as is
    (ZIP_STORED, which mmap needs too), so a compressed record or one declaring more bytes than the whole file
    holds is crafted: torch's reader would inflate it in memory (1.6 MB of DEFLATE make 1.5 GB). Reads only
    the central directory."""
    size = path.stat().st_size
    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            if info.compress_type != zipfile.ZIP_STORED:
                method = zipfile.compressor_names.get(info.compress_type, f"method {info.compress_type}")
                problem = f"is stored compressed ({method}, declaring {info.file_size:,} bytes unpacked)"
            elif max(info.file_size, info.compress_size) > size:
                problem = f"declares {max(info.file_size, info.compress_size):,} bytes, more than the whole file"
            else:
                continue
            raise UnsafeCheckpointError(
                f"{path} ({size:,} bytes) is refused: its record {_shorten(repr(info.filename), 120)} {problem}, "
                "which torch.save never writes. Re-save the state dict with torch.save, or convert the checkpoint "
                "to model.safetensors."
            )


def _read_bin(path: Path) -> dict[str, torch.Tensor]:
    # weights_only: a .bin is a pickle, and a pickle can run code. mmap needs the zip format of
    # torch >= 1.6; older checkpoints use the legacy format and are read into memory.
    zipped = _is_torch_zip(path)
    if zipped:
        _check_zip_records(path)
    with warnings.catch_warnings():  # torch's "Detected pickle protocol 4" note: noise for a state dict
        warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
        state = torch.load(str(path), map_location="cpu", weights_only=True, mmap=zipped)
    if not isinstance(state, dict):
        raise ValueError(f"expected a state dict, found a {type(state).__name__}")
    for key, value in state.items():  # weights_only lets through lists, strings, ints...: not weights
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            what = (f"key {_shorten(repr(key), 120)} is {type_of(key)}, not a tensor name" if not isinstance(key, str)
                    else f"entry {_shorten(repr(key), 120)} holds {type_of(value)}, not a tensor")
            raise ModelLoadError(
                f"{path} is not a state dict of tensors: its {what}. Save the weights with "
                "model.save_pretrained(dir) or torch.save(model.state_dict(), path)."
            )
    return state


def allowed_roots(folder: Path) -> list[Path]:
    """Where a model folder's files may live, symlinks resolved: the folder, and in the Hub cache
    (`snapshots/<rev>/` holds symlinks into the repository's `blobs/`) that `blobs/` too."""
    folder = folder.resolve()
    return [folder, folder.parent.parent / "blobs"] if folder.parent.name == "snapshots" else [folder]


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
    roots = allowed_roots(folder)
    try:
        resolved = shard_path.resolve()
    except (RuntimeError, OSError) as e:  # a link loop (Python 3.11-3.12 raise RuntimeError, 3.13 OSError)
        raise UnsafeCheckpointError(
            f"shard path {shard!r} in {index_path} is a symlink that never reaches a file ({e}). Fix the link or "
            "download the checkpoint again.") from None
    if not any(resolved.is_relative_to(root) for root in roots):
        raise UnsafeCheckpointError(
            f"shard path {shard!r} in {index_path} is refused: it resolves to {resolved}, outside the model "
            f"folder {folder}. Fix the index's weight_map or download the checkpoint again."
        )
    return shard_path


class _UnreadableShard(Exception):
    def __init__(self, path: Path):
        super().__init__(str(path))
        self.path = path


def _read_sharded(index_path: Path, reader) -> dict[str, torch.Tensor]:
    index = read_json(index_path, fix="download the checkpoint again")
    shards = sorted(set(index["weight_map"].values()))
    tensors: dict[str, torch.Tensor] = {}
    found_in: dict[str, str] = {}
    for shard in shards:
        shard_path = _shard_path(index_path, shard)
        if not shard_path.is_file():
            there = shard_path.exists()  # a folder, a FIFO, a device: there, but no file to read
            raise ModelLoadError(
                f"shard {shard} listed in {index_path.name} is "
                f"{'not a regular file in' if there else 'missing from'} {index_path.parent}; "
                "download the complete checkpoint."
            )
        try:
            read = reader(shard_path)
        except ModelLoadError:
            raise
        except Exception as e:  # read_weights says it, naming this shard rather than the index
            raise _UnreadableShard(shard_path) from e
        for key, tensor in read.items():
            if key in found_in:  # which copy wins would depend on the shards' order
                raise ModelLoadError(f"tensor {key} is stored in two shards, {found_in[key]} and {shard}; the "
                                     "checkpoint is inconsistent: download it again.")
            found_in[key] = shard
            tensors[key] = tensor
    return tensors


def _read_h5(path: Path, expected: Expected | None) -> dict[str, torch.Tensor]:
    from coulisse.weights.tf_h5 import read_tf_h5

    return read_tf_h5(path, expected)


# Only the h5 reader needs the model's table up front: safetensors and zip `.bin` files are mapped (a tensor
# costs memory only once read, after gather_weights has compared its shape), their readers check each
# tensor against the bytes the file holds, and legacy `.bin` storages are read at their stored size.
READERS = {
    "model.safetensors": lambda p, e: _read_safetensors(p),
    "model.safetensors.index.json": lambda p, e: _read_sharded(p, _read_safetensors),
    "pytorch_model.bin": lambda p, e: _read_bin(p),
    "pytorch_model.bin.index.json": lambda p, e: _read_sharded(p, _read_bin),
    "tf_model.h5": _read_h5,
}


# weights there in a format coulisse does not read: (how its file names end, what it is, the way out)
UNREAD_FORMATS = (
    ("flax_model.msgpack", "Flax weights", "convert them once with transformers 4 and flax: "
     "`AutoModel.from_pretrained(dir, from_flax=True).save_pretrained(out)` (the task's Auto class for a head)"),
    ("flax_model.msgpack.index.json", "sharded Flax weights", "convert them once with transformers 4 and flax: "
     "`AutoModel.from_pretrained(dir, from_flax=True).save_pretrained(out)`"),
    ("tf_model.h5.index.json", "sharded TensorFlow weights (coulisse reads one tf_model.h5)", "convert them once "
     "with transformers 4 and TensorFlow: `AutoModel.from_pretrained(dir, from_tf=True).save_pretrained(out)`"),
    (".onnx", "an ONNX graph", "coulisse runs the checkpoint's PyTorch or TensorFlow weights: download the "
     "repository's model.safetensors (or pytorch_model.bin) beside it"),
    ("model.ckpt.index", "an original TensorFlow 1 checkpoint", "convert it with transformers' "
     "`convert_bert_original_tf_checkpoint_to_pytorch` script, then `save_pretrained`"),
)


def find_weight_file(directory: Path) -> Path:
    for name in WEIGHT_FILES:
        if (directory / name).is_file():
            return directory / name
    found = sorted(p.name for p in directory.iterdir()) if directory.is_dir() else []
    for ending, what, fix in UNREAD_FORMATS:
        there = next((name for name in found if name.endswith(ending)), None)
        if there is not None:
            raise ModelLoadError(f"{directory} holds {what} ({there}), which coulisse does not read; {fix}.")
    raise ModelLoadError(
        f"no usable weight file in {directory} (found: {', '.join(found) or 'nothing'}); coulisse reads "
        f"{', '.join(WEIGHT_FILES)}. Download the weights, or save them with `model.save_pretrained(dir)`."
    )


def read_weights(directory: Path, expected: Expected | None = None) -> tuple[dict[str, torch.Tensor], Path]:
    """Return every tensor of the checkpoint in `directory` and the file they came from. `expected` (a
    checkpoint key -> the shape the model's table wants, or None for a key it does not use; see
    `assign.expected_shapes`) lets a reader that must copy data check shapes first and skip unused tensors."""
    path = find_weight_file(directory)
    try:
        tensors = READERS[path.name](path, expected)
    except ModelLoadError:
        raise
    except Exception as e:  # each format fails in its own way on a corrupt file
        if isinstance(e, _UnreadableShard):  # the shard that failed, not the index that lists it
            path, e = e.path, e.__cause__
        # Not the file's fault: downloading it again would not help (audit 46)
        if isinstance(e, PermissionError):
            raise ModelLoadError(f"cannot read {path}: permission denied; give this user read access to the "
                                 "checkpoint's files (chmod a+r), or copy the folder somewhere it can read.") from e
        if isinstance(e, MemoryError):
            raise ModelLoadError(f"not enough memory to read {path} ({path.stat().st_size / 2**20:,.0f} MB); free "
                                 "memory, or use the checkpoint's model.safetensors, which is mapped rather than "
                                 "read whole.") from e
        wanted = _unsafe_global(path) if isinstance(e, pickle.UnpicklingError) else None
        if wanted is not None:  # weights_only refused to import what the pickle asks for
            raise UnsafeCheckpointError(
                f"{path} is refused: its pickle asks to import and call {wanted}, which a weights file never "
                "needs; coulisse reads .bin files with torch.load(weights_only=True), which runs no code from "
                "the file. Use the checkpoint's model.safetensors, or, only if you trust its source, convert it "
                "with transformers' save_pretrained(dir, safe_serialization=True)."
            ) from e
        # torch's messages run over several lines; the CLI prints one, and the cause stays chained.
        cause = _shorten(_torch_reason(e), 200)
        raise ModelLoadError(
            f"could not read {path} ({type(e).__name__}: {cause}); the file is corrupt or truncated — "
            "download it again."
        ) from e
    log.info("read %d tensors from %s", len(tensors), path)
    return tensors, path


def _shorten(text: str, limit: int) -> str:
    """`text` cut at a word boundary to at most `limit` characters."""
    if len(text) <= limit:
        return text
    return text[: limit - 3].rsplit(" ", 1)[0] + "..."


# What torch's weights_only unpickler accepts to import, where this torch does not list it (a private
# function): tensor rebuilding, storages, dtypes and plain containers. Not any `torch.` name: one such as
# `torch.storage._load_from_bytes` loads a nested pickle, which makes the file hostile, not damaged.
SAFE_GLOBAL = re.compile(
    r"^(torch\.(_utils\._rebuild_\w+|_tensor\._rebuild_from_type_v2|(storage\.)?\w*Storage|(sparse\.)?\w*Tensor|"
    r"Size|device|((b|c)?float|q?u?int|complex|bits)\d*(x\d+)?(_\w+)?|bool|half|double|long|short|per_\w+|"
    r"nn\.parameter\.Parameter|serialization\._get_layout)$|"
    r"_codecs\.encode$|collections\.(OrderedDict|Counter)$|builtins\.(set|frozenset|bytearray|complex)$)")


def _is_safe_global(name: str) -> bool:
    try:
        from torch._weights_only_unpickler import _get_allowed_globals

        return name in _get_allowed_globals()
    except (ImportError, AttributeError):  # a private function: gone in some torch, then the pattern
        return bool(SAFE_GLOBAL.match(name))


def _unsafe_global(path: Path) -> str | None:
    """The first `module.name` the pickle imports that torch's weights_only unpickler refuses, or None (then
    the pickle is damaged, not hostile)."""
    # Not the name in torch's message: torch also names a GLOBAL cut short by a truncated file. One outside
    # torch first (os.system says more than the _load_from_bytes a plainly pickled tensor also calls).
    unsafe = [g for g in _pickle_globals(path) if not _is_safe_global(g)]
    return next((g for g in unsafe if not g.startswith("torch.")), unsafe[0] if unsafe else None)


def _torch_reason(error: Exception) -> str:
    """The error's reason on one line; for torch's weights_only loader, its reason without the advice around
    it (re-run with weights_only=False, allowlist globals...)."""
    text = str(error)
    if "WeightsUnpickler error:" in text:
        paragraphs = [p for p in re.split(r"\n\s*\n", text.split("WeightsUnpickler error:", 1)[1]) if p.strip()]
        text = paragraphs[0].split(". ")[0] if paragraphs else text
    return " ".join(text.split()) or type(error).__name__


def _pickle_globals(path: Path, limit: int = 16 << 20) -> list[str]:
    """The `module.name`s a pickle imports, read with pickletools (which runs nothing). A zip `.bin` holds its
    pickle as `<archive>/data.pkl`; a legacy one is several pickles in a row, the state dict's among them."""
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                name = next((n for n in archive.namelist() if n.endswith("data.pkl")), None)
                if name is None:
                    data = b""
                else:  # not archive.read: a compressed entry would be inflated whole before the cut
                    with archive.open(name) as entry:
                        data = entry.read(limit)
        else:
            with open(path, "rb") as f:
                data = f.read(limit)
    except (OSError, zipfile.BadZipFile, NotImplementedError, RuntimeError):  # unknown method, encrypted
        return []
    found: list[str] = []
    stream = io.BytesIO(data)
    for _ in range(8):  # a legacy file: magic number, protocol, system info, then the state dict
        names: list[str] = []
        strings: list[str] = []
        try:
            for op, arg, _ in pickletools.genops(stream):
                if op.name in ("GLOBAL", "INST"):
                    names.append(str(arg).replace(" ", "."))
                elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
                    names.append(f"{strings[-2]}.{strings[-1]}")
                elif isinstance(arg, str):
                    strings.append(arg)
        except Exception:  # noqa: BLE001 - a damaged or truncated pickle: its names cannot be trusted
            break
        found += names  # only from a pickle read through to its STOP
        if stream.tell() >= len(data):
            break
    return found

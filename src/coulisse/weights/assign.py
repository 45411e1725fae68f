"""Copy checkpoint tensors into a module through a declarative name table, checking everything.

`sources(param_name)` gives the checkpoint keys that make up one of our parameters (several are
concatenated on dim 0: the fused query/key/value projection). A missing key, a wrong shape or a
checkpoint tensor that belongs to the encoder but is used by nothing is an error naming the key.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch
from torch import nn

from coulisse.errors import ModelLoadError, WeightShapeError
from coulisse.weights.mapped import file_mappings, release_tensor_pages

log = logging.getLogger(__name__)

# Buffers some checkpoints carry that hold no learned value.
IGNORED_SUFFIXES = ("position_ids", "token_type_ids")


def normalize_keys(tensors: dict[str, torch.Tensor], prefixes: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """Strip a base-model prefix (`roberta.`, `bert.`...) and rename old `gamma`/`beta` LayerNorm keys."""
    out: dict[str, torch.Tensor] = {}
    for key, value in tensors.items():
        for prefix in prefixes:
            if key.startswith(prefix + "."):
                key = "{base}." + key[len(prefix) + 1 :]
                break
        if key.endswith("LayerNorm.gamma"):
            key = key[: -len("gamma")] + "weight"
        elif key.endswith("LayerNorm.beta"):
            key = key[: -len("beta")] + "bias"
        out[key] = value
    return out


def lookup_tensor(tensors: dict[str, torch.Tensor], key: str) -> str | None:
    """Find `key` in the checkpoint. A base-model key may be stored with or without the prefix (base
    checkpoints have none); `a|b` names alternatives tried in order (e.g. a decoder tied to embeddings)."""
    for option in key.split("|"):
        if option in tensors:
            return option
        bare = option.removeprefix("{base}.")
        if option.startswith("{base}.") and bare in tensors:
            return bare
    return None


def gather_weights(module: nn.Module, tensors: dict[str, torch.Tensor],
                   sources: Callable[[str], list[str]], source_name: str) -> tuple[dict[str, torch.Tensor], set[str]]:
    """Build the state dict of `module` (fp32) from the checkpoint; also return the keys used.

    Each tensor's values are checked (`check_values`), which reads every page of a mapped file; those pages are
    dropped again right after, so that the check does not leave the whole checkpoint resident: an int8 pipeline
    whose quantized weights come from the cache never reads the float ones again (a camembert-base int8 load
    peaked at 861 MB RSS with them resident, 609 MB before the check), and the others read them back from the
    page cache when they prepack or use them."""
    used: set[str] = set()
    state: dict[str, torch.Tensor] = {}
    mappings = file_mappings()
    for name, param in module.named_parameters():
        keys = sources(name)
        # Fused parameters (query/key/value) stack equal parts on dim 0: check each part on its own,
        # so the message names the checkpoint key and its own shape.
        expected = (param.shape[0] // len(keys), *param.shape[1:])
        parts = []
        for key in keys:
            found = lookup_tensor(tensors, key)
            if found is None:
                raise ModelLoadError(
                    f"{source_name} has no tensor {key.replace('{base}.', '')!r} (needed for {name}, "
                    f"shape {tuple(param.shape)}); the checkpoint does not match its config.json."
                )
            if tuple(tensors[found].shape) != expected:
                raise WeightShapeError(
                    f"tensor {found.replace('{base}.', '')} in {source_name} has shape "
                    f"{tuple(tensors[found].shape)}, but the config implies {expected}; "
                    "check config.json (hidden_size, vocab_size, num_labels...)."
                )
            check_values(tensors[found], found.replace("{base}.", ""), source_name)
            release_tensor_pages([tensors[found]], mappings=mappings)  # read-only: they come back on demand
            used.add(found)
            parts.append(tensors[found])
        value = parts[0] if len(parts) == 1 else torch.cat(parts, 0)
        state[name] = value.to(torch.float32)
    return state, used


READABLE_FLOATS = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


def check_values(tensor: torch.Tensor, key: str, source_name: str) -> None:
    """A parameter is a finite real float: an integer, boolean or complex tensor would be cast without a word
    (an int8 bias read as -3.0, a complex table losing its imaginary part), and a NaN or an infinity makes
    every score NaN. ~30 ms over a base model's 110 M values (a min and a max, NaN propagating). A float8
    tensor is refused too: without the scales of a quantization scheme its values are not the weights."""
    if tensor.dtype not in READABLE_FLOATS:
        kind = "float8 values without their quantization scales" if tensor.is_floating_point() else "values"
        raise ModelLoadError(f"tensor {key} in {source_name} holds {str(tensor.dtype).removeprefix('torch.')} "
                             f"{kind}, where a model parameter is a float (float32, float16, bfloat16): the file "
                             "is corrupt, not a model's, or quantized for another runtime. Use a float32, float16 or "
                             "bfloat16 checkpoint.")
    if tensor.numel():
        low, high = tensor.aminmax()
        if not (torch.isfinite(low) and torch.isfinite(high)):
            raise ModelLoadError(f"tensor {key} in {source_name} holds NaN or infinite values: the checkpoint is "
                                 "broken (a diverged training, an fp16 overflow when it was saved). Use another "
                                 "revision, or save it again from a sound model.")


def expected_shapes(module: nn.Module, sources: Callable[[str], list[str]],
                    prefixes: tuple[str, ...]) -> Callable[[str], tuple[int, ...] | None]:
    """The model's name table as a lookup: a checkpoint key, as stored (`roberta.encoder...` or bare), ->
    the shape gather_weights will want for it, or None when no parameter reads it. Built from the module on
    the meta device, so a reader can check a tensor's declared shape before reading a byte of it."""
    table: dict[str, tuple[int, ...]] = {}
    for name, param in module.named_parameters():
        keys = sources(name)
        shape = (param.shape[0] // len(keys), *param.shape[1:])
        for key in keys:
            for option in key.split("|"):
                table[option] = shape
                if option.startswith("{base}."):  # base checkpoints store it without the prefix
                    table[option.removeprefix("{base}.")] = shape

    def lookup(checkpoint_key: str) -> tuple[int, ...] | None:
        (key,) = normalize_keys({checkpoint_key: None}, prefixes)
        return table.get(key)

    return lookup


# the config field that decides whether a tensor is used, by a part of its name; else num_hidden_layers
CONFIG_FIELDS = (("token_type_embeddings", "type_vocab_size"), ("position_embeddings", "position_biased_input"),
                 ("rel_embeddings", "relative_attention"))


def check_unused(tensors: dict[str, torch.Tensor], used: set[str], source_name: str,
                 encoder_roots: tuple[str, ...] = ("embeddings", "encoder", "transformer")) -> None:
    """Encoder tensors nobody used mean a layout we misread; other heads' tensors are fine. Encoder
    tensors are those under `encoder_roots`, the top-level names of the base model's checkpoint keys,
    with or without the base-model prefix."""
    unused = [k for k in tensors if k not in used and not k.endswith(IGNORED_SUFFIXES)]
    roots = tuple(f"{root}." for root in encoder_roots)
    encoder = [k for k in unused if k.removeprefix("{base}.").startswith(roots)]
    if encoder:
        key = encoder[0].replace("{base}.", "")
        field = next((f for part, f in CONFIG_FIELDS if part in key), "num_hidden_layers")
        raise ModelLoadError(
            f"{source_name} has {len(encoder)} encoder tensor(s) that coulisse does not use, e.g. {key!r} "
            f"{tuple(tensors[encoder[0]].shape)}; {field} in config.json may be wrong."
        )
    if unused:
        log.info("ignored %d tensors not needed for this task (e.g. %s)", len(unused),
                 unused[0].replace("{base}.", ""))

"""Write weights in transformers' layout: our parameter names back to checkpoint keys, then safetensors.

The inverse of `coulisse.weights.assign`. A parameter's name table (`sources`) gives the checkpoint keys it
was read from: a fused parameter (query/key/value) is split back into its equal parts on dim 0; of the
alternatives `a|b` the first is the head's own key and the second the tensor it falls back to (a decoder
tied to the word embeddings). A head tensor equal to the tensor it is tied to is left out, as transformers'
`save_pretrained` leaves it out: loading ties it again. An untied one is written, and the caller must say
`tie_word_embeddings: false` in config.json, or transformers would overwrite it with the embeddings; its bias
is then written under both of its names too (`cls.predictions.decoder.bias|cls.predictions.bias`: the decoder's
own first), since with that flag transformers 5 ties neither and its decoder reads its own.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterable
from pathlib import Path

import torch
from torch import Tensor

BASE = "{base}."


def _checkpoint_key(key: str, prefix: str) -> str:
    """`{base}.encoder...` -> `roberta.encoder...` (a head model) or `encoder...` (a base model)."""
    return prefix + key.removeprefix(BASE) if key.startswith(BASE) else key


def checkpoint_tensors(params: Iterable[tuple[str, Tensor]], sources: Callable[[str], list[str]],
                       prefix: str) -> tuple[dict[str, Tensor], bool | None]:
    """Our named parameters -> {transformers checkpoint key: tensor}, and whether a head is tied to the
    word embeddings (True: its tensor left out; False: written apart; None: no such head).

    `prefix` is the base-model prefix with its dot ("roberta."), or "" for a base model, whose checkpoint
    keys transformers writes bare."""
    out: dict[str, Tensor] = {}
    tied_heads: list[tuple[str, str, Tensor]] = []  # (own key, tied-to key, tensor), decided once all are out
    aliases: dict[str, Tensor] = {}  # a head tensor's second name, written only when the head is untied
    for name, value in params:
        keys = sources(name)
        parts = value.chunk(len(keys), 0) if len(keys) > 1 else (value,)
        for key, part in zip(keys, parts, strict=True):
            own, _, fallback = key.partition("|")
            if fallback and not fallback.startswith(BASE) and own.endswith(name.removeprefix("head.")):
                # The decoder's bias under its own name first (what loading reads when both are there), and
                # the head's bias it is tied to, which is what transformers writes: that one always.
                own, fallback = fallback, own
            own = _checkpoint_key(own, prefix)
            if fallback.startswith(BASE):
                tied_heads.append((own, _checkpoint_key(fallback, prefix), part))
                continue
            if fallback:
                aliases[fallback] = part
            if own in out:  # a head reading a base tensor (DeBERTa's decoder: the word embeddings)
                if not torch.equal(out[own], part):
                    raise RuntimeError(f"{name} and another parameter both map to {own} with different values; "
                                       "this is a bug in coulisse's name table")
            else:
                out[own] = part
    if not tied_heads:
        return out, None
    tied = all(target in out and torch.equal(out[target], part) for _, target, part in tied_heads)
    if not tied:  # config.json will untie every pair: each tensor under each of its names
        out.update({own: part for own, _, part in tied_heads}, **aliases)
    return out, tied


def save_safetensors(tensors: dict[str, Tensor], path: Path, dtype: torch.dtype) -> None:
    """`model.safetensors` in `dtype`, with the `{"format": "pt"}` metadata transformers looks for. Every
    tensor is copied: views of one fused parameter, or tensors sharing a mapped file, cannot be saved."""
    from safetensors.torch import save_file

    data = {key: t.detach().to(device="cpu", dtype=dtype, copy=True).contiguous()
            for key, t in sorted(tensors.items())}
    save_file(data, str(path), metadata={"format": "pt"})
    # safetensors makes the file private to its owner (0600); give it the permissions of any file created here.
    probe = path.with_name(path.name + ".mode")
    probe.touch()
    mode = stat.S_IMODE(probe.stat().st_mode)
    probe.unlink()
    os.chmod(path, mode)

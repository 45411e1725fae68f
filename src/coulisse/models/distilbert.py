"""DistilBERT: the BERT encoder without token types or pooler, under other checkpoint names.

The computation is BERT's (post-LayerNorm blocks, learned or frozen-sinusoidal position table read
from the checkpoint), so this file is only the weight-name table onto `coulisse.models.bert`.
"""

from __future__ import annotations

import re

_LAYER = re.compile(r"^encoder\.layer\.(\d+)\.(.+)$")
_RENAMES = {
    "attention.output.dense": "attention.out_lin",
    "attention.output.LayerNorm": "sa_layer_norm",
    "intermediate.dense": "ffn.lin1",
    "output.dense": "ffn.lin2",
    "output.LayerNorm": "output_layer_norm",
}


def checkpoint_keys(name: str) -> list[str]:
    """Checkpoint keys (prefix `distilbert.` removed) that make up our parameter `name`."""
    m = _LAYER.match(name)
    if not m:
        return [name]  # embeddings.* are named alike
    index, rest = m.groups()
    module, _, param = rest.rpartition(".")
    base = f"transformer.layer.{index}"
    if module == "attention.self.qkv":
        return [f"{base}.attention.{p}.{param}" for p in ("q_lin", "k_lin", "v_lin")]
    return [f"{base}.{_RENAMES[module]}.{param}"]

"""MPNet (sentence-transformers/all-mpnet-base-v2, MPNet classifiers), inference only.

What differs from BERT (`coulisse.models.bert`), whose packed layout (`Packed`), embeddings and feed-forward
blocks it shares:

- embeddings: RoBERTa's (positions numbered from padding index + 1), without token types. transformers'
  MPNet fixes that padding index at 1 whatever `pad_token_id` says, and so does the family row;
- attention: BERT's post-LayerNorm blocks under other checkpoint names (`attention.attn.q/k/v/o`,
  `attention.LayerNorm`), plus one relative-position bias, a `(buckets, heads)` table the encoder owns
  (`relative_attention_bias`), looked up once per forward and added to the scores of every layer;
- distances go to T5's bidirectional buckets: half of them for keys before the query, half after; in each
  half, distances below a quarter of the buckets exact, longer ones log-spaced up to 128, beyond which they
  share the last bucket. transformers computes them with 32 buckets whatever `relative_attention_num_buckets`
  says (the table's rows past 32 are never read); so does this module.

The encoder and its layers are BERT's (`coulisse.models.bert`), handed the bias as a table by offset (`RelativeBias`):
the C attention kernel adds it to the scores over the packed batch (models/fastpath.py), so MPNet takes every CPU
fast path BERT takes (int8 codes between layers, bf16 products, AMX tiles); SDPA, where there is no kernel, runs
per sequence with the top-left block of the batch's bias. Relative distances depend only on positions inside a
sequence, so a text gives the same bits alone or in any batch either way (a `Trace` that keeps the
probabilities takes the padded layout of the whole batch instead).
"""

from __future__ import annotations

import dataclasses
import math

import torch
from torch import Tensor, nn

from coulisse.config import EncoderConfig
from coulisse.errors import UnsupportedModelError
from coulisse.models import bert
from coulisse.models.bert import Embeddings, Packed, RelativeBias, Trace

# transformers' MPNetEncoder.compute_position_bias: its defaults, never read from the config.
BUCKETS = 32
MAX_DISTANCE = 128


def buckets(n: Tensor) -> Tensor:
    """The bucket of each distance `n` = query position minus key position, with transformers' float32 steps, so
    that every truncation to an integer lands alike."""
    half = BUCKETS // 2
    exact = half // 2
    side = (n < 0).long() * half  # keys after the query take the upper half
    n = n.abs()
    far = exact + (torch.log(n.float() / exact) / math.log(MAX_DISTANCE / exact) * (half - exact)).long()
    far = far.clamp(max=half - 1)
    return side + torch.where(n < exact, n, far)


def relative_buckets(width: int, device: torch.device) -> Tensor:
    """`(L, L)` bucket of query i and key j for a padded width L."""
    pos = torch.arange(width, device=device)
    return buckets(pos[:, None] - pos[None, :])


class Encoder(bert.Encoder):
    """BERT's encoder, plus the bias table by relative bucket that every layer adds to its scores."""

    def __init__(self, config: EncoderConfig):
        rows = int(config.raw.get("relative_attention_num_buckets") or BUCKETS)
        if rows < BUCKETS:  # transformers' lookup would index past the table
            raise UnsupportedModelError(
                f"relative_attention_num_buckets={rows} in config.json; MPNet looks up {BUCKETS} relative "
                f"buckets whatever the config says, so its table needs at least {BUCKETS} rows. Fix config.json.")
        super().__init__(config)
        self.relative_attention_bias = nn.Embedding(rows, config.num_attention_heads)

    def position_bias(self, width: int, device: torch.device) -> RelativeBias:
        """Each head's bias by the key's offset from the query, for sequences of up to `width` tokens."""
        offsets = torch.arange(1 - width, width, device=device)  # key minus query
        return RelativeBias(self.relative_attention_bias(buckets(-offsets)).T.float())  # (h, 2 width - 1)

    def forward(self, x: Tensor, p: Packed, first_only: bool = False, trace: Trace | None = None) -> Tensor:
        return super().forward(x, p, first_only, trace, self.position_bias(p.max_len, x.device))


class MPNetModel(nn.Module):
    """Embeddings + encoder: packed token ids in, packed hidden states `(T, H)` out."""

    def __init__(self, config: EncoderConfig):
        super().__init__()
        self.config = config
        # MPNet embeds no token types, whatever a config.json's type_vocab_size says
        self.embeddings = Embeddings(dataclasses.replace(config, type_vocab_size=0))
        self.encoder = Encoder(config)

    @property
    def input_embeddings(self) -> nn.Embedding:
        """The word-vector table that `inputs_embeds` stands in for."""
        return self.embeddings.word_embeddings

    def forward(self, p: Packed, first_only: bool = False, inputs_embeds: Tensor | None = None,
                trace: Trace | None = None) -> Tensor:
        """Packed hidden states `(T, H)`, or only each sequence's first token `(B, H)`; `inputs_embeds` and
        `trace` as in `coulisse.models.bert.BertModel`."""
        return self.encoder(self.embeddings(p, inputs_embeds), p, first_only, trace)


# Our names (inside a layer) -> MPNet's checkpoint names.
_RENAMED = {".attention.output.dense.": ".attention.attn.o.", ".attention.output.LayerNorm.": ".attention.LayerNorm."}


def checkpoint_keys(name: str) -> list[str]:
    """Checkpoint keys (prefix `mpnet.` removed) that make up our parameter `name`."""
    if ".attention.self.qkv." in name:
        return [name.replace(".self.qkv.", f".attn.{part}.") for part in ("q", "k", "v")]
    for ours, theirs in _RENAMED.items():
        if ours in name:
            return [name.replace(ours, theirs)]
    return [name]

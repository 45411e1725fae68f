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

Relative distances depend only on positions inside a sequence: each sequence's attention runs alone on its
own rows, with the top-left block of the batch's bias, so a text gives the same bits alone or in any batch
(a `Trace`, which keeps the probabilities, takes the padded layout of the whole batch instead).
"""

from __future__ import annotations

import dataclasses
import math

import torch
from torch import Tensor, nn

from coulisse.config import EncoderConfig
from coulisse.errors import UnsupportedModelError
from coulisse.models.bert import DenseNorm, Embeddings, Intermediate, Packed, Trace, attend, padded_rows

# transformers' MPNetEncoder.compute_position_bias: its defaults, never read from the config.
BUCKETS = 32
MAX_DISTANCE = 128


def relative_buckets(width: int, device: torch.device) -> Tensor:
    """`(L, L)` bucket of query i and key j for a padded width L, with transformers' float32 steps, so that
    every truncation to an integer lands alike."""
    pos = torch.arange(width, device=device)
    n = pos[:, None] - pos[None, :]  # (L, L) query minus key: -(key - query)
    half = BUCKETS // 2
    exact = half // 2
    side = (n < 0).long() * half  # keys after the query take the upper half
    n = n.abs()
    far = exact + (torch.log(n.float() / exact) / math.log(MAX_DISTANCE / exact) * (half - exact)).long()
    far = far.clamp(max=half - 1)
    return side + torch.where(n < exact, n, far)


class RelativeSelfAttention(nn.Module):
    def __init__(self, config: EncoderConfig):
        super().__init__()
        self.heads, self.head_dim = config.num_attention_heads, config.head_dim
        # q, k and v in one GEMM: (T, H) @ (H, 3H)
        self.qkv = nn.Linear(config.hidden_size, 3 * config.hidden_size)

    def forward(self, x: Tensor, p: Packed, bias: Tensor, first_only: bool = False,
                trace: Trace | None = None) -> Tensor:
        """`(T, H)` -> `(T, H)`; with `first_only`, only each sequence's first query: `(B, H)`. `bias`:
        `(1, h, L, L)` added to the scores. Without a trace, one SDPA per sequence on views of the packed
        rows: a text gives the same bits alone as in any batch."""
        qkv = self.qkv(x)  # (T, 3H)
        if trace is not None:
            return self.attend_padded(qkv, p, bias, first_only, trace)
        H = qkv.shape[1] // 3
        out = qkv.new_empty(p.batch_size if first_only else qkv.shape[0], H)
        start = 0
        for b, n in enumerate(p.lengths):
            q, k, v = qkv[start:start + n].view(1, n, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
            rows = 1 if first_only else n  # q, k, v: (1, h, n, d)
            seq = attend(q[:, :, :rows], k, v, bias[:, :, :rows, :n].to(q.dtype))[0]  # (h, rows, d)
            seq = seq.transpose(0, 1).reshape(rows, H)
            if first_only:
                out[b] = seq[0]
            else:
                out[start:start + n] = seq
            start += n
        return out

    def attend_padded(self, qkv: Tensor, p: Packed, bias: Tensor, first_only: bool, trace: Trace) -> Tensor:
        """One attention over the padded layout `(B, L, 3H)`, padded keys masked: the probabilities a trace keeps."""
        B, L = p.batch_size, p.max_len
        q, k, v = padded_rows(qkv, p).view(B, L, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)  # (B, h, L, d)
        if first_only:
            q, bias = q[:, :, :1], bias[:, :, :1]  # (B, h, 1, d), (1, h, 1, L)
        mask = bias.to(q.dtype)
        if p.key_mask is not None:
            mask = mask.masked_fill(~p.key_mask, float("-inf"))  # (B, h, Lq, L)
        out = attend(q, k, v, mask, trace=trace).permute(0, 2, 1, 3).flatten(2)  # (B, Lq, H)
        if first_only:
            return out[:, 0]  # (B, H)
        flat = out.reshape(B * L, -1)
        return flat if p.key_mask is None else flat[p.scatter]  # (T, H)


class Attention(nn.Module):
    def __init__(self, config: EncoderConfig):
        super().__init__()
        self.self = RelativeSelfAttention(config)
        self.output = DenseNorm(config.hidden_size, config.hidden_size, config.layer_norm_eps)

    def forward(self, x: Tensor, p: Packed, bias: Tensor, first_only: bool, trace: Trace | None = None) -> Tensor:
        residual = x[p.starts] if first_only else x
        return self.output(self.self(x, p, bias, first_only, trace), residual)


class Layer(nn.Module):
    def __init__(self, config: EncoderConfig):
        super().__init__()
        self.attention = Attention(config)
        self.intermediate = Intermediate(config)
        self.output = DenseNorm(config.intermediate_size, config.hidden_size, config.layer_norm_eps)

    def forward(self, x: Tensor, p: Packed, bias: Tensor, first_only: bool, trace: Trace | None = None) -> Tensor:
        x = self.attention(x, p, bias, first_only, trace)
        return self.output(self.intermediate(x), x)


class Encoder(nn.Module):
    def __init__(self, config: EncoderConfig):
        super().__init__()
        buckets = int(config.raw.get("relative_attention_num_buckets") or BUCKETS)
        if buckets < BUCKETS:  # transformers' lookup would index past the table
            raise UnsupportedModelError(
                f"relative_attention_num_buckets={buckets} in config.json; MPNet looks up {BUCKETS} relative "
                f"buckets whatever the config says, so its table needs at least {BUCKETS} rows. Fix config.json.")
        self.layer = nn.ModuleList(Layer(config) for _ in range(config.num_hidden_layers))
        self.relative_attention_bias = nn.Embedding(buckets, config.num_attention_heads)

    def position_bias(self, width: int, device: torch.device) -> Tensor:
        """`(1, h, L, L)`: the bias of each (query, key) distance, per head."""
        return self.relative_attention_bias(relative_buckets(width, device)).permute(2, 0, 1)[None]

    def forward(self, x: Tensor, p: Packed, first_only: bool = False, trace: Trace | None = None) -> Tensor:
        bias = self.position_bias(p.max_len, x.device)
        last = len(self.layer) - 1
        if trace is not None:
            trace.hidden_states.append(x)
        for i, layer in enumerate(self.layer):
            # A sequence head reads only the first token: its last layer computes only those queries.
            x = layer(x, p, bias, first_only and i == last, trace)
            if trace is not None:
                trace.hidden_states.append(x)
        return x


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

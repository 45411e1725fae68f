"""FlauBERT (transformers' XLM architecture), inference only.

What differs from BERT (`coulisse.models.bert`, whose packed layout and attention it shares):

- embeddings: word + learned absolute position, LayerNorm (`layer_norm_emb`); no token-type table: token
  type ids, when a caller passes some, are looked up in the word table, as transformers does. Language
  embeddings are added only for a `langs` input, which no tokenizer returns: not built;
- blocks are flat lists under the base model (`attentions`, `layer_norm1`, `ffns`, `layer_norm2`), one
  entry per layer, as in the checkpoints;
- the feed-forward is 4 x the width, GELU or ReLU (`gelu_activation`);
- post-LayerNorm by default; with `pre_norm`, each sub-block normalises its input instead, and nothing
  normalises the last layer's output (transformers 5 itself fails on such models: tested against its
  code with that failure patched around, tests/models/test_families.py).
"""

from __future__ import annotations

from torch import Tensor, nn

from coulisse.config import EncoderConfig
from coulisse.errors import UnsupportedModelError
from coulisse.models.bert import ACTIVATIONS, Packed, SelfAttention, Trace


class MultiHeadAttention(SelfAttention):
    """Query, key and value in one GEMM (`qkv`, from q_lin, k_lin, v_lin), then `out_lin`."""

    def __init__(self, config: EncoderConfig):
        super().__init__(config)
        self.out_lin = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, x: Tensor, p: Packed, first_only: bool = False, trace: Trace | None = None) -> Tensor:
        return self.out_lin(super().forward(x, p, first_only, trace))


class TransformerFFN(nn.Module):
    act_input = "lin1"  # `act` applies to this child's output: int8 fuses the two (models/quantize.py)

    def __init__(self, config: EncoderConfig):
        super().__init__()
        self.lin1 = nn.Linear(config.hidden_size, config.intermediate_size)
        self.lin2 = nn.Linear(config.intermediate_size, config.hidden_size)
        self.act = ACTIVATIONS[config.hidden_act]

    def forward(self, x: Tensor) -> Tensor:
        return self.lin2(self.act(self.lin1(x)))


class FlaubertModel(nn.Module):
    """Embeddings + layers: packed token ids in, packed hidden states `(T, H)` out."""

    def __init__(self, config: EncoderConfig):
        super().__init__()
        if config.raw.get("causal", False) or not config.raw.get("is_encoder", True):
            raise UnsupportedModelError("config.json describes a causal (decoder) FlauBERT; coulisse runs "
                                        "encoders (causal: false, is_encoder: true).")
        self.config = config
        H, eps = config.hidden_size, config.layer_norm_eps
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, H)
        self.embeddings = nn.Embedding(config.vocab_size, H)
        self.layer_norm_emb = nn.LayerNorm(H, eps=eps)
        n = config.num_hidden_layers
        self.attentions = nn.ModuleList(MultiHeadAttention(config) for _ in range(n))
        self.layer_norm1 = nn.ModuleList(nn.LayerNorm(H, eps=eps) for _ in range(n))
        self.ffns = nn.ModuleList(TransformerFFN(config) for _ in range(n))
        self.layer_norm2 = nn.ModuleList(nn.LayerNorm(H, eps=eps) for _ in range(n))
        self.pre_norm = config.pre_norm

    @property
    def encoder(self) -> nn.Module:
        """The module holding the layers, whose linear layers the fast paths rewrite (oneDNN packing, int8):
        here the base model itself, since the layers hang off it."""
        return self

    @property
    def input_embeddings(self) -> nn.Embedding:
        """The word-vector table that `inputs_embeds` stands in for (token types, when given, still read it)."""
        return self.embeddings

    def forward(self, p: Packed, first_only: bool = False, inputs_embeds: Tensor | None = None,
                trace: Trace | None = None) -> Tensor:
        """Packed hidden states `(T, H)`, or only each sequence's first token `(B, H)`; `inputs_embeds` and
        `trace` as in `coulisse.models.bert.BertModel`."""
        words = self.embeddings(p.input_ids) if inputs_embeds is None else inputs_embeds
        x = words + self.position_embeddings(p.position_ids)  # (T, H)
        if p.token_type_ids is not None:
            x = x + self.embeddings(p.token_type_ids)
        x = self.layer_norm_emb(x)
        if trace is not None:
            trace.hidden_states.append(x)
        last = len(self.attentions) - 1
        for i, (attention, norm1, ffn, norm2) in enumerate(
                zip(self.attentions, self.layer_norm1, self.ffns, self.layer_norm2, strict=True)):
            # In the last layer, a sequence head needs only the first token's query and feed-forward.
            first = first_only and i == last
            residual = x[p.starts] if first else x  # (T or B, H)
            if self.pre_norm:
                x = residual + attention(norm1(x), p, first, trace)
                x = x + ffn(norm2(x))
            else:
                x = norm1(residual + attention(x, p, first, trace))
                x = norm2(x + ffn(x))
            if trace is not None:
                trace.hidden_states.append(x)
        return x


def checkpoint_keys(name: str) -> list[str]:
    """Checkpoint keys (prefix `transformer.` removed) that make up our parameter `name`."""
    if ".qkv." in name:
        return [name.replace(".qkv.", f".{part}.") for part in ("q_lin", "k_lin", "v_lin")]
    return [name]

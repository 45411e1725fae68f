"""ModernBERT (ModernBERT, ModernCamemBERT, gte / nomic ModernBERT embedders), inference only.

What differs from BERT (`coulisse.models.bert`, whose packed layout and attention it shares):

- embeddings: word vectors and a LayerNorm, no position or token-type table;
- pre-norm blocks: each sub-block normalises its input and adds its output to the residual stream (the first
  layer's attention reads the embeddings as they are), and a last LayerNorm (`final_norm`) closes the encoder.
  LayerNorms have no bias unless `norm_bias`; the linear layers none unless `attention_bias` / `mlp_bias`;
- positions are rotary: each query and key is rotated by an angle proportional to its position in its sequence,
  with one base (`rope_theta`) for the global layers and another for the local ones;
- local layers (`layer_types`, or every layer whose index is not a multiple of `global_attn_every_n_layers`)
  let a token attend only to the keys at most `local_attention // 2` positions away; the others see the
  whole sequence;
- the feed-forward is a GeGLU: one GEMM (`Wi`) makes an input and a gate, `act(input) * gate` goes to `Wo`;
- heads read a prediction head (dense, `classifier_activation`, LayerNorm) on the first token or on the mean of
  the sequence's tokens (`classifier_pooling`), then `classifier`; masked LM decodes with the word vectors.

Positions count from each sequence's first token, as the packed layout numbers them; transformers numbers the
columns of a padded batch, which is the same for right padding, and rotary attention depends on differences of
positions only. Config fields follow transformers' `ModernBertConfig` with its defaults (`ModernBertOptions`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from coulisse.config import EncoderConfig
from coulisse.errors import UnsupportedModelError
from coulisse.models.bert import ACTIVATIONS, Packed, Trace, attend, packed_attention, padded_rows

LAYER_TYPES = ("full_attention", "sliding_attention")
DEFAULT_THETAS = {"full_attention": 160_000.0, "sliding_attention": 10_000.0}
OLD_THETA_KEYS = {"full_attention": "global_rope_theta", "sliding_attention": "local_rope_theta"}
POOLINGS = ("cls", "mean")


def _activation(name: str, field: str):
    if name not in ACTIVATIONS:
        raise UnsupportedModelError(f"{field}={name!r} in config.json; coulisse runs ModernBERT with "
                                    f"{', '.join(sorted(ACTIVATIONS))}.")
    return ACTIVATIONS[name]


def _layer_types(raw: dict, layers: int) -> tuple[str, ...]:
    types = raw.get("layer_types")
    if types is None:  # configs written before transformers 5: every n-th layer (0 included) is global
        every = raw.get("global_attn_every_n_layers", 3)
        return tuple("sliding_attention" if i % every else "full_attention" for i in range(layers))
    if not isinstance(types, list) or len(types) != layers or any(t not in LAYER_TYPES for t in types):
        raise UnsupportedModelError(f"layer_types={types!r} in config.json; ModernBERT takes one of "
                                    f"{', '.join(LAYER_TYPES)} per layer ({layers} layer{'' if layers == 1 else 's'}).")
    return tuple(types)


def _thetas(raw: dict) -> dict[str, float]:
    """The rotary base of each layer type: transformers 5's `rope_parameters`, else the older
    `global_rope_theta` / `local_rope_theta`, else the defaults. Only plain ("default") rotary runs here."""
    params = raw.get("rope_parameters") or {}
    scaling = raw.get("rope_scaling") or {}
    thetas = {}
    for kind in LAYER_TYPES:
        own = params.get(kind) if isinstance(params, dict) else None
        own = own if isinstance(own, dict) else {}
        rope_type = own.get("rope_type", scaling.get("rope_type", scaling.get("type", "default")))
        if rope_type != "default":
            raise UnsupportedModelError(f"rope_type={rope_type!r} for {kind} in config.json; coulisse runs "
                                        "ModernBERT with plain rotary positions (rope_type 'default').")
        theta = own.get("rope_theta", raw.get(OLD_THETA_KEYS[kind], DEFAULT_THETAS[kind]))
        if isinstance(theta, bool) or not isinstance(theta, (int, float)) or not theta > 1:
            raise UnsupportedModelError(f"rope_theta={theta!r} for {kind} in config.json; a rotary base is a "
                                        "number above 1 (ModernBERT's: 160000 global, 10000 local).")
        thetas[kind] = float(theta)
    return thetas


@dataclass(frozen=True)
class ModernBertOptions:
    """The ModernBERT fields of config.json, with transformers' defaults."""

    layer_types: tuple[str, ...]  # "full_attention" or "sliding_attention", per layer
    window: int  # a local layer's query attends to keys at most this many positions away
    thetas: dict[str, float]  # rotary base, per layer type
    norm_bias: bool
    attention_bias: bool
    mlp_bias: bool
    classifier_pooling: str  # "cls" or "mean"
    classifier_bias: bool
    classifier_activation: str
    decoder_bias: bool

    @classmethod
    def from_config(cls, config: EncoderConfig) -> ModernBertOptions:
        raw = config.raw
        pooling = raw.get("classifier_pooling", "cls")
        if pooling not in POOLINGS:
            raise UnsupportedModelError(f"classifier_pooling={pooling!r} in config.json; ModernBERT pools with "
                                        f"{' or '.join(POOLINGS)}.")
        activation = str(raw.get("classifier_activation", "gelu"))
        _activation(activation, "classifier_activation")
        return cls(
            layer_types=_layer_types(raw, config.num_hidden_layers),
            window=int(raw.get("local_attention", 128)) // 2,
            thetas=_thetas(raw),
            norm_bias=bool(raw.get("norm_bias", False)),
            attention_bias=bool(raw.get("attention_bias", False)),
            mlp_bias=bool(raw.get("mlp_bias", False)),
            classifier_pooling=pooling,
            classifier_bias=bool(raw.get("classifier_bias", False)),
            classifier_activation=activation,
            decoder_bias=bool(raw.get("decoder_bias", True)),
        )


# -- rotary positions --------------------------------------------------------------------------------------


def rotary_tables(positions: Tensor, head_dim: int, theta: float) -> tuple[Tensor, Tensor]:
    """cos and sin `(T, d)` of each position's angles, in float32 as transformers computes them: the
    frequencies `theta^(-2i/d)` for the first half of a head, repeated for the second."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float) / head_dim))
    freqs = positions[:, None].float() * inv_freq.to(positions.device)  # (T, d/2)
    angles = torch.cat((freqs, freqs), dim=-1)  # (T, d)
    return angles.cos(), angles.sin()


def rotate(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotary embedding of `(T, h, d)` rows: each half-pair of a head rotated by its position's angle."""
    half = x.shape[-1] // 2
    turned = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos[:, None] + turned * sin[:, None]


# -- blocks ------------------------------------------------------------------------------------------------


def norm(config: EncoderConfig, opts: ModernBertOptions) -> nn.LayerNorm:
    return nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps, bias=opts.norm_bias)


class Embeddings(nn.Module):
    def __init__(self, config: EncoderConfig, opts: ModernBertOptions):
        super().__init__()
        self.tok_embeddings = nn.Embedding(config.vocab_size, config.hidden_size)
        self.norm = norm(config, opts)

    def forward(self, p: Packed, inputs_embeds: Tensor | None = None) -> Tensor:
        """`inputs_embeds` `(T, H)` stands for the word vectors of `p.input_ids`."""
        return self.norm(self.tok_embeddings(p.input_ids) if inputs_embeds is None else inputs_embeds)


def band(n: int, window: int, device: torch.device) -> Tensor:
    """`(n, n)` True where query i may attend to key j: |i - j| <= window."""
    at = torch.arange(n, device=device)
    return (at[:, None] - at[None, :]).abs() <= window


def band_bias(width: int, window: int, device: torch.device) -> Tensor:
    """A local layer's window as a relative bias for the C kernel (`bert.RelativeBias`'s layout, one row every head
    shares): 0 for keys at most `window` positions from the query, -inf beyond, in sequences of up to `width`."""
    offsets = torch.arange(1 - width, width, device=device).abs()
    return torch.where(offsets <= window, 0.0, float("-inf"))[None]  # (1, 2 width - 1)


def traced_local_attention(qkv: Tensor, p: Packed, heads: int, window: int, first_only: bool, trace: Trace) -> Tensor:
    """Local attention over a padded copy `(B, L, 3H)` of the batch, its probabilities kept in `trace`: packed
    `(T, H)`, or each sequence's first query `(B, H)`."""
    B, L, H = p.batch_size, p.max_len, qkv.shape[1] // 3
    q, k, v = padded_rows(qkv, p).view(B, L, 3, heads, H // heads).permute(2, 0, 3, 1, 4)  # (B, h, L, d)
    mask = band(L, window, qkv.device)[None, None]  # (1, 1, L, L)
    if p.key_mask is not None:
        mask = mask & p.key_mask  # (B, 1, L, L)
    if first_only:
        return attend(q[:, :, :1], k, v, mask[:, :, :1], trace=trace).reshape(B, H)
    out = attend(q, k, v, mask, trace=trace).permute(0, 2, 1, 3).reshape(B * L, H)  # (B * L, H)
    return out if p.key_mask is None else out[p.scatter]


def local_attention(qkv: Tensor, p: Packed, heads: int, window: int, first_only: bool, kernel=None) -> Tensor:
    """Attention of each query to the keys of its sequence at most `window` positions away: packed `(T, H)`, or
    each sequence's first query `(B, H)`. A sequence the window covers whole is computed as in a global layer
    (the C kernel where installed), a longer one by SDPA under its band, so that a text's result does not depend
    on the batch it came in. In a batch mixing both, the whole batch takes the first path and the longer
    sequences are then computed again under their band: attention is a small part of a forward at these lengths.
    The C kernel, where installed, does the whole batch in one call instead, the window a -inf bias outside it
    (`band_bias`): a sequence the window covers gets zeros added to its scores, the bits of the global path, and each
    block of queries of a longer one reads only the keys its window reaches (O(n · window) work, not O(n²))."""
    if kernel is not None:
        out = kernel(qkv, p, heads, first_only, rel=band_bias(p.max_len, window, qkv.device))
        if out is not None:
            return out
    T, H = qkv.shape[0], qkv.shape[1] // 3
    d = H // heads
    longer = [n - 1 > window for n in p.lengths]
    if not any(longer):
        return packed_attention(qkv, p, heads, first_only, None, kernel)
    out = packed_attention(qkv, p, heads, first_only, None, kernel) if not all(longer) else \
        qkv.new_empty(p.batch_size if first_only else T, H)
    start = 0
    for b, n in enumerate(p.lengths):
        if longer[b]:
            q, k, v = qkv[start:start + n].view(1, n, 3, heads, d).permute(2, 0, 3, 1, 4)  # (1, h, n, d)
            mask = band(n, window, qkv.device)  # (n, n)
            if first_only:
                out[b] = F.scaled_dot_product_attention(q[:, :, :1], k, v, attn_mask=mask[:1]).view(H)
            else:
                out[start:start + n] = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)[0].transpose(0, 1) \
                    .reshape(n, H)
        start += n
    return out


class Attention(nn.Module):
    # The C kernel of attention over the packed batch (models/fastpath.py installs it on the CPU, as on BERT's
    # `SelfAttention`); None runs SDPA. Local layers hand it their window as a bias (`local_attention`).
    kernel = None

    def __init__(self, config: EncoderConfig, opts: ModernBertOptions, layer_type: str):
        super().__init__()
        H = config.hidden_size
        self.heads, self.head_dim = config.num_attention_heads, config.head_dim
        self.layer_type = layer_type
        self.window = opts.window if layer_type == "sliding_attention" else None
        self.Wqkv = nn.Linear(H, 3 * H, bias=opts.attention_bias)
        self.Wo = nn.Linear(H, H, bias=opts.attention_bias)

    def forward(self, x: Tensor, p: Packed, rotary: tuple[Tensor, Tensor], first_only: bool = False,
                trace: Trace | None = None) -> Tensor:
        """`(T, H)` -> `(T, H)`; with `first_only`, only each sequence's first query: `(B, H)`."""
        T = x.shape[0]
        qkv = self.Wqkv(x).float().view(T, 3, self.heads, self.head_dim)  # rotated in fp32, as transformers does
        cos, sin = rotary
        q, k = rotate(qkv[:, 0], cos, sin), rotate(qkv[:, 1], cos, sin)  # (T, h, d)
        qkv = torch.stack((q, k, qkv[:, 2]), dim=1).view(T, -1).to(x.dtype)  # (T, 3H)
        if self.window is None or p.max_len - 1 <= self.window:  # nothing out of the window
            out = packed_attention(qkv, p, self.heads, first_only, trace, self.kernel)
        elif trace is not None and trace.keep_attentions:
            out = traced_local_attention(qkv, p, self.heads, self.window, first_only, trace)
        else:
            out = local_attention(qkv, p, self.heads, self.window, first_only, self.kernel)
        return self.Wo(out)


class MLP(nn.Module):
    """GeGLU: `Wo(act(input) * gate)`, input and gate made by one GEMM (`Wi`)."""

    def __init__(self, config: EncoderConfig, opts: ModernBertOptions):
        super().__init__()
        self.Wi = nn.Linear(config.hidden_size, 2 * config.intermediate_size, bias=opts.mlp_bias)
        self.Wo = nn.Linear(config.intermediate_size, config.hidden_size, bias=opts.mlp_bias)
        self.act = _activation(config.hidden_act, "hidden_activation")

    def forward(self, x: Tensor) -> Tensor:
        inner, gate = self.Wi(x).chunk(2, dim=-1)  # (T, I) each
        return self.Wo(self.act(inner) * gate)


class Layer(nn.Module):
    def __init__(self, config: EncoderConfig, opts: ModernBertOptions, index: int):
        super().__init__()
        # The first layer reads the embeddings' LayerNorm output as it is: no attention norm, no parameters.
        self.attn_norm = norm(config, opts) if index > 0 else nn.Identity()
        self.attn = Attention(config, opts, opts.layer_types[index])
        self.mlp_norm = norm(config, opts)
        self.mlp = MLP(config, opts)

    def forward(self, x: Tensor, p: Packed, rotary: tuple[Tensor, Tensor], first_only: bool,
                trace: Trace | None = None) -> Tensor:
        residual = x[p.starts] if first_only else x  # (T or B, H)
        x = residual + self.attn(self.attn_norm(x), p, rotary, first_only, trace)
        return x + self.mlp(self.mlp_norm(x))


class ModernBertModel(nn.Module):
    """Embeddings + layers + final norm: packed token ids in, packed hidden states `(T, H)` out."""

    def __init__(self, config: EncoderConfig):
        super().__init__()
        self.config = config
        self.opts = opts = ModernBertOptions.from_config(config)
        self.embeddings = Embeddings(config, opts)
        self.layers = nn.ModuleList(Layer(config, opts, i) for i in range(config.num_hidden_layers))
        self.final_norm = norm(config, opts)

    @property
    def encoder(self) -> nn.Module:
        """The module holding the layers, whose linear layers the fast paths rewrite (oneDNN packing, int8):
        here the base model itself, since the layers hang off it."""
        return self

    @property
    def input_embeddings(self) -> nn.Embedding:
        """The word-vector table that `inputs_embeds` stands in for."""
        return self.embeddings.tok_embeddings

    def forward(self, p: Packed, first_only: bool = False, inputs_embeds: Tensor | None = None,
                trace: Trace | None = None) -> Tensor:
        """Packed hidden states `(T, H)`, or only each sequence's first token `(B, H)`; `inputs_embeds` and
        `trace` as in `coulisse.models.bert.BertModel`."""
        x = self.embeddings(p, inputs_embeds)
        # Each layer type's angles, once per batch
        rotary = {kind: rotary_tables(p.position_ids, self.config.head_dim, theta)
                  for kind, theta in self.opts.thetas.items() if kind in self.opts.layer_types}
        if trace is not None:
            trace.hidden_states.append(x)
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            # A sequence head reads only the first token: its last layer computes only those queries.
            x = layer(x, p, rotary[layer.attn.layer_type], first_only and i == last, trace)
            if trace is not None and i < last:
                trace.hidden_states.append(x)
        x = self.final_norm(x)
        if trace is not None:  # transformers' last hidden state is the final norm's output
            trace.hidden_states.append(x)
        return x


def checkpoint_keys(name: str) -> list[str]:
    """Checkpoint keys (prefix `model.` removed) that make up our parameter `name`: module names are the
    checkpoint's."""
    return [name]


# -- heads -------------------------------------------------------------------------------------------------


class PredictionHead(nn.Module):
    """`head`: dense (bias if `classifier_bias`), `classifier_activation`, LayerNorm."""

    def __init__(self, config: EncoderConfig, opts: ModernBertOptions):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size, bias=opts.classifier_bias)
        self.act = _activation(opts.classifier_activation, "classifier_activation")
        self.norm = norm(config, opts)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(self.act(self.dense(x)))


class ClassificationHead(nn.Module):
    """`ModernBertForSequenceClassification` (and `ForMultipleChoice`, `outputs=1`): the prediction head on the
    first token (`classifier_pooling: cls`) or on the mean of each sequence's tokens (`mean`: the model hands
    this head every token's hidden state and the sequence lengths), then `classifier`."""

    KEYS = {"head.dense": "head.dense", "head.norm": "head.norm", "classifier": "classifier"}
    per_token = False

    def __init__(self, config: EncoderConfig, outputs: int | None = None):
        super().__init__()
        opts = ModernBertOptions.from_config(config)
        self.pools = opts.classifier_pooling == "mean"
        self.head = PredictionHead(config, opts)
        self.classifier = nn.Linear(config.hidden_size, outputs or config.num_labels)

    def forward(self, hidden: Tensor, lengths: list[int] | None = None) -> Tensor:
        """First tokens `(B, H)`, or with mean pooling every token `(T, H)` of sequences of `lengths`."""
        if self.pools:
            hidden = torch.stack([rows.mean(0) for rows in hidden.split(lengths)])  # (B, H)
        return self.classifier(self.head(hidden))


class TokenHead(nn.Module):
    """`ForTokenClassification` and `ForQuestionAnswering` (2 outputs: start, end): the prediction head, then
    `classifier`, on every token."""

    KEYS = {"head.dense": "head.dense", "head.norm": "head.norm", "classifier": "classifier"}
    per_token = True

    def __init__(self, config: EncoderConfig):
        super().__init__()
        self.head = PredictionHead(config, ModernBertOptions.from_config(config))
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)

    def forward(self, hidden: Tensor) -> Tensor:
        return self.classifier(self.head(hidden))  # (T, labels)


class MaskedLMHead(nn.Module):
    """`ModernBertForMaskedLM`: the prediction head, then the decoder tied to the word vectors (bias unless
    `decoder_bias` is false)."""

    KEYS = {"head.dense": "head.dense", "head.norm": "head.norm",
            "decoder.weight": "decoder.weight|{base}.embeddings.tok_embeddings.weight", "decoder.bias": "decoder.bias"}
    per_token = True

    def __init__(self, config: EncoderConfig):
        super().__init__()
        opts = ModernBertOptions.from_config(config)
        self.head = PredictionHead(config, opts)
        self.decoder = nn.Linear(config.hidden_size, config.vocab_size, bias=opts.decoder_bias)

    def forward(self, hidden: Tensor) -> Tensor:
        return self.decoder(self.head(hidden))  # (rows, vocab)


HEADS = {
    "sequence-classification": ClassificationHead,
    "token-classification": TokenHead,
    "question-answering": TokenHead,
    "masked-lm": MaskedLMHead,
    "multiple-choice": lambda config: ClassificationHead(config, outputs=1),
}

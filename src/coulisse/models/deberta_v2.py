"""DeBERTa-v2 / v3 (mDeBERTa-v3 included), inference only.

What differs from BERT (`coulisse.models.bert`), whose packed layout (`Packed`) and feed-forward blocks it
shares:

- embeddings: no absolute positions by default (`position_biased_input`), an optional projection when the
  word vectors are narrower than the encoder (`embedding_size`), LayerNorm;
- disentangled attention: besides content-to-content (q·k), a query scores the *relative distance* to
  each key (content-to-position, "c2p") and a key scores its distance to the query ("p2c"), through
  one table of relative-position embeddings the encoder owns (`rel_embeddings`, normalised once per
  forward when `norm_rel_ebd` says "layer_norm"). Distances beyond `position_buckets / 2` share
  log-spaced buckets. The scores of the 1-3 terms are summed, each divided by `sqrt(head_dim · terms)`;
- an optional convolution after the first layer (`conv_kernel_size`), over each sequence alone;
- heads: the classifier reads a "context pooler" (dense + `pooler_hidden_act` on the first token),
  outside the base-model prefix `deberta.`.

Relative distances depend only on positions inside a sequence, and each sequence sits at the start of
its row of the padded attention view, so results do not depend on how sequences are batched.
Config fields follow transformers' `DebertaV2Config` with its defaults; `DebertaV2Options` holds them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from coulisse.config import EncoderConfig
from coulisse.errors import UnsupportedModelError
from coulisse.models.bert import ACTIVATIONS, DenseNorm, Intermediate, Packed, Trace, attend, padded_rows
from coulisse.models.heads import QuestionAnsweringHead, TokenClassificationHead


def _activation(name: str, field: str):
    if name not in ACTIVATIONS:
        raise UnsupportedModelError(f"{field}={name!r} in config.json; coulisse runs DeBERTa-v2 with "
                                    f"{', '.join(sorted(ACTIVATIONS))}.")
    return ACTIVATIONS[name]


@dataclass(frozen=True)
class DebertaV2Options:
    """The DeBERTa-v2 fields of config.json, with transformers' defaults."""

    embedding_size: int
    position_biased_input: bool
    relative_attention: bool
    max_relative_positions: int  # resolved: max_position_embeddings when config.json says < 1
    position_buckets: int  # <= 0: no log buckets
    pos_att_type: tuple[str, ...]  # "c2p", "p2c"
    share_att_key: bool
    norm_rel_ebd: tuple[str, ...]
    conv_kernel_size: int  # 0: no convolution
    conv_groups: int
    conv_act: str
    pooler_hidden_size: int
    pooler_hidden_act: str
    legacy: bool  # masked-LM head layout

    @classmethod
    def from_config(cls, config: EncoderConfig) -> DebertaV2Options:
        raw = config.raw
        att = raw.get("pos_att_type") or []
        att = [a.strip() for a in att.lower().split("|")] if isinstance(att, str) else [str(a).lower() for a in att]
        unknown = [a for a in att if a not in ("c2p", "p2c")]
        if unknown:
            raise UnsupportedModelError(f"pos_att_type {unknown} in config.json; DeBERTa-v2 has c2p and p2c.")
        max_rel = int(raw.get("max_relative_positions", -1))
        kernel = int(raw.get("conv_kernel_size", 0) or 0)
        if kernel > 0 and kernel % 2 == 0:
            raise UnsupportedModelError(f"conv_kernel_size={kernel} in config.json: an even kernel changes the "
                                        "sequence length; DeBERTa-v2 takes odd kernels.")
        head_size = raw.get("attention_head_size")
        if head_size is not None and head_size != config.hidden_size // config.num_attention_heads:
            raise UnsupportedModelError(
                f"attention_head_size={head_size!r} in config.json; coulisse runs DeBERTa-v2 with heads of "
                f"hidden_size / num_attention_heads = {config.hidden_size // config.num_attention_heads}, as every "
                "released checkpoint has them. Use such a checkpoint (or leave attention_head_size out).")
        return cls(
            embedding_size=int(raw.get("embedding_size") or config.hidden_size),
            position_biased_input=bool(raw.get("position_biased_input", True)),
            relative_attention=bool(raw.get("relative_attention", False)),
            max_relative_positions=max_rel if max_rel >= 1 else config.max_position_embeddings,
            position_buckets=int(raw.get("position_buckets", -1)),
            pos_att_type=tuple(att),
            share_att_key=bool(raw.get("share_att_key", False)),
            norm_rel_ebd=tuple(x.strip() for x in str(raw.get("norm_rel_ebd", "none")).lower().split("|")),
            conv_kernel_size=kernel,
            conv_groups=int(raw.get("conv_groups", 1)),
            conv_act=str(raw.get("conv_act", "tanh")),
            pooler_hidden_size=int(raw.get("pooler_hidden_size", config.hidden_size)),
            pooler_hidden_act=str(raw.get("pooler_hidden_act", "gelu")),
            legacy=bool(raw.get("legacy", True)),
        )

    @property
    def span(self) -> int:
        """Relative distances run over [-span, span); the table holds 2 · span rows."""
        return self.position_buckets if self.position_buckets > 0 else self.max_relative_positions


# -- relative positions ------------------------------------------------------------------------------------


def log_buckets(rel: Tensor, buckets: int, max_position: int) -> Tensor:
    """Distances below `buckets / 2` stay exact; longer ones share log-spaced buckets up to `max_position`.
    Same float32 steps as transformers' `make_log_bucket_position`, so that every `ceil` lands alike."""
    mid = buckets // 2
    near = (rel < mid) & (rel > -mid)
    distance = torch.where(near, torch.tensor(mid - 1, device=rel.device), rel.abs())
    log_max = torch.log(torch.tensor((max_position - 1) / mid, device=rel.device))
    far = torch.ceil(torch.log(distance / mid) / log_max * (mid - 1)) + mid
    return torch.where(distance <= mid, rel.to(far.dtype), far * torch.sign(rel)).long()


@dataclass
class RelativePositions:
    """For a padded view of width L: the rows of the relative-embedding table its distances use (a
    window, so short batches do not project the whole table), and which row each (query, key) reads."""

    embeddings: Tensor  # (W, H) normalised rows lo..hi of the table
    c2p: Tensor  # (L, L) row for query i, key j: distance i - j
    p2c: Tensor  # (L, L) row for key j, query i: distance -(j - i)


# -- blocks ------------------------------------------------------------------------------------------------


def packed_rows(x: Tensor, p: Packed, first_only: bool) -> Tensor:
    """`(B, L, C)` -> packed `(T, C)`, or each sequence's first row `(B, C)`."""
    if first_only:
        return x[:, 0]
    flat = x.reshape(-1, x.shape[-1])
    return flat if p.key_mask is None else flat[p.scatter]  # no key mask: no padding to drop


class Embeddings(nn.Module):
    def __init__(self, config: EncoderConfig, opts: DebertaV2Options):
        super().__init__()
        width = opts.embedding_size
        self.word_embeddings = nn.Embedding(config.vocab_size, width)
        if opts.position_biased_input:
            self.position_embeddings = nn.Embedding(config.max_position_embeddings, width)
        if config.type_vocab_size > 0:
            self.token_type_embeddings = nn.Embedding(config.type_vocab_size, width)
        if width != config.hidden_size:
            self.embed_proj = nn.Linear(width, config.hidden_size, bias=False)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, p: Packed, inputs_embeds: Tensor | None = None) -> Tensor:
        """`inputs_embeds` `(T, E)` stands for the word vectors of `p.input_ids` (positions and types stay)."""
        x = self.word_embeddings(p.input_ids) if inputs_embeds is None else inputs_embeds  # (T, E)
        if hasattr(self, "position_embeddings"):
            x = x + self.position_embeddings(p.position_ids)
        if hasattr(self, "token_type_embeddings"):
            types = p.token_type_ids if p.token_type_ids is not None else torch.zeros_like(p.input_ids)
            x = x + self.token_type_embeddings(types)
        if hasattr(self, "embed_proj"):
            x = self.embed_proj(x)  # (T, H)
        return self.LayerNorm(x)


class DisentangledSelfAttention(nn.Module):
    def __init__(self, config: EncoderConfig, opts: DebertaV2Options):
        super().__init__()
        H = config.hidden_size
        self.heads, self.head_dim = config.num_attention_heads, config.head_dim
        # query_proj, key_proj and value_proj in one GEMM: (T, H) @ (H, 3H)
        self.qkv = nn.Linear(H, 3 * H)
        self.c2p, self.p2c = "c2p" in opts.pos_att_type, "p2c" in opts.pos_att_type
        self.relative, self.share_att_key = opts.relative_attention, opts.share_att_key
        if self.relative and not self.share_att_key:
            if self.c2p:
                self.pos_key_proj = nn.Linear(H, H)
            if self.p2c:
                self.pos_query_proj = nn.Linear(H, H)
        # Each score term (q·k, c2p, p2c) is divided by sqrt(head_dim · terms), the root taken in float32
        # as transformers does, whether or not relative attention is on.
        terms = 1 + self.c2p + self.p2c
        self.scale = 1.0 / float(torch.tensor(self.head_dim * terms, dtype=torch.float32, device="cpu").sqrt())

    def split_heads(self, x: Tensor) -> Tensor:
        return x.view(x.shape[0], self.heads, self.head_dim).transpose(0, 1)  # (W, H) -> (h, W, d)

    def position_scores(self, q: Tensor, k: Tensor, rel: RelativePositions) -> Tensor:
        """c2p + p2c for queries `(B, h, Lq, d)` and keys `(B, h, L, d)`: `(B, h, Lq, L)`, scaled."""
        B, h, Lq, _ = q.shape
        L = k.shape[2]
        if self.share_att_key:  # the table projected by the content query and key layers
            W = rel.embeddings.shape[0]
            pos_q, pos_k, _ = self.qkv(rel.embeddings).view(W, 3, h, self.head_dim).permute(1, 2, 0, 3)
        else:
            pos_k = self.split_heads(self.pos_key_proj(rel.embeddings)) if self.c2p else None
            pos_q = self.split_heads(self.pos_query_proj(rel.embeddings)) if self.p2c else None
        scores = q.new_zeros(B, h, Lq, L)
        if self.c2p:  # query i against the embedding of distance i - j
            c2p = q @ pos_k.transpose(-1, -2)  # (B, h, Lq, W)
            scores = scores + c2p.gather(-1, rel.c2p[:Lq].expand(B, h, Lq, L))
        if self.p2c:  # key j against the embedding of distance -(j - i)
            p2c = k @ pos_q.transpose(-1, -2)  # (B, h, L, W)
            scores = scores + p2c.gather(-1, rel.p2c[:, :Lq].expand(B, h, L, Lq)).transpose(-1, -2)
        return scores * self.scale

    def forward(self, x: Tensor, p: Packed, rel: RelativePositions | None, first_only: bool = False,
                trace: Trace | None = None) -> Tensor:
        """`(T, H)` -> `(T, H)`; with `first_only`, only each sequence's first query: `(B, H)`."""
        B, L = p.batch_size, p.max_len
        qkv = padded_rows(self.qkv(x), p)  # (B, L, 3H), zeros after each sequence's end
        q, k, v = qkv.view(B, L, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)  # (B, h, L, d)
        if first_only:
            q = q[:, :, :1]  # (B, h, 1, d)
        mask = p.key_mask  # (B, 1, 1, L) or None
        if self.relative and (self.c2p or self.p2c):
            bias = self.position_scores(q, k, rel)  # (B, h, Lq, L)
            mask = bias if mask is None else bias.masked_fill(~mask, float("-inf"))
        out = attend(q, k, v, mask, self.scale, trace)  # (B, h, Lq, d)
        return packed_rows(out.permute(0, 2, 1, 3).flatten(2), p, first_only)  # (T, H) or (B, H)


class Attention(nn.Module):
    def __init__(self, config: EncoderConfig, opts: DebertaV2Options):
        super().__init__()
        self.self = DisentangledSelfAttention(config, opts)
        self.output = DenseNorm(config.hidden_size, config.hidden_size, config.layer_norm_eps)

    def forward(self, x: Tensor, p: Packed, rel: RelativePositions | None, first_only: bool,
                trace: Trace | None = None) -> Tensor:
        residual = x[p.starts] if first_only else x
        return self.output(self.self(x, p, rel, first_only, trace), residual)


class Layer(nn.Module):
    def __init__(self, config: EncoderConfig, opts: DebertaV2Options):
        super().__init__()
        self.attention = Attention(config, opts)
        self.intermediate = Intermediate(config)
        self.output = DenseNorm(config.intermediate_size, config.hidden_size, config.layer_norm_eps)

    def forward(self, x: Tensor, p: Packed, rel: RelativePositions | None, first_only: bool,
                trace: Trace | None = None) -> Tensor:
        x = self.attention(x, p, rel, first_only, trace)
        return self.output(self.intermediate(x), x)


class ConvLayer(nn.Module):
    """After the first layer: `LayerNorm(layer output + act(conv(embeddings)))`, the convolution running
    over each sequence alone (zeros beyond its ends, as transformers' masked padding gives)."""

    def __init__(self, config: EncoderConfig, opts: DebertaV2Options):
        super().__init__()
        k = opts.conv_kernel_size
        self.conv = nn.Conv1d(config.hidden_size, config.hidden_size, k, padding=(k - 1) // 2,
                              groups=opts.conv_groups)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.act = _activation(opts.conv_act, "conv_act")

    def forward(self, embedded: Tensor, residual: Tensor, p: Packed, first_only: bool) -> Tensor:
        x = padded_rows(embedded, p).transpose(1, 2)  # (B, H, L)
        out = packed_rows(self.conv(x).transpose(1, 2), p, first_only)  # (T, H) or (B, H)
        return self.LayerNorm(residual + self.act(out))


class Encoder(nn.Module):
    def __init__(self, config: EncoderConfig, opts: DebertaV2Options):
        super().__init__()
        self.opts = opts
        self.layer = nn.ModuleList(Layer(config, opts) for _ in range(config.num_hidden_layers))
        if opts.relative_attention:
            self.rel_embeddings = nn.Embedding(2 * opts.span, config.hidden_size)
        if "layer_norm" in opts.norm_rel_ebd:
            self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.conv = ConvLayer(config, opts) if opts.conv_kernel_size > 0 else None

    def relative_positions(self, width: int, device: torch.device) -> RelativePositions:
        opts, span = self.opts, self.opts.span
        pos = torch.arange(width, device=device)
        rel = pos[:, None] - pos[None, :]  # (L, L) query minus key
        if opts.position_buckets > 0:
            rel = log_buckets(rel, opts.position_buckets, opts.max_relative_positions)
        c2p = (rel + span).clamp(0, 2 * span - 1)
        p2c = (span - rel).clamp(0, 2 * span - 1)
        lo = int(torch.minimum(c2p.min(), p2c.min()))
        hi = int(torch.maximum(c2p.max(), p2c.max()))
        table = self.rel_embeddings.weight[lo : hi + 1]  # (W, H)
        if hasattr(self, "LayerNorm"):
            table = self.LayerNorm(table)  # per row: normalising the window equals windowing the normalised
        return RelativePositions(table, c2p - lo, p2c - lo)

    def forward(self, x: Tensor, p: Packed, first_only: bool = False, trace: Trace | None = None) -> Tensor:
        rel = self.relative_positions(p.max_len, x.device) if self.opts.relative_attention else None
        embedded, last = x, len(self.layer) - 1
        if trace is not None:
            trace.hidden_states.append(x)
        for i, layer in enumerate(self.layer):
            # A sequence head reads only the first token: its last layer computes only those queries.
            x = layer(x, p, rel, first_only and i == last, trace)
            if i == 0 and self.conv is not None:
                x = self.conv(embedded, x, p, first_only and i == last)
            if trace is not None:
                trace.hidden_states.append(x)
        return x


class DebertaV2Model(nn.Module):
    """Embeddings + encoder: packed token ids in, packed hidden states `(T, H)` out."""

    def __init__(self, config: EncoderConfig):
        super().__init__()
        self.config = config
        opts = DebertaV2Options.from_config(config)
        _activation(config.hidden_act, "hidden_act")
        self.embeddings = Embeddings(config, opts)
        self.encoder = Encoder(config, opts)

    @property
    def input_embeddings(self) -> nn.Embedding:
        """The word-vector table that `inputs_embeds` stands in for."""
        return self.embeddings.word_embeddings

    def forward(self, p: Packed, first_only: bool = False, inputs_embeds: Tensor | None = None,
                trace: Trace | None = None) -> Tensor:
        """Packed hidden states `(T, H)`, or only each sequence's first token `(B, H)`; `inputs_embeds` and
        `trace` as in `coulisse.models.bert.BertModel`."""
        return self.encoder(self.embeddings(p, inputs_embeds), p, first_only, trace)


def checkpoint_keys(name: str) -> list[str]:
    """Checkpoint keys (prefix `deberta.` removed) that make up our parameter `name`."""
    if ".attention.self.qkv." in name:
        return [name.replace(".qkv.", f".{part}_proj.") for part in ("query", "key", "value")]
    return [name]


# -- heads -------------------------------------------------------------------------------------------------


class ContextPoolerHead(nn.Module):
    """`DebertaV2ForSequenceClassification` (and `ForMultipleChoice`, `outputs=1`): the context pooler
    (dense + `pooler_hidden_act` on the first token), then `classifier`."""

    KEYS = {"pooler.dense": "pooler.dense", "classifier": "classifier"}

    def __init__(self, config: EncoderConfig, outputs: int | None = None):
        super().__init__()
        opts = DebertaV2Options.from_config(config)
        if opts.pooler_hidden_size != config.hidden_size:  # transformers' pooler reads hidden_size-wide vectors and
            # its classifier pooler_hidden_size-wide ones: the two must agree, or the first call fails (audit 44)
            raise UnsupportedModelError(
                f"pooler_hidden_size={opts.pooler_hidden_size} in config.json, but hidden_size={config.hidden_size}: "
                "DeBERTa-v2's classifier pools hidden_size-wide vectors, and transformers fails on this config at "
                "its first call too. Set pooler_hidden_size to hidden_size.")
        self.pooler = nn.Module()
        self.pooler.dense = nn.Linear(opts.pooler_hidden_size, opts.pooler_hidden_size)
        self.act = _activation(opts.pooler_hidden_act, "pooler_hidden_act")
        self.classifier = nn.Linear(config.hidden_size, outputs or config.num_labels)

    def forward(self, first: Tensor) -> Tensor:
        return self.classifier(self.act(self.pooler.dense(first)))


class LegacyMaskedLMHead(nn.Module):
    """`legacy: true` (transformers' default): `cls.predictions`, a BERT-style transform into the
    embedding width, then the decoder tied to the word embeddings."""

    KEYS = {
        "transform.dense": "cls.predictions.transform.dense",
        "transform.LayerNorm": "cls.predictions.transform.LayerNorm",
        "decoder.weight": "cls.predictions.decoder.weight|{base}.embeddings.word_embeddings.weight",
        "decoder.bias": "cls.predictions.decoder.bias|cls.predictions.bias",
    }
    per_token = True

    def __init__(self, config: EncoderConfig):
        super().__init__()
        width = DebertaV2Options.from_config(config).embedding_size
        self.transform = nn.Module()
        self.transform.dense = nn.Linear(config.hidden_size, width)
        self.transform.LayerNorm = nn.LayerNorm(width, eps=config.layer_norm_eps)
        self.decoder = nn.Linear(width, config.vocab_size)
        self.act = _activation(config.hidden_act, "hidden_act")

    def forward(self, hidden: Tensor) -> Tensor:
        return self.decoder(self.transform.LayerNorm(self.act(self.transform.dense(hidden))))  # (rows, vocab)


class MaskedLMHead(nn.Module):
    """`legacy: false`: `lm_predictions.lm_head` (dense, activation, LayerNorm), then the word embeddings
    as decoder with the head's own bias."""

    KEYS = {
        "dense": "lm_predictions.lm_head.dense",
        "LayerNorm": "lm_predictions.lm_head.LayerNorm",
        "decoder.weight": "{base}.embeddings.word_embeddings.weight",
        "decoder.bias": "lm_predictions.lm_head.bias",
    }
    per_token = True

    def __init__(self, config: EncoderConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.decoder = nn.Linear(config.hidden_size, config.vocab_size)
        self.act = _activation(config.hidden_act, "hidden_act")

    def forward(self, hidden: Tensor) -> Tensor:
        return self.decoder(self.LayerNorm(self.act(self.dense(hidden))))  # (rows, vocab)


def masked_lm_head(config: EncoderConfig) -> nn.Module:
    return LegacyMaskedLMHead(config) if DebertaV2Options.from_config(config).legacy else MaskedLMHead(config)


HEADS = {
    "sequence-classification": ContextPoolerHead,
    "token-classification": TokenClassificationHead,
    "question-answering": QuestionAnsweringHead,
    "masked-lm": masked_lm_head,
    "multiple-choice": lambda config: ContextPoolerHead(config, outputs=1),
}


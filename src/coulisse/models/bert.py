"""The BERT-family encoder (BERT, RoBERTa, CamemBERT, XLM-R, ELECTRA; DistilBERT reuses it), inference only.

Tokens travel *packed*: the linear layers and layer norms see a `(T, hidden)` tensor holding every
real token of the batch and no padding, `T` being the sum of the sequence lengths. Only attention,
which must not mix sequences, lays tokens out per sequence (on the CPU in fp32, a C kernel installed at
load does that in place: `SelfAttention.kernel`, models/fastpath.py). Family differences are config fields:
RoBERTa-family models number positions from `pad_token_id + 1` and have one token type; ELECTRA's word
vectors may be narrower than the encoder (`embedding_size`), and a linear layer projects them up.

Module names follow transformers' checkpoint keys, so the weight table (`checkpoint_keys`) is the
identity except for the fused query/key/value projection.

Explaining a prediction needs two things the fast path never computes: a forward from word vectors given
by the caller (`inputs_embeds`, to take gradients with respect to them) and what each layer did (`Trace`:
attention probabilities, which SDPA does not return, and hidden states). Both are arguments that default
to None; with None, the code run is the fast path's.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from coulisse.config import EncoderConfig

if TYPE_CHECKING:
    from collections.abc import Sequence

    from coulisse.models.quantize import Codes

ACTIVATIONS = {
    "gelu": lambda x: F.gelu(x),
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "relu": F.relu,
    "silu": F.silu,
    "swish": F.silu,
    "tanh": torch.tanh,
}
# transformers' other names for the same functions; the same objects, so the fused kernels recognise them
ACTIVATIONS["gelu_python"] = ACTIVATIONS["gelu"]
ACTIVATIONS["gelu_fast"] = ACTIVATIONS["gelu_new"]


_hooked = threading.local()  # .on: this thread's forward runs where hooks see its layers (`hooks_see_rows`)


def hooks_see_rows() -> bool:
    """Whether this forward's layers have hooks that may read or edit the tensors between them. The int8 layers
    then hand the next layer fp32 rows, never their codes alone (a hook would see no tensor) or attached to the
    rows (an edit in place would not reach them: the next layer read the old values, audit 46); `seen_by_hooks`
    sets it for a forward (EncoderModel.forward_packed)."""
    return getattr(_hooked, "on", False)


@contextmanager
def seen_by_hooks(on: bool):
    before = hooks_see_rows()
    _hooked.on = on or before
    try:
        yield
    finally:
        _hooked.on = before


@dataclass
class Packed:
    """A batch of sequences laid end to end, with what attention needs to separate them again."""

    input_ids: Tensor  # (T,)
    position_ids: Tensor  # (T,)
    token_type_ids: Tensor | None  # (T,)
    lengths: list[int]  # per sequence, sum = T
    starts: Tensor  # (B,) index of each sequence's first token in the packed tensor
    scatter: Tensor | None  # (T,) flat index into a (B * L) padded layout; None when B == 1
    key_mask: Tensor | None  # (B, 1, 1, L) True for real keys; None when no padding is needed

    @property
    def batch_size(self) -> int:
        return len(self.lengths)

    @property
    def max_len(self) -> int:
        return max(self.lengths)

    @cached_property
    def length_tensor(self) -> Tensor:
        """`lengths` as an int64 CPU tensor (for the C attention kernel), built once per batch."""
        return torch.tensor(self.lengths, dtype=torch.int64)

    @classmethod
    def from_lists(cls, ids: list[list[int]], type_ids: list[list[int]] | None, offset: int,
                   device: torch.device | str = "cpu",
                   numbered_as: Sequence[Sequence[int] | None] | None = None) -> Packed:
        """Unpadded sequences, numbered as `from_padded` numbers them: the RoBERTa family (`offset` > 0) gives a
        pad token that a text itself holds ("x<pad>y") position pad_token_id and does not count it, as
        transformers does. `numbered_as`, per sequence (None: its own ids): the ids whose numbering it takes, so
        that an occlusion's variant (words replaced by the pad token) keeps the positions of the text it comes
        from, as Integrated Gradients' path does, and only the words change."""
        lengths = [len(s) for s in ids]
        flat = torch.tensor([t for s in ids for t in s], dtype=torch.long)
        positions = torch.cat([torch.arange(n) for n in lengths]) + offset
        if offset > 0:
            source = [s if k is None else k for s, k in zip(ids, numbered_as or [None] * len(ids), strict=True)]
            if any(offset - 1 in s for s in source):
                real = [torch.tensor(list(s)).ne(offset - 1) for s in source]
                positions = torch.cat([r.long().cumsum(0) * r + (offset - 1) for r in real])
        types = torch.tensor([t for s in type_ids for t in s], dtype=torch.long) if type_ids else None
        return cls.build(flat, positions, types, lengths, device)

    @classmethod
    def from_padded(cls, input_ids: Tensor, attention_mask: Tensor | None, token_type_ids: Tensor | None,
                    offset: int, position_ids: Tensor | None = None) -> Packed:
        """Drop the padding of a (B, L) batch (the tokens the mask leaves out; no mask: none). Positions are
        numbered as transformers numbers them, from the ids and not the mask: the RoBERTa family (`offset` =
        pad_token_id + 1) counts the tokens that are not the pad token from `offset` and gives a pad token
        position pad_token_id; the others number every column from 0, padding included (a left-padded text then
        starts past 0 there too). The two agree with counting the mask's tokens for right padding and a mask.
        Given `position_ids` (B, L) are used as they are."""
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        keep = attention_mask.bool()
        if position_ids is not None:
            positions = position_ids.expand_as(input_ids)
        elif offset > 0:
            real = input_ids.ne(offset - 1)
            positions = real.long().cumsum(1) * real + (offset - 1)
        else:
            positions = torch.arange(input_ids.shape[1], device=input_ids.device).expand_as(input_ids)
        lengths = keep.sum(1).tolist()
        types = token_type_ids[keep] if token_type_ids is not None else None
        return cls.build(input_ids[keep], positions[keep], types, lengths, input_ids.device)

    @classmethod
    def build(cls, flat: Tensor, positions: Tensor, types: Tensor | None, lengths: list[int],
              device) -> Packed:
        starts = torch.tensor([0] + lengths[:-1]).cumsum(0)
        scatter = key_mask = None
        if len(lengths) > 1:
            width = max(lengths)
            rows = torch.repeat_interleave(torch.arange(len(lengths)), torch.tensor(lengths))
            cols = torch.arange(len(flat)) - starts[rows]
            scatter = (rows * width + cols).to(device)
            if min(lengths) != width:
                key_mask = (torch.arange(width)[None, :] < torch.tensor(lengths)[:, None])[:, None, None, :]
                key_mask = key_mask.to(device)
        to = (lambda t: t.to(device)) if device != "cpu" else (lambda t: t)
        return cls(to(flat), to(positions), to(types) if types is not None else None, lengths,
                   to(starts), scatter, key_mask)


@dataclass
class Trace:
    """What an explaining forward keeps besides its output: the hidden states entering the first layer and
    leaving each layer (`(T, H)` each, layers + 1 of them) and each layer's attention probabilities
    `(B, heads, queries, keys)`, unless `keep_attentions` is off (attention then runs as without a trace).
    Passed down as an argument; the fast path gets None and keeps nothing."""

    hidden_states: list[Tensor] = field(default_factory=list)
    attentions: list[Tensor] = field(default_factory=list)
    keep_attentions: bool = True


def keeps_attentions(trace: Trace | None) -> bool:
    return trace is not None and trace.keep_attentions


class RelativeBias:
    """A bias added to the attention scores by the key's offset from the query (MPNet's relative positions): `table`
    `(h, 2 W - 1)`, or `(1, 2 W - 1)` shared by every head, whose column `W - 1 + j - i` query i adds to its score
    of key j in any sequence of at most W tokens. The C kernel reads the table; SDPA paths take the dense
    `(1, h, W, W)` matrix built from it once per forward (`square`)."""

    def __init__(self, table: Tensor):
        if table.dim() != 2 or table.shape[1] % 2 != 1:
            raise ValueError(f"RelativeBias: a (heads, 2 W - 1) table, not {tuple(table.shape)}; this is a bug")
        self.table = table.contiguous()
        self.width = (table.shape[1] + 1) // 2
        self._square: Tensor | None = None

    def square(self) -> Tensor:
        """`(1, h, W, W)`: the bias of query i and key j at `[0, :, i, j]`."""
        if self._square is None:
            at = torch.arange(self.width, device=self.table.device)
            self._square = self.table[:, at[None, :] - at[:, None] + self.width - 1][None]
        return self._square


def attend(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None, scale: float | None = None,
           trace: Trace | None = None) -> Tensor:
    """Scaled dot-product attention `(B, h, Lq, d)`. `mask` is SDPA's: boolean (True = attend) or added to
    the scores. With a trace, the same arithmetic is spelled out so that the probabilities can be kept."""
    if not keeps_attentions(trace):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)
    scores = (q @ k.transpose(-1, -2)) * (q.shape[-1] ** -0.5 if scale is None else scale)  # (B, h, Lq, L)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else scores + mask
    probs = scores.softmax(-1)
    trace.attentions.append(probs)
    return probs @ v


# Mean tokens per sequence from which one SDPA call per sequence beats one call on a padded copy (fp32, base
# size, bench/attention_layouts.py --sweep): below, the calls' fixed cost outweighs the copies and padded
# scores it saves; above, the loop wins 1.1-2.5x (docs/benchmarks.md).
PER_SEQUENCE_MIN_MEAN_LENGTH = 16


def per_sequence(lengths: list[int]) -> bool:
    """Whether attention runs one SDPA per sequence on views of the packed tensor (True) or one SDPA on the
    padded layout (False): a pure function of the batch's lengths. Sequences of one length (one sequence
    included) are already in the padded layout, a view: nothing to save there."""
    return min(lengths) < max(lengths) and sum(lengths) >= PER_SEQUENCE_MIN_MEAN_LENGTH * len(lengths)


def packed_attention(qkv: Tensor, p: Packed, heads: int, first_only: bool = False,
                     trace: Trace | None = None, kernel=None, bias: RelativeBias | None = None) -> Tensor:
    """Packed `(T, 3H)` query/key/value -> packed `(T, H)` attention output; with `first_only`, only each
    sequence's first query: `(B, H)`. A trace keeps `(B, h, L, L)` probabilities: the padded layout.
    `kernel(qkv, p, heads, first_only)`, where the CPU fast path installed one (`SelfAttention.kernel`),
    does the whole batch in one call on the packed tensor, or returns None to leave it to SDPA. `bias`: added
    to the scores by relative offset; SDPA then runs per sequence whatever the lengths, so that a text gets the
    same bits alone or in any batch (its bias is the top-left block of the batch's either way)."""
    if not keeps_attentions(trace):
        if kernel is not None:
            out = kernel(qkv, p, heads, first_only) if bias is None else \
                kernel(qkv, p, heads, first_only, rel=bias.table)
            if out is not None:
                return out
        if bias is not None or per_sequence(p.lengths):
            return attend_sequences(qkv, p, heads, first_only, bias)
    return attend_padded(qkv, p, heads, first_only, trace, bias)


def padded_rows(x: Tensor, p: Packed) -> Tensor:
    """Packed rows `(T, C)` -> `(B, L, C)`, each sequence from column 0, zeros after its end. Sequences of
    one length are already laid out so: a view, no copy."""
    if p.key_mask is None:
        return x.reshape(p.batch_size, p.max_len, -1)
    out = x.new_empty(p.batch_size, p.max_len, x.shape[-1])
    for b, n in enumerate(p.lengths):
        if n < p.max_len:
            out[b, n:].zero_()  # finite padding: a masked key gets probability 0, but 0 * NaN is NaN
    out.view(-1, x.shape[-1])[p.scatter] = x
    return out


def attend_padded(qkv: Tensor, p: Packed, heads: int, first_only: bool = False,
                  trace: Trace | None = None, bias: RelativeBias | None = None) -> Tensor:
    """One SDPA over a padded copy `(B, L, 3H)` of the batch, padded keys masked."""
    B, L, H = p.batch_size, p.max_len, qkv.shape[1] // 3
    q, k, v = padded_rows(qkv, p).view(B, L, 3, heads, H // heads).permute(2, 0, 3, 1, 4)  # (B, h, L, d)
    mask = p.key_mask
    if bias is not None:
        mask = bias.square()[:, :, :L, :L].to(q.dtype)  # (1, h, L, L)
        if p.key_mask is not None:
            mask = mask.masked_fill(~p.key_mask, float("-inf"))  # (B, h, L, L)
    if first_only:
        mask = mask[:, :, :1] if mask is not None and mask.shape[2] > 1 else mask
        return attend(q[:, :, :1], k, v, mask, trace=trace).reshape(B, H)  # (B, H)
    out = attend(q, k, v, mask, trace=trace).permute(0, 2, 1, 3).reshape(B * L, H)  # (B * L, H)
    return out if p.key_mask is None else out[p.scatter]  # (T, H)


def attend_sequences(qkv: Tensor, p: Packed, heads: int, first_only: bool, bias: RelativeBias | None = None) -> Tensor:
    """One SDPA per sequence, on views of the packed `(T, 3H)` tensor: no copy, no padded rows; no mask but the
    sequence's block of `bias`."""
    T, H3 = qkv.shape
    H, d = H3 // 3, H3 // (3 * heads)
    out = qkv.new_empty(p.batch_size if first_only else T, H)
    square = bias.square() if bias is not None else None
    start = 0
    for b, n in enumerate(p.lengths):
        q, k, v = qkv[start:start + n].view(1, n, 3, heads, d).permute(2, 0, 3, 1, 4)  # (1, h, n, d)
        rows = 1 if first_only else n
        # contiguous: SDPA then reads the block as it reads a lone sequence's (the same bits)
        mask = square[:, :, :rows, :n].to(q.dtype).contiguous() if square is not None else None  # (1, h, rows, n)
        seq = F.scaled_dot_product_attention(q[:, :, :rows], k, v, attn_mask=mask)[0]  # (h, rows, d)
        if first_only:
            out[b] = seq.reshape(H)
        else:
            out[start:start + n] = seq.transpose(0, 1).reshape(n, H)
        start += n
    return out


class Embeddings(nn.Module):
    # Set at load by the CPU fast path (models/fastpath.py, `install_c_embeddings`): `norm_kernel(words, None, type
    # vector, positions, LayerNorm)` (native.add_norm_rows), which runs, without gradients, the word and position
    # vectors plus the type vector of a single segment (every type id 0, or none given) and their LayerNorm as one C
    # pass, instead of a third lookup, two adds and LayerNorm. None: the module's ops.
    norm_kernel = None

    def __init__(self, config: EncoderConfig):
        super().__init__()
        width = config.embedding_size or config.hidden_size
        self.word_embeddings = nn.Embedding(config.vocab_size, width)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, width)
        if config.type_vocab_size > 0:
            self.token_type_embeddings = nn.Embedding(config.type_vocab_size, width)
        self.LayerNorm = nn.LayerNorm(width, eps=config.layer_norm_eps)

    def forward(self, p: Packed, inputs_embeds: Tensor | None = None) -> Tensor:
        """`inputs_embeds` `(T, E)` stands for the word vectors of `p.input_ids` (positions and types stay)."""
        if (self.norm_kernel is not None and inputs_embeds is None and hasattr(self, "token_type_embeddings")
                and not torch.is_grad_enabled() and (p.token_type_ids is None or not p.token_type_ids.any())):
            return self.norm_kernel(self.word_embeddings(p.input_ids), None, self.token_type_embeddings.weight[0],
                                    self.position_embeddings(p.position_ids), self.LayerNorm)
        words = self.word_embeddings(p.input_ids) if inputs_embeds is None else inputs_embeds
        x = words + self.position_embeddings(p.position_ids)  # (T, H)
        if hasattr(self, "token_type_embeddings"):
            types = p.token_type_ids if p.token_type_ids is not None else torch.zeros_like(p.input_ids)
            x = x + self.token_type_embeddings(types)
        return self.LayerNorm(x)


class SelfAttention(nn.Module):
    # Packed attention for the whole batch in one call (`packed_attention`'s `kernel`): set at load by the
    # CPU fast path (models/fastpath.py, C kernels); None runs PyTorch's SDPA. `kernel_reads_bf16`: that kernel
    # rounds q, k, v to bf16 itself, so a projection that can make them in bf16 (`forward_bf16`, int8 layers on
    # AMX tiles) hands them over so: the same bits, half the bytes.
    kernel = None
    kernel_reads_bf16 = False
    # `kernel(..., codes=True)` returns the output rows' int8 codes alone (quantize.Codes) for an attention block
    # whose int8 layer reads them so (`Attention.forward`)
    kernel_gives_codes = False

    def __init__(self, config: EncoderConfig):
        super().__init__()
        self.heads, self.head_dim = config.num_attention_heads, config.head_dim
        # query, key and value in one GEMM: (T, H) @ (H, 3H)
        self.qkv = nn.Linear(config.hidden_size, 3 * config.hidden_size)

    def forward(self, x: Tensor, p: Packed, first_only: bool = False, trace: Trace | None = None,
                codes: bool = False, bias: RelativeBias | None = None) -> Tensor | Codes:
        """`(T, H)` -> `(T, H)`; with `first_only`, only each sequence's first query: `(B, H)`. `codes` (no trace, no
        `first_only`, a kernel that `kernel_gives_codes`): the rows' `Codes` alone where the kernel makes them.
        `bias`: added to the scores by relative offset (MPNet)."""
        to_bf16 = trace is None and self.kernel_reads_bf16 and hasattr(self.qkv, "forward_bf16")
        qkv = self.qkv.forward_bf16(x) if to_bf16 else self.qkv(x)
        if codes and trace is None and not first_only and self.kernel_gives_codes:
            rel = {} if bias is None else {"rel": bias.table}
            out = self.kernel(qkv, p, self.heads, first_only, codes=True, **rel)
            if out is not None:
                return out
        return packed_attention(qkv, p, self.heads, first_only, trace, self.kernel, bias)


class DenseNorm(nn.Module):
    """Projection, residual, LayerNorm: BERT's `*Output` blocks. A fast linear layer (int8, oneDNN) that
    can fuse the three offers `forward_add_norm` (models/quantize.py, models/fastpath.py)."""

    def __init__(self, d_in: int, d_out: int, eps: float):
        super().__init__()
        self.dense = nn.Linear(d_in, d_out)
        self.LayerNorm = nn.LayerNorm(d_out, eps=eps)

    def takes_codes(self) -> bool:
        """Whether `forward` takes its input as `Codes` alone (int8 layers on coulisse's GEMM: models/quantize.py)."""
        return hasattr(self.dense, "takes_codes") and self.dense.takes_codes(self.LayerNorm)

    def forward(self, x: Tensor | Codes, residual: Tensor) -> Tensor:
        fused = getattr(self.dense, "forward_add_norm", None)
        if fused is not None:
            return fused(x, residual, self.LayerNorm)
        return self.LayerNorm(self.dense(x) + residual)


class Attention(nn.Module):
    def __init__(self, config: EncoderConfig):
        super().__init__()
        self.self = SelfAttention(config)
        self.output = DenseNorm(config.hidden_size, config.hidden_size, config.layer_norm_eps)

    def forward(self, x: Tensor, p: Packed, first_only: bool = False, trace: Trace | None = None,
                bias: RelativeBias | None = None) -> Tensor:
        residual = x[p.starts] if first_only else x
        # int8 layers on the CPU fast path (models/quantize.py) with the C attention (models/fastpath.py): the
        # attention's rows go to the output projection as its input codes only, never as fp32 rows (SelfAttention
        # says where its kernel makes them: no trace, not first_only)
        codes = (self.self.kernel_gives_codes and not torch.is_grad_enabled() and self.output.takes_codes()
                 and not hooks_see_rows())
        return self.output(self.self(x, p, first_only, trace, codes, bias), residual)


class Intermediate(nn.Module):
    # `act` applies to this child's output: the int8 and oneDNN layers fuse the two (models/swap.py swaps them in,
    # models/quantize.py and models/fastpath.py build them), `act` then being the identity
    act_input = "dense"

    def __init__(self, config: EncoderConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.intermediate_size)
        self.act = ACTIVATIONS[config.hidden_act]

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.dense(x))


class Layer(nn.Module):
    def __init__(self, config: EncoderConfig):
        super().__init__()
        self.attention = Attention(config)
        self.intermediate = Intermediate(config)
        self.output = DenseNorm(config.intermediate_size, config.hidden_size, config.layer_norm_eps)

    def forward(self, x: Tensor, p: Packed, first_only: bool = False, trace: Trace | None = None,
                bias: RelativeBias | None = None) -> Tensor:
        x = self.attention(x, p, first_only, trace, bias)
        inner = self.intermediate.dense
        if (trace is None and getattr(inner, "codes_out", False) and not torch.is_grad_enabled()
                and self.output.takes_codes() and not hooks_see_rows()):
            # int8 layers on the CPU fast path (models/quantize.py): the feed-forward's inner rows (its GELU applied,
            # `act` the identity) go from one to the other as the second's input codes only, never as fp32 rows
            return self.output(inner.forward_codes(x), x)
        return self.output(self.intermediate(x), x)


class Encoder(nn.Module):
    def __init__(self, config: EncoderConfig):
        super().__init__()
        self.layer = nn.ModuleList(Layer(config) for _ in range(config.num_hidden_layers))

    def forward(self, x: Tensor, p: Packed, first_only: bool = False, trace: Trace | None = None,
                bias: RelativeBias | None = None) -> Tensor:
        """`bias`: added to every layer's scores by relative offset (MPNet's encoder passes its own)."""
        last = len(self.layer) - 1
        if trace is not None:
            trace.hidden_states.append(x)
        for i, layer in enumerate(self.layer):
            # A sequence head reads only the first token: in the last layer, the other tokens are
            # still needed as keys and values, but their queries and feed-forward are not.
            x = layer(x, p, first_only and i == last, trace, bias)
            if trace is not None:
                trace.hidden_states.append(x)
        return x


class BertModel(nn.Module):
    """Embeddings + encoder: packed token ids in, packed hidden states `(T, H)` out."""

    def __init__(self, config: EncoderConfig):
        super().__init__()
        self.config = config
        self.embeddings = Embeddings(config)
        width = config.embedding_size or config.hidden_size
        if width != config.hidden_size:
            self.embeddings_project = nn.Linear(width, config.hidden_size)
        self.encoder = Encoder(config)

    @property
    def input_embeddings(self) -> nn.Embedding:
        """The word-vector table that `inputs_embeds` stands in for."""
        return self.embeddings.word_embeddings

    def forward(self, p: Packed, first_only: bool = False, inputs_embeds: Tensor | None = None,
                trace: Trace | None = None) -> Tensor:
        """Packed hidden states `(T, H)`, or only each sequence's first token `(B, H)`."""
        x = self.embeddings(p, inputs_embeds)  # (T, E)
        if hasattr(self, "embeddings_project"):
            x = self.embeddings_project(x)  # (T, H)
        return self.encoder(x, p, first_only, trace)


def checkpoint_keys(name: str) -> list[str]:
    """Checkpoint keys (base-model prefix removed) that make up our parameter `name`."""
    if ".attention.self.qkv." in name:
        return [name.replace(".qkv.", f".{part}.") for part in ("query", "key", "value")]
    return [name]

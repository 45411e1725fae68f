"""The CPU fast paths of the linear layers: fp32 and bf16 weights prepacked once at load time.

PyTorch's `F.linear` calls MKL's sgemm, which repacks the weight on every call: oneDNN's matmul with a
prepacked (blocked) weight runs 2× faster at a few rows, and 1.0–1.2× at 1,024 rows on some machines
while MKL wins there by up to 1.2× on others (docs/benchmarks.md), with fp32 results equal to within
rounding (≤ 2e-6 here). Chosen once when a pipeline is built on the CPU in fp32; corpus jobs time both
first (coulisse/engine/gemm_choice.py) and may take MKL (`MklLinear`); `COULISSE_ONEDNN=0` turns it
off. Either way the fp32 layers finish in the C kernels built at install (`Fp32Linear`): the GEMM runs
without its bias, then one pass over each row adds it and applies a feed-forward's erf GELU, or, in the
`*Output` blocks, adds the bias and the residual and normalizes. PyTorch's ops make three to four passes
over the same rows there (addmm's bias copy, GELU, the add, LayerNorm).

bf16 (`dtype="bfloat16"` on the CPU) is mixed precision, decided per op: only the encoder's linear
layers run in bf16 (`BF16Linear`: input rounded to bf16, products summed in fp32 by the GEMM, output
rounded to bf16); embeddings, the residual stream, LayerNorm, the task head stay fp32 (a bf16 output
plus the fp32 residual promotes to fp32, so every LayerNorm reads and writes fp32); attention's
softmax runs inside SDPA, which accumulates bf16 inputs in fp32. Each GEMM thus adds relative errors
of about 2^-9 (rounding its input, weight and output), never compounding in the residual stream.
Packed bf16 layers apply the feed-forward's activation as a oneDNN post-op, on the fp32 sums before the
output's one rounding; fp32 layers can too (`fuse_activation`), off because it measured slower on AVX2.

Attention in fp32 (exact and int8 pipelines) runs in one C call per layer over the whole packed batch
(`c_packed_attention`, coulisse/models/_attention.c) instead of one SDPA call per sequence: every
(sequence, head) pair is a unit that PyTorch's OpenMP threads take in turn, longest first, reading the
packed query/key/value rows in place. The per-call dispatch and thread wake-ups of SDPA were most of its
cost on reviews of ~130 tokens (docs/benchmarks.md, "C attention"). `COULISSE_C_ATTENTION=0` keeps SDPA.
In int8 pipelines, on CPUs that multiply bf16 pairs (AVX512-BF16: Zen 4, Cooper Lake, Sapphire Rapids),
the kernel's two products (Q K^T, P V) run in bf16 with fp32 sums (`bf16=True`): 1.4-1.5x faster on a
Zen 4, and an error far below int8's own (docs/benchmarks.md, "Session 11");
`COULISSE_ATTENTION_BF16=0` keeps fp32 products there. Where the CPU has AMX-BF16 (Sapphire Rapids and later),
those bf16 products run on its tiles, 16 queries at a time: 2.0x the AVX512-BF16 unit's speed there
(docs/benchmarks.md, "Session 15"); `COULISSE_ATTENTION_AMX=0` keeps AVX512-BF16. Exact (fp32) pipelines always
keep fp32. bf16 pipelines on those CPUs hand their bf16 q/k/v to the same kernel (read as they are; fp32
output), where they otherwise call SDPA once per sequence; elsewhere they keep SDPA.
"""

from __future__ import annotations

import logging
import os

import torch
from torch import Tensor, nn

from coulisse.models import native
from coulisse.models.quantize import Codes
from coulisse.models.swap import swap_linears
from coulisse.weights.mapped import release_tensor_pages

log = logging.getLogger(__name__)


def onednn_fp32_available() -> bool:
    return (os.environ.get("COULISSE_ONEDNN", "1") != "0" and torch.backends.mkldnn.is_available()
            and hasattr(torch.ops.mkldnn, "_linear_pointwise"))


class Fp32Linear(nn.Module):
    """A frozen fp32 `nn.Linear` for the CPU fast path; subclasses say which GEMM (`_gemm`).

    With the C kernels built (`coulisse.models._int8`) and fusions on, what follows the GEMM runs as one
    pass over each output row while it is in cache: the bias, and the erf GELU of a feed-forward
    (`c_gelu`, the layer then standing for `gelu(linear(x))`); `forward_add_norm` does the `*Output`
    blocks' bias + residual + LayerNorm (models/bert.py DenseNorm). Without them, the bias goes to the
    GEMM and PyTorch runs the rest, as an `nn.Linear` would. On a 2-core Zen 3 the pass made the exact
    forward 1.04-1.08x faster with oneDNN, 1.01-1.07x with MKL (docs/benchmarks.md, "Session 8").
    """

    def __init__(self, linear: nn.Linear, c_gelu: bool = False):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.c_pass = native.kernels() is not None and native.fusions_enabled()
        self.c_gelu = c_gelu and self.c_pass
        bias = linear.bias.detach().float() if linear.bias is not None else None
        if bias is None and self.c_gelu:
            bias = torch.zeros(self.out_features)
        self.register_buffer("bias", bias)

    def _gemm(self, x: Tensor, bias: Tensor | None) -> Tensor:
        """`x @ W.T (+ bias)` for `(T, in)` rows; a fresh contiguous `(T, out)` tensor."""
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        rows = x.reshape(-1, self.in_features)
        if not self.c_pass or self.bias is None:
            return self._gemm(rows, self.bias).reshape(*x.shape[:-1], self.out_features)
        # + bias (, GELU), in place
        out = native.dequantize_rows(self._gemm(rows, None), None, self.bias, self.c_gelu)
        return out.reshape(*x.shape[:-1], self.out_features)

    def forward_add_norm(self, x: Tensor, residual: Tensor, norm: nn.LayerNorm) -> Tensor:
        """`norm(self(x) + residual)` with the bias, the residual add and the LayerNorm in one C pass."""
        if not self.c_pass or self.bias is None or self.c_gelu:
            return norm(self(x) + residual)
        out = self._gemm(x.reshape(-1, self.in_features), None)
        out = native.add_norm_rows(out, None, self.bias, residual.reshape(out.shape), norm)
        return out.reshape(*x.shape[:-1], self.out_features)

    def _epilogue_repr(self) -> str:
        return ", bias + GELU in C" if self.c_gelu else (", bias in C" if self.c_pass and self.bias is not None
                                                          else "")


class PackedLinear(Fp32Linear):
    """oneDNN's matmul on a weight in its blocked layout, prepacked once.

    `activation` ("gelu", "gelu_tanh" or "relu") is applied to the output as a oneDNN post-op, on each
    output tile while it is still in cache (the layer then stands for `act(linear(x))`); `c_gelu` runs the
    erf GELU in the C pass instead (see `Fp32Linear`). One of the two at most.
    """

    def __init__(self, linear: nn.Linear, activation: str | None = None, c_gelu: bool = False):
        if activation is not None and c_gelu:
            raise ValueError("PackedLinear: a oneDNN post-op or the C GELU, not both; this is a bug")
        super().__init__(linear, c_gelu)
        if activation is not None:
            self.c_pass = False  # the post-op needs the bias inside the GEMM
        self.activation = activation
        self.attr, self.algorithm = POST_OPS[activation]
        # An opaque oneDNN tensor: kept as a plain attribute, not a buffer, so that module utilities
        # (state_dict, .to) never try to read it as a dense tensor.
        self.packed_weight = torch.ops.mkldnn._reorder_linear_weight(linear.weight.detach().float(), None)

    def _gemm(self, x: Tensor, bias: Tensor | None) -> Tensor:
        return torch.ops.mkldnn._linear_pointwise(x, self.packed_weight, bias, self.attr, [], self.algorithm)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, oneDNN prepacked"
                + (f", {self.activation} post-op" if self.activation else "") + self._epilogue_repr())


class MklLinear(Fp32Linear):
    """MKL's sgemm (PyTorch's `mm` / `addmm`) on the plain weight: the corpus jobs' kernel where it measured
    faster at full batches (coulisse/engine/gemm_choice.py). It repacks the weight on every call, which
    only large batches amortize."""

    def __init__(self, linear: nn.Linear, c_gelu: bool = False):
        super().__init__(linear, c_gelu)
        self.register_buffer("weight", linear.weight.detach().float())

    def _gemm(self, x: Tensor, bias: Tensor | None) -> Tensor:
        return torch.nn.functional.linear(x, self.weight, bias)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, MKL sgemm"
                + self._epilogue_repr())


# Our activation name -> oneDNN post-op `(attr, algorithm)` of `mkldnn::_linear_pointwise`.
POST_OPS = {None: ("none", ""), "gelu": ("gelu", "none"), "gelu_tanh": ("gelu", "tanh"), "relu": ("relu", "")}


class BF16Linear(nn.Module):
    """A frozen `nn.Linear` run in bf16: fp32 or bf16 input, bf16 output, fp32 accumulation.

    `packed=True` prepacks the weight for oneDNN (needs AMX, AVX512-BF16 or AVX-512 BW/VL/DQ: the
    kernel plan says); otherwise the bf16 weight goes to `F.linear`, PyTorch's reference bf16 GEMM.
    A packed layer may apply `activation` as a oneDNN post-op (on the fp32 accumulator, before the
    output is rounded to bf16), as `PackedLinear` does.
    """

    def __init__(self, linear: nn.Linear, packed: bool, activation: str | None = None):
        super().__init__()
        self.in_features, self.out_features, self.packed = linear.in_features, linear.out_features, packed
        if activation is not None and not packed:
            raise ValueError("BF16Linear: a fused activation needs the oneDNN (packed) path; this is a bug")
        self.activation = activation
        self.attr, self.algorithm = POST_OPS[activation]
        weight = linear.weight.detach().to(torch.bfloat16)
        bias = linear.bias.detach().to(torch.bfloat16) if linear.bias is not None else None
        if packed:
            self.packed_weight = torch.ops.mkldnn._reorder_linear_weight(weight, None)  # opaque, not a buffer
        else:
            self.register_buffer("weight", weight)
        self.register_buffer("bias", bias)

    def forward(self, x: Tensor) -> Tensor:
        x = x.to(torch.bfloat16)  # a no-op when the previous layer already gave bf16
        if self.packed:
            return torch.ops.mkldnn._linear_pointwise(x, self.packed_weight, self.bias, self.attr, [],
                                                      self.algorithm)
        return torch.nn.functional.linear(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, bf16, "
                + ("oneDNN prepacked" if self.packed else "PyTorch reference GEMM")
                + (f", {self.activation} post-op" if self.activation else ""))


def pack_linears(module: nn.Module, fuse_activation: bool = False, kernel: str = "onednn") -> int:
    """Swap every fp32 `nn.Linear` under `module` for a `PackedLinear` (`kernel="onednn"`) or an
    `MklLinear` (`"mkl"`); return how many. A feed-forward's erf GELU runs in the layers' C pass (its
    `act` then the identity). With `fuse_activation`, a oneDNN layer takes the activation as a post-op
    instead: off by default, as on AVX2 (Zen 3) the post-op measured slower than PyTorch's separate
    GELU (docs/benchmarks.md, "The rest of the layer"); not measured on AVX-512 or AMX."""
    fuse = native.fusions_enabled()

    def fp32_layer(linear: nn.Linear, path: str, activation: str | None) -> tuple[nn.Module, bool] | None:
        if linear.weight.dtype != torch.float32:
            return None
        activation = activation if fuse else None
        post_op = activation if fuse_activation and kernel == "onednn" else None
        c_gelu = activation == "gelu" and post_op is None
        if kernel == "onednn":
            layer = PackedLinear(linear, post_op, c_gelu)
            release_tensor_pages([linear.weight])  # repacked: the mapped original is no longer read
        else:
            layer = MklLinear(linear, c_gelu)  # reads the mapped weight itself
        return layer, post_op is not None or layer.c_gelu

    return swap_linears(module, fp32_layer)


def bf16_linears(module: nn.Module, packed: bool) -> int:
    """Swap every fp32 `nn.Linear` under `module` for a `BF16Linear`; return how many. Packed layers
    take a feed-forward's activation as a post-op, like `pack_linears`."""
    fuse = packed and native.fusions_enabled()

    def bf16_layer(linear: nn.Linear, path: str, activation: str | None) -> tuple[nn.Module, bool] | None:
        if linear.weight.dtype != torch.float32:
            return None
        activation = activation if fuse else None
        layer = BF16Linear(linear, packed, activation)
        release_tensor_pages([linear.weight])
        return layer, activation is not None

    return swap_linears(module, bf16_layer)


def c_attention_enabled() -> bool:
    """Whether fp32 models prepared now run attention in the C kernel (`install_c_attention`):
    built, fusions on, and not turned off with `COULISSE_C_ATTENTION=0` (A/B runs)."""
    return (native.kernels() is not None and native.fusions_enabled()
            and os.environ.get("COULISSE_C_ATTENTION", "1") != "0")


def attention_bf16_allowed() -> bool:
    """`COULISSE_ATTENTION_BF16=0` keeps int8 attention's products in fp32 (A/B runs, quality checks)."""
    return os.environ.get("COULISSE_ATTENTION_BF16", "1") != "0"


def attention_amx_allowed() -> bool:
    """`COULISSE_ATTENTION_AMX=0` keeps attention's bf16 products off AMX tiles, on AVX512-BF16 (A/B runs). The C
    kernels read it once per process, when they first run attention."""
    return os.environ.get("COULISSE_ATTENTION_AMX", "1") != "0"


def bf16_dot() -> bool:
    """Whether the built attention kernel multiplies bf16 pairs on this CPU (AVX512-BF16)."""
    k = native.kernels()
    return k is not None and hasattr(k, "has_bf16_dot") and k.has_bf16_dot()


def attention_bf16_products() -> bool:
    """Whether int8 pipelines built now run attention's products in bf16: the CPU multiplies bf16 pairs
    and `COULISSE_ATTENTION_BF16=0` does not say otherwise."""
    return bf16_dot() and attention_bf16_allowed()


def install_c_attention(module: nn.Module, bf16: bool = False) -> int:
    """Give every BERT-style self-attention under `module` the C kernel (`SelfAttention.kernel`; MPNet's too, its
    relative positions a bias the kernel adds), and ModernBERT's (`modernbert.Attention.kernel`, its local layers'
    window a -inf bias outside it); return how many. The model must compute in
    fp32 on the CPU (or bf16 where the CPU multiplies bf16 pairs); other inputs fall back on SDPA per call.
    `bf16`: the kernel's products in bf16 (int8 pipelines, `attention_bf16_products`); bf16 inputs always take
    them, so where the head width allows bf16 products (32 divides it) the query/key/value projection may hand
    them over in bf16 (`SelfAttention.kernel_reads_bf16`)."""
    from coulisse.models import modernbert
    from coulisse.models.bert import SelfAttention

    kernel = c_packed_attention_bf16 if bf16 else c_packed_attention
    count = 0
    for child in module.modules():
        if isinstance(child, SelfAttention):
            child.kernel = kernel
            child.kernel_reads_bf16 = bf16 and child.head_dim % 32 == 0
            child.kernel_gives_codes = True
            count += 1
        elif isinstance(child, modernbert.Attention):  # its rotated q/k in fp32
            child.kernel = kernel
            count += 1
    return count


def install_c_embeddings(module: nn.Module) -> int:
    """Give every BERT-style embeddings block under `module` its one C pass (`Embeddings.norm_kernel`:
    `native.add_norm_rows`) where the C kernels are built and fusions are on; return how many."""
    from coulisse.models.bert import Embeddings

    if native.kernels() is None or not native.fusions_enabled():
        return 0
    count = 0
    for child in module.modules():
        if isinstance(child, Embeddings):
            child.norm_kernel = native.add_norm_rows
            count += 1
    return count


def c_packed_attention_bf16(qkv: Tensor, p, heads: int, first_only: bool, codes: bool = False,
                            rel: Tensor | None = None) -> Tensor | Codes | None:
    """`c_packed_attention` with Q K^T and P V in bf16 products, fp32 sums (where the CPU has them)."""
    return c_packed_attention(qkv, p, heads, first_only, bf16=True, codes=codes, rel=rel)


def c_packed_attention(qkv: Tensor, p, heads: int, first_only: bool, bf16: bool = False,
                       codes: bool = False, rel: Tensor | None = None) -> Tensor | Codes | None:
    """softmax(q k^T / sqrt(d)) v for every sequence and head of a packed `(T, 3H)` fp32 tensor in one C
    call (coulisse/models/_attention.c): no per-sequence SDPA calls, no padded copy. `(T, H)`, or `(B, H)`
    with `first_only`; None when the C kernels cannot take `qkv` (dtype, device, layout) or when autograd
    records the forward (the kernel has no backward: gradients, as attributions take them, go through SDPA).
    `bf16`: products in bf16 where the CPU multiplies bf16 pairs and 32 divides the head width, else fp32.
    A bf16 `qkv` (bf16 pipelines) is read as it is, with bf16 products, where those hold (else None); the
    output is fp32 either way. `codes` (not with `first_only`): the output rows as the attention block's int8 layer
    reads them, their `quantize.Codes` alone (`quantize_rows`' codes, to the bit). The kernel then takes whole
    sequences (every head) as its units where the longest leaves the threads even work, and quantizes each
    sequence's rows from its thread's L2: no fp32 rows written out and read back (3 kB a token). `rel`: a bias
    added to the scores by the key's offset from the query, an fp32 `(heads or 1, 2 W - 1)` table whose column
    `W - 1 + j - i` query i adds to its score of key j (`bert.RelativeBias`; W at least the longest sequence).
    A bias that needs gradients leaves the call to SDPA (None)."""
    k = native.kernels()
    bf16_inputs = qkv.dtype == torch.bfloat16
    if (k is None or qkv.dtype not in (torch.float32, torch.bfloat16) or qkv.device.type != "cpu"
            or not qkv.is_contiguous() or qkv.shape[1] % (3 * heads) != 0
            or (qkv.requires_grad and torch.is_grad_enabled())):
        return None
    if rel is not None and (rel.dtype != torch.float32 or rel.device.type != "cpu" or not rel.is_contiguous()
                            or (rel.requires_grad and torch.is_grad_enabled())):
        return None
    if rel is not None and rel.dim() != 2:
        raise ValueError(f"attention: a relative bias of shape {tuple(rel.shape)}; it needs (heads or 1, 2 W - 1)")
    hidden = qkv.shape[1] // 3
    if bf16_inputs and not (bf16_dot() and (hidden // heads) % 32 == 0):
        return None
    starts, lengths = p.starts, p.length_tensor
    if starts.dtype != torch.int64 or starts.device.type != "cpu":
        return None
    out = qkv.new_empty(p.batch_size if first_only else qkv.shape[0], hidden, dtype=torch.float32)
    result = Codes(torch.empty(out.shape, dtype=torch.uint8), torch.empty(out.shape[0], 1)) \
        if codes and not first_only else None
    k.attention(qkv.data_ptr(), out.data_ptr(), starts.data_ptr(), lengths.data_ptr(), p.batch_size, hidden, heads,
                (hidden // heads) ** -0.5, first_only, torch.get_num_threads(), bf16, bf16_inputs,
                *((result.q.data_ptr(), result.scale.data_ptr()) if result is not None else (0, 0)),
                *((rel.data_ptr(), rel.shape[0], rel.shape[1]) if rel is not None else ()))
    return result if result is not None else out


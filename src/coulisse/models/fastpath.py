"""The CPU fast paths of the linear layers: fp32 and bf16 weights prepacked once at load time.

PyTorch's `F.linear` calls MKL's sgemm, which repacks the weight on every call: oneDNN's matmul with a
prepacked (blocked) weight runs 2× faster at a few rows, and 1.0–1.2× at 1,024 rows on some machines
while MKL wins there by up to 1.2× on others (docs/benchmarks.md), with fp32 results equal to within
rounding (≤ 2e-6 here). Chosen once when a pipeline is built on the CPU in fp32; corpus jobs time both
first (coulisse/engine/gemm_choice.py); `COULISSE_ONEDNN=0` turns it off.

bf16 (`dtype="bfloat16"` on the CPU) is mixed precision, decided per op: only the encoder's linear
layers run in bf16 (`BF16Linear`: input rounded to bf16, products summed in fp32 by the GEMM, output
rounded to bf16); embeddings, the residual stream, LayerNorm, the task head stay fp32 (a bf16 output
plus the fp32 residual promotes to fp32, so every LayerNorm reads and writes fp32); attention's
softmax runs inside SDPA, which accumulates bf16 inputs in fp32. Each GEMM thus adds relative errors
of about 2^-9 (rounding its input, weight and output), never compounding in the residual stream.
Packed bf16 layers apply the feed-forward's activation as a oneDNN post-op, on the fp32 sums before the
output's one rounding; fp32 layers can too (`fuse_activation`), off because it measured slower on AVX2.
"""

from __future__ import annotations

import functools
import logging
import os

import torch
from torch import Tensor, nn

from coulisse.weights.mapped import release_tensor_pages

log = logging.getLogger(__name__)


def fusions_enabled() -> bool:
    """Whether layers built now fuse their neighbours (the feed-forward activation as a oneDNN post-op,
    int8's dequantize + residual + LayerNorm pass). `COULISSE_FUSE=0` at load keeps them apart: the
    benchmarks' A/B switch (bench/profile_engine.py --ab), read when each layer is built."""
    return os.environ.get("COULISSE_FUSE", "1") != "0"


def onednn_fp32_available() -> bool:
    return (os.environ.get("COULISSE_ONEDNN", "1") != "0" and torch.backends.mkldnn.is_available()
            and hasattr(torch.ops.mkldnn, "_linear_pointwise"))


class PackedLinear(nn.Module):
    """A frozen fp32 `nn.Linear` whose weight lives in oneDNN's blocked layout.

    `activation` ("gelu", "gelu_tanh" or "relu") is applied to the output as a oneDNN post-op, on each
    output tile while it is still in cache (the layer then stands for `act(linear(x))`).
    """

    def __init__(self, linear: nn.Linear, activation: str | None = None):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.activation = activation
        self.attr, self.algorithm = POST_OPS[activation]
        # An opaque oneDNN tensor: kept as a plain attribute, not a buffer, so that module utilities
        # (state_dict, .to) never try to read it as a dense tensor.
        self.packed_weight = torch.ops.mkldnn._reorder_linear_weight(linear.weight.detach().float(), None)
        bias = linear.bias.detach().float() if linear.bias is not None else None
        self.register_buffer("bias", bias)

    def forward(self, x: Tensor) -> Tensor:
        return torch.ops.mkldnn._linear_pointwise(x, self.packed_weight, self.bias, self.attr, [], self.algorithm)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, oneDNN prepacked"
                + (f", {self.activation} post-op" if self.activation else ""))


# Our activation name -> oneDNN post-op `(attr, algorithm)` of `mkldnn::_linear_pointwise`.
POST_OPS = {None: ("none", ""), "gelu": ("gelu", "none"), "gelu_tanh": ("gelu", "tanh"), "relu": ("relu", "")}


def fused_activation(module: nn.Module, child_name: str) -> str | None:
    """The post-op name of `module.act` when it applies to child `child_name`'s output (a feed-forward
    `act(dense(x))` declares it with `act_input`, as models/quantize.py reads it too); None otherwise."""
    if getattr(module, "act_input", None) != child_name or not fusions_enabled():
        return None
    from coulisse.models.bert import ACTIVATIONS

    names = {id(ACTIVATIONS["gelu"]): "gelu", id(ACTIVATIONS["gelu_new"]): "gelu_tanh",
             id(ACTIVATIONS["gelu_pytorch_tanh"]): "gelu_tanh", id(ACTIVATIONS["relu"]): "relu"}
    return names.get(id(module.act))


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


@functools.cache
def _malloc_trim():
    try:
        import ctypes

        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc: nothing to do
        return None


def release_freed_memory() -> None:
    """Hand freed heap pages back to the OS (glibc keeps them otherwise): after weights are repacked or
    quantized the fp32 originals are garbage, and after a batch its activations are; peak RSS should
    not keep counting them."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


def pack_linears(module: nn.Module, fuse_activation: bool = False) -> int:
    """Swap every fp32 `nn.Linear` under `module` for a `PackedLinear`; return how many. With
    `fuse_activation`, a feed-forward's activation becomes the layer's post-op (its `act` then the
    identity). Off by default: on AVX2 (Zen 3) the post-op measured slower than PyTorch's separate GELU
    (docs/benchmarks.md, "The rest of the layer"); not measured on AVX-512 or AMX."""
    count = 0
    for name, child in module.named_children():
        if isinstance(child, nn.Linear) and child.weight.dtype == torch.float32:
            activation = fused_activation(module, name) if fuse_activation else None
            setattr(module, name, PackedLinear(child, activation))
            if activation is not None:
                module.act = _identity
            release_tensor_pages([child.weight])  # the mapped original is no longer read
            count += 1
        else:
            count += pack_linears(child, fuse_activation)
    return count


def bf16_linears(module: nn.Module, packed: bool) -> int:
    """Swap every fp32 `nn.Linear` under `module` for a `BF16Linear`; return how many. Packed layers
    take a feed-forward's activation as a post-op, like `pack_linears`."""
    count = 0
    for name, child in module.named_children():
        if isinstance(child, nn.Linear) and child.weight.dtype == torch.float32:
            activation = fused_activation(module, name) if packed else None
            setattr(module, name, BF16Linear(child, packed, activation))
            if activation is not None:
                module.act = _identity
            release_tensor_pages([child.weight])
            count += 1
        else:
            count += bf16_linears(child, packed)
    return count


def _identity(x: Tensor) -> Tensor:
    return x

"""The CPU fast paths of the linear layers: fp32 and bf16 weights prepacked once at load time.

PyTorch's `F.linear` calls MKL's sgemm, which repacks the weight on every call and is slower on AMD
CPUs; oneDNN's matmul with a prepacked (blocked) weight measured 1.2–2× faster on this project's
machine (docs/benchmarks.md), with fp32 results equal to within rounding (≤ 2e-6 here). Chosen once
when a pipeline is built on the CPU in fp32; `COULISSE_ONEDNN=0` turns it off.

bf16 (`dtype="bfloat16"` on the CPU) is mixed precision, decided per op: only the encoder's linear
layers run in bf16 (`BF16Linear`: input rounded to bf16, products summed in fp32 by the GEMM, output
rounded to bf16); embeddings, the residual stream, LayerNorm, the task head stay fp32 (a bf16 output
plus the fp32 residual promotes to fp32, so every LayerNorm reads and writes fp32); attention's
softmax runs inside SDPA, which accumulates bf16 inputs in fp32. Each GEMM thus adds relative errors
of about 2^-9 (rounding its input, weight and output), never compounding in the residual stream.
"""

from __future__ import annotations

import functools
import logging
import os

import torch
from torch import Tensor, nn

from coulisse.weights.mapped import release_tensor_pages

log = logging.getLogger(__name__)


def onednn_fp32_available() -> bool:
    return (os.environ.get("COULISSE_ONEDNN", "1") != "0" and torch.backends.mkldnn.is_available()
            and hasattr(torch.ops.mkldnn, "_linear_pointwise"))


class PackedLinear(nn.Module):
    """A frozen fp32 `nn.Linear` whose weight lives in oneDNN's blocked layout."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        # An opaque oneDNN tensor: kept as a plain attribute, not a buffer, so that module utilities
        # (state_dict, .to) never try to read it as a dense tensor.
        self.packed_weight = torch.ops.mkldnn._reorder_linear_weight(linear.weight.detach().float(), None)
        bias = linear.bias.detach().float() if linear.bias is not None else None
        self.register_buffer("bias", bias)

    def forward(self, x: Tensor) -> Tensor:
        return torch.ops.mkldnn._linear_pointwise(x, self.packed_weight, self.bias, "none", [], "")

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, oneDNN prepacked"


class BF16Linear(nn.Module):
    """A frozen `nn.Linear` run in bf16: fp32 or bf16 input, bf16 output, fp32 accumulation.

    `packed=True` prepacks the weight for oneDNN (needs AMX, AVX512-BF16 or AVX-512 BW/VL/DQ: the
    kernel plan says); otherwise the bf16 weight goes to `F.linear`, PyTorch's reference bf16 GEMM.
    """

    def __init__(self, linear: nn.Linear, packed: bool):
        super().__init__()
        self.in_features, self.out_features, self.packed = linear.in_features, linear.out_features, packed
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
            return torch.ops.mkldnn._linear_pointwise(x, self.packed_weight, self.bias, "none", [], "")
        return torch.nn.functional.linear(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, bf16, "
                + ("oneDNN prepacked" if self.packed else "PyTorch reference GEMM"))


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


def pack_linears(module: nn.Module) -> int:
    """Swap every fp32 `nn.Linear` under `module` for a `PackedLinear`; return how many."""
    count = 0
    for name, child in module.named_children():
        if isinstance(child, nn.Linear) and child.weight.dtype == torch.float32:
            setattr(module, name, PackedLinear(child))
            release_tensor_pages([child.weight])  # the mapped original is no longer read
            count += 1
        else:
            count += pack_linears(child)
    return count


def bf16_linears(module: nn.Module, packed: bool) -> int:
    """Swap every fp32 `nn.Linear` under `module` for a `BF16Linear`; return how many."""
    count = 0
    for name, child in module.named_children():
        if isinstance(child, nn.Linear) and child.weight.dtype == torch.float32:
            setattr(module, name, BF16Linear(child, packed))
            release_tensor_pages([child.weight])
            count += 1
        else:
            count += bf16_linears(child, packed)
    return count

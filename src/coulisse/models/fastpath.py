"""The fp32 CPU fast path: linear layers on oneDNN with weights prepacked once at load time.

PyTorch's `F.linear` calls MKL's sgemm, which repacks the weight on every call and is slower on AMD
CPUs; oneDNN's matmul with a prepacked (blocked) weight measured 1.2–2× faster on this project's
machine (docs/benchmarks.md), with fp32 results equal to within rounding (≤ 2e-6 here). Chosen once
when a pipeline is built on the CPU in fp32; `COULISSE_ONEDNN=0` turns it off.
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

"""int8 inference on CPU: the encoder's linear layers in int8, quantized dynamically per token.

Weights are quantized once at load time: symmetric int8, one scale per output channel. Activations are
quantized at run time with one scale per token (row), so an outlier in one token does not coarsen the
others — the scheme that keeps all-MiniLM-L6-v2 embeddings at cosine ≥ 0.99 of fp32 (see
docs/benchmarks.md), where per-tensor activations (fbgemm's dynamic linear, 7-bit on AVX2) reach 0.97.

Kernel: oneDNN's `onednn::qlinear_pointwise` (u8 × s8 → fp32), the int8 GEMM PyTorch's x86 inductor
backend uses; it picks AVX-512 VNNI / AMX where the CPU has them and AVX2 elsewhere. Without VNNI the
kernel multiplies with `vpmaddubsw`, whose pairwise sums saturate at 16 bits: u8 activations times s8
weights can overflow, so there the weights keep 7 bits (|q| ≤ 63), which bounds every pair sum by
2 · 255 · 63 < 32767 (the same trade oneDNN makes itself when it quantizes). The per-token
scale is applied after the GEMM (`y = acc · w_scale · x_scale + bias`), which keeps the kernel's own
activation scale constant (1.0), so oneDNN reuses one primitive for every call. When oneDNN is missing,
fbgemm's dynamic linear is the fallback. Embeddings, LayerNorms, attention and the task head stay fp32.
"""

from __future__ import annotations

import logging
import warnings

import torch
from torch import Tensor, nn

from coulisse.errors import InputError

log = logging.getLogger(__name__)

MODES = ("none", "int8")
ZERO_POINT = 128  # symmetric int8 activations, shifted into u8 for the u8 × s8 kernel


def has_vnni() -> bool:
    """Whether the CPU multiplies int8 pairs straight into 32 bits (AVX-512 VNNI, AVX-VNNI or AMX)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            flags = next((line for line in f if line.startswith("flags")), "").split()
    except OSError:
        return False
    return any(flag in flags for flag in ("avx512_vnni", "avx_vnni", "amx_int8"))


def onednn_available() -> bool:
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.onednn, "qlinear_pointwise")


class Int8Linear(nn.Module):
    """A frozen `nn.Linear` with int8 weights (per channel) and int8 activations (per token)."""

    def __init__(self, linear: nn.Linear, weight_max: int = 127):
        super().__init__()
        weight = linear.weight.detach().float()
        scale = weight.abs().amax(1).clamp(min=1e-12) / weight_max  # (out,)
        q = torch.round(weight / scale[:, None]).clamp(-weight_max, weight_max).to(torch.int8)
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.register_buffer("packed", torch.ops.onednn.qlinear_prepack(q, None))
        self.register_buffer("w_scale", scale)
        self.register_buffer("w_zero", torch.zeros(self.out_features, dtype=torch.long))
        bias = linear.bias.detach().float() if linear.bias is not None else torch.zeros(self.out_features)
        self.register_buffer("bias", bias)

    def forward(self, x: Tensor) -> Tensor:
        rows = x.reshape(-1, self.in_features).float()  # (T, in)
        # One pass for the scales, then in-place ops: this quantization costs ~10-40 % of the GEMM.
        x_scale = torch.linalg.vector_norm(rows, float("inf"), dim=1, keepdim=True).clamp_(min=1e-12).div_(127)
        xq = (rows / x_scale).round_().add_(ZERO_POINT).to(torch.uint8)  # (T, 1) scales, u8 codes
        acc = torch.ops.onednn.qlinear_pointwise(
            xq, 1.0, ZERO_POINT, self.packed, self.w_scale, self.w_zero, None, 1.0, 0, torch.float32,
            "none", [], "")  # (T, out) = sum(xq · wq) · w_scale
        return torch.addcmul(self.bias, acc, x_scale).reshape(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8 per-token"


def _swap_linears(module: nn.Module, weight_max: int) -> int:
    count = 0
    for name, child in module.named_children():
        if isinstance(child, nn.Linear):
            setattr(module, name, Int8Linear(child, weight_max))
            count += 1
        else:
            count += _swap_linears(child, weight_max)
    return count


def _fbgemm(model: nn.Module) -> None:
    torch.backends.quantized.engine = "fbgemm"
    qconfig = torch.ao.quantization.per_channel_dynamic_qconfig
    with warnings.catch_warnings():
        # torch deprecates its quantized tensor types in favour of torchao; the fbgemm kernels remain.
        warnings.simplefilter("ignore")
        model.base.encoder = torch.ao.quantization.quantize_dynamic(model.base.encoder, {nn.Linear: qconfig})


def quantize_model(model: nn.Module, mode: str | None) -> nn.Module:
    if mode in (None, "none"):
        return model
    if mode != "int8":
        raise InputError(f"quantize={mode!r}; use one of {', '.join(MODES)}.")
    if onednn_available():
        from coulisse.models.fastpath import release_freed_memory

        vnni = has_vnni()
        count = _swap_linears(model.base.encoder, 127 if vnni else 63)
        release_freed_memory()
        log.info("int8: %d encoder linear layers, oneDNN u8×s8 per-token, %s, %s-bit weights", count,
                 "VNNI" if vnni else torch.backends.cpu.get_cpu_capability(), 8 if vnni else 7)
    elif "fbgemm" in torch.backends.quantized.supported_engines:
        _fbgemm(model)
        log.info("int8: encoder linear layers, fbgemm dynamic (per-tensor activations)")
    else:
        raise InputError("quantize='int8' needs PyTorch's oneDNN or fbgemm CPU backend; this build has neither.")
    return model

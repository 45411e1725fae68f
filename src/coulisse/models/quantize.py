"""int8 inference on CPU: dynamic quantization of the encoder's linear layers.

Weights are quantized once at load time (per output channel, symmetric int8); activations are
quantized per batch at run time (per tensor, asymmetric uint8). The kernel is PyTorch's fbgemm
`quantized::linear_dynamic`: AVX-512 VNNI (`vpdpbusd`) where the CPU has it, else AVX2
(`vpmaddubsw`, with activations kept to 7 bits so the 16-bit pair sums cannot saturate).
Embeddings, LayerNorms, attention and the task head stay fp32.
"""

from __future__ import annotations

import logging
import warnings

import torch
from torch import nn

from coulisse.errors import InputError

log = logging.getLogger(__name__)

MODES = ("none", "int8")


def quantize_model(model: nn.Module, mode: str | None) -> nn.Module:
    if mode in (None, "none"):
        return model
    if mode != "int8":
        raise InputError(f"quantize={mode!r}; use one of {', '.join(MODES)}.")
    if "fbgemm" not in torch.backends.quantized.supported_engines:
        raise InputError("quantize='int8' needs PyTorch's fbgemm engine (x86 CPUs); this build lacks it.")
    torch.backends.quantized.engine = "fbgemm"
    qconfig = torch.ao.quantization.per_channel_dynamic_qconfig
    with warnings.catch_warnings():
        # torch deprecates its quantized tensor types in favour of torchao; the fbgemm kernels remain.
        warnings.simplefilter("ignore")
        model.base.encoder = torch.ao.quantization.quantize_dynamic(model.base.encoder, {nn.Linear: qconfig})
    log.info("int8: encoder linear layers quantized (fbgemm dynamic, %s, per-channel weights)",
             torch.backends.cpu.get_cpu_capability())
    return model

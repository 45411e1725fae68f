"""coulisse's C extension (`coulisse.models._int8`, built at install by setup.py) and its generic row passes.

Every CPU fast path reads the same module: the fp32 layers (models/fastpath.py), the int8 layers
(models/quantize.py), the attention kernel and BERT's embeddings. This module loads it once (`kernels()`, None
where it was not built: no C compiler at install, or `COULISSE_INT8_KERNELS=0`), holds the load-time switch
that fuses the passes around the GEMMs (`fusions_enabled`, `COULISSE_FUSE`), and runs the passes that finish
a GEMM's output rows while they are in cache: `dequantize_rows` (`· scale + bias`, then the erf GELU) and
`add_norm_rows` (the `*Output` blocks' bias + residual + LayerNorm). With no scale they are fp32 passes (an fp32
GEMM's output); with one, an int8 GEMM's dequantization. Without the C module they run as PyTorch ops, the
same arithmetic. Asked for, a pass also quantizes each finished row for the next int8 layer and attaches
`(codes, scales)` to its output under `CODES` (models/quantize.py says why).
"""

from __future__ import annotations

import logging
import os

import torch
import torch.nn.functional as F
from torch import Tensor, nn

log = logging.getLogger("coulisse.models.quantize")  # its lines kept their logger when this module left quantize.py

CODES = "_coulisse_int8_codes"  # attribute of an output tensor: its rows' `(u8 codes, scales)` (models/quantize.py)


def fusions_enabled() -> bool:
    """Whether layers built now fuse their neighbours (the feed-forward activation as a oneDNN post-op,
    int8's dequantize + residual + LayerNorm pass, the fp32 layers' C passes in models/fastpath.py).
    `COULISSE_FUSE=0` at load keeps them apart: the benchmarks' A/B switch (bench/profile_engine.py
    --ab), read when each layer is built."""
    return os.environ.get("COULISSE_FUSE", "1") != "0"


def kernels():
    """The fused C kernels (`coulisse.models._int8`), or None where they were not built."""
    global _KERNELS
    if _KERNELS is None:
        try:
            from coulisse.models import _int8

            _KERNELS = _int8
        except ImportError:
            _KERNELS = False
            log.info("int8: the C kernels are not built (no C compiler at install: with gcc or clang on PATH, "
                     "install coulisse again from source); using PyTorch ops, more slowly")
    return _KERNELS or None


_KERNELS = None if os.environ.get("COULISSE_INT8_KERNELS", "1") != "0" else False


def norm_fusable(norm: nn.LayerNorm, width: int) -> bool:
    """Whether `add_norm_rows`' C pass can apply `norm` to rows of `width` (fp32 weight and bias, that width)."""
    return (norm.weight is not None and norm.bias is not None and norm.weight.dtype == torch.float32
            and norm.bias.dtype == torch.float32 and tuple(norm.normalized_shape) == (width,))


def code_buffers(out: Tensor, codes: bool) -> tuple[int, int]:
    """Attach empty `(codes, scales)` for `out`'s rows to `out` when asked; their pointers (0, 0 if not)."""
    if not codes:
        return 0, 0
    q, scale = torch.empty(out.shape, dtype=torch.uint8), torch.empty(out.shape[0], 1)
    setattr(out, CODES, (q, scale))
    return q.data_ptr(), scale.data_ptr()


def dequantize_rows(out: Tensor, scale: Tensor | None, bias: Tensor, gelu: bool, codes: bool = False) -> Tensor:
    """`out · scale + bias` (then GELU), in place when the C kernels are built. `scale` None: `out + bias`
    (an fp32 GEMM's output, models/fastpath.py). With `codes`, where the C kernels run, the result also
    carries its rows quantized as `quantize.quantize_rows` would (read by `quantize.codes_of`), made in the same
    pass."""
    k = kernels()
    if (k is not None and out.dtype == bias.dtype == torch.float32 and out.is_contiguous()
            and bias.is_contiguous() and out.device.type == "cpu"):
        q_ptr, s_ptr = code_buffers(out, codes)
        k.dequantize_rows(out.data_ptr(), out.shape[0], out.shape[1], 0 if scale is None else scale.data_ptr(),
                          bias.data_ptr(), torch.get_num_threads(), gelu, q_ptr, s_ptr)
        return out
    out = out + bias if scale is None else torch.addcmul(bias, out, scale)
    return F.gelu(out) if gelu else out


def add_norm_rows(out: Tensor, scale: Tensor | None, bias: Tensor, residual: Tensor, norm: nn.LayerNorm,
                  fused: bool = True, codes: bool = False) -> Tensor:
    """`norm(out · scale + bias + residual)`, in place in `out` when the C kernels are built (`scale` None:
    `norm(out + bias + residual)`). The sum before the norm is the unfused path's to the bit (the same
    fma, then the same add); the norm's mean and variance are summed in fp32 in another order than
    torch's (tests/models/test_fusions.py). `codes` as for `dequantize_rows`."""
    k = kernels()
    fusable = (k is not None and out.dtype == residual.dtype == bias.dtype == torch.float32
               and out.is_contiguous() and residual.is_contiguous() and bias.is_contiguous() and fused
               and norm_fusable(norm, out.shape[1]) and out.device.type == "cpu")
    if fusable:
        q_ptr, s_ptr = code_buffers(out, codes)
        k.add_norm_rows(out.data_ptr(), out.shape[0], out.shape[1], 0 if scale is None else scale.data_ptr(),
                        bias.data_ptr(), residual.data_ptr(), norm.weight.data_ptr(), norm.bias.data_ptr(),
                        float(norm.eps), torch.get_num_threads(), q_ptr, s_ptr)
        return out
    return norm(dequantize_rows(out, scale, bias, False) + residual)

"""int8 inference on CPU: the encoder's linear layers in int8, quantized dynamically per token.

Weights are quantized once at load time: symmetric int8, one scale per output channel. Activations are
quantized at run time with one scale per token (row), so an outlier in one token does not coarsen the
others — the scheme that keeps all-MiniLM-L6-v2 embeddings at cosine ≥ 0.99 of fp32 (see
docs/benchmarks.md), where per-tensor activations (fbgemm's dynamic linear, 7-bit on AVX2) reach 0.97.

Kernel: oneDNN's `onednn::qlinear_pointwise` (u8 × s8 → fp32), the int8 GEMM PyTorch's x86 inductor
backend uses; it picks AVX-512 VNNI / AMX where the CPU has them and AVX2 elsewhere. Which weight width
and small-batch policy a CPU gets is `coulisse.engine.cpu.plan`'s choice, passed in. Without VNNI the
kernel multiplies with `vpmaddubsw`, whose pairwise sums saturate at 16 bits: u8 activations times s8
weights can overflow, so there the weights keep 7 bits (|q| ≤ 63), which bounds every pair sum by
2 · 255 · 63 < 32767 (the same trade oneDNN makes itself when it quantizes). The per-token
scale is applied after the GEMM (`y = acc · w_scale · x_scale + bias`), which keeps the kernel's own
activation scale constant (1.0), so oneDNN reuses one primitive for every call. When oneDNN is missing,
fbgemm's dynamic linear is the fallback. Embeddings, LayerNorms, attention and the task head stay fp32.

Where the CPU has AVX512-VNNI, the plan takes coulisse's own GEMM instead (`gemm="coulisse"`,
`_int8_gemm.c`; its blocks on AMX-INT8 tiles where the CPU has those): the same products to the bit (exact
int32 sums, one rounding), a little faster than oneDNN's at the model's shapes on a Zen 4 (with the passes,
1.08x oneDNN's AMX GEMM and its passes on a Sapphire Rapids-class Xeon), and it finishes each block of rows
(dequantize, GELU or residual + LayerNorm, the next layer's codes) inside the same call, while the rows are
in cache: no second pass over the layer's output and no second wake-up of the threads per layer. An input
that comes without codes is quantized there too, block by block, before its product. Its
weights are packed once at load, in the layout its few-row kernel reads too: oneDNN keeps no copy.

Around the GEMM, the per-token quantization and the dequantization (`· x_scale + bias`, and the
feed-forward's GELU, fused into the same pass) run in small C kernels (`_int8.c`, built at install by
setup.py; AVX2 chosen at run time; models/native.py loads them and holds the passes the fp32 layers share
too): one pass each where PyTorch's ops take five. Without a compiler the install skips them and the same
arithmetic runs as PyTorch ops (same codes; measured ~7× slower for the quantization, see
docs/benchmarks.md). `COULISSE_INT8_KERNELS=0` forces that fallback. The `*Output` blocks' dequantization,
residual add and LayerNorm run as one C pass too (`forward_add_norm`, asked for by `models/bert.py`'s
DenseNorm); `COULISSE_FUSE=0` keeps them apart (for A/B benchmarks).

Codes travel with the rows: the passes that finish a layer whose output the next int8 layer reads (the
feed-forward's GELU, the `*Output` blocks' LayerNorm) also quantize each finished row while it is in L1,
and attach `(codes, scales)` to the output tensor (`CODES`). The next layer takes them instead of
quantizing the rows again — the same function on the same floats, so the same bits — which saves a pass
over the activations and a wake-up of the threads, three times per encoder layer. Only tensors our
layers return carry codes, and nothing of ours writes to them afterwards; a tensor without codes (or of another
shape) is quantized as before. A forward whose layers have hooks passes no codes (`bert.hooks_see_rows`): a hook
may edit a layer's output in place, and the codes attached to it would not follow.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
import warnings
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from coulisse.errors import InputError
from coulisse.models.bert import hooks_see_rows
from coulisse.models.native import (
    CODES,
    add_norm_rows,
    code_buffers,
    dequantize_rows,
    fusions_enabled,
    kernels,
    norm_fusable,
)
from coulisse.models.swap import swap_linears
from coulisse.weights.mapped import release_freed_memory, release_tensor_pages

log = logging.getLogger(__name__)

MODES = ("none", "int8")
ZERO_POINT = 128  # symmetric int8 activations, shifted into u8 for the u8 × s8 kernel
# Up to this many rows (tokens) a linear layer runs on fbgemm, above on oneDNN: measured crossover
# between 64 and 128 rows for 768 x 3072 on AVX2 (docs/benchmarks.md); not measured on VNNI or AMX.
SMALL_BATCH_ROWS = 64
# Where the CPU has AVX512-VNNI, coulisse's own few-row kernel (_int8_gemm.c) takes up to this many rows instead:
# it streams the weights once, 1.3-1.6x faster than fbgemm and oneDNN at 1-16 rows, ~1.1x at 32, even with
# oneDNN at 48 (a Zen 4, 48 GEMMs of a base model; docs/benchmarks.md, session 13).
SMALL_GEMM_ROWS = 32
# With AMX-INT8, coulisse's GEMM on tiles overtakes it from ~7 rows, since it splits the columns of a few rows
# between the threads (48 GEMMs of a base model: 2.13 vs 2.10-2.13 ms at 5 rows, 2.09-2.13 vs 2.13-2.20 at 7,
# 2.40 vs 3.37 at 14; a Sapphire Rapids-class Xeon, session 16; by rows the crossover was at ~14, session 15).
SMALL_GEMM_ROWS_AMX = 6
SAFE_WEIGHT_BITS = 7  # exact on every CPU, VNNI or not (see above); 8 only where the plan says VNNI
PACK_SMALL_AFTER = 3  # small batches a layer sees on oneDNN before it packs its small-batch weights
_PACKING = threading.Lock()  # held while a layer counts its small batches and packs their weights
# coulisse's kernels sum u8 codes times s8 weights in int32 lanes, modulo 2^32; the result
# sum((x - 128) w), |.| <= 128 * 127 * in_features, is exact below this width (2^31 / 16,256 = 132,104).
MAX_OWN_GEMM_IN = 131072


@dataclass(frozen=True)
class Codes:
    """A layer's output rows `(T, n)` kept only as the next int8 layer reads them: their u8 codes `q (T, n)` and
    scales `(T, 1)`, as `quantize_rows` makes them (`Int8Linear.forward_codes`, read by `forward_add_norm`)."""

    q: Tensor
    scale: Tensor


def onednn_available() -> bool:
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.onednn, "qlinear_pointwise")


class Int8Linear(nn.Module):
    """A frozen `nn.Linear` with int8 weights (per channel) and int8 activations (per token).

    `gelu=True` applies the exact (erf) GELU to the output, fused into the dequantization pass when
    the C kernels are built (the layer then stands for `gelu(linear(x))`). `codes` are the weight's
    `(q, scale)` when they were already computed (the cache, `coulisse.engine.cache`); batches of at most
    `small_rows` tokens run on a few-row kernel (coulisse's where the CPU has AVX512-VNNI, else fbgemm).
    `gemm="coulisse"` (the plan's choice where AVX512-VNNI is the CPU's best) runs every batch on coulisse's
    GEMM where the layer's shapes fit its blocks (in a multiple of 4, out of 16); other layers keep oneDNN.
    """

    def __init__(self, linear: nn.Linear, weight_max: int = 127, gelu: bool = False,
                 codes: tuple[Tensor, Tensor] | None = None, small_rows: int = SMALL_BATCH_ROWS,
                 gemm: str = "onednn"):
        super().__init__()
        q, scale = codes if codes is not None else quantize_weight(linear.weight, weight_max)
        self.in_features, self.out_features, self.gelu = linear.in_features, linear.out_features, gelu
        self.small_rows = small_rows
        self.fuse_norm = fusions_enabled()  # the `*Output` pass in C (`forward_add_norm`), chosen at load
        # coulisse's own GEMM (AVX512-VNNI, the kernel plan's choice) for every batch, where this layer's
        # shapes fit its blocks: one packed copy of the weights, read by the few-row kernel too.
        self.gemm = "coulisse" if gemm == "coulisse" and small_gemm_available(self.in_features, self.out_features,
                                                                                any_rows=True) else "onednn"
        # A feed-forward whose GELU this layer applies, on coulisse's GEMM, with its codes made for the next layer:
        # it can hand its rows over as codes only (`forward_codes`)
        self.codes_out = self.gemm == "coulisse" and gelu and self.fuse_norm
        bias = linear.bias.detach().float() if linear.bias is not None else torch.zeros(self.out_features)
        self.register_buffer("bias", bias)
        self._small_calls = 0
        if self.gemm == "coulisse":
            self.packed = None
            self.packed_small = _small_pack(q, scale)
            self.small_kernel = "coulisse" if small_batches_enabled() else None
            self._unpacked_small = None
            return
        self.register_buffer("packed", torch.ops.onednn.qlinear_prepack(q, None))
        self.register_buffer("w_scale", scale)
        self.register_buffer("w_zero", torch.zeros(self.out_features, dtype=torch.long))
        # The same int8 weights for a kernel made for a few rows: coulisse's own where the CPU has
        # AVX512-VNNI (`small_gemm_available`), else fbgemm, 2-4x faster than oneDNN at a few rows on AVX2.
        # Packed only once small batches recur (fbgemm packs slowly: ~0.7 s for a base-size model,
        # which a one-shot CLI call or a corpus job of large batches would pay for nothing).
        self.small_kernel = ("coulisse" if small_gemm_available(self.in_features, self.out_features)
                             else "fbgemm" if fbgemm_available() else None)
        self._unpacked_small: tuple[Tensor, Tensor] | None = (q, scale) if self.small_kernel else None
        self.packed_small = None

    def _small(self):
        if self.packed_small is None and self._unpacked_small is not None:
            # Pipelines run on several threads at once (engine.on_threads): one packs, the others wait for it
            # (two read `_unpacked_small` as the first set it to None: a TypeError, audit 46).
            with _PACKING:
                self._small_calls += 1
                if self.packed_small is None and self._small_calls >= PACK_SMALL_AFTER:
                    q, scale = self._unpacked_small
                    self.packed_small = (_small_pack(q, scale) if self.small_kernel == "coulisse"
                                         else _fbgemm_pack(q, scale))
                    # Codes mapped from the weight cache are read for the last time (and the neighbours that
                    # their page faults mapped again with them go too).
                    release_tensor_pages([q], whole_mapping=True)
                    self._unpacked_small = None
        return self.packed_small

    def _accumulate(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """The int8 GEMM: `(sum(xq · wq) · w_scale (T, out), x_scale (T, 1))`, not yet dequantized."""
        rows = x.reshape(-1, self.in_features).float().contiguous()  # (T, in)
        xq, x_scale = codes_of(x, rows) or quantize_rows(rows)  # u8 codes (T, in), fp32 scales (T, 1)
        if self.gemm == "coulisse":
            return self._product(xq, x_scale), x_scale
        if rows.shape[0] <= self.small_rows and self._small() is not None:
            if self.small_kernel == "coulisse":
                return self._few_rows(xq), x_scale
            # fbgemm quantizes its fp32 input per tensor: fed the codes minus 128 (integers, so exact) with
            # scale 1 and zero point 128, it takes back exactly these codes, and its fp32 output equals
            # oneDNN's (tested). Two small ops where x / row_scales(x) took five, per layer of a short request.
            out = torch.ops.quantized.linear_with_input_q_dq_qweight_dq_output_fp32(
                xq.float().sub_(ZERO_POINT), 1.0, ZERO_POINT, self.packed_small)
        else:
            out = torch.ops.onednn.qlinear_pointwise(
                xq, 1.0, ZERO_POINT, self.packed, self.w_scale, self.w_zero, None, 1.0, 0, torch.float32,
                "none", [], "")  # (T, out) = sum(xq · wq) · w_scale
        return out, x_scale

    def _few_rows(self, xq: Tensor) -> Tensor:
        """coulisse's few-row kernel on codes `xq (T, in)`: `sum(xq · wq) · w_scale (T, out)`, as oneDNN's (the
        int32 sums are exact). Its weights are `packed_small`."""
        xq, (w, colsum, scale) = xq.contiguous(), self.packed_small  # the kernel reads raw rows
        out = torch.empty(xq.shape[0], self.out_features)
        _gemm_kernels().small_gemm(xq.data_ptr(), w.data_ptr(), colsum.data_ptr(), scale.data_ptr(), out.data_ptr(),
                                   xq.shape[0], self.in_features, self.out_features, torch.get_num_threads())
        return out

    # coulisse's GEMM (`gemm == "coulisse"`), by what it gives. Each takes contiguous fp32 `rows (T, in)`, or their
    # codes `known` (`(u8 codes, scales)`, from the previous layer's pass; `rows` may then be None). A few rows go to
    # the few-row kernel, then to the row pass (`native.py`); more go to `int8_gemm` (`_int8_gemm`), which finishes
    # each block of rows in the same call.

    def _product(self, xq: Tensor, x_scale: Tensor) -> Tensor:
        """`sum(xq · wq) · w_scale (T, out)` on codes `xq (T, in)`, scales `x_scale (T, 1)`: not dequantized
        (`_accumulate`'s)."""
        if xq.shape[0] <= self.small_rows and self.small_kernel == "coulisse":
            return self._few_rows(xq)
        out = torch.empty(xq.shape[0], self.out_features)
        self._int8_gemm(None, (xq, x_scale), 0, out.data_ptr())
        return out

    def _dequantized(self, rows: Tensor, known: tuple[Tensor, Tensor] | None, codes: bool) -> Tensor:
        """`(T, out)` fp32, dequantized: `· x_scale + bias`, GELU if the layer has it. With `codes`, the result
        carries its rows' codes for the next int8 layer, as `dequantize_rows` attaches them."""
        count = rows.shape[0]
        if count <= self.small_rows and self.small_kernel == "coulisse":
            xq, x_scale = known or quantize_rows(rows)
            return dequantize_rows(self._few_rows(xq), x_scale, self.bias, self.gelu, codes=codes)
        out = torch.empty(count, self.out_features)
        self._int8_gemm(rows, known, 1, out.data_ptr(), *code_buffers(out, codes))
        return out

    def _add_norm(self, rows: Tensor | None, known: tuple[Tensor, Tensor] | None, residual: Tensor,
                  norm: nn.LayerNorm) -> Tensor:
        """`norm(dequantized + bias + residual)` `(T, out)` fp32, carrying its rows' codes for the next int8 layer."""
        residual = residual.reshape(-1, self.out_features).contiguous()
        count = rows.shape[0] if rows is not None else known[0].shape[0]
        if count <= self.small_rows and self.small_kernel == "coulisse":
            xq, x_scale = known or quantize_rows(rows)
            return add_norm_rows(self._few_rows(xq), x_scale, self.bias, residual, norm, self.fuse_norm, codes=True)
        out = torch.empty(count, self.out_features)
        self._int8_gemm(rows, known, 2, out.data_ptr(), *code_buffers(out, True), residual, norm)
        return out

    def _int8_gemm(self, rows: Tensor | None, known: tuple[Tensor, Tensor] | None, op: int, out_ptr: int,
                   q_ptr: int = 0, s_ptr: int = 0, residual: Tensor | None = None, norm: nn.LayerNorm | None = None,
                   bf16: bool = False) -> None:
        """The call into `int8_gemm`: the product of `rows` (or of their codes `known`), finished by `op` — 0: the
        product only; 1: dequantized (+ bias, GELU if the layer has it); 2: dequantized + bias + `residual`,
        `norm`ed — and written at `out_ptr` (fp32 `(T, out)`; bf16 with `bf16`, op 1 on AMX tiles; 0: not written)
        and, where `q_ptr` and `s_ptr` are not 0, as its rows' codes and scales there."""
        if known is None:  # the kernel quantizes each block's rows into these first, as quantize_rows would
            count, width = rows.shape
            xq, x_scale, source = torch.empty(count, width, dtype=torch.uint8), torch.empty(count, 1), rows.data_ptr()
        else:
            (xq, x_scale), source = (t.contiguous() for t in known), 0
            count, width = xq.shape
        w, colsum, scale = self.packed_small
        norm_ptrs = (residual.data_ptr(), norm.weight.data_ptr(), norm.bias.data_ptr()) if op == 2 else (0, 0, 0)
        _gemm_kernels().int8_gemm(xq.data_ptr(), w.data_ptr(), colsum.data_ptr(), scale.data_ptr(), out_ptr,
                                  count, width, self.out_features, torch.get_num_threads(), op, x_scale.data_ptr(),
                                  self.bias.data_ptr() if op else 0, self.gelu and op == 1, *norm_ptrs,
                                  float(norm.eps) if op == 2 else 0.0, q_ptr, s_ptr, source, bf16)

    def forward(self, x: Tensor) -> Tensor:
        codes = self.gelu and self.fuse_norm  # a feed-forward's GELU output goes to the next int8 layer only
        if self.gemm == "coulisse" and x.dtype == torch.float32:
            rows = x.reshape(-1, self.in_features).contiguous()
            out = self._dequantized(rows, codes_of(x, rows), codes)
            return reshaped(out, (*x.shape[:-1], self.out_features))  # · x_scale + bias (, GELU)
        out, x_scale = self._accumulate(x)
        out = dequantize_rows(out, x_scale, self.bias, self.gelu, codes=codes)
        return reshaped(out, (*x.shape[:-1], self.out_features))  # · x_scale + bias (, GELU)

    def forward_codes(self, x: Tensor) -> Tensor | Codes:
        """`self(x)` as the next int8 layer reads it (`codes_out` layers: a feed-forward's GELU output): its rows'
        `Codes` alone where `int8_gemm` makes them (more rows than the few-row kernel takes), which then keeps no
        fp32 rows (12 kB a row for 3,072 columns, written out and read back for the codes) but a block's rows at a
        time in a scratch per thread, which stays in L2. Elsewhere a tensor as `self(x)`, which carries the same
        codes."""
        if not (self.codes_out and x.dtype == torch.float32 and not (x.requires_grad and torch.is_grad_enabled())
                and not hooks_see_rows()):
            return self(x)
        rows = x.reshape(-1, self.in_features).contiguous()
        known, count = codes_of(x, rows), rows.shape[0]
        if count <= self.small_rows and self.small_kernel == "coulisse":
            return self._dequantized(rows, known, True)  # a tensor: the few-row kernel's rows carry the codes
        # int8_gemm keeps each block's fp32 rows in a scratch of its thread's, and writes their codes alone
        result = Codes(torch.empty(count, self.out_features, dtype=torch.uint8), torch.empty(count, 1))
        self._int8_gemm(rows, known, 1, 0, result.q.data_ptr(), result.scale.data_ptr())
        return result

    def takes_codes(self, norm: nn.LayerNorm) -> bool:
        """Whether `forward_add_norm(Codes, residual, norm)` runs: coulisse's GEMM, the fused pass, `norm` fusable."""
        return self.gemm == "coulisse" and self.fuse_norm and norm_fusable(norm, self.out_features)

    def forward_bf16(self, x: Tensor) -> Tensor:
        """`self(x)` rounded to bf16 (to nearest even) where coulisse's GEMM on AMX tiles can write it so as the fp32
        values are made (`amx_tiles`, more rows than the few-row kernel takes, no GELU), else `self(x)` in fp32. For a
        query/key/value projection read by the bf16-product attention kernel (models/fastpath.py), which rounds
        its fp32 inputs the same way: the same bits reach its products, from half the bytes and with no
        conversion of its own."""
        rows = x.reshape(-1, self.in_features)
        if not (self.gemm == "coulisse" and not self.gelu and x.dtype == torch.float32
                and rows.shape[0] > self.small_rows and amx_tiles(self.in_features)):
            return self.forward(x)
        rows = rows.contiguous()
        out = torch.empty(rows.shape[0], self.out_features, dtype=torch.bfloat16)
        self._int8_gemm(rows, codes_of(x, rows), 1, out.data_ptr(), bf16=True)
        return out.reshape(*x.shape[:-1], self.out_features)

    def forward_add_norm(self, x: Tensor | Codes, residual: Tensor, norm: nn.LayerNorm) -> Tensor:
        """`norm(self(x) + residual)` (BERT's `*Output` blocks, `models/bert.py` DenseNorm): dequantization,
        residual add and LayerNorm in one C pass over each row when the kernels are built, which also
        quantizes the result for the int8 layer that reads it next. `x` may be the previous layer's `Codes` alone
        (`forward_codes`) where `takes_codes(norm)`."""
        if isinstance(x, Codes):
            if not (self.takes_codes(norm) and residual.dtype == torch.float32):
                raise ValueError("forward_add_norm: codes alone need coulisse's GEMM, the fused pass and an fp32 "
                                 "residual (takes_codes); this is a bug")
            return reshaped(self._add_norm(None, (x.q, x.scale), residual, norm),
                            (*residual.shape[:-1], self.out_features))
        if x.dtype == residual.dtype == torch.float32 and self.takes_codes(norm):
            rows = x.reshape(-1, self.in_features).contiguous()
            out = self._add_norm(rows, codes_of(x, rows), residual, norm)
            return reshaped(out, (*x.shape[:-1], self.out_features))
        out, x_scale = self._accumulate(x)
        out = add_norm_rows(out, x_scale, self.bias, residual.reshape(out.shape), norm, self.fuse_norm,
                            codes=self.fuse_norm)
        return reshaped(out, (*x.shape[:-1], self.out_features))

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, int8 per-token"
                + (", GELU" if self.gelu else "") + (", coulisse's GEMM" if self.gemm == "coulisse" else ""))


def quantize_weight(weight: Tensor, weight_max: int) -> tuple[Tensor, Tensor]:
    """Symmetric per-output-channel codes: `(q (out, in) int8, scale (out,) fp32)`, |q| ≤ weight_max."""
    weight = weight.detach().float()
    scale = weight.abs().amax(1).clamp(min=1e-12) / weight_max  # (out,)
    return torch.round(weight / scale[:, None]).clamp_(-weight_max, weight_max).to(torch.int8), scale


def _gemm_kernels():
    """The C module, for layers built on coulisse's GEMM: their weights exist only in its layout, so they call
    it even where `kernels()` was switched off after they were built (tests do)."""
    from coulisse.models import _int8

    return _int8


@functools.cache
def amx_tiles(in_features: int) -> bool:
    """Whether coulisse's int8 GEMM runs layers of this input width on AMX-INT8 tiles here (k a multiple of 64), where
    it can also write its dequantized output in bf16 (AVX512-BF16, which every CPU with AMX has: checked too). Asked
    at every query/key/value projection: answered once per width (the C kernels read the CPU once too)."""
    k = _gemm_kernels()
    return in_features % 64 == 0 and k.has_amx_int8() and k.has_bf16_dot()


def small_batches_enabled() -> bool:
    """`COULISSE_INT8_SMALL=0` keeps small batches on oneDNN: no few-row kernel, ours or fbgemm's."""
    return os.environ.get("COULISSE_INT8_SMALL") != "0"


def own_gemm_enabled() -> bool:
    """`COULISSE_INT8_GEMM=onednn` keeps oneDNN's int8 GEMM where the plan would take coulisse's (A/B runs)."""
    return os.environ.get("COULISSE_INT8_GEMM", "").lower() != "onednn"


def fbgemm_available() -> bool:
    return "fbgemm" in torch.backends.quantized.supported_engines and small_batches_enabled()


def small_gemm_available(in_features: int, out_features: int, any_rows: bool = False) -> bool:
    """Whether coulisse's few-row kernel takes this layer: built, the CPU has AVX512-VNNI, the shapes fit its
    blocks (in a multiple of 4, out of 16), and small batches are not kept on oneDNN. With `any_rows`, whether
    its GEMM for every row count (`int8_gemm`) can, whatever COULISSE_INT8_SMALL says of a few rows."""
    k = kernels()
    return (k is not None and hasattr(k, "int8_gemm") and k.has_int8_dot() and in_features % 4 == 0
            and in_features <= MAX_OWN_GEMM_IN and out_features % 16 == 0 and (any_rows or small_batches_enabled()))


def _small_pack(q: Tensor, scale: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Weights for `small_gemm`: blocks of 16 output columns, each `in/4` words of 16 x 4 bytes (w[n][4j..4j+3]
    at word j, lane n), so that every 64-byte load feeds one vpdpbusd; the columns' code sums (for the
    activations' +128) and scales."""
    out_features, in_features = q.shape
    packed = q.reshape(out_features // 16, 16, in_features // 4, 4).permute(0, 2, 1, 3).contiguous()
    return packed, q.sum(1, dtype=torch.int32), scale.float().clone()  # the clone: not a view of mapped codes


def _fbgemm_pack(q: Tensor, scale: Tensor):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch deprecates quantized tensor types; the fbgemm kernels remain
        weight = torch._make_per_channel_quantized_tensor(q, scale.double(), torch.zeros(len(q), dtype=torch.long), 0)
        return torch.ops.quantized.linear_prepack(weight, None)


def row_scales(rows: Tensor) -> Tensor:
    """Per-row scales `max(max|x|, 1e-12) / 127`, `(T, 1)`."""
    return rows.abs().amax(1, keepdim=True).clamp_(min=1e-12).div_(127)


def quantize_rows(rows: Tensor) -> tuple[Tensor, Tensor]:
    """Per-row symmetric int8, shifted into u8: `round(x / s) + 128`, `s = max|x| / 127` (T, 1)."""
    k = kernels()
    if k is not None and rows.dtype == torch.float32 and rows.is_contiguous() and rows.device.type == "cpu":
        q = torch.empty(rows.shape, dtype=torch.uint8)
        scale = torch.empty(rows.shape[0], 1)
        k.quantize_rows(rows.data_ptr(), rows.shape[0], rows.shape[1], q.data_ptr(), scale.data_ptr(),
                        torch.get_num_threads())
        return q, scale
    # The same arithmetic as separate PyTorch ops: several passes over the activations.
    scale = row_scales(rows)
    return (rows / scale).round_().add_(ZERO_POINT).to(torch.uint8), scale


def codes_of(x: Tensor, rows: Tensor) -> tuple[Tensor, Tensor] | None:
    """The `(codes, scales)` an int8 layer attached to its output `x` (`with_codes`), when they describe
    `rows` (x's rows, `(T, in)`); None otherwise."""
    codes = getattr(x, CODES, None)
    if codes is None or codes[0].shape != rows.shape or hooks_see_rows():
        return None
    return codes


def reshaped(out: Tensor, shape: tuple[int, ...]) -> Tensor:
    """`out.reshape(shape)`, keeping the codes attached to `out` (the rows are the same)."""
    result = out.reshape(shape)
    codes = getattr(out, CODES, None)
    if codes is not None and result is not out:
        setattr(result, CODES, codes)
    return result


def _swap_linears(module: nn.Module, weight_max: int, small_rows: int, codes: dict | None,
                  gemm: str = "onednn") -> int:
    """Swap every `nn.Linear` under `module` for an `Int8Linear`; return how many. `codes` as in `quantize_model`."""

    def int8_layer(linear: nn.Linear, path: str, activation: str | None) -> tuple[nn.Module, bool]:
        # A feed-forward `gelu(dense(x))`: the GELU runs inside the int8 layer's last pass.
        gelu = activation == "gelu"
        known = codes.get(path) if codes is not None else None
        if known is None:
            known = quantize_weight(linear.weight, weight_max)
            if codes is not None:
                codes[path] = known
        layer = Int8Linear(linear, weight_max, gelu=gelu, codes=known, small_rows=small_rows, gemm=gemm)
        # The mapped fp32 original is no longer read; nor are codes mapped from the weight cache, now
        # that oneDNN has packed its copy (fbgemm's packing, if small batches come, pages them back in).
        release_tensor_pages([linear.weight, known[0]])
        return layer, gelu

    return swap_linears(module, int8_layer)


def _fbgemm(model: nn.Module) -> None:
    torch.backends.quantized.engine = "fbgemm"
    qconfig = torch.ao.quantization.per_channel_dynamic_qconfig
    with warnings.catch_warnings():
        # torch deprecates its quantized tensor types in favour of torchao; the fbgemm kernels remain.
        warnings.simplefilter("ignore")
        # In place: the encoder may be the base model itself (FlauBERT), which cannot be reassigned.
        torch.ao.quantization.quantize_dynamic(model.base.encoder, {nn.Linear: qconfig}, inplace=True)


def quantize_model(model: nn.Module, mode: str | None, *, weight_bits: int = SAFE_WEIGHT_BITS,
                   small_rows: int = SMALL_BATCH_ROWS, codes: dict | None = None, gemm: str = "onednn") -> nn.Module:
    """Swap the encoder's linear layers for int8 ones. `weight_bits` (8 only where the CPU has VNNI),
    `small_rows` and `gemm` ("onednn", or "coulisse" where AVX512-VNNI is the CPU's best) come from the
    kernel plan. `codes` maps layer paths to `(q, scale)`: entries present are used as they are, missing
    ones are computed and added (that is how the cache fills)."""
    if mode in (None, "none"):
        return model
    if mode != "int8":
        raise InputError(f"quantize={mode!r}; use one of {', '.join(MODES)}.")
    if onednn_available():
        count = _swap_linears(model.base.encoder, 2 ** (weight_bits - 1) - 1, small_rows, codes, gemm=gemm)
        release_freed_memory()
        log.info("int8: %d encoder linear layers, %s u8×s8 per-token, %d-bit weights", count,
                 "coulisse's GEMM" if gemm == "coulisse" else "oneDNN", weight_bits)
    elif "fbgemm" in torch.backends.quantized.supported_engines:
        _fbgemm(model)
        log.info("int8: encoder linear layers, fbgemm dynamic (per-tensor activations)")
    else:
        raise InputError("quantize='int8' needs PyTorch's oneDNN or fbgemm CPU backend; this build has neither.")
    return model

"""What this CPU has, and which kernels each precision runs on it: chosen once, a pure function of the two.

`detect()` reads the instruction sets from `/proc/cpuinfo` (and torch's own dispatch level); `plan(features)`
turns them into a `KernelPlan` with no other input, so every choice can be tested by feeding it the flags
of a machine we do not have (tests/engine/test_cpu_plan.py). `engine/prepare.py` consults the plan and
`coulisse info` prints it.

What decides, measured with torch 2.13 (docs/benchmarks.md):

- int8: oneDNN's u8×s8 GEMM (`onednn::qlinear_pointwise`) on x86 CPUs: oneDNN itself dispatches to
  AMX-INT8 tiles, AVX-512 VNNI or AVX2; where AVX512-VNNI is the best the CPU has, coulisse's own GEMM
  (`_int8_gemm.c`), which finishes its rows in the same call. `torch._int_mm` (s8×s8) is no alternative
  without VNNI: 1 GOP/s on AVX2 (a reference loop), against ~40 for fp32. Without VNNI the AVX2 kernel multiplies with
  `vpmaddubsw`, whose 16-bit pair sums saturate, so weights keep 7 bits there (2·255·63 < 32767).
- bf16: fast only where the hardware multiplies bf16 (AMX-BF16: ~8× fp32; AVX512-BF16: ~2×). oneDNN
  also runs bf16 on plain AVX-512 (converting to fp32: no gain) and torch refuses to prepack bf16
  weights without AVX-512 BW/VL/DQ or AVX-NE-CONVERT; on AVX2 bf16 linear layers fall back on PyTorch's
  reference GEMM, ~5× slower than fp32. Those machines still run bf16 (same numerics) with a warning.
- fast preset: the fastest mode whose quality passes its gate: int8 (gate: cosine ≥ 0.99 and top-1 agreement on
  the real reviews) wherever it runs faster than fp32, AMX machines included (AMX-INT8's peak is 1.75x
  AMX-BF16's: bf16 ran 0.69x int8's speed on a Sapphire Rapids-class Xeon, `fast_mode` below); bf16 where int8
  does not gain and bf16 does.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

from coulisse.models.quantize import SMALL_BATCH_ROWS, SMALL_GEMM_ROWS, SMALL_GEMM_ROWS_AMX

# The token budget per batch where coulisse's int8 GEMM runs on AMX tiles (the engine's default, 1,024, elsewhere):
# there, with a block's rows kept in L2 and the residual's rows asked for ahead, larger batches cost less a token. The
# --fast pipeline over 160 reviews, the budgets alternating in one process: 1,024 tokens 1,507 ms, 3,072 1,336,
# 4,096 1,307, 6,144 1,288 (AMX Xeon, session 19). 4,096 keeps a batch's activations near 80 MB for a base model.
AMX_BATCH_TOKENS = 4096

# The flags that matter here, as /proc/cpuinfo spells them.
FLAGS = ("avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512_vnni", "avx_vnni",
         "avx512_bf16", "avx_ne_convert", "amx_tile", "amx_bf16", "amx_int8")


@dataclass(frozen=True)
class Features:
    """The CPU's instruction sets (`flags`) and torch's dispatch level for them (`capability`)."""

    flags: frozenset[str] = frozenset()
    capability: str = "DEFAULT"  # torch.backends.cpu.get_cpu_capability(): DEFAULT, AVX2, AVX512, ...

    def has(self, *names: str) -> bool:
        return all(n in self.flags for n in names)

    @property
    def vnni(self) -> bool:
        """int8 pairs multiplied straight into 32 bits: AVX-512 VNNI, AVX-VNNI or AMX."""
        return any(f in self.flags for f in ("avx512_vnni", "avx_vnni", "amx_int8"))

    @property
    def key(self) -> str:
        """A stable text for cache keys: the flags that change a kernel's choice or its numbers."""
        return ",".join(sorted(self.flags & set(FLAGS)))

    def describe(self) -> str:
        shown = [f for f in FLAGS if f in self.flags]
        return f"{' '.join(shown) or 'none of ' + ' '.join(FLAGS)} (torch dispatch: {self.capability})"


@dataclass(frozen=True)
class Backends:
    """What this torch build offers, independent of the CPU (tests pass their own)."""

    onednn_fp32: bool = True  # torch.ops.mkldnn._linear_pointwise and COULISSE_ONEDNN != 0
    onednn_int8: bool = True  # torch.ops.onednn.qlinear_pointwise
    fbgemm: bool = True  # quantized engine "fbgemm" and COULISSE_INT8_SMALL != 0
    c_kernels: bool = True  # coulisse.models._int8 built at install
    int8_small: bool = True  # small batches on a few-row kernel (COULISSE_INT8_SMALL != 0)
    int8_gemm: bool = True  # coulisse's own int8 GEMM where the CPU suits it (COULISSE_INT8_GEMM != onednn)
    c_attention: bool = True  # its attention kernel on (COULISSE_C_ATTENTION != 0, fusions on)
    attention_bf16: bool = True  # int8 attention may multiply in bf16 (COULISSE_ATTENTION_BF16 != 0)
    attention_amx: bool = True  # bf16 attention products may run on AMX tiles (COULISSE_ATTENTION_AMX != 0)


@dataclass(frozen=True)
class Choice:
    """One precision's kernel on this machine, and why."""

    kernel: str  # a short name the code dispatches on
    detail: str  # what runs, for people
    why: str
    fast: bool = True  # whether this precision is faster than fp32 here
    options: dict = field(default_factory=dict)  # kernel parameters (weight bits, small-batch rows)


@dataclass(frozen=True)
class KernelPlan:
    features: Features
    fp32: Choice
    int8: Choice
    bf16: Choice
    fast: str  # the preset's mode: "int8", "bfloat16" or "float32"
    fast_why: str
    attention: Choice | None = None  # fp32 and int8 pipelines' attention

    def lines(self) -> list[str]:
        rows = [("fp32", self.fp32), ("int8", self.int8), ("bf16", self.bf16)]
        if self.attention is not None:
            bf16 = self.attention.options.get("bf16_inputs", False)
            rows.append((f"attention (fp32, int8{', bf16' if bf16 else ''})", self.attention))
        return [f"CPU features: {self.features.describe()}",
                *(f"{name}: {c.detail} — {c.why}" for name, c in rows),
                f"fast preset (--fast): {self.fast} — {self.fast_why}"]


def c_isa(f: Features) -> str:
    """The instruction set the C kernels (`_int8.c`, `isa_level`) pick on these features."""
    if f.has("avx512f", "avx512dq", "avx512bw", "avx512vl"):
        return "AVX-512"
    return "AVX2" if f.has("avx2", "fma") else "portable C"


def _fp32(f: Features, b: Backends) -> Choice:
    if b.onednn_fp32:
        finish = (f"; bias, GELU and residual + LayerNorm in one C pass per row ({c_isa(f)})"
                  if b.c_kernels else "")
        return Choice("onednn", f"oneDNN matmul, weights prepacked at load (or MKL where measured faster){finish}",
                      "2x MKL's sgemm at a few rows (MKL repacks the weight on every call); at 1,024 rows either "
                      "may win on the same CPU model, so the model's shapes are timed once per machine "
                      "(the line 'fp32 in corpus jobs' below)")
    return Choice("torch", "PyTorch F.linear (MKL)", "oneDNN is unavailable or COULISSE_ONEDNN=0")


def own_gemm(f: Features, b: Backends) -> bool:
    """Whether int8 GEMMs of every size run on coulisse's kernel (`_int8_gemm.c`): built, AVX-512 with VNNI (its
    blocks then run on AMX-INT8 tiles where the CPU has them)."""
    return (b.c_kernels and b.int8_gemm and b.onednn_int8 and c_isa(f) == "AVX-512" and f.has("avx512_vnni"))


def _int8(f: Features, b: Backends) -> Choice:
    fused = (f"fused C quantize/dequantize ({c_isa(f)})" if b.c_kernels
             else "PyTorch ops around the GEMM (C kernels not built: no C compiler at install; with gcc or clang "
             "on PATH, install coulisse again from source, README 'Install and run')")
    own = b.c_kernels and b.int8_small and c_isa(f) == "AVX-512" and f.has("avx512_vnni")
    amx = f.has("amx_int8", "amx_tile")
    tiles = own_gemm(f, b) and amx  # coulisse's GEMM on AMX: faster from ~7 rows
    small = (SMALL_GEMM_ROWS_AMX if tiles else SMALL_GEMM_ROWS) if own else SMALL_BATCH_ROWS if b.fbgemm else 0
    if not b.onednn_int8:
        if b.fbgemm:
            return Choice("fbgemm", "fbgemm dynamic linear (per-tensor activations)",
                          "this torch has no oneDNN int8 GEMM", options={"weight_bits": 8, "small_rows": 0})
        return Choice("none", "unavailable", "this torch has neither oneDNN's nor fbgemm's int8 GEMM", fast=False)
    if amx:
        isa, why = "AMX-INT8 tiles", ("AMX multiplies int8 tiles into int32: 11.6-12.4x the fp32 GEMM "
                            "on a Sapphire Rapids-class Xeon (bench/gemm_peaks.py; docs/benchmarks.md)")
    elif f.has("avx512_vnni"):
        isa, why = "AVX-512 VNNI", "vpdpbusd sums int8 pairs into int32 without saturation"
    elif f.has("avx_vnni"):
        isa, why = "AVX-VNNI", "vpdpbusd (256-bit) sums int8 pairs into int32 without saturation"
    elif f.has("avx2"):
        isa, why = ("AVX2 vpmaddubsw", "no VNNI: 16-bit pair sums saturate, so weights keep 7 bits "
                    "(2·255·63 < 32767); torch._int_mm is a reference loop here")
    else:
        isa, why = "generic", "no AVX2: oneDNN's reference int8 path, likely slower than fp32"
    bits = 8 if f.vnni else 7
    if own_gemm(f, b):
        on = "AMX-INT8 tiles where a layer's input width is a multiple of 64, AVX-512 VNNI otherwise" if amx else isa
        detail = (f"coulisse's int8 GEMM, activations quantized per token ({on}), {bits}-bit weights, {fused} "
                  "inside the same call (each block of rows dequantized, with its GELU or residual + LayerNorm, "
                  "and quantized for the next layer while in cache)"
                  + (f", coulisse's VNNI kernel for ≤ {small} rows (weights streamed once)" if small else ""))
        if amx:
            why = ("blocks of up to 256 rows on AMX tiles, the weights in 512 kB chunks that stay in L2, each "
                   "block finished while in cache: the int8 forward 1.08x oneDNN's AMX GEMM + the row passes on a "
                   "Sapphire Rapids-class Xeon, to the same bits; up to 96 rows "
                   "the threads split the columns, the weights read once: 1.6x faster at 15-32 rows; "
                   "the threads take the blocks as they come, smaller towards the end so that they finish "
                   "together: the idle thread time of the --fast pipeline's GEMMs 243 -> 49 ms over 6 passes "
                   "(docs/benchmarks.md, Intel Xeon with AMX)")
        else:
            why = ("24 vpdpbusd accumulators in registers: 3-6 % ahead of oneDNN's GEMM at 1,024 rows on a Zen 4, "
                   "to the same bits, and the row passes around it no longer wait for another wake-up of the "
                   "threads: a --fast forward 1.08-1.10x (docs/benchmarks.md, AMD EPYC Zen 4)")
        options = {"weight_bits": bits, "small_rows": small, "isa": isa, "gemm": "coulisse"}
        if amx:  # the engine's token budget for int8 here, where no budget is given (AMX_BATCH_TOKENS)
            options["batch_tokens"] = AMX_BATCH_TOKENS
            detail += f"; batches of up to {AMX_BATCH_TOKENS:,} tokens"
            why += ("; batches of 4,096 tokens rather than 1,024: the --fast pipeline over 160 reviews 1,307 vs "
                    "1,507 ms on the same Xeon")
        return Choice("coulisse", detail, why, options=options)
    detail = (f"oneDNN's int8 GEMM, activations quantized per token ({isa}), {bits}-bit weights, {fused}"
              + (f", coulisse's VNNI kernel for ≤ {small} rows (weights streamed once)" if own
                 else f", fbgemm for ≤ {small} rows" if small else ""))
    return Choice("onednn", detail, why, fast=f.has("avx2") or f.vnni,
                  options={"weight_bits": bits, "small_rows": small, "isa": isa})


def _bf16(f: Features, b: Backends) -> Choice:
    packs = f.has("avx512bw", "avx512vl", "avx512dq") or f.has("avx_ne_convert")
    if f.has("amx_bf16", "amx_tile"):
        return Choice("onednn", "oneDNN bf16 matmul, weights prepacked in bf16 (AMX-BF16 tiles)",
                      "AMX multiplies bf16 tiles: 6.9-7.1x the fp32 GEMM on a Sapphire Rapids-class Xeon")
    if f.has("avx512_bf16"):
        return Choice("onednn", "oneDNN bf16 matmul, weights prepacked in bf16 (AVX512-BF16)",
                      "vdpbf16ps: ~2x the fp32 GEMM")
    if packs:
        return Choice("onednn", "oneDNN bf16 matmul, weights prepacked in bf16 (converted to fp32 in registers)",
                      "no AMX or AVX512-BF16: no faster than fp32 (slow-path warning)", fast=False)
    return Choice("torch", "PyTorch's reference bf16 GEMM (weights in bf16)",
                  "no AMX, AVX512-BF16 nor AVX-512 BW/VL/DQ: ~5x slower than fp32 (slow-path warning)",
                  fast=False)


def _attention(f: Features, b: Backends) -> Choice:
    if b.c_kernels and b.c_attention:
        why = ("one SDPA call per sequence pays a dispatch and a thread wake-up each: 1.7x faster over real "
               "reviews on a Zen 4 (docs/benchmarks.md)")
        bf16_dot = c_isa(f) == "AVX-512" and f.has("avx512_bf16")
        products = bf16_dot and b.attention_bf16
        detail = f"one C call per layer over the packed batch ({c_isa(f)} where the head width allows)"
        amx = bf16_dot and f.has("amx_bf16", "amx_tile") and b.attention_amx
        if bf16_dot:
            takers = ("int8 pipelines and bf16 ones (their bf16 q/k/v)" if products
                      else "bf16 pipelines (their bf16 q/k/v)")
            on = "AMX-BF16 tiles, 16 queries a block" if amx else "AVX512-BF16"
            detail += (f"; {takers} multiply in bf16 pairs with fp32 sums ({on}, where the head width is a "
                       "multiple of 32)")
            why += ("; bf16 products: 1.4-1.5x faster attention on a Zen 4, at an error far below int8's own; "
                    "bf16 pipelines otherwise call SDPA once per sequence")
            if amx:
                why += "; on AMX tiles 2.0x the AVX512-BF16 unit's speed (Sapphire Rapids-class Xeon)"
        return Choice("c", detail, why, options={"int8_bf16_products": products, "bf16_inputs": bf16_dot,
                                                 "amx": amx})
    why = "COULISSE_C_ATTENTION=0 or COULISSE_FUSE=0" if b.c_kernels else "the C kernels are not built"
    return Choice("sdpa", "PyTorch SDPA, one call per sequence", why)


def plan(features: Features, backends: Backends = Backends()) -> KernelPlan:
    """The kernels each precision runs on a CPU with `features`; no other input."""
    fp32, int8, bf16 = _fp32(features, backends), _int8(features, backends), _bf16(features, backends)
    if int8.fast:
        on = int8.options.get("isa", int8.kernel)
        fast, why = "int8", (f"int8 ({on}) is the fastest mode here that passes its quality gate "
                             "(embedding cosine ≥ 0.99, top-1 agreement with exact)")
        if not features.vnni and features.has("avx2"):
            why += ("; its GEMMs ran 1.9x fp32's on a Zen 3 but level with them on a Zen 1 (one pipe multiplies "
                    "integers there), where it still answers short requests 1.4-1.5x faster, its weights a quarter of "
                    "the bytes (docs/benchmarks.md, AMD EPYC Zen 1)")
        if features.has("amx_bf16", "amx_int8"):
            why += ("; with AMX, bf16 ran 0.69x int8's speed on a Sapphire Rapids-class Xeon (AMX-INT8's peak "
                    "is 1.75x AMX-BF16's there; docs/benchmarks.md)")
    elif bf16.fast:
        fast, why = "bfloat16", "no int8 kernel here beats fp32; bf16 arithmetic does (AMX-BF16 or AVX512-BF16)"
    else:
        fast, why = "float32", "no int8 or bf16 kernel here beats fp32"
    return KernelPlan(features, fp32, int8, bf16, fast, why, _attention(features, backends))


def read_flags(path: str = "/proc/cpuinfo") -> frozenset[str]:
    try:
        with open(path, encoding="utf-8") as f:
            line = next((line for line in f if line.startswith("flags")), "")
    except OSError:  # not Linux: no flags, every fast path is then judged unknown
        return frozenset()
    return frozenset(line.partition(":")[2].split())


def cpu_name(path: str = "/proc/cpuinfo") -> str:
    """The CPU's model name ("AMD EPYC", "Intel(R) Xeon(R) ..."), or "" where /proc/cpuinfo has none."""
    try:
        with open(path, encoding="utf-8") as f:
            return next((line.partition(":")[2].strip() for line in f if line.startswith("model name")), "")
    except OSError:
        return ""


def flags_from_kernels(capability: str) -> frozenset[str]:
    """The flags the plan reads, as coulisse's C kernels see the CPU (`__builtin_cpu_supports`, and the tile state
    Linux grants), else as torch's dispatch level says: where /proc/cpuinfo lists none (macOS, Windows; Linux on
    arm64 says `Features`), which judged every fast path unknown there: `--fast` never chose int8 on an AVX2 or
    VNNI PC, and int8 kept 7-bit weights where VNNI takes 8 (audit 44)."""
    avx2, avx512 = {"avx2", "fma"}, {"avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512dq"}
    from coulisse.models.native import kernels

    if (_int8 := kernels()) is None:  # no C extension: torch's level, which names no VNNI, BF16 or AMX
        return frozenset(avx512 if capability.startswith("AVX512") else avx2 if capability == "AVX2" else ())
    flags = {"avx2": avx2, "avx512": avx512}.get(_int8.isa(), set())
    for asked, names in ((_int8.has_int8_dot, {"avx512_vnni"}), (_int8.has_bf16_dot, {"avx512_bf16"}),
                         (_int8.has_amx_int8, {"amx_int8", "amx_tile"}),
                         (_int8.has_amx_attention, {"amx_bf16", "amx_tile"})):
        if asked():
            flags |= names
    return frozenset(flags)


@functools.cache
def detect() -> Features:
    import torch

    capability = torch.backends.cpu.get_cpu_capability()
    return Features(read_flags() or flags_from_kernels(capability), capability)


def backends() -> Backends:
    from coulisse.models.fastpath import (
        attention_amx_allowed,
        attention_bf16_allowed,
        c_attention_enabled,
        onednn_fp32_available,
    )
    from coulisse.models.native import kernels
    from coulisse.models.quantize import (
        fbgemm_available,
        onednn_available,
        own_gemm_enabled,
        small_batches_enabled,
    )

    return Backends(onednn_fp32=onednn_fp32_available(), onednn_int8=onednn_available(),
                    fbgemm=fbgemm_available(), c_kernels=kernels() is not None,
                    int8_small=small_batches_enabled(), int8_gemm=own_gemm_enabled(), c_attention=c_attention_enabled(),
                    attention_bf16=attention_bf16_allowed(), attention_amx=attention_amx_allowed())


def this_machine() -> KernelPlan:
    """The plan for the CPU this process runs on."""
    return plan(detect(), backends())

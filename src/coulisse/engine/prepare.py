"""Model preparation, in one place: chosen once at load, logged once.

Threads, device and dtype, int8 quantization (its codes read from the weight cache when there), bf16
linear layers, the fp32 oneDNN fast path (weights prepacked) and handing back the pages of mapped
weights that the prepared model no longer reads. On the CPU, which kernel each precision runs is the
kernel plan's decision (`coulisse.engine.cpu`, a function of the CPU's features); this module only
applies it. Every pipeline is built through `prepare_model`; nothing rewrites the model afterwards.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, MutableMapping
from dataclasses import dataclass
from pathlib import Path

import torch

from coulisse.engine.engine import on_threads
from coulisse.errors import InputError
from coulisse.models import EncoderModel
from coulisse.weights.mapped import release_file_pages

log = logging.getLogger(__name__)

# oneDNN's primitive cache: at most this many entries (see `bound_onednn_cache`).
ONEDNN_CACHE_VARIABLE = "ONEDNN_PRIMITIVE_CACHE_CAPACITY"
ONEDNN_CACHE_ENTRIES = 256
# ideep's (libtorch's layer over oneDNN) cache per GEMM shape, beside oneDNN's (see `bound_onednn_cache`).
IDEEP_CACHE_VARIABLE = "LRU_CACHE_CAPACITY"
IDEEP_CACHE_ENTRIES = 64

DTYPES = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16, "fp16": torch.float16,
          "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """fp32 on CPU (exact), fp16 on GPUs unless told otherwise."""
    if dtype is None:
        return torch.float16 if device.type == "cuda" else torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPES:
        raise InputError(f"dtype={dtype!r}; use one of {', '.join(DTYPES)}.")
    return DTYPES[dtype]


@dataclass(frozen=True)
class Preparation:
    """What `prepare_model` chose, for logs, `/info` and benchmarks."""

    device: torch.device
    dtype: torch.dtype
    quantize: str | None
    threads: int
    fast_path: str  # the kernels chosen, in words
    batch_tokens: int | None = None  # the plan's token budget per batch for these kernels; None: the engine's

    def describe(self) -> str:
        dtype = "int8 linear layers" if self.quantize else str(self.dtype).removeprefix("torch.")
        return f"{self.device}, {dtype}, {self.fast_path}, {self.threads} thread{'' if self.threads == 1 else 's'}"


def resolve_fast(device: torch.device, dtype=None, quantize: str | None = None, fast: bool = False):
    """`fast=True`: the `(dtype, quantize)` of the fastest mode this machine runs within its quality gate
    (the kernel plan's `fast`); exact fp32 stays the default. A GPU's fast mode is its default, fp16."""
    if not isinstance(fast, bool):
        raise InputError(f"fast={fast!r}; pass True or False.")
    if not fast:
        return dtype, quantize
    if dtype is not None or quantize not in (None, "none"):
        given = " and ".join(f"{name}={value!r}" for name, value in (("dtype", dtype), ("quantize", quantize))
                             if value not in (None, "none"))
        raise InputError(f"fast=True (--fast) chooses the precision itself; drop {given} (--dtype / --quantize), or "
                         "drop fast=True.")
    if device.type != "cpu":
        return None, None
    from coulisse.engine.cpu import this_machine

    return fast_precision(this_machine().fast)


def fast_precision(mode: str) -> tuple[str | None, str | None]:
    """The `(dtype, quantize)` that run a kernel plan's fast mode ("int8", "bfloat16" or "float32"): what a
    `--ray --fast` job's actors are given, the mode picked once on the driver."""
    return ("bfloat16", None) if mode == "bfloat16" else (None, "int8" if mode == "int8" else None)


def check_request(device: torch.device, dtype=None, quantize: str | None = None, threads: int | None = None) -> None:
    """What can be refused before any weight is read (`pipeline()` calls it before loading)."""
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise InputError(f"threads={threads!r}; pass a positive number of threads.")
    resolved = resolve_dtype(dtype, device)
    if quantize not in (None, "none"):
        from coulisse.models.quantize import MODES

        if quantize not in MODES:
            raise InputError(f"quantize={quantize!r}; use one of {', '.join(MODES)}.")
        if device.type != "cpu":
            raise InputError(f"quantize={quantize!r} runs on the CPU; on {device}, use dtype='float16' instead.")
        if resolved != torch.float32:  # its layers' activations and the rest of the model are fp32 (audit 43)
            name = str(resolved).removeprefix("torch.")
            raise InputError(f"quantize={quantize!r} with dtype={name!r}: int8 runs beside float32 layers, not "
                             f"{name} ones; pass one of them (fast=True picks the faster on this CPU).")


_VECTOR_MATH_SETTLED = False


def settle_vector_math() -> None:
    """One call of torch's vectorized exp and tanh on a tiny tensor, once per process. With torch 2.13 on the CPU,
    the first such call of a process is sometimes imprecise: `torch.tanh` of an (11, 768) fp32 tensor off by up
    to ~4e-5 relative on part of it, in about one fresh process in five on an AMX Xeon, the second call on the same
    tensor exact to an ulp; one call on 16 values first and the later calls are exact, exp's settling tanh's too.
    Without it a pipeline's first logits could differ from its later ones by ~1e-5 (the classification heads'
    tanh; docs/benchmarks.md, session 20)."""
    global _VECTOR_MATH_SETTLED
    if not _VECTOR_MATH_SETTLED:
        values = torch.linspace(-2.0, 2.0, 16)
        torch.exp(values), torch.tanh(values)
        _VECTOR_MATH_SETTLED = True


def prepare_model(model: EncoderModel, files: Iterable[Path], *, device: torch.device, dtype=None,
                  quantize: str | None = None, threads: int | None = None, name: str = "",
                  throughput: bool = False) -> Preparation:
    """Make `model` ready to run, once: threads, then on the CPU the kernel plan's choice for the
    precision asked (int8, bf16 or fp32), elsewhere the device and dtype; then drop the mapped pages of
    `files` the prepared model no longer reads. `throughput`: fp32 kernels for full batches, measured per
    machine (`coulisse.engine.gemm_choice`); otherwise the plan's, best for short requests too."""
    check_request(device, dtype, quantize, threads)
    with on_threads(threads):  # the preparation's own work (quantizing, prepacking); the caller's count kept
        return _prepare(model, files, device, dtype, quantize, name, throughput)


def _prepare(model: EncoderModel, files: Iterable[Path], device: torch.device, dtype, quantize: str | None,
             name: str, throughput: bool) -> Preparation:
    dtype = resolve_dtype(dtype, device)
    quantize = None if quantize in (None, "none") else quantize
    files = [p for p in files if p.is_file()]
    batch_tokens = None
    if device.type == "cpu":
        settle_vector_math()
        fast_path = _prepare_cpu(model, files, dtype, quantize, throughput)
        if quantize is not None:
            from coulisse.engine.cpu import this_machine

            batch_tokens = this_machine().int8.options.get("batch_tokens")
    else:
        model.to(device, dtype)
        fast_path = "PyTorch ops"
    # Repacked, quantized or moved weights leave their mapped originals unread: drop those pages.
    release_file_pages(files)
    model.modules_changed()  # the layers were swapped: the hook check lists them again
    chosen = Preparation(device, dtype, quantize, torch.get_num_threads(), fast_path, batch_tokens)
    log.info("prepared %s: %s", name or "the model", chosen.describe())
    return chosen


def bound_onednn_cache(environ: MutableMapping[str, str] = os.environ) -> str:
    """Bound oneDNN's primitive cache at `ONEDNN_CACHE_ENTRIES` unless the user chose a capacity; return
    what applies, in words.

    oneDNN builds one primitive per GEMM shape, and the row count is part of the shape: the engine packs
    each batch without padding, so every new token count makes new primitives (four or more per forward: the
    query/key/value, output and two feed-forward shapes), and oneDNN keeps up to 1,024 of them, each with
    its own buffers (~0.5 MB at a base-size model's full batches). Over batches of varied lengths (a server,
    a Python loop) an int8 camembert-base pipeline grew from 472 to 1,067 MB in 250 batches and kept growing;
    at 256 entries it levelled off at 770-830 MB (bench/rss_over_batches.py; docs/benchmarks.md, "Session
    12"). 256 still holds every shape of a pass over the bench's 160 reviews (fp32 and int8: no primitive
    made again on the next pass; at 128, exact made 116 of 1,056 again); a new token count costs a few
    primitive creations, ~0.7 ms each: varied single requests of more than 64 tokens, whose shapes
    outnumber 256, ran 4-9 % slower at the median (`ONEDNN_PRIMITIVE_CACHE_CAPACITY=1024` restores
    oneDNN's default). Corpus jobs set 16 before torch loads (`interfaces/jobs/command.py`,
    `bound_kernel_cache`: full batches need only a forward's shapes), which this then leaves alone.
    oneDNN reads the variable when it creates its first primitive: set here before the first pipeline
    prepares its model; in a process that ran oneDNN before, the value then in effect stays.

    The fp32 linear layers reach oneDNN through ideep (`torch.ops.mkldnn._linear_pointwise`), which keeps a
    cache of its own per shape, 1,024 entries unless `LRU_CACHE_CAPACITY` says otherwise: with oneDNN's, it was
    the server's unexplained climb from ~340 to ~700 MB (audit 45), which both bounded at 16 held at ~355 MB.
    Bounded here at `IDEEP_CACHE_ENTRIES`: the bundled model's pipeline, 4,000 single reviews of varied lengths
    on one thread, ended at 510 MB unbounded, 465 MB at 256 and 422 MB at 64, in 14, 15 and 13 s (measured once,
    Intel Xeon with AMX; /tmp scripts of audit 45). Corpus jobs set 16 (`bound_kernel_cache`)."""
    value = environ.setdefault(ONEDNN_CACHE_VARIABLE, str(ONEDNN_CACHE_ENTRIES))
    ideep = environ.setdefault(IDEEP_CACHE_VARIABLE, str(IDEEP_CACHE_ENTRIES))
    # coulisse's value reads as coulisse's, whoever set it (an earlier pipeline of this process, or you)
    owner = "coulisse's" if value == str(ONEDNN_CACHE_ENTRIES) else "yours"
    ideep_owner = "coulisse's" if ideep == str(IDEEP_CACHE_ENTRIES) else "yours"
    return f"{ONEDNN_CACHE_VARIABLE}={value} ({owner}), {IDEEP_CACHE_VARIABLE}={ideep} ({ideep_owner})"


def _prepare_cpu(model: EncoderModel, files: list[Path], dtype: torch.dtype, quantize: str | None,
                 throughput: bool = False) -> str:
    """Apply the kernel plan of this CPU to `model`; return what runs, in words."""
    from coulisse.engine.cpu import this_machine
    from coulisse.models.fastpath import bf16_linears, install_c_embeddings, pack_linears
    from coulisse.weights.mapped import release_freed_memory

    log.debug("oneDNN primitive cache: %s", bound_onednn_cache())
    plan = this_machine()
    install_c_embeddings(model)
    if quantize is not None:
        choice = plan.int8
        bits = choice.options.get("weight_bits", 7)
        source = _quantize_cached(model, files, plan.features.key, bits, choice.options.get("small_rows", 0),
                                  choice.options.get("gemm", "onednn"))
        model.to(dtype=dtype)
        products = plan.attention.options.get("int8_bf16_products", False)
        return f"int8 GEMMs: {choice.detail}; weights {source}{_attention(model, dtype, products)}"
    if dtype == torch.bfloat16:
        choice = plan.bf16
        if not choice.fast:
            log.warning("dtype=bfloat16: this CPU has no AMX or AVX512-BF16 (%s), so bf16 runs %s, slower than "
                        "float32; for speed use quantize='int8' or fast=True (`coulisse info` shows the plan).",
                        plan.features.capability, choice.detail)
        # Mixed precision: only the encoder's linear layers turn bf16 (models/fastpath.py says why).
        count = bf16_linears(model.base.encoder, packed=choice.kernel == "onednn")
        release_freed_memory()
        return f"bf16: {choice.detail}, {count} linear layers{_attention(model, dtype)}"
    model.to(dtype=dtype)
    attention = _attention(model, dtype)
    if dtype == torch.float32 and plan.fp32.kernel == "onednn":
        from coulisse.engine.gemm_choice import fp32_gemm

        gemm = fp32_gemm(model.config.hidden_size, model.config.intermediate_size, plan.features.key) \
            if throughput else None
        if gemm is not None and gemm.kernel == "mkl":
            count = pack_linears(model.base.encoder, kernel="mkl")
            return f"MKL's sgemm, {count} linear layers{_epilogue(model)}{attention}: measured faster at full " \
                   f"batches here ({gemm.why})"
        count = pack_linears(model.base.encoder)
        release_freed_memory()
        if count:
            return f"oneDNN, {count} linear layers prepacked{_epilogue(model)}{attention}" \
                   + (f" ({gemm.why})" if gemm is not None else "")
    return "PyTorch ops" + attention


def _attention(model: EncoderModel, dtype: torch.dtype, bf16_products: bool = False) -> str:
    """Install the C attention kernel where it is built (models/fastpath.py); in words. fp32 models: with
    `bf16_products` (int8 pipelines, where the plan says so) its products in bf16, if the built kernel agrees
    that this CPU multiplies bf16 pairs. bf16 models: only where it does (it reads their bf16 q/k/v; else
    SDPA, per sequence)."""
    from coulisse.models.fastpath import attention_bf16_products, bf16_dot, c_attention_enabled, install_c_attention
    from coulisse.models.quantize import amx_tiles

    if not c_attention_enabled():
        return ""
    if dtype == torch.bfloat16:
        if not bf16_dot() or not install_c_attention(model, bf16=True):
            return ""
        return ", attention in C over packed sequences (bf16 q/k/v, AVX512-BF16)"
    bf16 = bf16_products and attention_bf16_products()
    if dtype != torch.float32 or not install_c_attention(model, bf16=bf16):
        return ""
    if not bf16:
        return ", attention in C over packed sequences"
    handed = any(getattr(m, "kernel_reads_bf16", False) and getattr(m.qkv, "gemm", None) == "coulisse"
                 and amx_tiles(m.qkv.in_features) for m in model.modules() if hasattr(m, "qkv"))
    return (", attention in C over packed sequences (bf16 products, AVX512-BF16"
            + ("; q/k/v written in bf16 by the int8 GEMM on AMX tiles" if handed else "") + ")")


def _epilogue(model: EncoderModel) -> str:
    from coulisse.models.fastpath import Fp32Linear

    fused = any(isinstance(m, Fp32Linear) and m.c_pass for m in model.modules())
    return ", bias, GELU and residual + LayerNorm in C passes" if fused else ""


def _quantize_cached(model: EncoderModel, files: list[Path], features_key: str, bits: int, small_rows: int,
                     gemm: str = "onednn") -> str:
    """int8 with the codes from the weight cache when they are there; computed (and stored) when not."""
    from coulisse.engine import cache
    from coulisse.models.quantize import quantize_model

    folder = cache.cache_dir()
    if folder is None or not files:
        quantize_model(model, "int8", weight_bits=bits, small_rows=small_rows, gemm=gemm)
        return "quantized at load (cache off)"
    try:
        key = cache.make_key(files, features_key, bits)
    except OSError as e:  # a file the load read and the key cannot (its permissions changed since): no cache
        log.warning("the weight cache's key could not be read (%s); quantizing without the cache", e)
        quantize_model(model, "int8", weight_bits=bits, small_rows=small_rows, gemm=gemm)
        return "quantized at load (the cache's key could not be read)"
    path = cache.key_path(folder, key)
    expected = {n: (m.out_features, m.in_features) for n, m in model.base.encoder.named_modules()
                if isinstance(m, torch.nn.Linear)}
    codes = cache.load_codes(path, key)
    if codes is not None and not cache.valid_for(codes, expected):
        log.warning("weight cache %s does not match this model's layers: rebuilding it", path)
        codes = None
    hit = codes is not None
    codes = codes if hit else {}
    quantize_model(model, "int8", weight_bits=bits, small_rows=small_rows, codes=codes, gemm=gemm)
    if hit:
        return f"read from the cache {path}"
    if not codes:  # fbgemm's layers (no oneDNN in this torch) make no codes for the cache
        return "quantized at load (fbgemm's layers: no cache)"
    if cache.save_codes(path, key, codes):
        return f"quantized at load, cached in {path}"
    return "quantized at load (the cache could not be written)"

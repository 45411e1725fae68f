"""Model preparation, in one place: chosen once at load, logged once.

Threads, device and dtype, int8 quantization, the fp32 oneDNN fast path (weights prepacked) and handing
back the pages of mapped weights that the prepared model no longer reads. Every pipeline is built through
`prepare_model`; nothing rewrites the model afterwards.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch

from coulisse.errors import InputError
from coulisse.models import EncoderModel
from coulisse.weights.mapped import release_file_pages

log = logging.getLogger(__name__)

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
    fast_path: str

    def describe(self) -> str:
        dtype = "int8 linear layers" if self.quantize else str(self.dtype).removeprefix("torch.")
        return f"{self.device}, {dtype}, {self.fast_path}, {self.threads} threads"


def check_request(device: torch.device, dtype=None, quantize: str | None = None, threads: int | None = None) -> None:
    """What can be refused before any weight is read (`pipeline()` calls it before loading)."""
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise InputError(f"threads={threads!r}; pass a positive number of threads.")
    resolve_dtype(dtype, device)
    if quantize not in (None, "none"):
        from coulisse.models.quantize import MODES

        if quantize not in MODES:
            raise InputError(f"quantize={quantize!r}; use one of {', '.join(MODES)}.")
        if device.type != "cpu":
            raise InputError(f"quantize={quantize!r} runs on the CPU; on {device}, use dtype='float16' instead.")


def prepare_model(model: EncoderModel, files: Iterable[Path], *, device: torch.device, dtype=None,
                  quantize: str | None = None, threads: int | None = None, name: str = "") -> Preparation:
    """Make `model` ready to run, once: threads, quantization (CPU only), device and dtype, the fp32 fast
    path; then drop the mapped pages of `files` the prepared model no longer reads."""
    check_request(device, dtype, quantize, threads)
    if threads is not None:
        torch.set_num_threads(threads)
    dtype = resolve_dtype(dtype, device)
    quantize = None if quantize in (None, "none") else quantize
    fast_path = "PyTorch ops"
    if quantize is not None:
        from coulisse.models.quantize import quantize_model

        quantize_model(model, quantize)
        fast_path = "int8 GEMMs"
    model.to(device, dtype)
    if device.type == "cpu" and dtype == torch.float32:
        from coulisse.models.fastpath import onednn_fp32_available, pack_linears, release_freed_memory

        if onednn_fp32_available():
            count = pack_linears(model.base.encoder)  # int8 layers are no nn.Linear: left alone
            release_freed_memory()
            if count:
                fast_path = f"oneDNN, {count} linear layers prepacked"
    # Repacked, quantized or moved weights leave their mapped originals unread: drop those pages.
    release_file_pages(p for p in files if p.is_file())
    chosen = Preparation(device, dtype, quantize, torch.get_num_threads(), fast_path)
    log.info("prepared %s: %s", name or "the model", chosen.describe())
    return chosen

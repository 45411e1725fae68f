"""`coulisse.pipeline(task, model=...)`: the three stages behind one call, as in transformers.

    preprocess  (Tokenizer: text -> ids; no torch)
    forward     (Engine: packed batches through EncoderModel; the only place that touches torch)
    postprocess (tasks/*: numpy -> labels, scores, vectors)
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from coulisse.config import EncoderConfig
from coulisse.engine import DEFAULT_BATCH_TOKENS, Engine, Item
from coulisse.errors import InputError
from coulisse.hub import resolve_model
from coulisse.models import EncoderModel, load_model
from coulisse.tokenizer import Tokenizer
from coulisse.weights.mapped import release_file_pages

log = logging.getLogger(__name__)

# The course's model; other tasks have no default worth downloading blind: the caller names one.
DEFAULT_MODELS = {"sentiment-analysis": "tblard/tf-allocine", "text-classification": "tblard/tf-allocine"}
ALIASES = {"sentiment-analysis": "text-classification", "ner": "token-classification"}


@dataclass
class Checkpoint:
    """Everything loaded from one model folder."""

    name: str
    directory: Path
    config: EncoderConfig
    tokenizer: Tokenizer
    model: EncoderModel


def load_checkpoint(model: str | Path, head: str | None, revision: str | None = None) -> Checkpoint:
    directory = resolve_model(model, revision)
    config = EncoderConfig.from_file(directory / "config.json")
    tokenizer = Tokenizer.from_dir(directory, model_type=config.model_type, max_positions=config.max_positions)
    # Never let truncation exceed what the position table can embed.
    tokenizer.model_max_length = min(tokenizer.model_max_length, config.max_positions)
    encoder = load_model(directory, config, head)
    return Checkpoint(str(model), directory, config, tokenizer, encoder)


class Pipeline:
    """Base class: tokenizer + engine + a task's post-processing."""

    task = ""
    head: str | None = None

    def __init__(self, checkpoint: Checkpoint, *, device: str = "cpu", dtype: str | torch.dtype | None = None,
                 max_batch_tokens: int = DEFAULT_BATCH_TOKENS, **defaults: Any):
        self.checkpoint = checkpoint
        self.tokenizer = checkpoint.tokenizer
        self.model = checkpoint.model
        self.device = torch.device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        self.model.to(self.device, self.dtype)
        self._choose_fast_path()
        # Repacked, quantized or moved weights leave their mapped originals unread: drop those pages.
        release_file_pages(p for p in checkpoint.directory.iterdir() if p.is_file())
        self.engine = Engine(self.model, max_batch_tokens=max_batch_tokens, device=self.device,
                             uses_token_types="token_type_ids" in self.tokenizer.model_input_names)
        self.defaults = defaults

    def _choose_fast_path(self) -> None:
        """Once, at load: fp32 on the CPU runs its linear layers on oneDNN with prepacked weights."""
        from coulisse.models.fastpath import onednn_fp32_available, pack_linears, release_freed_memory

        if self.device.type == "cpu" and self.dtype == torch.float32 and onednn_fp32_available():
            count = pack_linears(self.model.base.encoder)  # int8 layers are no nn.Linear: left alone
            release_freed_memory()
            if count:
                log.info("fp32 fast path: %d encoder linear layers on oneDNN, weights prepacked", count)

    @property
    def config(self) -> EncoderConfig:
        return self.checkpoint.config

    def preprocess(self, texts: list[str], pairs: list[str] | None = None, truncation: bool = True) -> list[Item]:
        encodings = self.tokenizer.encode_batch(texts, pairs, truncation=truncation)
        return [Item(e.ids, e.type_ids) for e in encodings]

    def forward(self, items: list[Item], progress=None) -> list:
        return self.engine.run(items, progress)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(task={self.task!r}, model={self.checkpoint.name!r})"


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


def _task_class(task: str) -> type[Pipeline]:
    from coulisse.tasks import TASKS

    name = ALIASES.get(task, task)
    if name not in TASKS:
        raise InputError(
            f"unknown task {task!r}; coulisse supports {', '.join(sorted(set(TASKS) | set(ALIASES)))}."
        )
    return TASKS[name]


def pipeline(task: str = "sentiment-analysis", model: str | Path | None = None, *,
             revision: str | None = None, device: str = "cpu", dtype: str | torch.dtype | None = None,
             threads: int | None = None, max_batch_tokens: int = DEFAULT_BATCH_TOKENS, quantize: str | None = None,
             **kwargs: Any) -> Pipeline:
    """Build a pipeline, transformers-style: `pipeline("sentiment-analysis", model="tblard/tf-allocine")`.

    `quantize="int8"` runs the encoder's linear layers in int8 (CPU only); `device="cuda"` runs in fp16
    unless `dtype` says otherwise (`"bfloat16"`, `"float32"`). Extra keyword arguments become
    the task's defaults (e.g. `top_k=None`, `function_to_apply="sigmoid"`).
    """
    cls = _task_class(task)
    if model is None:
        if task not in DEFAULT_MODELS:
            raise InputError(f"task {task!r} has no default model; pass model= (a Hub id or a local folder).")
        model = DEFAULT_MODELS[task]
    if threads is not None:
        if threads < 1:
            raise InputError(f"threads={threads}; pass a positive number of threads.")
        torch.set_num_threads(threads)
    log.info("torch runs on %d threads", torch.get_num_threads())
    checkpoint = load_checkpoint(model, cls.head, revision)
    if quantize not in (None, "none"):
        if torch.device(device).type != "cpu":
            raise InputError(f"quantize={quantize!r} runs on the CPU; on {device}, use dtype='float16' instead.")
        from coulisse.models.quantize import quantize_model

        quantize_model(checkpoint.model, quantize)
    return cls(checkpoint, device=device, dtype=dtype, max_batch_tokens=max_batch_tokens, **kwargs)

"""`coulisse.pipeline(task, model=...)`: the task registry and the factory, above the tasks.

A pipeline is the three stages behind one call, as in transformers (see `coulisse.tasks.base`):

    preprocess  (Tokenizer: text -> ids; no torch)
    forward     (Engine: packed batches through EncoderModel; the only place that touches torch)
    postprocess (tasks/*: numpy -> labels, scores, vectors)
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from coulisse.checkpoint import Checkpoint, default_model, load_checkpoint
from coulisse.defaults import DEFAULT_MODELS
from coulisse.engine import DEFAULT_BATCH_SIZE, DEFAULT_BATCH_TOKENS
from coulisse.engine.device import resolve_device
from coulisse.engine.prepare import DTYPES, check_request, resolve_dtype
from coulisse.errors import InputError
from coulisse.tasks import TASKS
from coulisse.tasks.base import Pipeline

log = logging.getLogger(__name__)

ALIASES = {"sentiment-analysis": "text-classification", "ner": "token-classification"}
__all__ = ["ALIASES", "DTYPES", "TASKS", "Checkpoint", "Pipeline", "load_checkpoint", "pipeline", "resolve_dtype"]


def _task_class(task: str) -> type[Pipeline]:
    name = ALIASES.get(task, task)
    if name not in TASKS:
        raise InputError(
            f"unknown task {task!r}; coulisse supports {', '.join(sorted(set(TASKS) | set(ALIASES)))}."
        )
    return TASKS[name]


def pipeline(task: str = "sentiment-analysis", model: str | Path | None = None, *,
             revision: str | None = None, device: str | int | torch.device = "cpu",
             dtype: str | torch.dtype | None = None,
             threads: int | None = None, max_batch_tokens: int = DEFAULT_BATCH_TOKENS,
             max_batch_size: int = DEFAULT_BATCH_SIZE, quantize: str | None = None, **kwargs: Any) -> Pipeline:
    """Build a pipeline, transformers-style: `pipeline("sentiment-analysis", model="tblard/tf-allocine")`.

    `quantize="int8"` runs the encoder's linear layers in int8 (CPU only); `device="cuda"` runs in fp16
    unless `dtype` says otherwise (`"bfloat16"`, `"float32"`). The engine closes a batch at
    `max_batch_tokens` tokens or `max_batch_size` inputs. Extra keyword arguments become
    the task's defaults (e.g. `top_k=None`, `function_to_apply="sigmoid"`). Without `model`,
    sentiment analysis runs `tblard/tf-allocine`, or the bundled `coulisse/mini-allocine` (logging one
    warning) when that cannot be had; a named model never falls back.
    """
    cls = _task_class(task)
    cls.check_options(kwargs)  # a misspelt or invalid option fails here, before any loading
    device = resolve_device(device)  # a GPU this torch cannot use fails here, before any loading
    check_request(device, dtype, quantize, threads)  # so do bad threads, dtype and quantize values
    if model is None:
        if task not in DEFAULT_MODELS:
            raise InputError(f"task {task!r} has no default model; pass model= (a Hub id or a local folder).")
        model = default_model(task, revision)
    checkpoint = load_checkpoint(model, cls.head, revision)
    # Threads, quantization, dtype and the fast path are chosen in one place: `engine.prepare.prepare_model`.
    return cls(checkpoint, device=device, dtype=dtype, quantize=quantize, threads=threads,
               max_batch_tokens=max_batch_tokens, max_batch_size=max_batch_size, **kwargs)

"""The task a checkpoint was saved for, read from its files as TEI reads it: a sentence-transformers folder
(modules.json) is feature extraction (sparse embedding when it names SpladePooling), else config.json's
`architectures` names the head. `--task` overrides.
Reads two small files; no torch, so the CLI can call it before loading anything.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

log = logging.getLogger(__name__)

DEFAULT_TASK = "text-classification"  # no model named: the default sentiment model
# The head's class-name suffix -> the task (TF and Flax classes carry a prefix, which the suffix ignores).
HEADS = (("ForSequenceClassification", "text-classification"), ("ForTokenClassification", "token-classification"),
         ("ForQuestionAnswering", "question-answering"), ("ForMaskedLM", "fill-mask"), ("Model", "feature-extraction"))
NLI_LABELS = {"entailment", "contradiction"}


def detect_task(directory: Path) -> str:
    """The task of the checkpoint in `directory` (see the module's docstring); an NLI classifier (labels
    entailment / contradiction) is served as zero-shot classification, as the Hub tags such models."""
    if (directory / "modules.json").is_file():
        try:
            splade = "SpladePooling" in (directory / "modules.json").read_text(encoding="utf-8")
        except OSError:
            splade = False  # the load that follows names what is wrong with the file
        return "sparse-embedding" if splade else "feature-extraction"
    try:
        config = json.loads((directory / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return DEFAULT_TASK  # the load that follows names what is wrong with config.json
    architectures = config.get("architectures") if isinstance(config, dict) else None
    for name in architectures if isinstance(architectures, list) else []:
        for suffix, task in HEADS:
            if isinstance(name, str) and name.endswith(suffix):
                labels = config.get("id2label") or {}
                names = {str(v).lower() for v in labels.values()} if isinstance(labels, dict) else set()
                if task == "text-classification" and names >= NLI_LABELS:
                    return "zero-shot-classification"
                return task
    log.info("%s names no architecture coulisse knows (%s): serving %s; pass --task to choose", directory,
             architectures, DEFAULT_TASK)
    return DEFAULT_TASK


def served_task(task: str | None, model: str | None, revision: str | None = None) -> str:
    """`--task` when given, else the checkpoint's own task."""
    if task is not None:
        return task
    if model is None:
        return DEFAULT_TASK
    from coulisse.defaults import DEFAULT_MODEL, offline_hint
    from coulisse.errors import HubUnreachableError
    from coulisse.hub import resolve_model

    try:
        directory = resolve_model(model, revision)
    except HubUnreachableError as e:
        if model != DEFAULT_MODEL:
            raise
        raise HubUnreachableError(offline_hint(str(e))) from None  # the course's classifier: as pipeline() says
    found = detect_task(directory)
    log.info("task %s, read from %s's files (--task overrides)", found, model)
    return found

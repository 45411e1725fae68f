"""Stage 3 for sparse embeddings (SPLADE): one weight per vocabulary entry and input, most of them zero, as
sentence-transformers' `SparseEncoder` and TEI's `/embed_sparse` compute them.

The head is the checkpoint's masked-LM head; the model pools its logits itself (`models.heads.SpladeHead`:
log(1 + ReLU), then the max over each input's tokens), so the forward stage returns one `(vocab,)` row per
input and the logits of every token never leave the batch. A folder saved by sentence-transformers
(`modules.json` naming a SpladePooling module) gives its pooling strategy, activation, `max_seq_length`
and prompts; a bare `*ForMaskedLM` folder (naver/splade-v3 before sentence-transformers) gets SPLADE v2's
max of log(1 + ReLU), TEI's `--pooling splade`.

    >>> pipe = pipeline("sparse-embedding", model="naver/splade-v3")
    >>> pipe("Le chat dort.", top_k=3)   # the 3 heaviest vocabulary entries: [{"index", "token", "value"}, ...]
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from coulisse.errors import UnsupportedModelError, given_save_directory
from coulisse.export import save_pretrained as save_checkpoint
from coulisse.tasks.base import POST, Batch, Option, positive_int
from coulisse.tasks.feature_extraction import (
    FeatureExtractionPipeline,
    SentenceConfig,
    max_seq_length_of,
    read_modules,
    read_object,
)

# sentence-transformers' module types of a SparseEncoder coulisse runs (class names, any module path)
TRANSFORMER_MODULES = ("Transformer", "MLMTransformer")


@dataclass(frozen=True)
class SpladeConfig:
    """What a SparseEncoder folder says: SpladePooling's strategy and activation, the Transformer's
    `max_seq_length` and `do_lower_case`."""

    strategy: str = "max"
    activation: str = "relu"
    max_seq_length: int | None = None
    lowercase: bool = False


def splade_config(directory: Path) -> SpladeConfig | None:
    """The folder's SparseEncoder modules (a Transformer, then SpladePooling), or None when it has no
    modules.json. A modules.json of other modules (a dense model's Pooling, an inference-free encoder's
    SparseStaticEmbedding) is refused: its embeddings are not these."""
    path = directory / "modules.json"
    modules = read_modules(directory)
    if modules is None:
        return None
    pooling, settings, found = {}, {}, False
    settings_path = directory / "sentence_bert_config.json"
    for kind, folder in modules:
        if kind in TRANSFORMER_MODULES:
            if (settings_path := folder / "sentence_bert_config.json").is_file():
                settings = read_object(settings_path)
        elif kind == "SpladePooling":
            pooling = read_object(folder / "config.json") if (folder / "config.json").is_file() else {}
            found = True
        else:
            raise UnsupportedModelError(
                f"{path} lists a {kind!r} module; coulisse's sparse embeddings are SPLADE's, from a Transformer "
                "and a SpladePooling module. Use sentence-transformers for this model.")
    if not found:
        raise UnsupportedModelError(f"{path} lists no SpladePooling module: this folder's sentence-transformers "
                                    "model is not a SPLADE sparse encoder. Use pipeline('feature-extraction', "
                                    "..., pooling='auto') for its dense embeddings.")
    return SpladeConfig(pooling.get("pooling_strategy") or "max", pooling.get("activation_function") or "relu",
                        max_seq_length_of(settings, settings_path),
                        bool(settings.get("do_lower_case")))


def sparse_result(weights: np.ndarray, tokens: list[str | None] | None, top_k: int | None) -> list[dict]:
    """One input's `(vocab,)` weights -> its non-zero entries, heaviest first (ties: lower index first), as
    {"index", "token", "value"}; `top_k` keeps the first k (sentence-transformers' `max_active_dims`)."""
    nonzero = np.flatnonzero(weights)
    order = nonzero[np.lexsort((nonzero, -weights[nonzero]))][:top_k]
    return [{"index": int(i), **({"token": tokens[i]} if tokens is not None else {}), "value": float(weights[i])}
            for i in order]


class SparseEmbeddingPipeline(FeatureExtractionPipeline):
    """Texts -> SPLADE sparse embeddings. Its stages are feature extraction's (prompts, truncation, the
    folder's `max_seq_length` and lowercasing) with the masked-LM head pooled into one vocabulary-sized row."""

    task = "sparse-embedding"
    head = "splade"
    # feature extraction's stage-1 options (truncation, tokenize_kwargs, truncation_side, prompt_name, prompt:
    # the folder's default prompt applies when neither is given, as in `SparseEncoder.encode`); no pooling
    OPTIONS = {
        **{name: option for name, option in FeatureExtractionPipeline.OPTIONS.items()
           if name not in ("pooling", "normalize")},
        # a torch sparse COO tensor `(vocab,)` per input instead of the list of entries
        "return_tensors": Option(False,
                                 doc="a torch sparse tensor (vocabulary-sized) per input instead of its entries"),
        "top_k": Option(None, POST, check=positive_int,
                        doc="the largest weights kept per input (default: the folder's max_active_dims, else all)"),
    }

    def __init__(self, checkpoint, **kwargs: Any):
        super().__init__(checkpoint, **kwargs)
        self.splade = splade_config(checkpoint.directory) or SpladeConfig()
        self.model.head.configure(self.splade.strategy, self.splade.activation)
        # config_sentence_transformers.json's: the weights each embedding keeps, where `top_k` says none
        self.max_active_dims: int | None = self.settings.get("max_active_dims")

    @property
    def vocab_size(self) -> int:
        """The embeddings' width: one entry per row of the model's vocabulary."""
        return self.config.vocab_size

    @functools.cached_property
    def tokens(self) -> list[str | None]:
        """The token of each vocabulary row (None for a row the tokenizer never gives)."""
        tokens: list[str | None] = [None] * self.vocab_size
        for token, i in self.tokenizer.get_vocab().items():
            if i < self.vocab_size:
                tokens[i] = token
        return tokens

    def sentence_config(self, pooling: str = "auto", normalize: bool | None = None) -> SentenceConfig:
        s = self.splade
        return SentenceConfig("splade", False, s.max_seq_length, s.lowercase, True)

    def resolve_options(self, options: dict[str, Any], given: dict[str, Any]) -> dict[str, Any]:
        return super().resolve_options({**options, "pooling": "auto", "normalize": None}, given)

    def save_pretrained(self, save_directory: str | Path | None = None, *, dtype: str | Any = None,
                        overwrite: bool = False, directory: str | Path | None = None) -> Path:
        """Write the masked-LM checkpoint for transformers (`AutoModelForMaskedLM`), as the base class does for
        a head, with the folder's sentence-transformers modules (modules.json, SpladePooling) beside it."""
        save_directory = given_save_directory(save_directory, directory)
        self.warn_int8_save()
        return save_checkpoint(self.checkpoint.model_dir, self.config, self.tokenizer, "masked-lm",
                               Path(save_directory), dtype=dtype, overwrite=overwrite)

    def preprocess(self, inputs: Any, truncation: bool | str = True, tokenize_kwargs: dict | None = None,
                   truncation_side: str | None = None, prompt_name: str | None = None,
                   prompt: str | None = None) -> Batch:
        """Texts -> ids, as feature extraction's with `pooling="auto"`: the folder's (default) prompt,
        `max_seq_length` and lowercasing, as `SparseEncoder.encode` applies them."""
        return super().preprocess(inputs, truncation, pooling="auto", tokenize_kwargs=tokenize_kwargs,
                                  truncation_side=truncation_side, prompt_name=prompt_name, prompt=prompt)

    def postprocess(self, outputs: Any, batch: Batch | None = None, *, return_tensors: bool = False,
                    top_k: int | None = None):
        """`(vocab,)` weights per input -> its non-zero entries, heaviest first (`sparse_result`), or a torch
        sparse tensor (`return_tensors`); the heaviest `top_k` only, else the folder's `max_active_dims`, as
        sentence-transformers' `SparseEncoder.encode`. One array alone (no batch) gives that input's result."""
        top_k = self.max_active_dims if top_k is None else top_k
        rows = [outputs] if batch is None else list(outputs)
        results = [self._sparse(np.asarray(row, dtype=np.float32), return_tensors, top_k) for row in rows]
        return results[0] if batch is None or batch.single else results

    def _sparse(self, weights: np.ndarray, return_tensors: bool, top_k: int | None):
        if top_k is not None and top_k < np.count_nonzero(weights):
            kept = np.zeros_like(weights)
            for entry in sparse_result(weights, None, top_k):
                kept[entry["index"]] = entry["value"]
            weights = kept
        if return_tensors:
            import torch

            return torch.from_numpy(weights).to_sparse()
        return sparse_result(weights, self.tokens, None)

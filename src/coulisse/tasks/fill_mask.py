"""Stage 3 for fill-mask: the vocabulary logits of each masked position -> the `top_k` tokens (or the best
`targets`) and the sentences they make, as transformers' FillMaskPipeline returns them (numpy only).

The forward stage returns logits for the masked positions only, `(masks, vocab)` per input: the model
projects those rows alone onto the vocabulary (`Engine.run(..., select_token_id=mask)`), not every token.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from coulisse.engine import Item
from coulisse.errors import InputError, ModelLoadError
from coulisse.tasks.base import FORWARD, PRE, Batch, Option, Pipeline, positive_int, tokenizer_keywords
from coulisse.tasks.functional import softmax, top_k
from coulisse.tokenizer import Tokenizer, check_texts

log = logging.getLogger(__name__)


def fill_mask_results(ids: list[int], logits: np.ndarray, tokenizer: Tokenizer, k: int = 5,
                      target_ids: np.ndarray | None = None) -> list:
    """One input's ids and its masked rows' logits `(masks, vocab)` -> a list of proposals (one mask), or
    one such list per mask. Each proposal: {"score", "token", "token_str", "sequence"}."""
    ids = np.asarray(ids)
    if target_ids is not None and len(target_ids) < k:
        k = len(target_ids)
    positions = np.flatnonzero(ids == tokenizer.mask_token_id)
    probs = softmax(np.asarray(logits, dtype=np.float32))  # (masks, vocab)
    if target_ids is not None:
        probs = probs[:, target_ids]
    # With one mask the sentence is shown without special tokens; with several, the other masks stay.
    single = len(positions) == 1
    results = []
    for position, row in zip(positions, probs, strict=True):
        proposals = []
        for j in top_k(row, k):
            token = int(target_ids[j]) if target_ids is not None else int(j)
            filled = ids.copy()
            filled[position] = token
            filled = filled[filled != tokenizer.pad_token_id]
            proposals.append({"score": float(row[j]), "token": token, "token_str": tokenizer.decode([token]),
                              "sequence": tokenizer.decode(filled, skip_special_tokens=single)})
        results.append(proposals)
    return results[0] if single else results


def target_ids(tokenizer: Tokenizer, targets: str | list[str]) -> np.ndarray:
    """Vocabulary ids of `targets`; a target that is not a token becomes its first token, with a warning."""
    vocab = tokenizer.get_vocab()
    ids = []
    for target in [targets] if isinstance(targets, str) else targets:
        token_id = vocab.get(target)
        if token_id is None:
            pieces = tokenizer.encode_batch([target], truncation=False, add_special_tokens=False)[0].ids
            if not pieces:
                log.warning("The specified target token `%s` does not exist in the model vocabulary. We "
                            "cannot replace it with anything meaningful, ignoring it", target)
                continue
            token_id = pieces[0]
            log.warning("The specified target token `%s` does not exist in the model vocabulary. Replacing "
                        "with `%s`.", target, tokenizer.convert_ids_to_tokens(token_id))
        ids.append(token_id)
    ids = list(set(ids))  # transformers' order, which decides between equal scores
    if not ids:
        raise InputError(f"targets={targets!r} holds no usable token; pass words of the model's vocabulary.")
    return np.array(ids)


class FillMaskPipeline(Pipeline):
    """Texts with mask tokens -> the likeliest tokens for each mask (`top_k`, `targets`), transformers'
    "fill-mask"."""

    task = "fill-mask"
    head = "masked-lm"
    OPTIONS = {
        "top_k": Option(5, check=positive_int, doc="proposals per mask, best first"),
        "targets": Option(None, doc="words to score in the mask's place instead of the whole vocabulary"),
        "tokenizer_kwargs": Option(None, PRE, check=tokenizer_keywords,
                                   doc="a dict of truncation, max_length, add_special_tokens, padding"),
    }

    def __init__(self, checkpoint, **kwargs: Any):
        super().__init__(checkpoint, **kwargs)
        if self.tokenizer.mask_token_id is None:
            raise ModelLoadError(f"the tokenizer of {checkpoint.name} defines no mask token; set mask_token "
                                 "in its tokenizer_config.json.")

    def resolve_options(self, options: dict[str, Any], given: dict[str, Any]) -> dict[str, Any]:
        targets = options.pop("targets")
        options["target_ids"] = target_ids(self.tokenizer, targets) if targets is not None else None
        return options

    def stage_options(self, options: dict[str, Any], stage: str) -> dict[str, Any]:
        if stage == PRE:
            return {"tokenizer_kwargs": options["tokenizer_kwargs"]}
        if stage == FORWARD:
            return {"batch_size": options["batch_size"]}
        return {"top_k": options["top_k"], "target_ids": options["target_ids"]}

    def preprocess(self, inputs: Any, tokenizer_kwargs: dict | None = None, truncation: bool | None = None) -> Batch:
        """Ids of each text; every text needs a mask token, and must fit the model unless truncated (as
        transformers, no truncation unless `tokenizer_kwargs` asks for it)."""
        texts, single = check_texts(inputs)
        kwargs = tokenizer_kwargs or {}
        if truncation is not None:
            kwargs = {**kwargs, "truncation": truncation}
        max_length = kwargs.get("max_length")
        encodings = self.tokenizer.encode_batch(
            texts, truncation=bool(kwargs.get("truncation", False)),
            max_length=self.cap_length(max_length),
            add_special_tokens=kwargs.get("add_special_tokens", True),
            strategy=kwargs["truncation"] if isinstance(kwargs.get("truncation"), str) else "longest_first")
        mask, limit = self.tokenizer.mask_token_id, self.config.max_positions
        for i, e in enumerate(encodings):
            if mask not in e.ids:
                raise InputError(f"text {i} ({texts[i]!r:.60}) has no mask token "
                                 f"({self.tokenizer.special_tokens['mask']}); put one where a word is "
                                 "missing.")
            if len(e.ids) > limit:
                raise InputError(f"text {i} has {len(e.ids)} tokens, more than the {limit} the model reads; "
                                 "shorten it, or pass tokenizer_kwargs={'truncation': True}.")
        # transformers unwraps a one-text list too
        return Batch([Item(e.ids, e.type_ids) for e in encodings], texts, single or len(texts) == 1)

    def forward(self, items: list[Item], progress=None, batch_size: int | None = None) -> list[np.ndarray]:
        """Per input, the logits of its masked positions `(masks, vocab)`."""
        return self.engine.run(list(items), progress, select_token_id=self.tokenizer.mask_token_id,
                               max_batch_size=batch_size)

    def postprocess(self, outputs: list[np.ndarray], batch: Batch, *, top_k: int = 5,
                    target_ids: np.ndarray | None = None) -> list:
        """Per input, its masked rows' logits `(masks, vocab)` -> proposals (see `fill_mask_results`)."""
        results = [fill_mask_results(item.ids, rows, self.tokenizer, top_k, target_ids)
                   for item, rows in zip(batch.items, outputs, strict=True)]
        return results[0] if batch.single else results

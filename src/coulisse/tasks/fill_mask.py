"""Stage 3 for fill-mask: the vocabulary logits of each masked position -> the `top_k` tokens (or the best
`targets`) and the sentences they make, as transformers' FillMaskPipeline returns them (numpy only).

The forward stage returns logits for the masked positions only, `(masks, vocab)` per input: the model
projects those rows alone onto the vocabulary (see `EncoderModel.select_token_id`), not every token.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from coulisse.engine import Item
from coulisse.errors import InputError, ModelLoadError
from coulisse.pipelines import Pipeline
from coulisse.tasks.text_classification import softmax
from coulisse.tokenizer import Tokenizer, check_texts

log = logging.getLogger(__name__)


def fill_mask_results(ids: list[int], logits: np.ndarray, tokenizer: Tokenizer, top_k: int = 5,
                      target_ids: np.ndarray | None = None) -> list:
    """One input's ids and its masked rows' logits `(masks, vocab)` -> a list of proposals (one mask), or
    one such list per mask. Each proposal: {"score", "token", "token_str", "sequence"}."""
    ids = np.asarray(ids)
    if target_ids is not None and len(target_ids) < top_k:
        top_k = len(target_ids)
    positions = np.flatnonzero(ids == tokenizer.mask_token_id)
    probs = softmax(np.asarray(logits, dtype=np.float32))  # (masks, vocab)
    if target_ids is not None:
        probs = probs[:, target_ids]
    # With one mask the sentence is shown without special tokens; with several, the other masks stay.
    single = len(positions) == 1
    results = []
    for position, row in zip(positions, probs, strict=True):
        proposals = []
        for j in np.argsort(-row, kind="stable")[:top_k]:
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
    task = "fill-mask"
    head = "masked-lm"

    def __init__(self, checkpoint, **kwargs: Any):
        super().__init__(checkpoint, **kwargs)
        if self.tokenizer.mask_token_id is None:
            raise ModelLoadError(f"the tokenizer of {checkpoint.name} defines no mask token; set mask_token "
                                 "in its tokenizer_config.json.")
        self.model.select_token_id = self.tokenizer.mask_token_id

    def _options(self, kwargs: dict[str, Any]) -> tuple[int, np.ndarray | None, bool]:
        options = {**self.defaults, **kwargs}
        unknown = set(options) - {"top_k", "targets", "tokenizer_kwargs"}
        if unknown:
            raise InputError(f"unknown option(s) {sorted(unknown)}; fill-mask takes top_k, targets, "
                             "tokenizer_kwargs.")
        top_k = options.get("top_k", 5)
        if not isinstance(top_k, int) or isinstance(top_k, bool) or top_k < 1:
            raise InputError(f"top_k={top_k!r}; pass a positive number of proposals.")
        targets = options.get("targets")
        ids = target_ids(self.tokenizer, targets) if targets is not None else None
        tokenizer_kwargs = dict(options.get("tokenizer_kwargs") or {})
        if set(tokenizer_kwargs) - {"truncation"}:
            raise InputError(f"tokenizer_kwargs={tokenizer_kwargs!r}; fill-mask passes on 'truncation' only.")
        return top_k, ids, bool(tokenizer_kwargs.get("truncation", False))

    def preprocess(self, texts: list[str], truncation: bool = False) -> list[Item]:
        """Ids of each text; every text needs a mask token, and must fit the model unless truncated."""
        encodings = self.tokenizer.encode_batch(texts, truncation=truncation)
        mask, limit = self.tokenizer.mask_token_id, self.config.max_positions
        for i, e in enumerate(encodings):
            if mask not in e.ids:
                raise InputError(f"text {i} ({texts[i]!r:.60}) has no mask token "
                                 f"({self.tokenizer.special_tokens['mask']}); put one where a word is "
                                 "missing.")
            if len(e.ids) > limit:
                raise InputError(f"text {i} has {len(e.ids)} tokens, more than the {limit} the model reads; "
                                 "shorten it, or pass tokenizer_kwargs={'truncation': True}.")
        return [Item(e.ids, e.type_ids) for e in encodings]

    def forward(self, items: list[Item], progress=None) -> list[np.ndarray]:
        """Per input, the logits of its masked positions `(masks, vocab)`: the engine's batches, whose
        output holds only masked rows, split by each input's number of masks."""
        mask = self.tokenizer.mask_token_id
        counts = [it.ids.count(mask) for it in items]
        results: list[np.ndarray | None] = [None] * len(items)
        for batch in self.engine.plan([len(it.ids) for it in items]):
            out = self.engine.forward([items[i] for i in batch]).numpy()  # (masks in the batch, vocab)
            for rows, i in zip(np.split(out, np.cumsum([counts[i] for i in batch])[:-1]), batch, strict=True):
                results[i] = rows
            if progress is not None:
                progress(len(batch))
        return results  # type: ignore[return-value]

    def postprocess(self, ids: list[int], logits: np.ndarray, top_k: int = 5,
                    target_ids: np.ndarray | None = None) -> list:
        return fill_mask_results(ids, logits, self.tokenizer, top_k, target_ids)

    def __call__(self, inputs: Any, progress=None, **kwargs: Any) -> list:
        top_k, ids, truncation = self._options(kwargs)
        texts, single = check_texts(inputs)
        items = self.preprocess(texts, truncation)
        logits = self.forward(items, progress)
        results = [self.postprocess(it.ids, rows, top_k, ids) for it, rows in zip(items, logits, strict=True)]
        # transformers unwraps a one-text list too
        return results[0] if single or len(results) == 1 else results

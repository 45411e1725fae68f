"""A chunk of rows -> predictions, through the pipeline's public stages (preprocess, forward, postprocess).

Long texts: `truncate` keeps the first `model_max_length` tokens, as the pipeline does. `chunk` reads a
text whole: its tokens (special tokens aside) are cut into windows that fill the model's limit, each
window overlapping the previous one by `stride` tokens, and every window gets the text's special tokens
(`<s> ... </s>`, `[CLS] ... [SEP]`). All windows of a chunk go through the engine together, and a text's
logits are the mean of its windows' logits, taken before softmax. A text that fits is one window, with
exactly the ids that `truncate` gives it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from coulisse.engine import Item
from coulisse.errors import InputError
from coulisse.interfaces.jobs.formats import Prediction, Row

log = logging.getLogger(__name__)

LONG_TEXT = ("truncate", "chunk")


@dataclass
class Windows:
    items: list[Item]
    owners: list[int]  # per item: the index of the text it came from


def window_starts(length: int, size: int, stride: int) -> list[int]:
    """Starts of windows of `size` tokens over `length` tokens, consecutive ones sharing `stride` tokens."""
    starts = [0]
    while starts[-1] + size < length:
        starts.append(starts[-1] + size - stride)
    return starts


def split_windows(encodings, max_length: int, stride: int | None) -> Windows:
    """Windows of every encoding (`tokenizers.Encoding`, special tokens included, not truncated)."""
    items: list[Item] = []
    owners: list[int] = []
    for n, e in enumerate(encodings):
        mask = e.special_tokens_mask
        head = next((i for i, m in enumerate(mask) if not m), len(mask))
        tail = next((i for i, m in enumerate(reversed(mask)) if not m), 0) if head < len(mask) else 0
        size = max_length - head - tail
        if size < 1:
            raise InputError(f"the model's limit of {max_length} tokens leaves no room between its special "
                             "tokens; --long-text chunk cannot be used with it.")
        step = default_stride(size) if stride is None else stride
        if not 0 <= step < size:
            raise InputError(f"stride {step}: the tokens two windows share must be at least 0 and fewer than "
                             f"the window's {size} tokens.")
        ids, types = e.ids, e.type_ids
        body = len(ids) - head - tail
        for start in window_starts(body, size, step):
            cut = list(range(head)) + list(range(head + start, head + min(start + size, body)))
            cut += list(range(len(ids) - tail, len(ids)))
            items.append(Item([ids[i] for i in cut], [types[i] for i in cut]))
            owners.append(n)
    return Windows(items, owners)


def default_stride(size: int) -> int:
    """A quarter of the window (127 tokens for a 512-token model)."""
    return size // 4


def average_logits(logits: list[np.ndarray], owners: list[int], count: int) -> list[np.ndarray]:
    """Mean logits per text over its windows."""
    sums: list[np.ndarray | None] = [None] * count
    counts = [0] * count
    for row, n in zip(logits, owners, strict=True):
        sums[n] = row.astype(np.float64) if sums[n] is None else sums[n] + row
        counts[n] += 1
    return [(s / c).astype(np.float32) for s, c in zip(sums, counts, strict=True)]  # type: ignore[operator]


class RowModel:
    """Rows -> one result per row, through `_predict(texts)`; `result` is the result type, which takes `error=`.
    Shared by the classifier (`Predictor`) and the embedder (`jobs/embed.py`)."""

    result: type = Prediction

    def __call__(self, rows: list[Row]) -> list:
        """One result per row. A chunk the tokenizer or engine fails on is retried row by row, so that
        only the rows that fail themselves become error rows: one poison row never takes down its chunk."""
        todo = [i for i, r in enumerate(rows) if r.error is None]
        preds = [self.result(error=r.error) for r in rows]
        if not todo:
            return preds
        try:
            done = self._predict([rows[i].text for i in todo])
        except InputError:
            raise  # a wrong option (window size, stride): every row would fail alike
        except Exception as e:  # noqa: BLE001 (isolated below, one row at a time)
            if len(todo) == 1:
                done = [_failed(rows[todo[0]], e, self.result)]
            else:
                log.warning("a chunk of %d rows failed (%s: %s); retrying it row by row", len(todo),
                            type(e).__name__, e)
                done = [self._one(rows[i]) for i in todo]
        for i, pred in zip(todo, done, strict=True):
            preds[i] = pred
        return preds

    def _one(self, row: Row):
        try:
            return self._predict([row.text])[0]
        except InputError:
            raise
        except Exception as e:  # noqa: BLE001
            return _failed(row, e, self.result)

    def _predict(self, texts: list[str]) -> list:
        raise NotImplementedError


class Predictor(RowModel):
    def __init__(self, pipe, long_text: str = "truncate", stride: int | None = None):
        if long_text not in LONG_TEXT:
            raise InputError(f"--long-text {long_text!r}; use one of {', '.join(LONG_TEXT)}.")
        if pipe.task != "text-classification":
            raise InputError(f"{pipe!r} is not a text classifier; corpus jobs classify texts.")
        self.pipe = pipe
        self.long_text = long_text
        self.stride = stride
        config = pipe.config
        self.labels = [config.id2label[i] for i in sorted(config.id2label)]
        self.truncated = 0  # texts that reached the model's limit (truncate), or read in several windows (chunk)

    def logits(self, texts: list[str]) -> list[np.ndarray]:
        if self.long_text == "truncate":
            items = self.pipe.preprocess(texts)
            limit = self.pipe.tokenizer.model_max_length
            self.truncated += sum(len(it.ids) >= limit for it in items)
            return self.pipe.forward(items)
        tokenizer = self.pipe.tokenizer
        windows = split_windows(tokenizer.encode_batch(texts, truncation=False), tokenizer.model_max_length,
                                self.stride)
        self.truncated += int((np.bincount(np.asarray(windows.owners, dtype=np.int64), minlength=len(texts)) > 1).sum())
        return average_logits(self.pipe.forward(windows.items), windows.owners, len(texts))

    def _predict(self, texts: list[str]) -> list[Prediction]:
        logits = np.stack(self.logits(texts))
        if not np.isfinite(logits).all():  # a broken checkpoint, an fp16 overflow: never a silent NaN score
            raise FloatingPointError("the logits are not finite (NaN or infinity)")
        preds = []
        for scores in self.pipe.postprocess(logits, top_k=None):
            values = [s["score"] for s in scores]  # every label, in id order
            best = int(np.argmax(values))
            preds.append(Prediction(scores[best]["label"], values[best], values))
        return preds


def _failed(row: Row, error: Exception, result: type = Prediction):
    log.warning("%s: the model failed on this row (%s: %s)", row.where, type(error).__name__, error)
    return result(error=f"{row.where}: the model failed on this row ({type(error).__name__}: {error})")

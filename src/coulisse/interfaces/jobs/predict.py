"""A chunk of rows -> predictions, through the pipeline's public stages (preprocess, forward, postprocess).

Long texts: `truncate` keeps the first `model_max_length` tokens, as the pipeline does. `chunk` reads a
text whole, as the pipeline's `long_text="chunk"` does (coulisse.tasks.windows): all windows of a chunk of rows
go through the engine together, and a text's logits are the mean of its windows' logits.
"""

from __future__ import annotations

import logging

import numpy as np

from coulisse.errors import InputError
from coulisse.interfaces.jobs.formats import Prediction, Row
from coulisse.tasks.windows import LONG_TEXT, average_logits

log = logging.getLogger(__name__)


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
        chunk = {"long_text": "chunk", "stride": self.stride} if self.long_text == "chunk" else {}
        batch = self.pipe.preprocess(texts, **chunk)
        rows = self.pipe.forward(batch.items)
        if batch.owners is None:
            limit = self.pipe.tokenizer.model_max_length
            self.truncated += sum(len(it.ids) >= limit for it in batch.items)
            return rows
        self.truncated += int((np.bincount(np.asarray(batch.owners, dtype=np.int64), minlength=len(texts)) > 1).sum())
        return average_logits(rows, batch.owners, len(texts))

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

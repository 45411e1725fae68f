"""Stage 3 for feature extraction: the last hidden states of each input, as transformers returns them."""

from __future__ import annotations

from typing import Any

import numpy as np

from coulisse.errors import InputError
from coulisse.pipelines import Pipeline
from coulisse.tokenizer import check_texts


class FeatureExtractionPipeline(Pipeline):
    task = "feature-extraction"
    head = None

    def postprocess(self, hidden: np.ndarray, *, return_tensors: bool = False):
        """Hidden states `(length, H)` -> `[1][length][H]` lists (or a `(1, length, H)` tensor)."""
        batch = np.asarray(hidden, dtype=np.float32)[None]
        if return_tensors:
            import torch

            return torch.from_numpy(batch)
        return batch.tolist()

    def __call__(self, inputs: Any, progress=None, **kwargs: Any):
        options = {**self.defaults, **kwargs}
        unknown = set(options) - {"return_tensors", "truncation"}
        if unknown:
            raise InputError(f"unknown option(s) {sorted(unknown)}; feature-extraction takes return_tensors, "
                             "truncation.")
        texts, single = check_texts(inputs)
        hidden = self.forward(self.preprocess(texts, truncation=options.get("truncation", True)), progress)
        results = [self.postprocess(h, return_tensors=options.get("return_tensors", False)) for h in hidden]
        return results[0] if single else results

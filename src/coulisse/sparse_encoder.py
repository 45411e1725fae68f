"""`SparseEncoder`: sentence-transformers' `SparseEncoder` (SPLADE) over coulisse's sparse-embedding pipeline,
for code written against sentence-transformers.

    >>> from coulisse import SparseEncoder
    >>> model = SparseEncoder("naver/splade-v3")
    >>> embeddings = model.encode(["Le chat dort.", "Un chat fait la sieste."])   # (2, vocab) sparse tensor
    >>> model.decode(embeddings[0], top_k=3)                                     # [('chat', 2.3), ...]
    >>> model.similarity(embeddings, embeddings)                                 # (2, 2) dot products

The same layer as `SentenceEncoder` (prompts, `max_seq_length`, batching, progress) over
`pipeline("sparse-embedding", model)`, whose stages read the folder's SpladePooling and run the masked-LM
head pooled in the model. What differs is sentence-transformers' sparse side: sparse COO tensors by default,
`max_active_dims` (the folder's by default), `decode`, `intersection`, `sparsity`, and the dot product
as the default similarity.
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from coulisse.errors import InputError
from coulisse.sentence import SentenceEncoder, _inputs, _texts
from coulisse.tasks.base import POST, positive_int

__all__ = ["SparseEncoder"]

log = logging.getLogger(__name__)


class SparseEncoder(SentenceEncoder):
    """A SPLADE model, read and run by coulisse: `SparseEncoder(model).encode(texts)` equals
    sentence-transformers' `SparseEncoder(model).encode(texts)`.

    `model` is a folder or a Hub id: a sentence-transformers SparseEncoder folder (its SpladePooling, prompts
    and `max_seq_length` are read), or a bare `*ForMaskedLM` checkpoint (pooled as SPLADE v2: max of
    log(1 + ReLU)). `max_active_dims` keeps the heaviest weights of each embedding; the other keywords are
    `SentenceEncoder`'s.
    """

    TASK = "sparse-embedding"
    PIPELINE_OPTIONS: dict[str, Any] = {}

    def __init__(self, model_name_or_path, *, max_active_dims: int | None = None, **kwargs: Any):
        positive_int("max_active_dims", max_active_dims, allow_none=True)
        if kwargs.get("truncate_dim") is not None:  # sentence-transformers' SparseEncoder takes none either
            raise TypeError("SparseEncoder() got an unexpected keyword argument 'truncate_dim'; a sparse embedding "
                            "keeps its heaviest weights instead: pass max_active_dims=.")
        super().__init__(model_name_or_path, **kwargs)
        # the folder's (config_sentence_transformers.json) where none is given, as in sentence-transformers
        self.max_active_dims = max_active_dims if max_active_dims is not None else self.pipeline.max_active_dims

    def get_embedding_dimension(self) -> int:
        """The length of `encode`'s vectors: the vocabulary's."""
        return self.pipeline.vocab_size

    get_sentence_embedding_dimension = get_embedding_dimension

    @property
    def similarity_fn_name(self) -> str:
        """How `similarity` scores: the folder's setting, else "dot" (sentence-transformers' for sparse)."""
        return self._similarity_fn_name or "dot"

    @similarity_fn_name.setter
    def similarity_fn_name(self, value: str) -> None:
        SentenceEncoder.similarity_fn_name.fset(self, value)

    def similarity(self, embeddings1: Any, embeddings2: Any) -> torch.Tensor:
        return super().similarity(_dense(embeddings1), _dense(embeddings2))

    def similarity_pairwise(self, embeddings1: Any, embeddings2: Any) -> torch.Tensor:
        return super().similarity_pairwise(_dense(embeddings1), _dense(embeddings2))

    def __repr__(self) -> str:
        return f"SparseEncoder(model={self.pipeline.checkpoint.name!r}, device={str(self.device)!r})"

    def encode(self, inputs: Any, prompt_name: str | None = None, prompt: str | None = None,  # type: ignore[override]
               batch_size: int = 32, show_progress_bar: bool | None = None, convert_to_tensor: bool = True,
               convert_to_sparse_tensor: bool = True, save_to_cpu: bool = False,
               device: str | torch.device | None = None, max_active_dims: int | None = None, pool: Any = None,
               chunk_size: int | None = None) -> Any:
        """Sparse embeddings of `inputs`, as sentence-transformers returns them: a string gives one `(vocab,)`
        tensor, a list an `(N, vocab)` tensor (a list of `(vocab,)` tensors with `convert_to_tensor=False`),
        sparse COO unless `convert_to_sparse_tensor=False`. The prompt is `prompt`, else `prompts[prompt_name]`,
        else the default prompt; `max_active_dims` (else the constructor's) keeps each embedding's heaviest
        weights. `save_to_cpu` is accepted: the results are on the CPU; a multi-process `pool` is refused."""
        texts, single = _texts(_inputs(inputs, None, pool))
        positive_int("batch_size", batch_size)
        max_active_dims = positive_int("max_active_dims", max_active_dims, allow_none=True) or self.max_active_dims
        # None keeps every weight, as in sentence-transformers (`model.max_active_dims = None` lifts the folder's
        # cap): the pipeline would read None as the folder's default
        max_active_dims = max_active_dims or self.pipeline.vocab_size
        self._check_device(device)
        prompt = self._resolve_prompt(prompt, prompt_name)
        if show_progress_bar is None:  # sentence-transformers' rule: shown when its logger says INFO or DEBUG
            show_progress_bar = log.getEffectiveLevel() in (logging.INFO, logging.DEBUG)
        rows: list[torch.Tensor] = []
        if texts:
            batch, outputs = self._run(texts, prompt, batch_size, show_progress_bar)
            pipe = self.pipeline
            options = pipe.options({"return_tensors": True, "top_k": max_active_dims})
            rows = [t.to_dense() for t in pipe.postprocess(outputs, batch, **pipe.stage_options(options, POST))]
        if convert_to_tensor:
            result: Any = torch.stack(rows) if rows else torch.tensor([])
            result = result.to_sparse() if convert_to_sparse_tensor else result
        else:
            result = [row.to_sparse() if convert_to_sparse_tensor else row for row in rows]
        return result[0] if single else result

    @staticmethod
    def intersection(embeddings_1: Any, embeddings_2: Any) -> torch.Tensor:
        """The vocabulary entries two embeddings share: their products where both weights are positive, a
        sparse tensor shaped as `embeddings_2` (`(vocab,)`, or `(N, vocab)`: one row per row); `decode` says
        which tokens a query and a document match on."""
        first, second = _dense(embeddings_1), _dense(embeddings_2)
        if not isinstance(first, torch.Tensor) or not isinstance(second, torch.Tensor):
            raise InputError("intersection takes tensors (what encode returns); pass those.")
        if first.dim() != 1 or second.dim() not in (1, 2):
            raise InputError(f"intersection takes one embedding (vocab,) and one or a batch of them; got shapes "
                             f"{tuple(first.shape)} and {tuple(second.shape)}.")
        if first.shape[-1] != second.shape[-1]:
            raise InputError(f"intersection of embeddings of {first.shape[-1]} and {second.shape[-1]} entries; "
                             "pass two embeddings of the same model.")
        product = first * second
        return torch.where(product > 0, product, torch.zeros((), dtype=product.dtype)).to_sparse()

    def decode(self, embeddings: torch.Tensor, top_k: int | None = None) -> list:
        """An embedding `(vocab,)` -> its non-zero weights as (token, weight), heaviest first (`top_k` of them);
        an `(N, vocab)` matrix -> one such list per row."""
        positive_int("top_k", top_k, allow_none=True)
        matrix = _dense(embeddings)
        rows = [matrix] if matrix.dim() == 1 else list(matrix)
        tokens, unknown = self.pipeline.tokens, self.tokenizer.unk_token  # a row no token names reads as unknown
        decoded = []
        for row in rows:
            nonzero = torch.nonzero(row).flatten().tolist()
            nonzero.sort(key=lambda i: (-float(row[i]), i))
            decoded.append([(tokens[i] if tokens[i] is not None else unknown, float(row[i]))
                            for i in nonzero[:top_k]])
        return decoded[0] if matrix.dim() == 1 else decoded

    @staticmethod
    def sparsity(embeddings: torch.Tensor) -> dict[str, float]:
        """The mean count of non-zero weights per embedding (`active_dims`) and the share of zeros
        (`sparsity_ratio`), as sentence-transformers reports them."""
        matrix = _dense(embeddings)
        matrix = matrix.unsqueeze(0) if matrix.dim() == 1 else matrix
        active = float((matrix != 0).sum(dim=1).float().mean()) if matrix.shape[0] else 0.0
        return {"active_dims": active, "sparsity_ratio": 1.0 - active / matrix.shape[1]}


def _dense(embeddings: Any) -> Any:
    """A sparse tensor (or a list of them) as dense ones; anything else as it is."""
    if isinstance(embeddings, torch.Tensor):
        return embeddings.to_dense() if embeddings.is_sparse else embeddings
    if isinstance(embeddings, list) and embeddings and all(isinstance(e, torch.Tensor) for e in embeddings):
        return torch.stack([_dense(e) for e in embeddings])
    return embeddings


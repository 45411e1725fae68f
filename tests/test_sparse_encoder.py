"""`coulisse.SparseEncoder` is sentence-transformers 6's `SparseEncoder` with the import swapped: the same
`encode` results (sparse COO by default, dense or lists on request, one text or many, `max_active_dims`,
prompts via `encode_query` / `encode_document`), `decode`, `similarity` (dot product) and `sparsity`.

Tolerances: weights within 1e-4 (the pipeline's oracle bound, tests/tasks/test_sparse_embedding.py); dot
products sum ~10^4 products of such weights, so they are compared relative to their size (1e-4).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from factory import max_delta
from task_factory import sparse_encoder_folder

from coulisse import SparseEncoder
from coulisse.errors import InputError

TEXTS = ["Le chat dort sur le canapé.", "Je déteste tellement ça !", "Un film long, lent, bavard. " * 8]


@pytest.fixture(scope="module")
def encoders(task_factory, tmp_path_factory):
    directory, theirs = sparse_encoder_folder(task_factory, "camembert", tmp_path_factory.mktemp("sparse"),
                                              prompts={"query": "requête : ", "document": "passage : "})
    return SparseEncoder(directory), theirs


def close(ours: torch.Tensor, theirs: torch.Tensor, tol: float = 1e-4) -> None:
    assert ours.shape == theirs.shape and ours.is_sparse == theirs.is_sparse
    assert max_delta("SparseEncoder vs sentence-transformers", ours.to_dense().numpy(),
                     theirs.to_dense().numpy()) <= tol


def test_encode_returns_what_sentence_transformers_returns(encoders):
    ours, theirs = encoders
    close(ours.encode(TEXTS), theirs.encode(TEXTS))  # (N, vocab) sparse COO
    close(ours.encode(TEXTS[0]), theirs.encode(TEXTS[0]))  # one text: (vocab,)
    close(ours.encode(TEXTS, convert_to_sparse_tensor=False), theirs.encode(TEXTS, convert_to_sparse_tensor=False))
    listed, expected = ours.encode(TEXTS, convert_to_tensor=False), theirs.encode(TEXTS, convert_to_tensor=False)
    assert isinstance(listed, list) and len(listed) == len(expected) == len(TEXTS)
    for a, b in zip(listed, expected, strict=True):
        close(a, b)
    assert ours.get_embedding_dimension() == theirs.get_embedding_dimension()
    assert ours.similarity_fn_name == "dot" == str(getattr(theirs.similarity_fn_name, "value",
                                                           theirs.similarity_fn_name))


def test_prompts_and_max_active_dims(encoders):
    ours, theirs = encoders
    close(ours.encode_query(TEXTS), theirs.encode_query(TEXTS))
    close(ours.encode_document(TEXTS), theirs.encode_document(TEXTS))
    # the prompts change the weights: the comparisons above did test them
    assert (ours.encode_query(TEXTS).to_dense() - ours.encode_document(TEXTS).to_dense()).abs().max() > 1e-2
    kept, expected = ours.encode(TEXTS, max_active_dims=7), theirs.encode(TEXTS, max_active_dims=7)
    close(kept, expected)
    assert (kept.to_dense() != 0).sum(dim=1).tolist() == [7] * len(TEXTS)
    with pytest.raises(InputError, match="max_active_dims"):
        ours.encode(TEXTS, max_active_dims=0)


def test_decode_similarity_and_sparsity(encoders):
    ours, theirs = encoders
    a, b = ours.encode(TEXTS), theirs.encode(TEXTS)
    for mine, expected in ((ours.decode(a[0], top_k=10), theirs.decode(b[0], top_k=10)),
                           *zip(ours.decode(a, top_k=5), theirs.decode(b, top_k=5), strict=True)):
        assert [token for token, _ in mine] == [token for token, _ in expected]
        assert np.allclose([w for _, w in mine], [w for _, w in expected], atol=1e-4)
    scores, expected = ours.similarity(a, a), theirs.similarity(b, b)
    assert torch.allclose(scores, expected, rtol=1e-4, atol=0)
    assert scores.shape == (len(TEXTS), len(TEXTS))
    mine, reference = ours.sparsity(a), theirs.sparsity(b)
    assert set(mine) == set(reference) == {"active_dims", "sparsity_ratio"}
    # a weight within 1e-7 of zero may be active in one and not the other: one per text at most
    assert abs(mine["active_dims"] - reference["active_dims"]) <= 1
    assert mine["sparsity_ratio"] == pytest.approx(reference["sparsity_ratio"], abs=1e-4)


def test_the_folders_max_active_dims_applies_everywhere(task_factory, tmp_path):
    """A SparseEncoder saved with max_active_dims keeps that many weights by default (sentence-transformers reads
    it from config_sentence_transformers.json): SparseEncoder, the pipeline, and so `coulisse embed` and the
    server, which run the pipeline. It was ignored before audit 41 (~1,000 active weights instead of 5)."""
    from coulisse import pipeline

    directory, theirs = sparse_encoder_folder(task_factory, "camembert", tmp_path, max_active_dims=5)
    ours = SparseEncoder(directory)
    assert ours.max_active_dims == theirs.max_active_dims == 5
    a, b = ours.encode(TEXTS), theirs.encode(TEXTS)
    close(a, b)
    assert (a.to_dense() != 0).sum(dim=1).tolist() == [5] * len(TEXTS)
    entries = pipeline("sparse-embedding", model=directory)(TEXTS)
    assert [len(e) for e in entries] == [5] * len(TEXTS)
    for got, row in zip(entries, b.to_dense(), strict=True):
        assert {e["index"] for e in got} == set(torch.nonzero(row).flatten().tolist())
    close(ours.encode(TEXTS, max_active_dims=9), theirs.encode(TEXTS, max_active_dims=9))  # a call's own wins
    assert SparseEncoder(directory, max_active_dims=3).max_active_dims == 3
    ours.max_active_dims = theirs.max_active_dims = None  # sentence-transformers' way to lift the folder's cap
    lifted, expected = ours.encode(TEXTS), theirs.encode(TEXTS)
    close(lifted, expected)
    assert min((lifted.to_dense() != 0).sum(dim=1).tolist()) > 5


def test_intersection_and_the_refused_truncate_dim(encoders):
    ours, theirs = encoders
    query, documents = ours.encode_query(TEXTS[0]), ours.encode_document(TEXTS)
    for first, second in ((query, documents), (query, documents[1])):
        shared, expected = ours.intersection(first, second), theirs.intersection(first, second)
        assert shared.is_sparse and shared.shape == expected.shape == second.shape
        assert torch.equal(shared.to_dense(), expected.to_dense())
    assert (ours.intersection(query, documents).to_dense() > 0).sum() > 0  # they share tokens: not all zeros
    with pytest.raises(InputError, match="one embedding"):
        ours.intersection(documents, query)
    with pytest.raises(TypeError, match="truncate_dim"):  # as sentence-transformers' SparseEncoder
        SparseEncoder(ours.pipeline.checkpoint.directory, truncate_dim=5)


def test_decode_names_a_row_no_token_names_unknown(encoders, monkeypatch):
    """A vocabulary row the tokenizer never gives (the real CamemBERT's id 3, audit 41) decodes as the unknown
    token, as sentence-transformers' convert_ids_to_tokens names it, not None. This tokenizer names every row:
    one is unnamed here."""
    ours, _ = encoders
    tokens = list(ours.pipeline.tokens)
    tokens[3] = None
    monkeypatch.setattr(ours.pipeline, "tokens", tokens)
    row = torch.zeros(ours.get_embedding_dimension())
    row[3], row[5] = 1.5, 0.5
    assert ours.decode(row) == [(ours.tokenizer.unk_token, 1.5), (tokens[5], 0.5)]

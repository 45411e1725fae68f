"""Fixtures of the tokenizer tests that compare coulisse's tokenizer with transformers' on the same folder."""

from __future__ import annotations

import pytest
from factory import tokenizer_and_transformers


@pytest.fixture(scope="module", params=["camembert", "minilm"])
def pair(request, camembert_dir, minilm_dir):
    """(coulisse's Tokenizer, transformers' AutoTokenizer) of CamemBERT's SentencePiece and MiniLM's WordPiece;
    shared by a module's tests: those that change a tokenizer make their own (`tokenizer_and_transformers`)."""
    return tokenizer_and_transformers(camembert_dir if request.param == "camembert" else minilm_dir,
                                      "camembert" if request.param == "camembert" else "bert")

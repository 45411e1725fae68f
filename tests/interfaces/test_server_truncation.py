"""TEI's `truncation_direction: "Left"` on every route that truncates (/predict, /rerank, /embed, /embed_all,
/similarity, /v1/embeddings): a long input keeps its end. Oracles: transformers' tokenizer with
`truncation_side="left"` and its model on those ids; and the pipeline's own `truncation_side="left"`.

Tolerance: served and pipeline rows come from the same packed kernels, batched differently (last-bit
differences, ~1e-7 on unit-scale values): 1e-5. transformers runs padded eager attention over up to 512
positions on a tiny random model: fp32 sums of 512 terms differ by ~512 * 6e-8 relative; 1e-4 is that with
margin on values of order 1.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("fastapi")
pytest.importorskip("httpx")
from starlette.testclient import TestClient  # noqa: E402

import coulisse  # noqa: E402
from coulisse.interfaces.server import create_app  # noqa: E402

SENTENCE = "le chat dort sur le canapé pendant que la pluie tombe doucement sur la ville endormie"
WORDS = SENTENCE.split(" ")
LONG = [" ".join(WORDS * 50), " ".join(reversed(WORDS * 45)) + " fin"]
QUERY = "un chat qui dort"
pytestmark = pytest.mark.slow  # 512-token inputs through transformers and the server: ~7 s each


def transformers_tokenizer(folder):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(folder), truncation_side="left")  # a copy of its own


def close(a, b, tol):
    np.testing.assert_allclose(np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64), rtol=0, atol=tol)


def test_predict_and_rerank_keep_the_end(factory):
    folder = factory.checkpoint("bert")
    pipe = coulisse.pipeline("text-classification", model=str(folder))
    limit = pipe.tokenizer.model_max_length
    tokenizer = transformers_tokenizer(folder)
    encoded = tokenizer(LONG, truncation=True, max_length=limit, padding=True, return_tensors="pt")
    assert encoded["input_ids"].shape[1] == limit  # the texts are long enough to be cut
    with torch.no_grad():
        logits = factory.reference("bert").model(**encoded).logits.numpy()
    with TestClient(create_app(pipe)) as c:
        left = c.post("/predict", json={"inputs": [[t] for t in LONG], "truncation_direction": "Left",
                                        "raw_scores": True}).json()
        right = c.post("/predict", json={"inputs": [[t] for t in LONG], "raw_scores": True}).json()
    for served, row in zip(left, logits, strict=True):
        close([s["score"] for s in served], [row[pipe.config.label2id[s["label"]]] for s in served], 1e-4)
    expected = pipe(LONG, truncation_side="left", top_k=None, function_to_apply="none")
    for served, exp in zip(left, expected, strict=True):
        assert [s["label"] for s in served] == [e["label"] for e in exp]
        close([s["score"] for s in served], [e["score"] for e in exp], 1e-5)
    assert not np.allclose([s["score"] for s in left[0]], [s["score"] for s in right[0]], atol=1e-4)

    folder = factory.checkpoint("bert", num_labels=1)
    cross = coulisse.pipeline("text-classification", model=str(folder))
    pairs = transformers_tokenizer(folder)([QUERY] * 2, LONG, truncation=True, max_length=limit, padding=True,
                                           return_tensors="pt")
    with torch.no_grad():
        scores = factory.reference("bert", num_labels=1).model(**pairs).logits[:, 0].numpy()
    with TestClient(create_app(cross)) as c:
        ranks = c.post("/rerank", json={"query": QUERY, "texts": LONG, "raw_scores": True,
                                        "truncation_direction": "left"}).json()
    close([r["score"] for r in sorted(ranks, key=lambda r: r["index"])], scores, 1e-4)


def test_embeddings_keep_the_end(factory):
    folder = factory.checkpoint("bert", base=True)
    served_pipe = coulisse.pipeline("feature-extraction", model=str(folder))
    limit = served_pipe.tokenizer.model_max_length
    encoded = transformers_tokenizer(folder)(LONG, truncation=True, max_length=limit, padding=True,
                                             return_tensors="pt")
    with torch.no_grad():
        hidden = factory.reference("bert").base(**encoded).last_hidden_state
    mask = encoded["attention_mask"][..., None].float()
    mean = (hidden * mask).sum(1) / mask.sum(1)  # no sentence-transformers folder: mean pooling, as TEI
    unit = torch.nn.functional.normalize(mean, dim=-1).numpy()
    pooled = coulisse.pipeline("feature-extraction", model=str(folder), pooling="auto", normalize=True)
    with TestClient(create_app(served_pipe)) as c:
        left = c.post("/embed", json={"inputs": LONG, "truncation_direction": "Left"}).json()
        right = c.post("/embed", json={"inputs": LONG}).json()
        openai = c.post("/v1/embeddings", json={"input": LONG, "truncation_direction": "Left"}).json()
        tokens = c.post("/embed_all", json={"inputs": LONG[0], "truncation_direction": "Left"}).json()
        similar = c.post("/similarity", json={"inputs": {"source_sentence": LONG[0], "sentences": LONG[1:]},
                                              "parameters": {"truncation_direction": "Left"}}).json()
    close(left, unit, 1e-4)
    close(left, pooled(LONG, truncation_side="left"), 1e-5)
    close([d["embedding"] for d in openai["data"]], left, 1e-5)
    close(tokens[0], served_pipe(LONG[0], truncation_side="left")[0], 1e-5)
    close(tokens[0], hidden[0][: int(encoded["attention_mask"][0].sum())].numpy(), 1e-4)
    close(similar, [float(np.dot(left[0], left[1]))], 1e-5)
    assert not np.allclose(left[0], right[0], atol=1e-3)  # the direction changed what the model read


def test_two_long_texts_of_a_pair(factory):
    """A pair of two 12,000-token texts: cut from the right, each keeps half of the limit, as the pipeline does;
    from the left, the tokenizer would pair every window of one with every window of the other (~2,200 of 512
    tokens, and quadratic in the length: two texts of 70,000 took 22 GB), so the server refuses it, a 422 that
    says what to do."""
    pipe = coulisse.pipeline("text-classification", model=str(factory.checkpoint("bert")))
    text = "film " * 12_000
    with TestClient(create_app(pipe)) as c:
        right = c.post("/predict", json={"inputs": [text, text], "raw_scores": True})
        left = c.post("/predict", json={"inputs": [text, text], "truncation_direction": "Left"})
    assert right.status_code == 200
    expected = pipe({"text": text, "text_pair": text}, top_k=None, function_to_apply="none")
    assert {s["label"]: s["score"] for s in right.json()} == pytest.approx(
        {e["label"]: e["score"] for e in expected}, abs=1e-5)
    assert left.status_code == 422
    assert left.json()["error_type"] == "Validation"
    assert "truncate from the right" in left.json()["error"]

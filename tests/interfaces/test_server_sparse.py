"""`coulisse serve` on a SPLADE model, as TEI serves one (`--pooling splade`, router/src/http/server.rs):
/embed_sparse answers each input's non-zero weights as [{"index", "value"}] by index, equal to
sentence-transformers' `SparseEncoder` and to the pipeline; `POST /` is /embed_sparse; /embed gives the
dense weights with `normalize: false` and refuses `normalize` with TEI's 424, as /embed_all and OpenAI's
/v1/embeddings (always normalized) do; /info says the pooling.

Tolerances: served vs pipeline, the batcher may group inputs differently (packed fp32 matmuls then differ in
the last bits, ~1e-7 relative of weights below 10): 1e-5. Served vs sentence-transformers: the pipeline's
oracle bound, 1e-4 (tests/tasks/test_sparse_embedding.py).
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("fastapi")
from starlette.testclient import TestClient  # noqa: E402
from task_factory import oracle, sparse_encoder_folder  # noqa: E402

from coulisse import pipeline  # noqa: E402
from coulisse.errors import InputError  # noqa: E402
from coulisse.interfaces.server import ServerSettings, create_app  # noqa: E402
from coulisse.interfaces.server.detect import detect_task  # noqa: E402
from coulisse.interfaces.server.service import pooling_of  # noqa: E402

TEXTS = ["Le chat dort sur le canapé.", "Un chat fait la sieste.", "J'ai adoré ce film 😍"]


@pytest.fixture(scope="module")
def splade(task_factory, tmp_path_factory):
    directory, encoder = sparse_encoder_folder(task_factory, "camembert", tmp_path_factory.mktemp("served"))
    return directory, encoder, pipeline("sparse-embedding", model=directory)


@pytest.fixture(scope="module")
def client(splade):
    with TestClient(create_app(splade[2], ServerSettings(model_id="tiny-splade"))) as c:
        yield c


def dense(entries: list[dict], size: int) -> np.ndarray:
    out = np.zeros(size, dtype=np.float32)
    for entry in entries:
        out[entry["index"]] = entry["value"]
    return out


def test_embed_sparse_equals_sentence_transformers_and_the_pipeline(client, splade):
    directory, encoder, pipe = splade
    r = client.post("/embed_sparse", json={"inputs": TEXTS})
    assert r.status_code == 200, r.text
    served = r.json()
    assert len(served) == len(TEXTS)
    for entries in served:
        assert [set(e) for e in entries] == [{"index", "value"}] * len(entries)
        indices = [e["index"] for e in entries]
        assert indices == sorted(indices) and all(e["value"] > 0 for e in entries)
    size = pipe.config.vocab_size
    ours = np.stack([dense(entries, size) for entries in served])
    expected = np.stack([t.to_dense().numpy() for t in pipe(TEXTS, return_tensors=True)])
    assert np.abs(ours - expected).max() <= 1e-5
    assert np.abs(ours - oracle(encoder, TEXTS)).max() <= 1e-4
    # one text is a list of one answer, as TEI's; token ids give the text's own weights
    single = client.post("/embed_sparse", json={"inputs": TEXTS[1]}).json()
    assert len(single) == 1 and np.abs(dense(single[0], size) - expected[1]).max() <= 1e-5
    ids = pipe.preprocess(TEXTS[1]).items[0].ids
    by_ids = client.post("/embed_sparse", json={"inputs": ids}).json()
    assert np.abs(dense(by_ids[0], size) - expected[1]).max() <= 1e-5
    # POST / is TEI's /embed_sparse for a SPLADE model
    root = client.post("/", json={"inputs": TEXTS})
    assert root.status_code == 200 and np.abs(np.stack([dense(e, size) for e in root.json()]) - ours).max() <= 1e-5


def test_embed_gives_the_dense_weights_and_refuses_what_tei_refuses(client, splade):
    pipe = splade[2]
    r = client.post("/embed", json={"inputs": TEXTS[:2], "normalize": False})
    assert r.status_code == 200, r.text
    vectors = np.array(r.json())
    assert vectors.shape == (2, pipe.config.vocab_size)
    expected = np.stack([t.to_dense().numpy() for t in pipe(TEXTS[:2], return_tensors=True)])
    assert np.abs(vectors - expected).max() <= 1e-5
    for path, body, message in [
            ("/embed", {"inputs": "Bof."}, "`normalize` is not available for SPLADE models"),
            ("/embed_all", {"inputs": "Bof."}, "`embed_all` is not available for SPLADE models"),
            ("/v1/embeddings", {"input": "Bof."}, "`normalize` is not available for SPLADE models")]:
        r = client.post(path, json=body)
        assert r.status_code == 424, (path, r.text)
        assert message in r.text, (path, r.text)
    for inputs in ("", [""], [], [[]]):  # TEI: 400 `Empty`, an empty id list included (not a 422)
        empty = client.post("/embed_sparse", json={"inputs": inputs})
        assert empty.status_code == 400 and empty.json()["error_type"] == "Empty", (inputs, empty.text)


def test_info_and_schema_name_the_splade_pooling(client):
    info = client.get("/info").json()
    assert info["model_type"] == {"embedding": {"pooling": "splade"}}
    assert info["task"] == "sparse-embedding"
    assert "/embed_sparse" in client.get("/openapi.json").json()["paths"]


def test_which_folders_serve_sparse_embeddings(splade, task_factory, minilm_dir):
    assert detect_task(splade[0]) == "sparse-embedding"  # modules.json naming SpladePooling
    assert detect_task(minilm_dir) == "feature-extraction"
    assert detect_task(task_factory.checkpoint("bert", "masked-lm")) == "fill-mask"  # splade only when asked
    assert pooling_of("splade", sparse=True) == pooling_of(None, sparse=True) == "splade"
    with pytest.raises(InputError, match="splade"):
        pooling_of("splade", sparse=False)
    with pytest.raises(InputError, match="splade"):
        pooling_of("mean", sparse=True)

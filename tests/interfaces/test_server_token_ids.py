"""Token-id inputs longer than `max_input_length`, with `truncate: true`: TEI cuts them as its tokenizer cuts a
text's tokens (core/src/tokenization.rs, `TruncationParams { direction, max_length: max_input_length }`), so
`truncation_direction: "Right"` (the default) keeps the first ids and "Left" the last ones. Every route that
takes token ids is checked: /embed, /embed_all, /v1/embeddings, /embed_sparse. Oracle: the same route given
the expected ids themselves (no cut needed), and transformers' model on those ids for /embed.

Tolerance: the served rows come from the same packed kernels for both requests: 1e-5; transformers' eager
attention on 16 tokens of a tiny random model: 1e-4 (tests/interfaces/test_server_truncation.py's bounds).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("fastapi")
pytest.importorskip("httpx")
from starlette.testclient import TestClient  # noqa: E402
from task_factory import sparse_encoder_folder  # noqa: E402

from coulisse import pipeline  # noqa: E402
from coulisse.interfaces.server import create_app  # noqa: E402

LIMIT = 16  # the checkpoint's model_max_length: the server's max_input_length
TEXT = ("le chat dort sur le canapé pendant que la pluie tombe doucement sur la ville endormie, "
        "puis le facteur sonne deux fois et le chien aboie très fort dans le jardin du voisin")
DIRECTIONS = [(None, "right"), ("Right", "right"), ("Left", "left")]


def close(a, b, tol: float = 1e-5) -> None:
    np.testing.assert_allclose(np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64), rtol=0, atol=tol)


def kept(ids: list[int], side: str, limit: int) -> list[int]:
    """TEI's cut: the first `limit` ids (Right), or the last (Left)."""
    return ids[:limit] if side == "right" else ids[-limit:]


def body(inputs, direction: str | None, **fields) -> dict:
    return {"inputs": inputs, **fields} | ({} if direction is None else {"truncation_direction": direction})


@pytest.fixture(scope="module")
def served(task_factory):
    """A BERT base checkpoint whose tokenizer says 16 tokens, served; its ids for a 40-token text."""
    import transformers

    folder = task_factory.checkpoint("bert", "base", model_max_length=LIMIT)
    ids = transformers.AutoTokenizer.from_pretrained(str(folder))(TEXT)["input_ids"]  # specials included
    assert len(ids) > 2 * LIMIT  # the first and the last 16 ids share nothing
    with TestClient(create_app(pipeline("feature-extraction", model=str(folder)))) as c:
        assert c.get("/info").json()["max_input_length"] == LIMIT
        yield c, ids, task_factory.model("bert", "base")


@pytest.mark.parametrize("direction, side", DIRECTIONS)
def test_embed_keeps_the_ids_tei_keeps(served, direction, side):
    c, ids, model = served
    got = c.post("/embed", json=body([ids, ids[::-1]], direction, truncate=True))
    assert got.status_code == 200, got.text
    expected = [kept(ids, side, LIMIT), kept(ids[::-1], side, LIMIT)]
    direct = c.post("/embed", json={"inputs": expected, "truncate": False}).json()
    close(got.json(), direct)
    with torch.no_grad():  # no sentence-transformers folder: mean pooling, normalized, as TEI
        hidden = model(input_ids=torch.tensor(expected)).last_hidden_state
    close(got.json(), torch.nn.functional.normalize(hidden.mean(1), dim=-1), 1e-4)
    other = "Left" if side == "right" else "Right"
    assert not np.allclose(got.json()[0], c.post("/embed", json=body(ids, other, truncate=True)).json()[0], atol=1e-3)


@pytest.mark.parametrize("direction, side", DIRECTIONS)
def test_embed_all_keeps_the_ids_tei_keeps(served, direction, side):
    c, ids, _ = served
    got = c.post("/embed_all", json=body(ids, direction, truncate=True))
    assert got.status_code == 200, got.text
    assert len(got.json()[0]) == LIMIT
    close(got.json(), c.post("/embed_all", json={"inputs": kept(ids, side, LIMIT), "truncate": False}).json())


@pytest.mark.parametrize("direction, side", DIRECTIONS)
def test_openai_embeddings_keep_the_ids_tei_keeps(served, direction, side):
    """/v1/embeddings truncates as the server's auto_truncate says (on by default), from `truncation_direction`."""
    c, ids, _ = served
    request = {"input": [ids]} | ({} if direction is None else {"truncation_direction": direction})
    got = c.post("/v1/embeddings", json=request)
    assert got.status_code == 200, got.text
    direct = c.post("/v1/embeddings", json={"input": [kept(ids, side, LIMIT)]}).json()
    close([d["embedding"] for d in got.json()["data"]], [d["embedding"] for d in direct["data"]])


@pytest.fixture(scope="module")
def sparse_served(task_factory, tmp_path_factory):
    """sentence-transformers' SPLADE folder over the tiny CamemBERT, served; its ids for a text past its limit."""
    import transformers

    directory, _ = sparse_encoder_folder(task_factory, "camembert", tmp_path_factory.mktemp("splade-ids"))
    with TestClient(create_app(pipeline("sparse-embedding", model=directory))) as c:
        limit = c.get("/info").json()["max_input_length"]
        ids = transformers.AutoTokenizer.from_pretrained(str(directory))(" ".join([TEXT] * (limit // 20 + 1)))
        assert len(ids["input_ids"]) > limit + 20
        yield c, ids["input_ids"], limit


@pytest.mark.slow
@pytest.mark.parametrize("direction, side", DIRECTIONS)
def test_embed_sparse_keeps_the_ids_tei_keeps(sparse_served, direction, side):
    c, ids, limit = sparse_served
    got = c.post("/embed_sparse", json=body(ids, direction, truncate=True))
    assert got.status_code == 200, got.text
    direct = c.post("/embed_sparse", json={"inputs": kept(ids, side, limit), "truncate": False}).json()
    assert [e["index"] for e in got.json()[0]] == [e["index"] for e in direct[0]]
    close([e["value"] for e in got.json()[0]], [e["value"] for e in direct[0]])

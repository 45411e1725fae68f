"""`SentenceEncoder.max_seq_length` raised past the folder's value, as sentence-transformers allows it.

all-MiniLM-L6-v2's sentence_bert_config.json says 256 tokens; its position table holds 512. Set to 512 on both
sides, a text of more than 256 tokens is read further: the embeddings equal sentence-transformers' `encode`,
and so do the token embeddings, every token up to 512 of them (≤ 1e-5, tests/test_sentence.py's bound: the
fp32 sums run in another order; measured 1.5e-7 and 3.2e-6 here). Past the position table the setter refuses
in one line, where sentence-transformers would fail inside the model.
"""

from __future__ import annotations

import numpy as np
import pytest

from coulisse import SentenceEncoder
from coulisse.errors import InputError

# ~330 tokens and ~660 tokens (cut at 512): both past the folder's 256.
LONG = ["Un film qui ne finit jamais, mais dont chaque scène compte vraiment. " * 20,
        "A review that goes on and on, with a twist at the very end: it was a dream. " * 30, "Court."]


@pytest.fixture(scope="module")
def pair(minilm_dir):
    st = pytest.importorskip("sentence_transformers")
    return SentenceEncoder(minilm_dir), st.SentenceTransformer(str(minilm_dir), device="cpu")


@pytest.mark.slow
def test_raised_to_512_equals_sentence_transformers(pair):
    ours, theirs = pair
    assert ours.max_seq_length == theirs.max_seq_length == 256
    lengths = [len(ours.tokenizer.encode_batch([t], truncation=False)[0].ids) for t in LONG]
    assert 256 < lengths[0] < 512 < lengths[1]
    at_256 = ours.encode(LONG)
    ours.max_seq_length = theirs.max_seq_length = 512
    try:
        assert ours.max_seq_length == ours.get_max_seq_length() == 512
        got, expected = ours.encode(LONG), theirs.encode(LONG)
        assert np.abs(got - expected).max() <= 1e-5
        assert np.abs(got[:2] - at_256[:2]).max() > 1e-2  # the raise changed what was read
        tokens = ours.encode(LONG, output_value="token_embeddings")
        assert [len(t) for t in tokens] == [lengths[0], 512, lengths[2]]
        reference = theirs.encode(LONG, output_value="token_embeddings")
        assert [tuple(t.shape) for t in reference] == [tuple(t.shape) for t in tokens]
        assert max(float((a - b).abs().max()) for a, b in zip(tokens, reference, strict=True)) <= 1e-5
    finally:
        ours.max_seq_length = theirs.max_seq_length = 256
    assert np.abs(ours.encode(LONG) - at_256).max() == 0  # lowered back: the same as before


def test_past_the_position_table_is_refused_in_one_line(minilm_dir):
    ours = SentenceEncoder(minilm_dir)
    with pytest.raises(InputError) as caught:
        ours.max_seq_length = 513
    assert str(caught.value) == ("max_seq_length=513; this model reads at most 512 tokens (its position "
                                 "embeddings); set a value up to 512.")
    assert ours.max_seq_length == 256  # unchanged
    ours.max_seq_length = 512
    assert ours.max_seq_length == 512


def test_a_folders_max_seq_length_above_the_tokenizers_limit_is_read(minilm_dir, tmp_path):
    """An older layout: sentence_bert_config.json says 40 tokens, tokenizer_config.json's model_max_length 20.
    sentence-transformers reads 40 (it hands max_seq_length to the tokenizer), and so did coulisse's vectors, but
    `max_seq_length` said 20 and refused 30 (audit 41); the server's /info said 20 and refused inputs the
    pipeline reads."""
    import json
    import shutil

    st = pytest.importorskip("sentence_transformers")
    from starlette.testclient import TestClient

    from coulisse import pipeline
    from coulisse.interfaces.server import create_app

    folder = tmp_path / "model"
    shutil.copytree(minilm_dir, folder)
    config = json.loads((folder / "tokenizer_config.json").read_text()) | {"model_max_length": 20}
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    (folder / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 40, "do_lower_case": False}))
    ours, theirs = SentenceEncoder(folder), st.SentenceTransformer(str(folder), device="cpu")
    assert ours.max_seq_length == theirs.max_seq_length == 40
    assert np.abs(ours.encode(LONG) - theirs.encode(LONG)).max() <= 1e-5
    ours.max_seq_length = theirs.max_seq_length = 30
    assert np.abs(ours.encode(LONG) - theirs.encode(LONG)).max() <= 1e-5
    with TestClient(create_app(pipeline("feature-extraction", model=folder, pooling="auto"))) as client:
        assert client.get("/info").json()["max_input_length"] == 40
        r = client.post("/embed", json={"inputs": LONG[0], "truncate": True})
        assert r.status_code == 200, r.text

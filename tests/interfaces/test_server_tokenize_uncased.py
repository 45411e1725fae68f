"""`POST /tokenize` on an uncased WordPiece model (the real all-MiniLM-L6-v2: `do_lower_case`, accents stripped).

What text-embeddings-inference answers (core/src/tokenization.rs `into_tokens`, called by the /tokenize handler
of router/src/http/server.rs): per token its id from the model's tokenizer, which lowercases and strips
accents; `start`/`stop`, the Rust tokenizer's offsets, which are UTF-8 byte offsets into the *original*
input (after the prompt); `text`, those bytes of the original input (`input.bytes().skip(start).take(stop -
start)`, decoded lossily), so the original case and accents; for a special token its own text and no offsets.
The oracle is transformers' tokenizer of the same folder (its ids, and its character offsets turned into
byte offsets), and its slow `BertTokenizer` for the ids, which reads `do_lower_case` from
tokenizer_config.json rather than tokenizer.json's normalizer.
"""

from __future__ import annotations

import shutil

import pytest

pytest.importorskip("fastapi")
transformers = pytest.importorskip("transformers")
from starlette.testclient import TestClient  # noqa: E402

import coulisse  # noqa: E402
from coulisse.interfaces.server import create_app  # noqa: E402

TEXTS = ["Héllo WORLD, Ça va ? Crème BRÛLÉE", "İstanbul ŞEHİR Straße naïve", "Cafe\u0301 ÉCOLE ﬁne Ωmega 😍"]


def tei_tokens(reference, text: str, add_special_tokens: bool = True) -> list[dict]:
    """TEI's `SimpleToken`s, built from transformers' encoding the way into_tokens builds them."""
    encoding = reference(text, return_offsets_mapping=True, return_special_tokens_mask=True,
                         add_special_tokens=add_special_tokens)
    raw = text.encode()
    tokens = []
    for token_id, (start, stop), special, piece in zip(
            encoding["input_ids"], encoding["offset_mapping"], encoding["special_tokens_mask"],
            reference.convert_ids_to_tokens(encoding["input_ids"]), strict=True):
        if special:
            tokens.append({"id": token_id, "text": piece, "special": True, "start": None, "stop": None})
        else:
            start, stop = len(text[:start].encode()), len(text[:stop].encode())
            tokens.append({"id": token_id, "text": raw[start:stop].decode("utf-8", "replace"), "special": False,
                           "start": start, "stop": stop})
    return tokens


@pytest.fixture(scope="module")
def vocab_only(minilm_dir, tmp_path_factory):
    """The same model without tokenizer.json: vocab.txt and tokenizer_config.json's do_lower_case only."""
    folder = tmp_path_factory.mktemp("minilm") / "model"
    shutil.copytree(minilm_dir, folder)
    (folder / "tokenizer.json").unlink()
    return folder


@pytest.mark.parametrize("layout", ["tokenizer.json", "vocab.txt"])
def test_tokenize_an_uncased_model_as_tei(minilm_dir, vocab_only, layout):
    folder = minilm_dir if layout == "tokenizer.json" else vocab_only
    reference = transformers.AutoTokenizer.from_pretrained(str(minilm_dir))
    slow = transformers.BertTokenizer.from_pretrained(str(minilm_dir))
    assert slow.do_lower_case and reference("ÉCOLE")["input_ids"] == reference("ecole")["input_ids"]
    pipe = coulisse.pipeline("feature-extraction", model=str(folder))
    with TestClient(create_app(pipe)) as client:
        served = client.post("/tokenize", json={"inputs": TEXTS}).json()
        plain = client.post("/tokenize", json={"inputs": TEXTS[0], "add_special_tokens": False}).json()
    for tokens, text in zip(served, TEXTS, strict=True):
        assert tokens == tei_tokens(reference, text)
        assert [t["id"] for t in tokens] == slow(text)["input_ids"]
    assert plain == [tei_tokens(reference, TEXTS[0], add_special_tokens=False)]
    # The ids are the lowercased, unaccented words'; the texts keep the input's case and accents.
    words = [(t["text"], reference.convert_ids_to_tokens(t["id"])) for t in served[0][1:3]]
    assert words == [("Héllo", "hello"), ("WORLD", "world")]

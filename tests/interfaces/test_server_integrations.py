"""Integrations built on the clients, against a real `coulisse serve` process: LangChain's `OpenAIEmbeddings`
(langchain-openai) and LlamaIndex's `TextEmbeddingsInference` (TEI's /embed) and `OpenAILikeEmbedding` (the
openai SDK), sync and async, with and without an API key. docs/server.md names them; this is the proof.

Each vector is compared with the Python pipeline's on the same text, to the tolerance of test_server_compat.py
(the batcher may cut batches differently: ~1e-7 relative in packed fp32 matmuls).
"""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

pytest.importorskip("httpx")
pytest.importorskip("uvicorn")
pytest.importorskip("openai")
langchain_openai = pytest.importorskip("langchain_openai")
tei_embeddings = pytest.importorskip("llama_index.embeddings.text_embeddings_inference")
openai_like = pytest.importorskip("llama_index.embeddings.openai_like")

from test_server_compat import TEXTS, Server, close  # noqa: E402

from coulisse import pipeline  # noqa: E402

pytestmark = pytest.mark.slow
NAME = "all-MiniLM-L6-v2"
KEY = "s3cret-key"


@pytest.fixture(scope="module")
def keyed_server(minilm_dir):
    server = Server(minilm_dir, "--served-model-name", NAME, "--api-key", KEY)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def expected(minilm_dir):
    embedder = pipeline("feature-extraction", model=str(minilm_dir), pooling="auto", normalize=True)
    return {text: np.asarray(embedder(text)) for text in [*TEXTS, "chat"]}


def test_langchain_openai_embeddings(keyed_server, expected):
    # Non-OpenAI servers take text: LangChain's own advice for them is check_embedding_ctx_length=False (else it
    # sends tiktoken's ids, which are not this model's; see the next test).
    embeddings = langchain_openai.OpenAIEmbeddings(base_url=f"{keyed_server.base}/v1", api_key=KEY, model=NAME,
                                                   check_embedding_ctx_length=False, max_retries=0)
    close(embeddings.embed_documents(TEXTS), [expected[t] for t in TEXTS])
    close(embeddings.embed_query("chat"), expected["chat"])
    close(asyncio.run(embeddings.aembed_documents(TEXTS[:2])), [expected[t] for t in TEXTS[:2]])
    wrong_key = langchain_openai.OpenAIEmbeddings(base_url=f"{keyed_server.base}/v1", api_key="nope", model=NAME,
                                                  check_embedding_ctx_length=False, max_retries=0)
    import openai

    with pytest.raises(openai.AuthenticationError):
        wrong_key.embed_query("chat")


def test_token_ids_outside_the_vocabulary_name_the_tokenizer_mix_up(keyed_server):
    # What LangChain sends by default: tiktoken's cl100k ids (up to ~100,000), not this model's 30,522. The 422 says
    # what it probably is and the way out (it cannot catch ids that happen to fall inside the vocabulary: TEI
    # embeds those as this model's ids too).
    import openai

    sdk = openai.OpenAI(base_url=f"{keyed_server.base}/v1", api_key=KEY, max_retries=0)
    with pytest.raises(openai.UnprocessableEntityError, match="outside this model's vocabulary") as refused:
        sdk.embeddings.create(model=NAME, input=[[9906, 1917, 50256]])
    assert "check_embedding_ctx_length=False" in str(refused.value)


def test_llamaindex_tei_and_openai_like(keyed_server, expected):
    tei = tei_embeddings.TextEmbeddingsInference(model_name=NAME, base_url=keyed_server.base, auth_token=KEY,
                                                 timeout=60, embed_batch_size=3)
    close(tei.get_text_embedding_batch(TEXTS), [expected[t] for t in TEXTS])  # two requests: 3 + 1
    close(tei.get_query_embedding("chat"), expected["chat"])
    close(asyncio.run(tei.aget_text_embedding_batch(TEXTS[:2])), [expected[t] for t in TEXTS[:2]])
    like = openai_like.OpenAILikeEmbedding(model_name=NAME, api_base=f"{keyed_server.base}/v1", api_key=KEY,
                                           max_retries=0)
    close(like.get_text_embedding_batch(TEXTS), [expected[t] for t in TEXTS])
    close(asyncio.run(like.aget_query_embedding("chat")), expected["chat"])

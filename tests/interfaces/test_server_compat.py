"""Clients nobody here wrote, against a real `coulisse serve` process on 127.0.0.1: huggingface_hub's
InferenceClient (every task method), the openai SDK (float and base64), plain HTTP for TEI's /rerank,
/tokenize, /decode, /embed_all. Every served number equals the Python pipeline's on the same inputs.

Tolerance: the server batches inputs across one request exactly as the pipeline call below does, but the
batcher may cut batches differently; packed fp32 matmuls then differ in the last bits (~1e-7 relative), so
1e-5 absolute on unit-scale values is a bound with two orders of margin, not a tuned number.
"""

from __future__ import annotations

import base64
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

httpx = pytest.importorskip("httpx")
pytest.importorskip("uvicorn")
huggingface_hub = pytest.importorskip("huggingface_hub")
openai = pytest.importorskip("openai")

from coulisse import pipeline  # noqa: E402

pytestmark = pytest.mark.slow
SERVE = [sys.executable, "-c", "from coulisse.interfaces.cli import main; main()", "serve"]
TOL = 1e-5
TEXTS = ["Le chat dort sur le canapé.", "Un chat fait la sieste.", "La bourse a chuté de 3 % hier soir.",
         "J'ai adoré ce film, les acteurs sont formidables 😍"]
QA_FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "qa" / "bert"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`coulisse serve --model MODEL ...` in a subprocess, ready once /health answers 200."""

    def __init__(self, model: Path, *args: str):
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("COULISSE_")}
        env["HF_HUB_OFFLINE"] = "1"
        self.proc = subprocess.Popen([*SERVE, "--model", str(model), "--port", str(port), *args], env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        # Read as it comes (the access log writes a line per request: an unread pipe would fill and stop it).
        self.lines: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        self.base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"the server exited with {self.proc.returncode}:\n{self.stop()}")
            try:
                if httpx.get(f"{self.base}/health", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.1)
        self.stop()
        pytest.fail("the server did not answer /health within 120 s")

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line)

    def stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.reader.join(timeout=10)
        return "".join(self.lines)


@pytest.fixture
def serve():
    started: list[Server] = []

    def start(model, *args):
        started.append(Server(model, *args))
        return started[-1]

    yield start
    for server in started:
        server.stop()


def client(server: Server):
    from huggingface_hub import InferenceClient

    return InferenceClient(base_url=server.base, timeout=60)


def close(a, b, tol: float = TOL) -> None:
    np.testing.assert_allclose(np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64), rtol=0, atol=tol)


def same_labels(served: list, expected: list) -> None:
    assert [r["label"] for r in served] == [r["label"] for r in expected]
    close([r["score"] for r in served], [r["score"] for r in expected])


# -- embeddings: the real all-MiniLM-L6-v2 ---------------------------------------------------------------


@pytest.fixture(scope="module")
def minilm_server(minilm_dir):
    server = Server(minilm_dir, "--served-model-name", "all-MiniLM-L6-v2")  # task read from modules.json
    yield server
    server.stop()


@pytest.fixture(scope="module")
def embedder(minilm_dir):
    return pipeline("feature-extraction", model=str(minilm_dir), pooling="auto", normalize=True)


def test_info_reads_the_task_from_the_checkpoint(minilm_server):
    info = httpx.get(f"{minilm_server.base}/info").json()
    assert info["task"] == "feature-extraction" and info["model_type"] == {"embedding": {"pooling": "mean"}}
    assert info["served_model_name"] == "all-MiniLM-L6-v2"
    assert httpx.get(f"{minilm_server.base}/").status_code == 200
    assert httpx.get(f"{minilm_server.base}/ping").status_code == 200


def test_inference_client_feature_extraction_and_similarity(minilm_server, embedder):
    hf = client(minilm_server)
    vector = hf.feature_extraction(TEXTS[0])
    assert vector.shape == (1, 384)
    close(vector[0], embedder(TEXTS[0]))
    # `normalize=False` gives the raw pooled vector; `truncate` and `prompt_name` pass through.
    raw = hf.feature_extraction(TEXTS[1], normalize=False, truncate=True)
    close(raw[0], pipeline("feature-extraction", model=str(embedder.checkpoint.directory), pooling="auto",
                           normalize=False)(TEXTS[1]))
    scores = hf.sentence_similarity(TEXTS[0], TEXTS[1:])
    vectors = np.asarray(embedder(TEXTS), dtype=np.float64)
    close(scores, vectors[1:] @ vectors[0])  # unit vectors: cosine is the dot product
    assert scores[0] > scores[1]  # two sleeping cats are closer than the stock market
    # The client sends `encoding_format` at the top level (its hf-inference provider); TEI drops it and
    # answers floats, which is what the client parses.
    for encoding_format in ("float", "base64"):
        close(hf.feature_extraction(TEXTS[0], encoding_format=encoding_format)[0], embedder(TEXTS[0]))


def test_openai_sdk_float_and_base64(minilm_server, embedder):
    sdk = openai.OpenAI(base_url=f"{minilm_server.base}/v1", api_key="unused", max_retries=0)
    expected = np.asarray(embedder(TEXTS))
    floats = sdk.embeddings.create(model="all-MiniLM-L6-v2", input=TEXTS, encoding_format="float")
    assert [d.index for d in floats.data] == list(range(len(TEXTS))) and floats.model == "all-MiniLM-L6-v2"
    close([d.embedding for d in floats.data], expected)
    tokens = sum(len(item.ids) for item in embedder.preprocess(TEXTS, pooling="auto"))
    assert floats.usage.prompt_tokens == floats.usage.total_tokens == tokens
    # The SDK's default asks for base64 and decodes it itself; ask explicitly too and decode by hand.
    default = sdk.embeddings.create(model="all-MiniLM-L6-v2", input=TEXTS)
    close([d.embedding for d in default.data], expected)
    raw = httpx.post(f"{minilm_server.base}/v1/embeddings",
                     json={"input": TEXTS[0], "encoding_format": "base64"}).json()
    decoded = np.frombuffer(base64.b64decode(raw["data"][0]["embedding"]), dtype="<f4")
    close(decoded, expected[0])
    # dimensions: the first 64 values, renormalized.
    cut = sdk.embeddings.create(model="all-MiniLM-L6-v2", input=TEXTS[:2], dimensions=64)
    head = expected[:2, :64] / np.linalg.norm(expected[:2, :64], axis=1, keepdims=True)
    close([d.embedding for d in cut.data], head)
    # token ids, as the SDK sends them (the model's own ids, specials included)
    ids = [list(item.ids) for item in embedder.preprocess(TEXTS[:2], pooling="auto")]
    by_ids = sdk.embeddings.create(model="all-MiniLM-L6-v2", input=ids, encoding_format="float")
    close([d.embedding for d in by_ids.data], expected[:2])
    models = sdk.models.list()
    assert [m.id for m in models.data] == ["all-MiniLM-L6-v2"]
    assert sdk.models.retrieve("all-MiniLM-L6-v2").id == "all-MiniLM-L6-v2"
    with pytest.raises(openai.NotFoundError, match="not served here"):
        sdk.models.retrieve("text-embedding-3-small")
    # LangChain's OpenAIEmbeddings sends its own default name: the 404 says how to serve under it.
    with pytest.raises(openai.NotFoundError, match="not served here.*--served-model-name 'text-embedding-ada-002'"):
        sdk.embeddings.create(model="text-embedding-ada-002", input="x")
    # TEI's statuses, as the SDK types them: an empty text 400, more inputs than the server takes 422.
    with pytest.raises(openai.BadRequestError, match="`input` cannot be empty: input.1. is an empty text"):
        sdk.embeddings.create(model="all-MiniLM-L6-v2", input=["x", ""])
    with pytest.raises(openai.BadRequestError, match="`input` cannot be empty"):  # OpenAI's field, not TEI's
        sdk.embeddings.create(model="all-MiniLM-L6-v2", input=[])
    # An empty token id list, alone in a batch or beside others: TEI's 400 `Empty`, not a malformed body.
    for batch, where in (([[]], 0), ([ids[0], []], 1)):
        with pytest.raises(openai.BadRequestError, match=f"input.{where}. is an empty list of token ids") as empty:
            sdk.embeddings.create(model="all-MiniLM-L6-v2", input=batch)
        assert empty.value.type == "Empty"
    with pytest.raises(openai.UnprocessableEntityError, match="maximum allowed batch size") as refused:
        sdk.embeddings.create(model="all-MiniLM-L6-v2", input=["x"] * 33)
    assert refused.value.type == "Validation"  # TEI's OpenAI errors carry its ErrorType as `type`


def test_tei_embed_all_tokenize_decode(minilm_server, embedder, minilm_dir):
    import transformers

    hidden = pipeline("feature-extraction", model=str(minilm_dir))
    served = httpx.post(f"{minilm_server.base}/embed_all", json={"inputs": TEXTS[:2]}).json()
    for tokens, text in zip(served, TEXTS[:2], strict=True):
        close(tokens, np.asarray(hidden(text))[0])
    # /tokenize against transformers' tokenizer: ids, tokens, UTF-8 byte offsets (TEI's), specials.
    reference = transformers.AutoTokenizer.from_pretrained(str(minilm_dir))
    text = TEXTS[3]
    tokens = httpx.post(f"{minilm_server.base}/tokenize", json={"inputs": text}).json()[0]
    encoding = reference(text, return_offsets_mapping=True, return_special_tokens_mask=True)
    assert [t["id"] for t in tokens] == encoding["input_ids"]
    for token, (start, stop), special, piece in zip(tokens, encoding["offset_mapping"],
                                                    encoding["special_tokens_mask"],
                                                    reference.convert_ids_to_tokens(encoding["input_ids"]),
                                                    strict=True):
        assert token["special"] == bool(special)
        if special:
            assert (token["text"], token["start"], token["stop"]) == (piece, None, None)
        else:
            assert token["text"] == text[start:stop]
            assert (token["start"], token["stop"]) == (len(text[:start].encode()), len(text[:stop].encode()))
    plain = httpx.post(f"{minilm_server.base}/tokenize", json={"inputs": [text], "add_special_tokens": False})
    assert [t["id"] for t in plain.json()[0]] == reference(text, add_special_tokens=False)["input_ids"]
    ids = encoding["input_ids"]
    decoded = httpx.post(f"{minilm_server.base}/decode", json={"ids": [ids, ids[:4]]}).json()
    assert decoded == [reference.decode(ids, skip_special_tokens=True),
                       reference.decode(ids[:4], skip_special_tokens=True)]
    keep = httpx.post(f"{minilm_server.base}/decode", json={"ids": ids, "skip_special_tokens": False}).json()
    assert keep == [reference.decode(ids, skip_special_tokens=False)]


def test_refusals_name_the_field(minilm_server):
    base = minilm_server.base
    for body, field in (({"inputs": "x", "truncation_direction": "Middle"}, "truncation_direction"),
                        ({"inputs": "x", "prompt_name": "query"}, "prompt_name"),
                        ({"inputs": "x", "dimensions": 385}, "dimensions"),
                        ({"inputs": "x", "pooling": "cls"}, "pooling"),
                        ({"inputs": [10**6]}, "token id")):
        r = httpx.post(f"{base}/embed", json=body)
        assert r.status_code == 422 and field in r.json()["error"], (body, r.text)
    r = httpx.post(f"{base}/rerank", json={"query": "q", "texts": ["a"]})
    assert r.status_code == 424 and "not a re-ranker" in r.json()["error"]
    r = httpx.post(f"{base}/embed_sparse", json={"inputs": "x"})  # TEI's answer for a model without SPLADE
    assert r.status_code == 424 and "SPLADE" in r.json()["error"] and r.json()["error_type"] == "Backend"
    # A union's failure reads as the forms the field takes, not pydantic's internal type names.
    for route, body in (("/v1/embeddings", {"input": [[1.5]]}), ("/decode", {"ids": [["5"]]}),
                        ("/tokenize", {"inputs": [1]}), ("/embed", {"inputs": [1.5]})):
        r = httpx.post(f"{base}{route}", json=body)
        message = str(r.json())
        assert r.status_code == 422 and "must be a" in message, (route, message)
        assert "function-before" not in message and "list[" not in message, (route, message)


def test_pooling_splade_serves_a_masked_lm_checkpoint_as_tei_does(serve, task_factory):
    """TEI's `--pooling splade` on a bare `*ForMaskedLM` folder: the sparse-embedding task, /embed_sparse's
    weights equal to the pipeline's (tests/interfaces/test_server_sparse.py checks them against
    sentence-transformers)."""
    directory = task_factory.checkpoint("bert", "masked-lm")
    server = serve(directory, "--pooling", "splade")
    info = httpx.get(f"{server.base}/info").json()
    assert info["task"] == "sparse-embedding" and info["model_type"] == {"embedding": {"pooling": "splade"}}
    served = httpx.post(f"{server.base}/embed_sparse", json={"inputs": TEXTS}).json()
    expected = pipeline("sparse-embedding", model=directory)(TEXTS, return_tensors=True)
    for entries, weights in zip(served, expected, strict=True):
        indices = [e["index"] for e in entries]
        assert indices == sorted(indices) and len(indices) > 100
        # dense, not index by index: a weight within 1e-7 of zero may be in one answer and not the other
        dense = torch.zeros(weights.shape[0])
        dense[indices] = torch.tensor([e["value"] for e in entries])
        close(dense, weights.to_dense())


def test_all_mpnet_layout_serves_sentence_transformers_embeddings(serve, task_factory, tmp_path):
    """all-mpnet-base-v2's folder (tests/task_factory.py `all_mpnet_folder`, on a tiny MPNet): the task comes from
    modules.json, not config.json's MPNetForMaskedLM, as TEI serves it; InferenceClient and /embed get
    sentence-transformers' vectors, a text past max_seq_length 384 cut there."""
    from sentence_transformers import SentenceTransformer
    from task_factory import all_mpnet_folder

    directory = all_mpnet_folder(task_factory, tmp_path / "all-mpnet-base-v2")
    texts = [TEXTS[0], TEXTS[1], "A review that goes on and on, and then some more. " * 60]
    expected = SentenceTransformer(str(directory), device="cpu").encode(texts)
    server = serve(directory)
    assert httpx.get(f"{server.base}/info").json()["task"] == "feature-extraction"
    close(np.stack([client(server).feature_extraction(text, truncate=True)[0] for text in texts]), expected)
    close(httpx.post(f"{server.base}/embed", json={"inputs": texts, "truncate": True}).json(), expected)


def test_tei_response_headers(minilm_server):
    text = "Le chat dort sur le canapé."
    r = httpx.post(f"{minilm_server.base}/embed", json={"inputs": [text, "x"]})
    assert r.status_code == 200
    assert r.headers["x-compute-characters"] == str(len(text) + 1)
    assert int(r.headers["x-compute-tokens"]) > 2 and r.headers["x-compute-type"] == "cpu"
    for name in ("x-compute-time", "x-total-time", "x-tokenization-time", "x-queue-time", "x-inference-time"):
        assert int(r.headers[name]) >= 0


def test_prompt_name_from_config_sentence_transformers(tmp_path, minilm_dir, serve, embedder, monkeypatch):
    """TEI reads only `prompts` from config_sentence_transformers.json: the prompt of a request that names none
    is --default-prompt-name's (here from TEI's DEFAULT_PROMPT_NAME), never the file's default_prompt_name."""
    folder = tmp_path / "prompted"
    shutil.copytree(minilm_dir, folder)
    (folder / "config_sentence_transformers.json").write_text(
        '{"prompts": {"query": "query: ", "passage": "passage: "}, "default_prompt_name": "passage"}',
        encoding="utf-8")
    monkeypatch.setenv("DEFAULT_PROMPT_NAME", "query")
    server = serve(folder)
    served = httpx.post(f"{server.base}/embed", json={"inputs": TEXTS[:2], "prompt_name": "passage"}).json()
    close(served, embedder(["passage: " + t for t in TEXTS[:2]]))
    default = httpx.post(f"{server.base}/embed", json={"inputs": TEXTS[0]}).json()
    close(default[0], embedder("query: " + TEXTS[0]))
    sdk = openai.OpenAI(base_url=f"{server.base}/v1", api_key="-")
    close(sdk.embeddings.create(model=str(folder), input=TEXTS[0]).data[0].embedding, default[0])
    # Served equals in-process with the prompt named (the pipeline, as sentence-transformers' encode, would
    # apply the file's default_prompt_name without one).
    prompted = pipeline("feature-extraction", model=str(folder), pooling="auto", normalize=True)
    close(default[0], prompted(TEXTS[0], prompt_name="query"))
    close(served, prompted(TEXTS[:2], prompt_name="passage"))
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(str(folder), device="cpu")
    close(served, st.encode(TEXTS[:2], prompt_name="passage", normalize_embeddings=True))


# -- classifiers, reranker and the other heads: small random checkpoints ------------------------------------


@pytest.fixture(scope="module")
def camembert_server(tf_camembert_dir):
    """`coulisse serve` on the TF CamemBERT classifier, the task read from config.json's architectures; shared
    by the classification and /docs tests (each only reads from it)."""
    server = Server(tf_camembert_dir)
    yield server
    server.stop()


def test_text_classification_and_tei_pairs(tf_camembert_dir, camembert_server):
    server = camembert_server
    classifier = pipeline("text-classification", model=str(tf_camembert_dir))
    hf = client(server)
    same_labels([r.__dict__ for r in hf.text_classification(TEXTS[3])], classifier(TEXTS[3], top_k=None))
    top = hf.text_classification(TEXTS[0], top_k=1, function_to_apply="none")
    same_labels([r.__dict__ for r in top], classifier(TEXTS[0], top_k=1, function_to_apply="none"))
    # TEI's /predict: ["a", "b"] is one text pair; [["a"], ["b", "c"]] a batch.
    pair = httpx.post(f"{server.base}/predict", json={"inputs": TEXTS[:2]}).json()
    same_labels(pair, classifier({"text": TEXTS[0], "text_pair": TEXTS[1]}, top_k=None))
    batch = httpx.post(f"{server.base}/", json={"inputs": [[TEXTS[2]], TEXTS[:2]]}).json()
    same_labels(batch[0], classifier(TEXTS[2], top_k=None))
    same_labels(batch[1], pair)
    three = httpx.post(f"{server.base}/predict", json={"inputs": TEXTS[:3]})
    assert three.status_code == 422 and "batch of [text]" in three.json()["error"]


def test_rerank_with_a_one_output_cross_encoder(factory, serve):
    folder = factory.checkpoint("bert", num_labels=1)
    server = serve(folder, "--task", "text-classification")
    reference = factory.reference("bert", num_labels=1).model
    tokenizer = factory.hf_tokenizer("bert")
    query = "un chat qui dort"
    with torch.no_grad():
        logits = reference(**tokenizer([query] * 3, TEXTS[:3], return_tensors="pt", padding=True)).logits[:, 0]
    ranks = httpx.post(f"{server.base}/rerank", json={"query": query, "texts": TEXTS[:3], "return_text": True})
    assert ranks.status_code == 200, ranks.text
    ranks = ranks.json()
    order = sorted(range(3), key=lambda i: float(logits[i]))[::-1]
    assert [r["index"] for r in ranks] == order and [r["text"] for r in ranks] == [TEXTS[i] for i in order]
    close([r["score"] for r in ranks], torch.sigmoid(logits)[order].numpy(), 1e-5)
    raw = httpx.post(f"{server.base}/", json={"query": query, "texts": TEXTS[:3], "raw_scores": True}).json()
    close(sorted(r["score"] for r in raw), sorted(logits.numpy()), 1e-5)
    assert httpx.get(f"{server.base}/info").json()["model_type"]["reranker"]["id2label"] == {"0": "étiquette 0"}


def test_token_classification(task_factory, serve):
    folder = task_factory.checkpoint("bert", "token-classification")
    server = serve(folder)
    ner = pipeline("token-classification", model=str(folder))
    hf = client(server)
    for kwargs in ({}, {"aggregation_strategy": "simple"}):
        served = [e.__dict__ for e in hf.token_classification(TEXTS[3], **kwargs)]
        expected = ner(TEXTS[3], **kwargs)
        assert len(served) == len(expected) > 0
        for s, e in zip(served, expected, strict=True):
            assert {k: s[k] for k in e if k != "score"} == {k: v for k, v in e.items() if k != "score"}
            close(s["score"], e["score"])


def test_fill_mask(task_factory, serve):
    folder = task_factory.checkpoint("bert", "masked-lm")
    server = serve(folder)
    fill = pipeline("fill-mask", model=str(folder))
    text = "Le chat [MASK] sur le canapé."
    served = [p.__dict__ for p in client(server).fill_mask(text, top_k=3)]
    expected = fill(text, top_k=3)
    assert [p["token"] for p in served] == [p["token"] for p in expected]
    assert [p["sequence"] for p in served] == [p["sequence"] for p in expected]
    close([p["score"] for p in served], [p["score"] for p in expected])


def test_question_answering(minilm_dir, tmp_path, serve):
    folder = tmp_path / "qa"
    shutil.copytree(QA_FIXTURE, folder)
    shutil.copy(minilm_dir / "vocab.txt", folder / "vocab.txt")
    server = serve(folder)
    qa = pipeline("question-answering", model=str(folder))
    context = "La tour Eiffel mesure 330 mètres. Elle a été construite par Gustave Eiffel en 1889."
    question = "Qui a construit la tour ?"
    hf = client(server)
    served = hf.question_answering(question=question, context=context)
    expected = qa(question=question, context=context)
    assert (served.answer, served.start, served.end) == (expected["answer"], expected["start"], expected["end"])
    close(served.score, expected["score"])
    served = hf.question_answering(question=question, context=context, top_k=3)
    expected = qa(question=question, context=context, top_k=3)
    assert [a.answer for a in served] == [a["answer"] for a in expected]


def test_zero_shot(nli_dir, serve):
    server = serve(nli_dir, "--max-client-batch-size", "4")  # an NLI head: served as zero-shot classification
    assert httpx.get(f"{server.base}/info").json()["task"] == "zero-shot-classification"
    zero_shot = pipeline("zero-shot-classification", model=str(nli_dir))
    candidates = ["sport", "politique", "cinéma"]
    for multi_label in (False, True):
        served = client(server).zero_shot_classification(TEXTS[3], candidates, multi_label=multi_label)
        expected = zero_shot(TEXTS[3], candidate_labels=candidates, multi_label=multi_label)
        assert [r.label for r in served] == expected["labels"]
        close([r.score for r in served], expected["scores"])
    # Each label is one (text, hypothesis) input of the model: more than --max-client-batch-size is TEI's 422.
    labels = [f"label {i}" for i in range(4)]
    body = {"inputs": TEXTS[3], "parameters": {"candidate_labels": labels}}
    assert httpx.post(f"{server.base}/", json=body, timeout=60).status_code == 200
    body["parameters"]["candidate_labels"].append("one too many")
    r = httpx.post(f"{server.base}/", json=body, timeout=60)
    assert r.status_code == 422 and r.json()["error_type"] == "Validation"  # TEI's type for its batch_size error
    assert "candidate labels (one input each) 5 > maximum allowed batch size 4" in r.json()["error"]
    schema = httpx.get(f"{server.base}/openapi.json").json()["components"]["schemas"]
    assert schema["ZeroShotParameters"]["properties"]["candidate_labels"]["maxItems"] == 4  # generated clients see it


# -- /docs offline: headless Chromium, every host but 127.0.0.1 unreachable ----------------------------------

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"


def test_docs_render_offline_in_chromium(camembert_server):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("Debian's chromium is not installed")
    server = camembert_server
    page = httpx.get(f"{server.base}/docs").text
    assert "cdn" not in page.lower() and "/docs-assets/swagger-ui-bundle.js" in page
    ARTIFACTS.mkdir(exist_ok=True)
    common = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=5000",
              "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1", "--window-size=1280,2400"]
    dom = subprocess.run([*common, "--dump-dom", f"{server.base}/docs"], capture_output=True, text=True,
                         timeout=120).stdout
    # Swagger UI built the route list from /openapi.json: one opblock per route, its path in the DOM.
    for path in ("/predict", "/tokenize", "/decode", "/info", "/invocations"):
        assert f'data-path="{path}"' in dom, path
    subprocess.run([*common, f"--screenshot={ARTIFACTS / 'server-docs.png'}", f"{server.base}/docs"],
                   capture_output=True, timeout=120)
    assert (ARTIFACTS / "server-docs.png").stat().st_size > 10_000

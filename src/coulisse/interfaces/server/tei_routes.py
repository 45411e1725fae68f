"""The rest of text-embeddings-inference's routes, with TEI's shapes (router/src/http/server.rs):

    POST /embed_all   token embeddings            POST /tokenize   tokens, ids, byte offsets
    POST /embed_sparse  SPLADE's sparse weights
    POST /rerank      cross-encoder ranks         POST /decode     ids -> text
    POST /similarity  cosine of sentence pairs

`POST /` and `/invocations` (the served task) are inference_api.py's; GET /, /ping (health) app.py's.

Each route is an adapter: the numbers come from the pipeline's stages through `Service`.
"""

from functools import partial

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import Response

from coulisse.interfaces.server.bounds import CHARS_PER_TOKEN, check_characters
from coulisse.interfaces.server.compat_schemas import (
    DecodeRequest,
    Label,
    Rank,
    RerankRequest,
    SimilarityParameters,
    SimilarityRequest,
    SimpleToken,
    TokenizeRequest,
)
from coulisse.interfaces.server.embedding import cosine, shown_id
from coulisse.interfaces.server.errors import ServerError, openapi_responses
from coulisse.interfaces.server.schemas import EmbedAllRequest, EmbedSparseRequest, SparseValue, side
from coulisse.interfaces.server.service import (
    PARAMETERS_TRUNCATE_HINT,
    Service,
    Timings,
    check_not_empty,
    check_unicode,
)

TAG = "Text Embeddings Inference"
# No `from __future__ import annotations` here: FastAPI reads the body types of the handlers below.


async def client_gone(request: Request) -> None:
    """Returns when the client disconnects (ASGI `http.disconnect` after the body was read)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


def batch_of(inputs, single_types: tuple = (str,)) -> tuple[list, bool]:
    """TEI's `Input`: one input (a text, or one token-id list) or a batch of them."""
    single = isinstance(inputs, single_types) or (bool(inputs) and all(isinstance(i, int) for i in inputs))
    return ([inputs] if single else list(inputs)), single


def byte_offsets(text: str) -> list[int] | None:
    """The UTF-8 byte offset of every character position of `text` (len(text) + 1 of them), in one pass over
    it; None where they equal the character positions (ASCII). Encoding each token's prefix instead is
    quadratic in the text's length."""
    if text.isascii():
        return None
    code_points = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype="<u4")
    widths = 1 + (code_points >= 0x80).astype(np.int64) + (code_points >= 0x800) + (code_points >= 0x10000)
    return np.concatenate(([0], np.cumsum(widths))).tolist()


def tokens_of(encoding, text: str) -> list[dict]:
    """TEI's `SimpleToken`s: byte offsets into the text (UTF-8, as TEI's Rust tokenizer gives them); special
    tokens carry their own text and no offsets."""
    to_byte = byte_offsets(text)
    tokens = []
    for token_id, token, special, (start, stop) in zip(encoding.ids, encoding.tokens,
                                                        encoding.special_tokens_mask, encoding.offsets,
                                                        strict=True):
        if special:
            tokens.append({"id": token_id, "text": token, "special": True, "start": None, "stop": None})
        else:
            tokens.append({"id": token_id, "text": text[start:stop], "special": False,
                           "start": start if to_byte is None else to_byte[start],
                           "stop": stop if to_byte is None else to_byte[stop]})
    return tokens


def add_tei_routes(app: FastAPI, service: Service, gate, protected: list) -> dict:
    """Register the routes; returns the handlers `POST /` dispatches to."""
    auth = ("unauthorized",) if service.settings.api_key else ()
    errors = openapi_responses("validation", "json_syntax", "payload_size", *auth, "empty", "batch_size",
                               "input_length", "model_type", "overloaded", "backend", "unhealthy")
    handlers = {**add_embedding_routes(app, service, gate, protected, errors),
                **add_pair_routes(app, service, gate, protected, errors)}
    add_tokenizer_routes(app, service, gate, protected, auth)
    return handlers


def truncate_of(value: bool | None, auto_truncate: bool) -> bool:
    """A body's `truncate`, the server's --auto-truncate where it says none."""
    return auto_truncate if value is None else value


def add_embedding_routes(app: FastAPI, service: Service, gate, protected: list, errors: dict) -> dict:
    """/embed_all and /embed_sparse (/embed is app.py's)."""
    settings = service.settings

    @app.post("/embed_all", tags=[TAG], dependencies=protected, response_model=None,
              include_in_schema=service.embedding,
              responses={200: {"model": list[list[list[float]]], "description": "Per input, per token"}, **errors})
    async def embed_all(body: EmbedAllRequest, request: Request) -> Response:
        """Every token's last hidden state (no pooling), per input."""
        inputs, single = batch_of(body.inputs)
        gate.check_batch(len(inputs))
        return await gate.run(request, "single" if single else "batch", lambda t: service.embed(
            inputs, truncate_of(body.truncate, settings.auto_truncate), False, partial(client_gone, request), t,
            prompt_name=body.prompt_name, pooled=False, side=side(body.truncation_direction)), False, len(inputs))

    @app.post("/embed_sparse", tags=[TAG], dependencies=protected, response_model=None,
              include_in_schema=service.sparse,
              responses={200: {"model": list[list[SparseValue]], "description": "Non-zero weights per input, "
                                                                                 "by index"}, **errors})
    async def embed_sparse(body: EmbedSparseRequest, request: Request) -> Response:
        """A SPLADE model's sparse embeddings: each input's non-zero vocabulary weights (424 for another
        model, as TEI)."""
        inputs, single = batch_of(body.inputs)
        gate.check_batch(len(inputs))
        method = "single" if single else "batch"
        return await gate.run(request, method, lambda t: service.embed_sparse(
            inputs, truncate_of(body.truncate, settings.auto_truncate), partial(client_gone, request), t,
            prompt_name=body.prompt_name, side=side(body.truncation_direction)), False, len(inputs))

    return {"embed_all": embed_all, "embed_sparse": embed_sparse}


def add_pair_routes(app: FastAPI, service: Service, gate, protected: list, errors: dict) -> dict:
    """/rerank (a cross-encoder's score of each query-text pair) and /similarity (cosine of sentence pairs)."""
    settings = service.settings

    @app.post("/rerank", tags=[TAG], dependencies=protected, response_model=None,
              include_in_schema=service.reranker,
              responses={200: {"model": list[Rank], "description": "Ranks, best first"}, **errors})
    async def rerank(body: RerankRequest, request: Request) -> Response:
        """Score each (query, text) pair with the cross-encoder; ranks sorted by score, best first."""
        if not body.texts:
            raise ServerError("empty", "`texts` cannot be empty")
        gate.check_batch(len(body.texts))
        check_not_empty([(body.query, None)], "query")
        check_not_empty([(text, None) for text in body.texts], "texts")

        async def work(t: Timings) -> list:
            scores = await service.rerank(body.query, body.texts, truncate_of(body.truncate, settings.auto_truncate),
                                          body.raw_scores, partial(client_gone, request), t,
                                          side(body.truncation_direction))
            ranks = [{"index": i, **({"text": body.texts[i]} if body.return_text else {}), "score": s}
                     for i, s in enumerate(scores)]
            return sorted(ranks, key=lambda r: r["score"])[::-1]  # TEI: ascending sort, reversed

        return await gate.run(request, "batch", work, False, len(body.texts))

    @app.post("/similarity", tags=[TAG], dependencies=protected, response_model=None,
              include_in_schema=service.embedding,
              responses={200: {"model": list[float], "description": "Cosine similarity per sentence"}, **errors})
    async def similarity(body: SimilarityRequest, request: Request) -> Response:
        """Cosine similarity of `source_sentence` with each of `sentences` (the Inference API's
        sentence-similarity task)."""
        if not body.inputs.sentences:
            raise ServerError("empty", "`inputs.sentences` cannot be empty")
        gate.check_batch(len(body.inputs.sentences) + 1)  # +1: the source sentence
        check_not_empty([(body.inputs.source_sentence, None)], "inputs.source_sentence")
        check_not_empty([(text, None) for text in body.inputs.sentences], "inputs.sentences")
        parameters = body.parameters or SimilarityParameters()

        async def work(t: Timings) -> list:
            vectors = await service.embed([body.inputs.source_sentence, *body.inputs.sentences],
                                          truncate_of(parameters.truncate, settings.auto_truncate), False,
                                          partial(client_gone, request), t, prompt_name=parameters.prompt_name,
                                          side=side(parameters.truncation_direction), hint=PARAMETERS_TRUNCATE_HINT)
            return cosine(vectors[0], vectors[1:])

        return await gate.run(request, "batch", work, False, len(body.inputs.sentences) + 1)

    return {"rerank": rerank, "similarity": similarity}


def add_tokenizer_routes(app: FastAPI, service: Service, gate, protected: list, auth: tuple) -> None:
    """/tokenize and /decode: the tokenizer alone, no model (TEI: no timing headers, no metrics)."""
    errors = openapi_responses("validation", "json_syntax", *auth, "empty", "batch_size")

    @app.post("/tokenize", tags=[TAG], dependencies=protected, response_model=None,
              responses={200: {"model": list[list[SimpleToken]], "description": "Tokens per input"}, **errors})
    async def tokenize(body: TokenizeRequest, request: Request) -> Response:
        """The tokenizer's tokens of each text (after the prompt, if any): id, text, special, byte offsets."""
        texts, _ = batch_of(body.inputs)
        gate.check_batch(len(texts))
        check_not_empty([(text, None) for text in texts])
        check_unicode([(text, None) for text in texts])
        # TEI's bound, before the prompt: /tokenize never truncates, so it always applies
        check_characters([(text, None) for text in texts], service.max_input_length * CHARS_PER_TOKEN)
        prompt = service.prompts.text(body.prompt_name)
        texts = [prompt + t for t in texts]

        def tokenized(part: list[str]) -> list:
            encodings = service.pipe.tokenizer.encode_batch(part, truncation=False,
                                                            add_special_tokens=body.add_special_tokens)
            return [tokens_of(e, text) for e, text in zip(encodings, part, strict=True)]

        async def work(t: Timings) -> list:
            # a long text's tokens are CPU work: off the event loop, in turns with other requests (bounds.py)
            return [x for part in await service.in_turns(tokenized, texts, len) for x in part]

        return await gate.run(request, "batch", work, False, runs_model=False)  # TEI: no timing headers, metrics

    @app.post("/decode", tags=[TAG], dependencies=protected, response_model=None,
              responses={200: {"model": list[str], "description": "One text per id list"}, **errors})
    async def decode(body: DecodeRequest, request: Request) -> Response:
        """Token ids back to text, through the tokenizer's decoder."""
        batch, _ = batch_of(body.ids, ())
        gate.check_batch(len(batch), field="ids")
        for i, ids in enumerate(batch):  # TEI: 400 `Empty` for an empty id list
            if not ids:
                raise ServerError("empty", f"`ids` cannot be empty: ids[{i}] is an empty list")
        vocab = len(service.pipe.tokenizer)
        for i, ids in enumerate(batch):
            if (bad := next((x for x in ids if x >= vocab), None)) is not None:
                raise ServerError("validation", f"Input validation error: ids{'' if len(batch) == 1 else [i]} "
                                  f"holds token id {shown_id(bad)}, outside this model's vocabulary (0..{vocab - 1})")

        async def work(t: Timings) -> list:
            return await service.off_loop(lambda: [service.pipe.tokenizer.decode(
                ids, skip_special_tokens=body.skip_special_tokens) for ids in batch])

        return await gate.run(request, "batch", work, False, runs_model=False)


def labels_of(zero_shot: dict) -> list[dict]:
    """transformers' zero-shot result -> the Inference API's `[{"label", "score"}]`, best first."""
    return [Label(label=label, score=score).model_dump()
            for label, score in zip(zero_shot["labels"], zero_shot["scores"], strict=True)]


def plain(value):
    """numpy scalars and arrays in a task's result -> JSON's numbers and lists."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


__all__ = ["add_tei_routes", "labels_of", "plain", "tokens_of"]

"""OpenAI's embeddings API over the feature-extraction pipeline: `POST /v1/embeddings` (and TEI's
`/embeddings` alias) and `GET /v1/models`, for the `openai` SDK, LangChain, LlamaIndex, Open WebUI.

As TEI does it: vectors normalized to unit length, `dimensions` cuts them and renormalizes, `base64` is
the little-endian float32 bytes, `usage` counts the tokens the model read. One difference: a `model` other
than the served one gets 404 (TEI logs a warning and answers anyway), so a client never gets another
model's vectors without knowing. Errors keep TEI's `{"error", "error_type"}` body on the TEI routes; here
they take OpenAI's `{"error": {"message", "type", "code"}}`, which the SDK reads.
"""

import json
import time
from functools import partial

from fastapi import FastAPI, Request
from fastapi.responses import Response

from coulisse.interfaces.server.compat_schemas import (
    OpenAIEmbeddingRequest,
    OpenAIEmbeddingResponse,
    OpenAIErrorResponse,
    OpenAIModel,
    OpenAIModelList,
)
from coulisse.interfaces.server.embedding import FOREIGN_IDS_HINT, as_base64, check_ids
from coulisse.interfaces.server.errors import ERRORS, ServerError
from coulisse.interfaces.server.guard import without_prefix
from coulisse.interfaces.server.schemas import side
from coulisse.interfaces.server.service import OPENAI_TRUNCATE_HINT, Service, Timings, check_not_empty
from coulisse.interfaces.server.tei_routes import batch_of, client_gone

TAG = "OpenAI"
OPENAI_PATHS = ("/v1/embeddings", "/embeddings", "/v1/models")
STARTED = int(time.time())


def add_openai_routes(app: FastAPI, service: Service, gate, protected: list) -> None:
    errors = {status: {"model": OpenAIErrorResponse, "description": ERRORS[kind].description}
              for kind, status in (("validation", 422), ("not_found", 404), ("empty", 400),
                                   ("batch_size", 422), ("overloaded", 429), ("backend", 500))}

    @app.post("/v1/embeddings", tags=[TAG], dependencies=protected, response_model=None,
              include_in_schema=service.embedding,
              responses={200: {"model": OpenAIEmbeddingResponse, "description": "One vector per input"}, **errors})
    async def embeddings(body: OpenAIEmbeddingRequest, request: Request) -> Response:
        """OpenAI's embeddings: unit vectors, `dimensions` cut and renormalized, float or base64."""
        if body.model is not None and body.model != service.served_model_name:
            raise ServerError("not_found", f"model {body.model!r} is not served here; this server serves "
                              f"{service.served_model_name!r} (GET /v1/models): send that name, or none; a client "
                              f"that always sends {body.model!r} needs the server started with "
                              f"--served-model-name {body.model!r}")
        inputs, single = batch_of(body.input)
        gate.check_batch(len(inputs), field="input")  # OpenAI's name for the field
        check_not_empty([(x, None) for x in inputs], "input")
        vocab = len(service.pipe.tokenizer)
        for i, x in enumerate(inputs):
            if not isinstance(x, str):
                check_ids(x, vocab, "input" if single else f"input[{i}]", FOREIGN_IDS_HINT)

        async def work(t: Timings) -> list:
            vectors = await service.embed(inputs, service.settings.auto_truncate, True,
                                          partial(client_gone, request), t, dimensions=body.dimensions,
                                          side=side(body.truncation_direction), hint=OPENAI_TRUNCATE_HINT)
            encode = as_base64 if body.encoding_format == "base64" else (lambda v: v)
            data = [{"object": "embedding", "embedding": encode(v), "index": i} for i, v in enumerate(vectors)]
            usage = {"prompt_tokens": t.tokens, "total_tokens": t.tokens}
            return [{"object": "list", "data": data, "model": service.served_model_name, "usage": usage}]

        return await gate.run(request, "single" if single else "batch", work, True, len(inputs))

    app.add_api_route("/embeddings", embeddings, methods=["POST"], include_in_schema=False,
                      dependencies=protected)

    @app.get("/v1/models", tags=[TAG], dependencies=protected, response_model=OpenAIModelList)
    async def models() -> dict:
        """The served model, as OpenAI lists models."""
        return {"object": "list", "data": [model_card(service.served_model_name)]}

    @app.get("/v1/models/{model:path}", tags=[TAG], dependencies=protected, response_model=OpenAIModel,
             responses={404: {"model": OpenAIErrorResponse, "description": ERRORS["not_found"].description}})
    async def retrieve_model(model: str) -> dict:
        """One model, as OpenAI's `client.models.retrieve(name)` reads it; 404 unless it is served here."""
        return retrieve(model, [service.served_model_name])


def model_card(name: str) -> dict:
    return {"id": name, "object": "model", "created": STARTED, "owned_by": "coulisse"}


def retrieve(name: str, served: list[str]) -> dict:
    if name not in served:
        raise ServerError("not_found", f"model {name!r} is not served here; this server serves "
                          f"{', '.join(map(repr, served))} (GET /v1/models)")
    return model_card(name)


def openai_path(path: str) -> bool:
    """Answered in OpenAI's error shape: its routes, and any other /v1/ path (a chat or completions call, or one
    under a prefix that names no served model: `OpenAI(base_url=".../nope/v1")`), whose 404 the SDK then shows
    with its message (TEI's shape shows as "Error code: 404" alone)."""
    return path in OPENAI_PATHS or path.startswith("/v1/") or "/v1/" in path


class OpenAIErrors:
    """ASGI middleware: on the OpenAI paths, rewrite TEI's error body into OpenAI's."""

    def __init__(self, app, prefixes: tuple[str, ...] = ()):
        self.app, self.prefixes = app, prefixes  # several models: /{name}/v1/embeddings too

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or not openai_path(without_prefix(scope.get("path", ""), self.prefixes)):
            return await self.app(scope, receive, send)
        start: dict | None = None
        chunks: list[bytes] = []

        async def capture(message):
            nonlocal start
            if message["type"] == "http.response.start":
                start = message
                if message["status"] < 400:
                    await send(message)
                return
            if start is None or start["status"] < 400:
                return await send(message)
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                await self._send_openai(start, b"".join(chunks), send)

        await self.app(scope, receive, capture)

    @staticmethod
    async def _send_openai(start: dict, body: bytes, send) -> None:
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in start["headers"]}
        try:
            tei = json.loads(body)
        except ValueError:
            tei = None
        if isinstance(tei, dict) and "error_type" in tei:
            body = json.dumps({"error": {"message": tei.get("error", ""), "type": tei["error_type"],
                                         "param": None, "code": start["status"]}}).encode()
            headers["content-length"] = str(len(body))
        await send({**start, "headers": [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]})
        await send({"type": "http.response.body", "body": body, "more_body": False})

"""The HTTP layer: text-embeddings-inference's routes over one loaded pipeline.

    POST /predict   classifiers: labels and scores      GET /health   200 once the batcher runs
    POST /embed     feature extraction: pooled vectors  GET /info     model and limits
    GET /metrics    Prometheus text                     GET /docs     OpenAPI UI (/openapi.json), offline

TEI's other routes are tei_routes.py's, OpenAI's /v1/embeddings openai_routes.py's, `POST /` (TEI's and
the Inference API's) inference_api.py's.

Every GET route answers HEAD too; the key, body limits and shutdown answers are `guard.Guard`'s.

`create_app(pipe, settings)` builds it; `coulisse serve` runs it on uvicorn.
"""

import hmac
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from functools import partial
from typing import Annotated

from fastapi import Depends, FastAPI, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from coulisse import __version__
from coulisse.interfaces.server.access_log import AccessLog
from coulisse.interfaces.server.answers import encoded
from coulisse.interfaces.server.bodies import RequestIds, StrictJSONRoute, new_request_id
from coulisse.interfaces.server.docs import add_offline_docs, document_request_limits
from coulisse.interfaces.server.errors import ServerError, error_response, install_handlers, openapi_responses
from coulisse.interfaces.server.guard import Drain, Guard, GuardLimits
from coulisse.interfaces.server.inference_api import add_root_routes
from coulisse.interfaces.server.metrics import ServerMetrics
from coulisse.interfaces.server.openai_routes import OpenAIErrors, add_openai_routes
from coulisse.interfaces.server.schemas import (
    EmbedRequest,
    EmbedResponse,
    Info,
    PredictRequest,
    PredictResponse,
    side,
)
from coulisse.interfaces.server.service import Service, Timings
from coulisse.interfaces.server.settings import ServerSettings
from coulisse.interfaces.server.tei_routes import TAG, add_tei_routes, batch_of, client_gone
from coulisse.pipelines import Pipeline

log = logging.getLogger(__name__)
# Refusals that TEI answers before its te_embed_count / te_predict_count counts the inputs (core/src/infer.rs).
NOT_REACHED = frozenset({"model_type", "empty"})


def auth_dependency(api_key: str | None) -> list:
    if not api_key:
        return []
    bearer = HTTPBearer(auto_error=False, description="The server's --api-key (env COULISSE_API_KEY).")
    expected = api_key.encode()
    # No `from __future__ import annotations` in this module: FastAPI must see `bearer` itself here.

    async def check(credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> None:
        # Guard already refused a wrong key before reading the body; this dependency documents the
        # scheme in OpenAPI and stays as a second check. Constant-time; the header never reaches a log.
        # The header's bytes as sent (Starlette decodes them as Latin-1): a UTF-8 key matches, as in Guard
        given = credentials.credentials.encode("latin-1") if credentials is not None else b""
        if not hmac.compare_digest(given.strip(), expected):
            raise ServerError("unauthorized", "missing or wrong API key: send `Authorization: Bearer <key>`")

    return [Depends(check)]


def document_limits(schema: dict, settings: ServerSettings) -> dict:
    """Write the server's batch limit into the OpenAPI schema, so generated clients (and schemathesis)
    know it; the check itself stays in the route, which answers TEI's 400/422 with TEI's message."""
    models = schema.get("components", {}).get("schemas", {})
    for name in ("PredictRequest", "EmbedRequest"):
        inputs = models.get(name, {}).get("properties", {}).get("inputs", {})
        for form in inputs.get("anyOf", []):
            # The batch forms only: a [text, text_pair] pair and a token id list are one input.
            if form.get("type") == "array" and form.get("items", {}).get("type") not in ("string", "integer"):
                form.update(minItems=1, maxItems=settings.max_client_batch_size)
    labels = models.get("ZeroShotParameters", {}).get("properties", {}).get("candidate_labels")
    if labels is not None:  # one model input per label
        labels["maxItems"] = settings.max_client_batch_size
    return schema


class Permits:
    """`--max-concurrent-requests` counted in inputs, as TEI takes one permit per input of a batch: what is in
    flight is at most that many inputs, a request that does not fit is refused (429) rather than queued. Counted
    in requests, 512 batches of 32 queued 16,384 inputs, minutes of work on a 2-core CPU (p99 258 s before any
    429: audit 39). Event-loop only (no lock); several models of one server share one: they share the CPU.

    A sixteenth of them (`reserve`: 32 of the default 512; none below 16) is kept for requests of one input: a
    flood of batches leaves room for the interactive requests beside it. Without, beside 600 clients sending
    batches of 32 to MiniLM (each retrying after Retry-After's second), two one-sentence clients were refused all
    80 tries in 60 s (2-core Xeon, session 40): whoever retried first got the permits. TEI keeps no reserve."""

    def __init__(self, limit: int):
        self.limit, self.used = limit, 0
        self.reserve = limit // 16

    def take(self, inputs: int, held: int = 0) -> int | None:
        """The permits taken for `inputs`, or None when they are not free now. A batch takes them from all but the
        reserve (a batch larger than that takes them all: it runs alone), one input from all. `held`: what the
        request holds already (its inputs counted again after preprocess: windows), not taken twice."""
        room = self.limit if inputs <= 1 else self.limit - self.reserve
        wanted = max(1, min(inputs, room)) - held
        if wanted <= 0:
            return 0
        if self.used + wanted > room:
            return None
        self.used += wanted
        return wanted

    def give(self, taken: int) -> None:
        self.used -= taken

    @property
    def full(self) -> bool:
        """Every permit taken: any request would be refused (each takes one at least)."""
        return self.used >= self.limit

    def refusal(self, inputs: int | None = None) -> str:
        """The 429's message; `inputs`: the refused request's, where its body was read."""
        kept = f", the last {self.reserve} kept for requests of one input" if (inputs or 0) > 1 and self.reserve else ""
        this = f", this request has {inputs}" if inputs is not None else ""
        return (f"Model is overloaded: {self.used} of {self.limit} inputs in flight{kept}{this} "
                "(--max-concurrent-requests); retry later")


class Gate:
    """What every task request passes: the batch limits, concurrency permits, timings and metrics."""

    def __init__(self, settings: ServerSettings, metrics: ServerMetrics, permits: Permits | None = None):
        self.settings, self.metrics = settings, metrics
        self.permits = permits or Permits(settings.max_concurrent_requests)

    def check_batch(self, n: int, what: str = "batch size", field: str = "inputs") -> None:
        if n == 0:
            raise ServerError("empty", f"`{field}` cannot be empty")
        if n > self.settings.max_client_batch_size:
            raise ServerError("batch_size", f"{what} {n} > maximum allowed batch size "
                              f"{self.settings.max_client_batch_size} (--max-client-batch-size)")

    @contextmanager
    def admitted(self, held: int, inputs: int) -> Iterator[None]:
        """A permit for each of `inputs`, the model inputs a request counted after preprocess (question answering's
        windows) while it holds `held`: the others are taken until it ends, or 429 when they are not free now."""
        taken = self.permits.take(inputs, held)
        if taken is None:
            raise ServerError("overloaded", self.permits.refusal(inputs))
        try:
            yield
        finally:
            self.permits.give(taken)

    async def run(self, request: Request, method: str, work: Callable[[Timings], Awaitable[list]], single: bool,
                  inputs: int = 1, runs_model: bool = True) -> Response:
        """`method`: TEI's "single" or "batch"; `inputs`: how many inputs reach the model (te_embed_count...).
        `runs_model`: TEI's timing headers and request metrics, which TEI has on the routes that run the model
        only (not /tokenize, /decode)."""
        request_id = getattr(request.state, "request_id", None) or new_request_id()
        request.state.request_id = request_id
        start = time.perf_counter()
        if runs_model:
            self.metrics.request_count.inc(method=method)
        taken = self.permits.take(inputs)
        if taken is None:
            raise ServerError("overloaded", self.permits.refusal(inputs))
        self.metrics.in_flight.inc()
        timings = Timings()
        reached = runs_model  # the inputs reached the model's stages (TEI counts them from there)
        try:
            results = await work(timings)
        except ServerError as e:
            reached = reached and e.kind not in NOT_REACHED
            if e.kind == "backend":
                log.error("request %s: %s", request_id, e.message, exc_info=e.__cause__)
                e.message = f"{e.message} (request id {request_id})"
            raise
        finally:
            self.permits.give(taken)
            self.metrics.in_flight.inc(-1)
            if reached:
                self.metrics.per_input.count.inc(inputs)
        total = time.perf_counter() - start
        if runs_model:
            self.metrics.answered(method, inputs, total, timings.tokenization_s, timings.queue_s, timings.inference_s)
        # TEI's response headers, in milliseconds.
        ms = {"total": total, "tokenization": timings.tokenization_s, "queue": timings.queue_s,
              "inference": timings.inference_s}
        headers = {"x-request-id": request_id}
        if runs_model:
            headers.update({"x-compute-type": "cpu", "x-compute-time": str(int(total * 1000)),
                            "x-compute-characters": str(timings.characters), "x-compute-tokens": str(timings.tokens),
                            **{f"x-{name}-time": str(int(seconds * 1000)) for name, seconds in ms.items()}})
        # Off the event loop: a large answer (/embed_all, /tokenize of a long text) would stop every other
        # request, /health included, while it is written.
        return Response(await encoded(results[0] if single else results), media_type="application/json",
                        headers=headers)


def add_task_routes(app: FastAPI, service: Service, gate: Gate, protected: list) -> dict:
    settings = service.settings
    errors = openapi_responses("validation", "json_syntax", "payload_size",
                               *(("unauthorized",) if settings.api_key else ()), "empty", "batch_size",
                               "input_length", "model_type", "overloaded", "backend", "unhealthy")

    # Both task routes answer (the other model type gets TEI's 424); the schema shows the one served.
    @app.post("/predict", tags=[TAG], dependencies=protected, response_model=None,
              include_in_schema=service.classifier,
              responses={200: {"model": PredictResponse, "description": "Labels sorted by score"}, **errors})
    async def predict(body: PredictRequest, request: Request) -> Response:
        """Classify one text (a sorted list of labels) or a batch (one sorted list per input)."""
        # TEI's reading: "a" and ["a"] are one text, ["a", "b"] one pair, [["a"], ["b", "c"]] a batch.
        inputs = [body.inputs] if isinstance(body.inputs, str) else body.inputs
        single = bool(inputs) and all(isinstance(s, str) for s in inputs)
        raw = [inputs] if single else inputs
        gate.check_batch(len(raw))
        sequences = [(s[0], s[1] if len(s) == 2 else None) for s in raw]
        truncate = settings.auto_truncate if body.truncate is None else body.truncate
        return await gate.run(request, "single" if single else "batch", lambda t: service.predict(
            sequences, truncate, body.raw_scores, partial(client_gone, request), t, side(body.truncation_direction)),
            single, len(sequences))

    @app.post("/embed", tags=[TAG], dependencies=protected, response_model=None,
              include_in_schema=not service.classifier,
              responses={200: {"model": EmbedResponse, "description": "One vector per input"}, **errors})
    async def embed(body: EmbedRequest, request: Request) -> Response:
        """Pooled (mean, or CLS per 1_Pooling/config.json) and by default L2-normalized embeddings."""
        texts, single = batch_of(body.inputs)
        gate.check_batch(len(texts))
        truncate = settings.auto_truncate if body.truncate is None else body.truncate
        return await gate.run(request, "single" if single else "batch", lambda t: service.embed(
            texts, truncate, body.normalize, partial(client_gone, request), t, prompt_name=body.prompt_name,
            dimensions=body.dimensions, side=side(body.truncation_direction)), False, len(texts))

    return {"predict": predict, "embed": embed}


def health_answer(problems: list[str]) -> Response:
    """The answer of /health, /ping and GET / (TEI's one `health` handler on the three paths): 200, or 503 naming
    each problem. Written here, not raised: TEI counts no `te_request_failure` for a failing probe, and a kubelet
    probing every 10 s would swell the series that dashboards read as failed requests."""
    if not problems:
        return Response(status_code=200)
    return error_response("unhealthy", f"unhealthy: {'; '.join(problems)}")


def add_status_routes(app: FastAPI, service: Service, metrics: ServerMetrics, protected: list) -> None:
    async def health() -> Response:
        """200 once the model is loaded and answers; 503 while stopping, while a forward pass has run for two
        minutes (a stuck model thread), or after three batches in a row failed whole (a broken model). /ping
        (SageMaker's probe) and GET / (the Inference API's) answer the same."""
        problem = service.batcher.health_problem()
        return health_answer([] if problem is None else [problem])

    probe = {"response_class": Response,
             "responses": {200: {"description": "Ready", "content": None}, **openapi_responses("unhealthy")}}
    app.add_api_route("/health", health, methods=["GET"], tags=[TAG], **probe)
    app.add_api_route("/ping", health, methods=["GET"], tags=[TAG], name="ping", **probe)
    app.add_api_route("/", health, methods=["GET"], include_in_schema=False, name="health_root")

    @app.get("/info", tags=[TAG], dependencies=protected, response_model=None,
             responses={200: {"model": Info, "description": "Served model info"},
                        **openapi_responses(*(("unauthorized",) if protected else ()))})
    async def info() -> JSONResponse:
        """The served model, its labels and the server's limits."""
        return JSONResponse(service.info())  # TEI's tagged model_type: only the key that applies

    @app.get("/metrics", tags=[TAG], response_class=PlainTextResponse,
             responses={200: {"description": "Prometheus text format",
                              "content": {"text/plain": {"schema": {"type": "string"}}}}})
    async def prometheus() -> PlainTextResponse:
        """Request counts and latencies, queue size, batch sizes and tokens, errors by kind."""
        return PlainTextResponse(metrics.render(), media_type="text/plain; version=0.0.4")

    @app.get("/api-doc/openapi.json", include_in_schema=False)
    async def tei_openapi() -> JSONResponse:
        return JSONResponse(app.openapi())  # where TEI serves its schema


def serving(services: list[Service]):
    """The lifespan: start every model's batcher, and drain them all on the way out."""

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        for service in services:
            await service.start()
            log.info("serving %s as %r (%s); limits %s", service.pipe.checkpoint.name, service.served_model_name,
                     service.pipe.task, service.batcher.limits)
        try:
            yield
        finally:
            for service in services:
                await service.stop()
            log.info("stopped: every queued input was answered")

    return lifespan


def model_app(service: Service, gate: Gate, lifespan=None) -> FastAPI:
    """Every route of one model: TEI's, OpenAI's, the Inference API's, /health, /info, /metrics and /docs.
    The HTTP layer around it (the key, body limits, CORS) is `guarded`'s."""
    settings, metrics = service.settings, service.metrics
    # No /redoc: FastAPI's page loads ReDoc from a CDN (blank offline), and TEI has none; /docs is offline.
    # No redirect of `/embed/` to `/embed` (Starlette's default, a 307 to a URL built from the Host header): TEI
    # answers 404 there, and a client that follows it posts twice.
    app = FastAPI(title="coulisse", version=__version__, lifespan=lifespan, redoc_url=None, redirect_slashes=False,
                  description="Text-embeddings-inference's HTTP API over a coulisse pipeline.")
    app.router.route_class = StrictJSONRoute

    def openapi() -> dict:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, description=app.description,
                                 routes=app.routes)
            app.openapi_schema = document_request_limits(document_limits(schema, settings), service)
        return app.openapi_schema

    app.openapi = openapi
    app.state.service, app.state.metrics = service, metrics
    install_handlers(app, metrics)
    protected = auth_dependency(settings.api_key)
    handlers = add_task_routes(app, service, gate, protected)
    handlers.update(add_tei_routes(app, service, gate, protected))
    add_openai_routes(app, service, gate, protected)
    add_root_routes(app, service, gate, protected, handlers)
    add_status_routes(app, service, metrics, protected)
    add_offline_docs(app)
    return app


def guarded(app: FastAPI, settings: ServerSettings, metrics: ServerMetrics, prefixes: tuple[str, ...] = (),
            permits: Permits | None = None) -> FastAPI:
    """The HTTP layer every request crosses first, outermost last: the key, the body limits and, when every one
    of `permits` is taken, the 429 (before any route or body parsing), OpenAI's error shape on its paths, CORS,
    the request id, the access log."""
    app.state.drain = Drain()
    app.add_middleware(Guard, limits=GuardLimits(settings.api_key, settings.payload_limit, settings.body_timeout,
                                                 prefixes, settings.max_payload_in_flight),
                       metrics=metrics, drain=app.state.drain, permits=permits)
    app.add_middleware(OpenAIErrors, prefixes=prefixes)
    if settings.cors_allow_origin:  # TEI allows every origin by default; coulisse only those it is told
        from coulisse.interfaces.server.guard import TEICors

        app.add_middleware(TEICors, allow_origins=settings.cors_allow_origin, allow_methods=["GET", "POST"],
                           allow_headers=["content-type", "authorization", "x-model"])
    app.add_middleware(RequestIds)
    app.add_middleware(AccessLog)
    return app


def create_app(pipe: Pipeline, settings: ServerSettings | None = None) -> FastAPI:
    """The ASGI app over a loaded pipeline; its lifespan starts and drains the batcher. Several models in one
    process: `routing.several_models_app([(pipeline, settings), ...])`, built on this module's parts."""
    if not isinstance(pipe, Pipeline):
        raise TypeError(f"create_app takes one pipeline, not {type(pipe).__name__}; for several models use "
                        "coulisse.interfaces.server.routing.several_models_app([(pipeline, settings), ...])")
    settings = settings or ServerSettings()
    metrics = ServerMetrics()
    service = Service(pipe, settings, metrics)
    metrics.describe_model(service.embedding, service.max_input_length)
    gate = Gate(settings, metrics)
    return guarded(model_app(service, gate, serving([service])), settings, metrics, permits=gate.permits)

"""Several models in one server: `coulisse serve --model a --model b`.

Each model keeps everything a one-model server has (its pipeline, task, batcher and queue, every route:
`app.model_app`); one process, so torch's threads are shared. A request reaches a model by, in order:

    a route prefix    /{name}/embed, /{name}/predict, /{name}/ (InferenceClient(base_url=".../{name}")),
                      /{name}/v1/embeddings (OpenAI(base_url=".../{name}/v1"))
    a header          X-Model: {name}, on any unprefixed route
    OpenAI's `model`  POST /v1/embeddings and /embeddings read the body's `model`
    else              the first model, so a one-model client keeps working unchanged

`name` is the model's served name (`--served-model-name`, else `--model` as given); a slash in it stays a
path separator (`/org/model/embed`, or `%2F`, the same once the server decodes the path). The server's own
routes answer for all: /health, /ping and GET / (every batcher runs), /info (TEI's shape for the first model, plus
`models`), /v1/models (every name), /metrics (every series labelled `model="NAME"`). The key, body limits,
the connection cap and the concurrency permits are the server's, shared by every model.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence

from fastapi import FastAPI
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from coulisse import __version__
from coulisse.errors import InputError
from coulisse.interfaces.server.app import Gate, Permits, guarded, health_answer, model_app, serving
from coulisse.interfaces.server.batching import Worker
from coulisse.interfaces.server.bodies import StrictJSONRoute
from coulisse.interfaces.server.errors import error_response, install_handlers
from coulisse.interfaces.server.guard import authorized, header, replay
from coulisse.interfaces.server.metrics import ServerMetrics, render_by_model
from coulisse.interfaces.server.openai_routes import model_card, retrieve
from coulisse.interfaces.server.service import Service
from coulisse.interfaces.server.settings import ServerSettings
from coulisse.tasks.base import Pipeline

log = logging.getLogger(__name__)
SERVER_PATHS = frozenset({"/health", "/ping", "/info", "/v1/models", "/metrics"})
OPENAI_EMBEDDINGS = frozenset({"/v1/embeddings", "/embeddings"})
READS = frozenset({"GET", "HEAD"})


def route_prefix(name: str) -> str:
    return "/" + name.strip("/")


def first_segment(path: str) -> str:
    return path.lstrip("/").split("/", 1)[0]


def prefixes_of(names) -> list[tuple[str, str]]:
    """(route prefix, name), the longest prefix first: /org/model before /org."""
    return sorted(((route_prefix(name), name) for name in names), key=lambda p: -len(p[0]))


def check_names(names: list[str], reserved: set[str]) -> None:
    """Each model needs a name of its own that no route of the server already starts with."""
    for name in names:
        if not name.strip("/"):
            raise InputError(f"served model name {name!r} is empty; pass --served-model-name NAME for it.")
        if first_segment(name) in reserved:
            raise InputError(f"served model name {name!r} starts like the server's route /{first_segment(name)}; "
                             "pass another --served-model-name for it.")
        if [route_prefix(n) for n in names].count(route_prefix(name)) > 1:
            raise InputError(f"two models are served as {name!r}; give each its own --served-model-name.")


def model_name_of(body: bytes) -> object:
    """OpenAI's `model` in a request body, or None (not JSON, no such field: the route says what is wrong)."""
    try:
        parsed = json.loads(body)
    except ValueError:
        return None
    return parsed.get("model") if isinstance(parsed, dict) else None


class ModelRouter:
    """ASGI: send each request to its model's app (prefix, X-Model, OpenAI's `model`), or to the server's
    own routes. Sits inside `Guard`, so the key is checked and the body bounded before it reads one."""

    def __init__(self, app, models: dict[str, FastAPI], metrics: ServerMetrics, api_key: str | None = None):
        self.app, self.models, self.metrics = app, models, metrics
        self.expected = api_key.encode() if api_key else None
        self.default = next(iter(models))
        self.prefixes = prefixes_of(models)
        self.routes = {first_segment(getattr(r, "path", "")) for r in models[self.default].routes}

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        named_all = [v.decode("utf-8", "replace") for k, v in scope["headers"] if k == b"x-model"]
        if len(set(named_all)) > 1:  # a gateway's header beside the client's: the first won, unsaid (audit 46)
            return await self.disagree(named_all[0], "an X-Model header", named_all[1], scope, receive, send,
                                       field="another X-Model header")
        path = scope["path"]
        for prefix, name in self.prefixes:
            if path == prefix or path.startswith(prefix + "/"):
                # Starlette routes `path` minus `root_path`; /{name}/docs finds /{name}/openapi.json by it.
                scope = {**scope, "root_path": scope.get("root_path", "") + prefix}
                if path == prefix:  # `/{name}` alone is the model's `/`: InferenceClient(base_url=".../{name}")
                    # posts there, and the app redirects no path to its slashed form (as TEI, none is redirected)
                    path = scope["path"] = prefix + "/"
                named = header(scope, b"x-model")
                if named is not None and named.decode("utf-8", "replace") != name:  # two choices: said, not one
                    return await self.disagree(name, f"the route prefix {prefix}", named.decode("utf-8", "replace"),
                                               scope, receive, send, field="the X-Model header")
                return await self.chosen(name, f"the route prefix {prefix}", path[len(prefix):], scope, receive,
                                         send)
        named = header(scope, b"x-model")
        if named is not None and path != "/metrics":
            name = named.decode("utf-8", "replace")
            if name not in self.models:
                return await self.unknown(name, scope, receive, send, "no model named")
            return await self.chosen(name, "the X-Model header", path, scope, receive, send)
        if path in SERVER_PATHS or path.startswith("/v1/models/") or (path == "/" and scope["method"] in READS):
            return await self.app(scope, receive, send)  # GET /: the Inference API's health probe, as /health
        if path in OPENAI_EMBEDDINGS and scope["method"] == "POST":
            body = await read_body(receive)
            name = model_name_of(body)
            receive = replay(body, receive)
            if isinstance(name, str):
                return await self.to_model(name, scope, receive, send)
        elif first_segment(path) not in self.routes:
            return await self.unknown(first_segment(path), scope, receive, send, "no route or model named")
        await self.models[self.default](scope, receive, send)

    async def to_model(self, name: str, scope, receive, send) -> None:
        if name not in self.models:
            return await self.unknown(name, scope, receive, send, "no model named")
        await self.models[name](scope, receive, send)

    async def chosen(self, name: str, how: str, path: str, scope, receive, send) -> None:
        """Model `name`, chosen by `how` (a prefix, X-Model). OpenAI's embeddings whose body's `model` names
        another model get a 404 saying both, not the chosen model's "is not served here"."""
        if path in OPENAI_EMBEDDINGS and scope["method"] == "POST":
            body = await read_body(receive)
            receive = replay(body, receive)
            asked = model_name_of(body)
            if isinstance(asked, str) and asked != name:
                return await self.disagree(name, how, asked, scope, receive, send)
        await self.models[name](scope, receive, send)

    async def disagree(self, name: str, how: str, asked: str, scope, receive, send,
                       field: str = "the body's `model`") -> None:
        self.metrics.request_failure.inc(err="not_found")
        if asked in self.models:
            what = (f"{field} names {asked!r}, another model of this server: send one of the two, or the same name "
                    "in both")
        else:
            what = (f"{field} names {asked!r}, which this server does not serve: send {name!r} there or nothing (a "
                    f"client that always sends {asked!r} needs a model served under that name: --served-model-name)")
        await error_response("not_found", f"{how} chose model {name!r}, but {what} (served: {self.served}; "
                             "GET /v1/models)")(scope, receive, send)

    @property
    def served(self) -> str:
        return ", ".join(repr(n) for n in self.models)

    async def unknown(self, name: str, scope, receive, send, what: str) -> None:
        self.metrics.request_failure.inc(err="not_found")
        if self.expected is not None and not authorized(scope, self.expected):  # a public route (/health with an
            # X-Model header): the names are for those with the key, as /v1/models is (audit 46)
            await error_response("not_found", f"{what} {name!r}; send the API key to see the models served (GET "
                                 "/v1/models)")(scope, receive, send)
            return
        await error_response("not_found", f"{what} {name!r}: this server serves {self.served} (choose one by "
                             "route prefix /NAME/..., the X-Model header, or OpenAI's `model`; GET /v1/models)")(
            scope, receive, send)


async def read_body(receive) -> bytes:
    """The whole body (Guard already read it within --payload-limit and --body-timeout, and replays it)."""
    chunks = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return b"".join(chunks)
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def add_server_routes(app: FastAPI, services: dict[str, Service], metrics: ServerMetrics) -> None:
    """The routes that answer for every model. Guard asks /info and /v1/models for the key."""
    default = next(iter(services.values()))

    async def health() -> Response:
        """200 once every model answers (each one's /NAME/health: `Batcher.health_problem`); /ping and GET / too."""
        return health_answer([f"{name!r}: {problem}" for name, service in services.items()
                              if (problem := service.batcher.health_problem()) is not None])

    for path in ("/health", "/ping", "/"):
        app.add_api_route(path, health, methods=["GET"], response_class=Response,
                          name=f"health{path.replace('/', '_')}")

    @app.get("/info")
    async def info() -> JSONResponse:
        """TEI's /info for the first model (what unprefixed routes serve), and every model's in `models`."""
        return JSONResponse({**default.info(), "models": [service.info() for service in services.values()]})

    @app.get("/v1/models")
    async def list_models() -> dict:
        """Every served model, as OpenAI lists models."""
        return {"object": "list", "data": [model_card(name) for name in services]}

    @app.get("/v1/models/{model:path}")
    async def retrieve_model(model: str) -> dict:
        """One served model, as OpenAI's `client.models.retrieve(name)` reads it."""
        return retrieve(model, list(services))

    @app.get("/metrics", response_class=PlainTextResponse)
    async def prometheus() -> PlainTextResponse:
        """Every model's series labelled `model="NAME"`, then the HTTP layer's refusals."""
        return PlainTextResponse(render_by_model(metrics, {n: s.metrics for n, s in services.items()}),
                                 media_type="text/plain; version=0.0.4")


def several_models_app(models: Sequence[tuple[Pipeline, ServerSettings]]) -> FastAPI:
    """One server over several (pipeline, settings) pairs; the server-wide settings are the first's."""
    if not models:
        raise InputError("no model to serve; pass --model at least once.")
    settings = models[0][1]
    metrics = ServerMetrics()
    permits = Permits(settings.max_concurrent_requests)
    worker = Worker()  # one thread runs every model's batches, in turns
    services: dict[str, Service] = {}
    apps: dict[str, FastAPI] = {}
    names = []
    for pipe, own in models:
        service = Service(pipe, own, ServerMetrics(), worker)
        service.metrics.describe_model(service.embedding, service.max_input_length)
        names.append(service.served_model_name)
        services[service.served_model_name] = service
        apps[service.served_model_name] = model_app(service, Gate(own, service.metrics, permits))
    reserved = {first_segment(getattr(r, "path", "")) for app in apps.values() for r in app.routes}
    check_names(names, reserved | {first_segment(p) for p in SERVER_PATHS})
    app = FastAPI(title="coulisse", version=__version__, lifespan=serving(list(services.values())),
                  openapi_url=None, docs_url=None, redoc_url=None, redirect_slashes=False)  # as `app.create_app`
    app.router.route_class = StrictJSONRoute
    app.state.services, app.state.metrics, app.state.models = services, metrics, apps
    install_handlers(app, metrics)
    add_server_routes(app, services, metrics)
    # Innermost first: the router inside the key and body checks, which see every model's paths.
    app.add_middleware(ModelRouter, models=apps, metrics=metrics, api_key=settings.api_key)
    prefixes = tuple(prefix for prefix, _ in prefixes_of(apps))
    log.info("models: %s (route prefixes %s); unprefixed routes serve %r", ", ".join(apps), ", ".join(prefixes),
             names[0])
    return guarded(app, settings, metrics, prefixes, permits)

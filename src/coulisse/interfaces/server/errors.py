"""Every error the server answers, in one table: kind -> HTTP status and TEI's `error_type`.

The body is always text-embeddings-inference's `{"error": "...", "error_type": "..."}`
(router/src/lib.rs `ErrorResponse`), so TEI clients parse our errors unchanged. TEI's own kinds
keep TEI's `error_type` spelling (its `ErrorType` enum as serde writes it: "Validation", "Empty",
"Overloaded", "Backend", "Unhealthy"); the few that TEI answers without a body (401, 404, 405) get one,
and so do the HTTP layer's own (400, 408, 431, 503: `raw_error_response`, written by `protocol.py`),
spelled the same way ("Unauthorized", "NotFound", "Timeout"...).
Kinds a client may retry carry `Retry-After`; those answered before the body was read close the
connection. A 5xx without `Retry-After` (the model failed) says `x-should-retry: false`: the openai SDK retries
every 5xx twice otherwise, and the same request would fail three times (TEI answers 424 there, which it does not
retry).
"""

from __future__ import annotations

import json
import logging
import re
import sys
from dataclasses import dataclass
from http import HTTPStatus
from typing import TYPE_CHECKING

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from coulisse.errors import TokenizerLoadError
from coulisse.interfaces.server.bodies import DUPLICATE, BodyNotJSON, new_request_id

if TYPE_CHECKING:
    from fastapi import FastAPI

    from coulisse.interfaces.server.metrics import ServerMetrics

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ErrorKind:
    status: int
    error_type: str
    description: str
    retry_after: int | None = None  # seconds, sent as `Retry-After`: the client may try again
    close: bool = False  # `Connection: close`: the body was not read, or the connection is the problem


ERRORS: dict[str, ErrorKind] = {
    "validation": ErrorKind(422, "Validation", "a field of the wrong type, unknown or given twice, or a text that is "
                            "not valid Unicode (named)"),
    "empty": ErrorKind(400, "Empty", "`inputs` is an empty list, or holds an empty text"),
    "bad_request": ErrorKind(400, "BadRequest", "the request line or a header is not valid HTTP/1.1", close=True),
    # 400, as TEI's JSON reader (axum) answers a body serde_json cannot parse: its data errors are 422.
    "json_syntax": ErrorKind(400, "BadRequest", "a body that is not UTF-8 JSON (a syntax error, bytes that are not "
                             "UTF-8, UTF-16, a byte order mark, NaN or Infinity, nesting deeper than the parser goes)"),
    "unauthorized": ErrorKind(401, "Unauthorized", "missing or wrong `Authorization: Bearer` key", close=True),
    "not_found": ErrorKind(404, "NotFound", "no such route"),
    "method_not_allowed": ErrorKind(405, "MethodNotAllowed", "the route exists for another method"),
    "media_type": ErrorKind(415, "Validation", "a body sent with a Content-Type other than application/json, "
                            "without one, or compressed (Content-Encoding)", close=True),
    "head_timeout": ErrorKind(408, "Timeout", "the request line and headers took longer than --header-timeout",
                              close=True),
    "body_timeout": ErrorKind(408, "Timeout", "the body took longer than --body-timeout to arrive", close=True),
    # 422, as TEI answers its validation errors since v1.9.0 (it answered 413 before, as its openapi.json says).
    "batch_size": ErrorKind(422, "Validation", "more inputs than --max-client-batch-size"),
    "input_length": ErrorKind(422, "Validation", "an input longer than the model takes, with truncate=false"),
    "payload_size": ErrorKind(413, "Validation", "a body larger than --payload-limit bytes", close=True),
    "model_type": ErrorKind(424, "Backend", "the served model does not do this route's task"),
    "overloaded": ErrorKind(429, "Overloaded", "more than --max-concurrent-requests requests in flight",
                            retry_after=1),
    "payload_budget": ErrorKind(429, "Overloaded", "the request bodies in flight would pass --max-payload-in-flight "
                                "bytes", retry_after=1),
    "head_size": ErrorKind(431, "BadRequest", "the request line and headers are larger than 16 KiB", close=True),
    "cancelled": ErrorKind(499, "Cancelled", "the client disconnected before its answer was ready"),
    "backend": ErrorKind(500, "Backend", "the model failed; the request id is in the server log"),
    "unhealthy": ErrorKind(503, "Unhealthy", "the batching loop is not running", retry_after=5),
    "connections": ErrorKind(503, "Overloaded", "more than --max-connections connections open", retry_after=1,
                             close=True),
    "shutting_down": ErrorKind(503, "Unhealthy", "the server stopped before the answer was ready "
                               "(--shutdown-timeout)", retry_after=5, close=True),
}
STARLETTE_KINDS = {404: "not_found", 405: "method_not_allowed", 413: "payload_size"}


class ServerError(Exception):
    """An answer other than 200: `kind` is a key of ERRORS, `message` says what and how to fix it."""

    def __init__(self, kind: str, message: str):
        if kind not in ERRORS:
            raise KeyError(f"unknown error kind {kind!r}: this is a bug")
        super().__init__(message)
        self.kind = kind
        self.message = message


def error_headers(kind: str) -> dict[str, str]:
    spec = ERRORS[kind]
    headers = {"retry-after": str(spec.retry_after)} if spec.retry_after is not None else {}
    if spec.close:
        headers["connection"] = "close"
    if spec.status >= 500 and spec.retry_after is None:
        headers["x-should-retry"] = "false"
    if kind == "unauthorized":
        headers["www-authenticate"] = "Bearer"
    return headers


def not_found(path: str) -> str:
    """A 404's message: which path, and for an OpenAI client (chat, completions...), the two routes it may call."""
    said = f"no route {path!r} here"
    if "/v1/" in path:
        return f"{said}; this server's OpenAI API has POST /v1/embeddings and GET /v1/models only"
    return f"{said}; GET /docs lists the routes"


def error_body(kind: str, message: str) -> bytes:
    return json.dumps({"error": message, "error_type": ERRORS[kind].error_type}).encode()


def error_response(kind: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    spec = ERRORS[kind]
    return JSONResponse({"error": message, "error_type": spec.error_type}, status_code=spec.status,
                        headers={**error_headers(kind), **(headers or {})})


def raw_error_response(kind: str, message: str) -> bytes:
    """The same answer as bytes on the wire, for the HTTP layer below the app (uvicorn's parser,
    header timeouts), where no ASGI `send` exists. Always closes the connection."""
    spec = ERRORS[kind]
    body = error_body(kind, message)
    headers = {"content-type": "application/json", "content-length": str(len(body)),
               **error_headers(kind), "connection": "close", "x-request-id": new_request_id()}
    head = f"HTTP/1.1 {spec.status} {HTTPStatus(spec.status).phrase}\r\n"
    head += "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    return head.encode("latin-1") + b"\r\n" + body


def openapi_responses(*kinds: str) -> dict[int | str, dict]:
    """The `responses=` of a route: one entry per status, describing every kind that maps to it."""
    from coulisse.interfaces.server.schemas import ErrorResponse

    by_status: dict[int, list[str]] = {}
    for kind in kinds:
        by_status.setdefault(ERRORS[kind].status, []).append(ERRORS[kind].description)
    return {status: {"model": ErrorResponse, "description": "; ".join(texts)}
            for status, texts in sorted(by_status.items())}


# The bodies a route takes one of (`POST /`: TEI's or the Inference API's), as a client knows them; pydantic names
# the union's member by its class first in each error's location.
BODY_NAMES = {"PredictRequest": "TEI's /predict body", "EmbedRequest": "TEI's /embed body",
              "SimilarityRequest": "TEI's /similarity body", "RerankRequest": "TEI's /rerank body"}


def describe_validation(exc: RequestValidationError, example: str = "") -> str:
    """Pydantic's errors as one line that names each bad field: `raw_scores: Input should be ...`; where the
    body may be one of several shapes, each error says which shape it was read as, not a class name."""
    parts = []
    for err in exc.errors()[:3]:
        loc = [str(p) for p in err.get("loc", ()) if p != "body"]
        shape = ""
        if loc and re.fullmatch(r"[A-Z][A-Za-z]*(Request|Task)", loc[0]):
            name = loc.pop(0)
            shape = f"as {BODY_NAMES.get(name, 'the Inference API body' if name.endswith('Task') else 'a TEI body')}, "
        if err.get("type") == "json_invalid" and duplicate(err):
            parts.append(f"the body's JSON names the key {err['ctx']['error'][len(DUPLICATE) + 1:]} twice in one "
                         "object; send it once")
        elif err.get("type") == "json_invalid":  # loc: ("body", the character where the parser stopped)
            at = f" character {int(loc[0]) + 1}" if loc and loc[0].isdigit() else ""
            parts.append(f"the body is not valid JSON ({err.get('ctx', {}).get('error', 'parse error')}{at})")
        elif not loc:
            parts.append(f"{shape}the body must be {example or EXAMPLE}")
        else:
            parts.append(f"{shape}{'.'.join(loc)}: {err.get('msg', 'invalid value')}")
    return "; ".join(parts)


EXAMPLE = 'a JSON object such as {"inputs": "some text"}'
# The routes whose body has other fields than `inputs`, by the path's last part (a model's prefix before it).
EXAMPLES = {"embeddings": 'a JSON object such as {"input": "some text"}',
            "decode": 'a JSON object such as {"ids": [101, 102]}',
            "rerank": 'a JSON object such as {"query": "a question", "texts": ["a text"]}',
            "similarity": 'a JSON object such as {"inputs": {"source_sentence": "a text", "sentences": ["another"]}}'}


def example_for(path: str) -> str:
    return EXAMPLES.get(path.rstrip("/").rsplit("/", 1)[-1], EXAMPLE)


def served_task_hint(request: Request) -> str:
    """On `POST /` (`inference_api`), which reads the body of the served task only: that task, named, so that a
    client calling another task (`InferenceClient.zero_shot_classification` on a sentiment model) learns why."""
    route, service = request.scope.get("route"), getattr(request.app.state, "service", None)
    if service is None or not getattr(route, "name", "").startswith("root"):
        return ""
    return (f" (POST {request.url.path} runs the task this model serves, {service.pipe.task}, and reads that task's "
            "body)")


def duplicate(err: dict) -> bool:
    return str(err.get("ctx", {}).get("error", "")).startswith(DUPLICATE)


def syntax_error(exc: RequestValidationError) -> bool:
    """Whether FastAPI could not parse the body at all (a 400, as TEI), rather than read a bad value in it."""
    errors = exc.errors()
    return bool(errors) and all(e.get("type") == "json_invalid" and not duplicate(e) for e in errors)


UNPARSED = "There was an error parsing the body"  # FastAPI's words for a body its JSON reader raised on


def _unparsed(cause: BaseException | None) -> str:
    """Why FastAPI could not read a JSON body (what the reader raised), where its own message does not say."""
    if isinstance(cause, BodyNotJSON):  # not UTF-8, a byte order mark, NaN (bodies.py)
        return str(cause)
    if isinstance(cause, RecursionError):
        return "the body is nested deeper than the JSON parser goes; send one JSON value"
    if isinstance(cause, ValueError) and "integer string conversion" in str(cause):  # Python's bound on int()
        return (f"the body holds an integer of more than {sys.get_int_max_str_digits():,} digits, past what "
                "Python's JSON reader takes (and any field here accepts); send a smaller number")
    return f"{UNPARSED}: send one JSON value in UTF-8"


def install_handlers(app: FastAPI, metrics: ServerMetrics) -> None:
    """Route every failure, including the framework's own 404/405/422, through ERRORS."""

    def respond(request: Request, kind: str, message: str) -> JSONResponse:
        metrics.request_failure.inc(err=kind)
        headers = {}
        if getattr(request.state, "request_id", None):
            headers["x-request-id"] = request.state.request_id
        return error_response(kind, message, headers)

    async def on_server_error(request: Request, exc: ServerError) -> JSONResponse:
        return respond(request, exc.kind, exc.message)

    async def on_validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        if syntax_error(exc):
            return respond(request, "json_syntax", describe_validation(exc))
        if all(e.get("type") == "missing" and tuple(e.get("loc", ())) == ("body",) for e in exc.errors()) and (
                not await request.body()):  # serde_json reads no value from no bytes: TEI's 400
            return respond(request, "json_syntax", f"the body is empty; send {example_for(request.url.path)}")
        return respond(request, "validation", describe_validation(exc, example_for(request.url.path))
                       + served_task_hint(request))

    async def on_http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.detail == UNPARSED:
            return respond(request, "json_syntax", _unparsed(exc.__cause__))
        kind = STARLETTE_KINDS.get(exc.status_code, "validation" if exc.status_code < 500 else "backend")
        if kind == "not_found":
            return respond(request, kind, not_found(request.url.path))
        return respond(request, kind, str(exc.detail))

    async def on_tokenizer(request: Request, exc: TokenizerLoadError) -> JSONResponse:
        # a tokenizer that loaded but fails on this request's text (a tokenizer.json regex that gives up:
        # `tokenizer.inputs.panic_error`): the model's files are at fault, and the other requests go on
        log.warning("request %s: %s", getattr(request.state, "request_id", "-"), exc)
        return respond(request, "backend", str(exc))

    async def on_bug(request: Request, exc: Exception) -> JSONResponse:
        request_id = getattr(request.state, "request_id", "-")
        log.error("request %s: unexpected %s: this is a bug", request_id, type(exc).__name__, exc_info=exc)
        return respond(request, "backend", f"internal error (request id {request_id}): this is a bug")

    app.add_exception_handler(ServerError, on_server_error)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(TokenizerLoadError, on_tokenizer)
    app.add_exception_handler(Exception, on_bug)

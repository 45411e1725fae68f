"""How the server reads a JSON body and tags each answer, below the routes.

- A JSON object that names a key twice is refused (422 naming the key), as TEI's serde parser refuses a
  duplicate field; Python's `json` would keep the last value silently.
- Every answer carries `x-request-id`, errors of the HTTP layer included: the id the server logs a failure
  under.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from fastapi import Request
from fastapi.routing import APIRoute

DUPLICATE = "duplicate key"  # the start of the parse error a repeated key raises (errors.describe_validation)


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        key = next(k for k, _ in pairs if k in seen or seen.add(k))  # type: ignore[func-returns-value]
        raise json.JSONDecodeError(f"{DUPLICATE} {json.dumps(key, ensure_ascii=False)}", "", 0)
    return obj


class StrictJSONRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = json.loads(await self.body(), object_pairs_hook=_unique_keys)
        return self._json


class StrictJSONRoute(APIRoute):
    """A route whose body is read by `StrictJSONRequest`."""

    def get_route_handler(self):
        handle = super().get_route_handler()

        async def handler(request: Request):
            # The same object, not a copy over the same scope: the error handlers read the body it keeps.
            request.__class__ = StrictJSONRequest
            return await handle(request)

        return handler


def new_request_id() -> str:
    return uuid.uuid4().hex


class RequestIds:
    """ASGI, outermost: a request id in the request's state (`request.state.request_id`) and its
    `x-request-id` header on the answer, whoever writes it (a route, an error handler, the key or body checks,
    the CORS layer)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        state = scope.setdefault("state", {})
        request_id = state.setdefault("request_id", new_request_id())
        header = (b"x-request-id", request_id.encode("ascii"))

        async def tagged(message):
            if message["type"] == "http.response.start" and not any(
                    name.lower() == b"x-request-id" for name, _ in message.get("headers", ())):
                message = {**message, "headers": [*message.get("headers", ()), header]}
            await send(message)

        await self.app(scope, receive, tagged)

"""How the server reads a JSON body and tags each answer, below the routes.

- A JSON object that names a key twice is refused (422 naming the key), as TEI's serde parser refuses a
  duplicate field; Python's `json` would keep the last value silently.
- What serde_json cannot read is refused (400, `BodyNotJSON`) although Python's `json.loads(bytes)` reads it:
  UTF-16 or UTF-32 (which it detects), a byte order mark (which it skips), the literals NaN, Infinity and
  -Infinity (which it takes for numbers). TEI answers each 400 (axum's `Json`: a syntax error), as docs/server.md
  says of a body that is not UTF-8 JSON.
- Every answer carries `x-request-id`, errors of the HTTP layer included: the id the server logs a failure
  under.
"""

from __future__ import annotations

import json
import re
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


class BodyNotJSON(ValueError):
    """A body that is not UTF-8 JSON; the message says what is wrong with it and what to send (errors.py answers
    it 400 `BadRequest`)."""


def json_text(body: bytes) -> str:
    """The body as text: UTF-8 without a byte order mark, as RFC 8259 and serde_json read JSON."""
    encoding = json.detect_encoding(body)  # what json.loads(bytes) would have decoded it as
    if encoding == "utf-8-sig":
        raise BodyNotJSON("the body starts with a UTF-8 byte order mark (bytes EF BB BF), which JSON sent over a "
                          "network must not carry (RFC 8259); send the JSON without it")
    if encoding != "utf-8":
        raise BodyNotJSON(f"the body is {encoding.upper()} (its first bytes are {body[:4].hex(' ').upper()}), not "
                          "UTF-8; send the JSON encoded in UTF-8")
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as e:
        raise BodyNotJSON(f"the body is not valid UTF-8 (byte 0x{body[e.start]:02x} at byte {e.start + 1}); send "
                          "the JSON encoded in UTF-8") from None


def _not_a_number(literal: str):
    raise BodyNotJSON(f"the body holds {literal}, which is not a JSON number (JSON has no NaN or Infinity); "
                      "send a finite number")


class StrictJSONRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = json.loads(json_text(await self.body()), object_pairs_hook=_unique_keys,
                                    parse_constant=_not_a_number)
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


# An id a proxy or client sent (`x-request-id`) is kept, so that its logs and ours name a request alike (audit
# 44: a new one replaced it); only a short one of safe characters, since it goes into headers and log lines.
GIVEN_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


def given_request_id(scope) -> str | None:
    for name, value in scope.get("headers", ()):
        if name == b"x-request-id":
            text = value.decode("latin-1")
            return text if GIVEN_ID.fullmatch(text) else None
    return None


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
        request_id = state.setdefault("request_id", given_request_id(scope) or new_request_id())
        header = (b"x-request-id", request_id.encode("ascii"))

        async def tagged(message):
            if message["type"] == "http.response.start" and not any(
                    name.lower() == b"x-request-id" for name, _ in message.get("headers", ())):
                message = {**message, "headers": [*message.get("headers", ()), header]}
            await send(message)

        await self.app(scope, receive, tagged)

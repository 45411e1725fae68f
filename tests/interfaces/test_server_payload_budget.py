"""--max-payload-in-flight: the bytes of request bodies the server holds at once, all requests together. Each
body costs up to ~4 times its size while it is parsed and served (a 2 MB body of emoji: 7.6 MB measured), and
the other limits let 512 requests of 2 MB be in flight (~4 GB); past the budget a request's body is read to its
end without being kept, and answered 429 `Overloaded` with Retry-After (a connection closed with a body unread
reaches the client as a reset, not as the 429).

The app in process (its ASGI callable), with a `receive` the test controls."""

from __future__ import annotations

import asyncio
import json

import pytest

pytest.importorskip("fastapi")
from click.testing import CliRunner  # noqa: E402

from coulisse.interfaces.server import ServerSettings, create_app  # noqa: E402
from coulisse.interfaces.server.limits import REQUEST  # noqa: E402

BUDGET = 1000


def scope(path: str, headers: list[tuple[bytes, bytes]]) -> dict:
    return {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
            "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "", "server": ("t", 80),
            "client": ("c", 1), "headers": [(b"content-type", b"application/json"), *headers]}


async def call(app, path: str, headers: list, receive) -> tuple[int, dict, dict]:
    sent: list[dict] = []

    async def send(message):
        sent.append(message)

    await app(scope(path, headers), receive, send)
    body = b"".join(m.get("body", b"") for m in sent[1:])
    return sent[0]["status"], dict(sent[0]["headers"]), json.loads(body)


def length(n: int) -> list:
    return [(b"content-length", str(n).encode())]


def chunked() -> list:
    return [(b"transfer-encoding", b"chunked")]


def body_of(*chunks: bytes, complete: bool = True):
    """The body in `chunks`; not `complete`: more is announced, and never comes."""
    messages = [{"type": "http.request", "body": c, "more_body": i < len(chunks) - 1 or not complete}
                for i, c in enumerate(chunks)]

    async def receive():
        if messages:
            return messages.pop(0)
        await asyncio.sleep(3600)

    return receive


def test_bodies_past_the_budget_are_answered_429_and_their_share_comes_back(classifier):
    """A request holds 700 bytes of the 1,000 while its body arrives (slowly: --body-timeout then ends it).
    Meanwhile a 400-byte one is refused 429, a chunked one whose chunks pass the budget too, each once its body
    was read (and dropped), the connection kept; a 300-byte one is served; once the first is answered, the 400
    bytes pass."""
    app = create_app(classifier, ServerSettings(payload_limit=BUDGET, max_payload_in_flight=BUDGET, body_timeout=1))

    async def scenario():
        holding = asyncio.ensure_future(call(app, "/predict", length(700), body_of(b'{"inputs": ', complete=False)))
        await asyncio.sleep(0.1)
        refused = await call(app, "/predict", length(400), body_of(b"{" + b" " * 398 + b"}"))
        cut = await call(app, "/nope", chunked(), body_of(b" " * 200, b" " * 200))
        fits = await call(app, "/nope", length(300), body_of(b"{" + b" " * 298 + b"}"))
        held = await holding
        after = await call(app, "/nope", length(400), body_of(b"{" + b" " * 398 + b"}"))
        return refused, cut, fits, held, after

    refused, cut, fits, held, after = asyncio.run(scenario())
    for status, headers, body in (refused, cut):
        assert status == 429 and body["error_type"] == "Overloaded", body
        assert headers[b"retry-after"] == b"1" and b"connection" not in headers
        assert "--max-payload-in-flight" in body["error"] and "700 bytes" in body["error"], body["error"]
    assert fits[0] == 404 and held[0] == 408 and after[0] == 404, (fits, held, after)


def test_the_budget_is_at_least_one_largest_body(classifier):
    """Set below --payload-limit in process (a larger PAYLOAD_LIMIT, the default budget), the budget rises to it:
    a body of the largest size is served."""
    app = create_app(classifier, ServerSettings(payload_limit=2 * BUDGET, max_payload_in_flight=BUDGET))
    body = b'{"inputs": "' + b"a" * (2 * BUDGET - 14) + b'"}'
    status, _, answer = asyncio.run(call(app, "/nope", length(len(body)), body_of(body)))
    assert status == 404, answer


def test_the_command_refuses_a_budget_below_the_payload_limit(monkeypatch):
    from coulisse.interfaces.cli import cli

    for name in ("COULISSE_MAX_PAYLOAD_IN_FLIGHT", "COULISSE_PAYLOAD_LIMIT", "PAYLOAD_LIMIT"):
        monkeypatch.delenv(name, raising=False)
    result = CliRunner().invoke(cli, ["serve", "-m", "x", "--max-payload-in-flight", "1000"])
    assert result.exit_code == 2
    assert (f"1000 bytes is less than --payload-limit {REQUEST.payload_limit}: a body of that size could never be "
            f"served; pass {REQUEST.payload_limit} or more.") in result.output, result.output

"""`coulisse serve`: text-embeddings-inference's HTTP API over a coulisse pipeline, with dynamic batching.

Layers, as in TEI: `app` (HTTP routes, limits) -> `service` (tokenize, queue, post-process)
-> `batching` (one task owns the queue; one worker thread runs the engine). Below the routes,
against hostile clients: `protocol` (uvicorn's h11 with head deadlines, a connection cap, JSON parser
errors) and `guard` (ASGI: the key before the body, body size and deadline, HEAD, shutdown answers).
`errors` maps every failure to a status in one table; `metrics` renders Prometheus text; `routing` serves
several models in one process (a route prefix, X-Model or OpenAI's `model` picks one); `settings` holds what a
model is served with; `command` is the CLI (`listen`: where it listens).

    from coulisse import pipeline
    from coulisse.interfaces.server import ServerSettings, create_app
    app = create_app(pipeline("sentiment-analysis", model="tblard/tf-allocine"), ServerSettings())
"""

from __future__ import annotations

__all__ = ["ServerSettings", "create_app"]


def __getattr__(name: str):
    # The CLI imports `command` at start-up: keep fastapi and torch out of that import.
    if name == "create_app":
        from coulisse.interfaces.server.app import create_app

        return create_app
    if name == "ServerSettings":
        from coulisse.interfaces.server.settings import ServerSettings

        return ServerSettings
    raise AttributeError(f"module 'coulisse.interfaces.server' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))

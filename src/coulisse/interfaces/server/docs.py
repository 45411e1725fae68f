"""`/docs` without the network: Swagger UI's files come from the `swagger-ui-bundle-v2` package (the serve
extra) and are served by the server itself, where FastAPI's default page loads them from a CDN (a blank
page on an offline machine). Also: the limits the routes enforce, written into the OpenAPI document so
generated clients (and schemathesis) send what the server takes.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from fastapi import Request
from fastapi.openapi.docs import get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse

if TYPE_CHECKING:
    from fastapi import FastAPI

    from coulisse.interfaces.server.service import Service

log = logging.getLogger(__name__)
ASSETS = "/docs-assets"
ASSET_FILES = {"swagger-ui-bundle.js": "text/javascript", "swagger-ui.css": "text/css",
               "favicon-32x32.png": "image/png"}


def add_offline_docs(app: FastAPI) -> None:
    """Replace FastAPI's CDN-backed /docs with one served from the installed Swagger UI bundle."""
    try:
        from swagger_ui_bundle import swagger_ui_path
    except ImportError:
        log.warning("swagger-ui-bundle-v2 is not installed: /docs loads Swagger UI from a CDN "
                    "(pip install 'coulisse[serve]')")
        return
    from pathlib import Path

    from fastapi.responses import FileResponse

    from coulisse.interfaces.server.errors import ServerError

    app.router.routes = [r for r in app.router.routes if getattr(r, "path", None) not in ("/docs",
                                                                                         "/docs/oauth2-redirect")]

    @app.get(ASSETS + "/{name}", include_in_schema=False)
    async def asset(name: str) -> FileResponse:
        # The three files the page loads, not the bundle's whole folder: its stock index.html (which fetches the
        # petstore example from the internet), templates and a 1.9 MB source map were public (audit 46)
        if name not in ASSET_FILES:
            raise ServerError("not_found", f"no file {name!r} under {ASSETS}; the docs page is GET /docs")
        return FileResponse(Path(swagger_ui_path) / name, media_type=ASSET_FILES[name])

    @app.get("/docs", include_in_schema=False)
    async def docs(request: Request) -> HTMLResponse:
        # Under a model's prefix (several models, routing.py), its own schema: /{name}/openapi.json.
        root = request.scope.get("root_path", "").rstrip("/")
        page = get_swagger_ui_html(openapi_url=root + app.openapi_url, title=f"{app.title} - Swagger UI",
                                   swagger_js_url=f"{ASSETS}/swagger-ui-bundle.js",
                                   swagger_css_url=f"{ASSETS}/swagger-ui.css",
                                   swagger_favicon_url=f"{ASSETS}/favicon-32x32.png",
                                   oauth2_redirect_url="/docs/oauth2-redirect")
        # FastAPI's template names no language: a screen reader then guesses (audit 45)
        return HTMLResponse(bytes(page.body).decode("utf-8").replace("<html>", '<html lang="en">', 1))

    @app.get("/docs/oauth2-redirect", include_in_schema=False)
    async def oauth2_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()


# Request fields that hold the client's batch, per request model (else TEI's 422, which the schema says).
BATCH_FIELDS = {"EmbedAllRequest": ("inputs",), "RerankRequest": ("texts",), "TokenizeRequest": ("inputs",),
                "DecodeRequest": ("ids",), "SimilarityInput": ("sentences",), "OpenAIEmbeddingRequest": ("input",)}


def document_request_limits(schema: dict, service: Service) -> dict:
    """Batch sizes, the vocabulary's id range, the model's prompts and its dimensions, in the schema."""
    models = schema.get("components", {}).get("schemas", {})
    most = service.settings.max_client_batch_size
    for name, fields in BATCH_FIELDS.items():
        for field in fields:
            prop = models.get(name, {}).get("properties", {}).get(field, {})
            for form in [prop, *prop.get("anyOf", [])]:
                if form.get("type") == "array" and form.get("items", {}).get("type") != "integer":
                    form.update(minItems=1, maxItems=most - (name == "SimilarityInput"))
    vocab = len(service.pipe.tokenizer)
    # the length of /embed's vectors, what `dimensions` may keep: the vocabulary's (SPLADE), the hidden size cut to
    # the folder's truncate_dim (sentence-transformers), else the hidden size
    size = (service.pipe.vocab_size if service.sparse else service.pipe.embedding_size() if service.embedding
            else service.pipe.config.hidden_size)
    prompts = sorted(service.prompts.prompts)
    _walk(schema, vocab, size, prompts)
    return schema


def _walk(node, vocab: int, size: int, prompts: list[str]) -> None:
    if isinstance(node, list):
        for child in node:
            _walk(child, vocab, size, prompts)
        return
    if not isinstance(node, dict):
        return
    items = node.get("items")
    if node.get("type") == "array" and isinstance(items, dict) and items.get("type") == "integer":
        items["maximum"] = vocab - 1  # token ids
    props = node.get("properties", {})
    if "prompt_name" in props:
        props["prompt_name"] = {"anyOf": [{"type": "string", "enum": prompts}, {"type": "null"}]} if prompts \
            else {"type": "null"}
    if "dimensions" in props:
        for form in props["dimensions"].get("anyOf", [props["dimensions"]]):
            if form.get("type") == "integer":
                form["maximum"] = size
    for value in node.values():
        _walk(value, vocab, size, prompts)

"""text-embeddings-inference's launcher environment, read as a fallback by `coulisse serve`, so a TEI
docker-compose file or Kubernetes manifest carries over: an option given on the command line or as
COULISSE_<NAME> wins; else TEI's variable; else the default. Plain click and os: imported at CLI start-up.

HOSTNAME is not read: every shell sets it to the machine's name, which TEI would bind to.
"""

from __future__ import annotations

import os

import click
from click.core import ParameterSource

# parameter of `coulisse serve` -> TEI's environment variable (router/src/main.rs, clap's `env`)
TEI_ENV = {"model": "MODEL_ID", "port": "PORT", "max_batch_tokens": "MAX_BATCH_TOKENS", "api_key": "API_KEY",
           "served_model_name": "SERVED_MODEL_NAME", "revision": "REVISION", "dtype": "DTYPE",
           "cors_allow_origin": "CORS_ALLOW_ORIGIN", "max_client_batch_size": "MAX_CLIENT_BATCH_SIZE",
           "max_concurrent_requests": "MAX_CONCURRENT_REQUESTS", "payload_limit": "PAYLOAD_LIMIT",
           "default_prompt_name": "DEFAULT_PROMPT_NAME", "default_prompt": "DEFAULT_PROMPT",
           "auto_truncate": "AUTO_TRUNCATE", "max_batch_requests": "MAX_BATCH_REQUESTS", "pooling": "POOLING"}


def with_tei_environment(ctx: click.Context, params: dict) -> dict:
    """`params` with each value still at its default replaced by TEI's variable when it is set."""
    values = dict(params)
    by_name = {p.name: p for p in ctx.command.params}
    for name, variable in TEI_ENV.items():
        raw = os.environ.get(variable)
        if raw is None or name not in by_name or ctx.get_parameter_source(name) != ParameterSource.DEFAULT:
            continue
        param = by_name[name]
        try:
            # TEI serves one model: its variable is one value, even for an option given several times here.
            values[name] = param.process_value(ctx, (raw,) if param.multiple else raw)
        except click.BadParameter as e:
            raise click.BadParameter(f"{e.message} (from TEI's {variable})", ctx=ctx, param=param) from None
    return values


def cors_origins(value: str | None) -> list[str] | None:
    """TEI's --cors-allow-origin: origins separated by commas, or "*"."""
    if not value:
        return None
    return [origin.strip() for origin in value.split(",") if origin.strip()]

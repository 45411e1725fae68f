"""text-embeddings-inference's launcher environment, read as a fallback by `coulisse serve`, so a TEI
docker-compose file or Kubernetes manifest carries over: an option given on the command line or as
COULISSE_<NAME> wins; else TEI's variable; else the default. Plain click and os: imported at CLI start-up.

HOSTNAME is not read: every shell sets it to the machine's name, which TEI would bind to.
"""

from __future__ import annotations

import logging
import os
import re

import click
from click.core import ParameterSource

log = logging.getLogger("coulisse.interfaces.server.command")

# parameter of `coulisse serve` -> TEI's environment variable (router/src/main.rs, clap's `env`)
TEI_ENV = {"model": "MODEL_ID", "port": "PORT", "max_batch_tokens": "MAX_BATCH_TOKENS", "api_key": "API_KEY",
           "served_model_name": "SERVED_MODEL_NAME", "revision": "REVISION", "dtype": "DTYPE",
           "cors_allow_origin": "CORS_ALLOW_ORIGIN", "max_client_batch_size": "MAX_CLIENT_BATCH_SIZE",
           "max_concurrent_requests": "MAX_CONCURRENT_REQUESTS", "payload_limit": "PAYLOAD_LIMIT",
           "default_prompt_name": "DEFAULT_PROMPT_NAME", "default_prompt": "DEFAULT_PROMPT",
           "auto_truncate": "AUTO_TRUNCATE", "max_batch_requests": "MAX_BATCH_REQUESTS", "pooling": "POOLING",
           "json_output": "JSON_OUTPUT"}


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
    origins = [origin.strip() for origin in value.split(",") if origin.strip()]
    for origin in origins:  # compared as they are with the browser's Origin header, as TEI compares them
        if origin not in ("*", "null") and not ORIGIN.fullmatch(origin):
            log.warning("--cors-allow-origin %r matches no browser: an Origin is scheme://host[:port], without a "
                        "path or a trailing slash (e.g. %r)", origin, _as_origin(origin))
    return origins


ORIGIN = re.compile(r"[a-zA-Z][a-zA-Z0-9+.-]*://[^/\s]+")


def _as_origin(value: str) -> str:
    """What was likely meant: the scheme and host of `value` (https:// where it names none)."""
    scheme, _, rest = value.partition("://") if "://" in value else ("https", "", value)
    return f"{scheme}://{rest.split('/')[0]}"


# TEI launcher flags with no counterpart here, accepted so that a TEI manifest starts (an unknown flag is exit 2,
# a crash loop): flag -> (parameter, what coulisse does instead). --hf-token and --huggingface-hub-cache are
# carried to huggingface_hub's variables, which coulisse reads at load.
TEI_NO_COUNTERPART = {
    "--prometheus-port": ("prometheus_port", "its metrics are served on --port, at /metrics"),
    "--tokenization-workers": ("tokenization_workers", "it has no pool of tokenization workers to size"),
    "--otlp-endpoint": ("otlp_endpoint", "it exports no OpenTelemetry spans"),
    "--otlp-service-name": ("otlp_service_name", "it exports no OpenTelemetry spans"),
    "--disable-spans": ("disable_spans", "it exports no OpenTelemetry spans"),
    "--uds-path": ("uds_path", "it runs no Python backend over a Unix socket"),
    "--dense-path": ("dense_path", "it runs a folder's Transformer, Pooling and Normalize modules; a Dense "
                                   "module in modules.json is refused at load"),
}
# (in this order: --hf-token, set last, wins over its deprecated spelling, as in TEI)
TEI_CARRIED = {"--hf-api-token": ("hf_api_token", "HF_TOKEN"), "--hf-token": ("hf_token", "HF_TOKEN"),
               "--huggingface-hub-cache": ("huggingface_hub_cache", "HF_HUB_CACHE")}


def tei_launcher_options(f):
    """The flags of TEI_NO_COUNTERPART and TEI_CARRIED, hidden from --help (docs/server.md lists them)."""
    for flag, (name, _) in reversed(list(TEI_CARRIED.items())):
        f = click.option(flag, name, default=None, hidden=True)(f)
    for flag, (name, _) in reversed(list(TEI_NO_COUNTERPART.items())):
        if name == "disable_spans":
            f = click.option(flag, name, is_flag=True, default=False, hidden=True)(f)
        else:
            f = click.option(flag, name, default=None, hidden=True)(f)
    return f


def apply_tei_launcher(values: dict) -> None:
    """Say once which TEI flags given have no effect here; carry the token and the cache to huggingface_hub."""
    for flag, (name, instead) in TEI_NO_COUNTERPART.items():
        if values.get(name):
            log.warning("%s (text-embeddings-inference's) is accepted without effect: coulisse serve %s", flag,
                        instead)
    for name, variable in TEI_CARRIED.values():
        if values.get(name):
            os.environ[variable] = values[name]


# Kubernetes gives every pod of a namespace `<SERVICE>_PORT=tcp://10.0.0.7:8080` for each Service: a Service
# named `coulisse` sets COULISSE_PORT to that, which is no port (and TEI's PORT is never set that way).
SERVICE_LINK = re.compile(r"(tcp|udp|sctp)://[^\s]+:\d+")


class Port(click.ParamType):
    """A port number; from the environment, a Kubernetes service link is read as no setting (said once)."""

    name = "integer range"

    def convert(self, value, param, ctx):
        if isinstance(value, str) and SERVICE_LINK.fullmatch(value.strip()) and ctx is not None and \
                ctx.get_parameter_source(param.name) == ParameterSource.ENVIRONMENT:
            log.warning("COULISSE_PORT=%s is the link Kubernetes sets for a Service named coulisse, not a port: "
                        "ignored (pass --port, or PORT)", value.strip())
            ctx.set_parameter_source(param.name, ParameterSource.DEFAULT)
            return param.get_default(ctx)
        return click.IntRange(0, 65535).convert(value, param, ctx)

"""The `coulisse serve` command. Every option has an environment fallback (COULISSE_<NAME>).

`serve` reads top to bottom as the start-up does: options checked (TEI's environment read for those not given),
the address checked (listen.py), each model loaded and announced (`load_served_model`), then uvicorn run (`run_server`).
Nothing loads before every option and the address are checked.
"""

from __future__ import annotations

import importlib
import logging
import os
import signal
from functools import partial

import click
from click.core import ParameterSource

from coulisse.interfaces.logs import say
from coulisse.interfaces.options import (
    DEFAULT_HELP,
    ENV_LIST,
    FAST_KEY,
    JSON_LOGS_KEY,
    OURS_KEY,
    SERVER_SPINCOUNT,
    Choice,
    EnvChoice,
    check_precision,
    fast_option,
    load_on_torch_thread,
    load_pipeline,
    positive,
    quantize_option,
    set_wait_policy,
    threads_option,
)
from coulisse.interfaces.server.limits import BATCH, CONNECTION, REQUEST
from coulisse.interfaces.server.listen import allow_open_files, check_listen, dual_stack, is_loopback
from coulisse.interfaces.server.tei_env import (
    Port,
    apply_tei_launcher,
    cors_origins,
    tei_launcher_options,
    with_tei_environment,
)

# pipeline()'s other names of served tasks: not taken by --task (TEI's names), but a close one is suggested
TASK_ALIASES = {"sentiment-analysis": "text-classification", "ner": "token-classification"}
SERVED_TASKS = ("text-classification", "feature-extraction", "token-classification", "question-answering",
                "fill-mask", "zero-shot-classification", "sparse-embedding")

log = logging.getLogger(__name__)


@click.command()
@click.option("-m", "--model", multiple=True, default=None, envvar="COULISSE_MODEL", type=ENV_LIST,
              help=f"Hub id or local folder of the checkpoint (text-classification's {DEFAULT_HELP}); repeat it "
                   "to serve several models in one process (routes: /NAME/..., X-Model, OpenAI's `model`; in "
                   "COULISSE_MODEL: comma-separated).")
@click.option("--task", type=EnvChoice(list(SERVED_TASKS), aliases=TASK_ALIASES), multiple=True, default=None,
              envvar="COULISSE_TASK",
              help="Override the task read from the checkpoint (modules.json: feature-extraction, else "
                   "config.json's architectures); text-classification serves /predict, feature-extraction /embed, "
                   "every task `POST /`. Several models: once per --model, in order (COULISSE_TASK: comma-separated).")
@click.option("-H", "--host", "--hostname", default="127.0.0.1", show_default=True, envvar="COULISSE_HOST",
              help="Address to listen on (0.0.0.0: every interface).")
@click.option("-p", "--port", type=Port(), default=8080, show_default=True, envvar="COULISSE_PORT",
              help="Port to listen on.")
@threads_option(help_text="CPU threads for every batch (default: all physical cores, at most a container's CPU "
                           "limit; docs/server.md, \"Threads and contention\").")
@quantize_option(help_text="int8: dynamic int8 linear layers.")
@fast_option()
@click.option("-T", "--max-batch-tokens", type=int, default=BATCH.max_batch_tokens, show_default=True,
              callback=positive, envvar="COULISSE_MAX_BATCH_TOKENS",
              help="A batch closes when it holds this many tokens.")
@click.option("-B", "--max-batch-requests", type=int, default=BATCH.max_batch_requests, show_default=True,
              callback=positive, envvar="COULISSE_MAX_BATCH_REQUESTS", help="... or when it holds this many inputs.")
@click.option("-w", "--max-wait-ms", type=float, default=BATCH.max_wait_ms, show_default=True,
              envvar="COULISSE_MAX_WAIT_MS",
              help="... or when its oldest input waited this long and the model is idle.")
@click.option("-b", "--max-client-batch-size", type=int, default=REQUEST.max_client_batch_size, show_default=True,
              callback=positive, envvar="COULISSE_MAX_CLIENT_BATCH_SIZE", help="Most inputs in one request (else 422).")
@click.option("-c", "--max-concurrent-requests", type=int, default=REQUEST.max_concurrent_requests,
              show_default=True, callback=positive, envvar="COULISSE_MAX_CONCURRENT_REQUESTS",
              help="Most requests in flight (else 429).")
# TEI's syntax: `--auto-truncate` alone is true, `--auto-truncate false` or `=false` turns it off.
@click.option("--auto-truncate", type=click.BOOL, is_flag=False, flag_value=True, default=True, show_default=True,
              envvar="COULISSE_AUTO_TRUNCATE", metavar="[true|false]",
              help="Truncate long inputs when a request does not say (--no-auto-truncate: false).")
@click.option("--no-auto-truncate", "no_auto_truncate", is_flag=True, default=False, hidden=True)
@click.option("--payload-limit", type=int, default=REQUEST.payload_limit, show_default=True, callback=positive,
              envvar="COULISSE_PAYLOAD_LIMIT", help="Largest request body in bytes (else 413).")
@click.option("--max-payload-in-flight", type=int, default=REQUEST.max_payload_in_flight, show_default=True,
              callback=positive, envvar="COULISSE_MAX_PAYLOAD_IN_FLIGHT",
              help="Most bytes of request bodies held at once, all requests together (else 429); at least "
                   "--payload-limit.")
@click.option("--pooling", type=Choice(["mean", "cls", "splade"]), default=None, envvar="COULISSE_POOLING",
              help="/embed pooling (default: 1_Pooling/config.json, else mean); splade: a masked-LM model's "
                   "sparse embeddings (/embed_sparse), task sparse-embedding.")
@click.option("--api-key", default=None, envvar="COULISSE_API_KEY", show_default=False,
              help="Require `Authorization: Bearer KEY` (prefer the env var: argv is visible to `ps`).")
@click.option("--shutdown-timeout", type=float, default=30.0, show_default=True,
              envvar="COULISSE_SHUTDOWN_TIMEOUT",
              help="On SIGTERM, seconds to finish in-flight requests; those still running then get 503.")
@click.option("--max-connections", type=int, default=CONNECTION.max_connections, show_default=True,
              callback=positive, envvar="COULISSE_MAX_CONNECTIONS",
              help="Most open connections; past it the longest idle one is closed, else a request on one more gets "
                   "503 with Retry-After (GET /health and /ping are answered).")
@click.option("--header-timeout", type=float, default=CONNECTION.header_timeout, show_default=True,
              envvar="COULISSE_HEADER_TIMEOUT",
              help="Seconds for a request line and headers to arrive (else 408, closed).")
@click.option("--body-timeout", type=float, default=CONNECTION.body_timeout, show_default=True,
              envvar="COULISSE_BODY_TIMEOUT", help="Seconds for a whole request body to arrive (else 408, closed).")
@click.option("--keep-alive-timeout", type=float, default=CONNECTION.keep_alive_timeout, show_default=True,
              envvar="COULISSE_KEEP_ALIVE_TIMEOUT",
              help="Seconds an idle connection stays open between requests (longer than clients keep theirs).")
@click.option("--send-timeout", type=float, default=CONNECTION.send_timeout, show_default=True,
              envvar="COULISSE_SEND_TIMEOUT",
              help="Seconds a client may read no byte of its answer before it is dropped and the connection closed.")
@click.option("--access-log/--no-access-log", default=True, show_default=True, envvar="COULISSE_ACCESS_LOG",
              help="One log line per request on stderr, as TEI logs each request: method, path (no query string), "
                   "status (499: the client left), milliseconds, request id, peer; never headers.")
@click.option("--json-output", is_flag=True, default=False, envvar="COULISSE_JSON_OUTPUT",
              help="Logs as JSON objects, one per line, under TEI's keys (timestamp, level, message, target; the "
                   "access log's method, path, status, duration_ms, request_id...): for a log pipeline.")
# text-embeddings-inference's launcher flags (its environment names: tei_env.py).
@click.option("--model-id", multiple=True, default=None, help="TEI's name for --model (repeatable too).")
@click.option("--served-model-name", multiple=True, default=None, envvar="COULISSE_SERVED_MODEL_NAME", type=ENV_LIST,
              help="The model's name in /info, /v1/models, OpenAI's `model` field and, with several models, its "
                   "route prefix /NAME/ (default: --model). Several models: once per --model, in order.")
@click.option("--revision", default=None, envvar="COULISSE_REVISION", help="Hub revision (branch, tag or commit).")
@click.option("--dtype", type=Choice(["float32", "float16", "bfloat16"]), default=None,
              envvar="COULISSE_DTYPE", help="Weights' dtype (default: float32 on the CPU).")
@click.option("--cors-allow-origin", default=None, envvar="COULISSE_CORS_ALLOW_ORIGIN",
              help="Origins allowed to call the API from a browser, comma-separated, or * (default: none).")
@click.option("--default-prompt-name", default=None, envvar="COULISSE_DEFAULT_PROMPT_NAME",
              help="The prompt of config_sentence_transformers.json put before each text whose request names none "
                   "(default: no prompt; the file's default_prompt_name is not read, as in TEI).")
@click.option("--default-prompt", default=None, envvar="COULISSE_DEFAULT_PROMPT",
              help="A text put before each text whose request names no prompt (not with --default-prompt-name).")
@tei_launcher_options
def serve(model, task, host, port, threads, quantize, max_batch_tokens, max_batch_requests, max_wait_ms,
          max_client_batch_size, max_concurrent_requests, auto_truncate, no_auto_truncate, payload_limit, pooling,
          api_key,
          max_payload_in_flight, shutdown_timeout, max_connections, header_timeout, body_timeout, keep_alive_timeout,
          send_timeout, access_log, json_output, **tei):
    """Serve the model (-m/--model) over HTTP with text-embeddings-inference's API and dynamic batching.

    Ready when `GET /health` answers 200; `/docs` shows the API. SIGTERM stops accepting,
    finishes the requests in flight (those still running after --shutdown-timeout get 503),
    and exits 0; Ctrl-C does the same and exits 130. Every error is JSON.

    \b
    Examples:
      coulisse serve --model tblard/tf-allocine --port 8080
      curl -s localhost:8080/predict -H 'Content-Type: application/json' \\
           -d '{"inputs": [["Super film !"], ["Quel ennui..."]]}'
      COULISSE_API_KEY=secret coulisse serve -q int8 --max-batch-tokens 8192
      coulisse serve --fast          # int8 (bf16 without an int8 GEMM): GET /info says which ("model_dtype")
      coulisse serve --task feature-extraction -m sentence-transformers/all-MiniLM-L6-v2
      coulisse serve -m tblard/tf-allocine -m sentence-transformers/all-MiniLM-L6-v2 \\
           --served-model-name allocine --served-model-name minilm
      curl -s localhost:8080/minilm/embed -d '{"inputs": "Le chat dort."}' -H 'Content-Type: application/json'
    """
    ctx = click.get_current_context()
    json_output = with_tei_environment(ctx, {"json_output": json_output})["json_output"]
    if json_output:
        json_logs(ctx)
    # Before torch loads (docs/server.md, "Threads and contention").
    wait_policy = set_wait_policy("GOMP_SPINCOUNT", SERVER_SPINCOUNT)
    require_serve_extra()
    check_durations(max_wait_ms, shutdown_timeout, header_timeout, body_timeout, keep_alive_timeout, send_timeout)
    given = tei_options(ctx, tei, {"model": model, "port": port, "max_batch_tokens": max_batch_tokens,
                                   "api_key": api_key, "max_client_batch_size": max_client_batch_size,
                                   "max_concurrent_requests": max_concurrent_requests, "payload_limit": payload_limit,
                                   "auto_truncate": auto_truncate, "max_batch_requests": max_batch_requests,
                                   "pooling": pooling})
    check_payload_in_flight(ctx, max_payload_in_flight, given["payload_limit"])
    auto_truncate = auto_truncation(ctx, given["auto_truncate"], auto_truncate, no_auto_truncate)
    if host.startswith("[") and host.endswith("]"):  # an IPv6 address as URLs write it, [::] or [::1]
        host = host[1:-1]
    port, api_key = given["port"], given["api_key"]
    check_listen(host, port)  # before the models load: a port in use is said at once, in one line
    key_source = key_in_use(ctx, api_key, host, port)
    models, tasks, names = served_models(list(given["model"]), list(given["model_id"]), list(task),
                                         list(given["served_model_name"]))
    fast = bool(ctx.meta.get(FAST_KEY))
    check_precision(quantize, fast, given["dtype"])  # a usage error said with the command's usage, before any load
    from coulisse.interfaces.server.settings import ServerSettings

    shared = ServerSettings(  # what every model's settings hold; load_served_model adds each one's own
        max_wait_ms=max_wait_ms, max_client_batch_size=given["max_client_batch_size"],
        max_concurrent_requests=given["max_concurrent_requests"], auto_truncate=auto_truncate,
        payload_limit=given["payload_limit"], max_payload_in_flight=max_payload_in_flight, body_timeout=body_timeout,
        api_key=api_key or None, pooling=given["pooling"], threads=threads, fast=fast, wait_policy=wait_policy,
        default_prompt_name=given["default_prompt_name"], default_prompt=given["default_prompt"])
    served = [load_served_model(model, task, name, shared, given, quantize, key_source, json_output)
              for model, task, name in zip(models, tasks, names, strict=True)]
    check_memory(max_payload_in_flight)
    run_server(served_app(served), host, port, max_connections=max_connections, header_timeout=header_timeout,
               send_timeout=send_timeout, keep_alive_timeout=keep_alive_timeout, shutdown_timeout=shutdown_timeout,
               access_log=access_log, json_output=json_output)


# What a body in flight may cost, times its size: bytes, text and the parsed request (docs/server.md, "Bodies in
# memory": a 2 MB body of emoji took 7.6 MB).
BODY_COST = 4


def check_memory(max_payload_in_flight: int) -> None:
    """Said at start when the container's memory limit may not hold what the server holds with its models loaded
    plus its bodies in flight: past the limit the kernel kills it without a word (exit 137; audit 48)."""
    from coulisse.engine.memory_limit import memory_limit, resident_bytes

    limit, held = memory_limit(), resident_bytes()
    if limit is None or held is None or held + BODY_COST * max_payload_in_flight <= limit:
        return
    room = (limit - held) // BODY_COST
    way = (f"pass --max-payload-in-flight {room} or less (at least --payload-limit), or raise the limit" if room > 0
           else "raise the limit: the models alone fill it")
    log.warning("this container's memory limit is %.0f MB; the server holds %.0f MB with its models loaded, and "
                "its bodies in flight may take up to %d x --max-payload-in-flight = %.0f MB more: past the limit "
                "the kernel kills it without a word (exit 137). %s.", limit / 1e6, held / 1e6, BODY_COST,
                BODY_COST * max_payload_in_flight / 1e6, way[0].upper() + way[1:])


def require_serve_extra() -> None:
    """The server's own dependencies (fastapi, uvicorn): a missing one is said in one line, with the fix."""
    try:
        for module in ("app", "protocol", "service"):
            importlib.import_module(f"coulisse.interfaces.server.{module}")
    except ImportError as e:
        raise click.ClickException(f"{e.name} is missing: pip install 'coulisse[serve]'") from None


def check_durations(max_wait_ms: float, shutdown_timeout: float, header_timeout: float, body_timeout: float,
                    keep_alive_timeout: float, send_timeout: float) -> None:
    for name, value in (("--max-wait-ms", max_wait_ms), ("--shutdown-timeout", shutdown_timeout)):
        if value < 0:
            raise click.BadParameter(f"{value} is negative; pass 0 or more.", param_hint=name)
    for name, value in (("--header-timeout", header_timeout), ("--body-timeout", body_timeout),
                        ("--keep-alive-timeout", keep_alive_timeout), ("--send-timeout", send_timeout)):
        if not value > 0:
            raise click.BadParameter(f"{value} is not a positive number of seconds.", param_hint=name)


def tei_options(ctx: click.Context, tei: dict, params: dict) -> dict:
    """The options TEI's launcher takes too: its flags without effect said, and its environment (MODEL_ID, PORT,
    API_KEY...) for what neither the command line nor COULISSE_* set."""
    apply_tei_launcher(tei)
    given = with_tei_environment(ctx, {**tei, **params})
    if given["default_prompt_name"] is not None and given["default_prompt"] is not None:
        raise click.UsageError("--default-prompt-name and --default-prompt both given; pass one of them.")
    return given


def check_payload_in_flight(ctx: click.Context, max_payload_in_flight: int, payload_limit: int) -> None:
    if max_payload_in_flight < payload_limit and ctx.get_parameter_source(
            "max_payload_in_flight") != ParameterSource.DEFAULT:  # the default rises to --payload-limit
        raise click.BadParameter(f"{max_payload_in_flight} bytes is less than --payload-limit {payload_limit}: a body "
                                 f"of that size could never be served; pass {payload_limit} or more.",
                                 param_hint="--max-payload-in-flight")


def auto_truncation(ctx: click.Context, given: bool, auto_truncate: bool, no_auto_truncate: bool) -> bool:
    """--auto-truncate as given (TEI's AUTO_TRUNCATE included), off with --no-auto-truncate; not both on the
    command line."""
    if no_auto_truncate and auto_truncate and ctx.get_parameter_source(
            "auto_truncate") == ParameterSource.COMMANDLINE:
        raise click.UsageError("--auto-truncate and --no-auto-truncate both given; pass one of them.")
    return given and not no_auto_truncate


def key_in_use(ctx: click.Context, api_key: str | None, host: str, port: int) -> str | None:
    """Where the API key came from (None: no key), the key checked; a warning where no key guards a port other
    machines reach."""
    key_source = api_key_source(ctx, api_key)
    if key_source is not None:
        check_api_key(api_key or "", key_source)
    if not api_key and not is_loopback(host):
        log.warning("listening on %s without --api-key: whoever reaches port %s can use the model; pass --api-key "
                    "KEY, or --host 127.0.0.1 to answer this machine only", host, port)
    return key_source


def load_served_model(model: str | None, task: str | None, name: str | None, shared, given: dict, quantize,
               key_source: str | None, json_output: bool) -> tuple:
    """One --model: its task, its pipeline loaded on the torch thread, its settings (`shared`'s, with its own id,
    dtype, name and CORS origins); said once loaded."""
    from dataclasses import replace

    from coulisse.interfaces.server.detect import served_task

    if shared.pooling == "splade" and task in (None, "feature-extraction"):
        task = "sparse-embedding"  # TEI's --pooling splade on a masked-LM checkpoint
    task = served_task(task, model, given["revision"])
    # One budget: the pipeline's engine runs the batches the server's batcher closes on the same limits.
    # Several models share torch's threads: one process, and one thread for all its torch work, the loading
    # included (one OpenMP team; coulisse/engine/threads.py): the thread the batchers run forwards on.
    pipe = load_on_torch_thread(partial(load_served, task, model, shared.threads, quantize, shared.fast,
                                        revision=given["revision"], dtype=given["dtype"] or "auto",
                                        max_batch_tokens=given["max_batch_tokens"],
                                        max_batch_size=given["max_batch_requests"]))
    settings = replace(shared, model_id=model or pipe.checkpoint.name, dtype=precision(pipe), served_model_name=name,
                       cors_allow_origin=cors_origins(given["cors_allow_origin"]))
    announce(settings, task, pipe, key_source, json_output)
    return pipe, settings


def announce(settings, task: str, pipe, key_source: str | None, json_output: bool) -> None:
    """Said at every verbosity, before uvicorn's address: which model answers, for which task, in what."""
    name = settings.served_model_name
    started = (f"coulisse serve: {name or settings.model_id} ({task}, {settings.dtype}"
               f"{', --fast' if settings.fast else ''})")
    if key_source is not None:
        started += f"; requests need `Authorization: Bearer <key>` (the key from {key_source})"
    if json_output:
        say(log, started, model=name or settings.model_id, task=task, dtype=settings.dtype, fast=settings.fast,
            key_from=key_source)
    else:
        click.echo(started, err=True)
    log.info("%s: %s%s; OpenMP wait: %s", name or settings.model_id, pipe.preparation.describe(),
             " (--fast)" if settings.fast else "", settings.wait_policy)


def served_app(served: list):
    """One model's app, or the app that routes between several (routing.py)."""
    from coulisse.interfaces.server.app import create_app

    if len(served) == 1:
        return create_app(*served[0])
    from coulisse.interfaces.server.routing import several_models_app

    return several_models_app(served)


def run_server(app, host: str, port: int, *, max_connections: int, header_timeout: float, send_timeout: float,
               keep_alive_timeout: float, shutdown_timeout: float, access_log: bool, json_output: bool) -> None:
    """uvicorn on `app` with protocol.py's connection layer, until SIGTERM or Ctrl-C."""
    from coulisse.interfaces.server.protocol import DrainingServer, ProtocolLimits, uvicorn_config

    allow_open_files(max_connections)
    config = uvicorn_config(app, host, port, ProtocolLimits(header_timeout, max_connections, CONNECTION.max_head_bytes,
                                                            send_timeout),
                            keep_alive_timeout=keep_alive_timeout, shutdown_timeout=shutdown_timeout,
                            access_log=access_log, json_logs=json_output)
    # uvicorn handles SIGTERM: close the socket, wait for in-flight requests, run the lifespan
    # shutdown (which drains the batch queue). It then re-raises the signal under the handler that
    # was there before it; a no-op one lets the command return, so a graceful stop exits 0. Requests
    # still running past --shutdown-timeout are answered 503 by the app (DrainingServer tells it when).
    signal.signal(signal.SIGTERM, lambda signum, frame: None)
    server = DrainingServer(config, app.state.drain)
    if (sockets := dual_stack(host, port)) is not None:  # uvicorn names no address for a socket it is handed
        logging.getLogger("uvicorn.error").info("Uvicorn running on http://[::]:%d (every IPv6 and IPv4 address)",
                                                sockets[0].getsockname()[1])
        server.run(sockets=sockets)
    else:
        server.run()


def api_key_source(ctx: click.Context, api_key: str | None) -> str | None:
    """Where the key came from (said at start-up: a stray TEI API_KEY turns the key on), None without one. An
    empty value is a key too: refused by check_api_key rather than read as none, which served everyone."""
    source = ctx.get_parameter_source("api_key")
    if source == ParameterSource.COMMANDLINE:
        return "--api-key"
    if source == ParameterSource.ENVIRONMENT:
        return "COULISSE_API_KEY"
    if api_key is not None:  # TEI's, read where neither the option nor COULISSE_API_KEY gave one
        return "API_KEY (text-embeddings-inference's variable)"
    return "COULISSE_API_KEY" if os.environ.get("COULISSE_API_KEY") == "" else None  # click reads "" as unset


def check_api_key(api_key: str, source: str) -> None:
    """A key a client can send as it is: not empty (it turned the key off), no spaces or control characters at
    either end (HTTP strips them from a header's value: such a key never matched)."""
    if not api_key:
        raise click.BadParameter("the API key is empty, which would serve every request without one; pass a key, "
                                 "or leave the option and its variables unset to serve without a key.",
                                 param_hint=source)
    if api_key != api_key.strip() or any(ord(c) < 32 or ord(c) == 127 for c in api_key):
        raise click.BadParameter("the API key has spaces at an end or control characters, which HTTP does not carry "
                                 "as they are in a header, so no request could match it; pass the key without them.",
                                 param_hint=source)


def json_logs(ctx: click.Context) -> None:
    """--json-output: every record as JSON from here on, uvicorn's included (they reach the root logger's
    handler), and the one-line error of a failed start too (cli.py). A host program's logging (`cli.main` in a
    program that configured its own) is left as it is, as -v leaves it."""
    from coulisse.interfaces.logs import use_json_logs

    if ctx.meta.get(OURS_KEY):
        use_json_logs()
        ctx.meta[JSON_LOGS_KEY] = True


def load_served(task, model, threads, quantize, fast, **kwargs):
    """The pipeline, loaded and run once (the first forward pays one-off costs; not a client), on the calling
    thread: the server's torch thread."""
    from coulisse.engine import Item
    from coulisse.engine.threads import thread_policy

    pipe = load_pipeline(task, model, threads, quantize, fast=fast, command="serve", **kwargs)
    # The engine itself: every task's inputs differ. On the thread count the batches will run on.
    thread_policy(threads).run(
        lambda: pipe.engine.run([Item(e.ids, e.type_ids) for e in pipe.tokenizer.encode_batch(["warm-up"])]))
    return pipe


def precision(pipe) -> str:
    """What the weights run in, as /info's model_dtype says it: "int8", or the dtype ("--fast" resolved)."""
    return "int8" if pipe.preparation.quantize else str(pipe.dtype).removeprefix("torch.")


def served_models(models: list[str], model_ids: list[str], tasks: list[str],
                  names: list[str]) -> tuple[list[str | None], list[str | None], list[str | None]]:
    """--model (or TEI's --model-id), with --task and --served-model-name paired to it by position."""
    if models and model_ids and models != model_ids:
        raise click.UsageError(f"--model {models} and --model-id {model_ids} differ; pass one of them.")
    chosen: list[str | None] = list(models or model_ids) or [None]
    paired = []
    for flag, values in (("--task", tasks), ("--served-model-name", names)):
        if values and len(values) != len(chosen):
            raise click.UsageError(f"{len(values)} {flag} for {len(chosen)} --model; give one per --model, "
                                   "in the same order, or none.")
        paired.append(list(values) or [None] * len(chosen))
    if any(name is not None and not name.strip("/") for name in paired[1]):
        raise click.UsageError("--served-model-name is empty; give the model a name (the model's id is the default: "
                               "leave the option out).")
    if len(chosen) > 1:  # two models under one name: said before either loads, not after both did
        from coulisse.errors import InputError
        from coulisse.interfaces.server.routing import check_names

        try:
            check_names([name or str(model) for model, name in zip(chosen, paired[1], strict=True)], set())
        except InputError as e:
            raise click.UsageError(str(e)) from None
    return chosen, paired[0], paired[1]

"""The `coulisse serve` command. Every option has an environment fallback (COULISSE_<NAME>)."""

from __future__ import annotations

import logging
import signal

import click

from coulisse.interfaces.options import (
    DEFAULT_HELP,
    load_pipeline,
    model_option,
    positive,
    quantize_option,
    threads_option,
)
from coulisse.interfaces.server.limits import BATCH, REQUEST

log = logging.getLogger(__name__)


@click.command()
@model_option(default_help=f"text-classification's {DEFAULT_HELP}")
@click.option("--task", type=click.Choice(["text-classification", "feature-extraction"]),
              default="text-classification", show_default=True, envvar="COULISSE_TASK",
              help="text-classification serves /predict; feature-extraction serves /embed.")
@click.option("-H", "--host", default="127.0.0.1", show_default=True, envvar="COULISSE_HOST",
              help="Address to listen on (0.0.0.0: every interface).")
@click.option("-p", "--port", type=int, default=8080, show_default=True, envvar="COULISSE_PORT")
@threads_option(help_text="CPU threads for the forward pass (default: torch's choice).", callback=positive)
@quantize_option(help_text="int8: dynamic int8 linear layers.")
@click.option("-T", "--max-batch-tokens", type=int, default=BATCH.max_batch_tokens, show_default=True,
              callback=positive, envvar="COULISSE_MAX_BATCH_TOKENS",
              help="A batch closes when it holds this many tokens.")
@click.option("-B", "--max-batch-requests", type=int, default=BATCH.max_batch_requests, show_default=True,
              callback=positive, envvar="COULISSE_MAX_BATCH_REQUESTS", help="... or when it holds this many inputs.")
@click.option("-w", "--max-wait-ms", type=float, default=BATCH.max_wait_ms, show_default=True,
              envvar="COULISSE_MAX_WAIT_MS",
              help="... or when its oldest input waited this long and the model is idle.")
@click.option("-b", "--max-client-batch-size", type=int, default=REQUEST.max_client_batch_size, show_default=True,
              callback=positive, envvar="COULISSE_MAX_CLIENT_BATCH_SIZE", help="Most inputs in one request (else 413).")
@click.option("-c", "--max-concurrent-requests", type=int, default=REQUEST.max_concurrent_requests,
              show_default=True, callback=positive, envvar="COULISSE_MAX_CONCURRENT_REQUESTS",
              help="Most requests in flight (else 429).")
@click.option("--auto-truncate/--no-auto-truncate", default=True, show_default=True,
              envvar="COULISSE_AUTO_TRUNCATE", help="Truncate long inputs when a request does not say.")
@click.option("--payload-limit", type=int, default=REQUEST.payload_limit, show_default=True, callback=positive,
              envvar="COULISSE_PAYLOAD_LIMIT", help="Largest request body in bytes (else 413).")
@click.option("--pooling", type=click.Choice(["mean", "cls"]), default=None, envvar="COULISSE_POOLING",
              help="/embed pooling (default: 1_Pooling/config.json, else mean).")
@click.option("-k", "--api-key", default=None, envvar="COULISSE_API_KEY", show_default=False,
              help="Require `Authorization: Bearer KEY` (prefer the env var: argv is visible to `ps`).")
@click.option("--shutdown-timeout", type=float, default=30.0, show_default=True,
              envvar="COULISSE_SHUTDOWN_TIMEOUT", help="On SIGTERM, seconds to finish in-flight requests.")
@click.option("--access-log/--no-access-log", default=False, show_default=True, envvar="COULISSE_ACCESS_LOG",
              help="One log line per request (method, path, status; never headers).")
def serve(model, task, host, port, threads, quantize, max_batch_tokens, max_batch_requests, max_wait_ms,
          max_client_batch_size, max_concurrent_requests, auto_truncate, payload_limit, pooling, api_key,
          shutdown_timeout, access_log):
    """Serve MODEL over HTTP with text-embeddings-inference's API and dynamic batching.

    Ready when `GET /health` answers 200; `/docs` shows the API. SIGTERM stops accepting,
    finishes the requests in flight, and exits 0; Ctrl-C does the same and exits 130.

    \b
    Examples:
      coulisse serve --model tblard/tf-allocine --port 8080
      curl -s localhost:8080/predict -H 'Content-Type: application/json' \\
           -d '{"inputs": ["Super film !", "Quel ennui..."]}'
      COULISSE_API_KEY=secret coulisse serve -q int8 --max-batch-tokens 8192
      coulisse serve --task feature-extraction -m sentence-transformers/all-MiniLM-L6-v2
    """
    try:
        import uvicorn

        from coulisse.interfaces.server.app import create_app
        from coulisse.interfaces.server.service import ServerSettings
    except ImportError as e:
        raise click.ClickException(f"{e.name} is missing: pip install 'coulisse[serve]'") from None

    if max_wait_ms < 0:
        raise click.BadParameter(f"{max_wait_ms} is negative; pass 0 or more.", param_hint="--max-wait-ms")
    # One budget: the pipeline's engine runs the batches the server's batcher closes on the same limits.
    pipe = load_pipeline(task, model, threads, quantize, max_batch_tokens=max_batch_tokens,
                         max_batch_size=max_batch_requests)
    pipe.forward(pipe.preprocess(["warm-up"]))  # the first forward pays one-off costs; not a client
    settings = ServerSettings(
        model_id=model or pipe.checkpoint.name, max_wait_ms=max_wait_ms, max_client_batch_size=max_client_batch_size,
        max_concurrent_requests=max_concurrent_requests, auto_truncate=auto_truncate,
        payload_limit=payload_limit, api_key=api_key or None, pooling=pooling,
        dtype="int8" if quantize == "int8" else "float32")
    app = create_app(pipe, settings)
    config = uvicorn.Config(app, host=host, port=port, timeout_graceful_shutdown=shutdown_timeout,
                            access_log=access_log, log_level="info", server_header=False)
    # uvicorn handles SIGTERM: close the socket, wait for in-flight requests, run the lifespan
    # shutdown (which drains the batch queue). It then re-raises the signal under the handler that
    # was there before it; a no-op one lets the command return, so a graceful stop exits 0.
    signal.signal(signal.SIGTERM, lambda signum, frame: None)
    uvicorn.Server(config).run()

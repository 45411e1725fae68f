"""The `coulisse studio` command. Every option has an environment fallback (COULISSE_<NAME>)."""

from __future__ import annotations

import logging

import click

from coulisse.interfaces.explain import STAGES
from coulisse.interfaces.options import (
    DEFAULT_HELP,
    SERVER_SPINCOUNT,
    given_revision,
    load_on_torch_thread,
    load_pipeline,
    model_option,
    set_wait_policy,
    task_option,
    threads_option,
)
from coulisse.interfaces.server.listen import check_listen, is_loopback

log = logging.getLogger(__name__)


def check_host(host: str, allow_remote: bool) -> None:
    if not is_loopback(host) and not allow_remote:
        raise click.BadParameter(
            f"{host} is not a loopback address: the studio has no API key and would explain texts for anyone "
            "who reaches it. Keep 127.0.0.1 (ssh -L to reach it from elsewhere), or pass --allow-remote.",
            param_hint="--host")


@click.command()
@model_option(default_help=f"text-classification's {DEFAULT_HELP}")
@task_option(STAGES, "The pipeline explored.", default="text-classification", show_default=True,
             envvar="COULISSE_TASK")
@click.option("-H", "--host", default="127.0.0.1", show_default=True, envvar="COULISSE_HOST",
              help="Address to listen on: a loopback one, unless --allow-remote.")
@click.option("-p", "--port", type=click.IntRange(0, 65535), default=8765, show_default=True, envvar="COULISSE_PORT",
              help="Port to listen on (0: any free one; the address is printed).")
@click.option("--allow-remote", is_flag=True, default=False, envvar="COULISSE_ALLOW_REMOTE",
              help="Listen on a non-loopback --host and answer any Host header: anyone who reaches the port "
                   "can use the studio (it has no API key).")
@threads_option()
def studio(model, task, host, port, allow_remote, threads):
    """Explore the model (-m/--model) in the browser: attributions, tokens, attention, scores, exact vs int8.

    A local web page with a text box. For each text: the answer of the exact (fp32) and the int8 model
    side by side with every label's score and their difference; for a long text, where truncation cuts
    it, or (long text: chunk) the windows that `coulisse classify --long-text chunk` averages; then the
    views of `coulisse explain --html`: words coloured by attribution, token table, hidden-state norms,
    attention heat map, logits -> softmax bars. The int8 model loads on the first query that needs it.
    Everything is a GET with a query string (`/?text=...&quantize=int8&long_text=chunk`); `/api/explain`
    answers the same query in JSON. No CDN: the page is self-contained. --task explores another pipeline
    with the views of `coulisse explain --html --task` (a question box for question-answering, labels and
    template for zero-shot-classification) and, side by side, the exact and int8 answers in the task's terms
    and whether they agree (entities, best tokens, answer span, ranking, heaviest entries, an embedding's
    cosine); the long-text modes are text-classification's.

    \b
    Examples:
      coulisse studio -m coulisse/mini-allocine
      coulisse studio -m tblard/tf-allocine --port 9000
      curl -s 'http://127.0.0.1:8765/api/explain?text=Super+film+!&long_text=chunk'
      coulisse studio --task question-answering -m ./my-qa-model
    """
    check_host(host, allow_remote)
    # Before torch loads: all its work runs on one thread (one OpenMP team), which spins as the server's does
    # (docs/server.md, "Threads and contention"); libgomp's default would make it 2x slower beside a busy process.
    set_wait_policy("GOMP_SPINCOUNT", SERVER_SPINCOUNT)
    try:
        from coulisse.interfaces.studio.app import run
        from coulisse.interfaces.studio.explore import Studio
    except ImportError as e:
        raise click.ClickException(f"{e.name} is missing: pip install 'coulisse[serve]'") from None
    if allow_remote and not is_loopback(host):
        log.warning("the studio listens on %s with --allow-remote: anyone who reaches port %d can use it", host, port)
    check_listen(host, port)  # before the model loads
    # Loaded where its explorations run (`torch_thread()`: one OpenMP team, coulisse/engine/threads.py).
    revision = given_revision()  # read here: the load runs on the torch thread, which has no click context
    exact = load_on_torch_thread(lambda: load_pipeline(task, model, threads, revision=revision, command="studio"))
    studio_ = Studio(exact, lambda: load_pipeline(task, str(exact.checkpoint.directory), threads, quantize="int8"))
    run(studio_, host, port, allow_remote)

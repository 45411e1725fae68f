"""The `coulisse` command: the group, its error handling, and the list of commands.

Every option has an environment fallback (COULISSE_<NAME>; docs/configuration.md lists them). Errors
that coulisse raises on purpose print as one line, without a traceback, and exit 1.

The commands live beside the interface they drive and share their options through
`coulisse.interfaces.options`; none of them imports this module.
"""

from __future__ import annotations

import codecs
import contextlib
import errno
import logging
import os
import signal
import sys

import click
from click.core import ParameterSource

from coulisse.errors import CoulisseError
from coulisse.interfaces.bench_command import bench
from coulisse.interfaces.convert_command import convert
from coulisse.interfaces.explain_command import explain
from coulisse.interfaces.info_command import info
from coulisse.interfaces.jobs.command import evaluate
from coulisse.interfaces.options import JSON_LOGS_KEY, OURS_KEY, VERBOSE_KEY
from coulisse.interfaces.qa_commands import qa, zero_shot
from coulisse.interfaces.server.command import serve
from coulisse.interfaces.studio.command import studio
from coulisse.interfaces.task_commands import classify, embed, fill_mask, ner


class Group(click.Group):
    def invoke(self, ctx: click.Context):
        try:
            return self._invoke(ctx)
        except click.ClickException as e:
            if not ctx.meta.get(JSON_LOGS_KEY):
                raise
            # `serve --json-output`: the one-line error is a record too, so a log pipeline parses every line
            logging.getLogger("coulisse").error("%s", e.format_message())
            raise click.exceptions.Exit(e.exit_code) from None

    def _invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except click.BadParameter as e:
            _name_environment(e)
            raise
        except click.NoSuchOption as e:
            _name_removed_short_option(e)
            raise
        except CoulisseError as e:
            if hasattr(e, "exit_code"):  # a job stopped by a signal (JobInterrupted): said as it is, not an error
                click.echo(str(e), err=True)
                raise click.exceptions.Exit(e.exit_code) from None
            raise click.ClickException(f"{type(e).__name__}: {e}") from None
        except KeyboardInterrupt as e:
            # Exit as a shell reports a process stopped by the signal (130 for Ctrl-C), without
            # click's "Aborted!": a stop asked for is not an error to report.
            raise click.exceptions.Exit(128 + getattr(e, "signum", signal.SIGINT)) from None
        except OSError as e:
            if e.errno == errno.EPIPE:
                raise  # stdout closed by its reader (`| head`): click exits 1, quietly
            raise click.ClickException(_os_error(e)) from None


# Short options that meant another thing than in every other command, removed (CHANGELOG): said with the long one.
REMOVED_SHORT = {("serve", "-k"): ("--api-key", "--top-k"), ("ner", "-i"): ("--ignore-labels", "--input")}


def _name_removed_short_option(e: click.NoSuchOption) -> None:
    """`serve -k KEY` of an older script: click's "No such option: -k" said with the option it was (audit 48)."""
    command = e.ctx.info_name if e.ctx is not None else None
    if (found := REMOVED_SHORT.get((command, e.option_name))) is not None:
        long, elsewhere = found
        e.message = (f"No such option '{e.option_name}'. It was {long} in `coulisse {command}`, and is gone as it "
                     f"means {elsewhere} in the other commands: write {long}.")


def _name_environment(e: click.BadParameter) -> None:
    """A bad value that came from a COULISSE_* variable names the variable, not an option nobody typed."""
    if e.param is None or e.ctx is None or e.param_hint is not None or e.param.name is None:
        return
    if e.ctx.get_parameter_source(e.param.name) is not ParameterSource.ENVIRONMENT:
        return
    names = [e.param.envvar] if isinstance(e.param.envvar, str) else list(e.param.envvar or ())
    given = [name for name in names if name in os.environ]
    if given:
        e.param_hint = f"the environment variable {given[0]}"


def _os_error(e: OSError) -> str:
    """One line for an operating-system failure (a full disk under stdout...). When stdout is what failed,
    its unwritten bytes are dropped, or Python's exit would print the same error again."""
    name = errno.errorcode.get(e.errno or 0, "")
    what = f"{e.strerror} ({name})" if e.strerror and name else " ".join(str(e).split())
    try:
        sys.stdout.flush()
    except OSError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return f"cannot write to stdout: {what}."
    return f"{type(e).__name__}: {what}" + (f": {e.filename}" if e.filename else "") + "."


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(None, "-V", "--version", package_name="coulisse", prog_name="coulisse",
                      message="%(prog)s %(version)s")
@click.option("-v", "--verbose", count=True, help="-v: what is loaded and how; -vv: debug.")
def cli(verbose: int) -> None:
    """coulisse: transformer encoders behind the pipeline — tokenizer, encoder, head, post-processing.

    \b
    Examples:
      coulisse classify "Je déteste tellement ça !"
      coulisse explain --attributions "J'ai adoré ce film."
    """
    ctx = click.get_current_context()
    ctx.meta[OURS_KEY] = not logging.getLogger().handlers  # a host program's logging (a test's) is left as it is
    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    set_verbosity(ctx, verbose)



def set_verbosity(ctx: click.Context, more: int) -> None:
    """`-v` counts wherever it is typed, before the command or after it (`coulisse classify -v ...`): -v says what
    is loaded and how, -vv debugs."""
    verbose = ctx.meta.get(VERBOSE_KEY, 0) + more
    ctx.meta[VERBOSE_KEY] = verbose
    if ctx.meta.get(OURS_KEY):
        logging.getLogger().setLevel({0: logging.WARNING, 1: logging.INFO}.get(verbose, logging.DEBUG))
    # huggingface_hub's "Retrying in 8s" and "Trying to resume download" notices (said twice: by its own handler
    # and by ours) would bury the one-line error after them. Its modules' loggers, by name: huggingface_hub sets
    # its root logger's level itself when it first logs.
    for name in ("huggingface_hub.utils._http", "huggingface_hub.file_download"):
        logging.getLogger(name).setLevel(logging.NOTSET if verbose else logging.ERROR)


def _verbose_option() -> click.Option:
    def more(ctx: click.Context, param: click.Parameter, value: int) -> int:
        if value:
            set_verbosity(ctx, value)
        return value

    return click.Option(["-v", "--verbose"], count=True, expose_value=False, callback=more,
                        help="-v: what is loaded and how; -vv: debug (also before the command).")


for command in (classify, explain, ner, fill_mask, embed, qa, zero_shot, evaluate, serve, studio, bench, convert,
                info):
    command.params.append(_verbose_option())
    cli.add_command(command)


def utf8_streams(streams=None, environ=os.environ) -> None:
    """stdout and stderr in UTF-8 where they go to a file or a pipe in an encoding that cannot hold every text:
    Windows gives a redirected stream its ANSI code page (cp1252), strict, so `coulisse explain > out.txt` died on
    SentencePiece's "▁", `info` on "≤", `classify` on an emoji (audit 44). A terminal keeps its own (Windows
    writes to the console in UTF-16), and so does an encoding asked for with PYTHONIOENCODING."""
    if environ.get("PYTHONIOENCODING"):
        return
    for stream in (sys.stdout, sys.stderr) if streams is None else streams:
        try:
            if stream is None or stream.isatty() or codecs.lookup(stream.encoding).name.startswith("utf"):
                continue
            stream.reconfigure(encoding="utf-8")
        except (AttributeError, LookupError, OSError, TypeError, ValueError):  # replaced by a caller (a StringIO,
            # whose encoding is None), or closed: left as is
            continue


def main() -> None:
    utf8_streams()
    stop_as_pid_1()
    try:
        cli(prog_name="coulisse")
    finally:
        _quiet_shutdown()


def stop_as_pid_1() -> None:
    """As a container's first process (PID 1, `docker run` without `--init`), SIGTERM stops coulisse as it stops any
    other process. The kernel delivers PID 1 no signal left to its default action: until a command set its own
    handler (serve once its models loaded, a job once it opens its input), `docker stop` and Kubernetes' SIGTERM
    were ignored, and the load went on to serve or finish the job (audit 48). Here the default action, by hand:
    the status a shell reports for a process killed by SIGTERM (143), at once."""
    if os.getpid() == 1 and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _exit_now)


def _quiet_shutdown() -> None:
    """Once the command is done (its answer or its one-line error said), a second Ctrl-C or SIGTERM while the
    interpreter shuts down (joining threads, freeing the model) ends the process at once, as the signal's
    status, instead of a KeyboardInterrupt traceback from threading's shutdown under the line (audit 44)."""
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(ValueError, OSError):  # not the main thread: left as it is
            signal.signal(signum, _exit_now)


def _exit_now(signum: int, frame) -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(128 + signum)

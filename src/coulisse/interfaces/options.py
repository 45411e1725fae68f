"""What every `coulisse` command shares: the `--model`, `--threads` and `--quantize` options, and the
helpers that turn them into a pipeline or read TEXT arguments.

The command modules import this module; it imports none of them (nor `cli.py`, which only assembles
the group). Nothing heavy at module level: `coulisse --help` imports every command module.
"""

from __future__ import annotations

import contextlib
import difflib
import logging
import os
import signal
import sys
from contextlib import contextmanager
from typing import BinaryIO

import click

from coulisse.defaults import BUNDLED_MODEL, DEFAULT_MODEL
from coulisse.errors import InputError

log = logging.getLogger(__name__)

DEFAULT_HELP = f"default: {DEFAULT_MODEL}, or the bundled {BUNDLED_MODEL} when that is neither cached nor downloadable"
THREADS_HELP = "CPU threads (default: all physical cores, at most a container's CPU limit)."
QUANTIZE_HELP = "int8: dynamic int8 linear layers (faster on CPU, near-identical scores)."
FAST_HELP = ("The fastest mode this CPU runs within its quality gates (int8 where the CPU has an int8 GEMM, else bf16; "
             "`coulisse info` shows which); without it, exact fp32.")
FAST_KEY = "coulisse.fast"
# -v counted so far; whether coulisse configured logging (not a host program); whether logs are JSON (serve)
VERBOSE_KEY, OURS_KEY, JSON_LOGS_KEY = "coulisse.verbose", "coulisse.logging", "coulisse.json_logs"
REVISION_KEY = "coulisse.revision"
REVISION_HELP = ("Hub revision of --model: a branch, tag or commit (default: main); a folder or the bundled model "
                 "has none.")
# How idle OpenMP threads wait: the user's choice when one of these is set (libgomp, Intel's OpenMP).
WAIT_VARIABLES = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME")
WAIT_POLICY = "PASSIVE"
# The server's idle OpenMP threads spin this many times, then sleep: as short as the second team made it before
# the server ran all torch work on one thread, so no slower next to busy neighbours (docs/server.md, "Threads and
# contention", where a dedicated machine is told how to spin longer).
SERVER_SPINCOUNT = "1000"
# What a file of texts is named (what -i reads, and what people try): one word ending so is a file's name.
DATA_FILE_EXTENSIONS = (".csv", ".tsv", ".jsonl", ".ndjson", ".json", ".parquet", ".txt", ".xlsx", ".xls")


def split_env_list(rv: str | None) -> list[str]:
    """A repeatable option's environment variable, comma-separated, so that a folder with spaces in its name
    (`COULISSE_MODEL="/models/Mon modèle"`) stays one value (click splits on whitespace otherwise). Blanks
    around a comma are dropped."""
    return [part.strip() for part in (rv or "").split(",") if part.strip()]


class EnvList(click.types.StringParamType):
    """Text, several values in the environment variable (`split_env_list`)."""

    name = "text"

    def split_envvar_value(self, rv: str) -> list[str]:
        return split_env_list(rv)


ENV_LIST = EnvList()


class Choice(click.Choice):
    """`click.Choice` that names the closest choice, as `pipeline()` does for a task (`--task sentiment`: did you
    mean 'sentiment-analysis'?). `aliases`: other names of choices (not taken), a close one suggests its choice."""

    def __init__(self, choices, case_sensitive: bool = True, aliases: dict[str, str] | None = None):
        super().__init__(choices, case_sensitive)
        self.aliases = aliases or {}

    def convert(self, value, param, ctx):
        try:
            return super().convert(value, param, ctx)
        except click.BadParameter as e:
            known = [str(c) for c in self.choices] + list(self.aliases)
            near = difflib.get_close_matches(str(value).lower(), known, n=1, cutoff=0.6)
            if near:
                e.message = f"{e.message.rstrip('.')} (did you mean {self.aliases.get(near[0], near[0])!r}?)."
            raise


class EnvChoice(Choice):
    """`Choice`, several values in the environment variable (`split_env_list`)."""

    def split_envvar_value(self, rv: str) -> list[str]:
        return split_env_list(rv)


def positive(ctx: click.Context, param: click.Parameter, value):
    """A click callback: None passes, anything at or below 0 is refused with the value."""
    if value is not None and value <= 0:
        raise click.BadParameter(f"{value} is not positive; pass a number above 0.", ctx, param)
    return value


def comma_separated(noun: str, example: str):
    """A click callback: comma-separated `noun`s, at least one that is not blank (None passes)."""

    def check(ctx: click.Context, param: click.Parameter, value):
        if value is not None and not any(item.strip() for item in value.split(",")):
            raise click.BadParameter(f"{value!r} holds no {noun}; pass {noun}s separated by commas, e.g. {example}.",
                                     ctx, param)
        return value

    return check


some_labels = comma_separated("label", "sport,cinéma")  # zero-shot's and explain's --labels
some_targets = comma_separated("word", "bon,mauvais")  # fill-mask's --targets


def hypothesis_template(ctx: click.Context, param: click.Parameter, value):
    """A click callback: a zero-shot hypothesis template, checked as the pipeline checks it but said with the
    option's name (the pipeline's message names its keyword, `hypothesis_template=`, which the CLI has not)."""
    if value is not None:
        from coulisse.tasks.zero_shot import template_problem

        if (problem := template_problem(value)) is not None:
            raise click.BadParameter(f"{value!r} {problem}", ctx, param)
    return value


def model_option(default_help: str | None = DEFAULT_HELP):
    """`--model`. Without one the command passes None: the pipeline picks the task's default model
    (`coulisse.defaults`), and a task without one asks for `--model` (`require_model`)."""
    help_text = "Hub id or local folder of the checkpoint" + (f" ({default_help})." if default_help else ".")
    model = click.option("-m", "--model", default=None, envvar="COULISSE_MODEL", help=help_text)
    return lambda f: model(revision_option()(f))


def revision_option(help_text: str = REVISION_HELP):
    """`--revision`, kept in the context's meta as `--fast` is (`load_pipeline` and the corpus jobs read it there),
    so that every command with `--model` has it without a parameter of its own. Checked at once: a revision
    the Hub could not have is a usage error, said before anything loads."""

    def remember(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
        if value is not None:
            from coulisse.hub import invalid_revision  # torch, through the weights: only for a value to check

            if (problem := invalid_revision(value)) is not None:
                raise click.BadParameter(f"{value!r} cannot be a revision: {problem}; pass a branch, tag or commit "
                                         "of the Hub repository.", ctx, param)
        ctx.meta[REVISION_KEY] = value
        return value

    return click.option("--revision", default=None, envvar="COULISSE_REVISION", expose_value=False,
                        callback=remember, help=help_text)


def given_revision() -> str | None:
    """The command's --revision (None: none given, or no command running on this thread)."""
    ctx = click.get_current_context(silent=True)
    return None if ctx is None else ctx.meta.get(REVISION_KEY)


def task_option(tasks, help_text: str = "", **kwargs):
    """`--task` among `tasks`, transformers' other names of them included ("sentiment-analysis", "ner"); the
    command gets the canonical name."""
    from coulisse.defaults import ALIASES

    aliases = [alias for alias, task in ALIASES.items() if task in tasks]
    said = f"{help_text}{' ' if help_text else ''}One of: {', '.join(tasks)}" + (
        f"; or transformers' {' and '.join(aliases)}." if aliases else ".")
    return click.option("--task", type=Choice([*tasks, *aliases]), metavar="TASK", help=said,
                        callback=lambda ctx, param, value: ALIASES.get(value, value), **kwargs)


def threads_option(help_text: str = THREADS_HELP, callback=positive):
    return click.option("-t", "--threads", type=int, default=None, envvar="COULISSE_THREADS", callback=callback,
                        help=help_text)


def quantize_option(help_text: str = QUANTIZE_HELP):
    return click.option("-q", "--quantize", type=Choice(["none", "int8"]), default="none",
                        envvar="COULISSE_QUANTIZE", show_default=True, help=help_text)


def fast_option():
    """`--fast`, kept in the context's meta (not passed to the command): `load_pipeline` reads it, so
    every command with the engine options gets it without a parameter of its own."""

    def remember(ctx: click.Context, param: click.Parameter, value: bool) -> bool:
        ctx.meta[FAST_KEY] = value
        return value

    return click.option("--fast", is_flag=True, default=False, envvar="COULISSE_FAST", expose_value=False,
                        callback=remember, help=FAST_HELP)


def engine_options(f):
    """`--quantize`, `--fast` and `--threads`, in that order in the help."""
    return quantize_option()(fast_option()(threads_option()(f)))


def require_model(model: str | None, what: str) -> str:
    """The model of a task without a default; none given is a usage error that names what to give."""
    if model is None:
        raise click.UsageError(f"give --model: {what} (Hub id or folder), or set COULISSE_MODEL.")
    return model


def check_precision(quantize: str, fast: bool, dtype: str | None = None) -> None:
    """--fast, --quantize and serve's --dtype: the pairs that contradict each other, as usage errors."""
    if fast and quantize != "none":
        raise click.UsageError(f"--fast picks the precision itself; drop --quantize {quantize}, or drop --fast.")
    if fast and dtype not in (None, "float32"):
        raise click.UsageError(f"--fast picks the precision itself; drop --dtype {dtype}, or drop --fast.")
    if quantize != "none" and dtype not in (None, "float32"):
        raise click.UsageError(f"--quantize {quantize} runs beside float32 layers, not {dtype} ones; drop --dtype "
                               f"{dtype}, or drop --quantize.")


def cap_threads() -> None:
    """torch's count for this process at most its CPU quota rounded up (a container's limit), said in the log: a
    command owns its process, so its explanations and warm-ups run under the cap too, not only its batches."""
    import torch

    from coulisse.engine.cpu_limit import cpu_limit, in_cpus
    from coulisse.engine.threads import capped

    found, cap = torch.get_num_threads(), capped(torch.get_num_threads())
    if cap < found:
        torch.set_num_threads(cap)
        log.info("%d CPU thread%s rather than %d: this process's cgroup allows %s (--threads to choose)",
                 cap, "" if cap == 1 else "s", found, in_cpus(cpu_limit()))


def load_pipeline(task: str, model: str | None, threads: int | None = None, quantize: str = "none",
                  fast: bool | None = None, command: str | None = None, **kwargs):
    """The command's pipeline. `fast`: --fast, read from the command's context unless given (a context is the
    calling thread's: the server loads on its torch thread and passes it); so is --revision, unless
    `revision=` is given, and the command's name (`command`: what a missing head's error names)."""
    from coulisse.defaults import DEFAULT_MODELS

    if model is None and task not in DEFAULT_MODELS:  # the library's "pass model=" is not the CLI's word
        kinds = {"zero-shot-classification": "an NLI sequence classifier", "fill-mask": "a masked language model",
                 "token-classification": "a token classifier", "question-answering": "an extractive QA model",
                 "feature-extraction": "an encoder"}
        require_model(None, kinds.get(task, f"a {task} model"))
    from coulisse.pipelines import pipeline  # torch: after the usage checks, which answer in a blink

    if fast is None:
        ctx = click.get_current_context(silent=True)
        fast = ctx is not None and bool(ctx.meta.get(FAST_KEY))
    check_precision(quantize, fast)
    if quantize != "none":
        kwargs["quantize"] = quantize
    if fast:
        kwargs["fast"] = True
    if "revision" not in kwargs:
        kwargs["revision"] = given_revision()
    if threads is not None:  # the command owns its process: --threads for all its torch work (explanations too)
        import torch

        torch.set_num_threads(threads)
    else:
        cap_threads()
    from coulisse.errors import MissingHeadError

    try:
        return pipeline(task, model=model, threads=threads, **kwargs)
    except MissingHeadError as e:
        if command is None:
            ctx = click.get_current_context(silent=True)
            command = ctx.info_name if ctx is not None else None
        raise in_command_words(e, command) from None


# The command that runs each pipeline task, and those that take --task (a missing head's error names them)
COMMAND_OF_TASK = {"text-classification": "classify", "token-classification": "ner", "question-answering": "qa",
                   "fill-mask": "fill-mask", "feature-extraction": "embed"}
TAKES_TASK = frozenset({"explain", "serve", "studio", "convert"})


def in_command_words(error, command: str | None):
    """A MissingHeadError with its way out in the CLI's words: --task where `command` takes one, else the
    command that runs each task the checkpoint has."""
    if command in TAKES_TASK:
        return error.reworded(" or ".join(f"--task {t}" for t in error.tasks))
    return error.reworded(" or ".join(f"`coulisse {COMMAND_OF_TASK[t]} -m ...`" for t in error.tasks
                                      if t in COMMAND_OF_TASK))


def read_texts(texts: tuple[str, ...], stdin: BinaryIO | None = None) -> list[str]:
    """TEXT arguments, else the non-blank lines of stdin (also a lone TEXT `-`, as most tools read it; a
    terminal on stdin is a usage error, and so are an empty or blank TEXT and a stdin without a non-blank line).
    Bytes that are not UTF-8 are refused in one line that names the argument or line and the byte: Python hands
    undecodable arguments over as lone surrogates (`surrogateescape`), which the tokenizer would report as a
    surrogate the user never typed. A TEXT that names a file (`coulisse classify reviews.csv`, `-i` forgotten)
    is refused too: its label would be the file name's."""
    if texts == ("-",):
        texts = ()
    for n, text in enumerate(texts, 1):
        if not text.strip():  # most often an unset shell variable: "$REVIEW" expands to nothing
            raise click.UsageError(f"TEXT {n} is empty{'' if not text else ' (only spaces)'}; give a text, or "
                                   "pipe lines on stdin.")
        if text == "-":
            raise click.UsageError(f"TEXT {n} is '-', which reads stdin alone; give '-' as the only TEXT, or drop "
                                   "it.")
        if (problem := _undecoded(text)) is not None:
            raise InputError(f"TEXT argument {n} is not valid UTF-8 ({problem}); pass UTF-8 text (a "
                             "terminal or file in another encoding: convert it, e.g. iconv -f cp1252 -t utf-8).")
        if (what := _file_name(text)) is not None:
            ctx = click.get_current_context(silent=True)
            reads_files = ctx is not None and any("--input" in getattr(p, "opts", ()) for p in ctx.command.params)
            how = (f"to read its rows, pass -i {text}" if reads_files else f"to read its lines, pipe them: "
                   f"{ctx.command_path if ctx else 'coulisse'} ... < {text}")
            raise click.UsageError(f"TEXT {n} {text!r} {what}; {how} (a text meant as written: pipe it on stdin, "
                                   "whose lines are read as they are).")
    if texts:
        return list(texts)
    if stdin is None:
        if sys.stdin is None or sys.stdin.isatty():
            raise click.UsageError("give TEXT arguments, or pipe lines on stdin.")
        stdin = sys.stdin.buffer
    lines = []
    for n, raw in enumerate(stdin, 1):
        try:
            line = raw.decode("utf-8").rstrip("\r\n")
        except UnicodeDecodeError as e:
            raise InputError(f"stdin line {n} is not valid UTF-8 (byte 0x{raw[e.start]:02x} at byte {e.start + 1} of "
                             "the line); re-encode it as UTF-8 (e.g. iconv -f cp1252 -t utf-8), or read it with -i - "
                             "--encoding cp1252.") from None
        if line.strip():
            lines.append(line)
    if not lines:
        raise click.UsageError("stdin held no text (no non-blank line); give TEXT arguments, or pipe lines on stdin.")
    return lines


def _file_name(text: str) -> str | None:
    """Whether a TEXT is a file's name rather than a text, in words: a file that exists, or one word with a data
    file's extension (.csv, .jsonl, .txt, ...); None for text."""
    if len(text) > 1024 or "\n" in text:
        return None
    try:
        if os.path.isfile(text):
            return "is a file"
    except (OSError, ValueError):  # a name too long for the system, a NUL byte: not a file's
        return None
    if not any(ch.isspace() for ch in text) and os.path.splitext(text)[1].lower() in DATA_FILE_EXTENSIONS:
        return "looks like a file's name (no such file here)"
    return None


def _undecoded(text: str) -> str | None:
    """Where a command-line argument held bytes that are not UTF-8 (decoded by Python as U+DC80-U+DCFF), in
    words; None for text that encodes."""
    from coulisse.tokenizer.inputs import lone_surrogate

    at = lone_surrogate(text)
    if at is None:
        return None
    code = ord(text[at])
    return f"byte 0x{code - 0xDC00:02x} at character {at + 1}" if 0xDC80 <= code <= 0xDCFF else \
        f"lone surrogate at character {at + 1}"


def wait_policy_in_effect() -> str:
    """How idle OpenMP threads wait, in words, for logs and `/info`: the user's variables, or the runtime's."""
    given = [f"{name}={os.environ[name]}" for name in WAIT_VARIABLES if name in os.environ]
    return f"{', '.join(given)} (yours)" if given else "the OpenMP runtime's default"


def set_wait_policy(name: str = "OMP_WAIT_POLICY", value: str = WAIT_POLICY) -> str:
    """How idle OpenMP threads wait, set before torch loads (the runtime reads it once, then) unless the user
    set a wait variable; returns what applies, in words. A corpus job's: OMP_WAIT_POLICY=PASSIVE, idle threads
    sleep at once instead of spinning for a few ms, time that a descheduled teammate needs when another process
    shares the cores (docs/jobs.md, "Threads and contention"). The server's: GOMP_SPINCOUNT=SERVER_SPINCOUNT
    (docs/server.md, "Threads and contention")."""
    if any(variable in os.environ for variable in WAIT_VARIABLES):
        return wait_policy_in_effect()
    if "torch" in sys.modules:  # too late to take effect: say so rather than set what will not apply
        return "the OpenMP runtime's default (torch was loaded before coulisse could set it)"
    os.environ[name] = value
    return f"{name}={value} (coulisse's; set OMP_WAIT_POLICY or GOMP_SPINCOUNT to choose)"


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where Ctrl-C raises KeyboardInterrupt; the exit status tells them apart (143, 130)."""

    signum = signal.SIGTERM


@contextmanager
def stop_on_sigterm():
    """SIGTERM stops a command like Ctrl-C: a job's committed chunks stay and its message says how to resume; a
    conversion's half-written folder is removed."""
    def interrupt(signum, frame):
        raise Terminated

    try:
        previous = signal.signal(signal.SIGTERM, interrupt)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def load_on_torch_thread(work):
    """`work()` on the process's torch thread (`coulisse.engine.threads`), for a command that loads its models
    there (serve, studio). Ctrl-C while the work runs ends the process at once (exit 130, as a stop asked for):
    else Python would wait at exit for the thread to finish the load (a Hub download, the weights, the warm-up:
    seconds or minutes), and a second Ctrl-C then aborts inside torch's C++ code."""
    from coulisse.engine.threads import torch_thread

    future = torch_thread().submit(work)
    try:
        return future.result()
    except KeyboardInterrupt as stop:
        if not future.running():  # not begun (cancel it) or ended: nothing to wait for
            future.cancel()
            raise
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(128 + getattr(stop, "signum", signal.SIGINT))


MASK_SPELLINGS = ("<mask>", "[MASK]")


def with_mask(text: str, mask: str) -> str:
    """`text` with either spelling of the mask token (CamemBERT's `<mask>`, BERT's `[MASK]`) as the model's."""
    for other in MASK_SPELLINGS:
        if other != mask:
            text = text.replace(other, mask)
    return text

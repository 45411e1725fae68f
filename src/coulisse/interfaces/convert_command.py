"""`coulisse convert`: any checkpoint coulisse reads -> one transformers loads (`coulisse.export`).

`coulisse.export` imports torch: it is imported when the command runs, so that `coulisse --help` stays light.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import click

from coulisse.interfaces.options import REVISION_HELP, Choice, given_revision, in_command_words, revision_option

HEAD_HELP = ("What to save: sequence-classification, token-classification, question-answering, masked-lm, "
             "multiple-choice or base (the encoder alone), or a pipeline task that implies one "
             "(text-classification, ner, fill-mask, feature-extraction...). Default: the head config.json's "
             "architectures name; base for a sentence-transformers folder (modules.json, SPLADE's excepted).")


def _head(value: str | None) -> str | None:
    """A head name, or the head of the pipeline task `value` names ("feature-extraction" -> "base")."""
    from coulisse.export import HEADS
    from coulisse.pipelines import ALIASES, TASKS

    if value is None or value in HEADS:
        return value
    task = TASKS.get(ALIASES.get(value, value))
    if task is None:
        raise click.BadParameter(f"{value!r} is neither a head ({', '.join(HEADS)}) nor a task "
                                 f"({', '.join(sorted(TASKS))}).", param_hint="--head")
    return task.head or "base"


def _say_server_dtype(ctx: click.Context, dtype: str) -> None:
    """One line when `COULISSE_DTYPE` (the precision `serve` computes in) is set and convert writes another."""
    server_dtype = os.environ.get("COULISSE_DTYPE")
    if (server_dtype and server_dtype != dtype
            and ctx.get_parameter_source("dtype") is click.core.ParameterSource.DEFAULT):
        click.echo(f"note: COULISSE_DTYPE={server_dtype} is the precision `coulisse serve` computes in; convert "
                   f"writes {dtype} (to write {server_dtype}: --dtype {server_dtype} or "
                   f"COULISSE_CONVERT_DTYPE={server_dtype})", err=True)


@click.command()
@click.argument("model")
@click.argument("out_dir", type=click.Path(path_type=Path))
@click.option("-d", "--dtype", type=Choice(["float32", "float16", "bfloat16"]), default="float32",
              show_default=True, envvar="COULISSE_CONVERT_DTYPE", help="Precision of the weights written.")
@click.option("-H", "--head", "--task", "head", default=None, envvar="COULISSE_HEAD", help=HEAD_HELP)
@click.option("--overwrite", is_flag=True, envvar="COULISSE_OVERWRITE",
              help="Write into a folder that holds files, replacing the checkpoint files in it.")
@revision_option(REVISION_HELP.replace("--model", "MODEL"))
@click.pass_context
def convert(ctx, model, out_dir, dtype, head, overwrite):
    """Write MODEL (a Hub id or folder, in any format coulisse reads: safetensors, .bin, sharded, TensorFlow
    tf_model.h5) as a checkpoint transformers loads: config.json naming the PyTorch class,
    model.safetensors, and the tokenizer (tokenizer.json, the original slow files, tokenizer_config.json,
    special_tokens_map.json). No TensorFlow needed.

    \b
    Examples:
      coulisse convert tblard/tf-allocine ./tf-allocine-pt
      coulisse convert ./my-checkpoint ./out --dtype bfloat16 --head base
      coulisse convert ./ner-model ./out --task ner --overwrite

    \b
    Then, in Python:
      AutoModelForSequenceClassification.from_pretrained("./tf-allocine-pt")
      AutoTokenizer.from_pretrained("./tf-allocine-pt")
    """
    from coulisse.export import convert as convert_checkpoint
    from coulisse.interfaces.jobs.lock import check_writable
    from coulisse.interfaces.options import stop_on_sigterm

    _say_server_dtype(ctx, dtype)
    if not out_dir.exists() or out_dir.is_dir():  # a file: convert's own check says so
        check_writable(out_dir, "OUT_DIR", folder=True)  # before the checkpoint is looked for, read and converted
    from coulisse.errors import MissingHeadError

    with stop_on_sigterm():  # as Ctrl-C: the half-written folder is removed (kill -9 leaves it, hidden)
        try:
            out, written = convert_checkpoint(model, out_dir, head=_head(head), dtype=dtype, overwrite=overwrite,
                                              revision=given_revision())
        except MissingHeadError as e:  # its --task (--head) takes the tasks
            raise in_command_words(e, "convert") from None
    architecture = json.loads((out / "config.json").read_text(encoding="utf-8"))["architectures"][0]
    click.echo(f"wrote {out}: {architecture}, {dtype}, {len(written)} files")  # those written, not those there

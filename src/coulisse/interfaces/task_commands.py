"""The task verbs: `coulisse classify`, `ner`, `fill-mask` and `embed` (`explain` has its own module,
explain_command.py)."""

from __future__ import annotations

import json
import math
import re

import click

from coulisse.interfaces.formatting import one_line, printable, probability
from coulisse.interfaces.jobs.command import check_mode_options, encoding_option, run_embed_job, run_job
from coulisse.interfaces.jobs.row_models import is_sparse
from coulisse.interfaces.options import (
    Choice,
    engine_options,
    given_revision,
    load_pipeline,
    model_option,
    positive,
    read_texts,
    require_model,
    some_targets,
    with_mask,
)

AGGREGATIONS = ("none", "simple", "first", "average", "max")


def ray_options(f):
    """`--ray` and its options, the same on every corpus job (classify, embed)."""
    options = [
        click.option("--ray", "on_ray", is_flag=True, envvar="COULISSE_RAY",
                     help="Run the --input job on a Ray cluster: --input may be a glob, --output is a folder "
                     "of shards; a rerun skips the shards committed (pip install \"coulisse[ray]\")."),
        click.option("--address", default=None, envvar="COULISSE_ADDRESS",
                     help="With --ray: the cluster (auto, HOST:PORT, ray://HOST:10001; default: $RAY_ADDRESS, "
                     "else a local Ray)."),
        click.option("--actors", type=int, default=None, envvar="COULISSE_ACTORS",
                     help="With --ray: pipelines loaded at once (default: the cluster's CPUs / --threads)."),
        click.option("--shard-format", type=Choice(["parquet", "jsonl"]), default="parquet",
                     show_default=True, envvar="COULISSE_SHARD_FORMAT",
                     help="With --ray: the format of the output's shards."),
    ]
    for option in reversed(options):
        f = option(f)
    return f


@click.command()
@click.argument("texts", nargs=-1)
@model_option()
@click.option("-k", "--top-k", type=int, default=1, show_default=True, callback=positive,
              help="Labels shown per text.")
@click.option("-j", "--json", "as_json", is_flag=True, help="One JSON object per input (text, label, score).")
@engine_options
@click.option("-i", "--input", "input_path", default=None, envvar="COULISSE_INPUT",
              help="Corpus job: read FILE (.csv .tsv .jsonl .parquet .txt, or - for stdin) instead of TEXTS.")
@click.option("-o", "--output", default=None, envvar="COULISSE_OUTPUT",
              help="Corpus job output (.csv .tsv .jsonl .parquet; default: JSONL on stdout).")
@click.option("-c", "--column", default=None, envvar="COULISSE_COLUMN",
              help="Text column (default: 'text', else the only string column).")
@encoding_option()
@click.option("-a", "--all-scores", is_flag=True, envvar="COULISSE_ALL_SCORES",
              help="Add a score_<LABEL> column per label.")
@click.option("--long-text", type=Choice(["truncate", "chunk"]), default="truncate", show_default=True,
              envvar="COULISSE_LONG_TEXT", help="Texts over the model's limit: keep the start, or average "
              "the logits of overlapping windows that cover the whole text.")
@click.option("--stride", type=click.IntRange(min=0), default=None, envvar="COULISSE_STRIDE",
              help="With --long-text chunk: tokens shared by consecutive windows (default: a quarter).")
@click.option("--resume", is_flag=True, envvar="COULISSE_RESUME",
              help="Continue an interrupted job where its output ends, with the input and options "
              "recorded next to it.")
@click.option("--overwrite", is_flag=True, envvar="COULISSE_OVERWRITE", help="Replace a non-empty output.")
@click.option("--quiet", is_flag=True, envvar="COULISSE_QUIET", help="No progress bar, no summary.")
@click.option("--progress/--no-progress", default=None, envvar="COULISSE_PROGRESS",
              help="Show the progress bar even when stderr is not a terminal (or never).")
@click.option("-b", "--batch-rows", type=click.IntRange(min=1), default=1024, show_default=True,
              envvar="COULISSE_BATCH_ROWS", help="Rows read, classified and committed at a time.")
@ray_options
def classify(texts, model, top_k, as_json, threads, quantize, input_path, output, column, encoding, all_scores,
             long_text, stride, resume, overwrite, quiet, progress, batch_rows, on_ray, address, actors,
             shard_format):
    """Classify TEXTS (or lines of stdin, also read for a lone TEXT -) with a sequence classifier; or a whole
    file with --input (a TEXT that names a file is refused: its label would be the name's).

    \b
    Examples:
      coulisse classify "J'ai adoré ce film." "Quel ennui..."
      cat reviews.txt | coulisse classify --json
      coulisse classify -m ./my-model -k 2 "Pas mal du tout"
      coulisse classify -i reviews.csv -o labelled.csv --all-scores
      coulisse classify -i avis-excel.csv -o labelled.csv --encoding cp1252
      coulisse classify -o labelled.parquet --resume
      coulisse classify -i long_reviews.jsonl -o out.jsonl --long-text chunk --stride 64
      coulisse classify -i 'data/*.parquet' -o labelled/ --ray --address auto

    With --input, rows are committed to --output chunk by chunk: after an interruption, --resume
    continues where the output ends, and the result equals an uninterrupted run's. A resume reads
    the first run's input and options (model, column, --all-scores, --long-text, --stride,
    --batch-rows, --quantize, --fast, --encoding, --revision) from the state file next to the output:
    `-o FILE --resume` is enough. Input files are read as UTF-8 unless --encoding says otherwise; one whose first 64 KiB
    are not UTF-8 is refused before the model loads, with the line and byte.
    """
    check_mode_options(click.get_current_context())
    if on_ray:
        from coulisse.interfaces.jobs.distributed import run_cli

        return run_cli(click.get_current_context())
    if input_path is not None or output is not None:
        return run_job(click.get_current_context())
    if stride is not None and long_text != "chunk":
        raise click.UsageError("--stride only applies with --long-text chunk.")
    lines = read_texts(texts)
    pipe = load_pipeline("text-classification", model, threads, quantize)
    if long_text == "chunk":  # as a job reads it: the mean of the windows' logits
        import numpy as np

        from coulisse.interfaces.jobs.predict import Predictor

        logits = np.stack(Predictor(pipe, long_text, stride).logits(lines))
        results = pipe.postprocess(logits, top_k=top_k, _legacy=False)
    else:
        results = pipe(lines, top_k=top_k)
    for i, (text, result) in enumerate(zip(lines, results, strict=True)):
        if not all(math.isfinite(r["score"]) for r in result):  # as corpus jobs and the server: never a NaN score
            cached = re.search(r"read from the cache (\S+\.safetensors)", pipe.preparation.fast_path)
            fix = (f"Its int8 codes came from the weight cache: delete {cached[1]}, or run once with "
                   "COULISSE_CACHE=0." if cached else "Try another revision, or dtype float32.")
            raise click.ClickException(f"the scores of text {i + 1} are not finite (NaN or infinity): the model's "
                                       f"weights overflow on it. {fix}")
        best = result[0]
        if as_json:
            record = {"text": text, "label": best["label"], "score": best["score"]}
            if top_k > 1:
                record["scores"] = result
            click.echo(json.dumps(record, ensure_ascii=False))
        else:
            labels = "  ".join(f"{printable(r['label'])} {r['score']:.4f}" for r in result)
            click.echo(f"{labels}  {one_line(text)}")


@click.command()
@click.argument("texts", nargs=-1)
@model_option(default_help=None)
@click.option("-a", "--aggregation", type=Choice(AGGREGATIONS), default="simple", show_default=True,
              envvar="COULISSE_AGGREGATION",
              help="none: one row per token; simple: adjacent tokens of one entity grouped; first / average "
              "/ max: words kept whole, labelled by their first token, mean scores, or best token.")
@click.option("-s", "--stride", type=click.IntRange(min=0), default=None, envvar="COULISSE_STRIDE",
              help="Tokens shared by the windows a long text is cut into (default: a quarter of a window; "
              "with --aggregation none, long texts are truncated).")
@click.option("--ignore-labels", default="O", show_default=True, envvar="COULISSE_IGNORE_LABELS",
              help="Labels not shown, comma-separated ('' shows every label).")
@click.option("-j", "--json", "as_json", is_flag=True, help="One JSON object per text (text, entities).")
@engine_options
def ner(texts, model, aggregation, stride, ignore_labels, as_json, threads, quantize):
    """Find named entities (or any token labels) in TEXTS, or lines of stdin.

    Entities carry character offsets into the text (`start`, `end`) and the word as the tokenizer
    rebuilds it, as transformers' token-classification pipeline returns them.

    \b
    Examples:
      coulisse ner -m Jean-Baptiste/camembert-ner "Je m'appelle Jean-Baptiste et je vis à Montréal."
      coulisse ner -m ./my-ner --aggregation first --json "Emmanuel Macron est à Berlin."
      cat article.txt | coulisse ner -m ./my-ner --stride 64 --ignore-labels O,MISC
    """
    model = require_model(model, "a token-classification checkpoint")
    lines = read_texts(texts)  # before the model loads: a missing or undecodable text is said first
    pipe = load_pipeline("token-classification", model, threads, quantize)
    if stride is None and aggregation != "none":
        stride = pipe.tokenizer.model_max_length // 4
    labels = [label for label in ignore_labels.split(",") if label]
    options = {"aggregation_strategy": aggregation, "ignore_labels": labels, "stride": stride}
    results = pipe(lines, **{k: v for k, v in options.items() if v is not None})
    for text, entities in zip(lines, results, strict=True):
        if as_json:
            click.echo(json.dumps({"text": text, "entities": entities}, ensure_ascii=False))
            continue
        click.echo(one_line(text))
        for e in entities or []:
            label = printable(e.get("entity_group") or f"{e['entity']} #{e['index']}")
            click.echo(f"  {label:<14} {e['score']:.4f}  [{e['start']}:{e['end']}]  {e['word']!r}")
        if not entities:
            click.echo("  (no entity)")


@click.command("fill-mask")
@click.argument("texts", nargs=-1)
@model_option(default_help=None)
@click.option("-k", "--top-k", type=int, default=5, show_default=True, callback=positive,
              help="Proposals per mask.")
@click.option("-w", "--targets", default=None, envvar="COULISSE_TARGETS", callback=some_targets,
              help="Only score these words, comma-separated: 'bon,mauvais'.")
@click.option("-j", "--json", "as_json", is_flag=True, help="One JSON object per text (text, proposals).")
@engine_options
def fill_mask(texts, model, top_k, targets, as_json, threads, quantize):
    """Propose the words hidden behind the mask token of TEXTS, or lines of stdin.

    Write the mask as the model spells it, <mask> (RoBERTa, CamemBERT, XLM-R) or [MASK] (BERT);
    the other spelling is replaced by the model's.

    \b
    Examples:
      coulisse fill-mask -m almanach/camembert-base "Le camembert est <mask> !"
      coulisse fill-mask -m ./my-mlm -k 3 --targets bon,mauvais "Ce film est vraiment <mask>."
      coulisse fill-mask -m bert-base-uncased --json "Paris is the [MASK] of France."
    """
    model = require_model(model, "a masked-language-model checkpoint")
    given, texts = bool(texts) and tuple(texts) != ("-",), read_texts(texts)
    pipe = load_pipeline("fill-mask", model, threads, quantize)
    mask = pipe.tokenizer.special_tokens["mask"]
    lines = [with_mask(text, mask) for text in texts]
    for n, line in enumerate(lines, 1):  # said as the command line counts, before the pipeline's texts[0]
        if mask not in line:
            where = f"TEXT {n}" if given else f"line {n} of stdin"
            raise click.UsageError(f"{where} ({line!r:.60}) has no mask token ({mask}); put one where a word is "
                                   "missing.")
    options = {"top_k": top_k}
    if targets:
        options["targets"] = [t for t in targets.split(",") if t]
    results = pipe(lines, **options)
    if len(lines) == 1:  # transformers unwraps a one-text list
        results = [results]
    for text, result in zip(lines, results, strict=True):
        if as_json:
            click.echo(json.dumps({"text": text, "proposals": result}, ensure_ascii=False))
            continue
        click.echo(one_line(text))
        per_mask = [result] if result and isinstance(result[0], dict) else result
        for n, proposals in enumerate(per_mask, 1):
            if len(per_mask) > 1:
                click.echo(f"  mask {n}:")
            for p in proposals:
                score = probability(p["score"])
                click.echo(f"  {score:<9}  {p['token_str']!r:<18} {one_line(p['sequence'], 70)}")


@click.command()
@click.argument("texts", nargs=-1)
@model_option(default_help=None)
@click.option("-p", "--pooling", type=Choice(["auto", "mean", "cls", "splade"]), default="auto",
              show_default=True, envvar="COULISSE_POOLING",
              help="auto: the folder's sentence-transformers settings (pooling, Normalize, max length; a "
              "SparseEncoder folder is SPLADE), else mean; splade: a masked LM's sparse weights, heaviest first.")
@click.option("--normalize/--no-normalize", default=None, envvar="COULISSE_NORMALIZE",
              help="Divide each embedding by its L2 norm (default: as the folder says with --pooling auto; no with "
                   "another --pooling, or without a Normalize module).")
@click.option("-j", "--json", "as_json", is_flag=True, help="One JSON object per text (text, embedding).")
@engine_options
@click.option("-i", "--input", "input_path", default=None, envvar="COULISSE_INPUT",
              help="Corpus job: read FILE (.csv .tsv .jsonl .parquet .txt, or - for stdin) instead of TEXTS.")
@click.option("-o", "--output", default=None, envvar="COULISSE_OUTPUT",
              help="Corpus job output: .parquet, .jsonl or .npy (default: JSONL on stdout).")
@click.option("-c", "--column", default=None, envvar="COULISSE_COLUMN",
              help="Text column (default: 'text', else the only string column).")
@encoding_option()
@click.option("--resume", is_flag=True, envvar="COULISSE_RESUME",
              help="Continue an interrupted job where its output ends, with the input and options "
              "recorded next to it.")
@click.option("--overwrite", is_flag=True, envvar="COULISSE_OVERWRITE", help="Replace a non-empty output.")
@click.option("--quiet", is_flag=True, envvar="COULISSE_QUIET", help="No progress bar, no summary.")
@click.option("--progress/--no-progress", default=None, envvar="COULISSE_PROGRESS",
              help="Show the progress bar even when stderr is not a terminal (or never).")
@click.option("-b", "--batch-rows", type=click.IntRange(min=1), default=1024, show_default=True,
              envvar="COULISSE_BATCH_ROWS", help="Rows read, embedded and committed at a time.")
@ray_options
def embed(texts, model, pooling, normalize, as_json, threads, quantize, input_path, output, column, encoding,
          resume, overwrite, quiet, progress, batch_rows, on_ray, address, actors, shard_format):
    """Turn TEXTS, or lines of stdin, into sentence embeddings (one vector per text); or a whole file
    with --input.

    \b
    Examples:
      coulisse embed -m sentence-transformers/all-MiniLM-L6-v2 "Le chat dort." "Un chat fait la sieste."
      cat phrases.txt | coulisse embed -m ./my-encoder --pooling cls --normalize --json > vectors.jsonl
      coulisse embed -m sentence-transformers/all-MiniLM-L6-v2 -i reviews.csv -o vectors.parquet
      coulisse embed -o vectors.npy --resume
      coulisse embed -m ./my-encoder -i 'data/*.parquet' -o vectors/ --ray --address auto
      coulisse embed -m naver/splade-v3 --pooling splade "Le chat dort."   # the heaviest vocabulary entries

    With --input, rows are committed chunk by chunk as for `classify --input`: --resume continues an
    interrupted job with the recorded input and options. Parquet gets an `embedding` column (float32
    list) and `error`; JSONL the same keys; .npy a (rows, dim) float32 array with error rows as NaN,
    listed in <output>.errors.jsonl. With --ray, --output is a folder of Parquet or JSONL shards with
    those columns (not .npy), and a rerun skips the shards committed. A SPLADE model (--pooling splade,
    or a SparseEncoder folder) writes `sparse_embedding` ({"indices", "values"}) to Parquet or JSONL.
    """
    check_mode_options(click.get_current_context())
    if on_ray:
        from coulisse.interfaces.jobs.distributed import run_cli

        return run_cli(click.get_current_context(), task="embed")
    if input_path is not None or output is not None:
        return run_embed_job(click.get_current_context())
    model = require_model(model, "an encoder")
    lines = read_texts(texts)
    if is_sparse(model, pooling, given_revision()):
        if normalize is not None:
            raise click.UsageError("--normalize applies to dense embeddings; SPLADE weights are not normalized.")
        return _print_sparse(load_pipeline("sparse-embedding", model, threads, quantize), lines, as_json)
    pipe = load_pipeline("feature-extraction", model, threads, quantize)
    vectors = pipe(lines, pooling=pooling, **({} if normalize is None else {"normalize": normalize}))
    for text, vector in zip(lines, vectors, strict=True):
        if as_json:
            click.echo(json.dumps({"text": text, "embedding": vector}, ensure_ascii=False))
        else:
            norm = sum(v * v for v in vector) ** 0.5
            start = ", ".join(f"{v:.4f}" for v in vector[:4])
            click.echo(f"dim {len(vector)}  norm {norm:.4f}  [{start}, ...]  {one_line(text, 40)}")


SPARSE_SHOWN = 10  # entries printed per text (--json prints them all)


def _print_sparse(pipe, lines: list[str], as_json: bool) -> None:
    """Each text's SPLADE weights: all of them as JSON, else the count and the heaviest entries."""
    for text, entries in zip(lines, pipe(lines), strict=True):
        if as_json:
            click.echo(json.dumps({"text": text, "sparse_embedding": entries}, ensure_ascii=False))
            continue
        click.echo(f"{len(entries)} active of {pipe.vocab_size}  {one_line(text, 60)}")
        shown = "  ".join(f"{printable(str(e['token']))} {e['value']:.2f}" for e in entries[:SPARSE_SHOWN])
        click.echo(f"  {shown}" if shown else "  (no active entry)")

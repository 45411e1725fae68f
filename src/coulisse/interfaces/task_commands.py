"""`coulisse ner`, `coulisse fill-mask` and `coulisse embed`; and `explain --task` for every task that
`coulisse.interfaces.explain.STAGES` renders."""

from __future__ import annotations

import json

import click

from coulisse.interfaces.cli import engine_options, load_pipeline, model_option, read_texts

AGGREGATIONS = ("none", "simple", "first", "average", "max")
MASKS = ("<mask>", "[MASK]")


def _shown(text: str, width: int = 60) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 3] + "..."


def _require(model: str | None, what: str) -> str:
    if model is None:
        raise click.UsageError(f"give --model: {what} (Hub id or folder), or set COULISSE_MODEL.")
    return model


@click.command()
@click.argument("texts", nargs=-1)
@model_option(default=None)
@click.option("-a", "--aggregation", type=click.Choice(AGGREGATIONS), default="simple", show_default=True,
              envvar="COULISSE_AGGREGATION",
              help="none: one row per token; simple: adjacent tokens of one entity grouped; first / average "
              "/ max: words kept whole, labelled by their first token, mean scores, or best token.")
@click.option("-s", "--stride", type=int, default=None, envvar="COULISSE_STRIDE",
              help="Tokens shared by the windows a long text is cut into (default: a quarter of a window; "
              "with --aggregation none, long texts are truncated).")
@click.option("-i", "--ignore-labels", default="O", show_default=True, envvar="COULISSE_IGNORE_LABELS",
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
      cat article.txt | coulisse ner -m ./my-ner --stride 64 -i O,MISC
    """
    pipe = load_pipeline("token-classification", _require(model, "a token-classification checkpoint"),
                         threads, quantize)
    lines = read_texts(texts)
    if stride is None and aggregation != "none":
        stride = pipe.tokenizer.model_max_length // 4
    labels = [label for label in ignore_labels.split(",") if label]
    options = {"aggregation_strategy": aggregation, "ignore_labels": labels, "stride": stride}
    results = pipe(lines, **{k: v for k, v in options.items() if v is not None})
    for text, entities in zip(lines, results, strict=True):
        if as_json:
            click.echo(json.dumps({"text": text, "entities": entities}, ensure_ascii=False))
            continue
        click.echo(_shown(text))
        for e in entities or []:
            label = e.get("entity_group") or f"{e['entity']} #{e['index']}"
            click.echo(f"  {label:<14} {e['score']:.4f}  [{e['start']}:{e['end']}]  {e['word']!r}")
        if not entities:
            click.echo("  (no entity)")


@click.command("fill-mask")
@click.argument("texts", nargs=-1)
@model_option(default=None)
@click.option("-k", "--top-k", type=int, default=5, show_default=True, help="Proposals per mask.")
@click.option("-w", "--targets", default=None, envvar="COULISSE_TARGETS",
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
    pipe = load_pipeline("fill-mask", _require(model, "a masked-language-model checkpoint"), threads,
                         quantize)
    mask = pipe.tokenizer.special_tokens["mask"]
    lines = [_with_mask(text, mask) for text in read_texts(texts)]
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
        click.echo(_shown(text))
        per_mask = [result] if result and isinstance(result[0], dict) else result
        for n, proposals in enumerate(per_mask, 1):
            if len(per_mask) > 1:
                click.echo(f"  mask {n}:")
            for p in proposals:
                click.echo(f"  {p['score']:.4f}  {p['token_str']!r:<18} {_shown(p['sequence'], 70)}")


def _with_mask(text: str, mask: str) -> str:
    for other in MASKS:
        if other != mask:
            text = text.replace(other, mask)
    return text


@click.command()
@click.argument("texts", nargs=-1)
@model_option(default=None)
@click.option("-p", "--pooling", type=click.Choice(["auto", "mean", "cls"]), default="auto",
              show_default=True, envvar="COULISSE_POOLING",
              help="auto: the folder's sentence-transformers settings (pooling, Normalize, max length), "
              "else mean.")
@click.option("--normalize/--no-normalize", default=None, envvar="COULISSE_NORMALIZE",
              help="Divide each embedding by its L2 norm (default: as the folder says; no without one).")
@click.option("-j", "--json", "as_json", is_flag=True, help="One JSON object per text (text, embedding).")
@engine_options
def embed(texts, model, pooling, normalize, as_json, threads, quantize):
    """Turn TEXTS, or lines of stdin, into sentence embeddings (one vector per text).

    \b
    Examples:
      coulisse embed -m sentence-transformers/all-MiniLM-L6-v2 "Le chat dort." "Un chat fait la sieste."
      cat phrases.txt | coulisse embed -m ./my-encoder --pooling cls --normalize --json > vectors.jsonl
    """
    pipe = load_pipeline("feature-extraction", _require(model, "an encoder"), threads, quantize)
    lines = read_texts(texts)
    vectors = pipe(lines, pooling=pooling, **({} if normalize is None else {"normalize": normalize}))
    for text, vector in zip(lines, vectors, strict=True):
        if as_json:
            click.echo(json.dumps({"text": text, "embedding": vector}, ensure_ascii=False))
        else:
            norm = sum(v * v for v in vector) ** 0.5
            start = ", ".join(f"{v:.4f}" for v in vector[:4])
            click.echo(f"dim {len(vector)}  norm {norm:.4f}  [{start}, ...]  {_shown(text, 40)}")


def register(cli: click.Group) -> None:
    from coulisse.interfaces.explain import STAGES

    for command in (ner, fill_mask, embed):
        cli.add_command(command)
    # `explain --task` offers every task explain.py renders; the table lives there, not in cli.py.
    task = next(p for p in cli.commands["explain"].params if p.name == "task")
    task.type = click.Choice(list(STAGES))

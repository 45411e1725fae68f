"""`coulisse evaluate`: run the classifier over a labelled file, then metrics, plots and a report folder.

Labels may be the model's names (`POSITIVE`; case does not matter when unambiguous) or its ids (`1`).
When none of the first chunk's labels matches, the job stops before the model has run, naming the
values found and the model's labels; a later unknown label excludes its row and is listed in the report.
A `--label-map` key that matches no label while the file has labels the map leaves out is a typo that would
drop a class from the scores: refused after the first chunk is read, before it is classified, naming the
file's labels and the closest one; found only after the run (the class came later in the file), the report
is written and the command exits 1 saying so.
"""

from __future__ import annotations

import difflib
import hashlib
import importlib.util
import itertools
import random
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from coulisse.defaults import BUNDLED_ACCURACY, BUNDLED_DIR, BUNDLED_MODEL, BUNDLED_TRAINING_DIGESTS
from coulisse.errors import InputError
from coulisse.interfaces.formatting import count
from coulisse.interfaces.jobs.formats import EXTENSIONS, STDIO, Prediction, Row, input_format
from coulisse.interfaces.jobs.lock import check_writable
from coulisse.interfaces.jobs.runner import JobOptions, Summary, classify_file

MISSING, UNKNOWN = -1, -2
DIGEST_DIGITS = 16  # training/training_digests.py's


class LabelMap:
    """A label value -> the model's label id, MISSING (null or blank) or UNKNOWN."""

    def __init__(self, id2label: dict[int, str], aliases: dict[str, str] | None = None):
        self.id2label = id2label
        self.by_name = {name: i for i, name in id2label.items()}
        folded = Counter(name.casefold() for name in id2label.values())
        self.by_folded = {name.casefold(): i for i, name in id2label.items() if folded[name.casefold()] == 1}
        self.aliases = {}  # the file's value -> the model's id (--label-map), checked against the model
        for value, name in (aliases or {}).items():
            target = self.by_name.get(name, self.by_folded.get(name.casefold()))
            if target is None and name.isascii() and name.isdecimal() and int(name) in id2label:  # not '²'
                target = int(name)
            if target is None:
                raise InputError(f"--label-map {value}={name}: the model has no label {name!r}; it knows "
                                 f"{self.describe()}.")
            self.aliases[value] = target

    def __call__(self, value) -> int:
        if value is None or (isinstance(value, str) and not value.strip()):
            return MISSING
        if self.aliases and str(value).strip() in self.aliases:
            return self.aliases[str(value).strip()]
        if isinstance(value, str):
            text = value.strip()
            found = self.by_name.get(text, self.by_folded.get(text.casefold()))
            if found is not None:
                return found
            try:
                value = float(text)
            except ValueError:
                return UNKNOWN
        if isinstance(value, (int, float)) and not isinstance(value, bool) and float(value).is_integer():
            return int(value) if int(value) in self.id2label else UNKNOWN
        return UNKNOWN

    def describe(self) -> str:
        return ", ".join(f"{name} (id {i})" for i, name in sorted(self.id2label.items()))

    def unused(self, seen: Counter) -> list[str]:
        """The --label-map keys that match none of the label values `seen` (stripped strings)."""
        return [key for key in self.aliases if key not in seen]


def parse_label_map(given: str | None) -> dict[str, str]:
    """--label-map 'positif=POSITIVE,négatif=NEGATIVE' -> {"positif": "POSITIVE", "négatif": "NEGATIVE"}."""
    if given is None:
        return {}
    mapped: dict[str, str] = {}
    for part in given.split(","):
        value, sep, name = part.partition("=")
        value, name = value.strip(), name.strip()
        if not sep or not value or not name:
            raise InputError(f"--label-map {given!r}: {part.strip()!r} is not FILE_LABEL=MODEL_LABEL; write e.g. "
                             "positif=POSITIVE,négatif=NEGATIVE.")
        if value in mapped and mapped[value] != name:
            raise InputError(f"--label-map {given!r} maps {value!r} twice ({mapped[value]} and {name}).")
        mapped[value] = name
    return mapped


@dataclass
class EvalOptions:
    input: str
    label_column: str = "label"
    report_dir: str = "coulisse-evaluation"
    limit: int | None = None
    sample: int | None = None
    seed: int = 0
    bins: int = 10
    job: JobOptions = field(default_factory=lambda: JobOptions(input=STDIO))
    plots: bool = True
    label_map: dict[str, str] = field(default_factory=dict)  # the file's label -> the model's (name or id)


@dataclass
class Collected:
    """What the metrics need, gathered chunk by chunk while predictions are written."""

    y_true: list[int] = field(default_factory=list)
    y_pred: list[int] = field(default_factory=list)
    probs: list[list[float]] = field(default_factory=list)
    missing: int = 0
    unknown: Counter = field(default_factory=Counter)
    read: int = 0  # rows read from the input, before --limit and --sample chose among them
    seen: Counter = field(default_factory=Counter)  # every row's label value (not missing), as a stripped str
    training: frozenset[str] | None = None  # the bundled model's training texts, as digests; None: another model
    trained: int = 0  # evaluated rows whose text is one of `training`


@dataclass
class Evaluation:
    options: EvalOptions
    summary: Summary
    collected: Collected
    labels: list[str]
    model: str
    precision: str = "exact (float32)"  # what ran: the report says it, since --quantize and --fast change scores
    caveat: str | None = None  # what the scores cannot say (the bundled model on the reviews it learnt from)
    unused_keys: list[str] = field(default_factory=list)  # --label-map keys no row's label matched

    def unused_key_problem(self) -> str | None:
        """What to say of --label-map keys no label matched; None when every key matched one."""
        if not self.unused_keys:
            return None
        c = self.collected
        said = unused_keys_message(self.unused_keys, c.seen, c.unknown, self.options)
        if not c.unknown:
            return f"{said} No row was left out for it."
        lost = ", ".join(repr(v) for v, _ in c.unknown.most_common(4))
        were = "was" if c.unknown.total() == 1 else "were"
        return (f"{said} {count(c.unknown.total(), 'row')} labelled {lost} {were} left out of the scores: fix "
                "--label-map and run again with --overwrite.")


def training_digests() -> frozenset[str]:
    """The bundled model's training reviews (its card's split), as training/training_digests.py writes them."""
    return frozenset(BUNDLED_TRAINING_DIGESTS.read_text(encoding="ascii").split())


def is_training(text: str, digests: frozenset[str]) -> bool:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:DIGEST_DIGITS] in digests


def training_caveat(trained: int, evaluated: int) -> str | None:
    """What to say when the bundled model is scored on reviews it learnt from; nothing on held-out rows."""
    if not trained:
        return None
    return (f"{trained:,} of the {count(evaluated, 'row')} evaluated are reviews {BUNDLED_MODEL} was trained on "
            "(1,585 of the public Allociné sample, allocine-sample/train.csv; its card says which): on those, "
            f"these scores are not held-out ones. Its card's held-out accuracy is {BUNDLED_ACCURACY:.1%}, on "
            "the other 415.")


def counted(rows: Iterator[Row], collected: Collected) -> Iterator[Row]:
    """`rows`, counting in `collected.read` those read from the input."""
    for row in rows:
        collected.read += 1
        yield row


def limit_and_sample(rows: Iterator[Row], limit: int | None, sample: int | None, seed: int) -> Iterator[Row]:
    """The first `limit` rows, then a uniform sample of `sample` of them (seeded reservoir), in file order."""
    if limit is not None:
        rows = itertools.islice(rows, limit)
    if sample is None:
        yield from rows
        return
    rng = random.Random(seed)
    kept: list[tuple[int, Row]] = []
    for i, row in enumerate(rows):
        if i < sample:
            kept.append((i, row))
        elif (j := rng.randrange(i + 1)) < sample:
            kept[j] = (i, row)
    yield from (row for _, row in sorted(kept, key=lambda pair: pair[0]))


def check_labels(rows: Iterator[Row], labels: LabelMap, options: EvalOptions, window: int) -> Iterator[Row]:
    """Stop before the first chunk is classified when none of its labels is one of the model's, or when a
    --label-map key matches none of them while some are left unmapped (a typo: `negatif` for `négatif`)."""
    matched, unknown, seen = 0, Counter(), Counter()
    rows = iter(rows)
    first = list(itertools.islice(rows, window))  # the first chunk, checked whole before it is classified
    for row in first:
        value = row.values.get(options.label_column)
        kind = labels(value)
        matched += kind >= 0
        if kind != MISSING:
            seen[str(value).strip()] += 1
        if kind == UNKNOWN:
            unknown[str(value)] += 1
    _check_window(labels, unknown, seen, matched, options, window if len(first) == window else None)
    yield from first
    yield from rows


def _check_window(labels: LabelMap, unknown: Counter, seen: Counter, matched: int, options: EvalOptions,
                  window: int | None) -> None:
    """`window`: the rows checked when the file may hold more, None when they are all of its rows."""
    if unknown and (unused := labels.unused(seen)):
        raise InputError(f"{unused_keys_message(unused, seen, unknown, options, window)} Fix --label-map; "
                         "nothing was classified.")
    if unknown and not matched:
        raise mismatch(unknown, labels, options.label_column)


SHOWN_KEYS = 5  # --label-map keys named in a refusal


def unused_keys_message(unused: list[str], seen: Counter, unknown: Counter, options: EvalOptions,
                        window: int | None = None) -> str:
    """`--label-map key 'negatif' matches no label of column 'label' of fr.csv (its labels: ...; did you mean
    'négatif'?)`: the closest label is one the map leaves out, compared case- and accent-blind."""
    found = ", ".join(f"{v!r} ({n:,})" for v, n in seen.most_common(8)) or "none"
    parts = []
    candidates = [str(v).strip() for v in unknown] or list(seen)
    for key in unused[:SHOWN_KEYS]:  # difflib per key: a map of thousands of keys is named by its first few
        close = _closest(key, candidates)
        parts.append(f"{key!r}" + (f" (did you mean {close!r}?)" if close else ""))
    if len(unused) > SHOWN_KEYS:
        parts.append(f"and {len(unused) - SHOWN_KEYS:,} more")
    keys = f"key {parts[0]} matches" if len(parts) == 1 else f"keys {', '.join(parts)} match"
    whose = f"whose first {count(window, 'row')} have the labels" if window else "whose labels are"
    return f"--label-map {keys} no label in column {options.label_column!r} of {options.input}, {whose} {found}."


def _closest(key: str, candidates: list[str]) -> str | None:
    def bare(text: str) -> str:
        return "".join(c for c in unicodedata.normalize("NFKD", text.casefold()) if not unicodedata.combining(c))

    by_bare = {bare(c): c for c in candidates}
    if bare(key) in by_bare:
        return by_bare[bare(key)]
    close = difflib.get_close_matches(bare(key), list(by_bare), n=1, cutoff=0.6)
    return by_bare[close[0]] if close else None


def mismatch(unknown: Counter, labels: LabelMap, column: str) -> InputError:
    found = ", ".join(f"{v!r} ({n})" for v, n in unknown.most_common(8))
    return InputError(f"the labels in column {column!r} do not match the model's: found {found}; the model "
                      f"knows {labels.describe()}. Write them as the model's names or ids, or map them: "
                      f"--label-map {_example(unknown, labels)}.")


def _example(unknown: Counter, labels: LabelMap) -> str:
    """A --label-map for the values found, each to be given its label (never guessed: a wrong guess copied as is
    would invert the scores)."""
    values = ",".join(f"{value}=LABEL" for value, _ in unknown.most_common(len(labels.id2label)))
    return f"'{values}', each LABEL one of the model's"


def _check_dir(options: EvalOptions) -> Path:
    """A finished report is never replaced silently; what a failed run left is."""
    directory = Path(options.report_dir)
    if directory.exists() and not directory.is_dir():
        raise InputError(f"--output-dir {directory} is a file; evaluate writes a folder (report.md, plots, "
                         f"predictions): name a folder, e.g. {directory.with_suffix('')}-report/.")
    check_writable(directory, "--output-dir", folder=True)
    if (directory / "report.md").exists() and not options.job.overwrite:
        raise InputError(f"{directory} holds a report; pass --overwrite to replace it, or choose another "
                         "--output-dir.")
    return directory


def check_request(options: EvalOptions) -> Path:
    """What can be refused before the model is looked up or loaded (the command calls it first): the counts,
    the input's format, the report folder, matplotlib for the plots. Returns the report folder."""
    if options.limit is not None and options.limit < 1 or options.sample is not None and options.sample < 1:
        raise InputError("--limit and --sample take a positive number of rows.")
    if options.input != STDIO and not Path(options.input).exists():  # said before "texts without labels"
        raise InputError(f"{options.input} does not exist; give a labelled CSV, TSV, JSONL or Parquet file.")
    if input_format(options.input) == "txt":
        raise InputError(f"{options.input} holds texts without labels; evaluate needs CSV, TSV, JSONL or "
                         "Parquet with a label column.")
    directory = _check_dir(options)
    if options.plots and importlib.util.find_spec("matplotlib") is None:
        # Known before the model loads, not after every row is classified.
        raise InputError('the plots need matplotlib, which is not installed: pip install "coulisse[jobs]", '
                         "or pass --no-plots.")
    return directory


def check_single_label(config, name: str) -> None:
    """evaluate scores a classifier that picks one label among several, with probabilities that sum to 1: a
    regression head (accuracy 1.0 and an ECE of 3 were reported for one: audit 43), or labels scored each on its
    own, would get numbers that mean nothing."""
    if config.problem_type == "regression" or config.num_labels == 1:
        raise InputError(f"{name} has one output (num_labels 1, problem_type {config.problem_type}): a score, not "
                         "a choice among labels, which is what evaluate measures. Score its outputs from `coulisse "
                         "classify -i FILE -o OUT --all-scores` with a metric of its kind (MSE, correlation).")
    if config.problem_type == "multi_label_classification":
        raise InputError(f"{name} is a multi-label classifier (problem_type multi_label_classification): each "
                         "label is scored on its own, where evaluate measures one label chosen among all. Threshold "
                         "the scores of `coulisse classify -i FILE -o OUT --all-scores` for per-label metrics.")


def evaluate_file(options: EvalOptions, load_pipe: Callable[[], object]) -> Evaluation:
    directory = check_request(options)
    fmt = input_format(options.input)
    ext = EXTENSIONS["jsonl" if fmt == "stdin" else fmt]
    job = options.job
    job.input, job.output = options.input, str(directory / f"predictions{ext}")
    job.overwrite, job.resume = True, False  # the folder was checked above
    job.not_text = (options.label_column,)
    pipes: list = []
    collected = Collected()

    def load():
        pipes.append(load_pipe())
        check_single_label(pipes[0].config, pipes[0].checkpoint.name)
        if Path(pipes[0].checkpoint.directory).resolve() == BUNDLED_DIR.resolve():
            collected.training = training_digests()
        return pipes[0]

    def opened(reader) -> None:
        if reader.columns and options.label_column not in reader.columns:
            raise InputError(f"{options.input} has no label column {options.label_column!r}; its columns are "
                             f"{', '.join(reader.columns)}. Pass --label-column NAME.")
        directory.mkdir(parents=True, exist_ok=True)

    def rows_filter(rows: Iterator[Row]) -> Iterator[Row]:
        labels = LabelMap(pipes[0].config.id2label, options.label_map)
        picked = limit_and_sample(counted(rows, collected), options.limit, options.sample, options.seed)
        return check_labels(picked, labels, options, job.batch_rows)

    def on_chunk(rows: list[Row], preds: list[Prediction]) -> None:
        _collect(collected, rows, preds, LabelMap(pipes[0].config.id2label, options.label_map), options.label_column)

    summary = classify_file(job, load, on_chunk=on_chunk, rows_filter=rows_filter, on_open=opened)
    config = pipes[0].config
    labels = [config.id2label[i] for i in sorted(config.id2label)]
    caveat = training_caveat(collected.trained, len(collected.y_true))
    unused = LabelMap(config.id2label, options.label_map).unused(collected.seen)
    return Evaluation(options, summary, collected, labels, job.model, precision(pipes[0].preparation), caveat,
                      unused)


def precision(preparation) -> str:
    """The precision a pipeline runs at, in the report's words."""
    name = preparation.quantize or str(preparation.dtype).removeprefix("torch.")
    return "exact (float32)" if name == "float32" else f"{name} (the encoder's linear layers; float32 elsewhere)"


def _collect(collected: Collected, rows: list[Row], preds: list[Prediction], labels: LabelMap,
             column: str) -> None:
    for row, pred in zip(rows, preds, strict=True):
        value = row.values.get(column)
        kind = labels(value)
        if kind != MISSING:  # every row's, classified or not: a --label-map key is used if any row has it
            collected.seen[str(value).strip()] += 1
        if pred.error is not None:
            continue
        if kind == MISSING:
            collected.missing += 1
        elif kind == UNKNOWN:
            collected.unknown[str(value)] += 1
        else:
            collected.y_true.append(kind)
            collected.y_pred.append(int(np.argmax(pred.scores)))
            collected.probs.append(pred.scores)
            if collected.training is not None and is_training(row.text or "", collected.training):
                collected.trained += 1

"""What a corpus job reads and writes: formats by file extension, rows, and the added columns."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from coulisse.errors import InputError

STDIO = "-"
INPUT_FORMATS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet",
                 ".txt": "txt"}
OUTPUT_FORMATS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet"}
# `embed -i`: vectors need a list column or an array, which CSV and TSV lack.
EMBED_OUTPUT_FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet", ".npy": "npy"}
EXTENSIONS = {"csv": ".csv", "tsv": ".tsv", "jsonl": ".jsonl", "parquet": ".parquet", "txt": ".txt"}


@dataclass
class Row:
    """One input record: its columns in file order, the text to classify, or why it cannot be."""

    values: dict[str, Any]
    where: str = ""  # "line 12", "lines 12-14", "row 7": for messages
    text: str | None = None
    error: str | None = None


@dataclass
class Added:
    """Names of the columns a job appends. When the input already has a `label`, `score` or `score_*`
    column, all prediction columns get a `predicted_` prefix (an `error` column: `coulisse_error`); when those are
    taken too (a file a job or `evaluate` wrote, classified again by another model), `predicted_2_`,
    `predicted_3_`... (`coulisse_error_2`...): no input value is overwritten, no name written twice."""

    label: str = "label"
    score: str = "score"
    error: str = "error"
    scores: dict[str, str] = field(default_factory=dict)  # model label -> column, with --all-scores

    @classmethod
    def for_columns(cls, columns: list[str], labels: list[str], all_scores: bool) -> Added:
        taken = set(columns)
        names = ["label", "score"] + ([f"score_{label}" for label in labels] if all_scores else [])
        prefixes = itertools.chain(("", "predicted_"), (f"predicted_{n}_" for n in itertools.count(2)))
        prefix = next(p for p in prefixes if not taken & {p + name for name in names})
        scores = {label: f"{prefix}score_{label}" for label in labels} if all_scores else {}
        error = free_name("error", taken | {prefix + name for name in names})
        return cls(f"{prefix}label", f"{prefix}score", error, scores)

    @property
    def names(self) -> list[str]:
        return [self.label, self.score, *self.scores.values(), self.error]

    def for_record(self, keys) -> Added:
        """These names, or, for a JSONL record that has a key of one of them (the names come from the first
        record), the names `for_columns` gives that record's keys: its own values are never overwritten."""
        if not any(name in keys for name in self.names):
            return self
        return Added.for_columns(list(keys), list(self.scores), bool(self.scores))

    def arrow_fields(self, pa) -> list:
        """The added columns' Arrow fields, for a Parquet output."""
        fields = [pa.field(self.label, pa.string()), pa.field(self.score, pa.float64())]
        fields += [pa.field(c, pa.float64()) for c in self.scores.values()]
        return [*fields, pa.field(self.error, pa.string())]


def free_name(name: str, taken: set[str]) -> str:
    """`name`, else `coulisse_<name>`, else `coulisse_<name>_2`, `_3`...: the first no input column has."""
    names = itertools.chain((name, f"coulisse_{name}"), (f"coulisse_{name}_{n}" for n in itertools.count(2)))
    return next(candidate for candidate in names if candidate not in taken)


def input_format(path: str) -> str:
    if path == STDIO:
        return "stdin"
    if Path(path).is_dir():  # else named by its missing extension, a folder is no file to read
        raise InputError(f"{path} is a folder; give a file in it (one of {', '.join(sorted(INPUT_FORMATS))}), "
                         "or '-' for stdin.")
    suffix = Path(path).suffix.lower()
    if suffix not in INPUT_FORMATS:
        raise InputError(f"cannot tell the format of {path!r} from its extension {suffix or '(none)'}; "
                         f"use one of {', '.join(sorted(INPUT_FORMATS))}, or '-' for stdin"
                         f"{CONVERT.get(suffix, '')}.")
    return INPUT_FORMATS[suffix]


# How to turn the files people have into one a job reads (audit 44: refused with no next step).
_EXCEL = (" (a spreadsheet: in Excel, Save As 'CSV UTF-8'; with pandas, pd.read_excel(path).to_csv('x.csv', "
          "index=False))")
CONVERT = {
    ".xlsx": _EXCEL,
    ".xls": _EXCEL,
    ".ods": " (a spreadsheet: save it as CSV; with pandas, pd.read_excel(path).to_csv('x.csv', index=False))",
    ".json": " (one JSON document: write one object per line, .jsonl; with pandas, "
             "pd.read_json(path).to_json('x.jsonl', orient='records', lines=True, force_ascii=False))",
}


def output_format(path: str, task: str = "classify") -> str:
    if path == STDIO:
        return "jsonl"
    suffix = Path(path).suffix.lower()
    formats = EMBED_OUTPUT_FORMATS if task == "embed" else OUTPUT_FORMATS
    if suffix not in formats:
        # a table format classify writes is known, only not for vectors: CSV and TSV have no list type
        what = ("CSV and TSV have no list type to hold a vector" if suffix in OUTPUT_FORMATS
                else f"unknown extension {suffix or '(none)'}{' for embeddings' if task == 'embed' else ''}")
        raise InputError(f"cannot write {path!r}: {what}; use one of {', '.join(sorted(formats))}, or '-' for "
                         "JSONL on stdout.")
    return formats[suffix]


def require(module: str, what: str):
    """Import an optional dependency of the `jobs` extra, or say how to install it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise InputError(f"{what} needs {module.split('.')[0]}: pip install 'coulisse[jobs]'") from None


@dataclass
class Prediction:
    """What a job adds to one row: the top label and its score, every label's score, or an error."""

    label: str | None = None
    score: float | None = None
    scores: list[float] | None = None  # in id order
    error: str | None = None

    def values(self, added: Added) -> dict[str, Any]:
        out: dict[str, Any] = {added.label: self.label, added.score: self.score}
        for i, column in enumerate(added.scores.values()):
            out[column] = self.scores[i] if self.scores is not None else None
        out[added.error] = self.error
        return out

"""`coulisse embed -i FILE -o FILE`: the corpus job of `runner.py` with a sentence embedding per row.

Each chunk runs through the feature-extraction pipeline's stages with its pooling options (`pipe.run`:
preprocess -> forward -> postprocess), which is what `pipeline("feature-extraction", pooling=...,
normalize=...)(texts)` computes; everything else (readers, chunks, commits, the resume fingerprint, the
lock, error rows, the progress bar) is the classify job's.

Outputs (one row per input record, in order):
- Parquet: the carried columns, `embedding` (fixed_size_list<float32>[D]) and `error`;
- JSONL: each record's keys, `embedding` (a list of numbers, the float32 values exactly) and `error`;
- `.npy`: a (N, D) float32 array, row i for input record i; an error row is a row of NaN, and
  `<out>.errors.jsonl` lists `{"row": i, "error": ...}` for each (written only when a row failed).

A SPLADE model (the sparse-embedding pipeline: `--pooling splade`, or a SparseEncoder folder) writes
`sparse_embedding` instead: `{"indices": [...], "values": [...]}`, the non-zero weights by token id (Parquet:
struct<indices: list<int32>, values: list<float32>>), the form sparse vector stores take; not `.npy`.

`.npy` is resumable like an appended text file: its header is numpy's own, which reserves room for a shape
of up to 21 digits (`numpy.lib.format`'s growth padding), so it is written with shape (0, D) first, rows
are appended chunk by chunk, and `finish` rewrites the header in place with (N, D). The committed position
is a pair: bytes of the array file and of the errors file; `--resume` cuts both back to it. The finished
file is byte-identical to `numpy.save` of the same array.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from coulisse.errors import InputError
from coulisse.interfaces.jobs.formats import Row, free_name
from coulisse.interfaces.jobs.predict import RowModel
from coulisse.interfaces.jobs.state import fsync_dir

POOLINGS = ("auto", "mean", "cls")


@dataclass
class Embedding:
    """What an embedding job adds to one row: its vector (float32, (D,)), or an error."""

    vector: np.ndarray | None = None
    error: str | None = None

    def values(self, added: EmbedColumns) -> dict[str, Any]:
        return {added.embedding: None if self.vector is None else self.vector.tolist(), added.error: self.error}


@dataclass
class EmbedColumns:
    """Names of the columns an embedding job appends; an input that has an `embedding` or `error` column
    gets `coulisse_embedding` / `coulisse_error` (taken too: `coulisse_embedding_2`..., as `Added` numbers)."""

    dim: int
    embedding: str = "embedding"
    error: str = "error"

    @classmethod
    def for_columns(cls, columns: list[str], dim: int) -> EmbedColumns:
        taken, name = set(columns), cls.embedding  # the class's own name: embedding, sparse_embedding
        return cls(dim, free_name(name, taken), free_name("error", taken))

    @property
    def names(self) -> list[str]:
        return [self.embedding, self.error]

    def for_record(self, keys) -> EmbedColumns:
        """As `Added.for_record`: a JSONL record's own `embedding` or `error` is never overwritten."""
        if not any(name in keys for name in self.names):
            return self
        return type(self).for_columns(list(keys), self.dim)

    def arrow_fields(self, pa) -> list:
        # The list's item is named as Parquet names it ("element"), so that the schema read back from a
        # part on --resume is the schema a fresh run writes: the file's bytes do not depend on a resume.
        vector = pa.list_(pa.field("element", pa.float32()), self.dim)
        return [pa.field(self.embedding, vector), pa.field(self.error, pa.string())]


class Embedder(RowModel):
    """Rows -> one `Embedding` each, through the pipeline's stages; a chunk that fails is retried row by row
    (`RowModel`), so a poison row is an error row and the others are what they would be without it."""

    result = Embedding
    sparse = False

    def __init__(self, pipe, pooling: str = "auto", normalize: bool | None = None):
        if pipe.task != "feature-extraction":
            raise InputError(f"{pipe!r} is not a feature-extraction pipeline; embedding jobs need one.")
        if pooling not in POOLINGS:
            raise InputError(f"--pooling {pooling!r}; use one of {', '.join(POOLINGS)}.")
        self.pipe = pipe
        given = {"pooling": pooling} | ({} if normalize is None else {"normalize": normalize})
        self.options = pipe.options({**given, "return_tensors": True})
        # What "auto" resolved to (the folder's files), for the record.
        self.sentence = pipe.sentence_config(self.options["pooling"], self.options["normalize"])
        self.dim = pipe.embedding_size(self.options["pooling"])  # the folder's truncate_dim cuts "auto"
        self.limit = pipe.token_limit(self.sentence)
        self.truncated = 0  # texts that reached the token limit

    def fingerprint(self) -> dict[str, Any]:
        """The pooling the job runs, resolved against the model folder (`pooling="auto"` reads its
        sentence-transformers files): recorded next to the engine's choices, checked on resume. The fields added
        in session 41 are left out at their defaults, so a job a previous version started still resumes where
        they change nothing."""
        recorded = asdict(self.sentence)
        for name, default in (("truncate_dim", None), ("renormalize", False), ("prompt_tokens", 0)):
            if recorded.get(name) == default:
                del recorded[name]
        # the prompt the folder's config_sentence_transformers.json puts before each text (audit 43: a resume on a
        # folder whose default prompt had changed mixed the two encodings in one file); none: left out, as above
        if prompt := self.pipe.prompt_text(self.options["pooling"], self.options["prompt_name"],
                                           self.options["prompt"]):
            recorded["prompt"] = prompt
        return {"sentence": recorded}

    def _predict(self, texts: list[str]) -> list[Embedding]:
        batch, vectors = self.pipe.run(texts, self.options)
        array = np.stack([v.numpy() for v in vectors]).astype(np.float32, copy=False)  # (rows, D)
        if not np.isfinite(array).all():  # fp16 overflow, a broken checkpoint: never a silent NaN row
            raise FloatingPointError("the embedding is not finite (NaN or infinity)")
        self.truncated += sum(len(item.ids) >= self.limit for item in batch.items)
        return [Embedding(row) for row in array]


@dataclass
class SparseEmbedding:
    """What a SPLADE job adds to one row: its non-zero weights (token ids ascending, float32), or an error."""

    indices: np.ndarray | None = None
    weights: np.ndarray | None = None
    error: str | None = None

    def values(self, added: SparseColumns) -> dict[str, Any]:
        vector = None if self.indices is None else {"indices": self.indices.tolist(), "values": self.weights.tolist()}
        return {added.embedding: vector, added.error: self.error}


@dataclass
class SparseColumns(EmbedColumns):
    """The columns a SPLADE job appends: `sparse_embedding` (or `coulisse_sparse_embedding`) and the error."""

    embedding: str = "sparse_embedding"

    def arrow_fields(self, pa) -> list:
        vector = pa.struct([pa.field("indices", pa.list_(pa.field("element", pa.int32()))),
                            pa.field("values", pa.list_(pa.field("element", pa.float32())))])
        return [pa.field(self.embedding, vector), pa.field(self.error, pa.string())]


class SparseEmbedder(RowModel):
    """Rows -> one `SparseEmbedding` each, through the sparse-embedding pipeline's stages (`pipe.run`, as
    `pipeline("sparse-embedding")(texts, return_tensors=True)`); failures as `Embedder`'s."""

    result = SparseEmbedding
    sparse = True  # its column is SparseColumns' (row_models.added_columns)

    def __init__(self, pipe, pooling: str = "auto", normalize: bool | None = None):
        if pipe.task != "sparse-embedding":
            raise InputError(f"{pipe!r} is not a sparse-embedding pipeline; SPLADE jobs need one.")
        if pooling not in ("auto", "splade") or normalize is not None:
            raise InputError(f"--pooling {pooling!r}, --normalize {normalize!r}: a SPLADE model pools its own "
                             "weights, unnormalized; drop those options.")
        self.pipe = pipe
        self.options = pipe.options({"return_tensors": True})
        self.dim = pipe.vocab_size
        self.limit = pipe.token_limit(pipe.sentence_config())
        self.truncated = 0

    def fingerprint(self) -> dict[str, Any]:
        """The folder's SPLADE pooling, recorded next to the engine's choices, checked on resume; with its prompt and
        `max_active_dims` where it sets them (left out otherwise: a job an earlier version started resumes)."""
        recorded = {"splade": asdict(self.pipe.splade)}
        if prompt := self.pipe.prompt_text("auto", self.options["prompt_name"], self.options["prompt"]):
            recorded["prompt"] = prompt
        if self.pipe.max_active_dims is not None:
            recorded["max_active_dims"] = self.pipe.max_active_dims
        return recorded

    def _predict(self, texts: list[str]) -> list[SparseEmbedding]:
        batch, tensors = self.pipe.run(texts, self.options)
        results = []
        for tensor in tensors:
            tensor = tensor.coalesce()
            weights = tensor.values().numpy().astype(np.float32, copy=False)
            if not np.isfinite(weights).all():
                raise FloatingPointError("the sparse embedding is not finite (NaN or infinity)")
            results.append(SparseEmbedding(tensor.indices()[0].numpy().astype(np.int32), weights))
        self.truncated += sum(len(item.ids) >= self.limit for item in batch.items)
        return results


class NpySink:
    """A (N, D) float32 `.npy` file plus `<out>.errors.jsonl`; position = [array bytes, errors bytes]."""

    def __init__(self, path: str, added: EmbedColumns):
        if isinstance(added, SparseColumns):
            raise InputError(f"{path}: .npy holds dense (rows, dim) arrays; write SPLADE weights to .parquet or "
                             ".jsonl (indices and values per row).")
        self.path = Path(path)
        self.errors_path = errors_path(path)
        self.dim = added.dim
        self.header = _header(0, self.dim)
        self.rows = 0
        self.file: Any = None
        self.errors: Any = None

    def open(self, position) -> list[int]:
        if position == 0:
            self.file = open(self.path, "wb")  # noqa: SIM115 (closed by finish())
            self.errors = open(self.errors_path, "wb")  # noqa: SIM115
            fsync_dir(self.path.absolute().parent)
            self.file.write(self.header)
            return self._sync()
        array_bytes, error_bytes = position
        for path, committed in ((self.path, array_bytes), (self.errors_path, error_bytes)):
            size = path.stat().st_size if path.exists() else 0  # an empty errors file is removed by finish
            if size < committed:
                raise InputError(f"cannot resume {self.path}: {path.name} holds {max(size, 0)} bytes but "
                                 f"{committed} were committed; it was changed since. Pass --overwrite to start "
                                 "over.")
        with open(self.path, "rb") as f:
            if f.read(len(self.header))[:8] != self.header[:8]:
                raise InputError(f"cannot resume {self.path}: it does not start with a .npy header any more. "
                                 "Pass --overwrite to start over.")
        os.truncate(self.path, array_bytes)  # drop an uncommitted tail, maybe half a row
        self.errors_path.touch()
        os.truncate(self.errors_path, error_bytes)
        self.file = open(self.path, "ab")  # noqa: SIM115
        self.errors = open(self.errors_path, "ab")  # noqa: SIM115
        self.rows = (array_bytes - len(self.header)) // (4 * self.dim)
        return [array_bytes, error_bytes]

    def commit(self, rows: list[Row], preds: list[Embedding]) -> list[int]:
        array = np.full((len(preds), self.dim), np.nan, dtype="<f4")
        lines = []
        for i, pred in enumerate(preds):
            if pred.vector is not None:
                array[i] = pred.vector
            else:
                lines.append(json.dumps({"row": self.rows + i, "error": pred.error}))  # ASCII: any reader
        self.file.write(array.tobytes())
        if lines:
            self.errors.write(("\n".join(lines) + "\n").encode("ascii"))
        self.rows += len(preds)
        return self._sync()

    def _sync(self) -> list[int]:
        for f in (self.file, self.errors):
            f.flush()
            os.fsync(f.fileno())
        return [self.file.tell(), self.errors.tell()]

    def finish(self) -> None:
        """The header gets the final shape, in place (same length); an empty errors file goes. Both are
        idempotent: a job killed here finishes again on --resume."""
        header = _header(self.rows, self.dim)
        if len(header) != len(self.header):  # numpy reserves 21 digits: this is a bug
            raise RuntimeError(f"the .npy header grew from {len(self.header)} to {len(header)} bytes")
        self._sync()
        self.close()
        with open(self.path, "r+b") as f:  # not the appending handle: O_APPEND would add it at the end
            f.write(header)
            f.flush()
            os.fsync(f.fileno())
        if self.errors_path.stat().st_size == 0:
            self.errors_path.unlink()
            fsync_dir(self.path.absolute().parent)

    def close(self) -> None:
        for f in (self.file, self.errors):
            if f is not None:
                with contextlib.suppress(OSError):
                    f.close()

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)
        self.errors_path.unlink(missing_ok=True)


def npy_problem(output: Path, position: list[int], rows: int) -> str:
    """`finished_problem` for a .npy output: both files' sizes, and the rows its header says."""
    errors = errors_path(output)
    sizes = [p.stat().st_size if p.is_file() else 0 for p in (output, errors)]
    if sizes != position:
        return f"{output.name} and {errors.name} hold {sizes[0]:,} and {sizes[1]:,} bytes, the record {position}"
    try:
        with open(output, "rb") as f:
            np.lib.format.read_magic(f)
            shape = np.lib.format.read_array_header_1_0(f)[0]
    except (OSError, ValueError) as e:
        return f"{output.name} has no .npy header ({' '.join(str(e).split())[:120]})"
    return f"{output.name}'s header says {shape[0]:,} rows, the record {rows:,}" if shape[:1] != (rows,) else ""


def errors_path(output: str | Path) -> Path:
    output = Path(output)
    return output.with_name(output.name + ".errors.jsonl")


def _header(rows: int, dim: int) -> bytes:
    """numpy's own .npy header (version 1.0) for a (rows, dim) little-endian float32 array."""
    import io

    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": "<f4", "fortran_order": False, "shape": (rows, dim)})
    return buffer.getvalue()

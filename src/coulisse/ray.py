"""Ray Data adapter: classify or embed a `ray.data.Dataset` with a pool of actors, one pipeline each.

    import ray, coulisse.ray

    ds = ray.data.read_parquet("data/")
    coulisse.ray.classify(ds, model="tblard/tf-allocine").write_parquet("out/")
    # vectors: coulisse.ray.embed(ds, model="sentence-transformers/all-MiniLM-L6-v2")
    # by hand: ds.map_batches(coulisse.ray.Predictor, fn_constructor_kwargs={"model": ...}, num_cpus=1,
    #                         compute=ray.data.ActorPoolStrategy(size=...), batch_format="pandas")

Each actor loads the pipeline once, with as many threads as Ray gives it CPUs (`num_cpus`), and resolves
the model on its own node (its HF cache or a path there): no weights travel through the object store.
A batch comes back with its columns and the columns the corpus job adds (`label`, `score`, `score_<LABEL>`
with `all_scores=True`, `error`; `embedding`, `error` for `Embedder`), computed by the job's own row models
(`interfaces/jobs/predict.py`, `interfaces/jobs/embed.py`): a null, blank or non-string text and a row the
model fails on are error rows, never a failed task. Resuming after a crash is the CLI's
(`coulisse classify -i ... -o out/ --ray`, interfaces/jobs/distributed.py), not Ray Data's.
"""

from __future__ import annotations

import logging
import math
import sys
from typing import Any

from coulisse.errors import InputError
from coulisse.interfaces.jobs.formats import Added, Row
from coulisse.interfaces.jobs.row_models import engine_options

__all__ = ["Predictor", "Embedder", "classify", "embed", "assigned_threads"]

log = logging.getLogger(__name__)


def assigned_threads() -> int:
    """The CPUs Ray gave the calling actor (at least 1); 1 outside Ray."""
    try:
        import ray

        cpus = ray.get_runtime_context().get_assigned_resources().get("CPU") if ray.is_initialized() else None
    except Exception:  # noqa: BLE001 (not inside a Ray worker)
        cpus = None
    return max(1, int(cpus)) if cpus else 1


def checked_row(value: Any, column: str, where: str) -> Row:
    """A row whose text is `value`, or an error row saying why it cannot be classified (the readers'
    checks: missing, null, not a string, blank, or text the tokenizer refuses such as a lone surrogate)."""
    from coulisse.interfaces.jobs.readers import check_text

    if _is_null(value):
        value = None
    row = Row({}, where)
    row.text, row.error = check_text(value, column, where)
    return row


def _is_null(value: Any) -> bool:
    """pandas' nulls as None: NaN in an object column, `pd.NA` in a "string" column (what Ray Data gives
    for a Parquet or Arrow string column with nulls)."""
    if isinstance(value, float) and math.isnan(value):
        return True
    pandas = sys.modules.get("pandas")
    return pandas is not None and value is pandas.NA


class _BatchMapper:
    """What `Predictor` and `Embedder` share: a Ray Data batch (pandas, pyarrow or a numpy dict) -> the job's
    rows (a missing, null, blank or non-string text is an error row) -> the same batch with the job's columns
    appended. Subclasses set `self.rows` (the job's row model), `self.column` and `self.key`, and say which
    columns they add (`added`) and how each is typed in each format."""

    rows: Any
    column: str
    key: str | None

    def added(self, columns: list[str]):
        """The names of the columns this job appends to a batch with these `columns`."""
        raise NotImplementedError

    def _pandas_column(self, added, name: str, values: list, index):
        raise NotImplementedError

    def _arrow_column(self, added, name: str, values: list):
        raise NotImplementedError

    def _numpy_column(self, added, name: str, values: list):
        raise NotImplementedError

    def predict(self, columns: list[str], texts: list, keys: list | None) -> tuple[Any, list]:
        if self.column not in columns:
            raise InputError(f"the dataset has no column {self.column!r}; its columns are {', '.join(columns)}. "
                             "Pass column=NAME.")
        if self.key is not None and keys is None:
            raise InputError(f"the dataset has no key column {self.key!r}; its columns are {', '.join(columns)}.")
        where = [f"{self.key} {k}" for k in keys] if keys is not None else \
            [f"row {i + 1} of its batch" for i in range(len(texts))]
        rows = [checked_row(t, self.column, w) for t, w in zip(texts, where, strict=True)]
        return self.added(columns), self.rows(rows)

    def __call__(self, batch):
        if isinstance(batch, dict):  # numpy batches (Ray Data's default format)
            return self._numpy(batch)
        if hasattr(batch, "iloc"):
            return self._pandas(batch)
        return self._arrow(batch)

    def _pandas(self, df):
        columns = [str(c) for c in df.columns]
        keys = df[self.key].tolist() if self.key in df.columns else None
        texts = df[self.column].tolist() if self.column in df.columns else []
        added, preds = self.predict(columns, texts, keys)
        out = df.copy()
        for name, values in _added_columns(added, preds).items():
            out[name] = self._pandas_column(added, name, values, df.index)
        return out

    def _arrow(self, table):
        columns = list(table.column_names)
        keys = table.column(self.key).to_pylist() if self.key in columns else None
        texts = table.column(self.column).to_pylist() if self.column in columns else []
        added, preds = self.predict(columns, texts, keys)
        for name, values in _added_columns(added, preds).items():
            table = table.append_column(name, self._arrow_column(added, name, values))
        return table

    def _numpy(self, batch: dict):
        columns = list(batch)
        keys = batch[self.key].tolist() if self.key in batch else None
        texts = batch[self.column].tolist() if self.column in batch else []
        added, preds = self.predict(columns, texts, keys)
        out = dict(batch)
        for name, values in _added_columns(added, preds).items():
            out[name] = self._numpy_column(added, name, values)
        return out


class Predictor(_BatchMapper):
    """A callable class for `Dataset.map_batches`: pandas, pyarrow or numpy batches in, the same batch with
    the corpus job's columns added out (`label`, `score`, `score_<LABEL>` with `all_scores=True`, `error`).

    `key`: a column that names each row in error messages (`id 42: 'text' is null`); without it a row is
    named by its place in its batch, which Ray chooses. `quantize="int8"`, `fast=True` or `revision=` (of a Hub
    id, resolved on each node) as in `pipeline()`.
    """

    def __init__(self, model: str | None = None, *, column: str = "text", all_scores: bool = False,
                 long_text: str = "truncate", stride: int | None = None, quantize: str = "none",
                 fast: bool = False, threads: int | None = None, key: str | None = None,
                 revision: str | None = None):
        from coulisse.interfaces.jobs.predict import Predictor as RowPredictor
        from coulisse.pipelines import pipeline

        if stride is not None and long_text != "chunk":
            raise InputError("stride only applies with long_text='chunk'.")
        self.threads = threads or assigned_threads()
        pipe = pipeline("text-classification", model=model, threads=self.threads,
                        **engine_options(quantize, fast, revision=revision))
        self.rows = RowPredictor(pipe, long_text, stride)
        self.labels = self.rows.labels
        self.column, self.all_scores, self.key = column, all_scores, key

    def added(self, columns: list[str]) -> Added:
        return Added.for_columns(columns, self.labels, self.all_scores)

    @staticmethod
    def _text(added: Added, name: str) -> bool:
        return name in (added.label, added.error)

    def _pandas_column(self, added: Added, name: str, values: list, index):
        import pandas as pd
        import pyarrow as pa

        # Arrow-backed: written as the CLI writes them (string, double, nulls for an error row's label and
        # score), where pandas' own "string" became large_string and an all-null error column Arrow's null type
        return pd.Series(values, index=index, dtype=pd.ArrowDtype(pa.string() if self._text(added, name)
                                                                  else pa.float64()))

    def _arrow_column(self, added: Added, name: str, values: list):
        import pyarrow as pa

        return pa.array(values, type=pa.string() if self._text(added, name) else pa.float64())

    def _numpy_column(self, added: Added, name: str, values: list):
        import numpy as np

        if self._text(added, name):
            return np.array(values, dtype=object)
        return np.array([math.nan if v is None else v for v in values])


class Embedder(_BatchMapper):
    """`Dataset.map_batches`'s callable for embeddings, as `coulisse embed -i` computes them: the batch with
    `embedding` and `error` appended (`coulisse_embedding` / `coulisse_error` where those names are taken).

    The vector column is float32 in every format: a fixed-size list of `dim` floats with pyarrow (the
    schema `coulisse embed -o out.parquet` writes; null for an error row), the same list type Arrow-backed
    with pandas (`pd.ArrowDtype`; null for an error row), a `(rows, dim)` float32 array with numpy batches
    (NaN rows for errors).
    `pooling` ("auto" reads the folder's sentence-transformers files, "mean", "cls") and `normalize` as in
    `coulisse embed`; `key`, `quantize`, `fast`, `threads`, `revision` as in `Predictor`. A SPLADE model
    (`pooling="splade"`, or a SparseEncoder folder with "auto") appends `sparse_embedding` instead:
    `{"indices", "values"}` per row, a struct of int32 and float32 lists with pyarrow and pandas, dicts in an
    object array with numpy.
    """

    def __init__(self, model: str | None = None, *, column: str = "text", pooling: str = "auto",
                 normalize: bool | None = None, quantize: str = "none", fast: bool = False,
                 threads: int | None = None, key: str | None = None, revision: str | None = None):
        from coulisse.interfaces.jobs.embed import Embedder as RowEmbedder
        from coulisse.interfaces.jobs.embed import SparseEmbedder
        from coulisse.interfaces.jobs.row_models import is_sparse
        from coulisse.pipelines import pipeline

        self.threads = threads or assigned_threads()
        self.sparse = is_sparse(model, pooling, revision)
        task = "sparse-embedding" if self.sparse else "feature-extraction"
        pipe = pipeline(task, model=model, threads=self.threads, **engine_options(quantize, fast, revision=revision))
        self.rows = (SparseEmbedder if self.sparse else RowEmbedder)(pipe, pooling, normalize)
        self.dim = self.rows.dim
        self.column, self.key = column, key

    def added(self, columns: list[str]):
        from coulisse.interfaces.jobs.embed import EmbedColumns, SparseColumns

        return (SparseColumns if self.sparse else EmbedColumns).for_columns(columns, self.dim)

    def _pandas_column(self, added, name: str, values: list, index):
        import pandas as pd

        if name == added.error:
            return pd.Series(values, index=index, dtype="string")
        # Arrow-backed: the embed job's fixed-size float32 lists, nulls included, which Ray turns into its
        # blocks as they are (a column of NumPy arrays with None among them fails its tensor conversion).
        return pd.Series(pd.arrays.ArrowExtensionArray(self._arrow_column(added, name, values)), index=index)

    def _arrow_column(self, added, name: str, values: list):
        import pyarrow as pa

        field = {f.name: f for f in added.arrow_fields(pa)}[name]
        return pa.array(values, type=field.type)

    def _numpy_column(self, added, name: str, values: list):
        import numpy as np

        if name == added.error or self.sparse:  # SPLADE: one {"indices", "values"} dict (or None) per row
            out = np.empty(len(values), dtype=object)
            out[:] = values
            return out
        out = np.full((len(values), self.dim), np.nan, dtype=np.float32)
        for i, v in enumerate(values):
            if v is not None:
                out[i] = v
        return out


def _added_columns(added, preds: list) -> dict[str, list]:
    records = [p.values(added) for p in preds]
    return {name: [r[name] for r in records] for name in added.names}


def classify(ds, model: str | None = None, *, concurrency: int | tuple[int, int] | None = None,
             num_cpus: float = 1, batch_size: int = 1024, batch_format: str = "pandas", **options):
    """`ds.map_batches(Predictor, ...)` with one pipeline per actor; `options` are Predictor's
    (column, all_scores, long_text, stride, quantize, fast, threads, key, revision). Returns the lazy labelled
    Dataset.

    Default `concurrency`: as many actors as the cluster's CPUs allow, less one CPU left to Ray Data's read
    and write tasks (actors holding every CPU leave a `read_parquet` waiting for one, forever); a `num_cpus`
    that leaves none is refused. What can be checked without the model is checked here, on the driver, before
    an actor starts: the options' names and values, the text and key columns (when the dataset's schema is
    known without reading it). `model=None` is the default model, resolved here: every actor loads the same."""
    return _map(ds, Predictor, model, concurrency, num_cpus, batch_size, batch_format, options)


def embed(ds, model: str | None = None, *, concurrency: int | tuple[int, int] | None = None,
          num_cpus: float = 1, batch_size: int = 1024, batch_format: str = "pyarrow", **options):
    """`ds.map_batches(Embedder, ...)`, as `classify` does for labels; `options` are Embedder's (column,
    pooling, normalize, quantize, fast, threads, key, revision). pyarrow batches by default: the vectors stay
    fixed-size float32 lists from the actor to the written file."""
    return _map(ds, Embedder, model, concurrency, num_cpus, batch_size, batch_format, options)


def _map(ds, mapper: type, model, concurrency, num_cpus, batch_size, batch_format, options):
    try:
        import ray
    except ImportError:  # as the CLI's --ray says it (a bare ModuleNotFoundError was raised: audit 45)
        raise ImportError('coulisse.ray.classify and embed run on Ray Data, which is not installed: '
                          'pip install "coulisse[ray]"') from None

    if isinstance(num_cpus, bool) or not isinstance(num_cpus, (int, float)) or not num_cpus > 0:
        raise InputError(f"num_cpus={num_cpus!r}; pass a positive number of CPUs per actor (its threads).")
    model = _checked_options(ds, mapper, model, options)
    cpus = ray.cluster_resources().get("CPU", 1)
    if concurrency is None:
        concurrency = int((cpus - 1) // num_cpus)
        if concurrency < 1:
            fits = f"a num_cpus of at most {cpus - 1:g}" if cpus >= 2 else "num_cpus=0.5"
            raise InputError(f"num_cpus={num_cpus:g} leaves none of the cluster's {cpus:g} CPUs to Ray Data's read "
                             f"and write tasks: the job would wait for one forever. Pass {fits}, or "
                             "concurrency= on a cluster that an autoscaler grows.")
    smallest = concurrency if isinstance(concurrency, int) else concurrency[0]
    if isinstance(smallest, int) and not isinstance(smallest, bool) and smallest * num_cpus > cpus - 1:
        log.warning("concurrency=%r x num_cpus=%g ask for %g CPUs, and the cluster has %g of which Ray Data's reads "
                    "need one: unless an autoscaler adds nodes, the job waits forever", concurrency, num_cpus,
                    smallest * num_cpus, cpus)
    return ds.map_batches(mapper, fn_constructor_kwargs={"model": model, **options}, compute=_pool(concurrency),
                          num_cpus=num_cpus, batch_size=batch_size, batch_format=batch_format)


def _pool(concurrency: Any):
    """Ray Data's actor pool for `concurrency` (an int, or (min, max)): its `compute=`, which Ray 2.51+ wants
    instead of `concurrency=`."""
    from ray.data import ActorPoolStrategy

    def positive(value: Any) -> bool:
        return isinstance(value, int) and not isinstance(value, bool) and value >= 1

    if positive(concurrency):
        return ActorPoolStrategy(size=concurrency)
    if isinstance(concurrency, tuple) and len(concurrency) == 2 and all(map(positive, concurrency)) \
            and concurrency[0] <= concurrency[1]:
        return ActorPoolStrategy(min_size=concurrency[0], max_size=concurrency[1])
    raise InputError(f"concurrency={concurrency!r}; pass a positive number of actors, or (min, max).")


def _checked_options(ds, mapper: type, model: str | None, options: dict[str, Any]) -> str:
    """The checks an actor would make, made once on the driver, where an error is one line rather than an
    actor's traceback; returns the model every actor loads (the default one resolved here)."""
    import inspect

    from coulisse.models.quantize import MODES
    from coulisse.tasks.feature_extraction import POOLINGS
    from coulisse.tasks.windows import LONG_TEXT

    try:
        inspect.signature(mapper.__init__).bind(None, model, **options)
    except TypeError as e:
        names = [n for n in inspect.signature(mapper.__init__).parameters if n not in ("self", "model")]
        raise InputError(f"{mapper.__name__}: {e}; its options are {', '.join(names)}.") from None
    if options.get("long_text", "truncate") not in LONG_TEXT:
        raise InputError(f"long_text={options['long_text']!r}; use one of {', '.join(LONG_TEXT)}.")
    if options.get("stride") is not None and options.get("long_text") != "chunk":
        raise InputError("stride only applies with long_text='chunk'.")
    if options.get("quantize", "none") not in MODES:
        raise InputError(f"quantize={options['quantize']!r}; use {' or '.join(map(repr, MODES))}.")
    if options.get("pooling", "auto") not in (*POOLINGS, "splade"):
        raise InputError(f"pooling={options['pooling']!r}; use one of {', '.join((*POOLINGS, 'splade'))}.")
    schema = ds.schema(fetch_if_missing=False)
    columns = list(getattr(schema, "names", None) or [])
    for name in (options.get("column", "text"), options.get("key")):
        if columns and name is not None and name not in columns:
            raise InputError(f"the dataset has no column {name!r}; its columns are {', '.join(columns)}. "
                             f"Pass {'key' if name == options.get('key') else 'column'}=NAME.")
    if model is None:
        if mapper is not Predictor:
            raise InputError("embed() needs model=: an encoder (Hub id or folder).")
        from coulisse.hub_fallback import default_model

        model = default_model("text-classification", options.get("revision"))
    return model

"""Ray Data adapter: classify a `ray.data.Dataset` with a pool of actors, one pipeline each.

    import ray, coulisse.ray

    ds = ray.data.read_parquet("data/")
    labelled = ds.map_batches(coulisse.ray.Predictor, fn_constructor_kwargs={"model": "tblard/tf-allocine"},
                              concurrency=4, num_cpus=2, batch_size=1024, batch_format="pandas")
    labelled.write_parquet("out/")
    # or: coulisse.ray.classify(ds, model="tblard/tf-allocine", concurrency=4, num_cpus=2).write_parquet(...)

Each actor loads the pipeline once, with as many threads as Ray gives it CPUs (`num_cpus`), and resolves
the model on its own node (its HF cache or a path there): no weights travel through the object store.
A batch comes back with its columns and the columns the corpus job adds (`label`, `score`, `score_<LABEL>`
with `all_scores=True`, `error`), computed by the job's own `Predictor`: a null, blank or non-string text
and a row the model fails on are error rows, never a failed task. Resuming after a crash is the CLI's
(`coulisse classify -i ... -o out/ --ray`, interfaces/jobs/distributed.py), not Ray Data's.
"""

from __future__ import annotations

import math
from typing import Any

from coulisse.errors import InputError
from coulisse.interfaces.jobs.formats import Added, Prediction, Row

__all__ = ["Predictor", "classify", "assigned_threads"]


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

    if isinstance(value, float) and math.isnan(value):  # pandas' null
        value = None
    row = Row({}, where)
    row.text, row.error = check_text(value, column, where)
    return row


class Predictor:
    """A callable class for `Dataset.map_batches`: pandas, pyarrow or numpy batches in, the same batch with
    the corpus job's columns added out.

    `key`: a column that names each row in error messages (`id 42: 'text' is null`); without it a row is
    named by its place in its batch, which Ray chooses.
    """

    def __init__(self, model: str | None = None, *, column: str = "text", all_scores: bool = False,
                 long_text: str = "truncate", stride: int | None = None, quantize: str = "none",
                 threads: int | None = None, key: str | None = None):
        from coulisse.interfaces.jobs.predict import Predictor as RowPredictor
        from coulisse.pipelines import pipeline

        if stride is not None and long_text != "chunk":
            raise InputError("stride only applies with long_text='chunk'.")
        self.threads = threads or assigned_threads()
        options = {"quantize": quantize} if quantize != "none" else {}
        pipe = pipeline("text-classification", model=model, threads=self.threads, **options)
        self.rows = RowPredictor(pipe, long_text, stride)
        self.labels = self.rows.labels
        self.column, self.all_scores, self.key = column, all_scores, key

    def predict(self, columns: list[str], texts: list, keys: list | None) -> tuple[Added, list[Prediction]]:
        if self.column not in columns:
            raise InputError(f"the dataset has no column {self.column!r}; its columns are {', '.join(columns)}. "
                             "Pass column=NAME.")
        if self.key is not None and keys is None:
            raise InputError(f"the dataset has no key column {self.key!r}; its columns are {', '.join(columns)}.")
        where = [f"{self.key} {k}" for k in keys] if keys is not None else \
            [f"row {i + 1} of its batch" for i in range(len(texts))]
        rows = [checked_row(t, self.column, w) for t, w in zip(texts, where, strict=True)]
        added = Added.for_columns(columns, self.labels, self.all_scores)
        return added, self.rows(rows)

    def __call__(self, batch):
        if isinstance(batch, dict):  # numpy batches (Ray Data's default format)
            return self._numpy(batch)
        if hasattr(batch, "iloc"):
            return self._pandas(batch)
        return self._arrow(batch)

    def _pandas(self, df):
        import pandas as pd

        columns = [str(c) for c in df.columns]
        keys = df[self.key].tolist() if self.key in df.columns else None
        texts = df[self.column].tolist() if self.column in df.columns else []
        added, preds = self.predict(columns, texts, keys)
        out = df.copy()
        for name, values in _added_columns(added, preds).items():
            kind = "float64" if name != added.label and name != added.error else "string"
            out[name] = pd.Series(values, index=df.index, dtype=kind)
        return out

    def _arrow(self, table):
        import pyarrow as pa

        columns = list(table.column_names)
        keys = table.column(self.key).to_pylist() if self.key in columns else None
        texts = table.column(self.column).to_pylist() if self.column in columns else []
        added, preds = self.predict(columns, texts, keys)
        for name, values in _added_columns(added, preds).items():
            kind = pa.string() if name in (added.label, added.error) else pa.float64()
            table = table.append_column(name, pa.array(values, type=kind))
        return table

    def _numpy(self, batch: dict):
        import numpy as np

        columns = list(batch)
        keys = batch[self.key].tolist() if self.key in batch else None
        texts = batch[self.column].tolist() if self.column in batch else []
        added, preds = self.predict(columns, texts, keys)
        out = dict(batch)
        for name, values in _added_columns(added, preds).items():
            floats = name not in (added.label, added.error)
            out[name] = np.array([math.nan if v is None else v for v in values]) if floats else \
                np.array(values, dtype=object)
        return out


def _added_columns(added: Added, preds: list[Prediction]) -> dict[str, list]:
    records = [p.values(added) for p in preds]
    return {name: [r[name] for r in records] for name in added.names}


def classify(ds, model: str | None = None, *, concurrency: int | tuple[int, int] | None = None,
             num_cpus: float = 1, batch_size: int = 1024, batch_format: str = "pandas", **options):
    """`ds.map_batches(Predictor, ...)` with one pipeline per actor; `options` are Predictor's
    (column, all_scores, long_text, stride, quantize, threads, key). Returns the lazy labelled Dataset.

    Default `concurrency`: as many actors as the cluster's CPUs allow, less one CPU left to Ray Data's read
    and write tasks (actors holding every CPU leave a `read_parquet` waiting for one, forever)."""
    import ray

    if concurrency is None:
        cpus = ray.cluster_resources().get("CPU", 1)
        concurrency = max(1, int((cpus - 1) // num_cpus))
    return ds.map_batches(Predictor, fn_constructor_kwargs={"model": model, **options}, concurrency=concurrency,
                          num_cpus=num_cpus, batch_size=batch_size, batch_format=batch_format)

"""`coulisse.ray`'s batch callables, called as Ray Data calls them (one batch in, the batch with the job's
columns out), without a cluster: the format conversions and the error rows. The cluster runs (a real local
Ray, `map_batches` end to end) are in tests/interfaces/test_jobs_ray.py.

Oracle for `Embedder`: `pipeline("feature-extraction")(texts, pooling="mean", normalize=True)` on the valid
texts. The adapter runs the same stages on other batches (the bad rows left out), so the vectors agree to
the engine's batched-vs-one-call bound, 1e-5 (tests/test_pipelines.py), not bit for bit.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

import coulisse.ray
from coulisse.errors import InputError
from coulisse.pipelines import pipeline

TOLERANCE = 1e-5
TEXTS = ["Un film magnifique, des acteurs remarquables.", None, "  ", 42, "Ennuyeux du début à la fin.",
         "Je déteste tellement ça !", "a\ud800b"]
BAD = {1: "'text' is null", 2: "'text' is only whitespace", 3: "'text' is a number, not a string"}


@pytest.fixture(scope="module")
def encoder(factory):
    return str(factory.checkpoint("bert", base=True))


@pytest.fixture(scope="module")
def embedder(encoder):
    return coulisse.ray.Embedder(encoder, pooling="mean", normalize=True, key="id")


@pytest.fixture(scope="module")
def oracle(encoder):
    """{row: vector} for the rows whose text the model reads."""
    pipe = pipeline("feature-extraction", model=encoder)
    good = [i for i, t in enumerate(TEXTS) if isinstance(t, str) and t.strip() and "\ud800" not in t]
    vectors = pipe([TEXTS[i] for i in good], pooling="mean", normalize=True)
    return {i: np.asarray(v, dtype=np.float32) for i, v in zip(good, vectors, strict=True)}


def frame() -> pd.DataFrame:
    return pd.DataFrame({"id": range(100, 100 + len(TEXTS)), "text": pd.Series(TEXTS, dtype=object)})


def check_errors(errors: list, oracle: dict) -> None:
    """An error exactly on the rows the model cannot read, named by their key."""
    for row, error in enumerate(errors):
        if row in oracle:
            assert error is None or error is pd.NA, (row, error)
        else:
            assert error.startswith(f"id {100 + row}: 'text' is "), error
    for row, why in BAD.items():
        assert errors[row] == f"id {100 + row}: {why}"


def test_embedder_pandas_batch(embedder, oracle):
    out = embedder(frame())
    assert list(out.columns) == ["id", "text", "embedding", "error"]
    assert out["id"].tolist() == list(range(100, 100 + len(TEXTS)))  # the batch's rows, in its order
    check_errors(out["error"].tolist(), oracle)
    # Arrow-backed, as the embed job's Parquet column: fixed-size float32 lists, null for an error row.
    assert out["embedding"].dtype == pd.ArrowDtype(pa.list_(pa.field("element", pa.float32()), embedder.dim))
    for row, vector in enumerate(out["embedding"]):
        if row in oracle:
            assert np.abs(np.asarray(vector, np.float32) - oracle[row]).max() <= TOLERANCE
        else:
            assert vector is None or vector is pd.NA


def test_embedder_arrow_batch_has_the_embed_jobs_schema(embedder, oracle):
    # Arrow strings are UTF-8 and typed: the number and the lone surrogate arrive as nulls there.
    texts = [t if isinstance(t, str) and "\ud800" not in t else None for t in TEXTS]
    table = pa.table({"id": pa.array(range(100, 100 + len(TEXTS))), "text": pa.array(texts, type=pa.string())})
    out = embedder(table)
    assert out.column_names == ["id", "text", "embedding", "error"]
    # What `coulisse embed -o out.parquet` writes: fixed-size lists of float32, one per row.
    assert out.schema.field("embedding").type == pa.list_(pa.field("element", pa.float32()), embedder.dim)
    vectors = out.column("embedding").to_pylist()
    errors = out.column("error").to_pylist()
    for row, vector in enumerate(vectors):
        if row in oracle:
            assert errors[row] is None
            assert np.abs(np.asarray(vector, np.float32) - oracle[row]).max() <= TOLERANCE
        else:
            assert vector is None and errors[row].startswith(f"id {100 + row}: 'text' is ")


def test_embedder_numpy_batch_gives_a_float32_matrix_with_nan_rows(embedder, oracle):
    out = embedder({"id": np.arange(100, 100 + len(TEXTS)), "text": np.array(TEXTS, dtype=object)})
    matrix = out["embedding"]
    assert matrix.dtype == np.float32 and matrix.shape == (len(TEXTS), embedder.dim)
    check_errors(list(out["error"]), oracle)
    for row in range(len(TEXTS)):
        if row in oracle:
            assert np.abs(matrix[row] - oracle[row]).max() <= TOLERANCE
        else:
            assert np.isnan(matrix[row]).all()


def test_embedder_renames_columns_the_input_already_has(embedder, oracle):
    df = frame().assign(embedding="mine", error="theirs")
    out = embedder(df)
    assert list(out.columns) == ["id", "text", "embedding", "error", "coulisse_embedding", "coulisse_error"]
    assert out["embedding"].tolist() == ["mine"] * len(TEXTS)  # the input's columns are left alone
    check_errors(out["coulisse_error"].tolist(), oracle)


def test_a_missing_column_is_refused_with_the_columns_there(embedder):
    with pytest.raises(InputError, match=r"no column 'text'; its columns are id, review\. Pass column=NAME"):
        embedder(pd.DataFrame({"id": [1], "review": ["bien"]}))
    with pytest.raises(InputError, match=r"no key column 'id'; its columns are text"):
        embedder(pd.DataFrame({"text": ["bien"]}))


def test_actor_pipelines_are_built_as_the_corpus_jobs_build_theirs(monkeypatch, encoder):
    """Full batches: the fp32 kernels measured for them (`throughput=True`), as `coulisse classify -i`;
    `quantize`, `fast` and `revision` reach the pipeline."""
    seen = []
    real = coulisse.pipelines.pipeline

    def spy(task, **kwargs):
        seen.append((task, kwargs))
        return real(task, **kwargs)

    monkeypatch.setattr(coulisse.pipelines, "pipeline", spy)
    coulisse.ray.Embedder(encoder, fast=True, threads=1)
    coulisse.ray.Embedder(encoder, quantize="int8", threads=1)
    coulisse.ray.Embedder(encoder, threads=1, revision="v1")  # a folder has no revision: read as it is
    assert seen == [("feature-extraction", {"model": encoder, "threads": 1, "throughput": True, "fast": True}),
                    ("feature-extraction", {"model": encoder, "threads": 1, "throughput": True, "quantize": "int8"}),
                    ("feature-extraction", {"model": encoder, "threads": 1, "throughput": True, "revision": "v1"})]


def test_embedder_refuses_an_unknown_pooling(encoder):
    with pytest.raises(InputError, match="pooling 'max'"):
        coulisse.ray.Embedder(encoder, pooling="max")


def test_pandas_nulls_of_a_string_column_are_null_rows(embedder, factory):
    """Ray Data gives a Parquet string column with nulls to pandas batches as dtype "string", nulls as pd.NA:
    those rows are null, as None and NaN are in an object column."""
    df = pd.DataFrame({"id": [1, 2, 3, 4], "text": pd.Series(["bien", pd.NA, None, "mal"], dtype="string")})
    errors = embedder(df)["error"].tolist()
    assert errors[1] == "id 2: 'text' is null" and errors[2] == "id 3: 'text' is null"
    assert errors[0] is pd.NA and errors[3] is pd.NA
    nan = pd.DataFrame({"id": [1, 2], "text": ["bien", float("nan")]})
    assert embedder(nan)["error"].tolist()[1] == "id 2: 'text' is null"
    labelled = coulisse.ray.Predictor(str(factory.checkpoint("bert")), key="id", threads=1)(df)
    assert labelled["error"].tolist()[1:3] == ["id 2: 'text' is null", "id 3: 'text' is null"]
    assert labelled["label"].isna().tolist() == [False, True, True, False]


def test_without_ray_the_install_is_named(monkeypatch):
    import sys

    import coulisse.ray

    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` fails as where it is not installed
    with pytest.raises(ImportError, match=r'pip install "coulisse\[ray\]"'):
        coulisse.ray.classify(["Un film."], "coulisse/mini-allocine")

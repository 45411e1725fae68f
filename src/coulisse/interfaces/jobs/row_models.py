"""Which row model a `--ray` job's actors run, and the columns it adds: the one place the driver
(distributed.py) and the actors (cluster.py) read the job's task from, below both.

classify: `predict.Predictor` (label, score, ..., error); embed: `embed.Embedder` (embedding, error), or for a
SPLADE model `embed.SparseEmbedder` (sparse_embedding, error).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from coulisse.interfaces.jobs.formats import Added

if TYPE_CHECKING:
    from coulisse.interfaces.jobs.distributed import RayOptions


def engine_options(quantize: str = "none", fast: bool = False, fast_mode: str | None = None,
                   revision: str | None = None) -> dict[str, Any]:
    """The pipeline options of an actor: the precision asked, and the fp32 kernels measured for full batches
    (`throughput=True`, as every corpus job builds its pipeline: coulisse.engine.gemm_choice). `fast`: each actor
    resolves its own node's fast mode (`coulisse.ray`); `fast_mode`: the one the driver resolved (`--ray --fast`),
    so that every actor runs the same precision, the driver's single-machine `--fast`. `revision`: of a Hub id,
    when given."""
    options: dict[str, Any] = {"throughput": True}
    if revision is not None:
        options["revision"] = revision
    if quantize != "none":
        options["quantize"] = quantize
    if fast_mode is not None:
        from coulisse.engine.prepare import fast_precision

        dtype, quantize = fast_precision(fast_mode)
        options.update({k: v for k, v in (("dtype", dtype), ("quantize", quantize)) if v is not None})
    elif fast:
        options["fast"] = True
    return options


def precision(pipe) -> str:
    """What an actor's weights run in, as a single-machine record says it (`state.precision`)."""
    from coulisse.interfaces.jobs.state import precision as said

    return said({"quantization": getattr(getattr(pipe, "preparation", None), "quantize", None),
                 "dtype": str(pipe.dtype).removeprefix("torch.")})


def is_sparse(model: str | None, pooling: str, revision: str | None = None) -> bool:
    """Whether an embedding job runs SPLADE: `--pooling splade`, or `auto` on a sentence-transformers
    SparseEncoder folder (modules.json naming SpladePooling)."""
    if pooling == "splade":
        return True
    if pooling != "auto" or model is None:
        return False
    from coulisse.interfaces.server.detect import served_task

    return served_task(None, model, revision) == "sparse-embedding"


def row_model(options: RayOptions, threads: int):
    """The actor's side: the job's pipeline, loaded once, and what turns a shard's rows into results."""
    from coulisse.pipelines import pipeline

    engine = engine_options(options.quantize, fast_mode=options.fast_mode if options.fast else None,
                            revision=options.revision)
    if options.task == "embed" and is_sparse(options.model, options.pooling, options.revision):
        from coulisse.interfaces.jobs.embed import SparseEmbedder

        pipe = pipeline("sparse-embedding", model=options.model, threads=threads, **engine)
        return pipe, SparseEmbedder(pipe, options.pooling, options.normalize)
    if options.task == "embed":
        from coulisse.interfaces.jobs.embed import Embedder

        pipe = pipeline("feature-extraction", model=options.model, threads=threads, **engine)
        return pipe, Embedder(pipe, options.pooling, options.normalize)
    from coulisse.interfaces.jobs.predict import Predictor

    pipe = pipeline("text-classification", model=options.model, threads=threads, **engine)
    return pipe, Predictor(pipe, options.long_text, options.stride)


def describe_model(model) -> dict:
    """What the driver needs of an actor's row model to name the columns, and what it records."""
    return {"labels": getattr(model, "labels", []), "dim": getattr(model, "dim", 0),
            "sparse": getattr(model, "sparse", False),
            "engine": model.fingerprint() if hasattr(model, "fingerprint") else {}}


def added_columns(options: RayOptions, columns: list[str], info: dict):
    """The columns the job appends to a file's columns, as the single-machine job names them."""
    if options.task == "embed":
        from coulisse.interfaces.jobs.embed import EmbedColumns, SparseColumns

        return (SparseColumns if info.get("sparse") else EmbedColumns).for_columns(columns, info["dim"])
    return Added.for_columns(columns, info["labels"], options.all_scores)

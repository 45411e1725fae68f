"""`POST /` and `POST /invocations`: the served task, as TEI and the Hugging Face Inference API answer it.

TEI's router sends `POST /` to the model's own route (/predict, /rerank or /embed); the Inference API
(what `huggingface_hub.InferenceClient(base_url)` speaks) posts `{"inputs": ..., "parameters": {...}}`
there for every task. The served task decides which bodies `/` takes:

    text-classification   TEI's /predict body, or {"inputs": text, "parameters": {top_k, function_to_apply}}
    (one-output reranker) TEI's /rerank body, or the Inference API's text-classification body
    feature-extraction    TEI's /embed body (InferenceClient sends it so), or /similarity's
    sparse-embedding      TEI's /embed_sparse body (a SPLADE model)
    token-classification, question-answering, fill-mask, zero-shot-classification: the Inference API's body

Every answer comes from the pipeline's stages (`Service.run_task`): options, preprocess, the batcher's
forward, postprocess; only the outer shape is the Inference API's.
"""

from collections.abc import Awaitable, Callable
from functools import partial
from typing import Union

from fastapi import FastAPI, Request
from fastapi.responses import Response

from coulisse.interfaces.server.compat_schemas import (
    FillMaskTask,
    QuestionAnsweringTask,
    RerankRequest,
    SimilarityRequest,
    TextClassificationTask,
    TokenClassificationTask,
    ZeroShotTask,
)
from coulisse.interfaces.server.errors import openapi_responses
from coulisse.interfaces.server.schemas import EmbedRequest, EmbedSparseRequest, PredictRequest
from coulisse.interfaces.server.service import Service, Timings, check_not_empty
from coulisse.interfaces.server.tei_routes import client_gone, labels_of, plain

TAG = "Inference API"
# No `from __future__ import annotations`: FastAPI reads the body annotations built below.

# The Inference API's request body per task (the pipeline's own options in `parameters`).
TASK_BODIES = {
    "text-classification": TextClassificationTask,
    "token-classification": TokenClassificationTask,
    "question-answering": QuestionAnsweringTask,
    "fill-mask": FillMaskTask,
    "zero-shot-classification": ZeroShotTask,
}


def pipeline_call(task: str, body) -> tuple[object, dict]:
    """An Inference API body -> the pipeline's inputs and call options."""
    parameters = body.parameters.model_dump(exclude_none=True) if body.parameters is not None else {}
    inputs = body.inputs.model_dump() if task == "question-answering" else body.inputs
    if task == "text-classification":
        parameters.setdefault("top_k", None)  # every label, best first, as TEI's /predict answers
    return inputs, parameters


def answer_shape(task: str, result):
    """The pipeline's result -> the Inference API's: a list per input for text classification, labels
    with scores for zero-shot; the other tasks already answer in its shape (transformers')."""
    result = plain(result)
    if task == "text-classification":
        return [result]
    if task == "zero-shot-classification":
        return labels_of(result)
    return result


def add_root_routes(app: FastAPI, service: Service, gate, protected: list, handlers: dict) -> None:
    """`POST /` and `POST /invocations` on `app`: the bodies the served task takes, each sent to its handler."""
    task = service.pipe.task
    errors = openapi_responses("validation", "json_syntax", "payload_size",
                               *(("unauthorized",) if service.settings.api_key else ()),
                               "empty", "batch_size", "input_length", "overloaded", "backend", "unhealthy")
    body_type, dispatch = _root_dispatch(service, handlers, _task_runner(service, gate))

    async def root(body: body_type, request: Request) -> Response:  # type: ignore[valid-type]
        return await dispatch(body, request)

    doc = (f"The served task ({task}): TEI's body for its route, or the Hugging Face Inference API's "
           '{"inputs", "parameters"}, as `huggingface_hub.InferenceClient(base_url)` sends it.')
    for path in ("/", "/invocations"):
        app.add_api_route(path, root, methods=["POST"], tags=[TAG], dependencies=protected, response_model=None,
                          responses={200: {"description": f"The {task} result"}, **errors}, description=doc,
                          summary=f"{task} (Inference API / TEI)", name=f"root{path.replace('/', '_')}")


def _task_runner(service: Service, gate) -> Callable[..., Awaitable[Response]]:
    """The handler of an Inference API body: the served task's stages (`Service.run_task`) behind the gate."""
    task = service.pipe.task

    async def run_task(body, request: Request) -> Response:
        inputs, parameters = pipeline_call(task, body)
        # TEI's 400 `Empty` for an empty text, on every task (the pipeline would run its special tokens alone)
        named = inputs.items() if isinstance(inputs, dict) else [("", inputs)]
        for name, text in named:
            check_not_empty([(text, None)], f"inputs.{name}" if name else "inputs")
        # model inputs: one text (a question with its context), or one (text, hypothesis) pair per label; windows
        # are counted after preprocess (Service.run_task), each then taking its permit
        n = 1
        if task == "zero-shot-classification":
            n = len(parameters["candidate_labels"])
            gate.check_batch(n, "candidate labels (one input each)")

        async def work(t: Timings) -> list:
            result = await service.run_task(inputs, parameters, partial(client_gone, request), t,
                                            partial(gate.admitted, n))
            return [answer_shape(task, result)]

        return await gate.run(request, "single", work, True, n)

    return run_task


def _root_dispatch(service: Service, handlers: dict, run_task) -> tuple[object, Callable[..., Awaitable[Response]]]:
    """The bodies `/` takes for the served model (a type FastAPI validates against), and the handler each goes to:
    TEI's route for the model, or `run_task` for the Inference API's body."""
    if service.sparse:  # TEI's route for a SPLADE model
        body_type = EmbedSparseRequest

        async def dispatch(body, request: Request) -> Response:
            return await handlers["embed_sparse"](body, request)
    elif service.embedding:
        body_type = Union[EmbedRequest, SimilarityRequest]  # noqa: UP007 (a runtime union FastAPI reads)

        async def dispatch(body, request: Request) -> Response:
            if isinstance(body, SimilarityRequest):
                return await handlers["similarity"](body, request)
            return await handlers["embed"](body, request)
    elif service.reranker:
        body_type = Union[RerankRequest, TextClassificationTask]  # noqa: UP007

        async def dispatch(body, request: Request) -> Response:
            if isinstance(body, RerankRequest):
                return await handlers["rerank"](body, request)
            return await run_task(body, request)
    elif service.classifier:
        body_type = Union[PredictRequest, TextClassificationTask]  # noqa: UP007

        async def dispatch(body, request: Request) -> Response:
            if isinstance(body, PredictRequest):
                return await handlers["predict"](body, request)
            return await run_task(body, request)
    else:
        body_type = TASK_BODIES[service.pipe.task]
        dispatch = run_task
    return body_type, dispatch

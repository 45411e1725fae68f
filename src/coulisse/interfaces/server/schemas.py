"""Request and response bodies in text-embeddings-inference's shapes (router/src/http/types.rs).

Types are strict (`"true"` is not a boolean, `1` is not a text), as TEI's serde parsing is.
One difference, on purpose: a flat list of strings is a batch of single texts, as in the
transformers pipeline; a text pair is written `[text, text_pair]` inside the batch list.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, RootModel, field_validator
from pydantic_core import PydanticCustomError

# [text] or [text, text_pair], as in TEI's batch form.
Sequence = Annotated[list[str], Field(min_length=1, max_length=2)]
INPUTS_HELP = ("a text, a list of texts, or a list of [text] / [text, text_pair] lists, "
               'e.g. "Super film !" or ["Super film !", "Quel ennui..."] or [["premise", "hypothesis"]]')


def _inputs_error(value: Any) -> PydanticCustomError:
    got = f"{type(value).__name__} {str(value)[:40]!r}"
    return PydanticCustomError("inputs_type", "must be {expected}; got {got}",
                               {"expected": INPUTS_HELP, "got": got})


class PredictRequest(BaseModel):
    model_config = ConfigDict(strict=True, json_schema_extra={
        "examples": [{"inputs": "J'ai adoré ce film.", "raw_scores": False, "truncate": True}]})

    inputs: str | list[str | Sequence] = Field(description=INPUTS_HELP)
    truncate: bool | None = Field(None, description="Cut inputs longer than the model takes; "
                                                    "null: the server's --auto-truncate.")
    truncation_direction: Literal["Right", "right"] = Field(
        "Right", description="Only right truncation (keep the start of the text) is supported.")
    raw_scores: bool = Field(False, description="Return logits instead of probabilities.")

    @field_validator("inputs", mode="wrap")
    @classmethod
    def _one_clear_error(cls, value: Any, handler):
        # The union would report one error per branch; one message that shows the forms reads better.
        try:
            return handler(value)
        except ValueError:
            raise _inputs_error(value) from None


class EmbedRequest(BaseModel):
    model_config = ConfigDict(strict=True,
                              json_schema_extra={"examples": [{"inputs": "J'ai adoré ce film."}]})

    inputs: str | list[str] = Field(description="a text or a list of texts")
    truncate: bool | None = Field(None, description="null: the server's --auto-truncate.")
    truncation_direction: Literal["Right", "right"] = Field("Right", description="Only right truncation.")
    normalize: bool = Field(True, description="L2-normalize each embedding.")

    @field_validator("inputs", mode="wrap")
    @classmethod
    def _one_clear_error(cls, value: Any, handler):
        try:
            return handler(value)
        except ValueError:
            raise PydanticCustomError("inputs_type", "must be a text or a list of texts; got {got}",
                                      {"got": type(value).__name__}) from None


class Prediction(BaseModel):
    score: float = Field(examples=[0.98])
    label: str = Field(examples=["POSITIVE"])


class PredictResponse(RootModel[list[Prediction] | list[list[Prediction]]]):
    """One text: its labels sorted by score. A list: one such list per input, in input order."""


class EmbedResponse(RootModel[list[list[float]]]):
    """One vector per input, in input order (a single text gives a list of one)."""


class ErrorResponse(BaseModel):
    error: str
    error_type: str = Field(examples=["validation"])


class ClassifierModel(BaseModel):
    id2label: dict[str, str]
    label2id: dict[str, int]


class EmbeddingModel(BaseModel):
    pooling: str


class ModelType(BaseModel):
    """TEI's tagged form: exactly one of the keys is present."""

    classifier: ClassifierModel | None = None
    embedding: EmbeddingModel | None = None


class Info(BaseModel):
    model_id: str
    model_sha: str | None = None
    model_dtype: str
    model_type: ModelType
    task: str
    labels: list[str]
    max_concurrent_requests: int
    max_input_length: int
    max_batch_tokens: int
    max_batch_requests: int | None = None
    max_client_batch_size: int
    auto_truncate: bool
    tokenization_workers: int
    version: str
    sha: str | None = None
    docker_label: str | None = None

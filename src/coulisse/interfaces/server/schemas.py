"""Request and response bodies in text-embeddings-inference's shapes (router/src/http/types.rs).

Types are strict (`"true"` is not a boolean, `1` is not a text), as TEI's serde parsing is. /predict's
inputs read as TEI reads them: `"text"` and `["text"]` are one text, `["text", "text_pair"]` is one pair, a
batch is a list of lists (`[["a"], ["b", "b2"]]`). Unknown fields are refused (422 naming them), where TEI
would drop them silently.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, RootModel, WithJsonSchema, field_validator
from pydantic_core import PydanticCustomError

# TEI's `truncation_direction`: which end of a long input is cut (Right keeps the start, Left the end).
Direction = Literal["Right", "right", "Left", "left"]
DIRECTION_HELP = ("Right: keep the start of a long input; Left: keep its end (special tokens stay), "
                  "transformers' truncation_side.")

# A text: the schema says it may not be empty, the route answers TEI's 400 `empty` for one (not pydantic's 422).
Text = Annotated[str, WithJsonSchema({"type": "string", "minLength": 1})]
# [text] or [text, text_pair], as in TEI's batch form.
Sequence = Annotated[list[Text], Field(min_length=1, max_length=2)]
INPUTS_HELP = ("a text, a [text, text_pair] pair, or a batch of [text] / [text, text_pair] lists, "
               'e.g. "Super film !" or ["premise", "hypothesis"] or [["Super film !"], ["Quel ennui..."]]')


def _integral(value: Any) -> Any:
    # JSON Schema's "integer" includes 2.0; strict pydantic would refuse it. 2.5 and "2" stay refused.
    return int(value) if isinstance(value, float) and value.is_integer() else value


# An integer as JSON Schema defines one.
Int = Annotated[int, BeforeValidator(_integral)]


def integer(ge: int) -> Any:
    """An integer ≥ `ge`, the bound written into the JSON schema as `minimum` (a bound put on `Int` after its
    validator reaches pydantic's schema as a bare `ge` key, which no JSON Schema client reads)."""
    return Annotated[int, Field(ge=ge), BeforeValidator(_integral)]


# A token id list: TEI's `InputType::Ids`, the model's own ids (special tokens included), as given. An empty one
# reaches the route, which answers TEI's 400 `Empty` naming it (TEI parses `[[]]` as a batch of one empty id list,
# then refuses it before tokenizing); the schema still says minItems 1.
Ids = Annotated[list[integer(ge=0)], WithJsonSchema({"type": "array", "items": {"type": "integer", "minimum": 0},
                                                      "minItems": 1})]


def _got(value: Any) -> str:
    return f"{type(value).__name__} {str(value)[:40]!r}"


def forms(expected: str):
    """A field validator that answers a union's failure as one error listing the forms it takes; pydantic's
    own would give one error per branch, each located by an internal type name."""

    def one_error(cls, value: Any, handler):
        try:
            return handler(value)
        except ValueError:
            raise PydanticCustomError("inputs_type", "must be {expected}; got {got}",
                                      {"expected": expected, "got": _got(value)}) from None

    return one_error


TEXTS_OR_IDS = "a text, a list of token ids (integers >= 0), or a list of those"


def side(direction: str) -> str:
    """TEI's direction -> the tokenizer's `truncation_side`."""
    return direction.lower()


class PredictRequest(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", json_schema_extra={
        "examples": [{"inputs": "J'ai adoré ce film.", "raw_scores": False, "truncate": True}]})

    # An empty batch is a malformed body (422), as TEI's PredictInput refuses `[]` while parsing it.
    inputs: Text | Sequence | Annotated[list[Sequence], Field(min_length=1)] = Field(description=INPUTS_HELP)
    truncate: bool | None = Field(None, description="Cut inputs longer than the model takes; "
                                                    "null: the server's --auto-truncate.")
    truncation_direction: Direction = Field("Right", description=DIRECTION_HELP)
    raw_scores: bool = Field(False, description="Return logits instead of probabilities.")

    _inputs = field_validator("inputs", mode="wrap")(forms(INPUTS_HELP))


class EmbedRequest(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid",
                              json_schema_extra={"examples": [{"inputs": "J'ai adoré ce film."}]})

    inputs: Text | Ids | list[Text | Ids] = Field(description=TEXTS_OR_IDS)
    truncate: bool | None = Field(None, description="null: the server's --auto-truncate.")
    truncation_direction: Direction = Field("Right", description=DIRECTION_HELP)
    normalize: bool = Field(True, description="L2-normalize each embedding (after `dimensions`).")
    prompt_name: str | None = Field(None, description="A key of config_sentence_transformers.json's `prompts`; "
                                                      "null: the server's --default-prompt(-name), if any.")
    dimensions: integer(ge=1) | None = Field(None, description="Keep the first N dimensions (Matryoshka), then "
                                                                "normalize if `normalize`.")
    # huggingface_hub's InferenceClient.feature_extraction sends it (its own default: null); TEI drops it and
    # answers floats, which is what that client parses. Base64 is /v1/embeddings'.
    encoding_format: Literal["float", "base64"] | None = Field(
        None, description="Accepted for huggingface_hub's InferenceClient and ignored, as TEI does: /embed "
                          "always answers floats (base64: /v1/embeddings).")

    _inputs = field_validator("inputs", mode="wrap")(forms(TEXTS_OR_IDS))


class EmbedAllRequest(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid",
                              json_schema_extra={"examples": [{"inputs": "J'ai adoré ce film."}]})

    inputs: Text | Ids | list[Text | Ids] = Field(description=TEXTS_OR_IDS)
    truncate: bool | None = Field(None, description="null: the server's --auto-truncate.")
    truncation_direction: Direction = Field("Right", description=DIRECTION_HELP)
    prompt_name: str | None = Field(None, description="As /embed's.")

    _inputs = field_validator("inputs", mode="wrap")(forms(TEXTS_OR_IDS))


class EmbedSparseRequest(EmbedAllRequest):
    """/embed_sparse's body (TEI's EmbedSparseRequest): a SPLADE model's inputs, no normalize."""


class SparseValue(BaseModel):
    index: int = Field(description="The vocabulary entry (a token id).")
    value: float = Field(description="Its weight, above zero.")


class Prediction(BaseModel):
    score: float = Field(examples=[0.98])
    label: str = Field(examples=["POSITIVE"])


class PredictResponse(RootModel[list[Prediction] | list[list[Prediction]]]):
    """One text: its labels sorted by score. A list: one such list per input, in input order."""


class EmbedResponse(RootModel[list[list[float]]]):
    """One vector per input, in input order (a single text gives a list of one)."""


class ErrorResponse(BaseModel):
    error: str
    error_type: str = Field(examples=["Validation"])


class ClassifierModel(BaseModel):
    id2label: dict[str, str]
    label2id: dict[str, int]


class EmbeddingModel(BaseModel):
    pooling: str


class ModelType(BaseModel):
    """TEI's tagged form: exactly one of the keys is present."""

    classifier: ClassifierModel | None = None
    embedding: EmbeddingModel | None = None
    reranker: ClassifierModel | None = None


class Info(BaseModel):
    model_id: str
    model_sha: str | None = None
    model_dtype: str
    served_model_name: str
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

"""Bodies of the routes beyond /predict and /embed, in the shapes their clients send: TEI's /rerank, /tokenize,
/decode and /similarity (router/src/http/types.rs), OpenAI's /v1/embeddings, and the Hugging Face Inference
API's `{"inputs": ..., "parameters": {...}}` that `huggingface_hub.InferenceClient` posts to `/`.

Strict types and no unknown field (422 naming it), as in schemas.py.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema, field_validator

from coulisse.interfaces.server.schemas import DIRECTION_HELP, TEXTS_OR_IDS, Direction, Ids, Text, forms, integer

STRICT = ConfigDict(strict=True, extra="forbid")


class RerankRequest(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", json_schema_extra={
        "examples": [{"query": "Un film drôle ?", "texts": ["Une comédie hilarante.", "Un drame lent."]}]})

    query: Text
    texts: list[Text]
    truncate: bool | None = Field(None, description="null: the server's --auto-truncate.")
    truncation_direction: Direction = Field("Right", description=DIRECTION_HELP)
    raw_scores: bool = Field(False, description="The logit instead of its sigmoid.")
    return_text: bool = Field(False, description="Echo each text in its rank.")


class Rank(BaseModel):
    index: int
    text: str | None = None
    score: float


class TokenizeRequest(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid",
                              json_schema_extra={"examples": [{"inputs": "J'ai adoré ce film."}]})

    inputs: Text | list[Text]
    add_special_tokens: bool = True
    prompt_name: str | None = Field(None, description="A key of config_sentence_transformers.json's `prompts`.")

    _inputs = field_validator("inputs", mode="wrap")(forms("a text or a list of texts"))


class SimpleToken(BaseModel):
    id: int
    text: str
    special: bool
    start: int | None = Field(None, description="Byte offset in the (prompted) text; null for special tokens.")
    stop: int | None = None


# /decode's id list: an empty one reaches the route, which answers TEI's 400 `Empty` naming it (the schema
# still says minItems 1), not pydantic's 422.
DecodeIds = Annotated[list[integer(ge=0)],
                      WithJsonSchema({"type": "array", "items": {"type": "integer", "minimum": 0}, "minItems": 1})]


class DecodeRequest(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", json_schema_extra={"examples": [{"ids": [5, 121, 6]}]})

    ids: DecodeIds | list[DecodeIds]
    skip_special_tokens: bool = True

    _ids = field_validator("ids", mode="wrap")(forms("a list of token ids (integers >= 0), or a list of those"))


class SimilarityInput(BaseModel):
    model_config = STRICT

    source_sentence: Text
    sentences: list[Text]


class SimilarityParameters(BaseModel):
    model_config = STRICT

    truncate: bool | None = None
    truncation_direction: Direction = Field("Right", description=DIRECTION_HELP)
    prompt_name: str | None = None


class SimilarityRequest(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", json_schema_extra={"examples": [
        {"inputs": {"source_sentence": "Le chat dort.", "sentences": ["Un chat fait la sieste."]}}]})

    inputs: SimilarityInput
    parameters: SimilarityParameters | None = None


# -- OpenAI ------------------------------------------------------------------------------------------------


class OpenAIEmbeddingRequest(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", json_schema_extra={
        "examples": [{"input": ["Le chat dort."], "model": "all-MiniLM-L6-v2"}]})

    input: Text | Ids | list[Text | Ids] = Field(description=TEXTS_OR_IDS)
    model: str | None = Field(None, description="The served model's name (see /v1/models); others get 404.")
    encoding_format: Literal["float", "base64"] = Field(
        "float", description="base64: each vector's little-endian float32 bytes, base64-encoded.")
    dimensions: integer(ge=1) | None = Field(None, description="Keep the first N dimensions, then renormalize.")
    user: str | None = Field(None, description="Accepted; not stored.")
    truncation_direction: Direction = Field("Right", description="A coulisse extension (the SDK's `extra_body`): "
                                            + DIRECTION_HELP)

    _input = field_validator("input", mode="wrap")(forms(TEXTS_OR_IDS))


class OpenAIEmbedding(BaseModel):
    object: Literal["embedding"] = "embedding"
    embedding: list[float] | str
    index: int


class OpenAIUsage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class OpenAIEmbeddingResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[OpenAIEmbedding]
    model: str
    usage: OpenAIUsage


class OpenAIModel(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str


class OpenAIModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[OpenAIModel]


class OpenAIError(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: int | None = None


class OpenAIErrorResponse(BaseModel):
    error: OpenAIError


# -- the Hugging Face Inference API (`InferenceClient(base_url)` posts these to `/`) --------------------------


class TextClassificationParameters(BaseModel):
    model_config = STRICT

    function_to_apply: Literal["sigmoid", "softmax", "none"] | None = None
    top_k: integer(ge=1) | None = None


class TokenClassificationParameters(BaseModel):
    model_config = STRICT

    aggregation_strategy: Literal["none", "simple", "first", "average", "max"] | None = None
    ignore_labels: list[str] | None = None
    stride: integer(ge=0) | None = None


class QuestionAnsweringInputs(BaseModel):
    model_config = STRICT

    question: Text
    context: Text


class QuestionAnsweringParameters(BaseModel):
    model_config = STRICT

    align_to_words: bool | None = None
    doc_stride: integer(ge=1) | None = None
    handle_impossible_answer: bool | None = None
    max_answer_len: integer(ge=1) | None = None
    max_question_len: integer(ge=1) | None = None
    max_seq_len: integer(ge=1) | None = None
    top_k: integer(ge=1) | None = None


class FillMaskParameters(BaseModel):
    model_config = STRICT

    targets: list[str] | None = None
    top_k: integer(ge=1) | None = None


class ZeroShotParameters(BaseModel):
    model_config = STRICT

    candidate_labels: Annotated[list[str], Field(min_length=1)]
    hypothesis_template: str | None = None
    multi_label: bool | None = None


def _parameters(model: type[BaseModel], required: bool = False) -> Any:
    return Field(... if required else None, description=f"{model.__name__[:-len('Parameters')]} parameters, as "
                 "the Inference API takes them")


class TextClassificationTask(BaseModel):
    model_config = STRICT

    inputs: Text
    parameters: TextClassificationParameters | None = _parameters(TextClassificationParameters)


class TokenClassificationTask(BaseModel):
    model_config = STRICT

    inputs: Text
    parameters: TokenClassificationParameters | None = _parameters(TokenClassificationParameters)


class QuestionAnsweringTask(BaseModel):
    model_config = STRICT

    inputs: QuestionAnsweringInputs
    parameters: QuestionAnsweringParameters | None = _parameters(QuestionAnsweringParameters)


class FillMaskTask(BaseModel):
    model_config = STRICT

    inputs: Text
    parameters: FillMaskParameters | None = _parameters(FillMaskParameters)


class ZeroShotTask(BaseModel):
    model_config = STRICT

    inputs: Text
    parameters: ZeroShotParameters = _parameters(ZeroShotParameters, required=True)


class Label(BaseModel):
    label: str
    score: float

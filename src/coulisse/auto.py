"""transformers' Auto classes over coulisse's stages: the course's cells run with their import line changed.

    from coulisse import AutoTokenizer, AutoModelForSequenceClassification   # was: from transformers import ...

    checkpoint = "tblard/tf-allocine"
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    model = AutoModelForSequenceClassification.from_pretrained(checkpoint, from_tf=True)
    inputs = tokenizer(raw_inputs, padding=True, truncation=True, return_tensors="pt")
    outputs = model(**inputs)                     # outputs.logits, model.config.id2label

Each class loads one stage as `pipeline()` loads it, and nothing else: `AutoTokenizer` the tokenizer with the
model's length limit (no weights read), `AutoModel*` the encoder with its task's head, prepared for this CPU
(exact fp32 unless `dtype`, `quantize` or `fast` say otherwise; no tokenizer read). The objects are the
pipeline's own (`pipe.tokenizer`, `pipe.model`): docs/dropin.md lists what they answer.

`from_pretrained` takes transformers' keywords with their meaning where coulisse can give it, accepts the ones
that would change nothing here, and refuses the others in one line saying what to do, before any file is read.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, ClassVar

from coulisse.checkpoint import check_tokenizer, length_ceiling, load_tokenizer, model_files
from coulisse.config import EncoderConfig
from coulisse.defaults import DEFAULT_MODEL, offline_hint
from coulisse.engine.device import resolve_device_map
from coulisse.engine.prepare import check_request, prepare_model, resolve_fast
from coulisse.errors import HubUnreachableError, InputError, MissingHeadError, UnsupportedModelError
from coulisse.hub import resolve_model
from coulisse.hub_download import hub_token
from coulisse.models import EncoderModel, load_model
from coulisse.pipelines import check_local_files, check_token, dtype_argument, model_source, note_use_fast
from coulisse.sentence_modules import transformer_folder
from coulisse.tasks.base import one_of, positive_int, unknown_options
from coulisse.tokenizer import Tokenizer

__all__ = ["AutoConfig", "AutoModel", "AutoModelForMaskedLM", "AutoModelForMultipleChoice",
           "AutoModelForQuestionAnswering", "AutoModelForSequenceClassification", "AutoModelForTokenClassification",
           "AutoTokenizer"]

log = logging.getLogger(__name__)

# transformers' from_pretrained keywords that change nothing here, and why (accepted whatever their value).
NO_EFFECT = {
    "trust_remote_code": "coulisse never runs a checkpoint's code",
    "code_revision": "coulisse never runs a checkpoint's code",
    "force_download": "a download is checked against the Hub's commit; delete the cache folder to fetch it again",
    "resume_download": "huggingface_hub always resumes",
    "proxies": "huggingface_hub reads HTTPS_PROXY",
}
MODEL_NO_EFFECT = {
    **NO_EFFECT,
    "from_tf": "the weights the folder holds are read, TensorFlow's tf_model.h5 included, without TensorFlow",
    "from_flax": "the weights the folder holds are read (a Flax-only folder is refused, saying how to convert it)",
    "use_safetensors": "safetensors is read when the folder has it",
    "low_cpu_mem_usage": "weights are always memory-mapped",
    "attn_implementation": "coulisse's packed attention is the only one",
}
TOKENIZER_NO_EFFECT = {**NO_EFFECT, "use_fast": "coulisse's tokenizers are the fast (Rust) ones"}
# Keywords refused with what to do instead.
REFUSED = {
    "cache_dir": "coulisse reads huggingface_hub's cache: set HF_HUB_CACHE (or HF_HOME) to that folder instead",
    "subfolder": "pass the subfolder's own path (download the repository first: hf download REPO)",
    "config": "coulisse reads config.json from the model's folder: save the model with that config, and pass "
              "the folder",
    "num_labels": "coulisse reads the labels config.json names; a head of another size would be drawn at random: "
                  "fine-tune with transformers and load the saved folder",
    "id2label": "coulisse reads the labels from config.json: edit its id2label and label2id",
    "label2id": "coulisse reads the labels from config.json: edit its id2label and label2id",
    "output_attentions": "pass it to the call: model(**inputs, output_attentions=True)",
    "output_hidden_states": "pass it to the call: model(**inputs, output_hidden_states=True)",
    "output_loading_info": "a checkpoint with a missing or unexpected tensor is refused at load, so there is "
                           "no report to give; drop it",
    "quantization_config": "coulisse quantizes itself: pass quantize='int8' (or fast=True)",
    "add_prefix_space": "coulisse builds the tokenizer the model was saved with: save it with that setting "
                        "(transformers' save_pretrained) and pass the folder",
    "do_lower_case": "coulisse builds the tokenizer the model was saved with: save it with that setting "
                     "(transformers' save_pretrained) and pass the folder",
}


def _check_keywords(kwargs: dict[str, Any], taken: list[str], no_effect: dict[str, str], where: str) -> None:
    """Refuse a keyword coulisse cannot honour (with what to do) or does not know (with the closest known one);
    log the ones accepted without effect."""
    for name in sorted(kwargs):
        if name in REFUSED:
            raise InputError(f"{where}: {name}= is not taken; {REFUSED[name]}.")
    unknown = set(kwargs) - set(no_effect)
    if unknown:
        raise unknown_options(unknown, [*taken, *no_effect], where)
    for name in sorted(kwargs):
        log.debug("%s: %s=%r accepted, no effect: %s", where, name, kwargs[name], no_effect[name])


def _folder(name: Any, revision: str | None, token: str | bool | None, local_files_only: bool) -> Path:
    """The folder `name` (a folder, a Hub id, the bundled model) resolves to, downloaded where needed."""
    source = model_source(name)
    check_token(token)
    if not isinstance(local_files_only, bool):
        raise InputError(f"local_files_only={local_files_only!r}; pass True or False.")
    with hub_token(token):
        if local_files_only:
            check_local_files(source, revision)
        try:
            return resolve_model(source, revision)
        except HubUnreachableError as e:
            if str(source) != DEFAULT_MODEL:
                raise
            raise HubUnreachableError(offline_hint(str(e))) from None  # the course's model: the bundled one is here


# The Auto class of each pipeline task's head (what a missing head's error names in this API)
AUTO_CLASS_OF_TASK = {"text-classification": "AutoModelForSequenceClassification",
                      "token-classification": "AutoModelForTokenClassification",
                      "question-answering": "AutoModelForQuestionAnswering", "fill-mask": "AutoModelForMaskedLM",
                      "feature-extraction": "AutoModel"}


class AutoConfig:
    """`AutoConfig.from_pretrained(model)`: the model's config.json as coulisse reads it (`id2label`, `label2id`,
    `model_type`, `max_position_embeddings`, `to_dict()`...)."""

    def __init__(self, *args: Any, **kwargs: Any):
        raise TypeError("AutoConfig is not built directly; use AutoConfig.from_pretrained(model).")

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, *, revision: str | None = None,
                        token: str | bool | None = None, local_files_only: bool = False,
                        **kwargs: Any) -> EncoderConfig:
        where = "AutoConfig.from_pretrained"
        _check_keywords(kwargs, ["revision", "token", "local_files_only"], NO_EFFECT, where)
        directory = _folder(pretrained_model_name_or_path, revision, token, local_files_only)
        return EncoderConfig.from_file(transformer_folder(directory) / "config.json")


class AutoTokenizer:
    """`AutoTokenizer.from_pretrained(model)`: the tokenizer a pipeline of that model runs (`pipe.tokenizer`),
    truncating at the model's limit; transformers' keywords `model_max_length` (never past what the model
    reads: lowered, with a warning), `padding_side` and `truncation_side` override the folder's. A folder of a
    family coulisse does not run (T5...) gives its tokenizer alone, as a tokenizer saved without config.json."""

    def __init__(self, *args: Any, **kwargs: Any):
        raise TypeError("AutoTokenizer is not built directly; use AutoTokenizer.from_pretrained(model).")

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, *inputs: Any,
                        revision: str | None = None, token: str | bool | None = None, local_files_only: bool = False,
                        model_max_length: int | None = None, padding_side: str | None = None,
                        truncation_side: str | None = None, **kwargs: Any) -> Tokenizer:
        where = "AutoTokenizer.from_pretrained"
        if inputs:
            raise InputError(f"{where} takes the model as its one positional argument, got {len(inputs) + 1}; pass "
                             "the others by keyword.")
        _check_keywords(kwargs, ["revision", "token", "local_files_only", "model_max_length", "padding_side",
                                 "truncation_side"], TOKENIZER_NO_EFFECT, where)
        if model_max_length is not None:
            positive_int("model_max_length", model_max_length)
        sides = {name: one_of("right", "left")(name, value) for name, value in
                 (("padding_side", padding_side), ("truncation_side", truncation_side)) if value is not None}
        note_use_fast(kwargs.get("use_fast", True))
        directory = transformer_folder(_folder(pretrained_model_name_or_path, revision, token, local_files_only))
        ceiling, config = None, None
        if (directory / "config.json").exists():
            try:
                config = EncoderConfig.from_file(directory / "config.json")
            except UnsupportedModelError as e:  # a family coulisse does not run (T5...): its tokenizer still loads
                log.info("%s; reading its tokenizer files alone", e)
        if config is not None:
            tokenizer = load_tokenizer(directory, config)
            check_tokenizer(tokenizer, config, directory)
            ceiling = length_ceiling(config)
        else:  # a tokenizer saved alone (tokenizer.save_pretrained(folder)): its own settings, no model's limit
            tokenizer = Tokenizer.from_dir(directory)
        if model_max_length is not None:  # over the folder's, never past what the model reads
            if ceiling is not None and model_max_length > ceiling:
                log.warning("model_max_length=%d is past what %s reads (%d tokens, its position table%s): "
                            "truncation cuts at %d", model_max_length, pretrained_model_name_or_path, ceiling,
                            "" if config.position_limit is not None else " times 8, the most coulisse lets a "
                            "relative-position model read", ceiling)
            tokenizer.model_max_length = model_max_length if ceiling is None else min(model_max_length, ceiling)
        for name, value in sides.items():
            setattr(tokenizer, name, value)
        tokenizer.name_or_path = str(pretrained_model_name_or_path)
        return tokenizer


class AutoModel:
    """`AutoModel.from_pretrained(model)`: the encoder alone (`model(**inputs).last_hidden_state`), from a base
    checkpoint or from a fine-tuned one, whose head is left unread. The `AutoModelFor...` classes load the
    encoder with their task's head (`.logits`). The model comes prepared for this CPU, as a pipeline's: exact
    fp32 by default; `dtype` (transformers' "auto": fp32 on the CPU, fp16 on a GPU), coulisse's
    `quantize="int8"` and `fast=True` as in `pipeline()`; `device_map` picks the device."""

    head: ClassVar[str | None] = None

    def __init__(self, *args: Any, **kwargs: Any):
        name = type(self).__name__
        raise TypeError(f"{name} is not built directly; use {name}.from_pretrained(model).")

    @classmethod
    def from_config(cls, config: Any, **kwargs: Any) -> EncoderModel:
        """transformers' randomly initialised model: not here (inference only, a model comes from its weights)."""
        raise InputError(f"{cls.__name__}.from_config builds an untrained model, which coulisse does not (it runs "
                         f"inference on trained weights); load a checkpoint: {cls.__name__}.from_pretrained(folder "
                         "or Hub id), or train with transformers and load the saved folder.")

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, *model_args: Any,
                        revision: str | None = None, token: str | bool | None = None, local_files_only: bool = False,
                        dtype: Any = "auto", torch_dtype: Any = None, device_map: str | dict | None = None,
                        quantize: str | None = None, fast: bool = False, **kwargs: Any) -> EncoderModel:
        where = f"{cls.__name__}.from_pretrained"
        if model_args:
            raise InputError(f"{where} takes the model as its one positional argument, got {len(model_args) + 1}; "
                             "pass the others by keyword (coulisse reads config.json from the model's folder).")
        _check_keywords(kwargs, ["revision", "token", "local_files_only", "dtype", "torch_dtype", "device_map",
                                 "quantize", "fast"], MODEL_NO_EFFECT, where)
        if torch_dtype is not None and (dtype is None or dtype == "auto"):
            dtype = torch_dtype  # transformers' older name; dtype wins when both are given
        device = resolve_device_map(device_map)
        dtype, quantize = resolve_fast(device, dtype_argument(dtype), quantize, fast)
        check_request(device, dtype, quantize)  # every value refused here, before any file is read
        directory = _folder(pretrained_model_name_or_path, revision, token, local_files_only)
        model_dir = transformer_folder(directory)
        config = EncoderConfig.from_file(model_dir / "config.json")
        try:
            model = load_model(model_dir, config, cls.head)
        except MissingHeadError as e:  # the way out in this API's words: an Auto class, not a pipeline task
            raise e.reworded(
                " or ".join(f"{AUTO_CLASS_OF_TASK[t]}.from_pretrained(...)" for t in e.tasks
                            if t in AUTO_CLASS_OF_TASK)) from None
        # the files the load read key the int8 cache, as for a pipeline of the same folder (whose cache it shares)
        prepare_model(model, model_files(directory), device=device, dtype=dtype, quantize=quantize,
                      name=str(pretrained_model_name_or_path))
        model.name_or_path = str(pretrained_model_name_or_path)
        return model


class AutoModelForSequenceClassification(AutoModel):
    """The encoder and its sequence classification head: `model(**inputs).logits`, `(batch, labels)`."""

    head = "sequence-classification"


class AutoModelForTokenClassification(AutoModel):
    """The encoder and its token classification head: `(batch, length, labels)` logits."""

    head = "token-classification"


class AutoModelForQuestionAnswering(AutoModel):
    """The encoder and its span head: the output's `start_logits` and `end_logits`, `(batch, length)` each, as
    transformers' are (its keys are those two)."""

    head = "question-answering"


class AutoModelForMaskedLM(AutoModel):
    """The encoder and its masked-LM head: `(batch, length, vocabulary)` logits."""

    head = "masked-lm"


class AutoModelForMultipleChoice(AutoModel):
    """The encoder and its multiple-choice head: `(batch, choices, length)` ids in, `(batch, choices)` logits."""

    head = "multiple-choice"

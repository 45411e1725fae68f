"""`coulisse.pipeline(task, model=...)`: the task registry and the factory, above the tasks.

A pipeline is the three stages behind one call, as in transformers (see `coulisse.tasks.base`):

    preprocess  (Tokenizer: text -> ids; no torch)
    forward     (Engine: packed batches through EncoderModel; the only place that touches torch)
    postprocess (tasks/*: numpy -> labels, scores, vectors)

`pipeline()` takes transformers 5's arguments, in its order, with their meaning where coulisse can give it
(docs/dropin.md lists each and what happens to it); every name and value is checked before any file is
read, and an unknown name fails in one line that names the closest valid one.
"""

from __future__ import annotations

import difflib
import inspect
import logging
import os
from pathlib import Path
from typing import Any, Literal, overload

import torch

from coulisse.checkpoint import Checkpoint, load_checkpoint
from coulisse.defaults import ALIASES, DEFAULT_MODELS, offline_hint
from coulisse.engine import DEFAULT_BATCH_SIZE
from coulisse.engine.device import resolve_device, resolve_device_map
from coulisse.engine.prepare import DTYPES, check_request, resolve_dtype, resolve_fast
from coulisse.errors import HubUnreachableError, InputError
from coulisse.hub import resolve_model
from coulisse.hub_download import hub_token
from coulisse.hub_fallback import default_model
from coulisse.tasks import (
    TASKS,
    FeatureExtractionPipeline,
    FillMaskPipeline,
    QuestionAnsweringPipeline,
    SparseEmbeddingPipeline,
    TextClassificationPipeline,
    TokenClassificationPipeline,
    ZeroShotClassificationPipeline,
)
from coulisse.tasks.base import Pipeline, positive_int, unknown_options

log = logging.getLogger(__name__)

__all__ = ["ALIASES", "DTYPES", "TASKS", "Checkpoint", "Pipeline", "load_checkpoint", "pipeline", "resolve_dtype"]

# transformers' keywords that `pipeline()` and `Pipeline.__init__` take besides their named arguments, with
# what coulisse does with each (the task's own options are in its OPTIONS table).
TRANSFORMERS_KEYWORDS = {
    "torch_dtype": "alias of dtype (deprecated in transformers 5; dtype wins when both are given)",
    "batch_size": "upper bound on the inputs of one engine batch (max_batch_size)",
    "num_workers": "accepted, no effect: tokenization is one batched call, no DataLoader",
    "binary_output": "kept as pipe.binary_output; only transformers' CLI reads it",
    "framework": "'pt' only: coulisse runs PyTorch",
    "local_files_only": "True: the model must be a folder, bundled, or in the Hugging Face cache",
    "code_revision": "accepted, no effect: coulisse never runs a checkpoint's code",
    "_commit_hash": "accepted, no effect (transformers ignores it too)",
}
# model_kwargs keys (transformers passes them to from_pretrained).
MODEL_KWARGS = {
    "dtype": "as dtype=", "torch_dtype": "as dtype=", "device_map": "as device_map=", "revision": "as revision=",
    "token": "as token=", "trust_remote_code": "as trust_remote_code=", "local_files_only": "as local_files_only=",
    "attn_implementation": "accepted, no effect: coulisse's packed attention is the only one",
    "low_cpu_mem_usage": "accepted, no effect: weights are always memory-mapped",
    "use_safetensors": "accepted, no effect: safetensors is always preferred when present",
    "output_attentions": "accepted, no effect on a pipeline's results",
    "output_hidden_states": "accepted, no effect on a pipeline's results",
}
TEXT_ONLY = ("feature_extractor", "image_processor", "video_processor", "processor")


def _task_class(task: str) -> type[Pipeline]:
    name = ALIASES.get(task, task)
    if name not in TASKS:
        known = sorted(set(TASKS) | set(ALIASES))
        near = difflib.get_close_matches(str(task).lower(), known, n=1, cutoff=0.6)
        hint = f" (did you mean {near[0]!r}?)" if near else ""
        if not near and ("/" in str(task) or os.path.isdir(str(task))):  # pipeline(folder): the model first
            hint = (f" (a folder or a Hub id? the task comes first and the model second: pipeline('text-"
                    f"classification', model={str(task)!r}))")
        raise InputError(f"unknown task {task!r}{hint}; coulisse supports {', '.join(known)}.")
    return TASKS[name]


# What a type checker (mypy, pyright / Pylance) sees: each task name gives its pipeline class, so that
# `pipeline("sentiment-analysis").explain(...)` and the call's results type-check.
@overload
def pipeline(task: Literal["text-classification", "sentiment-analysis"] = ..., model: str | Path | None = ...,
             *args: Any, **kwargs: Any) -> TextClassificationPipeline: ...
@overload
def pipeline(task: Literal["token-classification", "ner"], model: str | Path | None = ..., *args: Any,
             **kwargs: Any) -> TokenClassificationPipeline: ...
@overload
def pipeline(task: Literal["question-answering"], model: str | Path | None = ..., *args: Any,
             **kwargs: Any) -> QuestionAnsweringPipeline: ...
@overload
def pipeline(task: Literal["fill-mask"], model: str | Path | None = ..., *args: Any,
             **kwargs: Any) -> FillMaskPipeline: ...
@overload
def pipeline(task: Literal["zero-shot-classification"], model: str | Path | None = ..., *args: Any,
             **kwargs: Any) -> ZeroShotClassificationPipeline: ...
@overload
def pipeline(task: Literal["feature-extraction"], model: str | Path | None = ..., *args: Any,
             **kwargs: Any) -> FeatureExtractionPipeline: ...
@overload
def pipeline(task: Literal["sparse-embedding"], model: str | Path | None = ..., *args: Any,
             **kwargs: Any) -> SparseEmbeddingPipeline: ...
@overload
def pipeline(task: str | None = ..., model: str | Path | None = ..., *args: Any, **kwargs: Any) -> Pipeline: ...


def pipeline(task: str | None = "sentiment-analysis", model: str | Path | None = None, config: Any = None,
             tokenizer: Any = None, feature_extractor: Any = None, image_processor: Any = None,
             video_processor: Any = None, processor: Any = None, revision: str | None = None,
             use_fast: bool = True, token: str | bool | None = None, device: str | int | torch.device | None = None,
             device_map: str | dict | None = None, dtype: str | torch.dtype | None = "auto",
             trust_remote_code: bool | None = None, model_kwargs: dict[str, Any] | None = None,
             pipeline_class: type[Pipeline] | None = None, *, threads: int | None = None,
             max_batch_tokens: int | None = None, max_batch_size: int = DEFAULT_BATCH_SIZE,
             quantize: str | None = None, fast: bool = False, throughput: bool = False, **kwargs: Any) -> Pipeline:
    """Build a pipeline, transformers-style: `pipeline("sentiment-analysis", model="tblard/tf-allocine")`.

    Tasks (the head the checkpoint needs):
        "text-classification" / "sentiment-analysis"   *ForSequenceClassification: labels and scores
        "token-classification" / "ner"                 *ForTokenClassification: entities
        "question-answering"                           *ForQuestionAnswering: answer spans in a context
        "fill-mask"                                    *ForMaskedLM: the likeliest tokens for each mask
        "zero-shot-classification"                     an NLI classifier: any labels, named at call time
        "feature-extraction"                           a base model or sentence-transformers folder: vectors
        "sparse-embedding"                             *ForMaskedLM (SPLADE): vocabulary weights

    `model` is a Hub id (downloaded once into the Hugging Face cache), a local folder, or the bundled
    "coulisse/mini-allocine". Without it, sentiment analysis runs `tblard/tf-allocine`, or the bundled model
    (logging one warning) when that is neither cached nor downloadable; a named model never falls back.

    Takes transformers 5's arguments (the project's docs/dropin.md says what each does here). `quantize="int8"`
    runs the encoder's linear layers in int8 (CPU only); `fast=True` the fastest mode this CPU runs within its
    quality gates (int8, else bf16: `coulisse info`), where exact fp32 is the default. `device` (-1 or "cpu",
    0 or "cuda:0", a torch.device) is the CPU by default; on a GPU the model runs in fp16 unless `dtype` says
    otherwise. `threads` sets the CPU threads of the pipeline's own runs (torch's count for the rest of the
    process is left as it was). The engine closes a batch at `max_batch_tokens` tokens or
    `max_batch_size` inputs (`batch_size` lowers the latter); without `max_batch_tokens`, the kernel plan's
    budget for this CPU and precision (4,096 tokens for int8 on AMX tiles) or 1,024. `throughput=True` picks
    fp32 kernels for full batches, as corpus jobs do: faster over a corpus, slower for short single requests.
    Extra keyword arguments become the task's defaults (e.g. `top_k=None`, `function_to_apply="sigmoid"`).
    """
    # How this pipeline was asked for: what pickling it (a spawned process, joblib, deepcopy) rebuilds it from.
    recipe = {**{name: value for name, value in locals().items() if name != "kwargs"}, **kwargs}
    if task is None:
        raise InputError("task=None: coulisse does not guess the task from the Hub; pass one, e.g. "
                         "pipeline('text-classification', model=...).")
    cls = _pipeline_class(task, pipeline_class)
    compat = _checked_options(cls, task, kwargs)  # every name and value, before any file is read
    loading = _loading(model_kwargs, revision=revision, token=token, trust_remote_code=trust_remote_code,
                       dtype=dtype, device_map=device_map, **compat)
    _check_text_only(feature_extractor=feature_extractor, image_processor=image_processor,
                     video_processor=video_processor, processor=processor)
    note_use_fast(use_fast)
    device, dtype, quantize = _engine_request(device, loading, quantize, fast, threads)
    if loading["batch_size"] is not None:
        max_batch_size = min(max_batch_size, loading["batch_size"])
    revision = loading["revision"]
    # The downloads of this load send the token given (a string, or False for none), else huggingface_hub's.
    with hub_token(loading["token"]):
        model, tokenizer_dir, checkpoint = _checkpoint(cls, task, model, config, tokenizer, revision,
                                                       loading["local_files_only"])
    # Threads, quantization, dtype and the fast path are chosen in one place: `engine.prepare.prepare_model`.
    pipe = cls(checkpoint, device=device, dtype=dtype, quantize=quantize, threads=threads,
               max_batch_tokens=max_batch_tokens, max_batch_size=max_batch_size, throughput=throughput, **kwargs)
    pipe.binary_output = bool(loading["binary_output"])
    pipe.recipe = (pipeline, _pickled_recipe(recipe, model, checkpoint, tokenizer_dir))
    return pipe


def _checked_options(cls: type[Pipeline], task: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    """Take transformers' keywords out of `kwargs` (returned); what is left is the task's options, each checked:
    an unknown name fails in one line that names the closest valid one."""
    compat = {name: kwargs.pop(name) for name in list(kwargs) if name in TRANSFORMERS_KEYWORDS}
    unknown = set(kwargs) - set(cls.option_table())
    if unknown:
        # The options a user may mean: never the private ones, the ones refused whatever their value, or **kwargs.
        valid = [*inspect.signature(pipeline).parameters, *TRANSFORMERS_KEYWORDS, *cls.option_table()]
        offered = {v for v in valid if not v.startswith("_") and v not in (*TEXT_ONLY, "kwargs")}
        raise unknown_options(unknown, offered, f"pipeline({task!r})")
    cls.check_defaults(cls.check_options(kwargs))  # values too: a bad top_k fails now, not at the first call
    return compat


def _engine_request(device: Any, loading: dict[str, Any], quantize: str | None, fast: bool,
                    threads: int | None) -> tuple[torch.device, str | torch.dtype | None, str | None]:
    """The device, dtype and quantization asked for, resolved and checked before anything loads."""
    device = resolve_device(device) if device is not None else resolve_device_map(loading["device_map"])
    dtype = dtype_argument(loading["dtype"])
    dtype, quantize = resolve_fast(device, dtype, quantize, fast)  # `fast=True`: the kernel plan's fast mode
    check_request(device, dtype, quantize, threads)  # bad threads, dtype and quantize values fail here too
    return device, dtype, quantize


def _checkpoint(cls: type[Pipeline], task: str, model: Any, config: Any, tokenizer: Any, revision: str | None,
                local_files_only: bool) -> tuple[str | Path, Path | None, Checkpoint]:
    """The model's source (the task's default when none is given), the tokenizer's folder when it is another
    checkpoint's, and the checkpoint loaded for the task's head."""
    if model is None:
        if tokenizer is not None or config is not None:
            raise InputError("tokenizer= or config= without model=: pass the model they belong to.")
        if task not in DEFAULT_MODELS:
            raise InputError(f"task {task!r} has no default model; pass model= (a Hub id or a local folder).")
        model = default_model(task, revision)
    model = model_source(model)
    if local_files_only:
        check_local_files(model, revision)
    tokenizer_dir = _same_or_other("tokenizer", tokenizer, model, revision)
    if _same_or_other("config", config, model, revision) is not None:
        raise InputError(f"config={_name(config)!r} is not the model's; coulisse reads config.json from the "
                         "model's own folder. Drop config=, or save the model with that config.")
    try:
        checkpoint = load_checkpoint(model, cls.head, revision, tokenizer_dir)
    except HubUnreachableError as e:
        if cls.task != "text-classification":
            raise
        # A sentiment user without the Hub has a French classifier at hand: say so (never a silent swap).
        raise HubUnreachableError(offline_hint(str(e))) from None
    return model, tokenizer_dir, checkpoint


def _pickled_recipe(recipe: dict[str, Any], model: str | Path, checkpoint: Checkpoint,
                    tokenizer_dir: Path | None) -> dict[str, Any]:
    """`recipe` (the call's arguments) as pickling the pipeline stores it: what rebuilds the same pipeline."""
    # The model as resolved (a default chosen once is not chosen again), the tokenizer as the folder it names.
    # Folders as absolute paths: unpickled in another working directory, "m" would be asked of the Hub.
    recipe.update(model=str(checkpoint.directory.resolve()) if _is_folder(model) else model, config=None,
                  tokenizer=None if tokenizer_dir is None else str(Path(tokenizer_dir).resolve()))
    # Never a secret in a pickle (an unpickled pipeline loads the folder the download left, with no token)
    recipe["token"] = None
    if isinstance(recipe.get("model_kwargs"), dict):
        recipe["model_kwargs"] = {k: v for k, v in recipe["model_kwargs"].items() if k != "token"}
    return recipe


def _is_folder(model: str | Path) -> bool:
    return Path(model).expanduser().is_dir()


def _pipeline_class(task: str, pipeline_class: Any) -> type[Pipeline]:
    cls = _task_class(task)
    if pipeline_class is None:
        return cls
    if not (isinstance(pipeline_class, type) and issubclass(pipeline_class, Pipeline)):
        raise InputError(f"pipeline_class={pipeline_class!r}; pass a subclass of coulisse.tasks.base.Pipeline "
                         f"(such as {cls.__name__}), or leave it out.")
    return pipeline_class


def _loading(model_kwargs: dict | None, **given: Any) -> dict[str, Any]:
    """The loading arguments, merged with `model_kwargs` as transformers merges them; each checked."""
    merged = {"batch_size": None, "binary_output": False, "local_files_only": False, **given}
    model_kwargs = dict(model_kwargs or {})
    if not isinstance(model_kwargs, dict):
        raise InputError(f"model_kwargs={model_kwargs!r}; pass a dict.")
    unknown = set(model_kwargs) - set(MODEL_KWARGS)
    if unknown:
        raise unknown_options(unknown, MODEL_KWARGS, "model_kwargs")
    torch_dtype = merged.pop("torch_dtype", None)
    if torch_dtype is not None and merged["dtype"] == "auto":
        merged["dtype"] = torch_dtype
    for key in ("torch_dtype", "dtype"):
        if key in model_kwargs:
            if merged["dtype"] != "auto":
                raise InputError(f"dtype is given twice, as dtype= and as model_kwargs[{key!r}]; pass it once.")
            merged["dtype"] = model_kwargs.pop(key)
    for key, value in model_kwargs.items():
        if key not in merged:
            continue  # accepted, no effect (MODEL_KWARGS says why)
        if merged[key] not in (None, False):
            raise InputError(f"{key} is given twice, as {key}= and in model_kwargs; pass it once.")
        merged[key] = value
    if merged.get("framework") not in (None, "pt"):
        raise InputError(f"framework={merged['framework']!r}; coulisse runs PyTorch models: pass 'pt' or "
                         "leave it out (TensorFlow .h5 weights are read without TensorFlow).")
    if merged["batch_size"] is not None:
        positive_int("batch_size", merged["batch_size"])
    if merged.get("num_workers") is not None:
        positive_int("num_workers", merged["num_workers"], allow_zero=True)
    check_token(merged.get("token"))
    return merged


def check_token(token: Any) -> None:
    """transformers' `token`: a string, True (huggingface_hub's own), False (none) or None."""
    if token is not None and not isinstance(token, (str, bool)):
        raise InputError(f"token={token!r}; pass a Hugging Face token string, True, or False.")


def note_use_fast(use_fast: Any) -> None:
    """transformers' `use_fast=False` asks for a slow tokenizer, which coulisse does not have: said in the log."""
    if use_fast is not True:
        log.info("use_fast=%r: coulisse's tokenizers are the fast (Rust) ones, whose ids transformers' "
                 "slow tokenizers reproduce", use_fast)


def _check_text_only(**components: Any) -> None:
    for name, value in components.items():
        if value is not None:
            raise InputError(f"{name}={_name(value)!r}: coulisse runs text models only, whose tokenizer it "
                             f"reads from the model's folder; drop {name}=.")


def dtype_argument(dtype: Any) -> str | torch.dtype | None:
    """transformers' dtype: "auto" (the default) is coulisse's own choice, fp32 on the CPU and fp16 on a
    GPU; a torch dtype or its name ("bfloat16", "float16", "float32", "half", "float") otherwise."""
    if dtype is None or dtype == "auto":
        return None
    given = dtype
    if isinstance(dtype, str) and dtype not in DTYPES and isinstance(getattr(torch, dtype, None), torch.dtype):
        dtype = getattr(torch, dtype)
    if isinstance(dtype, torch.dtype) and dtype not in DTYPES.values():
        raise InputError(f"dtype={given!r}; coulisse runs float32, float16 or bfloat16: pass one, or 'auto'.")
    return dtype


def _name(value: Any) -> str:
    """A path or Hub id as given, or the one a transformers object was loaded from."""
    if isinstance(value, (str, os.PathLike)):
        return str(value)
    return str(getattr(value, "name_or_path", "") or getattr(value, "_name_or_path", "") or type(value).__name__)


def model_source(model: Any) -> str | Path:
    if isinstance(model, (str, os.PathLike)):
        return model
    where = getattr(model, "name_or_path", "")
    hint = f" (it was loaded from {where!r}: pass that)" if where else ""
    raise InputError(f"model= is a {type(model).__name__} object; coulisse loads checkpoints from files: pass "
                     f"its folder or Hub id{hint}, or write it with model.save_pretrained(folder) first.")


def _same_or_other(what: str, value: Any, model: str | Path, revision: str | None) -> Path | None:
    """None when `value` is absent or names the model's own checkpoint; else the folder it names. A
    transformers object stands for the files it was loaded from (`name_or_path`)."""
    if value is None:
        return None
    name = _name(value)
    if not isinstance(value, (str, os.PathLike)):
        if not name or name == type(value).__name__:
            raise InputError(f"{what}= is a {type(value).__name__} object that names no files; save it with "
                             f".save_pretrained(folder) and pass the folder.")
        log.info("%s= is a %s object: coulisse reads its files from %s", what, type(value).__name__, name)
    if name == str(model):
        return None
    folder, model_folder = resolve_model(name, revision), resolve_model(model, revision)
    return None if folder.resolve() == model_folder.resolve() else folder


def check_local_files(model: str | Path, revision: str | None) -> None:
    """local_files_only=True: a folder, a bundled model, or one already in the Hugging Face cache."""
    from coulisse.hub import bundled_dir, is_offline

    if Path(model).expanduser().is_dir() or bundled_dir(str(model)) is not None or is_offline():
        return
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(str(model), "config.json", revision=revision)
    if not isinstance(found, str):
        raise InputError(f"local_files_only=True, but {str(model)!r} is neither a folder nor in the Hugging "
                         "Face cache; download it once while online, or pass a folder.")

"""`SentenceEncoder`: sentence-transformers' `SentenceTransformer.encode` over coulisse's feature-extraction
pipeline, for code written against sentence-transformers.

    >>> from coulisse import SentenceEncoder
    >>> model = SentenceEncoder("sentence-transformers/all-MiniLM-L6-v2")
    >>> embeddings = model.encode(["Le chat dort.", "Un chat fait la sieste."])   # (2, 384) float32
    >>> model.similarity(embeddings, embeddings)                                 # (2, 2) tensor

It is a thin layer over `pipeline("feature-extraction", model, pooling="auto")`: the folder's
sentence-transformers modules (Pooling, Normalize, `max_seq_length`) are read there, and `encode` runs that
pipeline's stages (`preprocess` → `forward` → `postprocess`). What it adds is sentence-transformers' side of
the call: prompts from `config_sentence_transformers.json`, `truncate_dim`, `normalize_embeddings`,
`precision` (quantized embeddings, as `sentence_transformers.quantization.quantize_embeddings`), the return
types (numpy by default, tensors on request) and `similarity`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from coulisse.engine import DEFAULT_BATCH_SIZE
from coulisse.engine.device import resolve_device
from coulisse.errors import InputError
from coulisse.hub_cache import hub_cache_dir
from coulisse.pipelines import pipeline
from coulisse.tasks.base import FORWARD, POST, PRE, positive_int
from coulisse.tasks.feature_extraction import read_settings  # noqa: F401 (where it was imported from)
from coulisse.tokenizer import check_texts

__all__ = ["PRECISIONS", "SIMILARITY_FN_NAMES", "SentenceEncoder", "quantize_embeddings", "similarity"]

log = logging.getLogger(__name__)

PRECISIONS = ("float32", "int8", "uint8", "binary", "ubinary")
OUTPUT_VALUES = ("sentence_embedding", "token_embeddings")
SIMILARITY_FN_NAMES = ("cosine", "dot", "euclidean", "manhattan")


# -- quantization and similarity: sentence-transformers' arithmetic, on numpy and torch ----------------------


def quantize_embeddings(embeddings: np.ndarray | torch.Tensor, precision: str, ranges: np.ndarray | None = None,
                        calibration_embeddings: np.ndarray | None = None) -> np.ndarray:
    """`(N, D)` float embeddings -> `precision`: int8 / uint8 buckets per dimension (255 steps between the
    `ranges` rows, min and max, taken from `calibration_embeddings` or else from `embeddings`), or the signs
    packed eight to a byte (binary: int8, offset by -128; ubinary: uint8). sentence-transformers' own steps,
    in the same float32 order, so the same floats give the same codes. Embeddings that differ in their last
    bits (~1e-7) may land one bucket apart where a value sits on a bucket's edge."""
    _check_choice("precision", precision, PRECISIONS)
    if isinstance(embeddings, torch.Tensor):
        embeddings = embeddings.detach().float().cpu().numpy()
    embeddings = np.asarray(embeddings)
    if embeddings.dtype in (np.int8, np.uint8):
        raise InputError(f"embeddings of dtype {embeddings.dtype} are quantized already; pass float embeddings.")
    if precision == "float32":
        return embeddings.astype(np.float32)
    if precision.endswith("binary"):
        packed = np.packbits(embeddings > 0, axis=-1)
        return (packed - 128).astype(np.int8) if precision == "binary" else packed
    if ranges is None:
        ranges = _quantization_ranges(embeddings, precision, calibration_embeddings)
    ranges = np.asarray(ranges).astype(np.float32, copy=False)
    starts = ranges[0, :]
    steps = (ranges[1, :] - starts) / 255
    steps = np.where(steps == 0, 1, steps)
    codes = np.clip(np.floor((embeddings - starts) / steps), 0, 255)
    return codes.astype(np.uint8) if precision == "uint8" else (codes - 128).astype(np.int8)


def _quantization_ranges(embeddings: np.ndarray, precision: str, calibration: np.ndarray | None) -> np.ndarray:
    if calibration is None:
        if embeddings.ndim == 1 or embeddings.shape[0] == 1:
            raise InputError(f"precision={precision!r} needs ranges, and one embedding has none; encode several "
                             "texts at once, or quantize with quantize_embeddings(..., calibration_embeddings=...).")
        if embeddings.shape[0] < 100:
            log.warning("%s buckets computed from %d embeddings; more (or calibration_embeddings) give steadier "
                        "buckets.", precision, len(embeddings))
        calibration = embeddings
    calibration = np.asarray(calibration)
    return np.vstack((calibration.min(axis=0), calibration.max(axis=0)))


def _as_tensor(a: Any, batch: bool) -> torch.Tensor:
    """Embeddings as one tensor: a list of rows is stacked; float16/bfloat16 go to float32 (a matmul in half
    precision rounds nearby scores into ties); `batch`: a single vector becomes a row."""
    if isinstance(a, list) and a and all(isinstance(x, torch.Tensor) for x in a):
        a = torch.stack(a)
    elif isinstance(a, list) and a and all(isinstance(x, np.ndarray) for x in a):
        a = torch.stack([torch.as_tensor(x) for x in a])
    elif not isinstance(a, torch.Tensor):
        a = torch.as_tensor(np.asarray(a) if isinstance(a, list) else a)
    if a.is_floating_point() and torch.finfo(a.dtype).bits < 32:
        a = a.float()
    return a.unsqueeze(0) if batch and a.dim() == 1 else a


def _normalize(a: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.normalize(a, p=2, dim=-1)


# name -> (every row of a against every row of b: (N, M), row i of a against row i of b: (N,))
SIMILARITIES: dict[str, tuple[Callable, Callable]] = {
    "cosine": (lambda a, b: torch.mm(_normalize(a), _normalize(b).T),
               lambda a, b: (_normalize(a) * _normalize(b)).sum(-1)),
    "dot": (lambda a, b: torch.mm(a, b.T), lambda a, b: (a * b).sum(-1)),
    # sentence-transformers' distances are similarities: negated, so that higher is closer
    "euclidean": (lambda a, b: -torch.cdist(a, b, p=2.0), lambda a, b: -torch.linalg.vector_norm(a - b, dim=-1)),
    "manhattan": (lambda a, b: -torch.cdist(a, b, p=1.0), lambda a, b: -(a - b).abs().sum(-1)),
}


def similarity(a: Any, b: Any, fn_name: str = "cosine", pairwise: bool = False) -> torch.Tensor:
    """Scores of embeddings `a` `(N, D)` against `b` `(M, D)` -> `(N, M)` (a vector counts as one row), or with
    `pairwise` row i against row i -> `(N,)`; as `sentence_transformers.util` computes them."""
    _check_choice("similarity_fn_name", fn_name, SIMILARITY_FN_NAMES)
    matrix, rows = SIMILARITIES[fn_name]
    if pairwise:
        return rows(_as_tensor(a, batch=False), _as_tensor(b, batch=False))
    return matrix(_as_tensor(a, batch=True), _as_tensor(b, batch=True))


def _check_choice(name: str, value: Any, choices: tuple[str, ...]) -> str:
    value = getattr(value, "value", value)  # sentence-transformers' SimilarityFunction enum
    if value not in choices:
        raise InputError(f"{name}={value!r}; use one of {', '.join(choices)}.")
    return value


# -- the encoder -------------------------------------------------------------------------------------------


class SentenceEncoder:
    """A sentence-transformers model, read and run by coulisse: `SentenceEncoder(model).encode(texts)` equals
    `SentenceTransformer(model).encode(texts)`.

    `model` is a folder, a Hub id or a bundled name, as for `pipeline()`; `prompts`, `default_prompt_name`,
    `similarity_fn_name` and `truncate_dim` override the folder's `config_sentence_transformers.json`, as in
    sentence-transformers. `device` defaults to the CPU; `dtype`, `quantize`, `fast` (the fastest mode this CPU
    runs within its quality gates), `threads`, `max_batch_tokens` and `max_batch_size` are `pipeline()`'s.

    sentence-transformers' loading arguments are taken as `pipeline()` takes transformers' (`docs/dropin.md`):
    `revision`, `local_files_only`, `token` (and its old name `use_auth_token`), `model_kwargs`;
    `trust_remote_code`, `model_card_data`, `use_kernels=False` and `backend="torch"` have no effect here. A
    `cache_folder` other than the Hugging Face cache, other `backend`s, `modules`, `processor_kwargs` and
    `config_kwargs` are refused in one line.
    """

    TASK = "feature-extraction"  # the pipeline it runs, with these options
    PIPELINE_OPTIONS: dict[str, Any] = {"pooling": "auto"}

    def __init__(self, model_name_or_path: str | Path, *, device: str | int | torch.device | None = None,
                 prompts: dict[str, str] | None = None, default_prompt_name: str | None = None,
                 similarity_fn_name: str | None = None, truncate_dim: int | None = None,
                 revision: str | None = None, dtype: str | torch.dtype | None = None, quantize: str | None = None,
                 fast: bool = False, threads: int | None = None, max_batch_tokens: int | None = None,
                 max_batch_size: int = DEFAULT_BATCH_SIZE, local_files_only: bool = False,
                 token: bool | str | None = None, model_kwargs: dict[str, Any] | None = None,
                 **sentence_transformers: Any):
        # What needs no model is checked before it loads.
        token = _loading_keywords(sentence_transformers, token, type(self).__name__)
        positive_int("truncate_dim", truncate_dim, allow_none=True)
        if similarity_fn_name is not None:
            similarity_fn_name = _check_choice("similarity_fn_name", similarity_fn_name, SIMILARITY_FN_NAMES)
        if prompts is not None and not all(isinstance(k, str) and isinstance(v, str) for k, v in prompts.items()):
            raise InputError(f"prompts={prompts!r}; pass a dict of prompt names to prompt strings.")
        self.pipeline = pipeline(self.TASK, model_name_or_path, revision=revision,
                                 device="cpu" if device is None else device, dtype=dtype or "auto", quantize=quantize,
                                 fast=fast, threads=threads, max_batch_tokens=max_batch_tokens,
                                 max_batch_size=max_batch_size, local_files_only=local_files_only, token=token,
                                 model_kwargs=model_kwargs,
                                 **self.PIPELINE_OPTIONS)
        settings = self.pipeline.settings
        # sentence-transformers: the caller's prompts win, the folder's fill the rest; query and document exist
        merged: dict[str, str | None] = {"query": None, "document": None, **(prompts or {})}
        for name, text in settings.get("prompts", {}).items():
            if merged.get(name) is None:
                merged[name] = text
        self.prompts: dict[str, str] = {name: text or "" for name, text in merged.items()}
        self.default_prompt_name = (settings.get("default_prompt_name") if default_prompt_name is None
                                    else default_prompt_name)
        if self.default_prompt_name is not None and self.default_prompt_name not in self.prompts:
            raise InputError(f"default_prompt_name={self.default_prompt_name!r} is not a prompt of this model; "
                             f"use one of {sorted(self.prompts)}, or add it to prompts=.")
        saved = settings.get("similarity_fn_name")
        self._similarity_fn_name = similarity_fn_name or (saved if saved in SIMILARITY_FN_NAMES else None)
        self.truncate_dim = truncate_dim if truncate_dim is not None else settings.get("truncate_dim")
        self.sentence_config = self.pipeline.sentence_config("auto", None)
        self._max_seq_length: int | None = None  # set by the caller, as in sentence-transformers

    # -- what sentence-transformers exposes ------------------------------------------------------------

    @property
    def device(self) -> torch.device:
        return self.pipeline.device

    @property
    def tokenizer(self):
        return self.pipeline.tokenizer

    @property
    def max_seq_length(self) -> int:
        """Tokens kept per text, specials included: the folder's `max_seq_length` (256 for all-MiniLM-L6-v2; one
        above the tokenizer's `model_max_length` counts, as sentence-transformers reads it), else the tokenizer's
        limit, or a value set here, lower or higher (up to what the model's position embeddings hold: 512 for
        all-MiniLM-L6-v2), as sentence-transformers lets one set it."""
        return self._max_seq_length or self._folder_max_seq_length()

    @max_seq_length.setter
    def max_seq_length(self, value: int) -> None:
        positive_int("max_seq_length", value)
        # sentence-transformers takes any value and fails inside the model past the position table.
        ceiling = self.pipeline.config.position_limit
        if ceiling is not None and value > ceiling:
            raise InputError(f"max_seq_length={value}; this model reads at most {ceiling} tokens (its position "
                             f"embeddings); set a value up to {ceiling}.")
        self._max_seq_length = value

    def _folder_max_seq_length(self) -> int:
        return self.pipeline.token_limit(self.sentence_config)

    def get_max_seq_length(self) -> int:
        return self.max_seq_length

    def get_embedding_dimension(self) -> int:
        """The length of `encode`'s vectors: the hidden size, cut to `truncate_dim`."""
        size = self.pipeline.config.hidden_size
        return size if self.truncate_dim is None else min(size, self.truncate_dim)

    get_sentence_embedding_dimension = get_embedding_dimension  # sentence-transformers < 6's name

    @property
    def similarity_fn_name(self) -> str:
        """How `similarity` scores: the folder's setting, else "cosine"."""
        return self._similarity_fn_name or "cosine"

    @similarity_fn_name.setter
    def similarity_fn_name(self, value: str) -> None:
        self._similarity_fn_name = _check_choice("similarity_fn_name", value, SIMILARITY_FN_NAMES)

    def similarity(self, embeddings1: Any, embeddings2: Any) -> torch.Tensor:
        """`(N, M)` scores of every row of `embeddings1` against every row of `embeddings2`."""
        return similarity(embeddings1, embeddings2, self.similarity_fn_name)

    def similarity_pairwise(self, embeddings1: Any, embeddings2: Any) -> torch.Tensor:
        """`(N,)` scores of row i of `embeddings1` against row i of `embeddings2`."""
        return similarity(embeddings1, embeddings2, self.similarity_fn_name, pairwise=True)

    def __repr__(self) -> str:
        return f"SentenceEncoder(model={self.pipeline.checkpoint.name!r}, device={str(self.device)!r})"

    # -- encode ----------------------------------------------------------------------------------------

    def encode(self, inputs: str | list[str] | tuple[str, ...] | np.ndarray | None = None,
               prompt_name: str | None = None, prompt: str | None = None, batch_size: int = 32,
               show_progress_bar: bool | None = None, output_value: str = "sentence_embedding",
               precision: str = "float32", convert_to_numpy: bool = True, convert_to_tensor: bool = False,
               device: str | torch.device | None = None, normalize_embeddings: bool = False,
               truncate_dim: int | None = None, pool: Any = None, chunk_size: int | None = None, *,
               sentences: str | list[str] | tuple[str, ...] | np.ndarray | None = None) -> Any:
        """Embeddings of `inputs` (`sentences=`, sentence-transformers' older name, is taken too), as
        sentence-transformers returns them: a string gives one vector `(D,)`,
        a list gives `(N, D)`; a numpy array by default, a tensor with `convert_to_tensor=True`, a list of
        row tensors with `convert_to_numpy=False`. `output_value="token_embeddings"`: one `(tokens, H)`
        tensor per text. The prompt (`prompt`, else `prompts[prompt_name]`, else the default prompt) is put
        before each text; `truncate_dim` keeps the first dimensions, then `normalize_embeddings` scales to
        length 1; `precision` quantizes last. `batch_size` caps the texts of one batch, which also closes on
        coulisse's token budget (`max_batch_tokens=` at construction); exact and int8 results do not depend on
        batching, bf16's move by ~1e-3 on a normalized component.
        `sentences=` is the old name of `inputs`; a multi-process `pool` is refused (`chunk_size` is its), and so
        is `output_value=None` (sentence-transformers' dicts of every output: ask for each one)."""
        texts, single = _texts(_inputs(inputs, sentences, pool))
        _check_choice("output_value", output_value, OUTPUT_VALUES)
        _check_choice("precision", precision, PRECISIONS)
        positive_int("batch_size", batch_size)
        positive_int("truncate_dim", truncate_dim, allow_none=True)
        self._check_device(device)
        prompt = self._resolve_prompt(prompt, prompt_name)
        truncate_dim = truncate_dim if truncate_dim is not None else self.truncate_dim
        if show_progress_bar is None:  # sentence-transformers' rule: shown when its logger says INFO or DEBUG
            show_progress_bar = log.getEffectiveLevel() in (logging.INFO, logging.DEBUG)

        if output_value == "token_embeddings":
            if precision != "float32":
                raise InputError(f"precision={precision!r} quantizes sentence embeddings; use it with "
                                 "output_value='sentence_embedding', or precision='float32'.")
            tokens = [torch.from_numpy(hidden) for hidden in self._run(texts, prompt, batch_size, show_progress_bar)[1]]
            return tokens[0] if single else tokens
        if not texts:  # sentence-transformers' empty results
            return torch.tensor([]) if convert_to_tensor else np.array([]) if convert_to_numpy else []

        embeddings = self._sentence_embeddings(texts, prompt, batch_size, show_progress_bar)
        if truncate_dim is not None:
            embeddings = embeddings[:, :truncate_dim]
        if normalize_embeddings:
            embeddings = _normalize(embeddings)
        array = embeddings.numpy()
        if precision != "float32":
            array = quantize_embeddings(array, precision)
        if convert_to_tensor:
            result: Any = torch.as_tensor(array)
        elif convert_to_numpy:
            result = array
        else:
            result = list(torch.from_numpy(array))
        return result[0] if single else result

    def encode_query(self, inputs: Any = None, prompt_name: str | None = None, prompt: str | None = None,
                     **kwargs: Any) -> Any:
        """`encode` with the "query" prompt unless another is given (an empty one when the model has none)."""
        if prompt_name is None and prompt is None:
            prompt_name = "query"
        return self.encode(inputs, prompt_name, prompt, **kwargs)

    def encode_document(self, inputs: Any = None, prompt_name: str | None = None, prompt: str | None = None,
                        **kwargs: Any) -> Any:
        """`encode` with the "document" prompt unless another is given (an empty one when the model has none)."""
        if prompt_name is None and prompt is None:
            prompt_name = "document"
        return self.encode(inputs, prompt_name, prompt, **kwargs)

    # -- the pipeline's stages -----------------------------------------------------------------------------

    def _run(self, texts: list[str], prompt: str | None, batch_size: int, show_progress_bar: bool):
        """preprocess → forward: the batch, and the hidden states `(tokens, H)` of each text."""
        pipe = self.pipeline
        given: dict[str, Any] = {"batch_size": batch_size, "prompt": ""}  # the prompt is this class's: added below
        if self._max_seq_length is not None:
            given["tokenize_kwargs"] = {"max_length": self._max_seq_length}
        options = pipe.options(given)
        if prompt:
            texts = [prompt + text for text in texts]
        if not texts:
            return None, []
        batch = pipe.preprocess(texts, **pipe.stage_options(options, PRE))
        with tqdm(total=len(texts), desc="Batches", unit="text", disable=not show_progress_bar) as bar:
            outputs = pipe.forward(batch.items, bar.update, **pipe.stage_options(options, FORWARD))
        return batch, outputs

    def _sentence_embeddings(self, texts: list[str], prompt: str | None, batch_size: int,
                             show_progress_bar: bool) -> torch.Tensor:
        """`(N, H)` float32: the pipeline's pooling (and the folder's Normalize) of each text's hidden states."""
        pipe = self.pipeline
        batch, outputs = self._run(texts, prompt, batch_size, show_progress_bar)
        # The prompt is this class's (added in _run), and so is the cut to truncate_dim (encode's argument wins
        # over the folder's); a Pooling module with include_prompt=false pools the text's tokens only (INSTRUCTOR).
        skip = self.pipeline.prompt_tokens(prompt, batch.context, self.max_seq_length) \
            if prompt and not batch.context.include_prompt else 0
        batch.context = replace(batch.context, truncate_dim=None, prompt_tokens=skip)
        options = pipe.options({"return_tensors": True})
        vectors = pipe.postprocess(outputs, batch, **pipe.stage_options(options, POST))
        return torch.stack(vectors)

    def _resolve_prompt(self, prompt: str | None, prompt_name: str | None) -> str | None:
        if prompt is not None:
            if prompt_name is not None:
                log.warning("both prompt and prompt_name given; prompt_name=%r is ignored.", prompt_name)
            return prompt
        if prompt_name is not None:
            if prompt_name not in self.prompts:
                raise InputError(f"prompt_name={prompt_name!r} is not a prompt of this model; use one of "
                                 f"{sorted(self.prompts)}, or pass prompt= (the text itself).")
            return self.prompts[prompt_name]
        return self.prompts.get(self.default_prompt_name) if self.default_prompt_name else None

    def _check_device(self, device: Any) -> None:
        if device is None:
            return
        if isinstance(device, list):
            raise InputError(f"device={device!r}: coulisse encodes in one process; pass one device, or None.")
        wanted = resolve_device(device)
        here = self.device
        if wanted.type != here.type or (wanted.index is not None and here.index is not None
                                        and wanted.index != here.index):
            raise InputError(f"device={str(wanted)!r}, but this encoder runs on {str(here)!r}; build it with "
                             f"SentenceEncoder(model, device={str(wanted)!r}).")


def _inputs(inputs: Any, sentences: Any, pool: Any) -> Any:
    """`encode`'s texts, under sentence-transformers 6's name (`inputs`) or its old one (`sentences`)."""
    if pool is not None:
        raise InputError("pool= (a multi-process pool) is not supported: coulisse runs one process on every core "
                         "(threads= at construction); drop pool=.")
    if inputs is not None and sentences is not None:
        raise InputError("the texts are given twice, as inputs and as sentences=; pass them once.")
    if inputs is None and sentences is None:
        raise InputError("no texts given; pass encode(texts), a string or a list of strings.")
    return sentences if inputs is None else inputs


# sentence-transformers' constructor keywords that pipeline() does not take (checked by _loading_keywords)
LOADING_KEYWORDS = ("trust_remote_code", "model_card_data", "use_kernels", "kernel_config", "backend",
                    "cache_folder", "modules", "processor_kwargs", "config_kwargs", "use_auth_token")


def _loading_keywords(given: dict[str, Any], token: Any, who: str = "SentenceEncoder") -> Any:
    """sentence-transformers' loading keywords that `pipeline()` does not take: checked, and the token to use."""
    unknown = set(given) - set(LOADING_KEYWORDS)
    if unknown:
        raise TypeError(f"{who}() got unexpected keyword argument(s) {', '.join(sorted(unknown))}")
    if given.get("use_auth_token") is not None:
        if token is not None:
            raise InputError("token is given twice, as token= and use_auth_token=; pass token= alone.")
        token = given["use_auth_token"]
    cache = given.get("cache_folder")
    if cache is not None and Path(cache).expanduser().resolve() != hub_cache_dir().resolve():
        raise InputError(f"cache_folder={str(cache)!r}: coulisse downloads into the Hugging Face cache "
                         f"({hub_cache_dir()}); set HF_HUB_CACHE={cache} instead, or pass the model's folder.")
    if given.get("backend", "torch") != "torch":
        raise InputError(f"backend={given['backend']!r}: coulisse runs its own PyTorch model code; pass "
                         "backend='torch' or leave it out (quantize='int8' is its fast CPU mode).")
    if given.get("use_kernels"):
        raise InputError("use_kernels=True: coulisse picks its CPU kernels itself (`coulisse info`); drop it.")
    for name in ("modules", "processor_kwargs", "config_kwargs", "kernel_config"):
        if given.get(name) is not None:
            raise InputError(f"{name}= is not supported: coulisse reads the modules and settings from the model's "
                             f"folder; drop {name}=.")
    return token


def _texts(sentences: Any) -> tuple[list[str], bool]:
    """A string (one vector back) or a list / tuple / numpy array of strings (a matrix back)."""
    if isinstance(sentences, np.ndarray) and sentences.ndim == 1 and sentences.dtype.kind in ("U", "O"):
        sentences = sentences.tolist()
    if isinstance(sentences, (list, tuple)) and not sentences:
        return [], False
    return check_texts(sentences, "sentences")

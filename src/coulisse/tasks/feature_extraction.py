"""Stage 3 for feature extraction: the last hidden states of each input, as transformers returns them,
or one sentence embedding per input (`pooling="cls" | "mean" | "auto"`, `normalize=True`).

`pooling="auto"` follows the folder's sentence-transformers configuration when it has one (`modules.json`:
the Pooling module's mode and `include_prompt`, a Normalize module, `sentence_bert_config.json`'s
`max_seq_length` and `do_lower_case`, `config_sentence_transformers.json`'s `truncate_dim`), so
`all-MiniLM-L6-v2` gives sentence-transformers' embeddings; folders without one get mean pooling. Pooling runs
on the unpadded hidden states, so the mean is over real tokens only.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from coulisse.engine import Item
from coulisse.errors import InputError, ModelLoadError, UnsupportedModelError
from coulisse.jsonfile import read_json
from coulisse.sentence_modules import SETTINGS_FILE, read_module_json, read_modules
from coulisse.tasks.base import PRE, Batch, Option, Pipeline, boolean, one_of, tokenizer_keywords, truncation_option
from coulisse.tokenizer import check_texts

log = logging.getLogger(__name__)

POOLINGS = ("cls", "mean", "auto")

# sentence-transformers' older Pooling config: one boolean per mode.
LEGACY_MODES = {"pooling_mode_cls_token": "cls", "pooling_mode_mean_tokens": "mean",
                "pooling_mode_max_tokens": "max", "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
                "pooling_mode_weightedmean_tokens": "weightedmean", "pooling_mode_lasttoken": "lasttoken"}


@dataclass(frozen=True)
class SentenceConfig:
    """What a sentence-transformers folder says about turning hidden states into one vector."""

    pooling: str = "mean"
    normalize: bool = False
    max_seq_length: int | None = None
    lowercase: bool = False
    include_prompt: bool = True  # the Pooling module's: False pools without a prompt's tokens
    truncate_dim: int | None = None  # config_sentence_transformers.json's: the first dimensions, after Normalize
    renormalize: bool = False  # normalize=True asked for and truncate_dim cuts: unit vectors after the cut too
    prompt_tokens: int = 0  # a batch's: the prompt's tokens left out of the pooling (include_prompt False)


def read_object(path: Path) -> dict[str, Any]:
    """A module's JSON settings file, which must hold an object."""
    data = read_module_json(path)
    if not isinstance(data, dict):
        raise ModelLoadError(f"{path} holds a JSON {type(data).__name__}, not an object of settings; fix the file, "
                             "or delete the folder's modules.json.")
    return data


def max_seq_length_of(settings: dict[str, Any], path: Path) -> int | None:
    """sentence_bert_config.json's `max_seq_length`: a positive integer, or None when it sets none."""
    value = settings.get("max_seq_length")
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ModelLoadError(f"{path} has max_seq_length={value!r}; make it a positive integer or remove it.")
    return value


def _pooling_mode(config: dict, path: Path) -> str:
    mode = config.get("pooling_mode") or [m for key, m in LEGACY_MODES.items() if config.get(key)]
    modes = [mode] if isinstance(mode, str) else list(mode) if isinstance(mode, list) else [mode]
    if len(modes) != 1 or modes[0] not in ("cls", "mean"):
        raise UnsupportedModelError(f"{path} asks for pooling {modes or 'none'}; coulisse pools with 'cls' "
                                    "or 'mean'. To run the model with one of them (its vectors then differ from "
                                    "sentence-transformers'), pass pooling='cls' or 'mean' to pipeline("
                                    "'feature-extraction', ...), or --pooling cls|mean to coulisse embed or serve.")
    return modes[0]


def sentence_config(directory: Path, pooling_chosen: bool = False) -> SentenceConfig | None:
    """The sentence-transformers modules of a folder (Transformer, Pooling, Normalize), or None.
    `pooling_chosen`: the caller pools its own way, so the Pooling module's mode is not read (one coulisse does
    not run is then no error)."""
    path = directory / "modules.json"
    modules = read_modules(directory)
    if modules is None:
        return None
    pooling, normalize, settings, include_prompt = "mean", False, {}, True
    settings_path = directory / "sentence_bert_config.json"
    if any(kind == "SpladePooling" for kind, _ in modules):
        raise UnsupportedModelError(
            f"{path} describes a SPLADE sparse encoder (SpladePooling): its embeddings are one weight per "
            "vocabulary entry, from the masked-LM head. Use pipeline('sparse-embedding', ...) or "
            "coulisse.SparseEncoder.")
    for kind, folder in modules:
        if kind == "Transformer":
            if (settings_path := folder / "sentence_bert_config.json").is_file():
                settings = read_object(settings_path)
        elif kind == "Pooling":
            config = read_object(folder / "config.json")
            pooling = pooling if pooling_chosen else _pooling_mode(config, folder / "config.json")
            include_prompt = config.get("include_prompt") is not False
        elif kind == "Normalize":
            normalize = True
        else:
            raise UnsupportedModelError(
                f"{path} lists a {kind!r} module; coulisse runs Transformer, Pooling and Normalize modules only. "
                "Use sentence-transformers for this model.")
    return SentenceConfig(pooling, normalize, max_seq_length_of(settings, settings_path),
                          bool(settings.get("do_lower_case")), include_prompt)


def read_settings(directory: Path) -> dict[str, Any]:
    """`config_sentence_transformers.json` of a folder (prompts, default_prompt_name, similarity_fn_name,
    truncate_dim, a SparseEncoder's max_active_dims), or {} when it has none."""
    path = directory / SETTINGS_FILE
    if not path.is_file():
        return {}
    settings = read_json(path, fix="fix the file or delete it")
    if not isinstance(settings, dict) or not isinstance(settings.get("prompts", {}), dict):
        raise ModelLoadError(f"{path} is not a sentence-transformers settings file (prompts must be an object); "
                             "fix the file or delete it.")
    for name in ("truncate_dim", "max_active_dims"):  # the second, a SparseEncoder's
        value = settings.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ModelLoadError(f"{path} has {name}={value!r}; make it a positive integer or remove it.")
    return settings


def unit(vector: np.ndarray) -> np.ndarray:
    """torch.nn.functional.normalize's: divided by max(norm, 1e-12)."""
    return vector / max(float(np.linalg.norm(vector)), 1e-12)


def pool(hidden: np.ndarray, pooling: str, normalize: bool = False, skip: int = 0) -> np.ndarray:
    """Hidden states `(length, H)` of one unpadded input -> one vector `(H,)`, over the tokens past the first
    `skip` (a prompt's, left out). With none left, sentence-transformers' masked pooling gives the first token
    (cls) or zeros (mean)."""
    hidden = np.asarray(hidden, dtype=np.float32)
    kept = hidden[skip:]
    if not len(kept):
        vector = hidden[0] if pooling == "cls" else np.zeros(hidden.shape[-1], dtype=np.float32)
    else:
        vector = kept[0] if pooling == "cls" else kept.mean(axis=0)
    if normalize:
        vector = unit(vector)
    return vector.astype(np.float32)


def read_prompts(directory: Path) -> tuple[dict[str, str], str | None]:
    """The folder's prompts (name -> text, a null text read as "") and its default prompt's name, or None
    when it names none of them."""
    return prompts_of(read_settings(directory))


def prompts_of(settings: dict[str, Any]) -> tuple[dict[str, str], str | None]:
    """`read_prompts` from settings already read."""
    prompts = {str(k): str(v or "") for k, v in settings.get("prompts", {}).items()}
    default = settings.get("default_prompt_name")
    return prompts, default if default in prompts else None


def text_or_none(name: str, value: Any) -> str | None:
    if value is not None and not isinstance(value, str):
        raise InputError(f"{name}={value!r}; pass a string, or None.")
    return value


class FeatureExtractionPipeline(Pipeline):
    """Texts -> one vector per token (`return_tensors`, `tokenize_kwargs`), transformers' "feature-extraction";
    `coulisse.SentenceEncoder` pools them as sentence-transformers does."""

    task = "feature-extraction"
    head = None
    OPTIONS = {
        "return_tensors": Option(False, doc="torch tensors instead of nested lists"),
        "truncation": Option(True, PRE, check=truncation_option,
                             doc="cut texts past the model's limit (False: a longer text is refused)"),
        "tokenize_kwargs": Option(None, PRE, check=tokenizer_keywords,
                                  doc="a dict of truncation, max_length, add_special_tokens, padding"),
        # None: the hidden states, as transformers returns them; else one sentence embedding per input
        "pooling": Option(None, PRE, check=one_of(*POOLINGS),
                          doc="None: a vector per token (transformers); cls, mean, auto (the folder's pooling)"),
        "normalize": Option(None, PRE, check=boolean,
                            doc="scale each sentence embedding to length 1 (default: the folder's Normalize module)"),
        # transformers sets it on the tokenizer (`tokenizer.truncation_side = "left"`): keep the end; None: the
        # tokenizer's own (tokenizer_config.json's, "right" where it says nothing)
        "truncation_side": Option(None, PRE, check=one_of("right", "left"),
                                  doc="right keeps a long text's start, left its end; None: the tokenizer's"),
        # sentence-transformers' prompts (config_sentence_transformers.json): a name, or the text itself;
        # with pooling="auto" and neither, the folder's default_prompt_name applies, as in its `encode`
        "prompt_name": Option(None, PRE, check=text_or_none,
                              doc="a prompt named in config_sentence_transformers.json, put before each text"),
        "prompt": Option(None, PRE, check=text_or_none,
                         doc="a text put before each input ('' for none, over the folder's default prompt)"),
    }

    @functools.cached_property
    def settings(self) -> dict[str, Any]:
        """config_sentence_transformers.json (`read_settings`), read once, at its first use: prompts,
        truncate_dim, a SparseEncoder's max_active_dims."""
        return read_settings(self.checkpoint.directory)

    def sentence_config(self, pooling: str, normalize: bool | None) -> SentenceConfig:
        """The pooling to apply: the folder's sentence-transformers settings, with explicit options on top.
        Its `truncate_dim` applies with pooling="auto" only, as sentence-transformers applies it."""
        found = sentence_config(self.checkpoint.directory, pooling_chosen=pooling != "auto") or SentenceConfig()
        mode = found.pooling if pooling == "auto" else pooling
        asked = normalize is not None  # as encode's normalize_embeddings: after the cut, where there is one
        if normalize is None:
            normalize = found.normalize if pooling == "auto" else False
        dim = self.settings.get("truncate_dim") if pooling == "auto" else None
        return SentenceConfig(mode, bool(normalize), found.max_seq_length, found.lowercase, found.include_prompt,
                              dim, renormalize=asked and bool(normalize) and dim is not None)

    def token_limit(self, sentence: SentenceConfig) -> int:
        """Tokens an input keeps: the folder's `max_seq_length` where it sets one (read as sentence-transformers
        reads it, past the tokenizer's `model_max_length` too, up to the position table), else the tokenizer's."""
        return self.cap_length(sentence.max_seq_length) or self.tokenizer.model_max_length

    def embedding_size(self, pooling: str = "auto") -> int:
        """The length of a sentence embedding: the hidden size, cut to the folder's `truncate_dim` (pooling="auto")."""
        size, dim = self.config.hidden_size, self.sentence_config(pooling, None).truncate_dim
        return size if dim is None else min(size, dim)

    def prompt_tokens(self, prompt: str, sentence: SentenceConfig, max_length: int | None = None) -> int:
        """Tokens a prompt puts before the text: its tokens with the leading specials ([CLS]), without the
        closing one ([SEP]), as sentence-transformers counts those a Pooling with include_prompt=false skips."""
        text = prompt.lower() if sentence.lowercase else prompt
        encoding = self.tokenizer.encode_batch([text], max_length=self.cap_length(max_length))[0]
        closing = bool(encoding.special_tokens_mask) and encoding.special_tokens_mask[-1] == 1
        return len(encoding.ids) - int(closing)

    def prompt_text(self, pooling: str | None, prompt_name: str | None = None, prompt: str | None = None) -> str:
        """What goes before each text: `prompt`, else the folder's `prompts[prompt_name]`, else (pooling="auto")
        its default prompt, else nothing. sentence-transformers' rule, so pooling="auto" equals its `encode`."""
        if prompt is not None:
            if prompt_name is not None:
                log.warning("both prompt and prompt_name given; prompt_name=%r is ignored.", prompt_name)
            return prompt
        if prompt_name is None and pooling != "auto":
            return ""
        prompts, default = prompts_of(self.settings)
        if prompt_name is None:
            return prompts[default] if default else ""
        if prompt_name not in prompts:
            known = ", ".join(repr(p) for p in sorted(prompts)) or "none"
            raise InputError(f"prompt_name={prompt_name!r} is not a prompt of this model "
                             f"({SETTINGS_FILE} has {known}); pass one of those, or prompt='...' for your own.")
        return prompts[prompt_name]

    def resolve_options(self, options: dict[str, Any], given: dict[str, Any]) -> dict[str, Any]:
        if "truncation" in given and "truncation" in (options["tokenize_kwargs"] or {}):
            raise InputError("truncation is given twice, as a keyword and in tokenize_kwargs; pass it once.")
        if options["pooling"] is None and options["normalize"]:
            raise InputError("normalize=True needs a sentence embedding; pass pooling='auto', 'mean' or "
                             "'cls'.")
        return options

    def preprocess(self, inputs: Any, truncation: bool | str = True, pooling: str | None = None,
                   normalize: bool | None = None, tokenize_kwargs: dict | None = None,
                   truncation_side: str | None = None, prompt_name: str | None = None,
                   prompt: str | None = None) -> Batch:
        """Texts -> ids. With pooling, the sentence-transformers settings apply here (the prompt, lowercasing,
        their `max_seq_length`: 256 for all-MiniLM-L6-v2) and travel in the batch to postprocess."""
        texts, single = check_texts(inputs)
        kwargs = tokenize_kwargs or {}
        truncation = kwargs.get("truncation", truncation)
        sentence, max_length = None, kwargs.get("max_length")
        if text := self.prompt_text(pooling, prompt_name, prompt):
            texts = [text + t for t in texts]
        if pooling is not None:
            sentence = self.sentence_config(pooling, normalize)
            if sentence.max_seq_length and max_length is None:  # a given max_length overrides the folder's
                max_length = sentence.max_seq_length
            if text and not sentence.include_prompt:  # the Pooling leaves the prompt's tokens out (INSTRUCTOR)
                sentence = replace(sentence, prompt_tokens=self.prompt_tokens(text, sentence, max_length))
            texts = [t.lower() for t in texts] if sentence.lowercase else texts
        encodings = self.tokenizer.encode_batch(
            texts, truncation=bool(truncation), max_length=self.cap_length(max_length),
            add_special_tokens=kwargs.get("add_special_tokens", True),
            strategy=truncation if isinstance(truncation, str) else "longest_first", direction=truncation_side)
        return Batch([Item(e.ids, e.type_ids) for e in encodings], texts, single, context=sentence)

    def postprocess(self, outputs: Any, batch: Batch | None = None, *, return_tensors: bool = False,
                    pooling: SentenceConfig | None = None):
        """Hidden states `(length, H)` per input -> `[1][length][H]` lists (or `(1, length, H)` tensors);
        with the batch's pooling, one `[H]` vector (or an `(H,)` tensor) per input. One array alone (no
        batch) gives that input's result."""
        if batch is None:
            return self._result(outputs, return_tensors, pooling)
        results = [self._result(hidden, return_tensors, batch.context) for hidden in outputs]
        return results[0] if batch.single else results

    @staticmethod
    def _result(hidden: np.ndarray, return_tensors: bool, pooling: SentenceConfig | None):
        if pooling is None:
            array = np.asarray(hidden, dtype=np.float32)[None]
        else:  # sentence-transformers' order: Pooling (past the prompt's tokens it leaves out), Normalize, the cut,
            # then encode's normalize_embeddings
            array = pool(hidden, pooling.pooling, pooling.normalize, pooling.prompt_tokens)[:pooling.truncate_dim]
            array = unit(array).astype(np.float32) if pooling.renormalize else array
        if return_tensors:
            import torch

            return torch.from_numpy(array)
        return array.tolist()

"""Encoder configuration: the fields of `config.json` that inference needs, nothing else."""

from __future__ import annotations

import copy
import json
import logging
import re
import reprlib
import stat
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from coulisse.errors import ModelLoadError, UnsafeCheckpointError, UnsupportedModelError
from coulisse.families import FAMILIES, Family

log = logging.getLogger(__name__)


@dataclass
class EncoderConfig:
    model_type: str
    vocab_size: int
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    pad_token_id: int = 0
    # Word vectors narrower than the encoder (ELECTRA) are projected up to hidden_size; None: hidden_size.
    embedding_size: int | None = None
    pre_norm: bool = False  # LayerNorm before attention and feed-forward (an XLM / FlauBERT option)
    # transformers' "sequence summary" classifier (XLM, FlauBERT): which token, projection, activation.
    summary_type: str = "first"
    summary_use_proj: bool = True
    summary_proj_to_labels: bool = True
    summary_activation: str | None = None
    architectures: list[str] = field(default_factory=list)
    id2label: dict[int, str] = field(default_factory=dict)
    label2id: dict[str, int] = field(default_factory=dict)
    problem_type: str | None = None
    tokenizer_class: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def family(self) -> Family:
        """This model type's row of the family table (`coulisse.families`)."""
        return FAMILIES[self.model_type]

    def __getattr__(self, name: str) -> Any:
        """A key of config.json that coulisse does not read (`hidden_dropout_prob`, `bos_token_id`...), as
        transformers' config answers it. Only for names that are not fields (Python looks there first)."""
        raw = self.__dict__.get("raw")
        if raw is not None and name in raw and not name.startswith("_"):
            return copy.deepcopy(raw[name])
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r} (config.json has no such "
                             "key)")

    def to_dict(self) -> dict[str, Any]:
        """config.json as read (a copy), as transformers' `config.to_dict()` gives the file's settings."""
        return copy.deepcopy(self.raw)

    @property
    def position_offset(self) -> int:
        """RoBERTa-family models number positions from pad_token_id + 1 (MPNet from its fixed padding index + 1)."""
        if not self.family.positions_from_pad:
            return 0
        return (self.pad_token_id if self.family.padding_idx is None else self.family.padding_idx) + 1

    @property
    def max_positions(self) -> int:
        """Longest sequence (special tokens included) the position table can embed."""
        return self.max_position_embeddings - self.position_offset

    @property
    def position_limit(self) -> int | None:
        """Longest input the model runs: its position table's, or None where it reads no absolute positions
        (DeBERTa-v2 with `position_biased_input: false`: relative buckets only, any length)."""
        flag = self.family.absolute_positions_flag
        if flag is not None and self.raw.get(flag, True) is False:
            return None
        return self.max_positions

    @property
    def num_labels(self) -> int:
        return len(self.id2label)

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EncoderConfig:
        model_type = data.get("model_type")
        if not isinstance(model_type, str) or model_type not in FAMILIES:
            raise UnsupportedModelError(
                f"unsupported model_type {_shown(model_type)} in config.json; coulisse runs "
                f"{', '.join(sorted(FAMILIES))}. Use a checkpoint of one of these families."
            )
        d = _family_fields(FAMILIES[model_type], data)
        id2label = _labels(d.get("id2label"), "id2label", int, str)
        label2id = _labels(d.get("label2id"), "label2id", str, int)
        num_labels = d.get("num_labels")
        if id2label and isinstance(num_labels, int) and not isinstance(num_labels, bool) \
                and num_labels != len(id2label):
            # transformers 5 takes num_labels and names the labels LABEL_i (a hand-edited config): so does coulisse,
            # and says which field to fix
            log.warning("config.json says num_labels %d but names %d labels in id2label (%s); as transformers, "
                        "coulisse takes num_labels and calls them LABEL_0..LABEL_%d. Fix the field that is wrong.",
                        num_labels, len(id2label), ", ".join(list(id2label.values())[:5]), num_labels - 1)
            id2label, label2id = {}, {}
        if not id2label:
            id2label = {i: f"LABEL_{i}" for i in range(2 if num_labels is None else num_labels)}
        label2id = label2id or {v: k for k, v in id2label.items()}
        known = {f for f in cls.__dataclass_fields__ if f not in {"raw", "id2label", "label2id"}}
        kwargs = {k: v for k, v in d.items() if k in known and v is not None}
        if model_type != "electra":  # transformers' ELECTRA reads it (DeBERTa-v2 through its own options); a
            kwargs.pop("embedding_size", None)  # stray one in a BERT or RoBERTa config.json is ignored there too
        try:
            config = cls(**kwargs, id2label=id2label, label2id=label2id, raw=data)
        except TypeError as e:  # pragma: no cover - dataclass field errors
            raise ModelLoadError(f"config.json has an invalid field: {e}") from e
        if config.max_positions < 1:  # RoBERTa's positions start past the padding id
            start = "pad_token_id + 1" if config.family.padding_idx is None else "its padding index + 1"
            raise _config_error("max_position_embeddings", config.max_position_embeddings,
                                f"more than {start} = {config.position_offset} ({model_type} numbers "
                                "positions from there)")
        return config

    @classmethod
    def from_file(cls, path: Path) -> EncoderConfig:
        path = Path(path)
        text = ""
        try:
            status = path.stat()
            if not stat.S_ISREG(status.st_mode):  # a FIFO would block the read forever, a folder fail it
                raise ModelLoadError(f"config.json at {path} is not a regular file; a checkpoint's config.json is "
                                     "one (save it with `model.config.save_pretrained(dir)`).")
            size = status.st_size
            if size <= MAX_CONFIG_BYTES:  # else refused below, outside this try (the error is a ValueError too)
                text = path.read_text(encoding="utf-8")
                data = json.loads(text)
        except ModelLoadError:  # not a regular file (a ValueError: kept from the handlers below)
            raise
        except FileNotFoundError as e:
            raise ModelLoadError(
                f"no config.json in {path.parent}; a checkpoint directory needs one "
                "(save it with `model.config.save_pretrained(dir)`)."
            ) from e
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ModelLoadError(f"config.json at {path} is not valid JSON: {e}") from e
        except OSError as e:  # a folder named config.json, no permission...
            raise ModelLoadError(f"could not read config.json at {path} ({e.strerror or e}); check that it is a "
                                 "readable file.") from e
        except ValueError as e:  # an integer past Python's digit limit (4,300 by default)
            raise UnsafeCheckpointError(
                f"config.json at {path} is refused: it has {huge_integer(text)}, past Python's limit of "
                f"{digit_limit():,} digits; no config value needs more than 10. Fix config.json or download the "
                "checkpoint again."
            ) from e
        except RecursionError as e:
            raise UnsafeCheckpointError(
                f"config.json at {path} is refused: its JSON nests deeper than the parser allows (about "
                f"{sys.getrecursionlimit():,} levels), where a config is 3 levels deep. Fix config.json or "
                "download the checkpoint again."
            ) from e
        if size > MAX_CONFIG_BYTES:
            raise UnsafeCheckpointError(
                f"config.json at {path} is refused: it holds {size:,} bytes, more than the "
                f"{MAX_CONFIG_BYTES:,} a config needs even with {INT_RANGES['num_labels'][1]:,} labels; fix it "
                "or download the checkpoint again."
            )
        if not isinstance(data, dict):
            raise ModelLoadError(f"config.json at {path} must hold a JSON object, got {type(data).__name__}")
        return cls.from_dict(data)


def _family_fields(family: Family, data: dict[str, Any]) -> dict[str, Any]:
    """config.json with the family's spellings mapped onto our field names, then its defaults: a field
    named ours wins over the family's key for it (unless the family reads only its own: `config_keys_only`),
    which wins over the default."""
    d = dict(data)
    for ours, theirs in family.config_keys.items():
        if family.config_keys_only:
            d.pop(ours, None)
        if ours not in d and theirs in d:
            d[ours] = d[theirs]
    for key, value in family.config_defaults.items():
        d.setdefault(key, value)
    for flag in family.decoder_flags:
        if d.get(flag):
            what = ("runs this checkpoint as a decoder (causal attention, each token reading only those before it)"
                    if flag == "is_decoder" else "gives this checkpoint a decoder's cross-attention layers (and "
                    "refuses it without is_decoder)")
            raise UnsupportedModelError(
                f"config.json has {flag} = {_shown(d[flag])}: transformers {what}, where coulisse runs "
                f"{family.model_type} encoders, every token reading the whole text. Use an encoder checkpoint "
                f"({flag} false or absent).")
    # Errors name a field as this file spells it (DistilBERT's "activation", not our "hidden_act").
    spelled = {ours: theirs for ours, theirs in family.config_keys.items() if theirs in data
               and (family.config_keys_only or ours not in data)}
    check_config_ranges(d, spelled)  # before config_fields computes from them (4 * a 10^6-element list...)
    if family.config_fields is not None:
        for key, value in family.config_fields(d).items():
            d.setdefault(key, value)
        check_config_ranges(d, spelled)
    return d


# The activations the model code implements (models/bert.py's ACTIVATIONS, plus DeBERTa's tanh).
# transformers' names: "gelu_python" is erf GELU as "gelu"; "gelu_fast" the tanh approximation as "gelu_new"
ACTIVATION_NAMES = frozenset({"gelu", "gelu_python", "gelu_new", "gelu_fast", "gelu_pytorch_tanh", "relu", "silu",
                              "swish", "tanh"})

# Generous bounds covering every released encoder, checked before anything is allocated: a config.json
# declaring 10^9 labels or 10^7 layers must fail at once instead of exhausting memory. The five after
# pad_token_id are DeBERTa-v2's (read from the raw config; -1 or 0 means "unset" for the first two), then
# MPNet's (the rows of its relative-position table), then ModernBERT's.
INT_RANGES = {
    "num_labels": (0, 100_000),
    "num_hidden_layers": (1, 1_000),
    "num_attention_heads": (1, 1_024),
    "hidden_size": (1, 65_536),
    "intermediate_size": (1, 262_144),
    "embedding_size": (1, 65_536),
    "vocab_size": (1, 4_000_000),
    "max_position_embeddings": (1, 131_072),
    "type_vocab_size": (0, 65_536),
    "pad_token_id": (-1, 4_000_000),
    "max_relative_positions": (-1, 131_072),
    "position_buckets": (-1, 131_072),
    "conv_kernel_size": (0, 1_024),
    "conv_groups": (1, 65_536),
    "pooler_hidden_size": (1, 65_536),
    "relative_attention_num_buckets": (1, 131_072),
    "local_attention": (0, 262_144),
    "global_attn_every_n_layers": (1, 1_000),
}
BOOL_FIELDS = ("pre_norm", "summary_use_proj", "summary_proj_to_labels", "position_biased_input",
               "relative_attention", "share_att_key", "legacy", "norm_bias", "attention_bias", "mlp_bias",
               "classifier_bias", "decoder_bias")
TEXT_FIELDS = ("summary_type", "summary_activation", "problem_type", "tokenizer_class", "pos_att_type",
               "norm_rel_ebd", "conv_act", "pooler_hidden_act", "classifier_pooling", "classifier_activation")
# The largest released encoders hold 10 to 15 B parameters (XLM-RoBERTa-XXL 10.7 B; ESM-2, a protein model,
# 15 B): 20 B admits every real one, and refuses sizes that each pass their own range but multiply out to more.
MAX_PARAMETERS = 20_000_000_000
# 100,000 labels with names of ~60 characters, in both id2label and label2id, take about 14 MB.
MAX_CONFIG_BYTES = 32 << 20


# Shows a config value in a message: depth and length capped (a value may be 900 levels deep or hold 10^5 items).
_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxdict, _REPR.maxlist, _REPR.maxstring, _REPR.maxlong, _REPR.maxother = 3, 4, 4, 40, 24, 40


def huge_integer(text: str) -> str:
    """What in a JSON text holds an integer past Python's digit limit, in words: `num_labels =
    999999999999... (5,000 digits)`, found by its key, else "an integer of thousands of digits"."""
    found = re.search(r'"((?:[^"\\]|\\.){0,60})"\s*:\s*-?(\d{1000,})', text)
    return f"{found.group(1)} = {found.group(2)[:12]}... ({len(found.group(2)):,} digits)" if found \
        else "an integer of thousands of digits"


def digit_limit() -> int:
    """Python's limit on the digits of an int read from text (4,300 by default)."""
    return getattr(sys, "get_int_max_str_digits", lambda: 4300)()


def _shown(value: Any) -> str:
    text = _REPR.repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _config_error(key: str, value: Any, wanted: str) -> UnsafeCheckpointError:
    return UnsafeCheckpointError(f"config.json has {key} = {_shown(value)}; expected {wanted}. Fix config.json or "
                                 "download the checkpoint again.")


def check_config_ranges(d: dict[str, Any], spelled: dict[str, str] | None = None) -> None:
    """Refuse wrong types and out-of-range sizes, in place turning integral floats (`2.0`) into ints; then
    the parameter count the sizes multiply out to. `spelled`: our field name -> the key config.json used for
    it, where that differs (what an error names)."""
    name = (spelled or {}).get
    for key, (low, high) in INT_RANGES.items():
        value = d.get(key)
        if value is None:
            continue
        if isinstance(value, float) and value.is_integer() and low <= value <= high:
            value = d[key] = int(value)
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise _config_error(name(key, key), value, f"an integer from {low:,} to {high:,}")
    hidden, heads = d.get("hidden_size"), d.get("num_attention_heads")
    if hidden is not None and heads is not None and hidden % heads:
        raise _config_error(name("num_attention_heads", "num_attention_heads"), heads,
                            f"a divisor of {name('hidden_size', 'hidden_size')} ({hidden})")
    act = d.get("hidden_act")
    if act is not None and (not isinstance(act, str) or act not in ACTIVATION_NAMES):
        raise UnsupportedModelError(f"config.json has {name('hidden_act', 'hidden_act')} = {_shown(act)}, which "
                                    f"coulisse does not implement; supported: {', '.join(sorted(ACTIVATION_NAMES))}. "
                                    "Use a checkpoint with one of these.")
    positions = d.get("position_embedding_type")
    if positions is not None and positions != "absolute":  # BERT/RoBERTa/ELECTRA's relative_key(_query)
        raise UnsupportedModelError(f"config.json has position_embedding_type = {_shown(positions)}; coulisse "
                                    "implements absolute position embeddings only. Use a checkpoint with "
                                    "\"absolute\" (the default).")
    _check_types(d)
    parameters = parameter_floor(d)
    if parameters > MAX_PARAMETERS:
        sizes = ", ".join(f"{k} = {_field(d, k):,}" for k in ("vocab_size", "hidden_size", "num_hidden_layers",
                                                              "intermediate_size"))
        raise UnsafeCheckpointError(
            f"config.json describes an encoder of at least {parameters:,} parameters ({sizes}); expected at most "
            f"{MAX_PARAMETERS:,}, more than any released encoder. Fix config.json or download the "
            "checkpoint again."
        )


def _check_types(d: dict[str, Any]) -> None:
    eps = d.get("layer_norm_eps")
    if eps is not None and (isinstance(eps, bool) or not isinstance(eps, (int, float)) or not 0 < eps < 1):
        raise _config_error("layer_norm_eps", eps, "a number between 0 and 1 (real ones: 1e-12 to 1e-5)")
    for key in BOOL_FIELDS:
        value = d.get(key)
        if value is not None and not isinstance(value, bool) and value not in (0, 1):
            raise _config_error(key, value, "true or false")
    for key in TEXT_FIELDS:
        value = d.get(key)
        if value is not None and not isinstance(value, str) and not (
                key == "pos_att_type" and isinstance(value, list) and all(isinstance(v, str) for v in value)):
            raise _config_error(key, value, "a string" + (" or a list of strings" if key == "pos_att_type" else ""))
    archs = d.get("architectures")
    if archs is not None and not (isinstance(archs, list) and all(isinstance(a, str) for a in archs)):
        raise _config_error("architectures", archs, "a list of class names")


def _field(d: dict[str, Any], key: str) -> int:
    """A size as the model will see it: config.json's value, else EncoderConfig's default."""
    value = d.get(key)
    if value is None:
        default = EncoderConfig.__dataclass_fields__[key].default
        return default if isinstance(default, int) else 0
    return value


def parameter_floor(d: dict[str, Any]) -> int:
    """A lower bound on the parameters these sizes make in any family: the embedding tables (word, position,
    token type), then per layer the four attention projections and the two feed-forward matrices."""
    hidden, vocab = _field(d, "hidden_size"), _field(d, "vocab_size")
    width = d.get("embedding_size") or hidden
    layers, ffn = _field(d, "num_hidden_layers"), _field(d, "intermediate_size")
    positions, types = _field(d, "max_position_embeddings"), _field(d, "type_vocab_size")
    return vocab * width + (positions + types) * hidden + layers * (4 * hidden * hidden + 2 * hidden * ffn)


def _labels(table: Any, name: str, key_type: type, value_type: type) -> dict:
    """id2label or label2id, keys and values converted; a key or value that does not convert is refused, and
    id2label's ids must be 0 to n - 1 (the head's output rows)."""
    if not table:
        return {}
    if not isinstance(table, dict) or len(table) > INT_RANGES["num_labels"][1]:
        raise _config_error(name, table, f"an object of at most {INT_RANGES['num_labels'][1]:,} labels")
    out = {}
    for k, v in table.items():
        try:
            if isinstance(v, (dict, list, bool)) or v is None or (value_type is int and v != int(v)):
                raise TypeError(v)
            out[key_type(k)] = value_type(v)
        except (TypeError, ValueError) as e:
            raise _config_error(name, {k: v}, f"{key_type.__name__} keys and {value_type.__name__} values") from e
    if key_type is int and sorted(out) != list(range(len(out))):
        raise _config_error(name, table, f"ids 0 to {len(out) - 1}, one per output of the classifier")
    return out

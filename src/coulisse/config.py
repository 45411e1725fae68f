"""Encoder configuration: the fields of `config.json` that inference needs, nothing else."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from coulisse.errors import ModelLoadError, UnsafeCheckpointError, UnsupportedModelError
from coulisse.families import FAMILIES, Family


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

    @property
    def position_offset(self) -> int:
        """RoBERTa-family models number positions from pad_token_id + 1."""
        return self.pad_token_id + 1 if self.family.positions_from_pad else 0

    @property
    def max_positions(self) -> int:
        """Longest sequence (special tokens included) the position table can embed."""
        return self.max_position_embeddings - self.position_offset

    @property
    def num_labels(self) -> int:
        return len(self.id2label)

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EncoderConfig:
        model_type = data.get("model_type")
        if model_type not in FAMILIES:
            raise UnsupportedModelError(
                f"unsupported model_type {model_type!r} in config.json; coulisse runs "
                f"{', '.join(sorted(FAMILIES))}. Use a checkpoint of one of these families."
            )
        d = _family_fields(FAMILIES[model_type], data)
        check_config_ranges(d)
        id2label = _labels(d.get("id2label"), "id2label", int, str)
        if not id2label:
            id2label = {i: f"LABEL_{i}" for i in range(2 if d.get("num_labels") is None else d["num_labels"])}
        label2id = _labels(d.get("label2id"), "label2id", str, int) or {v: k for k, v in id2label.items()}
        known = {f for f in cls.__dataclass_fields__ if f not in {"raw", "id2label", "label2id"}}
        kwargs = {k: v for k, v in d.items() if k in known and v is not None}
        try:
            return cls(**kwargs, id2label=id2label, label2id=label2id, raw=data)
        except TypeError as e:  # pragma: no cover - dataclass field errors
            raise ModelLoadError(f"config.json has an invalid field: {e}") from e

    @classmethod
    def from_file(cls, path: Path) -> EncoderConfig:
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError as e:
            raise ModelLoadError(
                f"no config.json in {path.parent}; a checkpoint directory needs one "
                "(save it with `model.config.save_pretrained(dir)`)."
            ) from e
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ModelLoadError(f"config.json at {path} is not valid JSON: {e}") from e
        except ValueError as e:  # an integer past Python's digit limit
            raise UnsafeCheckpointError(f"config.json at {path} is refused: {e}") from e
        except RecursionError as e:
            raise UnsafeCheckpointError(
                f"config.json at {path} is refused: its JSON nests too deeply to parse") from e
        if not isinstance(data, dict):
            raise ModelLoadError(f"config.json at {path} must hold a JSON object, got {type(data).__name__}")
        return cls.from_dict(data)


def _family_fields(family: Family, data: dict[str, Any]) -> dict[str, Any]:
    """config.json with the family's spellings mapped onto our field names, then its defaults: a field
    named ours wins over the family's key for it, which wins over the default."""
    d = dict(data)
    for ours, theirs in family.config_keys.items():
        if ours not in d and theirs in d:
            d[ours] = d[theirs]
    for key, value in family.config_defaults.items():
        d.setdefault(key, value)
    if family.config_fields is not None:
        for key, value in family.config_fields(d).items():
            d.setdefault(key, value)
    return d


# The activations the model code implements (models/bert.py's ACTIVATIONS, plus DeBERTa's tanh).
ACTIVATION_NAMES = frozenset({"gelu", "gelu_new", "gelu_pytorch_tanh", "relu", "silu", "swish", "tanh"})

# Generous bounds covering every released encoder, checked before anything is allocated: a config.json
# declaring 10^9 labels or 10^7 layers must fail at once instead of exhausting memory.
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
}


def _config_error(key: str, value: Any, wanted: str) -> UnsafeCheckpointError:
    shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
    return UnsafeCheckpointError(f"config.json has {key} = {shown}; expected {wanted}. Fix config.json or "
                                 "download the checkpoint again.")


def check_config_ranges(d: dict[str, Any]) -> None:
    """Refuse out-of-range sizes, in place turning integral floats (`2.0`) into ints."""
    for key, (low, high) in INT_RANGES.items():
        value = d.get(key)
        if value is None:
            continue
        if isinstance(value, float) and value.is_integer() and low <= value <= high:
            value = d[key] = int(value)
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise _config_error(key, value, f"an integer from {low:,} to {high:,}")
    hidden, heads = d.get("hidden_size"), d.get("num_attention_heads")
    if hidden is not None and heads is not None and hidden % heads:
        raise _config_error("num_attention_heads", heads, f"a divisor of hidden_size ({hidden})")
    act = d.get("hidden_act")
    if act is not None and (not isinstance(act, str) or act not in ACTIVATION_NAMES):
        raise UnsupportedModelError(f"config.json has hidden_act = {str(act)[:60]!r}, which coulisse does not "
                                    f"implement; supported: {', '.join(sorted(ACTIVATION_NAMES))}.")


def _labels(table: Any, name: str, key_type: type, value_type: type) -> dict:
    """id2label or label2id, keys and values converted; a key or value that does not convert is refused."""
    if not table:
        return {}
    if not isinstance(table, dict) or len(table) > INT_RANGES["num_labels"][1]:
        raise _config_error(name, table, f"an object of at most {INT_RANGES['num_labels'][1]:,} labels")
    out = {}
    for k, v in table.items():
        try:
            out[key_type(k)] = value_type(v)
        except (TypeError, ValueError) as e:
            raise _config_error(name, {k: v}, f"{key_type.__name__} keys and {value_type.__name__} values") from e
    return out

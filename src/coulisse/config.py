"""Encoder configuration: the fields of `config.json` that inference needs, nothing else."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from coulisse.errors import ModelLoadError, UnsupportedModelError

# model_type -> family module in coulisse.models
FAMILIES = {
    "bert": "bert",
    "roberta": "bert",
    "camembert": "bert",
    "xlm-roberta": "bert",
    "distilbert": "distilbert",
}
ROBERTA_LIKE = {"roberta", "camembert", "xlm-roberta"}


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
    # DistilBERT spells some of these differently; from_dict maps them.
    sinusoidal_pos_embds: bool = False
    architectures: list[str] = field(default_factory=list)
    id2label: dict[int, str] = field(default_factory=dict)
    label2id: dict[str, int] = field(default_factory=dict)
    problem_type: str | None = None
    tokenizer_class: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def family(self) -> str:
        return FAMILIES[self.model_type]

    @property
    def position_offset(self) -> int:
        """RoBERTa-family models number positions from pad_token_id + 1."""
        return self.pad_token_id + 1 if self.model_type in ROBERTA_LIKE else 0

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
        d = dict(data)
        if model_type == "distilbert":
            d.setdefault("hidden_size", d.get("dim", 768))
            d.setdefault("num_hidden_layers", d.get("n_layers", 6))
            d.setdefault("num_attention_heads", d.get("n_heads", 12))
            d.setdefault("intermediate_size", d.get("hidden_dim", 3072))
            d.setdefault("hidden_act", d.get("activation", "gelu"))
            d["type_vocab_size"] = 0
            d.setdefault("layer_norm_eps", 1e-12)
        id2label = {int(k): str(v) for k, v in (d.get("id2label") or {}).items()}
        if not id2label:
            n = int(d.get("num_labels", 2))
            id2label = {i: f"LABEL_{i}" for i in range(n)}
        label2id = {str(k): int(v) for k, v in (d.get("label2id") or {}).items()} or {
            v: k for k, v in id2label.items()
        }
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
        if not isinstance(data, dict):
            raise ModelLoadError(f"config.json at {path} must hold a JSON object, got {type(data).__name__}")
        return cls.from_dict(data)

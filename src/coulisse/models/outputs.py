"""`ModelOutput`, what `model(**inputs)` returns: transformers' output objects as a course reads them (by
attribute, by name, by position, printed), with an error naming the model that gives a field this output lacks.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

from torch import Tensor

# Fields one kind of output has and another lacks: a base model's last_hidden_state, a head's logits, a QA head's
# start and end logits. Unset, reading one is an AttributeError that says which model gives it (as transformers'
# outputs, which lack the attribute), not a None that fails a line later ('NoneType' has no attribute 'softmax').
_KIND_FIELDS = frozenset({"last_hidden_state", "logits", "start_logits", "end_logits"})


@dataclass(eq=False)
class ModelOutput:
    """What `model(**inputs)` returns: hidden states `(B, L, H)` for a base model, logits for a head; asked for,
    every layer's hidden states and attention probabilities. Read like transformers' outputs: by attribute, by
    name or by position over the fields that are set (`out[0]`, `out["logits"]`, `keys()`, `to_tuple()`), in its
    order: logits (or last_hidden_state), hidden_states, attentions; a head's output with output_hidden_states
    also holds the encoder's last_hidden_state, last (`coulisse explain` shows stage 2 apart from the head).
    A question-answering head's output reads as transformers' does, `start_logits` and `end_logits` `(B, L)` in
    place of logits (its `logits` attribute, `(B, L, 2)`, stays)."""

    last_hidden_state: Tensor | None = None
    logits: Tensor | None = None
    hidden_states: tuple[Tensor, ...] | None = None
    attentions: tuple[Tensor, ...] | None = None
    start_logits: Tensor | None = None
    end_logits: Tensor | None = None

    def __getattribute__(self, name: str):
        value = object.__getattribute__(self, name)
        if value is None and name in _KIND_FIELDS and sys._getframe(1).f_globals.get("__name__") != "dataclasses":
            raise AttributeError(name)  # __getattr__ says which model gives it; dataclasses.asdict/replace see None
        return value

    def _missing(self, name: str) -> str:
        fields = self.__dict__
        if fields["logits"] is None and fields["last_hidden_state"] is None:
            return f"this output has no {name}: it holds neither a base model's last_hidden_state nor a head's logits."
        if name == "logits" or (name in ("start_logits", "end_logits") and fields["logits"] is None):
            hidden = fields["last_hidden_state"]
            shape = f" {tuple(hidden.shape)}" if hidden is not None else ""
            return (f"this output has no {name}: it is a base model's, whose output is last_hidden_state{shape}, "
                    "one vector per token. A task head computes logits: load the model with its head "
                    "(AutoModelForSequenceClassification.from_pretrained(...), or pipeline(task, model=...)).")
        if name in ("start_logits", "end_logits"):
            return (f"this output has no {name}: they are a question-answering head's; this head gives logits "
                    f"{tuple(fields['logits'].shape)}.")
        return ("this output has no last_hidden_state: it is a head's, whose output is logits "
                f"{tuple(fields['logits'].shape)}. Pass output_hidden_states=True to model(...) for the encoder's "
                "last_hidden_state beside them, or load AutoModel for the base model alone.")

    def keys(self) -> list[str]:
        fields = self.__dict__
        if fields["start_logits"] is not None:
            order: tuple[str, ...] = ("start_logits", "end_logits", "hidden_states", "attentions",
                                      "last_hidden_state")
        elif fields["logits"] is not None:
            order = ("logits", "hidden_states", "attentions", "last_hidden_state")
        else:
            order = ("last_hidden_state", "hidden_states", "attentions")
        return [name for name in order if fields[name] is not None]

    def values(self) -> list:
        return [self.__dict__[name] for name in self.keys()]

    def items(self) -> list[tuple[str, object]]:
        return [(name, self.__dict__[name]) for name in self.keys()]

    def to_tuple(self) -> tuple:
        return tuple(self.values())

    def __getitem__(self, key: int | slice | str):
        if isinstance(key, str):
            if key not in self.keys():
                raise KeyError(f"{key!r}; this output holds {', '.join(self.keys())}")
            return getattr(self, key)
        return self.to_tuple()[key]

    def __iter__(self):
        return iter(self.keys())

    def __getattr__(self, name: str):  # for names that are not fields, and a kind's field left unset
        if name in _KIND_FIELDS:
            raise AttributeError(self._missing(name))
        if name == "loss":  # transformers' outputs hold a loss only when labels are given; coulisse takes none
            return None
        if name == "pooler_output":  # transformers' BERT / RoBERTa / MPNet base models return it; coulisse does not
            raise AttributeError(
                "pooler_output is not computed: coulisse's base model returns last_hidden_state (and its pooler's "
                "tanh layer was trained for next-sentence prediction, not as a sentence embedding). Take "
                "out.last_hidden_state[:, 0] for the first token, or coulisse.SentenceEncoder for embeddings.")
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __len__(self) -> int:
        return len(self.keys())

    def __contains__(self, key: object) -> bool:
        return key in self.keys()

    def __repr__(self) -> str:
        """The fields that are set, as transformers prints its outputs (a learner's `print(outputs)`)."""
        return f"{type(self).__name__}({', '.join(f'{name}={value!r}' for name, value in self.items())})"

"""The named special tokens (bos, eos, unk, sep, pad, cls, mask), as transformers 5 names them.

Which token loading finds for each name (the settings', else the tokenizer class's, else the vocabulary's
spelling), which token a user may set one to (one the vocabulary holds), the special tokens the vocabulary holds
in transformers' order, and the properties a tokenizer answers by (`tokenizer.pad_token`, `pad_token_id`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tokenizers import Tokenizer as Backend

from coulisse.errors import InputError, type_of
from coulisse.tokenizer.added_tokens import model_specific_tokens

if TYPE_CHECKING:  # the tokenizer's properties are made here
    from coulisse.tokenizer.tokenizer import Tokenizer

# The vocabulary's spellings of each name, in the order they are looked for, where neither the settings nor a
# known family name one; WordPiece models have no bos / eos in transformers (their [CLS] and [SEP] are cls and
# sep only).
SPELLINGS = {"bos": ["<s>"], "eos": ["</s>"], "unk": ["<unk>", "[UNK]"], "sep": ["</s>", "[SEP]"],
             "pad": ["<pad>", "[PAD]"], "cls": ["<s>", "[CLS]"], "mask": ["<mask>", "[MASK]"]}


def token_of_settings(name: str, settings: dict, family_specials: dict, backend: Backend) -> str | None:
    """The `name` special token of a tokenizer's `settings` (`Tokenizer.loaded_special`); `family_specials` are
    its tokenizer class's names for them."""
    if f"{name}_token" in settings and settings[f"{name}_token"] is None:
        return None
    value = settings.get(f"{name}_token")
    if isinstance(value, dict):
        value = value.get("content")
    if value is None and name in family_specials:
        # transformers' tokenizer class names it where the settings do not (BERT's has no bos / eos), also
        # when the vocabulary holds another family's spelling too (a BERT vocabulary with `<s>` added)
        value = family_specials[name]
        if value is None or backend.token_to_id(value) is not None:
            return value
        value = None
    if value is None:
        value = next((v for v in SPELLINGS[name] if backend.token_to_id(v) is not None), None)
    return value


def checked_token(name: str, value: Any, backend: Backend) -> str | None:
    """What `tokenizer.<name>_token = value` sets: a token the vocabulary holds (a str, or an AddedToken), or
    None; an InputError for anything else."""
    content = getattr(value, "content", value)  # tokenizers' / transformers' AddedToken
    if content is not None and not isinstance(content, str):
        raise InputError(f"{name}_token must be a string (a token of the vocabulary) or None, got "
                         f"{type_of(value)}.")
    if content is not None and backend.token_to_id(content) is None:
        raise InputError(f"{name}_token={content!r} is not in the vocabulary: transformers would add it as a new "
                         "token, but coulisse has no add_tokens (the model has no embedding for it); pick a token "
                         f"the vocabulary holds (e.g. tokenizer.{name}_token = tokenizer.eos_token).")
    return content


def special_tokens_held(named: dict[str, str | None], settings: dict, family_extras: tuple,
                        backend: Backend) -> list[str]:
    """`Tokenizer.all_special_tokens`: the `named` ones, a config's own `*_token`s, then the extra ones (the
    settings' `extra_special_tokens`, else `family_extras`), each once, where the vocabulary holds it."""
    extras = [t.get("content") if isinstance(t, dict) else t
              for t in settings.get("extra_special_tokens") or family_extras]
    tokens = [*named.values(), *model_specific_tokens(settings).values(), *extras]
    return list(dict.fromkeys(t for t in tokens if isinstance(t, str) and backend.token_to_id(t) is not None))


def token_property(name: str) -> property:
    def setter(self: Tokenizer, value: Any) -> None:
        self._set_special(name, value)

    return property(lambda self: self.special_tokens[name], setter,
                    doc=f"The {name} token, or None; may be set to a token of the vocabulary (or None).")


def token_id_property(name: str) -> property:
    return property(lambda self: self._id(self.special_tokens[name]), doc=f"The {name} token's id, or None.")

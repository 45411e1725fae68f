"""The tokenizer's answer: a dict of model inputs with transformers' `BatchEncoding` methods.

It holds each text's backend `Encoding` (unpadded: coulisse pads the rows itself), and answers transformers'
Encoding-backed questions (`sequence_ids`, `char_to_token`, `word_to_tokens`, ...) on the padded rows, as
transformers' encodings are padded: a token index counts the padding before it on a left-padded batch.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
from tokenizers import Encoding

from coulisse.errors import InputError
from coulisse.tokenizer.inputs import as_lists

log = logging.getLogger(__name__)

NO_PADDING = (False, "do_not_pad", None)  # the `padding` values that pad nothing


class CharSpan(NamedTuple):
    """Characters [start, end) of the original text (transformers' `CharSpan`)."""

    start: int
    end: int


class TokenSpan(NamedTuple):
    """Tokens [start, end) of an encoded text (transformers' `TokenSpan`)."""

    start: int
    end: int


def is_batch(ids: Any) -> bool:
    """Rows of ids (a list of lists, or a 2-D tensor or array) rather than one text's."""
    if hasattr(ids, "ndim"):
        return ids.ndim == 2
    return isinstance(ids, list) and bool(ids) and isinstance(ids[0], (list, tuple))


def to_tensors(data: dict[str, Any], return_tensors: Any, prepend_batch_axis: bool = False) -> dict[str, Any]:
    """`data`'s lists as int64 arrays ("np") or torch tensors ("pt"); None leaves them lists. A column of floats
    (a collator's regression or soft labels) stays floats, of the dtype transformers gives it (np.asarray's, or
    torch.tensor's: float32 for Python floats); booleans stay booleans."""
    return_tensors = getattr(return_tensors, "value", return_tensors)  # transformers' TensorType members too
    if return_tensors is None:
        return data
    if return_tensors not in ("np", "pt"):
        raise InputError(f"return_tensors={return_tensors!r}; use 'pt', 'np' or None.")
    out = {}
    for key, value in data.items():
        if type(value).__module__.startswith("torch") or isinstance(value, np.ndarray):
            out[key] = value
            continue
        try:
            array = np.asarray([value] if prepend_batch_axis else value)
            kind = array.dtype.kind if array.size else "i"  # an empty list reads as float64
            if kind == "f":  # torch.tensor makes Python floats float32, and keeps a tensor's or array's dtype
                array = array.astype(np.float32, copy=False) if return_tensors == "pt" and _python_floats(
                    value) else array
            elif kind != "b":
                array = array.astype(np.int64, copy=False)
        except (ValueError, TypeError) as e:
            if key == "input_ids" or key in PAD_VALUES:
                raise InputError("sequences have different lengths; pass padding=True to get tensors.") from e
            raise InputError(f"column {key!r} cannot be made {'a tensor' if return_tensors == 'pt' else 'an array'}: "
                             f"its values are not numbers of one shape ({e}); drop it (a data set's "
                             "remove_columns) or make it one number per row.") from e
        if return_tensors == "pt":
            import torch

            array = torch.from_numpy(array)
        out[key] = array
    return out


class BatchEncoding(dict):
    """A dict of model inputs that also answers attribute access (`inputs.input_ids`) and transformers'
    BatchEncoding methods: `to(device)`, `tokens(i)`, `word_ids(i)`, `sequence_ids(i)`, `char_to_token`,
    `token_to_chars`, `word_to_tokens`, `word_to_chars`, `token_to_word`, `char_to_word`, `token_to_sequence`,
    `n_sequences`, `is_fast`, `enc[i]` (text i's Encoding, padded as its row), `convert_to_tensors`."""

    def __init__(self, data: dict[str, Any], encodings: list[Encoding] | None = None, pad_token: str | None = None,
                 padding_side: str = "right", pad_token_id: int | None = 0,
                 word_ids: Callable[[int, Encoding], list[int | None]] | None = None):
        super().__init__(data)
        self.encodings = encodings
        self.pad_token = pad_token
        self.padding_side = padding_side
        self.pad_token_id = pad_token_id
        self._word_ids = word_ids  # a tokenizer's own word numbering (FlauBERT's), else the backend's
        self._rows: dict[int, Encoding] = {}

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        try:
            return self[name]
        except KeyError as e:
            raise AttributeError(name) from e

    def __getitem__(self, item: Any) -> Any:
        """A key's value; an int, text `item`'s Encoding; a slice, those texts' Encodings (as transformers)."""
        if isinstance(item, str):
            return dict.__getitem__(self, item)
        if isinstance(item, slice) and self.encodings:
            return [self._encoding(i) for i in range(len(self.encodings))[item]]
        if isinstance(item, slice):
            return {key: value[item] for key, value in self.items()}
        if isinstance(item, (int, np.integer)) and not isinstance(item, bool):
            return self._encoding(int(item))
        raise KeyError(item)

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "_word_ids"} | {"_word_ids": None, "_rows": {}}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)

    @property
    def data(self) -> dict[str, Any]:
        """The inputs themselves (transformers' `.data`): this dict."""
        return self

    @property
    def is_fast(self) -> bool:
        """Whether the backend's encodings are here (transformers: made by a fast tokenizer)."""
        return self.encodings is not None

    @property
    def n_sequences(self) -> int | None:
        """1 for single texts, 2 for pairs; None without encodings."""
        return self.encodings[0].n_sequences if self.encodings else None

    def to(self, device: Any, *, non_blocking: bool = False) -> BatchEncoding:
        """The tensors moved to `device` (a str, torch.device or int), in place, as transformers does; returns
        self. Anything else (a dtype: `inputs.to(torch.float16)`) is not a device: transformers warns and casts
        nothing, so that ids stay int64."""
        is_device = (isinstance(device, (str, int)) and not isinstance(device, bool)) or type(
            device).__name__ == "device"
        if not is_device:
            log.warning("Attempting to cast a BatchEncoding to type %s. This is not supported.", device)
            return self
        for key, value in self.items():
            if callable(getattr(value, "to", None)):
                self[key] = value.to(device=device, non_blocking=non_blocking)
        return self

    def convert_to_tensors(self, tensor_type: Any = None, prepend_batch_axis: bool = False) -> BatchEncoding:
        """The values as tensors ("pt") or arrays ("np"), in place; returns self."""
        self.update(to_tensors(dict(self), tensor_type, prepend_batch_axis))
        return self

    # -- the backend's encodings, as padded rows ---------------------------------------------------

    def _unpadded(self, i: int) -> Encoding:
        if not self.encodings:
            raise InputError("this BatchEncoding holds no encodings (made from plain lists); tokenize again.")
        if i < 0:
            i += len(self.encodings)
        if not 0 <= i < len(self.encodings):
            raise InputError(f"batch index {i} is out of range: the batch holds {len(self.encodings)} texts.")
        return self.encodings[i]

    def _padding(self, batch_index: int, length: int) -> int:
        """How many padding columns follow text `batch_index`'s `length` tokens in input_ids."""
        ids = dict.get(self, "input_ids")
        if ids is None:
            return 0
        return max(0, len(ids[batch_index] if is_batch(ids) else ids) - length)

    def _encoding(self, i: int) -> Encoding:
        """Text `i`'s Encoding padded as its row of input_ids (transformers' encodings are)."""
        encoding = self._unpadded(i)
        i = i % len(self.encodings)
        if i not in self._rows:
            pads = self._padding(i, len(encoding))
            if pads:
                encoding = copy.deepcopy(encoding)
                encoding.pad(len(encoding) + pads, direction=self.padding_side, pad_id=self.pad_token_id,
                             pad_token=self.pad_token or "")
            self._rows[i] = encoding
        return self._rows[i]

    def tokens(self, batch_index: int = 0) -> list[str]:
        """Text `batch_index`'s tokens, special ones included, and the pad token over its padding."""
        return self._padded(list(self._unpadded(batch_index).tokens), self.pad_token, batch_index)

    def word_ids(self, batch_index: int = 0) -> list[int | None]:
        """For each token of text `batch_index`, the index of the word it comes from; None for special tokens and
        padding."""
        encoding = self._unpadded(batch_index)
        if self._word_ids is None:
            return self._padded(list(encoding.word_ids), None, batch_index)
        words = self._word_ids(batch_index % len(self.encodings), encoding)
        return self._padded(words, None, batch_index)

    def _padded(self, row: list, value: Any, batch_index: int) -> list:
        pads = [value] * self._padding(batch_index % len(self.encodings), len(row))
        return pads + row if self.padding_side == "left" else row + pads

    def sequence_ids(self, batch_index: int = 0) -> list[int | None]:
        """For each token, 0 or 1 (the pair's member it comes from); None for special tokens and padding."""
        return list(self._encoding(batch_index).sequence_ids)

    @staticmethod
    def _split(first: int, second: int | None) -> tuple[int, int]:
        """transformers' `batch_or_*_index` convention: (batch, index) when both are given, else (0, first)."""
        return (first, second) if second is not None else (0, first)

    def _check_word_ids(self) -> None:
        if self._word_ids is not None:
            raise InputError("word positions of this tokenizer are not the backend's (FlauBERT: one pre-token "
                             "per BPE unit); use word_ids(i).")

    def token_to_sequence(self, batch_or_token_index: int, token_index: int | None = None) -> int | None:
        batch, token = self._split(batch_or_token_index, token_index)
        encoding = self._encoding(batch)
        return encoding.token_to_sequence(token % len(encoding) if token < 0 else token)

    def token_to_word(self, batch_or_token_index: int, token_index: int | None = None) -> int | None:
        batch, token = self._split(batch_or_token_index, token_index)
        if self._word_ids is not None:
            return self.word_ids(batch)[token]
        encoding = self._encoding(batch)
        return encoding.token_to_word(token % len(encoding) if token < 0 else token)

    def word_to_tokens(self, batch_or_word_index: int, word_index: int | None = None,
                       sequence_index: int = 0) -> TokenSpan | None:
        batch, word = self._split(batch_or_word_index, word_index)
        self._check_word_ids()
        span = self._encoding(batch).word_to_tokens(word, sequence_index)
        return TokenSpan(*span) if span is not None else None

    def token_to_chars(self, batch_or_token_index: int, token_index: int | None = None) -> CharSpan | None:
        batch, token = self._split(batch_or_token_index, token_index)
        span = self._encoding(batch).token_to_chars(token)
        return CharSpan(*span) if span is not None else None

    def char_to_token(self, batch_or_char_index: int, char_index: int | None = None,
                      sequence_index: int = 0) -> int | None:
        batch, char = self._split(batch_or_char_index, char_index)
        return self._encoding(batch).char_to_token(char, sequence_index)

    def word_to_chars(self, batch_or_word_index: int, word_index: int | None = None,
                      sequence_index: int = 0) -> CharSpan | None:
        batch, word = self._split(batch_or_word_index, word_index)
        self._check_word_ids()
        span = self._encoding(batch).word_to_chars(word, sequence_index)
        return CharSpan(*span) if span is not None else None

    def char_to_word(self, batch_or_char_index: int, char_index: int | None = None,
                     sequence_index: int = 0) -> int | None:
        batch, char = self._split(batch_or_char_index, char_index)
        self._check_word_ids()
        return self._encoding(batch).char_to_word(char, sequence_index)


# what each key's padding holds (transformers' `_pad`); other keys (labels...) are left as they are
PAD_VALUES = {"token_type_ids": 0, "attention_mask": 0, "special_tokens_mask": 1}


def checked_side(key: str, given: str | None, own: str) -> str:
    """The side a call pads or truncates on: `given` (the call's `padding_side` / `truncation_side`), else `own`
    (the tokenizer's); an InputError names either where it is neither "right" nor "left" (the Rust library's
    bare ValueError for a truncation side did not say where it was set)."""
    side = given or own
    if side not in ("right", "left"):
        said = f"{key}={side!r}" if given else f"the tokenizer's {key} is {side!r}"
        raise InputError(f"{said}; use 'right' or 'left'.")
    return side


def check_multiple(multiple: Any) -> None:
    """`pad_to_multiple_of` is None or a positive int."""
    if multiple is not None and (isinstance(multiple, bool) or not isinstance(multiple, (int, np.integer))
                                 or multiple < 1):
        raise InputError(f"pad_to_multiple_of={multiple!r}; pass a positive int (e.g. 8), or None.")


def pad_width(lengths: list[int], padding: Any, limit: int | None, multiple: int | None = None) -> int:
    """The length `padding` pads every row to, as transformers' strategies: the longest row (True, "longest"),
    or `limit` ("max_length": the call's max_length, else the tokenizer's model_max_length; None where neither
    sets one, and transformers pads nothing then), rounded up to a multiple of `multiple`; 0 for no padding.
    The one rule of the tokenizer's call and of its `pad`."""
    if padding in (True, "longest"):
        width = max(lengths, default=0)
    elif padding == "max_length":
        width = limit or 0
    elif padding in NO_PADDING:
        return 0
    else:
        raise InputError(f"padding={padding!r} is not one of True, False, 'longest', 'max_length'.")
    return -(-width // multiple) * multiple if multiple else width


def pad_rows(rows: list, width: int, value: Any, left: bool = False) -> list[list]:
    """Each row padded with `value` to `width` on the right (`left`: on the left); a longer row as it is."""
    return [[value] * (width - len(row)) + list(row) if left else list(row) + [value] * (width - len(row))
            for row in rows]


def collate(encodings: list[Encoding], width: int, pad_token_id: int | None, *, types: bool, mask: bool,
            offsets: bool, special_mask: bool, left: bool = False) -> dict[str, list]:
    """The asked-for fields of every encoding, each padded on the right (`left`: on the left) to `width`
    (0: unpadded); `input_ids` with `pad_token_id`."""

    def padded(field: str, value: Any) -> list[list]:
        return pad_rows([getattr(e, field) for e in encodings], width, value, left)

    data: dict[str, list] = {"input_ids": padded("ids", pad_token_id)}
    if types:
        data["token_type_ids"] = padded("type_ids", 0)
    if mask:
        data["attention_mask"] = padded("attention_mask", 0)
    if offsets:
        data["offset_mapping"] = padded("offsets", (0, 0))
    if special_mask:  # padding counts as special, as in transformers
        data["special_tokens_mask"] = padded("special_tokens_mask", 1)
    return data


def pad(features: Any, *, pad_token_id: int | None, padding: Any = True, limit: int | None = None,
        pad_to_multiple_of: int | None = None, padding_side: str = "right", return_attention_mask: bool | None = None,
        return_tensors: Any = None) -> BatchEncoding:
    """transformers' `tokenizer.pad`: features already tokenized (a list of dicts, or a dict of lists) padded to
    `pad_width` (the longest row, or `limit` for "max_length"), an attention mask made where missing."""
    check_multiple(pad_to_multiple_of)
    if isinstance(features, (list, tuple)) and features and isinstance(features[0], dict):
        features = {key: [f[key] for f in features] for key in features[0]}
    if not isinstance(features, dict) or "input_ids" not in features:
        raise InputError("pad takes what the tokenizer returned (a dict with input_ids, or a list of them).")
    kind = _tensor_kind(features["input_ids"])
    if return_tensors is None:  # rows given as tensors come back as tensors of that kind, as in transformers
        return_tensors = kind
    # tensors, also one per row (a collator's features); where the rows are tensors, every column becomes Python
    # numbers first, as transformers converts them (a float32 label tensor then gives float64 arrays there too)
    data = {k: _python(v) if kind is not None else as_lists(v) for k, v in features.items()}
    ids = data["input_ids"]
    single = not is_batch(ids)
    rows = [ids] if single else ids
    if return_attention_mask is not False and "attention_mask" not in data:
        data["attention_mask"] = [1] * len(ids) if single else [[1] * len(row) for row in rows]
    width = pad_width([len(row) for row in rows], padding, limit, pad_to_multiple_of)
    if width:
        for key in ("input_ids", *PAD_VALUES):
            if key in data:
                value = pad_token_id if key == "input_ids" else PAD_VALUES[key]
                column = pad_rows([data[key]] if single else data[key], width, value, padding_side == "left")
                data[key] = column[0] if single else column
    if return_attention_mask is False:
        data.pop("attention_mask", None)
    return BatchEncoding(to_tensors(data, return_tensors), None, None, padding_side, pad_token_id)


def _python_floats(value: Any) -> bool:
    """Whether a column's first number is a Python float (not a tensor's or an array's)."""
    while isinstance(value, (list, tuple)) and value:
        value = value[0]
    return type(value) is float


def _python(value: Any) -> Any:
    """A column as Python numbers: a tensor or an array, or a list of them (0-d ones included)."""
    if isinstance(value, (list, tuple)):
        return [v.tolist() if hasattr(v, "tolist") else v for v in value]
    return value.tolist() if hasattr(value, "tolist") else value


def _tensor_kind(ids: Any) -> str | None:
    """"pt" or "np" where `pad`'s rows are torch tensors or numpy arrays (transformers reads the first row's first
    element, or the first row where rows are lists); None for lists of ints."""
    first = ids[0] if isinstance(ids, (list, tuple)) and ids else ids
    if isinstance(first, (list, tuple)):
        first = next((row[0] for row in ids if len(row)), first)
    if type(first).__module__.startswith("torch"):
        return "pt"
    return "np" if isinstance(first, np.ndarray) else None


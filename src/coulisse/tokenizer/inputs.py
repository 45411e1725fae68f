"""What a call is given, checked before the backend reads it: texts and text pairs, `max_length`, `truncation`,
token ids to decode; and what is said of a text the Rust library cannot take (a lone surrogate, a panic).

Each check refuses with an `InputError` that names the bad value and how to fix it (a data frame's column, a
missing value, a tokenizer's output given back to a pipeline...), before any text is tokenized.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from typing import Any

import numpy as np

from coulisse.errors import InputError, TokenizerLoadError, type_of

# transformers' TruncationStrategy values.
STRATEGIES = ("longest_first", "only_first", "only_second", "do_not_truncate")


def _is_pair_batch(text: Any) -> bool:
    """A batch of pairs given as `[(text, text_pair), ...]` (tuples or lists of two strings)."""
    return isinstance(text, (list, tuple)) and bool(text) and all(
        isinstance(t, (list, tuple)) and len(t) == 2 and all(isinstance(x, str) for x in t) for t in text)



def as_lists(ids: Any) -> Any:
    """Tensors and arrays as (nested) lists of ints, also inside a list (`[tensor, tensor]`, what `list()` of a
    2-D tensor gives); other lists as they are."""
    if isinstance(ids, (list, tuple)):
        return [i.tolist() if getattr(i, "ndim", 0) > 0 else i for i in ids]
    return ids.tolist() if hasattr(ids, "tolist") else ids


def one_token_id(value: Any) -> int:
    """One id as an int; a float or any other non-integer is refused (int() would floor 72.5 to a token no one
    asked for), with tokenizers' error class."""
    if getattr(value, "ndim", None) == 0 and hasattr(value, "item"):  # a 0-d tensor or array, or a numpy scalar
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"token ids are integers; got {value!r} ({type(value).__name__}). Pass the ids as ints, "
                        "e.g. the tokenizer's input_ids.")
    return value


def is_one_id(ids: Any) -> bool:
    """An int, or a 0-d tensor or array: one id rather than a sequence of them."""
    return isinstance(ids, (int, np.integer)) or getattr(ids, "ndim", None) == 0


def token_count(value: Any, limit: int) -> int:
    """`max_length` as an int: an int, a numpy integer (what `df.col.max()` gives), a 0-d integer tensor or a whole
    float, as transformers takes them; 0, a negative, a bool or anything else refused (0 was read as "not given")."""
    if not isinstance(value, bool):
        try:
            count = operator.index(value)
        except TypeError:
            count = int(value) if isinstance(value, float) and value.is_integer() else None
        if count is not None and count >= 1:
            return count
    raise InputError(f"max_length={value!r}; pass a positive number of tokens, or None (the model's {limit}).")


def _missing(value: Any) -> bool:
    """A data frame's missing value: None, NaN, pandas' NA or NaT."""
    return value is None or (isinstance(value, float) and value != value) or type(value).__name__ in (
        "NAType", "NaTType")


def check_texts(texts: Any, what: str = "text") -> tuple[list[str], bool]:
    """Validate user input; return (list of texts, whether a single string was given)."""
    if isinstance(texts, str):
        return [texts], True
    if texts is None:
        raise InputError(f"{what} is None; pass a string or a list of strings.")
    if not isinstance(texts, (list, tuple)):
        if getattr(texts, "ndim", None) == 0:  # np.array("text"): one value, not a column
            column = " (one value: pass .item())"
        elif hasattr(texts, "keys") and "input_ids" in texts:  # a tokenizer's output, given to a pipeline
            column = (" (a tokenizer's output: a pipeline takes the raw texts and tokenizes them itself; to run the "
                      "model on ids: pipe.model(**inputs))")
        elif type(texts).__name__ == "Tensor":  # the tokenizer's input_ids, given back to a pipeline
            column = (" (token ids? a pipeline takes the raw texts and tokenizes them itself; ids go to the model: "
                      "pipe.model(**inputs))")
        elif type(texts).__name__ == "DataFrame":
            column = " (a table: pass its text column, df['text'].tolist())"
        elif hasattr(texts, "tolist"):
            column = " (a column: pass .tolist(), after .dropna() if it has missing values)"
        elif _missing(texts):  # df.text.apply(pipe) on a NaN row
            column = " (a missing value: a column's NaN or None; .dropna() first, or .fillna(''))"
        else:
            column = ""
        raise InputError(f"{what} must be a string or a list of strings, got {type(texts).__name__}{column}.")
    if not texts:
        raise InputError(f"{what} is an empty list; pass at least one string.")
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            shown = repr(t) if len(repr(t)) <= 60 else repr(t)[:57] + "..."
            pair = (" For a text pair, pass {'text': ..., 'text_pair': ...} (a pipeline) or text_pair= (a "
                    "tokenizer).") if isinstance(t, (list, tuple)) and len(t) == 2 else ""
            missing = (" A missing value (a column's NaN or None): drop it or fill it (.dropna(), .fillna('')); to "
                       "keep a data frame's rows in line, label the present ones: m = df.text.notna(); "
                       "df.loc[m, 'predicted_label'] = [r['label'] for r in pipe(df.text[m].tolist())] (a column "
                       "of its own: the frame's label may hold the true ones)." if _missing(t) else "")
            raise InputError(f"{what}[{i}] is {type_of(t)}, {shown}, not a string.{pair}{missing}")
    return list(texts), False


def call_texts(text: Any, text_pair: Any) -> tuple[list[str], list[str] | None, bool]:
    """The texts and text pairs of a tokenizer's call, checked (`check_texts`): (texts, pairs or None, whether one
    text was given). A batch of pairs may come as `[(text, text_pair), ...]`, as transformers reads it."""
    if text_pair is None and _is_pair_batch(text):  # [(text, text_pair), ...], as transformers reads it
        text, text_pair = [t[0] for t in text], [t[1] for t in text]
    texts, single = check_texts(text)
    pairs = None
    if single and isinstance(text_pair, str) and not text_pair:
        text_pair = None  # transformers encodes one text with text_pair="" alone (a batch's [""] is a pair)
    if text_pair is not None:
        pairs, single_pair = check_texts(text_pair, "text_pair")
        if single != single_pair:  # transformers: a TypeError for either mix
            raise InputError(f"text is {'one string' if single else 'a list'} but text_pair is "
                             f"{'one string' if single_pair else 'a list'}; pass a string with a string, or "
                             "lists of the same length.")
        if len(pairs) != len(texts):
            raise InputError(f"got {len(texts)} texts but {len(pairs)} text pairs; pass as many of each.")
    return texts, pairs, single

def split_words(text: Any, text_pair: Any) -> tuple[list[list[str]], list[list[str]] | None, bool]:
    """`is_split_into_words=True`: a text is a list of words (one text), or a list of them (a batch), as
    transformers reads it; `text_pair` likewise. (texts, pairs or None, whether one text was given)."""
    def read(value: Any, what: str) -> tuple[list[list[str]], bool]:
        if isinstance(value, tuple):
            value = list(value)
        if not isinstance(value, list):
            raise InputError(f"{what} with is_split_into_words=True is a list of words (one text) or a list of "
                             f"such lists (a batch), got {type_of(value)}.")
        single = all(isinstance(w, str) for w in value)
        rows = [value] if single else value
        for i, row in enumerate(rows):
            if not isinstance(row, (list, tuple)) or not all(isinstance(w, str) for w in row):
                where = what if single else f"{what}[{i}]"
                raise InputError(f"{where} with is_split_into_words=True must be a list of words (strings), got "
                                 f"{type_of(row)}.")
        return [list(row) for row in rows], single

    texts, single = read(text, "text")
    if text_pair is None:
        return texts, None, single
    pairs, single_pair = read(text_pair, "text_pair")
    if single != single_pair or len(pairs) != len(texts):
        raise InputError(f"text holds {len(texts)} word list(s) and text_pair {len(pairs)}: pass as many of each, "
                         "both one list of words or both a batch of them.")
    return texts, pairs, single


def truncation_strategy(truncation: Any, max_length: int | None, padding: Any) -> str:
    """transformers' reading of `truncation`: True is "longest_first", False "do_not_truncate", and None means
    "longest_first" only when a `max_length` is given without padding."""
    if truncation is None:
        truncation = max_length is not None and padding is False
    if truncation is True:
        return "longest_first"
    if truncation is False:
        return "do_not_truncate"
    value = getattr(truncation, "value", truncation)  # transformers' TruncationStrategy members too
    if isinstance(value, str) and value in STRATEGIES:
        return value
    raise InputError(f"truncation={truncation!r} is not one of True, False, "
                     f"{', '.join(repr(s) for s in STRATEGIES)}.")


def lone_surrogate(text: str) -> int | None:
    """Where `text` holds its first lone surrogate, or None. A Python string can hold one (JSON's "\\ud800"
    decodes to one, and Python reads bytes that are not UTF-8 in argv as U+DC80-U+DCFF) that UTF-8, hence the Rust
    tokenizer, cannot carry."""
    if text.isascii():
        return None
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        return e.start
    return None


def unicode_problem(text: str) -> str | None:
    """Why `text` cannot be tokenized (to follow "... is"), or None (`lone_surrogate`)."""
    at = lone_surrogate(text)
    return None if at is None else f"not valid Unicode (lone surrogate at position {at})"


def refuse_bad_unicode(texts: Sequence[str], pairs: Sequence[str] | None, names: tuple[str, str] = (
        "text", "text_pair")) -> None:
    """Say which text the Rust binding refused and why: it refuses a string UTF-8 cannot carry with a bare
    TypeError (looked for only then: nothing is spent on the texts that encode)."""
    for what, sequence in zip(names, (texts, pairs or ()), strict=True):
        for i, text in enumerate(sequence):
            if isinstance(text, str) and (problem := unicode_problem(text)):
                raise InputError(f"{what} {i} is {problem}; remove or replace it.") from None


def panic_error(error: BaseException, where: str) -> TokenizerLoadError | InputError | None:
    """The Rust library's panic as a one-line error, or None for any other exception. pyo3 raises a panic as
    `pyo3_runtime.PanicException`, a BaseException that a caller's `except Exception` (a server's, a job's) would
    miss. A tokenizer.json regex that backtracks without end ((a+)+$ on a run of a's) loads, then panics on the
    texts that make it give up: the tokenizer's files are at fault, not the text (hence not an InputError, which a
    corpus job takes for a wrong option and stops on; this one fails its own row)."""
    if isinstance(error, (Exception, KeyboardInterrupt, SystemExit, GeneratorExit)) or (
            type(error).__name__ != "PanicException"):
        return None
    first = str(error).strip().splitlines()[0][:200] if str(error).strip() else "no message"
    if "stride" in first:  # return_overflowing_tokens: a window that keeps no more than the stride of a member
        return InputError(f"cannot cut windows with this stride: the tokenizers library panicked ({first}); each "
                          "window must keep more tokens of the text it cuts than the stride: lower stride=, or raise "
                          "max_length.")
    if "regex" in first.lower() or "onig" in first.lower():
        return TokenizerLoadError(
            f"the tokenizer of {where} gave up on this text: its own pattern (a Split or Replace regex of "
            f"tokenizer.json) backtracked past the regex engine's limit ({first}); fix that pattern (a repeat inside "
            "a repeat, such as (a+)+, backtracks without end) or use the tokenizer the model was trained with.")
    return TokenizerLoadError(
        f"the tokenizer of {where} failed on this text: the tokenizers library panicked ({first}); its files are "
        "likely broken: download them again, or use the tokenizer the model was trained with.")

"""The preprocessing stage: text in, `input_ids` / `attention_mask` (/ `token_type_ids`) out.

A thin, thread-safe wrapper over a fast `tokenizers.Tokenizer` that answers with transformers'
habits (`tokenizer(texts, padding=True, truncation=True, return_tensors="pt")`). It never imports
torch unless tensors of torch are asked for.
"""

from __future__ import annotations

import copy
import logging
import math
import operator
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tokenizers import Encoding, Regex, normalizers, pre_tokenizers
from tokenizers import Tokenizer as Backend

from coulisse.errors import CoulisseError, InputError, TokenizerLoadError, type_of
from coulisse.families import GENERIC_TOKENIZER_CLASSES, family_of
from coulisse.tokenizer import batch_encoding, moses, prefix
from coulisse.tokenizer.added_tokens import model_specific_tokens
from coulisse.tokenizer.batch_encoding import (
    NO_PADDING,
    BatchEncoding,
    check_multiple,
    checked_side,
    pad_rows,
    pad_width,
    to_tensors,
)
from coulisse.tokenizer.build import SPM_FILES, build_backend
from coulisse.tokenizer.keywords import CALL_NO_OPS, DECODE_NO_OPS, check_keywords

log = logging.getLogger(__name__)
_WARNED: set[str] = set()  # messages logged once per process, as transformers' `warning_once`

# Configs that say "no limit" store a huge sentinel (int(1e30)).
UNBOUNDED = 10**9
# transformers' TruncationStrategy values.
STRATEGIES = ("longest_first", "only_first", "only_second", "do_not_truncate")
# transformers' `clean_up_tokenization`, in its order.
CLEAN_UP = ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"), (" 'm", "'m"),
            (" 's", "'s"), (" 've", "'ve"), (" 're", "'re"))


# Tokens a pair's prefix keeps past what truncation keeps: a word cut in two at the prefix's end tokenizes
# otherwise, and only its own tokens do (tokenizers split words before their models read them).
CUT_MARGIN = 8
# The most tokens a pair truncated from the left may spend on its windows (each window of one member beside each
# window of the other): ~1 kB each in the backend, so ~130 MB.
PAIR_WINDOW_TOKENS = 2**17


def longest_first_lengths(n1: int, n2: int, budget: int) -> tuple[int, int]:
    """The lengths the Rust tokenizers' `longest_first` keeps of a pair of `n1` and `n2` tokens, `budget` the
    limit less the special tokens: the shorter member whole and the rest to the longer, or half each, the odd
    token to the longer (the second on a tie)."""
    if n1 + n2 <= budget:
        return n1, n2
    short, long = sorted((n1, n2))
    long = short if short > budget else max(short, budget - short)
    if short + long > budget:
        short, long = budget // 2, budget // 2 + budget % 2
    long = min(long, max(n1, n2))
    return (long, short) if n1 > n2 else (short, long)


def _refuse_left_windows(n1: int, n2: int, k1: int, k2: int) -> None:
    """Refuse a pair whose two members, both cut from the left into windows of `k1` and `k2` tokens, would
    cost the backend more than `PAIR_WINDOW_TOKENS` (it pairs every window of one with every window of the
    other)."""
    windows = -(-n1 // k1) * -(-n2 // k2)
    if windows * (k1 + k2) > PAIR_WINDOW_TOKENS:
        most = min(k1, k2) * math.isqrt(PAIR_WINDOW_TOKENS // (k1 + k2))
        raise InputError(f"a text pair of {n1} and {n2} tokens truncated from the left would be cut into "
                         f"{windows} pairs of windows; truncate from the right, or shorten both texts to about "
                         f"{most} tokens or less.")


# __call__'s own keywords, for the closest-name hint of a refused one
CALL_KEYWORDS = ("text", "text_pair", "padding", "truncation", "max_length", "return_tensors", "add_special_tokens",
                 "return_offsets_mapping", "return_token_type_ids", "return_attention_mask",
                 "return_special_tokens_mask", "padding_side", "pad_to_multiple_of", "return_length",
                 "tokenizer_kwargs")


def _warn_once(logger: logging.Logger, message: str) -> None:
    if message not in _WARNED:
        _WARNED.add(message)
        logger.warning(message)


def _is_pair_batch(text: Any) -> bool:
    """A batch of pairs given as `[(text, text_pair), ...]` (tuples or lists of two strings)."""
    return isinstance(text, (list, tuple)) and bool(text) and all(
        isinstance(t, (list, tuple)) and len(t) == 2 and all(isinstance(x, str) for x in t) for t in text)


def _as_lists(ids: Any) -> Any:
    """Tensors and arrays as (nested) lists of ints, also inside a list (`[tensor, tensor]`, what `list()` of a
    2-D tensor gives); other lists as they are."""
    if isinstance(ids, (list, tuple)):
        return [i.tolist() if getattr(i, "ndim", 0) > 0 else i for i in ids]
    return ids.tolist() if hasattr(ids, "tolist") else ids


def _one_token_id(value: Any) -> int:
    """One id as an int; a float or any other non-integer is refused (int() would floor 72.5 to a token no one
    asked for), with tokenizers' error class."""
    if getattr(value, "ndim", None) == 0 and hasattr(value, "item"):  # a 0-d tensor or array, or a numpy scalar
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"token ids are integers; got {value!r} ({type(value).__name__}). Pass the ids as ints, "
                        "e.g. the tokenizer's input_ids.")
    return value


def _is_one_id(ids: Any) -> bool:
    """An int, or a 0-d tensor or array: one id rather than a sequence of them."""
    return isinstance(ids, (int, np.integer)) or getattr(ids, "ndim", None) == 0


def _token_count(value: Any, limit: int) -> int:
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


def _refuse_bad_unicode(texts: Sequence[str], pairs: Sequence[str] | None, names: tuple[str, str] = (
        "text", "text_pair")) -> None:
    """Say which text the Rust binding refused and why: it refuses a string UTF-8 cannot carry with a bare
    TypeError (looked for only then: nothing is spent on the texts that encode)."""
    for what, sequence in zip(names, (texts, pairs or ()), strict=True):
        for i, text in enumerate(sequence):
            if isinstance(text, str) and (problem := unicode_problem(text)):
                raise InputError(f"{what} {i} is {problem}; remove or replace it.") from None


def panic_error(error: BaseException, where: str) -> TokenizerLoadError | None:
    """The Rust library's panic as a one-line error, or None for any other exception. pyo3 raises a panic as
    `pyo3_runtime.PanicException`, a BaseException that a caller's `except Exception` (a server's, a job's) would
    miss. A tokenizer.json regex that backtracks without end ((a+)+$ on a run of a's) loads, then panics on the
    texts that make it give up: the tokenizer's files are at fault, not the text (hence not an InputError, which a
    corpus job takes for a wrong option and stops on; this one fails its own row)."""
    if isinstance(error, (Exception, KeyboardInterrupt, SystemExit, GeneratorExit)) or (
            type(error).__name__ != "PanicException"):
        return None
    first = str(error).strip().splitlines()[0][:200] if str(error).strip() else "no message"
    if "regex" in first.lower() or "onig" in first.lower():
        return TokenizerLoadError(
            f"the tokenizer of {where} gave up on this text: its own pattern (a Split or Replace regex of "
            f"tokenizer.json) backtracked past the regex engine's limit ({first}); fix that pattern (a repeat inside "
            "a repeat, such as (a+)+, backtracks without end) or use the tokenizer the model was trained with.")
    return TokenizerLoadError(
        f"the tokenizer of {where} failed on this text: the tokenizers library panicked ({first}); its files are "
        "likely broken: download them again, or use the tokenizer the model was trained with.")


def _side(settings: dict, key: str) -> str:
    """tokenizer_config.json's `padding_side` / `truncation_side` ("right" where it says nothing)."""
    value = settings.get(key)
    if value is None:
        return "right"
    if value not in ("right", "left"):
        raise TokenizerLoadError(f"{key}={value!r} in tokenizer_config.json is neither 'right' nor 'left' "
                                 "(transformers refuses it too); fix it, or delete the key.")
    return value


def _token(name: str) -> property:
    def setter(self: Tokenizer, value: Any) -> None:
        self._set_special(name, value)

    return property(lambda self: self.special_tokens[name], setter,
                    doc=f"The {name} token, or None; may be set to a token of the vocabulary (or None).")


def _token_id(name: str) -> property:
    return property(lambda self: self._id(self.special_tokens[name]), doc=f"The {name} token's id, or None.")


def _returns_types(settings: dict) -> bool:
    """Whether transformers 5's tokenizer for these settings returns token types: tokenizer_config.json's
    `model_input_names` when it lists them (a BERT exported without `token_type_ids` leaves every token type 0,
    a pair's second text included), else its class's default: none for the generic classes and the RoBERTa
    family's (XLMRobertaTokenizer on a BERT model), BERT's and DeBERTa's for theirs."""
    names = settings.get("model_input_names")
    if isinstance(names, list) and names and all(isinstance(name, str) for name in names):
        return "token_type_ids" in names
    name = settings.get("tokenizer_class")
    if name in GENERIC_TOKENIZER_CLASSES:
        return False
    family = family_of(name) if isinstance(name, str) else None
    return family is None or family.token_types


def _ready(backend: Backend, settings: dict) -> None:
    """The backend as every call expects it: no padding or truncation of its own (each call sets what it asks), and
    tokenizer_config.json's `split_special_tokens` (special tokens written in a text read as text, as transformers
    sets it on its backend), which the backend's JSON does not keep across a copy or a pickle."""
    backend.no_padding()
    backend.no_truncation()
    if settings.get("split_special_tokens") is True and hasattr(backend, "encode_special_tokens"):
        backend.encode_special_tokens = True


class ForkSafeLock:
    """A lock that a forked child finds free: a thread of the parent that held it at fork() (tokenizing, in a
    server or a thread pool) has no counterpart in the child, which would wait for it forever (40 % of the children
    of such a fork hung, audit 45). Shared as a plain lock is (a shallow copy of a tokenizer shares it).
    It guards one backend, and keeps the record of the truncation set on that backend (`truncation`): every
    tokenizer that shares the backend shares the lock, hence the record (a copy with its own record skipped
    clearing a limit that the original had set: audit 46). A forked child keeps it, as it keeps the backend."""

    def __init__(self) -> None:
        self._pid, self._lock = os.getpid(), threading.Lock()
        self.truncation: tuple[int, int, str, str] | None = None  # None: no truncation

    def __enter__(self) -> ForkSafeLock:
        if self._pid != os.getpid():  # the first use in a forked child: a lock of its own
            self._pid, self._lock = os.getpid(), threading.Lock()
        self._lock.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self._lock.release()


class Tokenizer:
    def __init__(self, backend: Backend, *, model_max_length: int, settings: dict, source: str,
                 model_type: str | None = None):
        self.backend = backend
        self.model_max_length = model_max_length
        self.source = source
        self.settings = settings
        # The model decides whether token types are inputs: transformers 5 saves DistilBERT tokenizers
        # as "BertTokenizer", but DistilBERT has no token-type embedding.
        family = family_of(model_type, settings.get("tokenizer_class"))
        uses_types = family is not None and family.token_types and _returns_types(settings)
        self.model_input_names = ["input_ids", "token_type_ids", "attention_mask"] if uses_types else [
            "input_ids", "attention_mask"]
        # FlauBERT's tokenizer runs Python code (Moses), as transformers' only tokenizer for it does.
        self._python = family is not None and family.python_tokenizer
        # The special tokens are the tokenizer class's (XLM-R's on a BERT model that reads its vocabulary).
        spelling = family_of(settings.get("tokenizer_class"), model_type)
        self._family_specials = spelling.special_tokens if spelling is not None else {}
        self._family_extras = spelling.extra_special_tokens if spelling is not None else ()
        self._lock = ForkSafeLock()
        self._word_by_word: bool | None = None  # prefix.reads_word_by_word(backend), once a long text asks
        _ready(backend, settings)
        self.model_type = model_type
        self.name_or_path = ""  # the folder it was read from (from_dir), or the name it was asked by (a Hub id)
        self.directory: Path | None = None  # the folder its files were read from (from_dir): what saving copies
        self.special_tokens = {
            name: self.loaded_special(name) for name in ("bos", "eos", "unk", "sep", "pad", "cls", "mask")
        }
        self.pad_token_id = self._id(self.special_tokens["pad"])  # None without one, as in transformers
        # transformers reads both from tokenizer_config.json (defaults "right"); a call's option overrides them,
        # and, as there, they may be set on the tokenizer (`tokenizer.truncation_side = "left"`)
        self.padding_side = _side(settings, "padding_side")
        self.truncation_side = _side(settings, "truncation_side")

    def loaded_special(self, name: str) -> str | None:
        """The `name` special token the settings give (what loading set; saving writes the ones set since). A
        token the settings set to null is none, as transformers 5 reads it (it saves a token set to None so)."""
        settings = self.settings
        if f"{name}_token" in settings and settings[f"{name}_token"] is None:
            return None
        value = settings.get(f"{name}_token")
        if isinstance(value, dict):
            value = value.get("content")
        if value is None and name in self._family_specials:
            # transformers' tokenizer class names it where the settings do not (BERT's has no bos / eos), also
            # when the vocabulary holds another family's spelling too (a BERT vocabulary with `<s>` added)
            value = self._family_specials[name]
            if value is None or self.backend.token_to_id(value) is not None:
                return value
            value = None
        if value is None:
            # The vocabulary's spelling where neither the settings nor a known family name one; WordPiece models
            # have no bos / eos in transformers (their [CLS] and [SEP] are cls and sep only).
            defaults = {"bos": ["<s>"], "eos": ["</s>"], "unk": ["<unk>", "[UNK]"],
                        "sep": ["</s>", "[SEP]"], "pad": ["<pad>", "[PAD]"], "cls": ["<s>", "[CLS]"],
                        "mask": ["<mask>", "[MASK]"]}[name]
            value = next((v for v in defaults if self.backend.token_to_id(v) is not None), None)
        return value

    @classmethod
    def from_dir(cls, directory: str | Path, *, model_type: str | None = None,
                 max_positions: int | None = None, vocab_size: int | None = None) -> Tokenizer:
        """Load from a checkpoint folder. `max_positions` bounds truncation when the config has no limit;
        `vocab_size` (the model's embedding rows) bounds the vocabulary files' entries, read before the Rust
        library spends time and memory on them (`build.vocab_bound`)."""
        directory = Path(directory)
        backend, source, settings = build_backend(directory, model_type, vocab_size)
        limit = settings.get("model_max_length")
        # transformers' "no limit" is a huge number; NaN, a negative or a boolean is no limit at all either
        if isinstance(limit, bool) or not isinstance(limit, (int, float)) or not 1 <= limit < UNBOUNDED:
            limit = max_positions if max_positions else UNBOUNDED
        tokenizer = cls(backend, model_max_length=int(limit), settings=settings, source=source,
                        model_type=model_type)
        tokenizer.name_or_path = str(directory)
        tokenizer.directory = directory
        return tokenizer

    # -- encoding ---------------------------------------------------------------------------------

    def encode_batch(self, texts: Sequence[str], pairs: Sequence[str] | None = None, *,
                     truncation: bool = True, max_length: int | None = None,
                     add_special_tokens: bool = True, strategy: str = "longest_first",
                     stride: int = 0, direction: str | None = None) -> list[Encoding]:
        """Tokenize without padding. Truncation keeps the first `max_length` tokens, specials included
        (`direction="left"`: the last ones, transformers' `truncation_side="left"`; None: the tokenizer's
        `truncation_side`); `strategy` says which
        member of a pair gives them up ("longest_first", "only_first", "only_second").
        With `stride`, what truncation cuts off is in each encoding's `overflowing`, as windows that share
        `stride` tokens with the previous one (transformers' `return_overflowing_tokens=True, stride=...`); without
        one, `overflowing` only says whether anything was cut (a long single text is encoded from a prefix: the
        windows past it are not made; `encode_windows` makes them all)."""
        limit = (max_length or self.model_max_length) if truncation else None
        if limit is not None and limit >= UNBOUNDED:
            limit = None
        if limit is not None:  # the side is read only where truncation applies, as in transformers
            direction = checked_side("truncation_side", direction, self.truncation_side)
        inputs = list(zip(texts, pairs, strict=True)) if pairs is not None else list(texts)
        try:
            with self._lock:  # truncation is backend state; set it and encode atomically
                if self._python and limit is not None and (not stride or pairs is not None):
                    return self._truncate_as_python(texts, pairs, limit, strategy, add_special_tokens, direction)
                if pairs is not None and limit is not None and strategy == "longest_first" and not stride:
                    return self._longest_first_pairs(texts, pairs, limit, add_special_tokens, direction)
                self._set_truncation(limit, stride, strategy, direction)
                if pairs is None and limit is not None and not stride and direction == "right":
                    return self._encode_from_prefixes(list(texts), limit, add_special_tokens)
                return self._encode(inputs, add_special_tokens)
        except (TypeError, ValueError):
            _refuse_bad_unicode(texts, pairs)
            raise
        except Exception as e:  # the Rust library's plain Exception, when the member it may cut is too short
            if "Truncation error" not in str(e):
                raise
            member = {"only_first": "first text", "only_second": "second text"}.get(strategy, "pair")
            raise InputError(f"cannot truncate to {limit} tokens with truncation={strategy!r}: the {member} alone "
                             "is too short to cut that much; raise max_length, or use truncation='longest_first'."
                             ) from None

    def _encode(self, inputs: list, add_special_tokens: bool) -> list[Encoding]:
        """The backend's encodings; call with the lock held. A tokenizer running Python code encodes one input
        at a time: the backend's threads would only queue for the GIL (500 reviews on 2 cores: 1.3 s alone,
        2.0-3.3 s threaded). Every encoding path ends here, so the library's panic is said here (`panic_error`)."""
        try:
            if not self._python:
                return self.backend.encode_batch(inputs, add_special_tokens=add_special_tokens)
            return [self.backend.encode(*(x if isinstance(x, tuple) else (x,)), add_special_tokens=add_special_tokens)
                    for x in inputs]
        except BaseException as e:
            if (error := panic_error(e, self.name_or_path or self.source)) is None:
                raise
            raise error from None

    def _reads_word_by_word(self) -> bool:
        """`prefix.reads_word_by_word` of the backend, judged once (when a first long text asks)."""
        if self._word_by_word is None:
            self._word_by_word = prefix.reads_word_by_word(self.backend)
        return self._word_by_word

    def _encode_from_prefixes(self, texts: list[str], limit: int, add_special_tokens: bool) -> list[Encoding]:
        """Single texts truncated from the right to `limit`: a long one tokenized from a prefix that holds what
        truncation keeps (`coulisse.tokenizer.prefix`), where the tokenizer reads word by word; the same
        encodings but `overflowing`. Call with the lock held and the truncation set."""
        cuts = {i: cut for i, text in enumerate(texts)
                if (cut := prefix.first_cut(text, limit)) is not None and prefix.clean_past(text, cut)}
        if not cuts or not self._reads_word_by_word():
            return self._encode(texts, add_special_tokens)
        encodings = self._encode([text[:cuts[i]] if i in cuts else text for i, text in enumerate(texts)],
                                 add_special_tokens)
        while cuts:
            for i in [i for i in cuts if prefix.holds_the_kept_tokens(encodings[i], cuts[i])]:
                del cuts[i]
            for i in list(cuts):  # too short: a longer prefix, or the whole text
                cut = prefix.next_cut(texts[i], prefix.GROWTH * cuts[i])
                if cut is None:
                    del cuts[i]
                    encodings[i] = self._encode([texts[i]], add_special_tokens)[0]
                else:
                    cuts[i] = cut
            if cuts:
                again = self._encode([texts[i][:cuts[i]] for i in cuts], add_special_tokens)
                for i, e in zip(cuts, again, strict=True):
                    encodings[i] = e
        return encodings

    def _truncate_as_python(self, texts: Sequence[str], pairs: Sequence[str] | None, limit: int, strategy: str,
                            add_special_tokens: bool, direction: str = "right") -> list[Encoding]:
        """transformers 5's Python tokenizers (the only ones some families have) take the tokens past `limit` off
        in one go: a single text, or the member `strategy` names, loses them all, down to nothing (the special
        tokens stay, even past `limit`); `longest_first` takes the difference off the longer member of a pair,
        then halves the rest, the first member keeping an odd token. The Rust library instead leaves a text whole
        when `limit` is below the special tokens' count, refuses to cut a member too short, and gives an odd
        token to the second member. Call with the lock held."""
        self._set_truncation(None, 0, "longest_first")
        specials = self.backend.num_special_tokens_to_add(pairs is not None) if add_special_tokens else 0
        firsts = self._encode(list(texts), False)
        seconds = self._encode(list(pairs), False) if pairs is not None else [None] * len(firsts)
        out = []
        for text_a, text_b, a, b in zip(texts, pairs or [None] * len(firsts), firsts, seconds, strict=True):
            n1, n2 = len(a), len(b) if b is not None else 0
            excess = n1 + n2 + specials - limit
            if excess > 0:
                if b is None or strategy == "only_first":
                    n1 -= excess
                elif strategy == "only_second":
                    n2 -= excess if n2 else 0  # an empty second text has nothing to give: the pair stays long
                else:
                    longer = min(abs(n1 - n2), excess)  # what evens the two out, then half the rest each
                    cut1 = longer + (excess - longer) // 2 if n1 > n2 else (excess - longer) // 2
                    n1, n2 = n1 - cut1, n2 - (excess - cut1)
                    if direction == "left" and not len(b):  # transformers then drops an empty second text, and
                        b = None  # its separator, from the pair
                if b is not None and n1 < len(a) and n2 < len(b):  # both cut: their windows meet in post_process
                    if direction == "left":
                        _refuse_left_windows(len(a), len(b), max(n1, 1), max(n2, 1))
                    else:
                        a, b = self._prefix(text_a, a, n1), self._prefix(text_b, b, n2)
                a.truncate(max(n1, 0), direction=direction)
                if b is not None:
                    b.truncate(max(n2, 0), direction=direction)
            out.append(self.backend.post_process(a, b, add_special_tokens=add_special_tokens))
        return out

    def _longest_first_pairs(self, texts: Sequence[str], pairs: Sequence[str], limit: int,
                             add_special_tokens: bool, direction: str) -> list[Encoding]:
        """Pairs under `longest_first`, as the backend truncates them, without what it costs on long pairs: it
        cuts both members into windows and keeps every window of one beside every window of the other (two
        texts of 70,000 words take 22 GB). A pair over `limit` is encoded whole, then each member it cuts is
        shortened to a prefix that keeps what truncation keeps (`_cut_pair`), and that pair is truncated: the
        same ids, types and offsets; only `overflowing` no longer holds the windows past the prefixes. Call with
        the lock held."""
        self._set_truncation(None, 0, "longest_first")
        inputs = list(zip(texts, pairs, strict=True))
        budget = limit - (self.backend.num_special_tokens_to_add(True) if add_special_tokens else 0)
        encodings = self._encode_long_members(inputs, limit, budget, add_special_tokens, direction)
        over = [i for i, e in enumerate(encodings) if len(e) > limit]
        if not over:
            return encodings
        for i in over:
            cut = self._cut_pair(inputs[i], encodings[i], budget, direction, add_special_tokens)
            inputs[i] = cut or inputs[i]
        self._set_truncation(limit, 0, "longest_first", direction)
        for i, e in zip(over, self._encode([inputs[i] for i in over], add_special_tokens), strict=True):
            encodings[i] = e
        return encodings

    def _encode_long_members(self, inputs: list[tuple[str, str]], limit: int, budget: int,
                             add_special_tokens: bool, direction: str) -> list[Encoding]:
        """The pairs encoded whole, without truncation, except that a pair with one member long enough for a
        prefix (`prefix.first_cut`; the other not) has that member replaced in `inputs` by a prefix that stands
        for it (`prefix.pair_member_holds`), where the tokenizer reads word by word: truncation from the right
        then keeps the same tokens (a 2 MB document beside a query took seconds). Call with the lock held and
        no truncation set."""
        cuts: dict[int, tuple[int, int]] = {}  # pair -> (member, characters)
        if direction == "right":
            for i, pair in enumerate(inputs):
                found = [(m, c) for m in (0, 1) if (c := prefix.first_cut(pair[m], limit)) is not None
                         and prefix.clean_past(pair[m], c)]
                if len(found) == 1:
                    cuts[i] = found[0]
        if not cuts or not self._reads_word_by_word():
            return self._encode(inputs, add_special_tokens)
        whole = list(inputs)
        for i, (m, c) in cuts.items():
            inputs[i] = (inputs[i][0][:c], inputs[i][1]) if m == 0 else (inputs[i][0], inputs[i][1][:c])
        encodings = self._encode(inputs, add_special_tokens)
        failed = []
        for i, (m, c) in cuts.items():
            sequences = encodings[i].sequence_ids
            n = (sequences.count(0), sequences.count(1))
            if not prefix.pair_member_holds(encodings[i], m, c, longest_first_lengths(*n, budget)[m]):
                failed.append(i)
                inputs[i] = whole[i]
        for i, e in zip(failed, self._encode([inputs[i] for i in failed], add_special_tokens), strict=True):
            encodings[i] = e
        return encodings

    def _cut_pair(self, pair: tuple[str, str], whole: Encoding, budget: int, direction: str,
                  add_special_tokens: bool) -> tuple[str, str] | None:
        """Prefixes of a pair's two texts that `longest_first` truncates exactly as it truncates the texts, or
        None to keep them (truncation leaves a member whole, so the windows stay linear; or a prefix does not
        tokenize as the text's start does).
        Each member keeps at most `budget` tokens, and which member keeps the odd one depends only on which is
        longer (`longest_first_lengths`): a prefix of `budget` + 1 tokens (+ 2 for the longer member, so the
        order stays) and a margin of `CUT_MARGIN` tokens (where a word cut in two tokenizes otherwise) keeps
        both. Checked, not assumed: the prefixes must tokenize to the texts' first tokens, in the same order of
        length. `direction="left"` keeps the texts' ends, whose offsets a cut start would move: a pair is then
        encoded whole, unless its windows would cost more than `PAIR_WINDOW_TOKENS`, refused."""
        sequence = whole.sequence_ids
        members = [[j for j, s in enumerate(sequence) if s == m] for m in (0, 1)]
        n = [len(m) for m in members]
        if budget <= 1 or min(n) == 0:
            return None
        kept = longest_first_lengths(n[0], n[1], budget)
        if kept[0] == n[0] or kept[1] == n[1]:  # one member whole: its one window beside the other's, linear
            return None
        if direction == "left":
            _refuse_left_windows(n[0], n[1], max(kept[0], 1), max(kept[1], 1))
            return None
        caps = [min(n[m], budget + 1 + (n[m] > n[1 - m]) + CUT_MARGIN) for m in (0, 1)]
        if caps == n:
            return None
        offsets = whole.offsets
        cut = tuple(text if caps[m] == n[m] else text[:offsets[members[m][caps[m] - 1]][1]]
                    for m, text in enumerate(pair))
        check = self._encode([cut], add_special_tokens)[0]
        again = [[j for j, s in enumerate(check.sequence_ids) if s == m] for m in (0, 1)]
        lengths = [len(m) for m in again]
        if longest_first_lengths(lengths[0], lengths[1], budget) != kept or (lengths[0] > lengths[1]) != (
                n[0] > n[1]) or (lengths[0] < lengths[1]) != (n[0] < n[1]):
            return None
        ids, cut_ids, cut_offsets = whole.ids, check.ids, check.offsets  # each a list built per access: once
        for m in (0, 1):
            first, second = members[m][:kept[m]], again[m][:kept[m]]
            if ([ids[j] for j in first] != [cut_ids[j] for j in second]
                    or [offsets[j] for j in first] != [cut_offsets[j] for j in second]):
                return None
        return cut  # type: ignore[return-value]

    def _prefix(self, text: str, encoding: Encoding, keep: int) -> Encoding:
        """The encoding of a prefix of `text` whose first `keep` tokens are `encoding`'s (a margin of
        `CUT_MARGIN` past them), else `encoding`: truncated to `keep`, it then leaves few windows. Call with the
        lock held."""
        end = min(keep + CUT_MARGIN, len(encoding))
        if end == len(encoding) or keep <= 0:
            return encoding
        prefix = self._encode([text[:encoding.offsets[end - 1][1]]], False)[0]
        if prefix.ids[:keep] != encoding.ids[:keep] or prefix.offsets[:keep] != encoding.offsets[:keep]:
            return encoding
        return prefix

    def encode_windows(self, texts: Sequence[str], pairs: Sequence[str], *, max_length: int, stride: int,
                       strategy: str = "only_second", direction: str | None = None) -> list[list[Encoding]]:
        """Pairs whose truncated member is cut into overlapping windows, as transformers' fast tokenizers do
        with `return_overflowing_tokens=True, stride=...`: per input, the first window then its overflow.
        Consecutive windows share `stride` tokens of the truncated member. `direction="left"` (None: the
        tokenizer's `truncation_side`) starts from the member's end, as transformers' `truncation_side="left"`."""
        direction = checked_side("truncation_side", direction, self.truncation_side)
        names = ("question", "context") if strategy == "only_second" else ("text", "text_pair")
        try:
            return self._windows(texts, pairs, max_length, stride, strategy, direction)
        except (TypeError, ValueError, InputError):
            _refuse_bad_unicode(texts, pairs, names)
            raise

    def _windows(self, texts: Sequence[str], pairs: Sequence[str], max_length: int, stride: int, strategy: str,
                 direction: str) -> list[list[Encoding]]:
        def refused(detail: str) -> InputError:
            return InputError(
                f"cannot cut windows of {max_length} tokens with a stride of {stride}: the part that is not cut "
                f"(e.g. the question{detail}) leaves no more than the stride to the rest; raise max_seq_len, "
                "lower doc_stride, or shorten it.")

        with self._lock:
            # tokenizers panics (an uncatchable-looking PyO3 PanicException, with a Rust backtrace on stderr)
            # where the kept member leaves no more than `stride` tokens to a member that must be cut: said first.
            self._set_truncation(None, 0, "longest_first")
            kept_texts, cut_texts = (texts, pairs) if strategy == "only_second" else (pairs, texts)
            specials = self.backend.num_special_tokens_to_add(True)
            kept = [len(e) for e in self._encode(list(kept_texts), False)]
            if any(max_length - specials - n <= stride for n in kept):
                risky = [i for i, n in enumerate(kept) if max_length - specials - n <= stride]
                cut = self._encode([cut_texts[i] for i in risky], False)
                for i, e in zip(risky, cut, strict=True):
                    if kept[i] + len(e) + specials > max_length:
                        raise refused(f", {kept[i]} tokens and {specials} special ones")
            try:
                self._set_truncation(max_length, stride, strategy, direction)
                encodings = self._encode(list(zip(texts, pairs, strict=True)), True)
            except CoulisseError:  # a panic said by `_encode` (TokenizerLoadError): the tokenizer's, not the stride's
                raise
            except Exception as e:  # tokenizers' plain Exception when the other member is too long, its ValueError
                raise refused(f"; {e}") from e  # for a stride past the window
        return [[e, *e.overflowing] for e in encodings]

    @property
    def _truncation(self) -> tuple[int, int, str, str] | None:
        """The truncation set on the backend, as the lock records it (shared with every copy that shares the
        backend); None for none."""
        return self._lock.truncation

    @_truncation.setter
    def _truncation(self, state: tuple[int, int, str, str] | None) -> None:
        self._lock.truncation = state

    def _set_truncation(self, limit: int | None, stride: int, strategy: str, direction: str = "right") -> None:
        """Configure the backend's truncation; call with the lock held."""
        state = None if limit is None else (limit, stride, strategy, direction)
        if state == self._truncation:
            return
        if limit is None:
            self.backend.no_truncation()
        else:
            self.backend.enable_truncation(limit, stride=stride, strategy=strategy, direction=direction)
        self._truncation = state

    def as_transformers4(self) -> Tokenizer:
        """This tokenizer as transformers 4 converted its files, for what reproduces transformers 4 (question
        answering). Only SentencePiece files differ: transformers 4 kept the whitespace before a word inside
        the word's first token ("▁mot" spans " mot"): character offsets and word spans move, ids do not."""
        if self.source not in SPM_FILES:
            return self
        backend = Backend.from_str(self.backend.to_str())
        _ready(backend, self.settings)
        steps = [backend.normalizer] if backend.normalizer is not None else []
        backend.normalizer = normalizers.Sequence(
            [*steps, normalizers.Strip(left=False, right=True), normalizers.Replace(Regex(" {2,}"), "▁")])
        prepend = "always" if self.settings.get("add_prefix_space", True) else "never"
        backend.pre_tokenizer = pre_tokenizers.Metaspace("▁", prepend_scheme=prepend, split=True)
        twin = copy.copy(self)
        twin.backend, twin._lock, twin._word_by_word = backend, ForkSafeLock(), None  # a new lock: no truncation
        backend.no_truncation()
        return twin

    # -- pickling and copies: the lock is dropped, and the backend travels as its JSON (FlauBERT's Python
    # pre-tokenizer, which the Rust library cannot serialize, beside it; `moses.backend_state`) ---------------

    def __getstate__(self) -> dict:
        state = {k: v for k, v in self.__dict__.items() if k != "_lock"}
        with self._lock:
            state["backend"] = moses.backend_state(self.backend)
        return state

    def __setstate__(self, state: dict) -> None:
        state = dict(state)
        state.pop("_truncation", None)  # a pickle of before audit 46 kept it beside the lock
        state["backend"] = moses.backend_from_state(state["backend"])
        _ready(state["backend"], state["settings"])  # no truncation, as the new lock records
        self.__dict__.update(state)
        self._lock = ForkSafeLock()

    def __copy__(self) -> Tokenizer:
        """A shallow copy shares the backend, its lock and the lock's record of the backend's truncation, as
        before `__getstate__`. Its special tokens, settings and input names are its own: a token set on the copy
        (a question-answering pipeline's `as_transformers4` twin) leaves the original's token and its id as they
        were (audit 46)."""
        twin = object.__new__(type(self))
        twin.__dict__.update(self.__dict__)
        twin.special_tokens, twin.settings = dict(self.special_tokens), dict(self.settings)
        twin.model_input_names = list(self.model_input_names)
        return twin

    def __call__(self, text: str | Sequence[str], text_pair: str | Sequence[str] | None = None, *,
                 padding: bool | str = False, truncation: bool | str | None = None, max_length: int | None = None,
                 return_tensors: str | None = None, add_special_tokens: bool = True,
                 return_offsets_mapping: bool = False, return_token_type_ids: bool | None = None,
                 return_attention_mask: bool | None = None,
                 return_special_tokens_mask: bool = False, padding_side: str | None = None,
                 pad_to_multiple_of: int | None = None, return_length: bool = False,
                 tokenizer_kwargs: dict | None = None, **kwargs: Any) -> BatchEncoding:
        """transformers' call: one text or a batch (with `text_pair`s), padded, truncated, as lists or tensors.
        `truncation` is True, False or a strategy ("longest_first", "only_first", "only_second",
        "do_not_truncate"). `padding_side` ("right" or "left") overrides the tokenizer's for this call.
        `pad_to_multiple_of` rounds the padded length up to a multiple of it (with `padding` only).
        `return_length` adds `length`: each row's length, padding included (as transformers' fast tokenizers
        count it; its Python ones, such as FlauBERT's, count a batch's rows before padding).
        `return_token_type_ids` / `return_attention_mask` default to what the model reads."""
        if tokenizer_kwargs:  # transformers merges them into the call's keywords
            return self(text, text_pair, **{**dict(
                padding=padding, truncation=truncation, max_length=max_length, return_tensors=return_tensors,
                add_special_tokens=add_special_tokens, return_offsets_mapping=return_offsets_mapping,
                return_token_type_ids=return_token_type_ids, return_attention_mask=return_attention_mask,
                return_special_tokens_mask=return_special_tokens_mask, padding_side=padding_side,
                pad_to_multiple_of=pad_to_multiple_of, return_length=return_length), **kwargs, **tokenizer_kwargs})
        check_keywords(kwargs, CALL_NO_OPS, CALL_KEYWORDS, "tokenizer(...)")
        if text_pair is None and _is_pair_batch(text):  # [(text, text_pair), ...], as transformers reads it
            text, text_pair = [t[0] for t in text], [t[1] for t in text]
        if max_length is not None:
            max_length = _token_count(max_length, self.model_max_length)
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
        strategy = truncation_strategy(truncation, max_length, padding)
        if strategy == "only_second" and pairs is None:
            raise InputError("truncation='only_second' cuts the second text of pairs, but no text_pair was given; "
                             "pass text_pair=, or truncation=True.")
        self._check_multiple(pad_to_multiple_of, padding, strategy, max_length)
        self._check_can_pad(padding)
        encodings = self.encode_batch(texts, pairs, truncation=strategy != "do_not_truncate", max_length=max_length,
                                      add_special_tokens=add_special_tokens, strategy=strategy)
        if strategy == "do_not_truncate" and kwargs.get("verbose", True):  # transformers' verbose=False: silent
            self._warn_longer(encodings)
        types = "token_type_ids" in self.model_input_names if return_token_type_ids is None else return_token_type_ids
        side = checked_side("padding_side", padding_side, self.padding_side)
        width = pad_width([len(e) for e in encodings], padding, self._pad_limit(max_length), pad_to_multiple_of)
        data = self._collate(encodings, width, types=types, mask=return_attention_mask is not False,
                             offsets=return_offsets_mapping, special_mask=return_special_tokens_mask,
                             left=side == "left")
        if return_length:
            # transformers' Python tokenizers count a batch's rows before padding them (one text, after)
            rows = encodings if self._python and not single else data["input_ids"]
            data["length"] = [len(row) for row in rows]
        if single and return_tensors is None:
            # the fast tokenizers keep one text's length in a list; the Python ones give the number
            data = {k: v if k == "length" and not self._python else v[0] for k, v in data.items()}
        return BatchEncoding(to_tensors(data, return_tensors), encodings, self.special_tokens["pad"], side,
                             self.pad_token_id, self._word_ids_of(texts, pairs))

    _warned_longer = False  # `_warn_longer` said it (set on the instance)
    # set by the checkpoint for a model that reads no position table (DeBERTa-v3): a longer row runs there
    reads_any_length = False

    def _warn_longer(self, encodings: list[Encoding]) -> None:
        """Once per tokenizer, as transformers warns: a row longer than the model reads, left whole by a call
        without truncation, fails in the model (its position embeddings end there)."""
        longest = max((len(e.ids) for e in encodings), default=0)
        if longest > self.model_max_length and not self._warned_longer:
            self._warned_longer = True
            if self.reads_any_length:
                log.warning("a sequence of %d tokens is longer than this tokenizer's limit (%d); the model reads "
                            "relative positions only and runs it, though it was tuned on shorter ones: pass "
                            "truncation=True to cut it to %d", longest, self.model_max_length, self.model_max_length)
                return
            log.warning("a sequence of %d tokens is longer than this model reads (%d); the model would fail on it: "
                        "pass truncation=True to cut it to %d", longest, self.model_max_length, self.model_max_length)

    def _word_ids_of(self, texts: list[str], pairs: list[str] | None):
        """`word_ids` for the texts of a call, by batch index; None where the backend's are right."""
        if not self._python:
            return None
        return lambda i, encoding: self.word_ids(encoding, texts[i], pairs[i] if pairs is not None else None)

    def _collate(self, encodings: list[Encoding], width: int, *, types: bool, mask: bool, offsets: bool,
                 special_mask: bool, left: bool = False) -> dict[str, list]:
        """The asked-for fields of every encoding, each padded on the right (`left`: on the left) to `width`
        (0: unpadded)."""

        def padded(field: str, value: Any) -> list[list]:
            return pad_rows([getattr(e, field) for e in encodings], width, value, left)

        data: dict[str, list] = {"input_ids": padded("ids", self.pad_token_id)}
        if types:
            data["token_type_ids"] = padded("type_ids", 0)
        if mask:
            data["attention_mask"] = padded("attention_mask", 0)
        if offsets:
            data["offset_mapping"] = padded("offsets", (0, 0))
        if special_mask:  # padding counts as special, as in transformers
            data["special_tokens_mask"] = padded("special_tokens_mask", 1)
        return data

    def _pad_limit(self, max_length: int | None) -> int | None:
        """What padding="max_length" pads to (`pad_width`): `max_length`, else `model_max_length`; None where that
        is the "no limit" sentinel (transformers pads nothing then; 10**9 ids a row would exhaust memory)."""
        limit = max_length or self.model_max_length
        return limit if limit < UNBOUNDED else None

    def _check_can_pad(self, padding: Any) -> None:
        """Padding needs a pad token: without one, transformers refuses any padding, and so does coulisse (it
        padded with id 0, a token of the vocabulary)."""
        if self.pad_token_id is None and padding not in NO_PADDING:
            raise InputError(f"padding={padding!r} needs a pad token and this tokenizer has none; set one the "
                             "vocabulary holds (e.g. tokenizer.pad_token = tokenizer.unk_token), or pass "
                             "padding=False.")

    def _check_multiple(self, multiple: Any, padding: bool | str, strategy: str, max_length: int | None) -> None:
        """`pad_to_multiple_of` is a positive int, and a multiple of the length truncation cuts to when both
        truncation and padding apply (transformers refuses that mismatch too: rows could not be both)."""
        check_multiple(multiple)
        if multiple is None:
            return
        limit = max_length or self.model_max_length
        if (strategy != "do_not_truncate" and padding not in NO_PADDING and limit < UNBOUNDED
                and limit % multiple):
            raise InputError(f"truncation to {limit} tokens and padding to a multiple of {multiple} cannot both "
                             "hold; pass a max_length that is a multiple of pad_to_multiple_of, or "
                             "truncation=False.")

    # -- vocabulary -------------------------------------------------------------------------------

    def encode(self, text: str, text_pair: str | None = None, *, add_special_tokens: bool = True,
               truncation: bool | str | None = None, max_length: int | None = None,
               return_tensors: str | None = None, padding: bool | str = False, **kwargs: Any):
        """One text's ids (a list; with return_tensors, a `(1, L)` tensor or array), as transformers' encode;
        the call's other keywords (`padding_side`, `pad_to_multiple_of`, the no-op ones) pass through."""
        if not isinstance(text, str):
            raise InputError(f"encode takes one text (a string), got {type(text).__name__}; call the tokenizer "
                             "itself for a batch.")
        ids_only = {k: v for k, v in kwargs.items() if k in ("padding_side", "pad_to_multiple_of")}
        check_keywords({k: v for k, v in kwargs.items() if k not in ids_only}, CALL_NO_OPS,
                       ("add_special_tokens", "truncation", "max_length", "return_tensors", "padding", "padding_side",
                        "pad_to_multiple_of"), "encode(...)")
        out = self(text, text_pair, add_special_tokens=add_special_tokens, truncation=truncation,
                   max_length=max_length, return_tensors=return_tensors, padding=padding, **ids_only)
        return out["input_ids"]

    def pad(self, encoded_inputs: Any, padding: bool | str = True, max_length: int | None = None,
            pad_to_multiple_of: int | None = None, padding_side: str | None = None,
            return_attention_mask: bool | None = None, return_tensors: str | None = None,
            verbose: bool = True) -> BatchEncoding:
        """transformers' `pad`: tokenized features (a list of dicts, or a dict of lists) padded with the pad
        token, an attention mask made where missing; what `DataCollatorWithPadding(tokenizer)` calls. The width is
        the call's (`pad_width`): "max_length" without max_length pads to model_max_length, as transformers."""
        if max_length is not None:
            max_length = _token_count(max_length, self.model_max_length)
        self._check_can_pad(padding)
        return batch_encoding.pad(encoded_inputs, pad_token_id=self.pad_token_id, padding=padding,
                                  limit=self._pad_limit(max_length), pad_to_multiple_of=pad_to_multiple_of,
                                  padding_side=checked_side("padding_side", padding_side, self.padding_side),
                                  return_attention_mask=return_attention_mask, return_tensors=return_tensors)

    def num_special_tokens_to_add(self, pair: bool = False) -> int:
        """How many special tokens a text (a pair) gets."""
        return self.backend.num_special_tokens_to_add(pair)

    def get_special_tokens_mask(self, token_ids_0: list[int], token_ids_1: list[int] | None = None,
                                already_has_special_tokens: bool = False) -> list[int]:
        """1 for each special token, 0 for the others, of ids that already hold them (transformers'
        `already_has_special_tokens=True`); for ids without them, the tokenizer's `return_special_tokens_mask`."""
        if not already_has_special_tokens:
            raise InputError("get_special_tokens_mask reads ids that hold their special tokens: pass "
                             "already_has_special_tokens=True, or call the tokenizer with "
                             "return_special_tokens_mask=True.")
        special = set(self.all_special_ids)
        return [1 if i in special else 0 for i in [*token_ids_0, *(token_ids_1 or [])]]

    @property
    def special_tokens_map(self) -> dict[str, str]:
        """The named special tokens the tokenizer has (`bos_token`, ...), as transformers'."""
        return {f"{name}_token": token for name, token in self.special_tokens.items() if token is not None}

    def get_added_vocab(self) -> dict[str, int]:
        """The added tokens (special ones included) and their ids, as transformers'."""
        return {t.content: i for i, t in sorted(self.backend.get_added_tokens_decoder().items())}

    def word_ids(self, encoding: Encoding, text: str, text_pair: str | None = None) -> list[int | None]:
        """The word of each token of the backend's encoding of `text` (and `text_pair`); None for special tokens:
        the backend's, except for FlauBERT, whose backend sees one pre-token per BPE unit (`moses.word_ids`)."""
        if not self._python:
            return list(encoding.word_ids)
        added = {i: t.content for i, t in self.backend.get_added_tokens_decoder().items()}
        texts = (text,) if text_pair is None else (text, text_pair)
        return moses.word_ids(encoding, texts, self.backend.pre_tokenizer, added)

    def tokenize(self, text: str, text_pair: str | None = None, *, add_special_tokens: bool = False) -> list[str]:
        """The text's tokens (without special tokens unless asked, as transformers' tokenize): all of them, whatever
        truncation the last call set on the backend (a pipeline's call left its 512 there, audit 44)."""
        for name, value in (("text", text), ("text_pair", text_pair)):
            if value is not None and not isinstance(value, str):  # a list was read as pre-split words (audit 46)
                raise InputError(f"tokenize takes one text, a str; {name} is {type_of(value)}. For several: "
                                 "[tokenizer.tokenize(t) for t in texts], or tokenizer(texts).tokens(i).")
        texts = (text,) if text_pair is None else (text, text_pair)
        with self._lock:
            self._set_truncation(None, 0, "longest_first")
            (encoding,) = self._encode([texts if text_pair is not None else text], add_special_tokens)
        return list(encoding.tokens)

    def convert_ids_to_tokens(self, ids: int | Sequence[int], skip_special_tokens: bool = False) -> str | list[str]:
        if _is_one_id(ids):
            return self.backend.id_to_token(int(ids))
        special = set(self.all_special_ids) if skip_special_tokens else set()
        return [self.backend.id_to_token(int(i)) for i in ids if int(i) not in special]

    def convert_tokens_to_ids(self, tokens: str | Sequence[str] | None):
        """Ids of tokens; a token outside the vocabulary gets the unknown token's id, as in transformers (None
        where the vocabulary has no unknown token)."""
        if tokens is None:
            return None
        if isinstance(tokens, str):
            found = self._id(tokens)
            return found if found is not None else self.unk_token_id
        return [self.convert_tokens_to_ids(t) for t in tokens]

    def _set_special(self, name: str, value: Any) -> None:
        """`tokenizer.pad_token = tokenizer.eos_token` and the like: a token the vocabulary holds (a str, or an
        AddedToken), or None; the matching `*_token_id` follows, and padding uses a new pad token."""
        content = getattr(value, "content", value)  # tokenizers' / transformers' AddedToken
        if content is not None and not isinstance(content, str):
            raise InputError(f"{name}_token must be a string (a token of the vocabulary) or None, got "
                             f"{type_of(value)}.")
        if content is not None and self._id(content) is None:
            raise InputError(f"{name}_token={content!r} is not in the vocabulary: transformers would add it as a new "
                             "token, but coulisse has no add_tokens (the model has no embedding for it); pick a token "
                             f"the vocabulary holds (e.g. tokenizer.{name}_token = tokenizer.eos_token).")
        self.special_tokens[name] = content
        if name == "pad":
            self.pad_token_id = self._id(content)

    def _id(self, token: str | None) -> int | None:
        """The id of `token`, None when the vocabulary lacks it (or for None)."""
        return None if token is None else self.backend.token_to_id(token)

    # The special tokens as transformers names them: `mask_token` ("<mask>"), `mask_token_id`... (None where the
    # tokenizer has none; `pad_token_id` is an attribute, None without a pad token too)
    bos_token, eos_token, unk_token, sep_token = _token("bos"), _token("eos"), _token("unk"), _token("sep")
    pad_token, cls_token, mask_token = _token("pad"), _token("cls"), _token("mask")
    bos_token_id, eos_token_id, unk_token_id = _token_id("bos"), _token_id("eos"), _token_id("unk")
    sep_token_id, cls_token_id, mask_token_id = _token_id("sep"), _token_id("cls"), _token_id("mask")

    @property
    def all_special_tokens(self) -> list[str]:
        """The special tokens the vocabulary holds, each once, in transformers' order: the named ones (bos, eos,
        unk, sep, pad, cls, mask, then a config's own `*_token`s), then the extra ones (`extra_special_tokens`)."""
        extras = [t.get("content") if isinstance(t, dict) else t
                  for t in self.settings.get("extra_special_tokens") or self._family_extras]
        tokens = [*self.special_tokens.values(), *model_specific_tokens(self.settings).values(), *extras]
        return list(dict.fromkeys(t for t in tokens if isinstance(t, str) and self._id(t) is not None))

    @property
    def all_special_ids(self) -> list[int]:
        return [self._id(t) for t in self.all_special_tokens]

    @property
    def vocab_size(self) -> int:
        """The vocabulary without added tokens, as transformers' `vocab_size` (`len(tokenizer)` counts them)."""
        return self.backend.get_vocab_size(with_added_tokens=False)

    @property
    def is_fast(self) -> bool:
        """Whether encoding runs in the Rust tokenizers library alone (FlauBERT's Moses step is Python)."""
        return not self._python

    def save_pretrained(self, directory: str | Path) -> tuple[str, ...]:
        """Write the tokenizer files as transformers saves them (`tokenizer.json`, the slow files,
        tokenizer_config.json) into `directory` (made if missing); returns the paths written, as transformers
        does. A whole checkpoint: the pipeline's save_pretrained. The slow files are copied from the folder the
        tokenizer was read from (`directory`), whatever name it was asked by (a Hub id: audit 45)."""
        from coulisse.tokenizer.export import save_tokenizer

        family = family_of(self.model_type, self.settings.get("tokenizer_class"))
        if self.directory is None or family is None:
            raise InputError("this tokenizer was not read from a checkpoint folder of a known family; save the "
                             "pipeline instead (pipe.save_pretrained(folder)).")
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        return tuple(str(out / name) for name in save_tokenizer(self, self.directory, out, family))

    def get_vocab(self) -> dict[str, int]:
        return self.backend.get_vocab(with_added_tokens=True)

    @property
    def vocab(self) -> dict[str, int]:
        """`get_vocab()`, as transformers' fast tokenizers expose it."""
        return self.get_vocab()

    @property
    def pad_token_type_id(self) -> int:
        """The token type padding gets (0, as transformers')."""
        return 0

    def convert_tokens_to_string(self, tokens: Sequence[str]) -> str:
        """Tokens back to text through the backend's decoder (how transformers rebuilds NER words)."""
        decoder = self.backend.decoder
        return decoder.decode(list(tokens)) if decoder is not None else " ".join(tokens)

    def batch_decode(self, sequences: Any, skip_special_tokens: bool = False,
                     clean_up_tokenization_spaces: bool | None = None, **kwargs: Any) -> list[str]:
        """`decode` of each row (lists of ids, or a 2-D tensor or array); one sequence gives a list of one string,
        as transformers 5 (which warns that it is deprecated)."""
        sequences = _as_lists(sequences)
        if isinstance(sequences, (list, tuple)) and not sequences:
            return []
        out = self.decode(sequences, skip_special_tokens, clean_up_tokenization_spaces, **kwargs)
        if isinstance(out, str):
            _warn_once(log, "Passing a single sequence to `batch_decode` is deprecated and will be removed in a "
                       "future version, use `decode` instead.")
            return [out]
        return out

    def decode(self, ids: Any, skip_special_tokens: bool = False, clean_up_tokenization_spaces: bool | None = None,
               **kwargs: Any) -> str | list[str]:
        """transformers 5's decode: the backend's, then its space clean-up when the tokenizer config asks
        for it (`clean_up_tokenization_spaces`), except on BPE models, where it would corrupt the text. One
        id (an int, or a tensor of one) decodes alone; rows of ids (a list of lists, a 2-D tensor) give a list of
        strings."""
        check_keywords(kwargs, DECODE_NO_OPS, ("token_ids", "skip_special_tokens", "clean_up_tokenization_spaces"),
                       "decode(...)")
        ids = _as_lists(ids)
        if isinstance(ids, (list, tuple)) and ids and isinstance(ids[0], (list, tuple)):
            return [self.decode(row, skip_special_tokens, clean_up_tokenization_spaces) for row in ids]
        if isinstance(ids, str):
            raise TypeError(f"decode takes token ids, not a string ({ids!r:.40}); pass tokenizer(text)['input_ids'], "
                            "or convert_tokens_to_ids for tokens.")
        ids = [_one_token_id(ids)] if _is_one_id(ids) else [_one_token_id(i) for i in ids]
        text = self.backend.decode(ids, skip_special_tokens=skip_special_tokens)
        if clean_up_tokenization_spaces is None:
            clean_up_tokenization_spaces = bool(self.settings.get("clean_up_tokenization_spaces", False))
        if clean_up_tokenization_spaces and type(self.backend.model).__name__ != "BPE":
            for before, after in CLEAN_UP:
                text = text.replace(before, after)
        return text

    def __len__(self) -> int:
        return self.backend.get_vocab_size(with_added_tokens=True)

    def __repr__(self) -> str:
        specials = {name: token for name, token in self.special_tokens.items() if token is not None}
        return (f"Tokenizer(name_or_path={self.name_or_path!r}, source={self.source!r}, vocab_size={len(self)}, "
                f"model_max_length={self.model_max_length}, padding_side={self.padding_side!r}, "
                f"special_tokens={specials})")

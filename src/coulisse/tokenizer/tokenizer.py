"""The preprocessing stage: text in, `input_ids` / `attention_mask` (/ `token_type_ids`) out.

A thin, thread-safe wrapper over a fast `tokenizers.Tokenizer` that answers with transformers'
habits (`tokenizer(texts, padding=True, truncation=True, return_tensors="pt")`). It never imports
torch unless tensors of torch are asked for. This module holds the `Tokenizer` class and its public API (the
call, `encode_batch`, `pad`, `decode`, special tokens, saving, copies); the checks of what a call is given are
`inputs.py`'s, the truncation plans `truncation.py`'s, the padded answer `batch_encoding.py`'s, the named special
tokens `special_tokens.py`'s, the shared backend's lock `backend_state.py`'s.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tokenizers import Encoding, Regex, normalizers, pre_tokenizers
from tokenizers import Tokenizer as Backend

from coulisse.errors import InputError, TokenizerLoadError, given_save_directory, renamed_keyword, type_of
from coulisse.families import GENERIC_TOKENIZER_CLASSES, family_of
from coulisse.tokenizer import batch_encoding, moses, prefix
from coulisse.tokenizer.backend import build_backend
from coulisse.tokenizer.backend_state import ForkSafeLock, ready_backend
from coulisse.tokenizer.batch_encoding import (
    NO_PADDING,
    BatchEncoding,
    check_multiple,
    checked_side,
    collate,
    pad_width,
    to_tensors,
)
from coulisse.tokenizer.build import SPM_FILES
from coulisse.tokenizer.inputs import (
    as_lists,
    call_texts,
    is_one_id,
    one_token_id,
    panic_error,
    refuse_bad_unicode,
    split_words,
    token_count,
    truncation_strategy,
)
from coulisse.tokenizer.keywords import CALL_NO_OPS, DECODE_NO_OPS, check_keywords
from coulisse.tokenizer.special_tokens import (
    checked_token,
    special_tokens_held,
    token_id_property,
    token_of_settings,
    token_property,
)
from coulisse.tokenizer.truncation import (
    check_stride,
    cut_windows,
    encode_from_prefixes,
    encode_words,
    longest_first_pairs,
    overflow_windows,
    truncate_as_python,
)

log = logging.getLogger(__name__)
_WARNED: set[str] = set()  # messages logged once per process, as transformers' `warning_once`

# Configs that say "no limit" store a huge sentinel (int(1e30)).
UNBOUNDED = 10**9
# transformers' `clean_up_tokenization`, in its order.
CLEAN_UP = ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"), (" 'm", "'m"),
            (" 's", "'s"), (" 've", "'ve"), (" 're", "'re"))


# __call__'s own keywords, for the closest-name hint of a refused one
CALL_KEYWORDS = ("text", "text_pair", "padding", "truncation", "max_length", "return_tensors", "add_special_tokens",
                 "return_offsets_mapping", "return_token_type_ids", "return_attention_mask",
                 "return_special_tokens_mask", "padding_side", "pad_to_multiple_of", "return_length",
                 "is_split_into_words", "stride", "return_overflowing_tokens", "tokenizer_kwargs")


def _warn_once(logger: logging.Logger, message: str) -> None:
    if message not in _WARNED:
        _WARNED.add(message)
        logger.warning(message)


def _side(settings: dict, key: str) -> str:
    """tokenizer_config.json's `padding_side` / `truncation_side` ("right" where it says nothing)."""
    value = settings.get(key)
    if value is None:
        return "right"
    if value not in ("right", "left"):
        raise TokenizerLoadError(f"{key}={value!r} in tokenizer_config.json is neither 'right' nor 'left' "
                                 "(transformers refuses it too); fix it, or delete the key.")
    return value


def _names_without_mask(settings: dict) -> bool:
    """Whether tokenizer_config.json's `model_input_names` lists the model's inputs without `attention_mask`."""
    names = settings.get("model_input_names")
    return (isinstance(names, list) and bool(names) and all(isinstance(name, str) for name in names)
            and "attention_mask" not in names)


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
        if _names_without_mask(settings):  # a folder whose model reads no mask: none returned, as in transformers
            self.model_input_names.remove("attention_mask")
        # FlauBERT's tokenizer runs Python code (Moses), as transformers' only tokenizer for it does.
        self._python = family is not None and family.python_tokenizer
        # The special tokens are the tokenizer class's (XLM-R's on a BERT model that reads its vocabulary).
        spelling = family_of(settings.get("tokenizer_class"), model_type)
        self._family_specials = spelling.special_tokens if spelling is not None else {}
        self._family_extras = spelling.extra_special_tokens if spelling is not None else ()
        self._lock = ForkSafeLock()
        self._word_by_word: bool | None = None  # prefix.reads_word_by_word(backend), once a long text asks
        ready_backend(backend, settings)
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
        return token_of_settings(name, self.settings, self._family_specials, self.backend)

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
                    return truncate_as_python(self, texts, pairs, limit, strategy, add_special_tokens, direction)
                if pairs is not None and limit is not None and strategy == "longest_first" and not stride:
                    return longest_first_pairs(self, texts, pairs, limit, add_special_tokens, direction)
                self._set_truncation(limit, stride, strategy, direction)
                if pairs is None and limit is not None and not stride and direction == "right":
                    return encode_from_prefixes(self, list(texts), limit, add_special_tokens)
                return self._encode(inputs, add_special_tokens)
        except (TypeError, ValueError):
            refuse_bad_unicode(texts, pairs)
            raise
        except Exception as e:  # the Rust library's plain Exception, when the member it may cut is too short
            if "Truncation error" not in str(e):
                raise
            member = {"only_first": "first text", "only_second": "second text"}.get(strategy, "pair")
            raise InputError(f"cannot truncate to {limit} tokens with truncation={strategy!r}: the {member} alone "
                             "is too short to cut that much; raise max_length, or use truncation='longest_first'."
                             ) from None

    def _encode(self, inputs: list, add_special_tokens: bool, is_pretokenized: bool = False) -> list[Encoding]:
        """The backend's encodings; call with the lock held. A tokenizer running Python code encodes one input
        at a time: the backend's threads would only queue for the GIL (500 reviews on 2 cores: 1.3 s alone,
        2.0-3.3 s threaded). Every encoding path ends here, so the library's panic is said here (`panic_error`)."""
        try:
            if not self._python:
                return self.backend.encode_batch(inputs, add_special_tokens=add_special_tokens,
                                                 is_pretokenized=is_pretokenized)
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

    def encode_windows(self, texts: Sequence[str], pairs: Sequence[str], *, max_length: int, stride: int,
                       strategy: str = "only_second", direction: str | None = None) -> list[list[Encoding]]:
        """Pairs whose truncated member is cut into overlapping windows, as transformers' fast tokenizers do
        with `return_overflowing_tokens=True, stride=...`: per input, the first window then its overflow.
        Consecutive windows share `stride` tokens of the truncated member. `direction="left"` (None: the
        tokenizer's `truncation_side`) starts from the member's end, as transformers' `truncation_side="left"`."""
        direction = checked_side("truncation_side", direction, self.truncation_side)
        names = ("question", "context") if strategy == "only_second" else ("text", "text_pair")
        try:
            return cut_windows(self, texts, pairs, max_length, stride, strategy, direction)
        except (TypeError, ValueError, InputError):
            refuse_bad_unicode(texts, pairs, names)
            raise

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
        ready_backend(backend, self.settings)
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
        # What a call leaves behind is not state: the truncation it set on the backend (the next call sets its own)
        # and what was judged or said once. So the pickle of a tokenizer is the same before and after calls, as
        # `datasets` needs to fingerprint a `.map()` and find its cache again.
        state = {k: v for k, v in self.__dict__.items() if k not in ("_lock", "_warned_longer")}
        state["_word_by_word"] = None
        with self._lock:
            self._set_truncation(None, 0, "longest_first")
            state["backend"] = moses.backend_state(self.backend)
        return state

    def __setstate__(self, state: dict) -> None:
        state = dict(state)
        state.pop("_truncation", None)  # a pickle of before audit 46 kept it beside the lock
        state.setdefault("directory", None)  # before audit 45 (an older build's pickle): saved only as a pipeline
        state["backend"] = moses.backend_from_state(state["backend"])
        ready_backend(state["backend"], state["settings"])  # no truncation, as the new lock records
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
                 is_split_into_words: bool = False, stride: int = 0, return_overflowing_tokens: bool = False,
                 tokenizer_kwargs: dict | None = None, **kwargs: Any) -> BatchEncoding:
        """transformers' call: one text or a batch (with `text_pair`s), padded, truncated, as lists or tensors.
        `truncation` is True, False or a strategy ("longest_first", "only_first", "only_second",
        "do_not_truncate"). `padding_side` ("right" or "left") overrides the tokenizer's for this call.
        `pad_to_multiple_of` rounds the padded length up to a multiple of it (with `padding` only).
        `return_length` adds `length`: each row's length, padding included (as transformers' fast tokenizers
        count it; its Python ones, such as FlauBERT's, count a batch's rows before padding).
        `return_token_type_ids` / `return_attention_mask` default to what the model reads.
        `is_split_into_words=True`: each text is a list of words (a token classification data set's), tokenized word
        by word as transformers' fast tokenizers do: `word_ids()` gives each token's index in that list.
        `return_overflowing_tokens=True` with `stride`: what truncation cuts off comes back as more rows, windows
        that share `stride` tokens with the one before (of the member truncation cuts, for pairs), and
        `overflow_to_sample_mapping` says each row's input: the course's question answering preprocessing."""
        if tokenizer_kwargs:  # transformers merges them into the call's keywords
            return self(text, text_pair, **{**dict(
                padding=padding, truncation=truncation, max_length=max_length, return_tensors=return_tensors,
                add_special_tokens=add_special_tokens, return_offsets_mapping=return_offsets_mapping,
                return_token_type_ids=return_token_type_ids, return_attention_mask=return_attention_mask,
                return_special_tokens_mask=return_special_tokens_mask, padding_side=padding_side,
                pad_to_multiple_of=pad_to_multiple_of, return_length=return_length,
                is_split_into_words=is_split_into_words, stride=stride,
                return_overflowing_tokens=return_overflowing_tokens), **kwargs, **tokenizer_kwargs})
        check_keywords(kwargs, CALL_NO_OPS, CALL_KEYWORDS, "tokenizer(...)")
        if max_length is not None:
            max_length = token_count(max_length, self.model_max_length)
        if is_split_into_words:
            texts, pairs, single = split_words(text, text_pair)
        else:
            texts, pairs, single = call_texts(text, text_pair)
        strategy = truncation_strategy(truncation, max_length, padding)
        if strategy == "only_second" and pairs is None:
            raise InputError("truncation='only_second' cuts the second text of pairs, but no text_pair was given; "
                             "pass text_pair=, or truncation=True.")
        self._check_multiple(pad_to_multiple_of, padding, strategy, max_length)
        self._check_can_pad(padding)
        encodings, sample_map = self._call_encodings(texts, pairs, strategy, max_length, add_special_tokens,
                                                     is_split_into_words, return_overflowing_tokens, stride)
        single = single and sample_map is None  # overflowing rows are a batch, even for one text
        if strategy == "do_not_truncate" and kwargs.get("verbose", True):  # transformers' verbose=False: silent
            self._warn_longer(encodings)
        types = "token_type_ids" in self.model_input_names if return_token_type_ids is None else return_token_type_ids
        side = checked_side("padding_side", padding_side, self.padding_side)
        width = pad_width([len(e) for e in encodings], padding, self._pad_limit(max_length), pad_to_multiple_of)
        mask = "attention_mask" in self.model_input_names if return_attention_mask is None else return_attention_mask
        data = collate(encodings, width, self.pad_token_id, types=types, mask=mask,
                       offsets=return_offsets_mapping, special_mask=return_special_tokens_mask, left=side == "left")
        if sample_map is not None:
            data["overflow_to_sample_mapping"] = sample_map
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

    def _call_encodings(self, texts: list, pairs: list | None, strategy: str, max_length: int | None,
                        add_special_tokens: bool, words: bool, overflowing: bool,
                        stride: Any) -> tuple[list[Encoding], list[int] | None]:
        """A call's encodings, and with `overflowing` the input of each row: texts as `encode_batch` truncates
        them, words split beforehand (`words`), or every window truncation cuts off (truncation.py)."""
        check_stride(self, stride, strategy, max_length, pairs is not None, add_special_tokens)
        if not (words or overflowing):
            return self.encode_batch(texts, pairs, truncation=strategy != "do_not_truncate", max_length=max_length,
                                     add_special_tokens=add_special_tokens, strategy=strategy), None
        if words:
            limit = None if strategy == "do_not_truncate" else max_length or self.model_max_length
            limit = None if limit is not None and limit >= UNBOUNDED else limit
            windows = encode_words(self, texts, pairs, strategy, limit, add_special_tokens, stride)
        else:
            windows = overflow_windows(self, texts, pairs, strategy, max_length, stride, add_special_tokens)
        if not overflowing:  # the first row of each: what truncation keeps
            return [ws[0] for ws in windows], None
        return [w for ws in windows for w in ws], [i for i, ws in enumerate(windows) for _ in ws]

    def _word_ids_of(self, texts: list[str], pairs: list[str] | None):
        """`word_ids` for the texts of a call, by batch index; None where the backend's are right."""
        if not self._python:
            return None
        return lambda i, encoding: self.word_ids(encoding, texts[i], pairs[i] if pairs is not None else None)

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
        the call's other keywords (`padding_side`, `pad_to_multiple_of`, `stride`, the no-op ones) pass through."""
        if not isinstance(text, str):
            raise InputError(f"encode takes one text (a string), got {type(text).__name__}; call the tokenizer "
                             "itself for a batch.")
        ids_only = {k: v for k, v in kwargs.items() if k in ("padding_side", "pad_to_multiple_of", "stride")}
        check_keywords({k: v for k, v in kwargs.items() if k not in ids_only}, CALL_NO_OPS,
                       ("add_special_tokens", "truncation", "max_length", "return_tensors", "padding", "padding_side",
                        "pad_to_multiple_of", "stride"), "encode(...)")
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
            max_length = token_count(max_length, self.model_max_length)
        self._check_can_pad(padding)
        return batch_encoding.pad(encoded_inputs, pad_token_id=self.pad_token_id, padding=padding,
                                  limit=self._pad_limit(max_length), pad_to_multiple_of=pad_to_multiple_of,
                                  padding_side=checked_side("padding_side", padding_side, self.padding_side),
                                  return_attention_mask=("attention_mask" in self.model_input_names
                                                         if return_attention_mask is None else return_attention_mask),
                                  return_tensors=return_tensors)

    @property
    def backend_tokenizer(self):
        """The Rust `tokenizers.Tokenizer` that encodes (transformers' name for it); each call sets its truncation
        and padding on it, so set neither here."""
        return self.backend

    def add_tokens(self, *args: Any, **kwargs: Any) -> int:
        raise InputError("coulisse's tokenizer has no add_tokens: a new token has no embedding in the model. Add it "
                         "with transformers (tokenizer.add_tokens, then model.resize_token_embeddings), save both, "
                         "and load that folder: its added tokens are read.")

    def add_special_tokens(self, *args: Any, **kwargs: Any) -> int:
        raise InputError("coulisse's tokenizer has no add_special_tokens: a new token has no embedding in the model; "
                         "set an existing one (tokenizer.pad_token = tokenizer.eos_token), or add it with "
                         "transformers, resize the model's embeddings, save both, and load that folder.")

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

    def tokenize(self, text: str, pair: str | None = None, *, add_special_tokens: bool = False,
                 text_pair: str | None = None) -> list[str]:
        """The text's tokens (without special tokens unless asked, as transformers' tokenize, whose second text is
        `pair`): all of them, whatever truncation the last call set on the backend (a pipeline's call left its 512
        there, audit 44)."""
        if text_pair is not None:  # coulisse 0.1.0's name
            pair = renamed_keyword(pair, text_pair, "text_pair", "pair", "tokenize")
        for name, value in (("text", text), ("pair", pair)):
            if value is not None and not isinstance(value, str):  # a list was read as pre-split words (audit 46)
                raise InputError(f"tokenize takes one text, a str; {name} is {type_of(value)}. For several: "
                                 "[tokenizer.tokenize(t) for t in texts], or tokenizer(texts).tokens(i).")
        texts = (text,) if pair is None else (text, pair)
        with self._lock:
            self._set_truncation(None, 0, "longest_first")
            (encoding,) = self._encode([texts if pair is not None else text], add_special_tokens)
        return list(encoding.tokens)

    def convert_ids_to_tokens(self, ids: int | Sequence[int], skip_special_tokens: bool = False) -> str | list[str]:
        if is_one_id(ids):
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
        content = checked_token(name, value, self.backend)
        self.special_tokens[name] = content
        if name == "pad":
            self.pad_token_id = self._id(content)

    def _id(self, token: str | None) -> int | None:
        """The id of `token`, None when the vocabulary lacks it (or for None)."""
        return None if token is None else self.backend.token_to_id(token)

    # The special tokens as transformers names them: `mask_token` ("<mask>"), `mask_token_id`... (None where the
    # tokenizer has none; `pad_token_id` is an attribute, None without a pad token too)
    bos_token, eos_token, unk_token, sep_token, pad_token, cls_token, mask_token = (
        token_property(name) for name in ("bos", "eos", "unk", "sep", "pad", "cls", "mask"))
    bos_token_id, eos_token_id, unk_token_id, sep_token_id, cls_token_id, mask_token_id = (
        token_id_property(name) for name in ("bos", "eos", "unk", "sep", "cls", "mask"))

    @property
    def all_special_tokens(self) -> list[str]:
        """The special tokens the vocabulary holds, each once, in transformers' order: the named ones (bos, eos,
        unk, sep, pad, cls, mask, then a config's own `*_token`s), then the extra ones (`extra_special_tokens`)."""
        return special_tokens_held(self.special_tokens, self.settings, self._family_extras, self.backend)

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

    def save_pretrained(self, save_directory: str | Path | None = None, *,
                        directory: str | Path | None = None) -> tuple[str, ...]:
        """Write the tokenizer files as transformers saves them (`tokenizer.json`, the slow files,
        tokenizer_config.json) into `save_directory` (made if missing); returns the paths written, as transformers
        does. A whole checkpoint: the pipeline's save_pretrained. The slow files are copied from the folder the
        tokenizer was read from (`directory`), whatever name it was asked by (a Hub id: audit 45)."""
        from coulisse.tokenizer.export import save_tokenizer

        save_directory = given_save_directory(save_directory, directory)
        family = family_of(self.model_type, self.settings.get("tokenizer_class"))
        if self.directory is None or family is None:
            raise InputError("this tokenizer was not read from a checkpoint folder of a known family; save the "
                             "pipeline instead (pipe.save_pretrained(folder)).")
        out = Path(save_directory)
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
        sequences = as_lists(sequences)
        if isinstance(sequences, (list, tuple)) and not sequences:
            return []
        out = self.decode(sequences, skip_special_tokens, clean_up_tokenization_spaces, **kwargs)
        if isinstance(out, str):
            _warn_once(log, "Passing a single sequence to `batch_decode` is deprecated and will be removed in a "
                       "future version, use `decode` instead.")
            return [out]
        return out

    def decode(self, token_ids: Any = None, skip_special_tokens: bool = False,
               clean_up_tokenization_spaces: bool | None = None, **kwargs: Any) -> str | list[str]:
        """transformers 5's decode: the backend's, then its space clean-up when the tokenizer config asks
        for it (`clean_up_tokenization_spaces`), except on BPE models, where it would corrupt the text. One
        id (an int, or a tensor of one) decodes alone; rows of ids (a list of lists, a 2-D tensor) give a list of
        strings."""
        if "ids" in kwargs:  # coulisse 0.1.0's name
            token_ids = renamed_keyword(token_ids, kwargs.pop("ids"), "ids", "token_ids", "decode")
        elif token_ids is None:
            raise TypeError("decode() missing 1 required positional argument: 'token_ids'")
        check_keywords(kwargs, DECODE_NO_OPS, ("token_ids", "skip_special_tokens", "clean_up_tokenization_spaces"),
                       "decode(...)")
        ids = as_lists(token_ids)
        if isinstance(ids, (list, tuple)) and ids and isinstance(ids[0], (list, tuple)):
            return [self.decode(row, skip_special_tokens, clean_up_tokenization_spaces) for row in ids]
        if isinstance(ids, str):
            raise TypeError(f"decode takes token ids, not a string ({ids!r:.40}); pass tokenizer(text)['input_ids'], "
                            "or convert_tokens_to_ids for tokens.")
        ids = [one_token_id(ids)] if is_one_id(ids) else [one_token_id(i) for i in ids]
        if ids and min(ids) < 0:  # the Rust library's OverflowError, as transformers gives it, saying why
            raise OverflowError(f"token id {min(ids)} is no token: ids are 0 or more"
                                + ("; -100 marks the labels a loss ignores (padding): put the pad token's id there "
                                   "before decoding, np.where(labels != -100, labels, tokenizer.pad_token_id)"
                                   if -100 in ids else "") + ".")
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


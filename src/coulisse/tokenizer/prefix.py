"""A long text truncated from the right, tokenized from a prefix of it rather than whole.

The Rust tokenizers encode a whole text before truncation cuts it: 2 MB of reviews (~450,000 tokens) take 2-6 s
and ~1 GB, to keep 512 tokens. Yet most tokenizers read a text word by word: the normalizer maps characters
(or a few at a time: a grapheme, a literal, a run of spaces), the pre-tokenizer splits at spaces (and
punctuation, digits, scripts), and the model (BPE, WordPiece, Unigram) tokenizes each split alone. The tokens of
a text's first words then do not depend on what follows them, and the text's first `limit` tokens are those of
a prefix that holds them with a margin: a prefix ending at a word's end, right before a space.

Which tokenizers read that way is decided from their parts (`reads_word_by_word`, a list of the kinds known to
be local, everything else read whole: a `Split` on a regex, a `Replace` that could remove the spaces, a
pre-tokenizer that does not split at spaces), and a probe checks that a space survives the normalizer. The
prefix is accepted only when what truncation keeps ends at least `MARGIN_WORDS` words and `MARGIN_CHARS`
characters before the prefix's end (`holds_the_kept_tokens`): whatever the cut changes (the last word's tokens,
a grapheme or a run of spaces across it) lies past them. Otherwise a prefix four times longer is tried, up to
half the text, after which the text is encoded whole.

What differs from truncating the whole text: only `Encoding.overflowing` (the windows past the prefix are not
there; what remains still says the text was cut).

A pair under `longest_first` whose one member is that long (a query and a long document, for a cross-encoder) has
that member replaced by a prefix the same way (`pair_member_holds`), when the prefix keeps the member the longer
of the two and ends past what truncation keeps of it: `longest_first` then keeps the same counts, which depend
only on the shorter member's length and which member is longer.
"""

from __future__ import annotations

import json
import re
import unicodedata
from typing import Any

from tokenizers import Encoding
from tokenizers import Tokenizer as Backend

# A text this many times `limit` characters long, or longer, is tokenized from a prefix; the first prefix is as
# long (8 characters a token: French reviews average ~4.5, so most first prefixes hold the kept tokens twice).
CHARS_PER_TOKEN = 8
MARGIN_WORDS = 2  # whole words between what truncation keeps and the prefix's end
MARGIN_CHARS = 64  # and at least these characters
GROWTH = 4  # a prefix too short is tried again this many times longer

# Normalizers that map characters (or graphemes, or a few at a time) without looking further.
LOCAL_NORMALIZERS = {"NFC", "NFD", "NFKC", "NFKD", "Lowercase", "StripAccents", "BertNormalizer", "Precompiled",
                     "Nmt", "Strip", "Prepend", "ByteLevel"}
# Pre-tokenizers that split further without looking far; at least one of SPACE_SPLITTERS must be there too.
LOCAL_SPLITTERS = {"Punctuation", "Digits", "UnicodeScripts", "CharDelimiterSplit"}
SPACE_SPLITTERS = {"BertPreTokenizer", "Whitespace", "WhitespaceSplit", "Metaspace", "ByteLevel"}
WORD_MODELS = {"BPE", "WordPiece", "Unigram", "WordLevel"}
SPACE_RUNS = {" {2,}", "\\s+", " +"}  # Replace regexes that touch runs of spaces only

_WORD_END = re.compile(r"\S(?= )")
# Characters that form one grapheme with the space after them (Grapheme_Cluster_Break=Prepend): a normalizer that
# maps graphemes (Precompiled) could take that space away. Letters among them are listed; the rest are format
# characters (Cf), refused by category.
PREPEND = {0x0D4E, 0x111C2, 0x111C3, 0x1193F, 0x11941, 0x11A3A, 0x11A84, 0x11A85, 0x11A86, 0x11A87, 0x11A88,
           0x11A89, 0x11D46, 0x11F02}


def _local_normalizer(part: dict[str, Any] | None) -> bool:
    if part is None:
        return True
    kind = part.get("type")
    if kind == "Sequence":
        return all(_local_normalizer(p) for p in part.get("normalizers", []))
    if kind == "Replace":
        pattern, content = part.get("pattern", {}), part.get("content", "")
        if "String" in pattern:  # a literal: local, unless it can match across a space (or what one became)
            literal = pattern["String"]
            if literal and all(ch.isspace() for ch in literal):
                return content in (" ", "\u2581")
            return not any(ch.isspace() or ch == "\u2581" for ch in literal)
        return pattern.get("Regex") in SPACE_RUNS and content in (" ", "\u2581")
    return kind in LOCAL_NORMALIZERS


def _splitters(part: dict[str, Any] | None) -> list[dict[str, Any]] | None:
    """The pre-tokenizer's steps, or None when one of them is not known to be local."""
    if part is None:
        return []
    kind = part.get("type")
    if kind == "Sequence":
        steps = [_splitters(p) for p in part.get("pretokenizers", [])]
        return None if any(s is None for s in steps) else [x for s in steps for x in s]  # type: ignore[union-attr]
    if kind == "Metaspace" and part.get("split", True) is False:
        return None  # the whole text is one word
    if kind == "ByteLevel" and part.get("use_regex", True) is False:
        return None
    if kind in SPACE_SPLITTERS or kind in LOCAL_SPLITTERS:
        return [part]
    return None


def reads_word_by_word(backend: Backend) -> bool:
    """Whether `backend` tokenizes a text's words independently of what follows them (see the module)."""
    try:
        normalizer = json.loads(backend.normalizer.__getstate__()) if backend.normalizer is not None else None
        pre = json.loads(backend.pre_tokenizer.__getstate__()) if backend.pre_tokenizer is not None else None
    except (AttributeError, TypeError, ValueError):  # a part written in Python: nothing known about it
        return False
    steps = _splitters(pre)
    if not _local_normalizer(normalizer) or not steps or not any(s["type"] in SPACE_SPLITTERS for s in steps):
        return False
    if type(backend.model).__name__ not in WORD_MODELS:
        return False
    added = backend.get_added_tokens_decoder().values()  # matched in the text before the pre-tokenizer splits it
    if any(ch.isspace() or ch == "\u2581" for token in added for ch in token.content):
        return False
    probe = backend.normalizer.normalize_str("xy z") if backend.normalizer is not None else "xy z"
    return probe.endswith((" z", "\u2581z"))  # the space that ends a prefix's last word is still there


def first_cut(text: str, limit: int) -> int | None:
    """Where the first prefix of `text` ends (right before a space that follows a word), or None when the text is
    too short for a prefix to save anything, or has no such place in its first half."""
    if len(text) < 2 * CHARS_PER_TOKEN * limit:
        return None
    return next_cut(text, CHARS_PER_TOKEN * limit)


def next_cut(text: str, at_least: int) -> int | None:
    """The first word end at or past `at_least` characters, if it leaves at least half the text out: a space
    between two characters that each stand alone as a grapheme with it (a letter, digit, punctuation or symbol;
    not a combining mark, a joiner or a modifier after it, nor a Prepend character before it)."""
    start = max(at_least - 1, 0)
    while (found := _WORD_END.search(text, start)) is not None and found.end() <= len(text) // 2:
        end = found.end()
        if _stands_alone(text[end - 1], before_space=True) and _stands_alone(text[end + 1], before_space=False):
            return end
        start = end
    return None


def _stands_alone(ch: str, before_space: bool) -> bool:
    category = unicodedata.category(ch)
    if category[0] not in "LNPS" or category == "Sk":  # marks, joiners, format characters, emoji modifiers
        return False
    return not (before_space and ord(ch) in PREPEND)


def clean_past(text: str, cut: int) -> bool:
    """Whether what the prefix leaves out holds no lone surrogate (the whole text would be refused for it)."""
    try:
        text[cut:].encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def holds_the_kept_tokens(encoding: Encoding, cut: int) -> bool:
    """Whether a prefix of `cut` characters, encoded and truncated (`encoding`, its cut-off windows in
    `overflowing`), ends far enough past what truncation keeps that the whole text keeps the same tokens."""
    windows = encoding.overflowing  # a list built at each access: read once
    if not windows:
        return False  # the prefix was not even cut
    last = [w for w in windows[-1].word_ids if w is not None]
    kept = [w for w in encoding.word_ids if w is not None]
    if not last or not kept:
        return False
    end = max(stop for _, stop in encoding.offsets)
    return max(kept) <= last[-1] - MARGIN_WORDS and end <= cut - MARGIN_CHARS


def pair_member_holds(encoding: Encoding, member: int, cut: int, kept: int) -> bool:
    """Whether member `member` (0 or 1) of a pair, a prefix of `cut` characters in `encoding` (the pair encoded
    whole), of which truncation keeps `kept` tokens, stands for the whole member: its tokens before its last word
    outnumber the other member's by two (so it stays the longer, whatever its last word becomes), and what is kept
    ends `MARGIN_WORDS` words and `MARGIN_CHARS` characters before the prefix's end."""
    sequences, words, offsets = encoding.sequence_ids, encoding.word_ids, encoding.offsets
    own = [k for k, s in enumerate(sequences) if s == member]
    other = sum(1 for s in sequences if s == 1 - member)
    if not own or not 1 <= kept < len(own):
        return False
    last_word = words[own[-1]]
    if last_word is None:
        return False
    before_last = sum(1 for k in own if words[k] is not None and words[k] < last_word)
    end_word, end = words[own[kept - 1]], offsets[own[kept - 1]][1]
    return (before_last >= other + 2 and end_word is not None and end_word <= last_word - MARGIN_WORDS
            and end <= cut - MARGIN_CHARS)

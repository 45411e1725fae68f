"""How a call's truncation is carried out on the backend, keeping what transformers keeps without what the Rust
library spends on long inputs.

The backend truncates by cutting a text into windows (a pair: every window of one member beside every window of
the other); these plans give the same ids, types and offsets from prefixes of the texts (`coulisse.tokenizer.
prefix`): single texts cut from the right (`encode_from_prefixes`), pairs under `longest_first`
(`longest_first_pairs`), the Python tokenizers' own truncation (`truncate_as_python`), and question answering's
overlapping windows (`cut_windows`). A call's `return_overflowing_tokens=True` keeps every window the backend's
own truncation cuts (`overflow_windows`, `check_stride`), and `is_split_into_words=True` reads words given
beforehand (`encode_words`). Each takes the `Tokenizer` and works through its `_encode` and `_set_truncation`, with
its lock held (`cut_windows`, `overflow_windows` and `encode_words` take it).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

from tokenizers import Encoding

from coulisse.errors import CoulisseError, InputError
from coulisse.tokenizer import prefix
from coulisse.tokenizer.batch_encoding import checked_side
from coulisse.tokenizer.inputs import refuse_bad_unicode

if TYPE_CHECKING:  # the tokenizer calls this module
    from coulisse.tokenizer.tokenizer import Tokenizer

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


def encode_from_prefixes(tok: Tokenizer, texts: list[str], limit: int, add_special_tokens: bool
                         ) -> list[Encoding]:
    """Single texts truncated from the right to `limit`: a long one tokenized from a prefix that holds what
    truncation keeps (`coulisse.tokenizer.prefix`), where the tokenizer reads word by word; the same
    encodings but `overflowing`. Call with the lock held and the truncation set."""
    cuts = {i: cut for i, text in enumerate(texts)
            if (cut := prefix.first_cut(text, limit)) is not None and prefix.clean_past(text, cut)}
    if not cuts or not tok._reads_word_by_word():
        return tok._encode(texts, add_special_tokens)
    encodings = tok._encode([text[:cuts[i]] if i in cuts else text for i, text in enumerate(texts)],
                            add_special_tokens)
    while cuts:
        for i in [i for i in cuts if prefix.holds_the_kept_tokens(encodings[i], cuts[i])]:
            del cuts[i]
        for i in list(cuts):  # too short: a longer prefix, or the whole text
            cut = prefix.next_cut(texts[i], prefix.GROWTH * cuts[i])
            if cut is None:
                del cuts[i]
                encodings[i] = tok._encode([texts[i]], add_special_tokens)[0]
            else:
                cuts[i] = cut
        if cuts:
            again = tok._encode([texts[i][:cuts[i]] for i in cuts], add_special_tokens)
            for i, e in zip(cuts, again, strict=True):
                encodings[i] = e
    return encodings


def truncate_as_python(tok: Tokenizer, texts: Sequence[str], pairs: Sequence[str] | None, limit: int,
                       strategy: str, add_special_tokens: bool, direction: str = "right") -> list[Encoding]:
    """transformers 5's Python tokenizers (the only ones some families have) take the tokens past `limit` off
    in one go: a single text, or the member `strategy` names, loses them all, down to nothing (the special
    tokens stay, even past `limit`); `longest_first` takes the difference off the longer member of a pair,
    then halves the rest, the first member keeping an odd token. The Rust library instead leaves a text whole
    when `limit` is below the special tokens' count, refuses to cut a member too short, and gives an odd
    token to the second member. Call with the lock held."""
    tok._set_truncation(None, 0, "longest_first")
    specials = tok.backend.num_special_tokens_to_add(pairs is not None) if add_special_tokens else 0
    firsts = tok._encode(list(texts), False)
    seconds = tok._encode(list(pairs), False) if pairs is not None else [None] * len(firsts)
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
                    a, b = _prefix(tok, text_a, a, n1), _prefix(tok, text_b, b, n2)
            a.truncate(max(n1, 0), direction=direction)
            if b is not None:
                b.truncate(max(n2, 0), direction=direction)
        out.append(tok.backend.post_process(a, b, add_special_tokens=add_special_tokens))
    return out


def longest_first_pairs(tok: Tokenizer, texts: Sequence[str], pairs: Sequence[str], limit: int,
                        add_special_tokens: bool, direction: str) -> list[Encoding]:
    """Pairs under `longest_first`, as the backend truncates them, without what it costs on long pairs: it
    cuts both members into windows and keeps every window of one beside every window of the other (two
    texts of 70,000 words take 22 GB). A pair over `limit` is encoded whole, then each member it cuts is
    shortened to a prefix that keeps what truncation keeps (`_cut_pair`), and that pair is truncated: the
    same ids, types and offsets; only `overflowing` no longer holds the windows past the prefixes. Call with
    the lock held."""
    tok._set_truncation(None, 0, "longest_first")
    inputs = list(zip(texts, pairs, strict=True))
    budget = limit - (tok.backend.num_special_tokens_to_add(True) if add_special_tokens else 0)
    encodings = _encode_long_members(tok, inputs, limit, budget, add_special_tokens, direction)
    over = [i for i, e in enumerate(encodings) if len(e) > limit]
    if not over:
        return encodings
    for i in over:
        cut = _cut_pair(tok, inputs[i], encodings[i], budget, direction, add_special_tokens)
        inputs[i] = cut or inputs[i]
    tok._set_truncation(limit, 0, "longest_first", direction)
    for i, e in zip(over, tok._encode([inputs[i] for i in over], add_special_tokens), strict=True):
        encodings[i] = e
    return encodings


def _encode_long_members(tok: Tokenizer, inputs: list[tuple[str, str]], limit: int, budget: int,
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
    if not cuts or not tok._reads_word_by_word():
        return tok._encode(inputs, add_special_tokens)
    whole = list(inputs)
    for i, (m, c) in cuts.items():
        inputs[i] = (inputs[i][0][:c], inputs[i][1]) if m == 0 else (inputs[i][0], inputs[i][1][:c])
    encodings = tok._encode(inputs, add_special_tokens)
    failed = []
    for i, (m, c) in cuts.items():
        sequences = encodings[i].sequence_ids
        n = (sequences.count(0), sequences.count(1))
        if not prefix.pair_member_holds(encodings[i], m, c, longest_first_lengths(*n, budget)[m]):
            failed.append(i)
            inputs[i] = whole[i]
    for i, e in zip(failed, tok._encode([inputs[i] for i in failed], add_special_tokens), strict=True):
        encodings[i] = e
    return encodings


def _cut_pair(tok: Tokenizer, pair: tuple[str, str], whole: Encoding, budget: int, direction: str,
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
    check = tok._encode([cut], add_special_tokens)[0]
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


def _prefix(tok: Tokenizer, text: str, encoding: Encoding, keep: int) -> Encoding:
    """The encoding of a prefix of `text` whose first `keep` tokens are `encoding`'s (a margin of
    `CUT_MARGIN` past them), else `encoding`: truncated to `keep`, it then leaves few windows. Call with the
    lock held."""
    end = min(keep + CUT_MARGIN, len(encoding))
    if end == len(encoding) or keep <= 0:
        return encoding
    shorter = tok._encode([text[:encoding.offsets[end - 1][1]]], False)[0]
    if shorter.ids[:keep] != encoding.ids[:keep] or shorter.offsets[:keep] != encoding.offsets[:keep]:
        return encoding
    return shorter


def cut_windows(tok: Tokenizer, texts: Sequence[str], pairs: Sequence[str], max_length: int, stride: int,
                strategy: str, direction: str) -> list[list[Encoding]]:
    """Pairs whose member `strategy` names is cut into windows of `max_length` tokens that overlap by
    `stride` (`Tokenizer.encode_windows`); per input, the first window then its overflow. Takes the lock."""

    def refused(detail: str) -> InputError:
        return InputError(
            f"cannot cut windows of {max_length} tokens with a stride of {stride}: the part that is not cut "
            f"(e.g. the question{detail}) leaves no more than the stride to the rest; raise max_seq_len, "
            "lower doc_stride, or shorten it.")

    with tok._lock:
        # tokenizers panics (an uncatchable-looking PyO3 PanicException, with a Rust backtrace on stderr)
        # where the kept member leaves no more than `stride` tokens to a member that must be cut: said first.
        tok._set_truncation(None, 0, "longest_first")
        kept_texts, cut_texts = (texts, pairs) if strategy == "only_second" else (pairs, texts)
        specials = tok.backend.num_special_tokens_to_add(True)
        kept = [len(e) for e in tok._encode(list(kept_texts), False)]
        if any(max_length - specials - n <= stride for n in kept):
            risky = [i for i, n in enumerate(kept) if max_length - specials - n <= stride]
            cut = tok._encode([cut_texts[i] for i in risky], False)
            for i, e in zip(risky, cut, strict=True):
                if kept[i] + len(e) + specials > max_length:
                    raise refused(f", {kept[i]} tokens and {specials} special ones")
        try:
            tok._set_truncation(max_length, stride, strategy, direction)
            encodings = tok._encode(list(zip(texts, pairs, strict=True)), True)
        except CoulisseError:  # a panic said by `_encode` (TokenizerLoadError): the tokenizer's, not the stride's
            raise
        except Exception as e:  # tokenizers' plain Exception when the other member is too long, its ValueError
            raise refused(f"; {e}") from e  # for a stride past the window
    return [[e, *e.overflowing] for e in encodings]


def overflow_windows(tok: Tokenizer, texts: list[str], pairs: list[str] | None, strategy: str,
                     max_length: int | None, stride: int, add_special_tokens: bool) -> list[list[Encoding]]:
    """`return_overflowing_tokens=True`: per input, its first row then the windows truncation cut off, as
    transformers' fast tokenizers make them (`encode_windows` for a pair whose one member is cut)."""
    if tok._python:
        raise InputError("return_overflowing_tokens=True is not read by this tokenizer (it runs Python code "
                         "around the Rust library, FlauBERT's Moses); its pipelines window long texts "
                         "themselves (stride= on a pipeline).")
    if strategy == "do_not_truncate":  # nothing cut, nothing overflows: one row per input
        return [[e] for e in tok.encode_batch(texts, pairs, truncation=False,
                                               add_special_tokens=add_special_tokens)]
    limit = max_length or tok.model_max_length
    if pairs is not None and strategy != "longest_first" and add_special_tokens:
        return tok.encode_windows(texts, pairs, max_length=limit, stride=stride, strategy=strategy)
    # the backend's own truncation, which keeps every window (encode_batch's plans keep the first alone)
    direction = checked_side("truncation_side", None, tok.truncation_side)
    inputs = list(zip(texts, pairs, strict=True)) if pairs is not None else list(texts)
    with tok._lock:
        tok._set_truncation(limit, stride, strategy, direction)
        try:
            encodings = tok._encode(inputs, add_special_tokens)
        except (TypeError, ValueError):
            refuse_bad_unicode(texts, pairs)
            raise
    return [[e, *e.overflowing] for e in encodings]


def check_stride(tok: Tokenizer, stride: object, strategy: str, max_length: int | None, pair: bool,
                 add_special_tokens: bool) -> None:
    """`stride` is a count of tokens, less than what a row keeps of its text, as the library checks it."""
    if isinstance(stride, bool) or not isinstance(stride, int) or stride < 0:
        raise InputError(f"stride={stride!r} is the number of tokens two windows share: pass an int, 0 or more.")
    if stride and strategy != "do_not_truncate":
        specials = tok.num_special_tokens_to_add(pair) if add_special_tokens else 0
        room = (max_length or tok.model_max_length) - specials
        if stride >= room:
            raise InputError(f"stride={stride} is not less than the {room} tokens a row keeps of its text "
                             f"(max_length less the special tokens), as transformers requires: lower stride=.")


def encode_words(tok: Tokenizer, texts: list[list[str]], pairs: list[list[str]] | None, strategy: str,
                 limit: int | None, add_special_tokens: bool, stride: int = 0) -> list[list[Encoding]]:
    """Texts given as lists of words, through the backend's pre-tokenized input, truncated by the backend, as
    transformers' fast tokenizers read `is_split_into_words=True` (each word is pre-tokenized on its own); per
    input, its first row then the windows truncation cut off (`stride` tokens shared). `limit`: None, no
    truncation."""
    if tok._python:
        raise InputError("is_split_into_words=True is not read by this tokenizer (it runs Python code around "
                         "the Rust library, FlauBERT's Moses): pass each text as one string, and read "
                         "word_ids() for the word of each token.")
    direction = checked_side("truncation_side", None, tok.truncation_side) if limit is not None else "right"
    inputs = list(zip(texts, pairs, strict=True)) if pairs is not None else texts
    with tok._lock:
        tok._set_truncation(limit, stride if limit is not None else 0, strategy, direction)
        try:
            encodings = tok._encode(inputs, add_special_tokens, is_pretokenized=True)
        except (TypeError, ValueError):
            refuse_bad_unicode([" ".join(t) for t in texts], [" ".join(p) for p in pairs] if pairs else None)
            raise
    return [[e, *e.overflowing] for e in encodings]

"""FlauBERT's tokenizer (XLM's layout): Moses normalization and word splitting, then BPE with `</w>` word ends.

transformers 5 ships no fast tokenizer for these files: its `FlaubertTokenizer` runs in Python, with
sacremoses (the Python port of Moses' Perl scripts). Per text between special tokens: `` and '' become ",
NFC, optional lowercasing (`do_lowercase`), Moses' unicode-punctuation replacements, its punctuation
normalizer and the removal of control characters, its French word splitter; then each word is cut into BPE
units, the last one ending in `</w>`. The same steps run here inside a `tokenizers.Tokenizer`, as a custom
pre-tokenizer that emits one pre-token per BPE unit, mapped to its id by a word-level model, so that
truncation, pairs, padding and batching are the ones every other coulisse tokenizer uses. Sequences are
`<s> A </s>` and `<s> A </s> B </s>`; no token types (transformers returns none).

Offsets: transformers' slow tokenizer has none. Here each unit points at the characters of the original text
its Moses word came from; where normalization rewrote them (« -> ", … -> ...), at the first of them.

sacremoses is needed only for these files: `pip install sacremoses`.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from pathlib import Path

from tokenizers import (
    AddedToken,
    Encoding,
    NormalizedString,
    PreTokenizedString,
    Tokenizer,
    decoders,
    models,
    pre_tokenizers,
    processors,
)

from coulisse.errors import TokenizerLoadError
from coulisse.jsonfile import read_json

LANG = "fr"  # FlauBERT's tokenizer always runs Moses' French rules
END = "</w>"
# FlauBERT's special tokens when tokenizer_config.json says nothing (transformers' FlaubertTokenizer defaults).
SPECIALS = dict(bos="<s>", sep="</s>", cls="</s>", pad="<pad>", unk="<unk>", mask="<special1>")
EXTRA_SPECIALS = [f"<special{i}>" for i in range(10)]

# Moses' replace-unicode-punctuation.perl: full-width and CJK punctuation to ASCII.
_UNICODE_PUNCT = str.maketrans({
    "，": ",", "、": ",", "”": '"', "“": '"', "∶": ":", "：": ":", "？": "?", "《": '"', "》": '"', "）": ")",
    "！": "!", "（": "(", "；": ";", "」": '"', "「": '"', "～": "~", "’": "'", "…": "...", "━": "-", "〈": "<",
    "〉": ">", "【": "[", "】": "]", "％": "%", **{chr(0xFF10 + d): str(d) for d in range(10)},
})
_FULL_STOPS = re.compile(r"[。．]\s*")
# For locating words in the original text only: normalized quotes and spaces back to one character each.
_FOLD = str.maketrans({"’": "'", "‘": "'", "‚": "'", "«": '"', "»": '"', "“": '"', "”": '"', "„": '"',
                       "\u00a0": " ", "\u202f": " "})
_WINDOW = 32  # how far past the previous word the next one is looked for
INF = float("inf")


def _fold(text: str) -> str:
    """One character for one: lowercase where that keeps the length, quotes unified."""
    text = text.translate(_FOLD)
    low = text.lower()
    if len(low) == len(text):
        return low
    return "".join(c if len(low := c.lower()) != 1 else low for c in text)


class MosesBPE:
    """The pre-tokenizer: text between special tokens -> one pre-token per BPE unit."""

    def __init__(self, merges: list[tuple[str, ...]], lowercase: bool):
        import sacremoses

        self.normalizer = sacremoses.MosesPunctNormalizer(lang=LANG)
        self.splitter = sacremoses.MosesTokenizer(lang=LANG)
        self.lowercase = lowercase
        # A pair listed twice keeps its last rank, as in transformers.
        self.ranks = {pair: rank for rank, pair in enumerate(merges)}
        self.units = functools.lru_cache(maxsize=1 << 16)(self._units)

    def __reduce__(self) -> tuple:
        """Pickled as its merges (in rank order) and casing; rebuilt on load (sacremoses' objects and the cache
        anew)."""
        return MosesBPE, (sorted(self.ranks, key=self.ranks.__getitem__), self.lowercase)

    def words(self, text: str) -> list[str]:
        """Moses words, after the normalizations transformers' FlaubertTokenizer applies, in its order."""
        text = unicodedata.normalize("NFC", text.replace("``", '"').replace("''", '"'))
        if self.lowercase:
            text = text.lower()
        text = _FULL_STOPS.sub(". ", text).translate(_UNICODE_PUNCT)
        text = self.normalizer.normalize(text)
        text = "".join(c for c in text if not unicodedata.category(c).startswith("C"))
        return [w for w in self.splitter.tokenize(text, return_str=False, escape=False) if w]

    def _units(self, word: str) -> tuple[str, ...]:
        """BPE: merge the best-ranked adjacent pair everywhere, left to right, until no pair is ranked."""
        symbols = [*word[:-1], word[-1] + END]
        while len(symbols) > 1:
            best = min(zip(symbols, symbols[1:], strict=False), key=lambda pair: self.ranks.get(pair, INF))
            if best not in self.ranks:
                break
            merged, i = [], 0
            while i < len(symbols):
                if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == best:
                    merged.append(symbols[i] + symbols[i + 1])
                    i += 2
                else:
                    merged.append(symbols[i])
                    i += 1
            symbols = merged
        return tuple(symbols)

    def split(self, _: int, chunk: NormalizedString) -> list[NormalizedString]:
        text = chunk.normalized
        words = self.words(text)
        pieces = []
        for word, (start, end) in zip(words, _spans(text, words), strict=True):
            units, done = self.units(word), 0
            for k, unit in enumerate(units):
                chars = len(unit) - (len(END) if k == len(units) - 1 else 0)  # the last unit ends in </w>
                pieces.append(_piece(chunk, start, end, done, done + chars, len(word), unit))
                done += chars
        return pieces

    def pre_tokenize(self, pretok: PreTokenizedString) -> None:
        pretok.split(self.split)


def _spans(text: str, words: list[str]) -> list[tuple[int, int]]:
    """Where each word sits in `text`: found literally (case and quotes aside) a little past the previous
    word with nothing alphanumeric skipped, else one character at that place."""
    folded, cursor, spans = _fold(text), 0, []
    for word in words:
        while cursor < len(text) and text[cursor].isspace():
            cursor += 1
        key = _fold(word)
        at = folded.find(key, cursor, cursor + len(key) + _WINDOW)
        if at == cursor or (at > cursor and not any(c.isalnum() for c in text[cursor:at])):
            spans.append((at, at + len(key)))
            cursor = at + len(key)
        else:
            at = min(cursor, len(text) - 1)
            spans.append((at, at + 1))
            cursor = at + 1
    return spans


def _piece(chunk: NormalizedString, start: int, end: int, i: int, j: int, length: int,
           unit: str) -> NormalizedString:
    """The unit for characters [i, j) of a word of `length` characters found at [start, end) of `chunk`:
    a slice of the original whose content is replaced by the unit, character by character."""
    if end - start == length:
        lo, hi = start + i, start + j
    else:  # the word was rewritten: share its span out, at least one character each
        lo = start + min(i, end - start - 1)
        hi = max(start + min(j, end - start), lo + 1)
    hi = min(hi, lo + len(unit))
    piece = chunk[lo:hi]
    if piece.normalized != unit[: hi - lo]:  # lowercased or rewritten: one Python call per character
        chars = iter(unit)
        piece.map(lambda _: next(chars))
    if len(unit) > hi - lo:
        piece.append(unit[hi - lo:])
    return piece


def read_merges(path: Path) -> list[tuple[str, ...]]:
    """XLM's merges.txt: one pair per line ("a b", a count may follow); the text after the last newline
    is ignored, as transformers does."""
    lines = path.read_text(encoding="utf-8").split("\n")[:-1]
    return [tuple(line.split()[:2]) for line in lines]


def build_moses_bpe(vocab_path: Path, merges_path: Path, *, unk: str, bos: str, sep: str,
                    specials: list[AddedToken], lowercase: bool) -> Tokenizer:
    """The backend for FlauBERT's vocab.json + merges.txt; `specials`: its special and added tokens, in the
    order that gives new ones their ids."""
    try:
        import sacremoses  # noqa: F401
    except ImportError as e:
        raise TokenizerLoadError(
            f"{vocab_path.parent} holds a FlauBERT tokenizer, which needs sacremoses (Moses normalization and "
            "word splitting): pip install sacremoses") from e
    vocab = read_json(vocab_path, error=TokenizerLoadError, fix="download the tokenizer's files again")
    tok = Tokenizer(models.WordLevel(vocab, unk_token=unk))
    _set_moses(tok, MosesBPE(read_merges(merges_path), lowercase))
    tok.decoder = decoders.BPEDecoder(suffix=END)
    tok.add_tokens(specials)  # each keeps its own `special` flag (a folder's added tokens may be plain ones)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A {sep}", pair=f"{bos} $A {sep} $B:1 {sep}:1",
        special_tokens=[(t, tok.token_to_id(t)) for t in dict.fromkeys((bos, sep))],
    )
    return tok


def _set_moses(tok: Tokenizer, pre: MosesBPE) -> None:
    """Give `tok` the Moses pre-tokenizer, kept on it too: the Rust library cannot serialize it nor hand it back."""
    tok.pre_tokenizer = pre_tokenizers.PreTokenizer.custom(pre)
    tok.coulisse_moses = pre


def backend_state(tok: Tokenizer) -> tuple[str, MosesBPE | None]:
    """What rebuilds a backend (`backend_from_state`): its JSON and its Moses pre-tokenizer, if any (swapped out
    of the backend while it is written; call where no other thread uses it)."""
    pre = getattr(tok, "coulisse_moses", None)
    if pre is None:
        return tok.to_str(), None
    tok.pre_tokenizer = pre_tokenizers.Sequence([])
    try:
        return tok.to_str(), pre
    finally:
        tok.pre_tokenizer = pre_tokenizers.PreTokenizer.custom(pre)


def backend_from_state(state: tuple[str, MosesBPE | None]) -> Tokenizer:
    text, pre = state
    tok = Tokenizer.from_str(text)
    if pre is not None:
        _set_moses(tok, pre)
    return tok


def word_ids(encoding: Encoding, texts: tuple[str, ...], pre_tokenizer: pre_tokenizers.PreTokenizer,
             added: dict[int, str]) -> list[int | None]:
    """The word of each token. The backend numbers each BPE unit as a word (one pre-token per unit); a Moses
    word ends at a unit ending in `</w>`, which an unknown unit's `<unk>` no longer shows: the units' ends are
    read again from the pre-tokenizer over each sequence's text (`texts`), between the added tokens (`added`:
    id -> content), each a word of its own. Words count per sequence from the first kept one's number (a text
    truncated from the left starts past 0, as in the backend); None for special tokens."""
    tokens, offsets, sequences = encoding.tokens, encoding.offsets, encoding.sequence_ids
    backend_words, token_ids = encoding.word_ids, encoding.ids
    ends: dict[int, bool] = {}  # token -> whether its unit ends a word
    for seq, text in enumerate(texts):
        rows = [i for i, s in enumerate(sequences) if s == seq and backend_words[i] is not None]
        matched = [i for i in rows if token_ids[i] in added and text[offsets[i][0]:offsets[i][1]].strip()
                   == added[token_ids[i]]]
        units = [i for i in rows if i not in set(matched)]
        cuts = [0, *[c for i in matched for c in offsets[i]], len(text)]
        found = [(unit.endswith(END), span) for a, b in zip(cuts[::2], cuts[1::2], strict=True)
                 for unit, span in ((u, (a + x, a + y)) for u, (x, y) in pre_tokenizer.pre_tokenize_str(text[a:b]))]
        first = next((k for k in ([len(found) - len(units)] if len(found) > len(units) else []) + [0]
                      if units and 0 <= k < len(found) and found[k][1] == tuple(offsets[units[0]])), 0)
        for i, (end, _) in zip(units, found[first:], strict=False):
            ends[i] = end
        for i in matched:
            ends[i] = True
    out: list[int | None] = []
    word, closed, sequence = -1, True, None
    for i, backend_word in enumerate(backend_words):
        if backend_word is None:
            out.append(None)
            closed = True
            continue
        if sequences[i] != sequence:
            sequence, word, closed = sequences[i], backend_word - 1, True
        if closed:
            word += 1
        out.append(word)
        closed = ends.get(i, tokens[i].endswith(END))
    return out

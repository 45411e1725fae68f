"""How the CLI writes for people: counts with their noun, durations, probabilities, and texts or labels
on one line of a terminal."""

from __future__ import annotations

import shutil
import textwrap
import unicodedata


def count(n: int, noun: str, plural: str | None = None) -> str:
    """`1 row`, `0 rows`, `1,024 rows`; `plural` for nouns that do not take an s."""
    return f"{n:,} {noun if n == 1 else plural or noun + 's'}"


def duration(seconds: float) -> str:
    """Three significant digits under a minute (`0.0423 s` would read as zero at one decimal), then
    minutes and seconds."""
    if seconds < 60:
        return f"{seconds:.3g} s"
    minutes, rest = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {rest:02d} s"
    return f"{minutes // 60} h {minutes % 60:02d} min"


def probability(p: float) -> str:
    """Four significant digits: a fill-mask proposal over a 32,000-word vocabulary often scores below
    0.0001, which four decimals would print as 0.0000."""
    return f"{p:.4g}"


# Unicode's bidirectional controls: a label holding U+202E shows the rest of the line reversed.
BIDI_CONTROLS = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def printable(text: str) -> str:
    """`text` with its control characters escaped (`\\n`, `\\x1b`, `\\u202e`), so a label or a text from a file
    can neither start a line that looks like a result, send the terminal an escape sequence, nor reverse what
    follows it on the line."""
    return "".join(repr(c)[1:-1] if c in BIDI_CONTROLS or unicodedata.category(c) in ("Cc", "Zl", "Zp") else c
                   for c in text)


def one_line(text: str, width: int = 60, ellipsis: str = "...") -> str:
    """A text on one terminal line: its whitespace runs made one space, controls escaped, cut to `width`
    with `ellipsis` at the end (a page may prefer "…")."""
    text = printable(" ".join(text.split()))
    return text if len(text) <= width else text[: width - len(ellipsis)] + ellipsis


def terminal_width() -> int:
    """The terminal's columns (COLUMNS when set), at most 100: prose wider than that reads badly."""
    return min(shutil.get_terminal_size((100, 24)).columns, 100)


def wrapped(text: str, width: int | None = None, indent: str = "", first: str = "") -> str:
    """Prose wrapped to the terminal: `first` before the first line, `indent` before the others."""
    return textwrap.fill(text, width or terminal_width(), initial_indent=first, subsequent_indent=indent,
                         break_on_hyphens=False, break_long_words=False)

"""What one request may cost the tokenizer thread, which every route of a model shares.

The Rust tokenizer encodes a text whole before truncation cuts it: 1.9 M characters that `tokenizer/prefix.py`
cannot take from a prefix (left truncation, a text without spaces, CJK, a pair of two long texts) held the thread
2-5 s, and every other request waited that long. Two bounds, both TEI's idea:

- `cut_characters`: with truncation on, a text longer than `CHARS_PER_TOKEN` characters per token the model takes
  is cut to that many before it is tokenized (TEI's `apply_limit`, core/src/tokenization.rs; a pair's members to
  half each), so one input costs a bounded time (40-100 ms measured for 512- and 256-token models:
  docs/benchmarks.md, "A hostile client and the tokenizer thread");
- `parts`: a request's inputs go to the thread in parts of about `TURN_CHARACTERS` characters, one job each, so
  a request of many long texts takes turns with the others (the thread's queue is first come, first served)
  instead of holding the thread for all of its inputs. TEI queues each input to its workers alike.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import TypeVar

from coulisse.interfaces.server.errors import ServerError

# TEI's MAX_CHAR_MULTIPLIER: characters per token of max_input_length past which an input is refused untruncated
# and cut when truncated.
CHARS_PER_TOKEN = 250
# Characters of a request tokenized in one job: a few ms of the thread for text, ~25 ms for CJK. One input is
# never split, so a job holds at most one input of CHARS_PER_TOKEN x max_input_length.
TURN_CHARACTERS = 16_384

Sequences = list[tuple[str | list[int], str | None]]
T = TypeVar("T")


def check_characters(sequences: Sequences, limit: int, hint: str = "", field: str = "inputs") -> None:
    """TEI's bound before tokenizing (core/src/tokenization.rs, MAX_CHAR_MULTIPLIER): an input of more than
    `limit` characters (a pair's two texts together, a token id counting one) is a 422 where it is not
    truncated, before the tokenizer spends time on it. `field`: the request's name for the sequences."""
    for i, (text, pair) in enumerate(sequences):
        n = len(text) + len(pair or "")
        if n > limit:
            name = field if len(sequences) == 1 else f"{field}[{i}]"
            raise ServerError("validation", f"Input validation error: `{name}` must have less than {limit} "
                              f"characters. Given: {n}{hint}")


def cut_characters(sequences: Sequences, limit: int, side: str) -> Sequences:
    """TEI's cut before a truncated input is tokenized: an input of more than `limit` characters (a pair's two
    texts together) keeps `limit` of them, each member of a pair `limit // 2`; from the right it keeps a text's
    start, from the left its end (TEI keeps the start either way). Token ids are left as they are."""
    out = []
    for text, pair in sequences:
        if isinstance(text, str) and len(text) + len(pair or "") > limit:
            keep = limit if pair is None else limit // 2
            text, pair = _keep(text, keep, side), None if pair is None else _keep(pair, keep, side)
        out.append((text, pair))
    return out


def _keep(text: str, n: int, side: str) -> str:
    if len(text) <= n:
        return text
    return text[:n] if side == "right" else text[len(text) - n:]


def parts(inputs: Sequence[T], size: Callable[[T], int], budget: int = TURN_CHARACTERS) -> Iterator[list[T]]:
    """`inputs` in order, in runs whose `size` adds up to about `budget` (at least one input a run)."""
    run: list[T] = []
    total = 0
    for x in inputs:
        if run and total + size(x) > budget:
            yield run
            run, total = [], 0
        run.append(x)
        total += size(x)
    if run:
        yield run


def characters_of(sequence: tuple[str | list[int], str | None]) -> int:
    text, pair = sequence
    return len(text) + len(pair or "")

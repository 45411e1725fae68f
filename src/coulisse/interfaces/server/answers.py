"""A route's result -> its JSON body, off the event loop.

An answer can be tens of MB (/embed_all of a full batch: every token's hidden state; /tokenize of a long
text). `json.dumps` of it in one call holds the GIL from start to end, so encoding it on the event loop,
or in one call on another thread, stops every other request meanwhile, /health included (6.8 s of a 12 s
/embed_all of 41 MB, on a loaded 2-core machine). Here it runs on a worker thread, in pieces of at most
`PIECE` values: between two pieces the event loop takes the GIL back within Python's switch interval (5 ms).
The bytes are those of Starlette's `JSONResponse` (UTF-8, compact separators, NaN refused), but for floats:
a float that is exactly a float32 (every number the model computes) is written as float32's shortest text, as
TEI writes it (`0.1`, not `0.10000000149011612`; float_text.py)."""

from __future__ import annotations

import asyncio
import json

import numpy as np

from coulisse.interfaces.server.float_text import float32_text, with_float32_text

PIECE = 4096  # list items per json.dumps call: a few ms of work at most
BLOCK = 4 * PIECE  # float32 values converted at once (float_text.py: numpy calls pay off on larger arrays)


def _dumps(value) -> str:
    return json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))


def _listed(value) -> list:
    """A piece of an answer as JSON-able lists, each float32 float as `float32_text` writes it."""
    if isinstance(value, np.ndarray):
        return float32_text(value).tolist() if value.dtype.kind == "f" else value.tolist()
    if value and all(isinstance(v, float) for v in value):  # a vector, a list of scores
        return float32_text(value).tolist()
    return with_float32_text(value)


def _write(value, out: list[str]) -> None:
    if isinstance(value, np.ndarray) and value.ndim == 2 and len(value):  # (tokens, hidden): whole rows a piece
        rows = max(1, PIECE // max(1, value.shape[1]))
        pieces = []
        for block in range(0, len(value), rows * (BLOCK // PIECE)):
            listed = _listed(value[block:block + rows * (BLOCK // PIECE)])
            pieces += [_dumps(listed[start:start + rows])[1:-1] for start in range(0, len(listed), rows)]
        out.append("[" + ",".join(pieces) + "]")
        return
    if isinstance(value, np.ndarray):
        value = list(value) if value.ndim > 2 else value.tolist()
    if not isinstance(value, list) or not value:
        out.append(_dumps(with_float32_text(value)))
        return
    out.append("[")
    if isinstance(value[0], (list, np.ndarray)):  # nested lists: each element on its own
        for i, element in enumerate(value):
            if i:
                out.append(",")
            _write(element, out)
    else:
        out.append(",".join(_dumps(_listed(value[start:start + PIECE]))[1:-1]
                            for start in range(0, len(value), PIECE)))
    out.append("]")


def encode_json(value) -> bytes:
    """JSON of lists, dicts and scalars (an array is written as its `tolist()`), lists in pieces."""
    out: list[str] = []
    _write(value, out)
    return "".join(out).encode("utf-8")


def size(value) -> int:
    """About how many values `value` holds, read from its first elements' shapes (a list's items alike): cheap
    next to encoding it."""
    if isinstance(value, np.ndarray):
        return value.size
    if isinstance(value, list):
        return len(value) * size(value[0]) if value else 1
    if isinstance(value, dict):
        return 1 + sum(size(v) for v in value.values())
    return 1 + len(value) // 64 if isinstance(value, str) else 1


async def encoded(value) -> bytes:
    """`encode_json` on a worker thread, the event loop answering meanwhile; an answer of at most `PIECE` values
    (a few ms of work at most) on the loop itself, which costs less than handing it over."""
    if size(value) <= PIECE:
        return encode_json(value)
    return await asyncio.to_thread(encode_json, value)

"""Texts longer than the model, read whole: windows of their tokens, and the mean of the windows' logits.

A text's tokens (special tokens aside) are cut into windows that fill the model's limit, each window overlapping
the previous one by `stride` tokens, and every window gets the text's special tokens (`<s> ... </s>`,
`[CLS] ... [SEP]`). A text's logits are the mean of its windows' logits, taken before softmax. A text that fits
is one window, with exactly the ids truncation gives it. Used by text-classification's `long_text="chunk"`,
which the corpus jobs (`--long-text chunk`), the studio and the server run.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from coulisse.engine import Item
from coulisse.errors import InputError

LONG_TEXT = ("truncate", "chunk")


@dataclass
class Windows:
    items: list[Item]
    owners: list[int]  # per item: the index of the text it came from
    cuts: list[list[int]]  # per item: its tokens' indices into its text's encoding


def window_starts(length: int, size: int, stride: int) -> list[int]:
    """Starts of windows of `size` tokens over `length` tokens, consecutive ones sharing `stride` tokens."""
    starts = [0]
    while starts[-1] + size < length:
        starts.append(starts[-1] + size - stride)
    return starts


def split_windows(encodings, max_length: int, stride: int | None) -> Windows:
    """Windows of every encoding (`tokenizers.Encoding`, special tokens included, not truncated)."""
    items: list[Item] = []
    owners: list[int] = []
    cuts: list[list[int]] = []
    for n, e in enumerate(encodings):
        mask = e.special_tokens_mask
        head = next((i for i, m in enumerate(mask) if not m), len(mask))
        tail = next((i for i, m in enumerate(reversed(mask)) if not m), 0) if head < len(mask) else 0
        size = max_length - head - tail
        if size < 1:
            raise InputError(f"the model's limit of {max_length} tokens leaves no room between its special "
                             "tokens; long_text='chunk' (--long-text chunk) cannot be used with it.")
        step = default_stride(size) if stride is None else stride
        if not 0 <= step < size:
            raise InputError(f"stride {step}: the tokens two windows share must be at least 0 and fewer than "
                             f"the window's {size} tokens.")
        ids, types = e.ids, e.type_ids
        body = len(ids) - head - tail
        for start in window_starts(body, size, step):
            cut = list(range(head)) + list(range(head + start, head + min(start + size, body)))
            cut += list(range(len(ids) - tail, len(ids)))
            items.append(Item([ids[i] for i in cut], [types[i] for i in cut]))
            owners.append(n)
            cuts.append(cut)
    return Windows(items, owners, cuts)


def default_stride(size: int) -> int:
    """A quarter of the window (127 tokens for a 512-token model)."""
    return size // 4


def average_logits(logits: list[np.ndarray], owners: list[int], count: int) -> list[np.ndarray]:
    """Mean logits per text over its windows."""
    sums: list[np.ndarray | None] = [None] * count
    counts = [0] * count
    for row, n in zip(logits, owners, strict=True):
        sums[n] = row.astype(np.float64) if sums[n] is None else sums[n] + row
        counts[n] += 1
    return [(s / c).astype(np.float32) for s, c in zip(sums, counts, strict=True)]  # type: ignore[operator]

"""Inputs that arrive one by one — generators, iterators, `datasets.Dataset`, transformers' `KeyDataset` —
and the lazy results they get back, as transformers' pipelines stream them (`PipelineIterator`).

A stream is read in windows of `WINDOW` inputs; each window runs through the pipeline's stages as one list
(sorted and batched by the engine), and its results are yielded in input order before the next window is
read. Memory holds one window of inputs and results, whatever the stream's length.
"""

from __future__ import annotations

import re
import sys
import types
from collections.abc import Callable, Iterable, Iterator
from itertools import islice
from typing import Any

from coulisse.errors import InputError

# Inputs read per window: enough for the engine to sort by length and fill its token budget.
WINDOW = 256


def as_stream(inputs: Any) -> Iterable | None:
    """The inputs to read one by one, or None for inputs a task takes whole (a string, a dict, a list, a
    tuple). Like transformers: generators and torch datasets (`KeyDataset`) stream; unlike transformers
    (which refuses them), other iterators, `datasets.Dataset` / `IterableDataset` and a dataset's column
    (`ds["text"]`) stream too."""
    if isinstance(inputs, (str, bytes, dict, list, tuple)) or inputs is None:
        return None
    if isinstance(inputs, (types.GeneratorType, Iterator)):
        return inputs
    datasets = sys.modules.get("datasets")
    if datasets is not None and isinstance(inputs, (datasets.Dataset, datasets.IterableDataset)):
        return _dataset_rows(inputs)
    columns = tuple(getattr(datasets, name) for name in ("Column", "IterableColumn") if hasattr(datasets, name))
    if columns and isinstance(inputs, columns):  # ds["text"] (datasets 4+), of a streaming dataset too
        return iter(inputs)
    torch_data = sys.modules.get("torch.utils.data")
    if torch_data is not None and isinstance(inputs, torch_data.Dataset):
        if isinstance(inputs, torch_data.IterableDataset):
            return inputs
        return (inputs[i] for i in range(len(inputs)))  # map-style: KeyDataset, KeyPairDataset
    return None


def _dataset_rows(dataset: Any) -> Iterator:
    """A `datasets` table's rows: the values of its one column, else each row as a dict (what a task
    takes as one input: {"text", "text_pair"}, {"question", "context"})."""
    columns = dataset.column_names or []
    if len(columns) == 1:
        return (row[columns[0]] for row in dataset)
    return iter(dataset)


def in_stream(error: InputError, first: int, size: int) -> InputError:
    """A window's refusal, whose positions count from the window's start, said with the stream's: `text[44]` of
    the window that starts at input 256 is the stream's input 300, the row a user looks up."""
    if first == 0:
        return error
    message = str(error)
    found = re.search(r"\[(\d+)\]|\binput (\d+)\b", message)
    where = f": that is the stream's input {first + int(next(g for g in found.groups() if g))}" if found else (
        f", inputs {first} to {first + size - 1}")
    return type(error)(f"{message} (positions count from the start of the stream's window read at input "
                       f"{first}{where})")


def windows(stream: Iterable, size: int = WINDOW) -> Iterator[list]:
    iterator = iter(stream)
    while window := list(islice(iterator, size)):
        yield window


class Results(Iterator):
    """The results of a streamed call, one per input, computed a window at a time as they are read.
    `len()` works when the input had a length (a dataset), as for transformers' `PipelineIterator`."""

    def __init__(self, source: Any, stream: Iterable, run: Callable[[list], list], size: int = WINDOW):
        self._length = len(source) if hasattr(source, "__len__") else None
        self._results = self._run(stream, run, size)

    @staticmethod
    def _run(stream: Iterable, run: Callable[[list], list], size: int) -> Iterator:
        first = 0
        for window in windows(stream, size):
            try:
                results = run(window)
            except InputError as e:
                raise in_stream(e, first, len(window)) from None
            yield from results
            first += len(window)

    def __next__(self) -> Any:
        return next(self._results)

    def __len__(self) -> int:
        if self._length is None:
            raise TypeError("the results of a generator have no length; pass a list or a dataset.")
        return self._length

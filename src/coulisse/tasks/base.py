"""The one contract every task follows, as transformers' pipelines do:

    options      checked once against the task's table (`OPTIONS`): names and values, before any
                 model loads when they are given to `pipeline(...)`, then resolved against the model
    preprocess   inputs -> `Batch`: the engine's items (ids, token types) and what postprocess needs
    forward      items -> one array per item (the engine: the only place that touches torch)
    postprocess  outputs + batch -> results, plain numpy

`Pipeline.__call__` runs those four steps and nothing else; a task declares its options and implements
the stages. Interfaces (CLI, jobs, server, explain) call the same public stages.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from coulisse.checkpoint import Checkpoint
from coulisse.engine import DEFAULT_BATCH_SIZE, DEFAULT_BATCH_TOKENS, Engine, Item
from coulisse.engine.prepare import DTYPES, prepare_model, resolve_dtype
from coulisse.errors import InputError

__all__ = ["DTYPES", "POST", "PRE", "Batch", "Option", "Pipeline", "resolve_dtype"]

log = logging.getLogger(__name__)

PRE, POST = "pre", "post"


@dataclass(frozen=True)
class Option:
    """One keyword a task takes: its default, the stage that reads it, and a check that raises InputError
    (or returns the value normalized). Checks see the value only: whatever needs the model is resolved
    by the task's `resolve_options`."""

    default: Any = None
    stage: str = POST
    check: Callable[[str, Any], Any] | None = None


def positive_int(name: str, value: Any, *, allow_none: bool = False, allow_zero: bool = False) -> Any:
    if value is None and allow_none:
        return value
    if isinstance(value, bool) or not isinstance(value, int) or value < (0 if allow_zero else 1):
        raise InputError(f"{name}={value!r}; pass a {'non-negative' if allow_zero else 'positive'} integer"
                         + (", or None." if allow_none else "."))
    return value


def boolean(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise InputError(f"{name}={value!r}; pass True or False.")
    return value


def one_of(*choices: str) -> Callable[[str, Any], str]:
    """A string among `choices` (an enum's `.value` counts, case-insensitive)."""

    def check(name: str, value: Any) -> str:
        text = str(getattr(value, "value", value)).lower()
        if text not in choices:
            raise InputError(f"{name}={value!r}; use one of {', '.join(choices)}.")
        return text

    return check


@dataclass
class Batch(Sequence[Item]):
    """What `preprocess` made of one call's inputs: the items the engine runs, in order, and what
    `postprocess` needs besides their outputs. It reads as the sequence of its items."""

    items: list[Item]
    inputs: list[Any] = field(default_factory=list)  # the parsed inputs: texts, examples, ...
    single: bool = False  # one input given bare (a string): one result back, not a list
    context: Any = None  # per task: windows, candidate labels, pooling, ...

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i):  # type: ignore[override]
        return self.items[i]

    def __iter__(self) -> Iterator[Item]:
        return iter(self.items)


class Pipeline:
    """A checkpoint, its engine, and one task's stages."""

    task: ClassVar[str] = ""
    head: ClassVar[str | None] = None
    OPTIONS: ClassVar[dict[str, Option]] = {}

    def __init__(self, checkpoint: Checkpoint, *, device: str | torch.device = "cpu",
                 dtype: str | torch.dtype | None = None, quantize: str | None = None, threads: int | None = None,
                 max_batch_tokens: int = DEFAULT_BATCH_TOKENS, max_batch_size: int = DEFAULT_BATCH_SIZE,
                 **defaults: Any):
        self.defaults = self.check_options(defaults)
        self.checkpoint = checkpoint
        self.tokenizer = checkpoint.tokenizer
        self.model = checkpoint.model
        self.device = torch.device(device)
        self.preparation = prepare_model(self.model, checkpoint.directory.iterdir(), device=self.device,
                                         dtype=dtype, quantize=quantize, threads=threads, name=checkpoint.name)
        self.dtype = self.preparation.dtype
        self.engine = Engine(self.model, max_batch_tokens=max_batch_tokens, max_batch_size=max_batch_size,
                             device=self.device,
                             uses_token_types="token_type_ids" in self.tokenizer.model_input_names)

    @property
    def config(self):
        return self.checkpoint.config

    # -- options ---------------------------------------------------------------------------------------

    @classmethod
    def check_options(cls, options: dict[str, Any]) -> dict[str, Any]:
        """Names and values of `options` against the task's table; needs no model, so `pipeline()` runs
        it before loading one. Returns them normalized."""
        unknown = sorted(set(options) - set(cls.OPTIONS))
        if unknown:
            raise InputError(f"unknown option(s) {unknown}; {cls.task} takes {', '.join(cls.OPTIONS) or 'none'}.")
        checked = {}
        for name, value in options.items():
            option = cls.OPTIONS[name]
            # None passes where None is the default ("not set"); elsewhere the check decides.
            skip = option.check is None or (value is None and option.default is None)
            checked[name] = value if skip else option.check(name, value)
        return checked

    def options(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        """Every option of one call: the table's defaults, under the pipeline's, under the call's; then
        resolved against the model."""
        given = {**self.defaults, **self.check_options(kwargs)}
        merged = {name: option.default for name, option in self.OPTIONS.items()} | given
        return self.resolve_options(merged, given)

    def resolve_options(self, options: dict[str, Any], given: dict[str, Any]) -> dict[str, Any]:
        """Hook: values that depend on the model (a label map, the tokenizer's limits). `given` holds only
        what the caller set."""
        return options

    def stage_options(self, options: dict[str, Any], stage: str) -> dict[str, Any]:
        return {name: value for name, value in options.items()
                if name in self.OPTIONS and self.OPTIONS[name].stage == stage}

    # -- the stages ------------------------------------------------------------------------------------

    def parse_call(self, args: tuple, kwargs: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        """Hook: the inputs from the call's positional arguments (the first, by default)."""
        if len(args) != 1:
            raise InputError(f"{self.task} takes one positional argument (the inputs), got {len(args)}.")
        return args[0], kwargs

    def preprocess(self, inputs: Any, **options: Any) -> Batch:
        raise NotImplementedError

    def forward(self, items: Sequence[Item], progress: Callable[[int], None] | None = None) -> list:
        """One array per item, in order (see `Engine.run`)."""
        return self.engine.run(list(items), progress)

    def postprocess(self, outputs: Any, batch: Batch | None = None, **options: Any) -> Any:
        raise NotImplementedError

    def __call__(self, *args: Any, progress: Callable[[int], None] | None = None, **kwargs: Any) -> Any:
        inputs, kwargs = self.parse_call(args, kwargs)
        options = self.options(kwargs)
        batch = self.preprocess(inputs, **self.stage_options(options, PRE))
        outputs = self.forward(batch.items, progress)
        return self.postprocess(outputs, batch, **self.stage_options(options, POST))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(task={self.task!r}, model={self.checkpoint.name!r})"

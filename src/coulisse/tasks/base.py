"""The one contract every task follows, as transformers' pipelines do:

    options      checked once against the task's table (`OPTIONS`): names and values, before any
                 model loads when they are given to `pipeline(...)`, then resolved against the model
    preprocess   inputs -> `Batch`: the engine's items (ids, token types) and what postprocess needs
    forward      items -> one array per item (the engine: the only place that touches torch)
    postprocess  outputs + batch -> results, plain numpy

`Pipeline.__call__` runs those four steps and nothing else; a task declares its options and implements
the stages. Interfaces (CLI, jobs, server, explain) call the same public stages.

Every task also takes `COMMON_OPTIONS`, transformers' per-call `batch_size` and `num_workers`. A generator,
an iterator or a dataset as inputs gives a lazy iterator of results, read in windows (`tasks/streams.py`).
"""

from __future__ import annotations

import difflib
import functools
import inspect
import logging
import types
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch

from coulisse.checkpoint import Checkpoint, model_files
from coulisse.engine import DEFAULT_BATCH_SIZE, DEFAULT_BATCH_TOKENS, Engine, Item
from coulisse.engine.prepare import DTYPES, prepare_model, resolve_dtype
from coulisse.errors import InputError, given_save_directory
from coulisse.export import save_pretrained as save_checkpoint
from coulisse.tasks.streams import Results, as_stream

__all__ = ["COMMON_OPTIONS", "DTYPES", "FORWARD", "POST", "PRE", "Batch", "Option", "Pipeline",
           "resolve_dtype", "unknown_options"]

log = logging.getLogger(__name__)

PRE, FORWARD, POST = "pre", "forward", "post"
UNUSED = "unused"  # accepted for compatibility, read by no stage


@dataclass(frozen=True)
class Option:
    """One keyword a task takes: its default, the stage that reads it, and a check that raises InputError
    (or returns the value normalized). Checks see the value only: whatever needs the model is resolved
    by the task's `resolve_options`. As in transformers, None means "not set" (the default holds), unless
    `none_is_value` (text-classification's `top_k=None`: every label)."""

    default: Any = None
    stage: str = POST
    check: Callable[[str, Any], Any] | None = None
    none_is_value: bool = False
    doc: str = ""  # one line for `help(pipe)`: what it does, and what a default of None means

    def __repr__(self) -> str:  # what `type(pipe).option_table()` shows: the default, and the stage that reads it
        return f"Option(default={self.default!r}, stage={self.stage!r})"


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


def unknown_options(unknown: Iterable[str], valid: Iterable[str], where: str) -> InputError:
    """One line naming each unknown option and the closest valid one."""
    valid = list(valid)
    parts = []
    for name in sorted(unknown):
        close = difflib.get_close_matches(name, valid, n=1, cutoff=0.6)
        parts.append(f"{name!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    return InputError(f"unknown option{'s' if len(parts) > 1 else ''} {', '.join(parts)} for {where}; "
                      f"valid options: {', '.join(sorted(valid))}.")


def one_of(*choices: str) -> Callable[[str, Any], str]:
    """A string among `choices` (an enum's `.value` counts, case-insensitive)."""

    def check(name: str, value: Any) -> str:
        text = str(getattr(value, "value", value)).lower()
        if text not in choices:
            raise InputError(f"{name}={value!r}; use one of {', '.join(choices)}.")
        return text

    return check


# transformers' TruncationStrategy values; a single text is cut the same way by all three cutting ones.
TRUNCATIONS = ("longest_first", "only_first", "only_second", "do_not_truncate")
PADDINGS = ("longest", "max_length", "do_not_pad")
TOKENIZER_KEYWORDS = ("truncation", "max_length", "add_special_tokens", "padding")


def truncation_option(name: str, value: Any) -> bool | str:
    """True / False, or one of transformers' strategies (a string or its enum): the strategy for pairs.
    None, as in transformers, leaves the default (which truncates at the model's limit)."""
    if value is None:
        return True
    if isinstance(value, bool):
        return value
    strategy = one_of(*TRUNCATIONS)(name, value)
    return False if strategy == "do_not_truncate" else strategy


def padding_option(name: str, value: Any) -> Any:
    """Accepted as transformers takes it; coulisse never pads (packed batches), which changes no result."""
    return value if isinstance(value, bool) else one_of(*PADDINGS)(name, value)


def tokenizer_keywords(name: str, value: Any) -> dict[str, Any]:
    """transformers' `tokenizer_kwargs` / `tokenize_kwargs` dict: the keywords that change ids, checked."""
    if not isinstance(value, dict):
        raise InputError(f"{name}={value!r}; pass a dict such as {{'truncation': True, 'max_length': 128}}.")
    unknown = set(value) - set(TOKENIZER_KEYWORDS)
    if unknown:
        raise unknown_options(unknown, TOKENIZER_KEYWORDS, name)
    checks = {"truncation": truncation_option, "max_length": positive_int, "add_special_tokens": boolean,
              "padding": padding_option}
    return {key: checks[key](f"{name}[{key!r}]", v) for key, v in value.items()}


COMMON_OPTIONS = {
    # transformers' DataLoader batch size; here an upper bound on the inputs of one engine batch (which
    # also closes on its token budget). Batching changes no label, only a score's last bit at most (GEMM order).
    "batch_size": Option(None, FORWARD, check=lambda name, v: positive_int(name, v, allow_none=True),
                         doc="at most this many inputs in one engine batch (results are the same)"),
    # transformers' DataLoader workers; tokenization here is one batched call, so it has no effect.
    "num_workers": Option(None, UNUSED, check=lambda name, v: positive_int(name, v, allow_zero=True),
                          doc="accepted as transformers takes it; no effect"),
}


@dataclass
class Batch(Sequence[Item]):
    """What `preprocess` made of one call's inputs: the items the engine runs, in order, and what
    `postprocess` needs besides their outputs. It reads as the sequence of its items."""

    items: list[Item]
    inputs: list[Any] = field(default_factory=list)  # the parsed inputs: texts, examples, ...
    single: bool = False  # one input given bare (a string): one result back, not a list
    context: Any = None  # per task: windows, candidate labels, pooling, ...
    # per item, the input it reads, where an input runs as several items (text-classification's
    # long_text="chunk": its windows, whose logits postprocess averages); None: one item per input
    owners: list[int] | None = None

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i):  # type: ignore[override]
        return self.items[i]

    def __iter__(self) -> Iterator[Item]:
        return iter(self.items)


def _build(factory: Callable[..., Pipeline], arguments: dict[str, Any]) -> Pipeline:
    return factory(**arguments)



def progress_callback(progress: Any, inputs: Any) -> tuple[Callable[[int], None] | None, Any]:
    """A call's `progress=` as (the callback, the bar made for it or None): None or False, none; True, a tqdm bar
    over the inputs (`tqdm.auto`: a widget in a notebook), whose total is known for a list or a dataset; a
    callable as it is. Anything else is refused now, not after the first batch has run."""
    if progress is None or progress is False:
        return None, None
    if progress is True:
        from tqdm.auto import tqdm

        total = len(inputs) if hasattr(inputs, "__len__") and not isinstance(inputs, (str, dict)) else None
        bar = tqdm(total=total, unit="input")
        return bar.update, bar
    if not callable(progress):
        raise InputError(f"progress={progress!r}; pass True for a progress bar, or a callable given the number of "
                         "inputs just finished (a tqdm bar's update).")
    return progress, None


def keywords_doc(table: dict[str, Option]) -> str:
    """The call keywords of a task, one line each: `name=default: what it does`."""
    lines = [f"    {name}={option.default!r}: {option.doc}" for name, option in table.items()]
    lines.append("    progress=None: True for a tqdm bar, or a callable given the number of inputs just finished")
    return "\n".join(lines)


class Pipeline:
    """A checkpoint, its engine, and one task's stages."""

    task: ClassVar[str] = ""
    head: ClassVar[str | None] = None
    OPTIONS: ClassVar[dict[str, Option]] = {}

    def __init_subclass__(cls, **kwargs: Any):
        """Each task's `__call__` is the same code under its own docstring, which lists that task's keywords:
        `help(pipe)` and `pipe.__call__?` in Jupyter show them (no extra frame in a traceback)."""
        super().__init_subclass__(**kwargs)
        call = Pipeline.__call__
        if getattr(cls.__call__, "__code__", None) is not call.__code__ or not cls.task:  # a call of its own
            return
        own = types.FunctionType(call.__code__, call.__globals__, call.__name__, call.__defaults__,
                                 call.__closure__)
        own.__kwdefaults__ = call.__kwdefaults__
        own.__annotations__ = call.__annotations__
        own.__module__ = cls.__module__
        own.__qualname__ = f"{cls.__qualname__}.__call__"
        own.__doc__ = (f"{inspect.getdoc(call)}\n\nKeywords of {cls.task} (name=default: what it does):\n"
                       f"{keywords_doc(cls.option_table())}")
        cls.__call__ = own  # type: ignore[method-assign]

    def __init__(self, checkpoint: Checkpoint, *, device: str | torch.device = "cpu",
                 dtype: str | torch.dtype | None = None, quantize: str | None = None, threads: int | None = None,
                 max_batch_tokens: int | None = None, max_batch_size: int = DEFAULT_BATCH_SIZE,
                 throughput: bool = False, **defaults: Any):
        # (factory, its keyword arguments): set by `coulisse.pipeline()`, which pickling calls again
        self.recipe: tuple[Callable[..., Pipeline], dict[str, Any]] | None = None
        self.defaults = self.check_options(defaults)
        self.checkpoint = checkpoint
        self.tokenizer = checkpoint.tokenizer
        self.model = checkpoint.model
        self.device = torch.device(device)
        # the files the load read (config, tokenizer, the weights with every shard, wherever the index puts
        # them): the int8 cache's key, whose codes must never outlive a change to one of them (audit 41)
        self.preparation = prepare_model(self.model, model_files(checkpoint.directory), device=self.device,
                                         dtype=dtype, quantize=quantize, threads=threads, name=checkpoint.name,
                                         throughput=throughput)
        self.dtype = self.preparation.dtype
        if max_batch_tokens is None:  # the kernel plan's budget for what was prepared, else the engine's default
            max_batch_tokens = self.preparation.batch_tokens or DEFAULT_BATCH_TOKENS
        self.engine = Engine(self.model, max_batch_tokens=max_batch_tokens, max_batch_size=max_batch_size,
                             device=self.device, threads=threads,
                             uses_token_types="token_type_ids" in self.tokenizer.model_input_names)

    @property
    def config(self):
        return self.checkpoint.config

    def __reduce__(self):
        """A pipeline pickles (and deep-copies) as how it was built: `coulisse.pipeline()`'s arguments, the model
        as resolved, never its weights, which unpickling loads again from that folder or Hub id (the prepared
        weights are oneDNN's opaque tensors, which torch cannot serialize). What was changed on the pipeline after
        it was built is not carried."""
        if self.recipe is None:
            raise TypeError(f"this {type(self).__name__} was built without coulisse.pipeline(), whose arguments "
                            "pickling calls it with again; build it with coulisse.pipeline(...) to pickle it.")
        factory, arguments = self.recipe
        return _build, (factory, arguments)

    @functools.cached_property
    def gradient_model(self):
        """The model with plain fp32 linear layers, for gradients (attributions): the prepared one itself when
        it is that, else a copy loaded from the checkpoint on first use (prepacked oneDNN and int8 layers have
        no backward) and kept."""
        from coulisse.models import load_model

        prep = self.preparation
        if prep.quantize is None and prep.fast_path.startswith("PyTorch ops") and prep.dtype == torch.float32 \
                and prep.device.type == "cpu":
            return self.model
        return load_model(self.checkpoint.model_dir, self.config, self.head)

    # -- options ---------------------------------------------------------------------------------------

    @classmethod
    def option_table(cls) -> dict[str, Option]:
        """Every option a call takes: the task's table and the common ones."""
        return {**COMMON_OPTIONS, **cls.OPTIONS}

    @classmethod
    def check_options(cls, options: dict[str, Any]) -> dict[str, Any]:
        """Names and values of `options` against the task's table; needs no model, so `pipeline()` runs
        it before loading one. Returns them normalized."""
        table = cls.option_table()
        unknown = set(options) - set(table)
        if unknown:  # `progress` is the call's own keyword (`__call__`), not a task option: offered too
            raise unknown_options(unknown, [*table, "progress"], f"{cls.task} calls")
        checked = {}
        for name, value in options.items():
            option = table[name]
            if value is None and not option.none_is_value:
                continue  # transformers' `if top_k is not None: ...`: the default (or the pipeline's) holds
            checked[name] = value if option.check is None else option.check(name, value)
        return checked

    @classmethod
    def check_defaults(cls, defaults: dict[str, Any]) -> None:
        """What the options given to `pipeline()` need of each other (a call may add to them, not take away),
        checked before the model is read. None by default."""

    def options(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        """Every option of one call: the table's defaults, under the pipeline's, under the call's; then
        resolved against the model."""
        given = {**self.defaults, **self.check_options(kwargs)}
        merged = {name: option.default for name, option in self.option_table().items()} | given
        return self.resolve_options(merged, given)

    def resolve_options(self, options: dict[str, Any], given: dict[str, Any]) -> dict[str, Any]:
        """Hook: values that depend on the model (a label map, the tokenizer's limits). `given` holds only
        what the caller set."""
        return options

    def stage_options(self, options: dict[str, Any], stage: str) -> dict[str, Any]:
        table = self.option_table()
        return {name: value for name, value in options.items() if name in table and table[name].stage == stage}

    # -- the stages ------------------------------------------------------------------------------------

    def parse_call(self, args: tuple, kwargs: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        """Hook: the inputs from the call's positional arguments (the first, by default), or its `inputs=`
        keyword, transformers' name for them."""
        if not args and "inputs" in kwargs:
            kwargs = dict(kwargs)
            args = (kwargs.pop("inputs"),)
        if len(args) != 1:
            raise InputError(f"{self.task} takes the inputs as its one positional argument (or inputs=), "
                             f"got {len(args)} positional arguments.")
        return args[0], kwargs

    def preprocess(self, inputs: Any, **options: Any) -> Batch:
        raise NotImplementedError

    def cap_length(self, max_length: int | None) -> int | None:
        """A call's `max_length`, never past what the position table embeds (the forward refuses longer). Not
        the tokenizer's `model_max_length`, which may be lower than the table (128 on a 512-position model):
        transformers cuts at a `max_length` given above it, and so does coulisse."""
        limit = self.config.position_limit
        return max_length if max_length is None or limit is None else min(max_length, limit)

    def forward(self, items: Sequence[Item], progress: Callable[[int], object] | None = None,
                batch_size: int | None = None) -> list:
        """One array per item, in order (see `Engine.run`); `batch_size` caps the inputs of one batch."""
        items = list(items)
        if (empty := next((i for i, item in enumerate(items) if not len(item.ids)), None)) is not None:
            raise InputError(f"input {empty} has no tokens (a text such as \"\" or spaces, with add_special_tokens="
                             "False): the model has nothing to read; drop it, or keep the special tokens "
                             "(add_special_tokens=True).")
        limit = self.config.position_limit
        if limit is not None and (long := next((i for i, item in enumerate(items) if len(item.ids) > limit),
                                               None)) is not None:
            raise InputError(f"input {long} has {len(items[long].ids)} tokens, special ones included; "
                             f"{self.checkpoint.name} embeds at most {limit} positions. Let truncation cut it "
                             "(truncation=True, the default), or split the text.")
        return self.engine.run(items, progress, max_batch_size=batch_size)

    def postprocess(self, outputs: Any, batch: Batch | None = None, **options: Any) -> Any:
        raise NotImplementedError

    def __call__(self, *args: Any, progress: Callable[[int], object] | bool | None = None, **kwargs: Any) -> Any:
        """Run the task, as transformers' pipeline call: a string (or a dict: a text pair, a question) gives one
        result, a list or tuple a list of results in input order; a generator, an iterator, a torch or `datasets`
        dataset or a dataset's column a lazy iterator of results, read `WINDOW` inputs at a time.

        Keyword options are the task's (listed below on a task's pipeline; `type(pipe).option_table()`: their
        defaults; docs/dropin.md: in detail), for this call, over the pipeline's own defaults. `progress`,
        coulisse's own: True shows a tqdm bar (a notebook's widget in Jupyter), or a callable is given the number
        of inputs just finished after each engine batch (a progress bar's `update`)."""
        inputs, kwargs = self.parse_call(args, kwargs)
        if hasattr(inputs, "__aiter__"):
            raise InputError(f"the inputs are an {type(inputs).__name__} (asyncio), which a call cannot read; "
                             "collect it first (`[x async for x in it]`), and call the pipeline off the event "
                             "loop: `await asyncio.to_thread(pipe, texts)`.")
        options = self.options(kwargs)  # checked now, also for a stream whose results come later
        # after the checks: a refused call leaves no bar behind (a stream's bar closes when it is collected)
        progress, bar = progress_callback(progress, inputs)
        stream = as_stream(inputs)
        if stream is not None:
            return Results(inputs, stream, lambda window: self.run_window(window, options, progress))
        try:
            return self.run(list(inputs) if isinstance(inputs, tuple) else inputs, options, progress)[1]
        finally:
            if bar is not None:
                bar.close()

    def predict(self, X: Any) -> Any:  # noqa: N803 (transformers' scikit-learn style name)
        """transformers' scikit-learn style alias of the call: `pipe.predict(texts) == pipe(texts)`."""
        return self(X)

    transform = predict  # transformers' other alias

    @property
    def torch_dtype(self) -> torch.dtype:
        """The dtype the model computes in (transformers 5 names it `dtype`; this is its older name)."""
        return self.dtype

    def run(self, inputs: Any, options: dict[str, Any],
            progress: Callable[[int], object] | None = None) -> tuple[Batch, Any]:
        """The three stages on one call's inputs, with its resolved options: the batch and the results."""
        batch = self.preprocess(inputs, **self.stage_options(options, PRE))
        outputs = self.forward(batch.items, progress, **self.stage_options(options, FORWARD))
        return batch, self.postprocess(outputs, batch, **self.stage_options(options, POST))

    def run_window(self, window: list, options: dict[str, Any],
                   progress: Callable[[int], object] | None = None) -> list:
        """One result per input of a stream's window (a task that unwraps a one-input list gets it back
        wrapped)."""
        batch, results = self.run(window, options, progress)
        return [results] if batch.single else results

    def save_pretrained(self, save_directory: str | Path | None = None, *, dtype: str | torch.dtype | None = None,
                        overwrite: bool = False, directory: str | Path | None = None) -> Path:
        """Write this pipeline's checkpoint for transformers: config.json naming the PyTorch class of its head
        (`CamembertForSequenceClassification`), model.safetensors, the tokenizer files (`coulisse.export`).
        `transformers.AutoModelFor...from_pretrained(save_directory)` then gives the same ids and logits.

        The weights are the checkpoint's, read again in fp32 (whatever this pipeline runs: int8 saves the
        weights it was quantized from) and written in `dtype` (default float32; "float16", "bfloat16"). A
        folder that holds files is refused unless `overwrite`."""
        save_directory = given_save_directory(save_directory, directory)
        self.warn_int8_save()
        return save_checkpoint(self.checkpoint.model_dir, self.config, self.tokenizer, self.model.task_head,
                               Path(save_directory), dtype=dtype, overwrite=overwrite)

    def warn_int8_save(self) -> None:
        """What `save_pretrained` writes of an int8 pipeline: the weights it was quantized from, said."""
        if self.preparation.quantize:
            log.warning("%s runs int8 linear layers, which transformers cannot load: saving the fp32 weights "
                        "they were quantized from", self.checkpoint.name)

    def __repr__(self) -> str:
        """The task and model, and what it runs in where that is not exact fp32 on the CPU (an int8 pipeline looked
        like an exact one in a notebook)."""
        said = [f"task={self.task!r}", f"model={self.checkpoint.name!r}"]
        if self.preparation.quantize:
            said.append(f"quantize={self.preparation.quantize!r}")
        if self.dtype != torch.float32:
            said.append(f"dtype={str(self.dtype).removeprefix('torch.')!r}")
        if self.device.type != "cpu":
            said.append(f"device={str(self.device)!r}")
        return f"{type(self).__name__}({', '.join(said)})"

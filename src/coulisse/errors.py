"""Typed errors. Each message says what failed, the offending value, and how to fix it."""

from __future__ import annotations

from os import PathLike
from typing import Any


class CoulisseError(Exception):
    """Base class of every error coulisse raises on purpose."""


class ModelNotFoundError(CoulisseError, OSError):
    """A model id or path could not be resolved to files on disk. An OSError, as transformers' `pipeline()` and
    `from_pretrained` raise for a model they cannot find, so a drop-in's `except OSError` still catches it."""


class HubUnreachableError(ModelNotFoundError):
    """A Hub id is not in the cache and the Hub could not be asked for it: offline mode, DNS failure, refused
    connection, timeout, TLS error, HTTP 5xx or a malformed answer. Unlike its parent ("no such model"), it
    says nothing about whether the model exists."""


class InvalidModelIdError(ModelNotFoundError):
    """The model is neither an existing folder nor a well-formed Hub id (`..` parts, three parts, a
    backslash, a path that does not exist): refused before the cache or the Hub is asked."""


class ModelLoadError(CoulisseError, ValueError):
    """Model files exist but cannot be loaded (missing, corrupt or mismatched weights). A ValueError, as transformers'
    `pipeline()` raises for a folder whose weights, model type or tokenizer it cannot load, so a drop-in's
    `except ValueError` still catches it."""


class UnsupportedModelError(ModelLoadError):
    """The checkpoint's architecture or tokenizer is not one coulisse implements."""


class UnsafeCheckpointError(ModelLoadError):
    """A checkpoint asks to read outside its folder or file, or to allocate far more than it holds: an HDF5
    external link or storage, a shard path escaping the model folder, an out-of-range config value."""


class WeightShapeError(ModelLoadError):
    """A tensor in the checkpoint does not have the shape the config implies."""


class MissingHeadError(ModelLoadError):
    """The checkpoint has no weights for the task head asked for (a base model loaded as a classifier). `found`
    says what was looked for and not found; `tasks` are the pipeline tasks this checkpoint runs, so that each
    interface names its own way there (a task, an Auto class, a command)."""

    def __init__(self, found: str, tasks: list[str], head: str):
        self.found, self.tasks, self.head = found, tasks, head
        super().__init__(self.said(" or ".join(f"task {t!r}" for t in tasks)))

    def said(self, instead: str) -> str:
        """The message with `instead` as the way out (a task, an Auto class, a command)."""
        return f"{self.found}; use {instead}, or a checkpoint fine-tuned for {self.head}."

    def reworded(self, instead: str) -> MissingHeadError:
        """The same error, its way out said in another interface's words."""
        error = MissingHeadError(self.found, self.tasks, self.head)
        error.args = (self.said(instead),)
        return error


class TokenizerLoadError(ModelLoadError):
    """No usable tokenizer files, or a corrupt one."""


class InputError(CoulisseError, ValueError):
    """The caller passed something the pipeline cannot process."""


class DeviceError(InputError):
    """The requested device is not usable here: torch built without CUDA, no visible GPU, or an index past
    the last GPU."""


def type_of(value: object) -> str:
    """`value`'s type as an error says it: "an int", "a float", "a NoneType"."""
    name = type(value).__name__
    return f"{'an' if name[:1] in 'aeiouAEIOU' else 'a'} {name}"


def renamed_keyword(new_value: Any, old_value: Any, old: str, new: str, where: str, stacklevel: int = 3) -> Any:
    """`where(old=...)`, a keyword renamed to transformers' name `new`: its value, with a FutureWarning (kept one
    release, as transformers keeps its renamed arguments); both given is a TypeError, as Python says it."""
    import warnings

    if new_value is not None:
        raise TypeError(f"{where}() got {new}= and {old}=, its older name; pass {new}= alone.")
    warnings.warn(f"{where}({old}=...) is now {where}({new}=...), transformers' name; {old}= goes in a later "
                  "release.", FutureWarning, stacklevel=stacklevel)
    return old_value


def given_save_directory(save_directory: str | PathLike | None, directory: str | PathLike | None) -> Any:
    """`save_pretrained`'s folder: `save_directory` (transformers' name), or `directory=` (coulisse 0.1.0's)."""
    if directory is not None:
        return renamed_keyword(save_directory, directory, "directory", "save_directory", "save_pretrained", 4)
    if save_directory is None:
        raise TypeError("save_pretrained() missing 1 required positional argument: 'save_directory'")
    return save_directory

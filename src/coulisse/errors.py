"""Typed errors. Each message says what failed, the offending value, and how to fix it."""

from __future__ import annotations


class CoulisseError(Exception):
    """Base class of every error coulisse raises on purpose."""


class ModelNotFoundError(CoulisseError):
    """A model id or path could not be resolved to files on disk."""


class ModelLoadError(CoulisseError):
    """Model files exist but cannot be loaded (missing, corrupt or mismatched weights)."""


class UnsupportedModelError(ModelLoadError):
    """The checkpoint's architecture or tokenizer is not one coulisse implements."""


class WeightShapeError(ModelLoadError):
    """A tensor in the checkpoint does not have the shape the config implies."""


class TokenizerLoadError(ModelLoadError):
    """No usable tokenizer files, or a corrupt one."""


class InputError(CoulisseError, ValueError):
    """The caller passed something the pipeline cannot process."""

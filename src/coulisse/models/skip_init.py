"""`skip_init`: modules built without torch's random initialisation, safely while other threads build theirs
(the process's `torch.nn.init` functions stand replaced while any build runs).
"""

from __future__ import annotations

import functools
import threading
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

INIT_FUNCTIONS = ("normal_", "uniform_", "kaiming_uniform_", "zeros_", "ones_", "trunc_normal_")
_skipping = threading.local()  # .depth: skip_init blocks this thread is in
_installed: dict[str, Any] = {}  # nn.init's functions, while skip_init's wrappers stand in for them
_install_lock = threading.Lock()
_builds = 0  # skip_init blocks open, every thread together


@contextmanager
def skip_init():
    """Build modules without random initialisation: the checkpoint overwrites every parameter anyway,
    and initialising (even meta tensors, whose first use imports torch's decompositions) costs seconds.

    `torch.nn.init` is the process's: its functions are replaced while a build runs, by wrappers that skip only
    on a thread inside this block, so a module another thread builds meanwhile is initialised as usual, and
    the originals are put back when the last build of any thread ends (two loads at once left nn.init patched
    for good, every Linear built afterwards uninitialised: audit 46)."""
    global _builds
    with _install_lock:
        if _builds == 0:
            _installed.update({n: getattr(nn.init, n) for n in INIT_FUNCTIONS})
            for n in INIT_FUNCTIONS:
                setattr(nn.init, n, _skipped(_installed[n]))
        _builds += 1
    _skipping.depth = getattr(_skipping, "depth", 0) + 1
    try:
        with torch.device("meta"):
            yield
    finally:
        _skipping.depth -= 1
        with _install_lock:
            _builds -= 1
            if _builds == 0:
                for n, f in _installed.items():
                    setattr(nn.init, n, f)
                _installed.clear()


def _skipped(original):
    @functools.wraps(original)
    def init(tensor, *args, **kwargs):
        if getattr(_skipping, "depth", 0):
            return tensor
        return original(tensor, *args, **kwargs)

    return init

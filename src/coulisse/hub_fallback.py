"""The default model's Hub fallback: which model `pipeline(task)` and the commands load when the caller names
none (`default_model`). The default (`defaults.DEFAULT_MODEL`) when it is cached or the Hub answers, else the
bundled one, said in one log line; a wait on a silent Hub is said after HUB_NOTICE_AFTER seconds, and a Hub that
failed to answer is not asked again for HUB_RETRY_AFTER seconds, in this process (`_HUB_FAILED`) or the next ones
(a memo file in coulisse's cache folder, read without following a link or waiting on a FIFO).
"""

from __future__ import annotations

import json
import logging
import os
import stat
import threading
import time
from pathlib import Path

from coulisse.defaults import BUNDLED_ACCURACY, BUNDLED_MODEL, DEFAULT_MODELS, TF_ALLOCINE_ACCURACY
from coulisse.errors import HubUnreachableError, ModelNotFoundError
from coulisse.hub import local_model, resolve_model
from coulisse.hub_cache import is_offline
from coulisse.hub_download import download_hint

# The name these lines had before they left checkpoint.py, kept: the README shows it, and a user may filter on it.
log = logging.getLogger("coulisse.checkpoint")


def default_model(task: str, revision: str | None = None) -> str | None:
    """The model to load for `task` when the caller named none: the default if it is cached or downloadable,
    else the bundled one (for the tasks it serves). None when the task has no default.

    A Hub that drops packets (a firewall) lets a request wait its whole timeout, 10 s or more: what is awaited
    is said after `HUB_NOTICE_AFTER` seconds, and once the Hub has failed to answer, neither this process (a
    notebook, a loop building pipelines) nor the next ones (each `coulisse classify` is a process: a memo in the
    cache folder, per Hub endpoint) ask it again for the default model before `HUB_RETRY_AFTER` seconds."""
    name = DEFAULT_MODELS.get(task)
    if name is None:
        return None
    failed = _HUB_FAILED.get(name)
    ago = time.monotonic() - failed if failed is not None else None if is_offline() else _unanswered_ago(name)
    if ago is not None and ago < HUB_RETRY_AFTER and revision is None:
        if local_model(name) is not None:  # downloaded since
            return name
        # Said as a warning once per process: a command run again within HUB_RETRY_AFTER of one the Hub left
        # unanswered (the memo on disk) must still say that the bundled model answers.
        level = logging.INFO if name in _FELL_BACK else logging.WARNING
        _FELL_BACK.add(name)
        log.log(level, "%s: the Hugging Face Hub failed to answer %.0f s ago; using the bundled %s (the Hub is asked "
                "again after %.0f s; --model %s asks it now, HF_HUB_OFFLINE=1 never).", name, ago, BUNDLED_MODEL,
                HUB_RETRY_AFTER, name)
        return BUNDLED_MODEL
    notice = threading.Timer(HUB_NOTICE_AFTER, log.warning, args=(
        "waiting for the Hugging Face Hub to answer for %s, the default model (HF_HUB_OFFLINE=1 skips the Hub; "
        "--model %s runs the bundled model at once)", name, BUNDLED_MODEL))
    notice.daemon = True
    notice.start()
    try:
        resolve_model(name, revision)
        return name
    except ModelNotFoundError as e:
        if isinstance(e, HubUnreachableError) and not is_offline():
            _HUB_FAILED[name] = time.monotonic()
            _remember_unanswered(name)
        # Said once per process and default model (a notebook or a loop builds pipelines again and again).
        level = logging.INFO if name in _FELL_BACK else logging.WARNING
        _FELL_BACK.add(name)
        if is_offline():
            log.log(level, "%s is not in the Hugging Face cache and HF_HUB_OFFLINE is set: using the bundled %s "
                    "(%.1f %% accuracy on held-out Allociné reviews, %s reaches %.1f %%). To get %s: %s; to "
                    "choose the bundled model and silence this line: --model %s or COULISSE_MODEL=%s (in Python: "
                    "model=%r).", name, BUNDLED_MODEL, 100 * BUNDLED_ACCURACY, name, 100 * TF_ALLOCINE_ACCURACY,
                    name, download_hint(name), BUNDLED_MODEL, BUNDLED_MODEL, BUNDLED_MODEL)
        else:
            log.log(level, "%s could not be loaded (%s); using the bundled %s instead (%.1f %% accuracy on held-out "
                    "Allociné reviews, %s reaches %.1f %%). To get %s: %s, or pass --model / model=. Without "
                    "network, HF_HUB_OFFLINE=1 skips asking the Hub.", name, _first_sentence(str(e)), BUNDLED_MODEL,
                    100 * BUNDLED_ACCURACY, name, 100 * TF_ALLOCINE_ACCURACY, name, download_hint(name))
        return BUNDLED_MODEL
    finally:
        notice.cancel()


HUB_NOTICE_AFTER = 2.0  # seconds without an answer from the Hub before the wait is said
HUB_RETRY_AFTER = 300.0  # seconds during which a Hub that failed is not asked again for a default model
_FELL_BACK: set[str] = set()  # the default models whose fallback was already a warning in this process
_HUB_FAILED: dict[str, float] = {}  # default model -> when the Hub last failed to answer for it (monotonic)
# The same, across processes (each `coulisse classify` is one): {Hub endpoint: {default model: time.time()}}
# in the cache folder (COULISSE_CACHE). A missing, unreadable or odd file is no memo; a failed write, none kept.
UNANSWERED_FILE = "hub-unanswered.json"


def _unanswered_path() -> Path | None:
    from coulisse.engine.cache import cache_dir

    folder = cache_dir()
    return None if folder is None else folder / UNANSWERED_FILE


def _endpoint() -> str:
    from huggingface_hub import constants

    return str(constants.ENDPOINT)


MEMO_BYTES = 65536  # a memo holds a few names; anything bigger is not ours


def _read_unanswered(path: Path) -> dict:
    """The memo, or {} for anything else there: never following a link, never waiting on a FIFO, never reading
    more than MEMO_BYTES (a link to /dev/zero reports size 0)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        return {}
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return {}
        data = os.read(fd, MEMO_BYTES + 1)
        memo = json.loads(data.decode("utf-8")) if len(data) <= MEMO_BYTES else {}
    except (OSError, ValueError):
        return {}
    finally:
        os.close(fd)
    return memo if isinstance(memo, dict) else {}


def _unanswered_ago(name: str) -> float | None:
    """Seconds since another process found the Hub (this endpoint) silent for `name`; None if none did."""
    path = _unanswered_path()
    if path is None:
        return None
    when = _read_unanswered(path).get(_endpoint())
    when = when.get(name) if isinstance(when, dict) else None
    if isinstance(when, bool) or not isinstance(when, (int, float)):
        return None
    ago = time.time() - when
    return ago if ago >= 0 else None  # a clock set back: ask the Hub


def _remember_unanswered(name: str) -> None:
    path = _unanswered_path()
    if path is None:
        return
    memo = _read_unanswered(path)
    by_endpoint = memo.get(_endpoint())
    by_endpoint = by_endpoint if isinstance(by_endpoint, dict) else {}
    by_endpoint[name] = time.time()
    memo[_endpoint()] = by_endpoint
    import tempfile

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, partial = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)  # a new file of ours (O_EXCL)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(json.dumps(memo))
        os.replace(partial, path)  # replaces a link or a FIFO there too, never writing through it
    except OSError as e:  # a read-only cache: the next run asks the Hub again, nothing worse
        log.debug("could not keep the Hub memo %s: %s", path, e)


def _first_sentence(message: str) -> str:
    """The message up to its first ". " or "; " outside parentheses: a reason in parentheses (a timeout's
    advice) may hold its own, and the sentence goes on after it (", and it is not in the cache ...")."""
    depth = 0
    for i, c in enumerate(message):
        depth += (c == "(") - (c == ")")
        if depth == 0 and c in ".;" and message[i + 1:i + 2] == " ":
            return message[:i]
    return message.rstrip(".")

"""What a resumed job checks before its model loads: the recorded options, the input's committed bytes, the
model's files. The input and the model are the same by content, whatever their names: an input moved or named
by another path, a model folder named by another path (or the bundled model by its folder) are the recorded
ones when their bytes are, and the record then holds the name that worked, so a later `--resume` finds them.

A record holds a model folder as an absolute path (`recorded_model`), so a resume from another folder finds it.
"""

from __future__ import annotations

import itertools
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path

from coulisse.errors import CoulisseError, InputError
from coulisse.interfaces.jobs import state as job_state
from coulisse.interfaces.jobs.formats import STDIO, Row, input_format
from coulisse.interfaces.jobs.readers import Reader

log = logging.getLogger(__name__)

# Named by a path that may change: compared by content, not by name.
RENAMEABLE = ("input", "model")


def recorded_input(path: str) -> str:
    """The input as its record holds it: absolute, `..` and `.` resolved (symlinks kept), stdin as `-`."""
    return path if path == STDIO else os.path.abspath(os.path.expanduser(path))


def recorded_model(model: str) -> str:
    """`--model` as its record holds it: a folder as an absolute path (a relative one names another folder, or
    none, from elsewhere); a Hub id or the bundled model's name as given."""
    path = Path(model).expanduser()
    return os.path.abspath(path) if model and path.is_dir() else model


def check_resumed(options, saved: job_state.JobState, key: dict, reader: Reader,
                  rows: Iterator[Row]) -> tuple[Path, dict[str, str]] | None:
    """Refuse a resume that is not the same job, in one line, before the model loads; skip the committed rows
    (read again through the input's hash). Returns the model's folder and fingerprint when `options.model`
    names one, else None (the loaded pipeline's files are checked after the load)."""
    renamed = {k for k in RENAMEABLE if saved.key.get(k) != key.get(k)}
    job_state.check_key({k: v for k, v in saved.key.items() if k not in renamed},
                        {k: v for k, v in key.items() if k not in renamed}, options.output)
    if "input" in renamed:
        _check_format(saved.key.get("input"), key["input"], reader.format, options.output)
    for _ in itertools.islice(rows, saved.rows):  # read again through the hash
        pass
    moved = (saved.key.get("input"), key["input"]) if "input" in renamed else None
    job_state.check_input(saved.input, reader.fingerprint(), saved.rows, options.output, moved,
                          stdin=key["input"] == STDIO)
    if moved:
        log.info("--input %s is not the path the first run read (%s), but the %s committed rows come from the same "
                 "bytes (sha256 %s…): going on with it", key["input"], moved[0], f"{saved.rows:,}",
                 saved.input.get("sha256", "")[:job_state.SHOWN])
        saved.key["input"] = key["input"]  # a later --resume without -i reads this one
    if not options.model:
        return None
    if "model" in renamed:
        return _renamed_model(saved, key["model"], options.output, options.revision)
    model = fingerprint(_found(options.model, options.output, options.revision))
    job_state.check_model(saved.model, model[1], options.output)
    return model


def _check_format(was: str | None, now: str, reader_format: str, output: str) -> None:
    """The same bytes read as another format are other rows (a .txt renamed .csv): a moved input keeps its."""
    try:
        same = was is not None and input_format(was) == reader_format
    except InputError:
        same = False
    if not same:
        raise job_state.refuse(output, f"--input changed (was {was!r}, now {now!r}), and a resume reads its input "
                                       "in the first run's format")


def _renamed_model(saved: job_state.JobState, given: str, output: str,
                   revision: str | None = None) -> tuple[Path, dict[str, str]]:
    """`--model` named otherwise than the record (another path to the folder, the bundled model's folder for
    its name): the same model when its files hash as recorded. Looked up without the network: a name that is
    not on this machine is refused as another model."""
    from coulisse.hub import local_model

    was = saved.key.get("model")
    directory = local_model(given, revision)
    if directory is None:
        raise job_state.refuse(output, f"--model changed (was {was!r}, now {given!r})")
    try:
        model = fingerprint(directory)
    except CoulisseError as e:
        raise job_state.refuse(output, f"--model changed (was {was!r}, now {given!r}, which cannot be read: "
                                       f"{' '.join(str(e).split())})") from None
    if changes := job_state.model_changes(saved.model, model[1]):
        raise job_state.refuse(output, f"--model changed (was {was!r}, now {given!r}) and its files differ "
                                       f"({changes})")
    log.info("--model %s holds the files the first run loaded from %s: going on with it", given, was)
    saved.key["model"] = given  # a later --resume without -m loads this one
    return model


def _found(model: str, output: str, revision: str | None = None) -> Path:
    """The recorded (or given) model's folder; one that is not there any more is said with the way out."""
    from coulisse.hub import resolve_model

    try:
        return resolve_model(model, revision)
    except CoulisseError as e:
        raise InputError(f"cannot resume {output}: its model {model} cannot be loaded ({' '.join(str(e).split())}); "
                         "pass --model with where that model is now (its files are checked against the record), "
                         "or pass --overwrite to start over.") from None


def fingerprint(directory: Path) -> tuple[Path, dict[str, str]]:
    started = time.perf_counter()
    files = job_state.model_fingerprint(directory)
    log.info("hashed the model's %d files in %.2f s", len(files), time.perf_counter() - started)
    return directory, files

"""The commit record of a resumable job: `<output>.coulisse-state.json`, next to the output.

A chunk is committed in two steps: its bytes are appended to the output and fsync'ed, then this record
(rows read, bytes or parts written, counters) is replaced atomically (temporary file, fsync, rename,
fsync of the folder). Whatever kills the process, the record therefore never points past durable
output; anything in the output beyond it is an uncommitted tail (possibly a half-written line) that
`--resume` cuts before going on. The record is removed once the job has finished.

The record is also the job's fingerprint, so that a resume is the same job; any difference refuses the
resume in one line that names it:

- the **input by content**: the number of input bytes read when the chunk was committed and the sha256 of
  exactly those bytes, hashed as the reader reads them (no second read). A resume skips the committed rows
  before the model loads, which reads the same prefix again through the same hash, and compares. Chosen
  over size + mtime + a hash of head and tail because those accept a different file with the same size,
  mtime and ends (a same-size rewrite whose mtime was restored, a middle row changed), while a prefix
  hash accepts exactly the inputs whose committed rows are the same bytes: a file that only grew (a log
  appended to) resumes, and works from stdin too. Parquet, read by row groups rather than bytes, is
  hashed whole when the job starts (one extra read of a compressed file).
- the **model by content**: the sha256 of config.json, the tokenizer files and the weight files a load
  reads (`coulisse.checkpoint.model_files`), not the path. About 0.4 s for a 440 MB model.
- every **option that changes results**: the text column, output format, `--all-scores`, `--long-text`,
  `--stride`, `--batch-rows` (chunks), `--model` (a folder as an absolute path) and `--quantize` (`key`, which
  the CLI reads back; for `embed --input` also `--pooling` and `--normalize`; `--fast` and `--encoding` when
  given; the input's and the model's names are compared by content: jobs/resume.py), and what
  the loaded pipeline chose: dtype and quantization (the precision, which under `--fast` is this CPU's fast
  mode), device, token limit, task options, the pooling `auto` resolved to (`engine`).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from coulisse.errors import InputError

VERSION = 2
HASH_BLOCK = 1 << 20
SHOWN = 12  # hex digits of a hash shown in a message


class ResumeMismatchError(InputError):
    """A resume would mix rows of two different jobs: the input, the model or an option changed."""


@dataclass
class JobState:
    rows: int = 0  # input rows committed (error rows included)
    position: int | list[int] = 0  # output bytes (CSV/TSV/JSONL), Parquet parts, or [.npy, errors] bytes
    classified: int = 0
    errored: int = 0
    truncated: int = 0
    key: dict[str, Any] = field(default_factory=dict)  # options as given: what --resume reads back
    input: dict[str, Any] = field(default_factory=dict)  # {"bytes": n, "sha256": hex} of the input read
    model: dict[str, str] = field(default_factory=dict)  # model file (relative to its folder) -> sha256
    engine: dict[str, Any] = field(default_factory=dict)  # what the loaded pipeline chose
    finished: bool = False  # the output is complete and in place; what is left is removing the parts and this
    version: int = VERSION


def state_path(output: str | Path) -> Path:
    output = Path(output)
    return output.with_name(output.name + ".coulisse-state.json")


def fsync_dir(directory: str | Path) -> None:
    """Make a rename or a new file in `directory` durable (no-op where folders cannot be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def save(path: Path, state: JobState) -> None:
    write_atomic(path, json.dumps(asdict(state), ensure_ascii=False, sort_keys=True).encode())


def _first_run(data: object) -> str:
    """What a record of another format says of its run (input, model, --batch-rows), for the way out."""
    key = data.get("key") if isinstance(data, dict) else None
    if not isinstance(key, dict):
        return ""
    given = [f"{flag} {key[name]}" for flag, name in (("--input", "input"), ("--model", "model"),
                                                       ("--batch-rows", "batch_rows")) if key.get(name)]
    return f" (its first run had {' '.join(given)})" if given else ""


def load(path: Path) -> JobState | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise InputError(f"cannot read the resume state {path}: {e}; pass --overwrite to start over.") \
            from None
    if not isinstance(data, dict) or data.get("version") != VERSION:
        raise InputError(f"{path} was written by another coulisse version (its record format "
                         f"{data.get('version') if isinstance(data, dict) else None!r}, this one reads {VERSION}): "
                         f"its job cannot be resumed; run the job again with --overwrite{_first_run(data)}.")
    try:
        saved = JobState(**data)
    except TypeError:
        raise InputError(f"{path} is not a coulisse resume state; pass --overwrite to start over.") from None
    if problem := _invalid(saved):
        raise InputError(f"{path} is not a valid coulisse resume state for {output_of(path)}: {problem}; pass "
                         "--overwrite to start over.")
    return saved


def output_of(path: Path) -> Path:
    """The output a record is kept for (`state_path`'s inverse)."""
    return path.with_name(path.name.removesuffix(".coulisse-state.json"))


# -- a record read back is checked, field by field, against what `save` writes: the code reads these fields
# (islice, sizes, `--resume`'s options) and a hand-edited or foreign record must not reach it.

MOST = sys.maxsize  # islice's and os.truncate's bound


def _count(value: Any) -> bool:
    return type(value) is int and 0 <= value <= MOST  # not a bool, a float or a string


def _text(value: Any) -> bool:
    return type(value) is str


# The key's options as `runner.job_key` writes them; an absent one is compared as absent (`check_key`).
KEY_TYPES: dict[str, tuple[str, Any]] = {
    "input": ("a path", _text), "column": ("a column name", _text), "format": ("a format name", _text),
    "all_scores": ("true or false", lambda v: type(v) is bool), "long_text": ("a mode name", _text),
    "stride": ("null or a positive integer", lambda v: v is None or (_count(v) and v > 0)),
    "batch_rows": ("a positive integer", lambda v: _count(v) and v > 0), "model": ("a model name", _text),
    "quantize": ("a mode name", _text), "task": ("a command name", _text),
    "pooling": ("null or a pooling name", lambda v: v is None or _text(v)),
    "normalize": ("null, true or false", lambda v: v is None or type(v) is bool),
    "fast": ("true", lambda v: v is True), "encoding": ("a codec name", _text),
    "revision": ("a revision name", _text),
}


# What `runner.job_key` writes for every job; the others only for embed, or when given.
ALWAYS = ("input", "column", "format", "all_scores", "long_text", "stride", "batch_rows", "model", "quantize")
MISSING = object()


def _position(value: Any) -> bool:
    return _count(value) or (type(value) is list and len(value) == 2 and all(map(_count, value)))


def _invalid(saved: JobState) -> str:
    """What is wrong with a record read back, in words naming the field; "" when it is what `save` writes."""
    checks = [("rows", saved.rows, "a row count", _count),
              ("position", saved.position, "a byte or part count, or two byte counts", _position),
              *((name, getattr(saved, name), "a row count", _count) for name in ("classified", "errored", "truncated")),
              ("finished", saved.finished, "true or false", lambda v: type(v) is bool),
              *((name, getattr(saved, name), "an object", lambda v: type(v) is dict)
                for name in ("key", "input", "model", "engine"))]
    if type(saved.key) is dict:
        checks += [(f"key.{k}", saved.key.get(k, MISSING), *KEY_TYPES[k]) for k in KEY_TYPES
                   if k in saved.key or k in ALWAYS]
    if type(saved.input) is dict:
        checks += [("input.bytes", saved.input.get("bytes"), "a byte count", _count),
                   ("input.sha256", saved.input.get("sha256"), "a sha256 in hex", _hex)]
    if type(saved.model) is dict:
        checks += [(f"model[{name!r}]", v, "a sha256 in hex", _hex) for name, v in saved.model.items()]
    for name, value, what, ok in checks:
        if not ok(value):
            return f"{name} is {_shown(value)}, not {what}"
    if (saved.key.get("format") == "npy") != (type(saved.position) is list):  # [array, errors] bytes for .npy only
        return f"position is {_shown(saved.position)}, which does not fit the format {_shown(saved.key.get('format'))}"
    if saved.classified + saved.errored != saved.rows:
        return (f"rows is {saved.rows}, but classified ({saved.classified}) and errored ({saved.errored}) add up "
                f"to {saved.classified + saved.errored}")
    return ""


def _hex(value: Any) -> bool:
    return _text(value) and len(value) == 64 and all(c in "0123456789abcdef" for c in value)


def _shown(value: Any) -> str:
    if value is MISSING:
        return "missing"
    said = json.dumps(value, ensure_ascii=False)
    return said if len(said) <= 40 else said[:39] + "…"


def remove(path: Path) -> None:
    for p in (path, path.with_name(path.name + ".tmp")):
        p.unlink(missing_ok=True)


# -- fingerprints ----------------------------------------------------------------------------------------


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(HASH_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def model_fingerprint(directory: Path) -> dict[str, str]:
    """sha256 of every file a load reads from the model folder, by name relative to it."""
    from coulisse.checkpoint import model_files

    return {p.relative_to(directory).as_posix(): sha256_file(p) for p in model_files(directory)}


def digest(files: dict[str, str]) -> str:
    """One hex digest of a model folder's file hashes (name -> sha256): what a Ray job records of its model."""
    return hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()


# -- comparisons: each refusal is one line that names what changed ----------------------------------------

OPTION_NAMES = {"input": "--input", "column": "the text column (--column)", "format": "the output format",
                "all_scores": "--all-scores", "long_text": "--long-text", "stride": "--stride",
                "batch_rows": "--batch-rows", "model": "--model", "quantize": "--quantize",
                "dtype": "the dtype", "device": "the device", "quantization": "the quantization",
                "max_length": "the token limit (model_max_length)", "task_options": "the pipeline's task options",
                "task": "the command (classify or embed)", "fast": "--fast", "pooling": "--pooling",
                "normalize": "--normalize", "encoding": "--encoding", "revision": "--revision",
                "sentence": "the pooling and prompt the model folder sets (modules.json, 1_Pooling, "
                            "config_sentence_transformers.json)",
                "splade": "the SPLADE pooling the model folder sets", "prompt": "the folder's default prompt",
                "max_active_dims": "the folder's max_active_dims"}


def check_unrecorded_prompt(saved: dict[str, Any], current: dict[str, Any], output: str) -> None:
    """An embedding job whose record holds no default prompt where the folder now has one: the folder gained it,
    or an earlier coulisse started the job without recording prompts (before audit 43). The record cannot tell
    which: both are said (audit 48: the second was said as a change of the folder, which had not changed)."""
    was, now = saved.get("sentence"), current.get("sentence")
    if not (isinstance(was, dict) and isinstance(now, dict)) or "prompt" in was or "prompt" not in now:
        return
    if {k: v for k, v in now.items() if k != "prompt"} == was:
        raise ResumeMismatchError(
            f"cannot resume {output}: the model folder puts a default prompt before each text ({now['prompt']!r}) "
            "that the job's record does not hold: the folder gained it since the first run, or an earlier coulisse "
            "started the job without recording prompts; the rows already written cannot be checked against it. "
            "Finish the job with the version that started it (if that is the cause), or pass --overwrite to start "
            "over.")


def refuse(output: str, what: str) -> ResumeMismatchError:
    return ResumeMismatchError(f"cannot resume {output}: {what}; the rows already written were computed "
                               "with the first run's. Rerun with the first run's input, model and options, "
                               "or pass --overwrite to start over.")


def check_key(saved: dict[str, Any], current: dict[str, Any], output: str) -> None:
    """Options (`key`) or pipeline choices (`engine`): a resume must see the same, or its rows would not
    line up with the first run's."""
    changed = [k for k in sorted(set(saved) | set(current)) if saved.get(k) != current.get(k)]
    if changed:
        raise refuse(output, "; ".join(f"{OPTION_NAMES.get(k, k)} changed (was {_said(k, saved.get(k))}, now "
                                       f"{_said(k, current.get(k))})" for k in changed))


# Options that are flags: said as given or not, not as Python's True / None.
FLAGS = {"all_scores", "fast"}


def _said(key: str, value: Any) -> str:
    if key in FLAGS:
        return "given" if value else "not given"
    if key in ("encoding", "revision") and value is None:
        return "not given"
    return repr(value)


def precision(engine: dict[str, Any]) -> str:
    """The precision the weights run in, from a record's `engine`: "int8", else the dtype."""
    return "int8" if engine.get("quantization") else str(engine.get("dtype"))


def check_precision(saved: dict[str, Any], current: dict[str, Any], fast: bool, output: str) -> None:
    """The precision the weights ran in, said alone (its dtype and quantization would say it twice);
    under --fast, the fast mode this CPU resolves to (another CPU may resolve to another)."""
    was, now = precision(saved), precision(current)
    if was == now:
        return
    why = (f"--fast resolves to {now} on this CPU (`coulisse info`), the first run's to {was}" if fast
           else f"was {was!r}, now {now!r}")
    raise refuse(output, f"the precision changed ({why})")


def check_input(saved: dict[str, Any], current: dict[str, Any], rows: int, output: str,
                moved: tuple[str, str] | None = None, stdin: bool = False) -> None:
    """The committed rows' bytes; `moved`: the first run's input and this one, where their paths differ (the
    same bytes under another name are the same input, so only the bytes decide); `stdin`: both read stdin, which
    the resume must be given again."""
    if saved == current:
        return
    said = f"--input changed (was {moved[0]!r}, now {moved[1]!r}) and its bytes differ" if moved else \
        "the input changed (the first run read stdin: pipe the same input into --resume)" if stdin else \
        "the input changed"
    if saved.get("whole"):
        what = (f"{said} (the first run's file had {saved['bytes']:,} bytes with sha256 "
                f"{saved['sha256'][:SHOWN]}…, this one {current['bytes']:,} bytes with sha256 "
                f"{current['sha256'][:SHOWN]}…)")
    else:
        what = (f"{said} under the {rows:,} rows already written (the first run read them from "
                f"{saved['bytes']:,} bytes with sha256 {saved['sha256'][:SHOWN]}…, this input gives "
                f"{current['bytes']:,} bytes with sha256 {current['sha256'][:SHOWN]}…)")
    raise refuse(output, what)


def check_model(saved: dict[str, str], current: dict[str, str], output: str) -> None:
    if changes := model_changes(saved, current):
        raise refuse(output, f"the model's files changed ({changes})")


def model_changes(saved: dict[str, str], current: dict[str, str]) -> str:
    """How two model fingerprints differ, file by file, in words; "" when they are the same files."""
    changes = []
    for name in sorted(set(saved) | set(current)):
        was, now = saved.get(name), current.get(name)
        if was == now:
            continue
        if was is None:
            changes.append(f"{name}: added")
        elif now is None:
            changes.append(f"{name}: gone")
        else:
            changes.append(f"{name}: sha256 {was[:SHOWN]}… → {now[:SHOWN]}…")
    return ", ".join(changes)

"""The output folder of a `--ray` job (`jobs/distributed.py`): its manifest, `_coulisse-job.json`, and its shard
files, each written whole under a temporary name and renamed, so that a shard is committed or absent.

The manifest records the job's key (its inputs and the options that change results), the digest of the model's
files as the actors loaded them, and, once the job completes, how many shards each input gave. It is checked
where the code reads it before any of it is used (a damaged or foreign one is one line, before Ray starts), and a
folder holding another job's manifest or stray files is refused unless `--overwrite` empties its shards.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from coulisse.errors import InputError
from coulisse.interfaces.jobs.formats import Added, Row
from coulisse.interfaces.jobs.state import fsync_dir, write_atomic

log = logging.getLogger(__name__)

MANIFEST = "_coulisse-job.json"
TMP = ".tmp-"
FORMATS = {"parquet": ".parquet", "jsonl": ".jsonl"}


@dataclass
class Shard:
    name: str
    rows: list[Row]
    columns: list[str]
    added: Added  # or embed.EmbedColumns
    schema: object = None
    started: float = field(default_factory=time.perf_counter)


def shard_name(index: int, path: str, shard: int, fmt: str) -> str:
    """`00003-reviews-000012.parquet`: the file's place in the sorted inputs, its name, the shard."""
    stem = re.sub(r"[^A-Za-z0-9_.-]", "_", Path(path).stem)[:60]
    return f"{index:05d}-{stem}-{shard:06d}{FORMATS[fmt]}"


def open_output(out: Path, key: dict, overwrite: bool) -> dict:
    """The manifest to go on with (the key, and the model digest once known); a different job's folder is
    refused, or emptied with --overwrite."""
    path = out / MANIFEST
    saved = read_manifest(path) if path.exists() and not overwrite else None  # --overwrite: the way out
    ours = [p for p in out.iterdir() if p.name != MANIFEST and not p.name.startswith("_coulisse")]
    if overwrite:
        for p in ours:
            if _is_shard(p.name):
                _remove(p)
        saved = None
    elif saved is None and any(not p.name.startswith(TMP) for p in ours):
        raise InputError(f"--output {out} is not empty and holds no {MANIFEST}: write to a new folder, or pass "
                         "--overwrite to remove its shards.")
    elif saved is not None and saved.get("key") != key and not any(
            _is_shard(p.name) and not p.name.startswith(TMP) for p in ours):
        # A job that stopped before its first shard (a model that failed to load): nothing to reuse or to protect,
        # so the corrected command starts over without --overwrite.
        log.info("--output %s holds the record of a job that committed no shard: starting over", out)
        saved = None
    elif saved is not None and saved.get("key") != key:
        what = next((k for k in key if saved.get("key", {}).get(k) != key[k]), "version")
        if what == "inputs":
            differ = changed_inputs(saved["key"][what], key[what])
            raise InputError(f"--output {out} holds the shards of other inputs ({differ}): they cannot be reused; "
                             "pass --overwrite to start over, or write to a new folder.")
        raise InputError(f"--output {out} holds a job with another {what} ({saved['key'].get(what)!r}, now "
                         f"{key[what]!r}); rerun with that job's options to go on, or pass --overwrite to start "
                         "over.")
    for p in out.iterdir():
        if p.name.startswith(TMP):  # a shard a killed driver was writing: not committed
            _remove(p)
    manifest = saved or {"key": key, "model_files": None, "complete": False}
    write_atomic(path, json.dumps(manifest, sort_keys=True).encode())
    return manifest


def read_manifest(path: Path) -> dict:
    """The manifest a job left, checked where the code reads it (the key's inputs, the shard counts) before any
    of it is used: a damaged or foreign one is refused in one line, before Ray starts."""
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        problem = f"it cannot be read ({' '.join(str(e).split())[:120]})"
    else:
        problem = _manifest_problem(saved)
    if problem:
        raise InputError(f"{path} is not a valid coulisse job manifest: {problem}; pass --overwrite to start over, "
                         "or write to a new folder.")
    return saved


def _manifest_problem(saved) -> str:
    if type(saved) is not dict:
        return f"it holds a JSON {type(saved).__name__}, not an object"
    key, shards = saved.get("key"), saved.get("shards")
    if type(key) is not dict:
        return "its key is not an object"
    inputs = key.get("inputs", [])
    if type(inputs) is not list or not all(type(f) is dict and type(f.get("path")) is str for f in inputs):
        return "its key's inputs are not a list of files"
    if shards is not None and (type(shards) is not list or not all(type(n) is int and n >= 0 for n in shards)):
        return "its shards are not a list of counts"
    if type(saved.get("complete", False)) is not bool:
        return "its complete is not true or false"
    return ""


def changed_inputs(before: list[dict], now: list[dict]) -> str:
    """What differs between two jobs' input lists, in words: the files added, gone, changed (first three)."""
    old, new = ({f["path"]: f for f in files} for files in (before, now))
    parts = [(f"{Path(p).name} is new", p not in old) for p in new]
    parts += [(f"{Path(p).name} is gone", p not in new) for p in old]
    parts += [(f"{Path(p).name} changed (size or time)", p in old and old[p] != new[p]) for p in new]
    said = [text for text, true in parts if true] or ["the order of the files changed"]
    return ", ".join(said[:3]) + (f" and {len(said) - 3} more" if len(said) > 3 else "")


def _is_shard(name: str) -> bool:
    return name.startswith(TMP) or bool(re.fullmatch(r"\d{5}-.*-\d{6}\.(parquet|jsonl)", name))


def shards_in(out: Path) -> int:
    """The committed shards in `out` (a shard is committed once it has its own name: `commit_shard`)."""
    try:
        return sum(1 for p in out.iterdir() if _is_shard(p.name) and not p.name.startswith(TMP))
    except OSError:
        return 0


def _remove(p: Path) -> None:
    import shutil

    shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)


def commit_shard(out: Path, shard: Shard, preds: list, fmt: str) -> None:
    """Write the shard whole under a temporary name, then rename it: it is committed or absent."""
    from coulisse.interfaces.jobs.writers import complete, make_sink

    tmp = out / (TMP + shard.name)
    sink = make_sink(str(tmp), fmt, shard.columns, shard.added, shard.schema)
    try:
        sink.open(0)
        sink.commit(shard.rows, preds)
        sink.finish()
        complete(tmp)
    finally:
        sink.close()
    os.replace(tmp, out / shard.name)
    fsync_dir(out)


def committed_shards(out: Path, files: list[str], manifest: dict, fmt: str) -> int | None:
    """How many shards a finished job of these very inputs and options committed, where every one of them is
    still there (a rerun has nothing to do); else None. The count per input file is recorded when the job
    completes (the inputs' sizes and times are in the key, so the files still cut into as many shards)."""
    counts = manifest.get("shards")
    if not manifest.get("complete") or not isinstance(counts, list) or len(counts) != len(files):
        return None
    names = [shard_name(i, path, k, fmt) for i, (path, n) in enumerate(zip(files, counts, strict=True))
             for k in range(n)]
    return len(names) if all((out / name).exists() for name in names) else None

"""The local side of the Hub: the Hugging Face cache, read without the network.

Its location and the offline switch are read at call time from `HF_HUB_CACHE`, `HF_HOME` and `HF_HUB_OFFLINE`,
as huggingface_hub does. A Hub id's snapshot is found through the cache's ref (`refs/main`, or the revision's), a
ref that is no regular file or that leads outside the repo's snapshots is refused, and a snapshot is complete when
it holds what a load reads (config, weights with all their shards, a vocabulary, the modules' settings).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from coulisse.errors import ModelNotFoundError, UnsafeCheckpointError
from coulisse.weights import WEIGHT_FILES

# Every file Tokenizer.from_dir reads (tokenizer/build.py's SPM_FILES among them: tests/test_hub_download.py checks).
VOCABULARY_FILES = ("tokenizer.json", "sentencepiece.bpe.model", "spiece.model", "tokenizer.model", "spm.model",
                    "vocab.txt", "vocab.json")
TRUE = {"1", "true", "yes", "on"}


def hub_cache_dir() -> Path:
    """Where huggingface_hub keeps its cache, found as it finds it (`huggingface_hub.constants`: `~` and `$VAR`
    expanded; without a home folder, `~` stays as it is rather than failing)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(_expanded(os.environ["HF_HUB_CACHE"]))
    home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "huggingface")
    return Path(_expanded(home)) / "hub"


def _expanded(path: str) -> str:
    return os.path.expandvars(os.path.expanduser(path))


def homeless_cache() -> bool:
    """Whether the Hugging Face cache has no place: its path still starts with `~`, this process having no home
    folder (HOME unset, its user without a passwd entry) and no HF_HOME / HF_HUB_CACHE / XDG_CACHE_HOME to say
    where (huggingface_hub then fails with "Could not determine home directory")."""
    return str(hub_cache_dir()).startswith("~")


def is_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in TRUE


def snapshot_commit(directory: Path) -> str | None:
    """The commit of a Hugging Face cache snapshot a model was loaded from (`.../snapshots/<commit>`), else None
    (a folder of the user's, the bundled model)."""
    name = Path(directory).name
    is_commit = len(name) == 40 and all(c in "0123456789abcdef" for c in name)
    return name if is_commit and Path(directory).parent.name == "snapshots" else None


def _from_cache(repo_id: str, revision: str | None) -> Path | None:
    from huggingface_hub import snapshot_download
    from huggingface_hub.utils import HFValidationError

    if homeless_cache():  # no cache to look in
        return None
    snapshots = hub_cache_dir() / f"models--{repo_id.replace('/', '--')}" / "snapshots"
    ref = snapshots.parent / "refs" / (revision or "main")
    # huggingface_hub opens the ref to read the commit it names: a FIFO there would block it forever.
    if ".." not in Path(revision or "main").parts and os.path.lexists(ref) and not ref.is_file():
        raise UnsafeCheckpointError(f"the Hugging Face cache's ref {ref} is not a regular file; delete it (the "
                                    "next download writes it again).")
    # local_files_only: no request leaves here, so nothing from the network can surface.
    try:
        folder = Path(snapshot_download(repo_id, revision=revision, cache_dir=hub_cache_dir(),
                                        local_files_only=True))
    except HFValidationError as e:  # "--" or ".." in the id, too long, ...
        raise ModelNotFoundError(f"{repo_id!r} is not a valid Hub id ({_one_line(e)}); check the id.") from e
    except OSError:  # LocalEntryNotFoundError: not cached (or an unreadable cache); ask the Hub
        return None
    # huggingface_hub joins snapshots/ with the ref's text unchecked: a ref holding "../../x" or an absolute path
    # would have the model read from anywhere (the folder's own symlink checks then start from there).
    # (the folder's own name, the commit, may be a link: a cache moved by hand; its parent is checked)
    if folder.parent.resolve() != snapshots.resolve():
        raise UnsafeCheckpointError(f"the Hugging Face cache's ref for {repo_id!r} ({ref}) leads to {folder}, "
                                    f"outside the repo's snapshots ({snapshots}); a ref holds a commit hash. "
                                    "Delete the ref (the next download writes it again).")
    return folder if (folder / "config.json").is_file() else None


def snapshot_complete(folder: Path) -> bool:
    """Whether a snapshot holds what a load reads: config.json, a weight file (an index with all its shards)
    and a vocabulary. A download cut short leaves the first files it fetched; transformers' AutoConfig leaves
    config.json alone."""
    return not missing_parts(folder)


def missing_parts(folder: Path) -> list[str]:
    """What a snapshot lacks of `snapshot_complete`'s parts, in words."""
    missing = [] if (folder / "config.json").is_file() else ["config.json"]
    if not any((folder / name).is_file() for name in VOCABULARY_FILES):
        missing.append("tokenizer files")
    weights = next((name for name in WEIGHT_FILES if (folder / name).is_file()), None)
    if weights is None:
        missing.append("weights")
    elif weights.endswith(".index.json"):
        try:
            shards = set(json.loads((folder / weights).read_text(encoding="utf-8"))["weight_map"].values())
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return missing  # a broken index: the load says what is wrong with it
        if not all(isinstance(shard, str) and (folder / shard).is_file() for shard in shards):
            missing.append("weight shards")
    pooling = [module for kind, module in _modules(folder) if kind.endswith("Pooling") and module != folder]
    if not all((module / "config.json").is_file() for module in pooling):  # 1_SpladePooling/config.json...
        missing.append("sentence-transformers module settings")
    return missing


def _modules(folder: Path) -> list[tuple[str, Path]]:
    """A snapshot's sentence-transformers modules as (class name, folder), those whose folder lies inside it;
    none where it has no modules.json or a malformed one (the load says what is wrong with it, through
    `sentence_modules.read_modules`, which imports coulisse.hub, above this module: not called from here)."""
    try:
        modules = json.loads((folder / "modules.json").read_text(encoding="utf-8"))
        listed = [(str(m.get("type", "")).rsplit(".", 1)[-1], folder / m["path"]) for m in modules
                  if isinstance(m, dict) and isinstance(m.get("path"), str)]
    except (OSError, ValueError, TypeError, AttributeError):
        return []
    root = folder.resolve()
    return [(kind, module) for kind, module in listed if module.resolve().is_relative_to(root)]


def _one_line(error: BaseException, limit: int = 160) -> str:
    """`error` said in one line of at most `limit` characters (the messages here and in hub_download.py)."""
    text = " ".join(str(error).split()) or "no details"
    return text if len(text) <= limit else text[: limit - 3] + "..."

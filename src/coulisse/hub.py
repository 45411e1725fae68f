"""Where models come from: `resolve_model` turns a folder, the bundled model's name or a Hub id into a local
folder, checked to hold no symlink leading outside it. It decides where to look, in this order: an existing
folder, the bundled model, the Hugging Face cache (read by hub_cache.py), the Hub (asked by hub_download.py).

A Hub id is downloaded once: a complete snapshot in the cache (config, weights, a vocabulary) is loaded without
asking the Hub again, as `local_files_only` would; a branch that moved since is followed once the cache's ref
moves (`hf download`, or transformers' `from_pretrained`, rewrites it), or by passing a commit as the revision.
A partial snapshot (a download cut short, or a cache transformers filled with its config or weights alone) is
completed online.
"""

from __future__ import annotations

import difflib
import logging
import os
from pathlib import Path

from coulisse.defaults import BUNDLED_MODEL, bundled_dir
from coulisse.errors import HubUnreachableError, InvalidModelIdError, ModelNotFoundError, UnsafeCheckpointError
from coulisse.hub_cache import (
    _from_cache,
    homeless_cache,
    hub_cache_dir,
    is_offline,
    missing_parts,
    snapshot_complete,
)
from coulisse.hub_download import _download, download_hint
from coulisse.weights.formats import allowed_roots

log = logging.getLogger(__name__)


def resolve_model(model: str | os.PathLike, revision: str | None = None) -> Path:
    """`_resolve_model`'s folder, once checked to hold no symlink leading outside it."""
    directory = _resolve_model(model, revision)
    check_links(directory)
    return directory


def check_links(directory: Path, folders: list[Path] | None = None) -> None:
    """Refuse a model folder holding a symlink that leads outside it (to /etc/passwd, ~/.ssh/...): the load
    would read that file as a vocabulary, a config or weights, and /decode or the tokens would show it.
    A load reads the folder and its first level of subfolders (sentence-transformers' modules); every entry
    there is looked at, however many. Hidden folders (.git, .cache) are never read, so not looked into.
    `folders`: further folders inside it whose files are read (a module at `"path": "a/b"`)."""
    roots = allowed_roots(directory)
    with os.scandir(directory) as top:
        entries = list(top)
    for entry in list(entries):
        if entry.is_dir(follow_symlinks=False) and not entry.name.startswith("."):
            with os.scandir(entry.path) as inner:
                entries += list(inner)
    for folder in folders or []:
        if folder.is_dir():
            with os.scandir(folder) as inner:
                entries += list(inner)
    for entry in entries:
        if entry.is_symlink():
            try:
                target = Path(entry.path).resolve()
            except (RuntimeError, OSError) as e:  # Python 3.11-3.12: RuntimeError on a loop; 3.13: OSError
                raise UnsafeCheckpointError(
                    f"{entry.path} is a symlink that never reaches a file (a loop: {e}); coulisse reads only "
                    "files inside the model folder. Remove the link, or put the file itself there.") from None
            if not any(target.is_relative_to(root) for root in roots):
                raise UnsafeCheckpointError(
                    f"{entry.path} is a symlink to {target}, outside the model folder {roots[0]}; coulisse reads "
                    "only files inside it. Copy the file into the folder instead of linking it.")


def _resolve_model(model: str | os.PathLike, revision: str | None = None) -> Path:
    """Return a local folder holding the checkpoint `model` (a path or a Hub id)."""
    text = str(model)
    path = Path(model).expanduser()
    if text and path.is_dir():  # Path("") is the current folder; an empty name is a mistake
        return path
    bundled = bundled_dir(text)
    if bundled is not None:  # shipped inside the package: no cache, no network
        return bundled
    reason = "it is a file, not a folder" if text and path.exists() else invalid_hub_id(text)
    if reason is not None:
        raise InvalidModelIdError(
            f"model {text!r} is neither a folder nor a Hub id: {reason}. Pass an existing folder holding "
            "config.json and the weights, or a Hub id 'name' or 'owner/name' (like 'tblard/tf-allocine')."
        )
    if revision and (why := invalid_revision(revision)):
        raise InvalidModelIdError(f"revision={revision!r} is not a branch, tag or commit of a Hub repo: {why}. "
                                  "Pass one, like 'main', 'v1.0' or a commit hash.")
    cached = _from_cache(text, revision)
    if cached is not None and (is_offline() or snapshot_complete(cached)):
        return cached  # offline, a partial snapshot is loaded as it is: the load names what it lacks
    if text != BUNDLED_MODEL and _near_bundled(text):
        raise ModelNotFoundError(f"model {text!r} is not shipped with coulisse, nor in the Hugging Face cache; "
                                 f"did you mean {BUNDLED_MODEL!r}, the model coulisse ships?")
    if homeless_cache():
        raise ModelNotFoundError(
            f"model {text!r} is a Hub id, and the Hugging Face cache has no place here: this process has no home "
            "folder (HOME is unset and its user has no passwd entry). Set HF_HOME to a writable folder (the cache "
            f"goes there), or pass a local folder.{_no_folder_either(text)}")
    if is_offline():
        raise HubUnreachableError(
            f"model {text!r} is not in the Hugging Face cache ({hub_cache_dir()}) and HF_HUB_OFFLINE is set. "
            f"Either download it once with {download_hint(text, revision)} or pass a local folder "
            f"instead of the Hub id.{_no_folder_either(text)}"
        )
    try:
        return _download(text, revision)
    except ModelNotFoundError as e:
        if isinstance(e, HubUnreachableError) and cached is not None:
            # What the cache holds is loaded: a repo without tokenizer files, used with tokenizer=, runs from it
            # as it did before partial snapshots were completed; one that lacks what the load needs says so then.
            log.warning("%s: the Hugging Face Hub could not be reached for what the cached snapshot %s lacks "
                        "(%s); loading it as it is", text, cached, ", ".join(missing_parts(cached)))
            log.debug("the Hub's error: %s", e)
            return cached
        note = _no_folder_either(text)
        if not note:
            raise
        raise type(e)(f"{e}{note}") from None


def _no_folder_either(text: str) -> str:
    """For a one-part name (`my-checkpoint`: a folder written without `./` as often as a Hub id), a sentence
    saying that no such folder is here either, with the closest folder name that is; '' for `owner/name`."""
    if "/" in text:
        return ""
    try:
        folders = [entry.name for entry in os.scandir() if entry.is_dir() and not entry.name.startswith(".")]
    except OSError:
        folders = []
    near = difflib.get_close_matches(text, folders, n=1, cutoff=0.75)
    return (f" No folder {text!r} is here ({os.getcwd()}) either"
            f"{f'; did you mean ./{near[0]}?' if near else '.'}")


def local_model(model: str, revision: str | None = None) -> Path | None:
    """The folder `resolve_model` loads `model` from without the network: an existing folder, the bundled model,
    or a Hub id already in the Hugging Face cache (its snapshot of `revision`, refs/main by default); None where a
    load would download, or `model` names nothing. Nothing is checked or loaded: a caller that only hashes the
    files asks this."""
    text = str(model)
    path = Path(text).expanduser()
    if text and path.is_dir():
        return path
    bundled = bundled_dir(text)
    if bundled is not None or invalid_hub_id(text) is not None:
        return bundled
    if revision is not None and invalid_revision(revision) is not None:
        return None
    try:
        return _from_cache(text, revision)
    except ModelNotFoundError:  # an id huggingface_hub refuses
        return None


def _near_bundled(text: str) -> bool:
    """A typo of the bundled model's name (a letter or two, or its case): said at once rather than asked of the
    Hub, which has no such repository. A longer name (another version) is left to the Hub."""
    return (abs(len(text) - len(BUNDLED_MODEL)) <= 2
            and difflib.SequenceMatcher(None, text.lower(), BUNDLED_MODEL).ratio() >= 0.9)


def invalid_revision(revision: str) -> str | None:
    """Why `revision` cannot name a branch, tag or commit (git's rules on ref names, those that matter here: the
    revision becomes a path in the cache, refs/<revision>), or None."""
    if not isinstance(revision, str) or not revision:
        return "it is empty" if revision == "" else "it is not a string"
    if revision.startswith("/") or "\\" in revision or any(c.isspace() or ord(c) < 32 for c in revision):
        return "it starts with '/' or holds a backslash, a space or a control character"
    if any(part in ("", ".", "..") for part in revision.split("/")):
        return "it has an empty, '.' or '..' part"
    return None


def invalid_hub_id(text: str) -> str | None:
    """Why `text` cannot be a Hub id (huggingface_hub's rules, said in our words), or None if it can be. What
    passes holds no path syntax, so the cache folder built from it stays inside the cache."""
    if not text:
        return "it is empty"
    if "\\" in text:
        return "it contains a backslash; Hub ids separate owner and name with '/'"
    if text.startswith(("/", "~", "./", "../")) or text in (".", ".."):
        return "no folder exists at that path, and a Hub id does not start with '/', '~' or '.'"
    parts = text.split("/")
    if len(parts) > 2:
        return f"it has {len(parts)} parts separated by '/'; a Hub id has at most two, owner and name"
    if len(text) > 96:
        return f"it is {len(text)} characters long; Hub ids have at most 96"
    for part in parts:
        if part in ("", ".", ".."):
            return f"{part!r} is a path component, not a name" if part else "it has an empty part"
        bad = next((c for c in part if not (c.isascii() and (c.isalnum() or c in "-_."))), None)
        if bad is not None:
            return f"it contains {bad!r}; Hub ids use letters, digits, '-', '_' and '.'"
        if "--" in part or ".." in part:
            return f"{part!r} contains '--' or '..', which Hub ids may not"
        if part[0] in "-." or part[-1] in "-.":
            return f"{part!r} starts or ends with '-' or '.', which Hub ids may not"
    return None

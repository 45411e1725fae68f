"""Where models come from: a local folder, or a Hub id in the standard Hugging Face cache.

The cache location and offline switch are read at call time from `HF_HUB_CACHE`, `HF_HOME` and
`HF_HUB_OFFLINE`, as huggingface_hub does. Online, only the files inference needs are downloaded:
config, tokenizer files, sentence-transformers' settings and module configs, and the single best weight file
(safetensors, then .bin, then TF .h5), all from the one commit the revision names when the download starts.

A Hub id is downloaded once: a complete snapshot in the cache (config, weights, a vocabulary) is loaded without
asking the Hub again, as `local_files_only` would; a branch that moved since is followed once the cache's ref
moves (`hf download`, or transformers' `from_pretrained`, rewrites it), or by passing a commit as the revision.
A partial snapshot (a download cut short, or a cache transformers filled with its config or weights alone) is
completed online.

What huggingface_hub raises is sorted in two: "no such model" (ModelNotFoundError) and "the Hub could not
be reached or understood" (HubUnreachableError: offline, DNS, refused, timeout, TLS, HTTP 5xx, garbage),
each one line naming the model, the cache searched and the fixes.
"""

from __future__ import annotations

import difflib
import json
import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path

from coulisse.defaults import BUNDLED_MODEL, bundled_dir
from coulisse.errors import HubUnreachableError, InvalidModelIdError, ModelNotFoundError, UnsafeCheckpointError
from coulisse.weights import WEIGHT_FILES
from coulisse.weights.formats import allowed_roots

log = logging.getLogger(__name__)

# Every file Tokenizer.from_dir reads (tokenizer/build.py's SPM_FILES among them: tests/test_hub_download.py checks).
VOCABULARY_FILES = ("tokenizer.json", "sentencepiece.bpe.model", "spiece.model", "tokenizer.model", "spm.model",
                    "vocab.txt", "vocab.json")
TOKENIZER_FILES = (*VOCABULARY_FILES, "tokenizer_config.json", "special_tokens_map.json", "merges.txt",
                   "added_tokens.json")
# sentence-transformers' settings at the root; each module's own files (1_Pooling/config.json...) are read from
# modules.json once it is downloaded.
EXTRA_FILES = ("modules.json", "sentence_bert_config.json", "config_sentence_transformers.json")
# The token downloads send: huggingface_hub's (`hf auth login`, HF_TOKEN) unless `pipeline(token=)` says
# otherwise (a string, or False for none), for the load it runs.
_TOKEN: ContextVar[str | bool | None] = ContextVar("coulisse_hub_token", default=None)
TRUE = {"1", "true", "yes", "on"}
# The HTTP client each huggingface_hub generation talks through (requests before 1.0, httpx or httpx2
# since) and its base errors; InvalidURL sits outside httpx's HTTPError tree.
TRANSPORT_ERRORS = (("requests", ("RequestException",)), ("httpx", ("HTTPError", "InvalidURL")),
                    ("httpx2", ("HTTPError", "InvalidURL")))


def hub_cache_dir() -> Path:
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "huggingface")
    return Path(home).expanduser() / "hub"


def is_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in TRUE


def download_hint(repo_id: str, revision: str | None = None) -> str:
    """The command that downloads `repo_id` with the installed huggingface_hub: `hf` where it installs that
    command (0.34 and later), `huggingface-cli` before (1.x and later no longer install it)."""
    command = "hf" if "hf" in _hub_commands() else "huggingface-cli"
    option = f" --revision {revision}" if revision else ""
    return f"`{command} download {repo_id}{option}` while online"


def _hub_commands() -> set[str]:
    """The console scripts of the installed huggingface_hub: an `hf` found on PATH may belong to another one."""
    from importlib.metadata import PackageNotFoundError, distribution

    try:
        scripts = distribution("huggingface_hub").entry_points
    except PackageNotFoundError:
        return set()
    return {script.name for script in scripts if script.group == "console_scripts"}


@contextmanager
def hub_token(token: str | bool | None) -> Iterator[None]:
    """Downloads inside send `token` (a string), none (False), or huggingface_hub's own (None, True)."""
    reset = _TOKEN.set(None if token is True else token)
    try:
        yield
    finally:
        _TOKEN.reset(reset)


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


def snapshot_commit(directory: Path) -> str | None:
    """The commit of a Hugging Face cache snapshot a model was loaded from (`.../snapshots/<commit>`), else None
    (a folder of the user's, the bundled model)."""
    name = Path(directory).name
    is_commit = len(name) == 40 and all(c in "0123456789abcdef" for c in name)
    return name if is_commit and Path(directory).parent.name == "snapshots" else None


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


def _from_cache(repo_id: str, revision: str | None) -> Path | None:
    from huggingface_hub import snapshot_download
    from huggingface_hub.utils import HFValidationError

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
    `sentence_modules.read_modules`, which imports this module: not called from here)."""
    try:
        modules = json.loads((folder / "modules.json").read_text(encoding="utf-8"))
        listed = [(str(m.get("type", "")).rsplit(".", 1)[-1], folder / m["path"]) for m in modules
                  if isinstance(m, dict) and isinstance(m.get("path"), str)]
    except (OSError, ValueError, TypeError, AttributeError):
        return []
    root = folder.resolve()
    return [(kind, module) for kind, module in listed if module.resolve().is_relative_to(root)]


def _download(repo_id: str, revision: str | None) -> Path:
    files, commit = _list_files(repo_id, revision)
    if "config.json" not in files:
        raise ModelNotFoundError(f"the Hub repo {repo_id!r} has no config.json; it is not a transformers model.")
    weights = next((w for w in WEIGHT_FILES if w in files), None)
    if weights is None:
        raise ModelNotFoundError(
            f"the Hub repo {repo_id!r} has no usable weight file (files: {', '.join(sorted(files))}); "
            f"coulisse reads {', '.join(WEIGHT_FILES)}."
        )
    # Every file from the commit the revision named when the listing was made: a push during the download
    # cannot mix two commits. The revision's ref is written once the files are there.
    wanted = [f for f in ("config.json", *TOKENIZER_FILES, *EXTRA_FILES) if f in files]
    fetched = {name: _fetch(repo_id, name, revision, commit) for name in wanted}
    if "modules.json" in fetched:
        wanted += [f for f in _module_files(fetched["config.json"].parent, files) if f not in fetched]
    if weights.endswith(".index.json"):
        fetched[weights] = _fetch(repo_id, weights, revision, commit)
        index = json.loads(fetched[weights].read_text(encoding="utf-8"))
        wanted += sorted(set(index["weight_map"].values()))
    else:
        wanted.append(weights)
    for name in wanted:
        if name not in fetched:
            fetched[name] = _fetch(repo_id, name, revision, commit)
    folder = fetched["config.json"].parent  # config.json sits at the snapshot's root
    if commit and revision != commit:
        _write_ref(folder.parent.parent / "refs", revision or "main", commit)
    return folder


def _module_files(snapshot: Path, files: set[str]) -> list[str]:
    """The settings of each sentence-transformers module a repo lists (`1_Pooling/config.json`,
    `1_SpladePooling/config.json`...): its JSON files, among the repo's (so never a path outside it)."""
    root = snapshot.resolve()
    paths = {module.resolve().relative_to(root).as_posix() for _, module in _modules(snapshot)} - {"."}
    return sorted(f for f in files for path in paths if f.startswith(f"{path}/") and f.endswith(".json"))


def _write_ref(refs: Path, revision: str, commit: str) -> None:
    """The cache's `refs/<revision>` naming `commit`, as huggingface_hub writes it; a later load without the
    network finds the snapshot through it. A revision that would lead out of refs/ ("../x") writes none."""
    ref = refs / revision
    if not ref.resolve().is_relative_to(refs.resolve()):
        return
    try:
        ref.parent.mkdir(parents=True, exist_ok=True)
        if not ref.is_file() or ref.read_text(encoding="utf-8") != commit:
            staged = ref.with_name(f".{ref.name}.{os.getpid()}")
            staged.write_text(commit, encoding="utf-8")
            os.replace(staged, ref)
    except OSError as e:
        raise ModelNotFoundError(f"could not write the Hugging Face cache's ref {ref} ({_one_line(e)}); check that "
                                 "folder's permissions and free space, or set HF_HUB_CACHE to another one.") from e


def _list_files(repo_id: str, revision: str | None) -> tuple[set[str], str | None]:
    """The repo's files at `revision`, and the commit that revision names now."""
    from huggingface_hub import HfApi, constants

    # huggingface_hub 2.x sends this request with no timeout at all: a server that accepts the connection
    # and never answers would hang us forever. Its own default for requests without one is this constant.
    timeout = getattr(constants, "HF_HUB_DOWNLOAD_TIMEOUT", 10)
    with _hub_errors(repo_id, revision):
        info = HfApi().model_info(repo_id, revision=revision, timeout=timeout, token=_TOKEN.get())
        commit = info.sha if isinstance(info.sha, str) and len(info.sha) == 40 else None
        return {sibling.rfilename for sibling in info.siblings or []}, commit


def _fetch(repo_id: str, filename: str, revision: str | None, commit: str | None = None) -> Path:
    """One file, from `commit` where the listing named one (errors name the revision asked for)."""
    from huggingface_hub import hf_hub_download

    with _hub_errors(repo_id, revision):
        return Path(hf_hub_download(repo_id, filename, revision=commit or revision, cache_dir=hub_cache_dir(),
                                    token=_TOKEN.get()))


@contextmanager
def _hub_errors(repo_id: str, revision: str | None) -> Iterator[None]:
    """Around one huggingface_hub call: what says the model does not exist stays a ModelNotFoundError;
    what says the Hub could not be reached or understood becomes a HubUnreachableError.

    Both are raised `from None`: their line already says what the Hub answered or why it could not be asked,
    and the chain under it (huggingface_hub -> httpx -> httpcore -> the socket) is some 60 lines of traceback
    ahead of that line in a notebook. The chain goes to the debug log (`coulisse -vv`, or logging at DEBUG).
    A disk error keeps its chain: it is the user's machine, not the network."""
    from huggingface_hub import utils as hub  # huggingface_hub.errors lacks most of them in 0.24

    try:
        yield
    except hub.HFValidationError as e:
        raise _said(e, ModelNotFoundError(f"{repo_id!r} is not a valid Hub id ({_one_line(e)}); check the id.")
                    ) from None
    except hub.GatedRepoError as e:
        raise _said(e, ModelNotFoundError(f"the Hub repo {repo_id!r} is gated: {_gated_fix(repo_id)}")) from None
    except hub.RepositoryNotFoundError as e:
        raise _said(e, ModelNotFoundError(
            f"no model {repo_id!r} on the Hugging Face Hub; check the id (a private repo also needs HF_TOKEN).")
        ) from None
    except hub.RevisionNotFoundError as e:
        raise _said(e, ModelNotFoundError(f"the Hub repo {repo_id!r} has no revision {revision!r}; check it.")
                    ) from None
    except hub.LocalEntryNotFoundError as e:  # hf_hub_download: the Hub failed and the file is not cached
        raise _said(e, HubUnreachableError(unreachable_message(repo_id, revision, e.__cause__ or e))) from None
    except hub.EntryNotFoundError as e:
        raise _said(e, ModelNotFoundError(f"a file the Hub lists for {repo_id!r} is missing ({_one_line(e)}).")
                    ) from None
    except _unreachable_errors() as e:
        raise _said(e, HubUnreachableError(unreachable_message(repo_id, revision, e))) from None
    except OSError as e:
        if e.errno is None:  # huggingface_hub's own: a file shorter than the Hub said ("Consistency check failed")
            raise _said(e, HubUnreachableError(
                f"the download of {repo_id!r} from the Hugging Face Hub was cut short ({_one_line(e)}); run the "
                "command again: the files already downloaded are kept.")) from None
        # left after the network errors above: the disk
        raise ModelNotFoundError(
            f"could not save {repo_id!r} in the Hugging Face cache {hub_cache_dir()} ({_one_line(e)}); "
            "check that folder's permissions and free space, or set HF_HUB_CACHE to another one."
        ) from e


def _gated_fix(repo_id: str) -> str:
    """What to do about a gated repo: a token, or access for the one that was sent."""
    from huggingface_hub import constants, get_token

    token = _TOKEN.get()
    sent = token if isinstance(token, str) else None if token is False else get_token()
    if sent:
        return (f"the token sent has no access to it yet; accept its conditions at {constants.ENDPOINT}/{repo_id} "
                "with that account (or send another token: token=, HF_TOKEN).")
    return "accept its conditions on its Hub page, then set HF_TOKEN (or pass token=)."


def _said(caught: BaseException, error: ModelNotFoundError) -> ModelNotFoundError:
    """`error`, after logging the chain it replaces at DEBUG."""
    log.debug("%s: from huggingface_hub's %s", type(error).__name__, type(caught).__name__, exc_info=caught)
    return error


def _unreachable_errors() -> tuple[type[BaseException], ...]:
    """huggingface_hub's offline and HTTP errors, its HTTP client's base errors, and what parsing a malformed
    answer raises (ValueError, KeyError, TypeError, AttributeError: caught only around the Hub calls; the last
    one from huggingface_hub 2.x, which reads a JSON list where it expects an object without checking)."""
    from huggingface_hub import utils as hub

    transport = []
    for module, names in TRANSPORT_ERRORS:
        # A client that was never imported raised nothing: no need to import it (or have it installed).
        loaded = sys.modules.get(module)
        transport += [getattr(loaded, name) for name in names if hasattr(loaded, name)]
    return (hub.OfflineModeIsEnabled, hub.HfHubHTTPError, *transport, ValueError, KeyError, TypeError,
            AttributeError)


def unreachable_message(repo_id: str, revision: str | None, error: BaseException) -> str:
    """One line: the model, the Hub asked, what went wrong, the cache searched, and the fixes."""
    from huggingface_hub import constants

    return (
        f"could not get {repo_id!r} from the Hugging Face Hub at {constants.ENDPOINT} ({_reason(error)}), and it "
        f"is not in the cache {hub_cache_dir()}. Fixes: download it with {download_hint(repo_id, revision)}, "
        "then set HF_HUB_OFFLINE=1 to use the cache without network; or pass a local folder instead of the Hub id."
    )


def _reason(error: BaseException) -> str:
    status = getattr(getattr(error, "response", None), "status_code", None)
    if status is not None:  # HfHubHTTPError, requests' HTTPError, httpx's HTTPStatusError
        return f"it answered HTTP {status}"
    text = f"{type(error).__name__}: {_one_line(error)}"
    if "Timeout" in type(error).__name__ or isinstance(error, TimeoutError):
        return f"{text}; a slow link needs a larger HF_HUB_DOWNLOAD_TIMEOUT / HF_HUB_ETAG_TIMEOUT (seconds)"
    if isinstance(error, (ValueError, KeyError, TypeError, AttributeError)):
        return f"malformed answer, {text}"
    return text


def _one_line(error: BaseException, limit: int = 160) -> str:
    text = " ".join(str(error).split()) or "no details"
    return text if len(text) <= limit else text[: limit - 3] + "..."

"""The network side of the Hub: downloads through huggingface_hub, and what its errors mean.

Only the files inference needs are downloaded: config, tokenizer files, sentence-transformers' settings and module
configs, and the single best weight file (safetensors, then .bin, then TF .h5), all from the one commit the
revision names when the download starts, into the standard Hugging Face cache (hub_cache.py).

What huggingface_hub raises is sorted in two: "no such model" (ModelNotFoundError) and "the Hub could not
be reached or understood" (HubUnreachableError: offline, DNS, refused, timeout, TLS, HTTP 5xx, garbage),
each one line naming the model, the cache searched and the fixes.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path

from coulisse.errors import HubUnreachableError, ModelNotFoundError
from coulisse.hub_cache import VOCABULARY_FILES, _modules, _one_line, hub_cache_dir
from coulisse.weights import WEIGHT_FILES

# The name these lines had before they left hub.py, kept: users may filter on it (tests/test_hub_network.py
# sets it to DEBUG for the chains `_said` logs).
log = logging.getLogger("coulisse.hub")

TOKENIZER_FILES = (*VOCABULARY_FILES, "tokenizer_config.json", "special_tokens_map.json", "merges.txt",
                   "added_tokens.json")
# sentence-transformers' settings at the root; each module's own files (1_Pooling/config.json...) are read from
# modules.json once it is downloaded.
EXTRA_FILES = ("modules.json", "sentence_bert_config.json", "config_sentence_transformers.json")
# The token downloads send: huggingface_hub's (`hf auth login`, HF_TOKEN) unless `pipeline(token=)` says
# otherwise (a string, or False for none), for the load it runs.
_TOKEN: ContextVar[str | bool | None] = ContextVar("coulisse_hub_token", default=None)
# The HTTP client each huggingface_hub generation talks through (requests before 1.0, httpx or httpx2
# since) and its base errors; InvalidURL sits outside httpx's HTTPError tree.
TRANSPORT_ERRORS = (("requests", ("RequestException",)), ("httpx", ("HTTPError", "InvalidURL")),
                    ("httpx2", ("HTTPError", "InvalidURL")))


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

"""Where models come from: a local folder, or a Hub id in the standard Hugging Face cache.

The cache location and offline switch are read at call time from `HF_HUB_CACHE`, `HF_HOME` and
`HF_HUB_OFFLINE`, as huggingface_hub does. Online, only the files inference needs are downloaded:
config, tokenizer files, and the single best weight file (safetensors, then .bin, then TF .h5).
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

from coulisse.errors import ModelNotFoundError
from coulisse.weights import WEIGHT_FILES

log = logging.getLogger(__name__)

REPO_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*(/[\w.\-]+)?$")
TOKENIZER_FILES = (
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "sentencepiece.bpe.model",
    "spiece.model", "vocab.txt", "vocab.json", "merges.txt", "added_tokens.json",
)
EXTRA_FILES = ("modules.json", "sentence_bert_config.json", "1_Pooling/config.json")
TRUE = {"1", "true", "yes", "on"}


def hub_cache_dir() -> Path:
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "huggingface")
    return Path(home).expanduser() / "hub"


def is_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in TRUE


def resolve_model(model: str | os.PathLike, revision: str | None = None) -> Path:
    """Return a local folder holding the checkpoint `model` (a path or a Hub id)."""
    path = Path(model).expanduser()
    if path.is_dir():
        return path
    text = str(model)
    if path.exists() or text.startswith((".", "/", "~")) or not REPO_ID.match(text):
        raise ModelNotFoundError(
            f"model {text!r} is neither a folder nor a Hub id (like 'tblard/tf-allocine'); check the path."
        )
    cached = _from_cache(text, revision)
    if cached is not None:
        return cached
    if is_offline():
        raise ModelNotFoundError(
            f"model {text!r} is not in the Hugging Face cache ({hub_cache_dir()}) and HF_HUB_OFFLINE is set. "
            f"Either download it once online (`huggingface-cli download {text}`) or pass a local folder "
            "with --model / model=."
        )
    return _download(text, revision)


def _from_cache(repo_id: str, revision: str | None) -> Path | None:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        folder = Path(snapshot_download(repo_id, revision=revision, cache_dir=hub_cache_dir(),
                                        local_files_only=True))
    except (LocalEntryNotFoundError, FileNotFoundError, OSError):
        return None
    return folder if (folder / "config.json").is_file() else None


def _download(repo_id: str, revision: str | None) -> Path:
    from huggingface_hub import HfApi, hf_hub_download
    from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError

    try:
        files = {s.rfilename for s in HfApi().model_info(repo_id, revision=revision).siblings or []}
        if "config.json" not in files:
            raise ModelNotFoundError(f"the Hub repo {repo_id!r} has no config.json; it is not a transformers model.")
        wanted = [f for f in ("config.json", *TOKENIZER_FILES, *EXTRA_FILES) if f in files]
        weights = next((w for w in WEIGHT_FILES if w in files), None)
        if weights is None:
            raise ModelNotFoundError(
                f"the Hub repo {repo_id!r} has no usable weight file (files: {', '.join(sorted(files))}); "
                f"coulisse reads {', '.join(WEIGHT_FILES)}."
            )
        wanted.append(weights)
        if weights.endswith(".index.json"):
            import json

            index = json.loads(Path(hf_hub_download(repo_id, weights, revision=revision,
                                                    cache_dir=hub_cache_dir())).read_text())
            wanted += sorted(set(index["weight_map"].values()))
        paths = [Path(hf_hub_download(repo_id, name, revision=revision, cache_dir=hub_cache_dir()))
                 for name in wanted]
        folder = paths[0].parent  # config.json sits at the snapshot's root
        return folder
    except RepositoryNotFoundError as e:
        raise ModelNotFoundError(f"no model {repo_id!r} on the Hugging Face Hub; check the id.") from e
    except (HfHubHTTPError, OSError) as e:
        raise ModelNotFoundError(
            f"could not download {repo_id!r} ({type(e).__name__}: {e}); check your connection, or set "
            f"HF_HUB_OFFLINE=1 and use a copy in {hub_cache_dir()} or a local folder."
        ) from e

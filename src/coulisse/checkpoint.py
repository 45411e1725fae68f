"""Stage 0: a model folder (or Hub id) -> config, tokenizer and encoder, loaded once."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

from coulisse.config import EncoderConfig
from coulisse.defaults import BUNDLED_ACCURACY, BUNDLED_MODEL, DEFAULT_MODELS, TF_ALLOCINE_ACCURACY
from coulisse.errors import ModelNotFoundError
from coulisse.hub import download_hint, resolve_model
from coulisse.models import EncoderModel, load_model
from coulisse.tokenizer import Tokenizer

log = logging.getLogger(__name__)


@dataclass
class Checkpoint:
    """Everything loaded from one model folder."""

    name: str
    directory: Path
    config: EncoderConfig
    tokenizer: Tokenizer
    model: EncoderModel


def load_checkpoint(model: str | Path, head: str | None, revision: str | None = None) -> Checkpoint:
    directory = resolve_model(model, revision)
    config = EncoderConfig.from_file(directory / "config.json")
    tokenizer = Tokenizer.from_dir(directory, model_type=config.model_type, max_positions=config.max_positions)
    # Never let truncation exceed what the position table can embed.
    tokenizer.model_max_length = min(tokenizer.model_max_length, config.max_positions)
    encoder = load_model(directory, config, head)
    return Checkpoint(str(model), directory, config, tokenizer, encoder)


def model_files(directory: Path) -> list[Path]:
    """The files a load reads from `directory`: config.json, the tokenizer files there, and the weight file
    `read_weights` picks (with its shards, each checked to stay inside the folder). What a resumed corpus
    job hashes to know that the model is the one its first run loaded, whatever the path says."""
    import json

    from coulisse.hub import EXTRA_FILES, TOKENIZER_FILES
    from coulisse.tokenizer.build import SPM_FILES
    from coulisse.weights.formats import _shard_path, find_weight_file

    names = dict.fromkeys(("config.json", *TOKENIZER_FILES, *SPM_FILES, *EXTRA_FILES))
    files = [directory / name for name in names if (directory / name).is_file()]
    weights = find_weight_file(directory)
    files.append(weights)
    if weights.name.endswith(".index.json"):
        try:
            shards = sorted(set(json.loads(weights.read_text(encoding="utf-8"))["weight_map"].values()))
        except (ValueError, KeyError, TypeError, AttributeError):
            shards = []  # the load names what is wrong with the index; its bytes are hashed all the same
        files += [p for p in (_shard_path(weights, s) for s in shards) if p.is_file()]
    return files


def default_model(task: str, revision: str | None = None) -> str | None:
    """The model to load for `task` when the caller named none: the default if it can be had, else the
    bundled one (for the tasks it serves). None when the task has no default."""
    name = DEFAULT_MODELS.get(task)
    if name is None:
        return None
    try:
        resolve_model(name, revision)
        return name
    except ModelNotFoundError as e:
        log.warning(
            "%s could not be had (%s); using the bundled %s instead (%.1f %% accuracy on held-out Allociné "
            "reviews, %s reaches %.1f %%). To get %s: %s, or pass --model / model=.",
            name, _first_sentence(str(e)), BUNDLED_MODEL, 100 * BUNDLED_ACCURACY, name,
            100 * TF_ALLOCINE_ACCURACY, name, download_hint(name),
        )
        return BUNDLED_MODEL


def _first_sentence(message: str) -> str:
    return re.split(r"\. |; ", message, maxsplit=1)[0].rstrip(".")

"""A tokenizer folder's backend (the Rust `tokenizers.Tokenizer`): which tokenizer files the folder ships, in
transformers' order of preference (tokenizer.json, a SentencePiece model, vocab.txt, vocab.json + merges.txt),
read by the builder for that format (`tokenizer_json.py`, `build.py`), with the settings its configs carry.
"""

from __future__ import annotations

from pathlib import Path

from tokenizers import Tokenizer

from coulisse.errors import ModelLoadError, TokenizerLoadError
from coulisse.jsonfile import read_json
from coulisse.tokenizer.added_tokens import read_settings
from coulisse.tokenizer.build import (
    SPM_FILES,
    TokenizerFiles,
    build_bytelevel_bpe,
    build_moses_bpe,
    build_sentencepiece,
    build_wordpiece,
)
from coulisse.tokenizer.tokenizer_json import build_from_tokenizer_json


def _config_class(directory: Path) -> dict:
    """config.json's `tokenizer_class`, which transformers 5's AutoTokenizer uses where tokenizer_config.json
    names none (a BERT model with XLM-R's tokenizer: paraphrase-multilingual-MiniLM-L12-v2). An unreadable
    config.json is the model loader's to report."""
    path = directory / "config.json"
    try:
        config = read_json(path) if path.is_file() else {}
    except ModelLoadError:
        return {}
    name = config.get("tokenizer_class") if isinstance(config, dict) else None
    return {"tokenizer_class": name} if isinstance(name, str) and name else {}


def build_backend(directory: Path, model_type: str | None, vocab_size: int | None = None
                  ) -> tuple[Tokenizer, str, dict]:
    """Return (backend tokenizer, a description of the source file, merged settings). `vocab_size`, the model's
    (None: not known), bounds the entries of vocab.txt, vocab.json and merges.txt (`vocab_bound`)."""
    settings, added = read_settings(directory)
    if not settings.get("tokenizer_class"):
        settings = {**settings, **_config_class(directory)}
    files = TokenizerFiles(directory, settings, model_type, added, vocab_size)
    found = sorted(p.name for p in directory.iterdir()) if directory.is_dir() else []
    try:
        if (directory / "tokenizer.json").is_file():
            return build_from_tokenizer_json(files, directory / "tokenizer.json"), "tokenizer.json", files.settings
        for name in SPM_FILES:
            if (directory / name).is_file():
                return build_sentencepiece(files, directory / name), name, files.settings
        if (directory / "vocab.txt").is_file():
            return build_wordpiece(files, directory / "vocab.txt"), "vocab.txt", files.settings
        if (directory / "vocab.json").is_file() and (directory / "merges.txt").is_file():
            if files.family is not None and files.family.bpe == "moses":
                tok, settings = build_moses_bpe(files, directory / "vocab.json", directory / "merges.txt")
                return tok, "vocab.json + merges.txt (Moses)", settings
            tok = build_bytelevel_bpe(files, directory / "vocab.json", directory / "merges.txt")
            return tok, "vocab.json + merges.txt", files.settings
    except ModelLoadError:  # already says which file and why (a TokenizerLoadError, or read_json's refusals)
        raise
    except Exception as e:  # tokenizers raises plain Exceptions on corrupt files, pyo3's over several lines
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise TokenizerLoadError(f"could not read the tokenizer files in {directory}: {first}") from e
    raise TokenizerLoadError(
        f"no tokenizer files in {directory} (found: {', '.join(found) or 'nothing'}); coulisse reads "
        f"tokenizer.json, {' / '.join(SPM_FILES)}, vocab.txt, or vocab.json + merges.txt."
    )

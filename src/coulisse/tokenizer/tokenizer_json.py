"""A checkpoint's `tokenizer.json`, read as transformers 5 reads it: a class that rebuilds its tokenizer from
its own code (BertTokenizer, CamembertTokenizer, ...) keeps only the file's vocabulary, merges, character map and
added tokens, around the pipeline the slow-file builders (`build.py`) make; the generic classes, and classes
coulisse does not know, run the file as written (the latter said once per class and process).
"""

from __future__ import annotations

import base64
import logging
from pathlib import Path

from tokenizers import AddedToken, Tokenizer

from coulisse.errors import TokenizerLoadError
from coulisse.families import GENERIC_TOKENIZER_CLASSES, family_of
from coulisse.jsonfile import read_json
from coulisse.tokenizer.build import (
    TokenizerFiles,
    _add_tokens,
    _bytelevel_backend,
    _deberta_backend,
    _wordpiece_backend,
    _xlmr_backend,
)

log = logging.getLogger(__name__)


def build_from_tokenizer_json(files: TokenizerFiles, path: Path) -> Tokenizer:
    """A tokenizer.json as transformers 5 reads it. A class of its own (tokenizer_config.json's
    `tokenizer_class`, else the model type's: BertTokenizer, CamembertTokenizer, ...) keeps only the file's
    vocabulary, merges, SentencePiece character map and added tokens, and rebuilds its normalizer,
    pre-tokenizer, decoder and post-processor from its code and settings, as from the slow files: a file
    written by transformers 4 (most Hub checkpoints) says otherwise (XLM-R's lone metaspace splitting, BERT's
    `lowercase` where tokenizer_config.json has no `do_lower_case`...). The generic classes
    (PreTrainedTokenizerFast, TokenizersBackend) and classes coulisse does not know run the file as written,
    plus the tokens of tokenizer_config.json's `added_tokens_decoder` and the special tokens it names that the
    file lacks."""
    name = files.settings.get("tokenizer_class")
    named = isinstance(name, str) and bool(name)
    family = family_of(name) if named else family_of(files.model_type)
    if named and family is None and name not in GENERIC_TOKENIZER_CLASSES:
        _warn_unknown_class(name, files.directory)
    if family is not None and family.json_rebuild:
        data = read_json(path, error=TokenizerLoadError, fix="download the tokenizer's files again")
        data = data if isinstance(data, dict) else {}
        tok = _rebuild_from_json(files, family.json_rebuild, data)
        if tok is not None:
            _file_defaults(files.settings, data.get("padding"), data.get("truncation"))
            return tok
        _warn_other_model(name or family.json_rebuild, JSON_MODELS[family.json_rebuild], data, files.directory)
    tok = Tokenizer.from_file(str(path))
    _add_tokens(tok, files, None)
    _file_defaults(files.settings, tok.padding, tok.truncation)
    return tok


def _file_defaults(settings: dict, padding, truncation) -> None:
    """tokenizer.json's own `padding` and `truncation` sections, as transformers 5 reads them: their direction and
    pad token are defaults, which tokenizer_config.json's `padding_side`, `truncation_side` and `pad_token`
    override. (Their lengths and strategy are not: a call says its own.)"""
    if isinstance(padding, dict):
        if isinstance(padding.get("direction"), str):
            settings.setdefault("padding_side", padding["direction"].lower())
        if isinstance(padding.get("pad_token"), str):
            settings.setdefault("pad_token", padding["pad_token"])
    if isinstance(truncation, dict) and isinstance(truncation.get("direction"), str):
        settings.setdefault("truncation_side", truncation["direction"].lower())


_WARNED: set[str] = set()  # the classes already named in a warning: once per class (and file model) and process


def _warn_other_model(name: str, reads: str, data: dict, directory: Path) -> None:
    """A rebuilding class over a tokenizer.json of another model type (BertTokenizer over Unigram): coulisse runs
    the file as written, transformers 5 builds the class's model over its vocabulary. Said once per class and
    file model, as an unknown class is."""
    model = data.get("model") if isinstance(data, dict) else None
    holds = model.get("type") if isinstance(model, dict) else None
    if not isinstance(holds, str):  # no model at all: the file is refused when read, which says so
        return
    if f"{name} over {holds}" in _WARNED:
        return
    _WARNED.add(f"{name} over {holds}")
    log.warning("tokenizer_class %r (%s) reads a %s model, and tokenizer.json holds a %s one: coulisse runs the "
                "file as written, where transformers 5 builds %s's own model over its vocabulary (other ids, or no "
                "load); set tokenizer_class to PreTrainedTokenizerFast in tokenizer_config.json to run the file as "
                "written in both", name, directory, reads, holds, name)


def _warn_unknown_class(name: str, directory: Path) -> None:
    """A class coulisse cannot rebuild from: transformers 5 rebuilds the pipeline from that class's own code
    (AlbertTokenizer, T5Tokenizer, XLNetTokenizer, BigBirdTokenizer, FunnelTokenizer... give other ids than
    the file as written on most texts: docs/dropin.md), so the ids may not be transformers'. Said, not refused:
    a checkpoint written by transformers 4 was trained with the file as written, and a name transformers does
    not know either runs the file as written there too."""
    if name in _WARNED:
        return
    _WARNED.add(name)
    log.warning("tokenizer_class %r (%s) is not one coulisse rebuilds: it runs tokenizer.json as written, where "
                "transformers 5 rebuilds it from %s's code, so token ids may differ from transformers 5's; set "
                "tokenizer_class to PreTrainedTokenizerFast in tokenizer_config.json to run the file as written in "
                "both", name, directory, name)


# The vocabulary each rebuilding class reads from a tokenizer.json's model.
JSON_MODELS = {"wordpiece": "WordPiece", "mpnet": "WordPiece", "byte-level": "BPE", "camembert": "Unigram",
               "xlm-roberta": "Unigram", "deberta": "Unigram"}


def _rebuild_from_json(files: TokenizerFiles, rebuild: str, data: dict) -> Tokenizer | None:
    """The family's tokenizer around the file's vocabulary; None when the file's model is not the one the
    class reads (the file then runs as written)."""
    model = data.get("model") if isinstance(data.get("model"), dict) else {}
    vocab = model.get("vocab")
    if model.get("type") != JSON_MODELS[rebuild] or not vocab:
        return None
    if "added_tokens_decoder" not in files.settings:
        # Without it, transformers takes the file's added tokens (over added_tokens.json's ids).
        for spec in data.get("added_tokens") or []:
            if not (isinstance(spec, dict) and isinstance(spec.get("id"), int) and spec["id"] >= 0
                    and isinstance(spec.get("content"), str)):
                raise TokenizerLoadError(
                    f"tokenizer.json in {files.directory}: the added token {str(spec)[:80]!r} has no integer id "
                    "and text content; download the tokenizer's files again.")
            flags = {k: spec[k] for k in ("content", "single_word", "lstrip", "rstrip", "normalized", "special")
                     if k in spec}
            files.added[spec["id"]] = AddedToken(**flags)
    if rebuild in ("wordpiece", "mpnet"):
        return _wordpiece_backend(files, vocab)
    if rebuild == "byte-level":
        merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model.get("merges") or []]
        return _bytelevel_backend(files, vocab, merges)
    pieces = [(str(piece), float(score)) for piece, score in vocab]
    charsmap = _charsmap(data.get("normalizer"))
    if rebuild == "deberta":
        unk = files.special("unk", "deberta")
        unk_id = pieces.index((unk, 0.0)) if (unk, 0.0) in pieces else int(files.settings.get("unk_id", 1))
        return _deberta_backend(files, pieces, unk_id, charsmap, None)
    if rebuild == "camembert":  # the first piece that is the unknown token, else 0
        unk = files.special("unk", "sentencepiece")
        unk_id = next((i for i, (piece, _) in enumerate(pieces) if piece == unk), 0)
    else:
        unk_id = 3  # XLMRobertaTokenizer's, whatever the file says
    return _xlmr_backend(files, rebuild, pieces, unk_id, charsmap, None)


def _charsmap(normalizer: object) -> bytes | None:
    """The SentencePiece character map of a tokenizer.json normalizer (alone or in a Sequence), if any."""
    if not isinstance(normalizer, dict):
        return None
    steps = normalizer.get("normalizers") if normalizer.get("type") == "Sequence" else [normalizer]
    for step in steps or []:
        if isinstance(step, dict) and step.get("type") == "Precompiled" and step.get("precompiled_charsmap"):
            return base64.b64decode(step["precompiled_charsmap"])
    return None

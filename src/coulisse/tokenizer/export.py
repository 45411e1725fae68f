"""Write a tokenizer the way transformers saves one: `tokenizer.json`, the original slow files beside it,
`tokenizer_config.json` and `special_tokens_map.json`.

`tokenizer.json` is coulisse's own backend, which gives transformers 5's ids for these files
(`coulisse.tokenizer.build`); the slow files (SentencePiece model, vocab.txt, vocab.json + merges.txt) are
copied unchanged, so that libraries that rebuild a tokenizer from them (transformers 4, sentencepiece) still
can. The settings are the checkpoint's own, so transformers builds the same tokenizer class with the same
options, with what was set on the tokenizer since (`tokenizer.pad_token = ...`, `padding_side`, `truncation_side`:
`live_settings`), plus what the folder alone must now say: the tokenizer class (a checkpoint may have relied on its
config.json's model_type) and the truncation limit coulisse applies (`model_max_length`: tblard/tf-allocine's
`{}` tokenizer_config.json gives transformers none, and a review past 512 tokens would then overflow the
position table).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from tokenizers import Tokenizer as Backend

from coulisse.families import Family
from coulisse.tokenizer.batch_encoding import checked_side
from coulisse.tokenizer.build import SPM_FILES

if TYPE_CHECKING:  # the tokenizer's save_pretrained calls this module
    from coulisse.tokenizer.tokenizer import Tokenizer

SLOW_FILES = (*SPM_FILES, "vocab.txt", "vocab.json", "merges.txt")
# Every file `save_tokenizer` may write: what a previous export may have left in a folder being overwritten.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", *SLOW_FILES)
# Settings that name files of the machine that saved the checkpoint, not of the folder written here.
MACHINE_KEYS = ("tokenizer_file", "vocab_file", "merges_file", "name_or_path", "special_tokens_map_file")
SPECIAL_NAMES = ("bos", "eos", "unk", "sep", "pad", "cls", "mask")
EXTRA_KEYS = ("additional_special_tokens", "extra_special_tokens")


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False, sort_keys=True) + "\n", encoding="utf-8")


def live_settings(tokenizer: Tokenizer) -> dict:
    """The tokenizer's settings as it stands now: the ones it was read with, and over them the named special tokens
    and sides set since (a token set to None is written as null: transformers reads that as none, where a missing
    key gives its class's default). Only what changed is written, so that an untouched tokenizer saves its
    checkpoint's settings byte for byte."""
    settings = dict(tokenizer.settings)
    for name in SPECIAL_NAMES:
        if tokenizer.special_tokens[name] != tokenizer.loaded_special(name):
            settings[f"{name}_token"] = tokenizer.special_tokens[name]
    for key in ("padding_side", "truncation_side"):
        side = checked_side(key, None, getattr(tokenizer, key))  # "middle" would make a folder no one loads
        if side != (settings.get(key) or "right"):
            settings[key] = side
    return settings


def save_tokenizer(tokenizer: Tokenizer, source: Path, out: Path, family: Family) -> list[str]:
    """Write the tokenizer files into `out` (an existing folder); return their names.

    `source` is the checkpoint folder the tokenizer was read from (its slow files are copied). A family whose
    transformers tokenizer runs Python code only (FlauBERT's Moses BPE) gets no tokenizer.json:
    transformers would not read one, and coulisse's backend for it holds a Python pre-tokenizer."""
    written = []
    for name in SLOW_FILES:
        if (source / name).is_file():
            shutil.copyfile(source / name, out / name)
            written.append(name)
    if not family.python_tokenizer:
        # A copy, so that the backend in use keeps its state; saved without truncation or padding, which
        # transformers would otherwise apply to every call.
        backend = Backend.from_str(tokenizer.backend.to_str())
        backend.no_truncation()
        backend.no_padding()
        backend.save(str(out / "tokenizer.json"))
        written.append("tokenizer.json")
    settings = {k: v for k, v in live_settings(tokenizer).items() if k not in MACHINE_KEYS}
    settings.setdefault("tokenizer_class", family.tokenizer_class)
    settings["model_max_length"] = tokenizer.model_max_length
    if (settings.get("extra_special_tokens") == [] and not settings.get("additional_special_tokens")
            and family.spm_layout != "camembert"):
        # "none", as coulisse keeps it, is what the folder means without the key (CamemBERT's default is a list);
        # transformers 4 reads a dict there and failed on the list (audit 40), transformers 5 writes none
        del settings["extra_special_tokens"]
    if not family.python_tokenizer and "extra_special_tokens" in settings:
        # transformers 5 reads extra_special_tokens over it (coulisse too): a second list, which a second
        # convert would drop (CamemBERT's "<s>NOTUSED" pair beside its control pieces), as transformers 5 writes none
        settings.pop("additional_special_tokens", None)
    specials = {k: settings[k] for k in (*(f"{n}_token" for n in SPECIAL_NAMES), *EXTRA_KEYS) if k in settings}
    _write_json(out / "tokenizer_config.json", settings)
    _write_json(out / "special_tokens_map.json", specials)
    return [*written, "tokenizer_config.json", "special_tokens_map.json"]

"""Save a checkpoint that transformers loads as it is: `pipe.save_pretrained(dir)` and `coulisse convert`.

From any checkpoint coulisse reads (safetensors, `.bin`, sharded, TensorFlow's `tf_model.h5`), write
`config.json` (naming transformers' PyTorch class, e.g. `CamembertForSequenceClassification`),
`model.safetensors` under transformers' parameter names (`coulisse.weights.export`: the inverse of the name
tables coulisse loads with) and the tokenizer files (`coulisse.tokenizer.export`). A sentence-transformers folder
saved with the head its modules read (the bare encoder; SPLADE's masked-LM head) keeps its modules: modules.json,
sentence_bert_config.json, config_sentence_transformers.json and each module's folder (Pooling, Normalize...),
copied as they are, so the converted folder embeds as the source does, in coulisse and in sentence-transformers.

The weights are read again from the checkpoint's files, in fp32, and not taken from a running pipeline:
its linear layers may be repacked for oneDNN or quantized to int8, and neither is a transformers format. So
an int8 pipeline saves the fp32 weights it was quantized from (and says so in the log); `dtype` casts them
to float16 or bfloat16.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from coulisse.config import EncoderConfig
from coulisse.engine.prepare import resolve_dtype
from coulisse.errors import InputError, ModelLoadError, WeightShapeError
from coulisse.hub import resolve_model
from coulisse.models import load_model
from coulisse.models.model import HEAD_SUFFIXES, _sources  # the name table loading uses: exporting is its inverse
from coulisse.sentence_modules import (
    MODULE_SETTINGS,
    MODULES_FILE,
    SETTINGS_FILE,
    read_module_json,
    read_modules,
    transformer_folder,
)
from coulisse.tokenizer import Tokenizer
from coulisse.tokenizer.export import TOKENIZER_FILES, save_tokenizer
from coulisse.weights import normalize_keys, read_weights
from coulisse.weights.export import checkpoint_tensors, save_safetensors
from coulisse.weights.formats import WEIGHT_FILES

log = logging.getLogger(__name__)

HEADS = tuple(h or "base" for h in HEAD_SUFFIXES)
SENTENCE_FILES = (MODULES_FILE, MODULE_SETTINGS, SETTINGS_FILE)  # a sentence-transformers folder's, at its root
# Weight files a folder being overwritten may hold besides ours: left there, they would be read first. A
# modules.json left from a sentence-transformers folder would pool the new checkpoint its way.
STALE_WEIGHTS = (*WEIGHT_FILES, "model-*.safetensors", "pytorch_model-*.bin", *SENTENCE_FILES)
# Tokenizer files a previous checkpoint may have left: ours, and transformers' list of added tokens, which it reads
# beside ours (kept, it gave tokens ids past the new vocabulary: audit 40).
STALE_TOKENIZER = (*TOKENIZER_FILES, "added_tokens.json")


@dataclass(frozen=True)
class Export:
    """How transformers' PyTorch classes of one family look from outside: their name prefix, and what they
    hold beyond what coulisse reads."""

    prefix: str  # "Camembert": CamembertForSequenceClassification, CamembertModel
    pooler: bool = False  # its `*Model` has a pooler (add_pooling_layer=True): copied for base exports
    kept: tuple[str, ...] = ()  # base-model tensors coulisse leaves unread, copied when present


# One row per `coulisse.families` row (tests/weights/test_export.py checks that none is missing).
EXPORTS = {
    "bert": Export("Bert", pooler=True),
    "roberta": Export("Roberta", pooler=True),
    "camembert": Export("Camembert", pooler=True),
    "xlm-roberta": Export("XLMRoberta", pooler=True),
    "distilbert": Export("DistilBert"),
    "electra": Export("Electra"),
    # Language embeddings (n_langs > 1): transformers' FlaubertModel holds them; no tokenizer input reads them.
    "flaubert": Export("Flaubert", kept=("lang_embeddings.",)),
    "deberta-v2": Export("DebertaV2"),
    "mpnet": Export("MPNet", pooler=True),
    "modernbert": Export("ModernBert"),
}


def architecture(config: EncoderConfig, head: str | None) -> str:
    """transformers' PyTorch class for `head` on this family: "CamembertForSequenceClassification"."""
    return EXPORTS[config.model_type].prefix + HEAD_SUFFIXES[head]


def head_of(config: EncoderConfig) -> str | None:
    """The head config.json's `architectures` names (a TensorFlow class name counts: "TFBertModel")."""
    prefix = EXPORTS[config.model_type].prefix
    for name in config.architectures:
        bare = name.removeprefix("TF")
        for head, suffix in HEAD_SUFFIXES.items():
            if bare.endswith(suffix) and (head is not None or bare == prefix + suffix):
                return head
    raise InputError(f"config.json names the architectures {config.architectures or 'none'}, none of which says "
                     f"which head to save; pass the head (head=, or --head; one of {', '.join(HEADS)}).")


def default_head(directory: Path, config: EncoderConfig) -> str | None:
    """The head to save when none is asked for: a sentence-transformers folder (modules.json) holds the bare
    encoder whatever config.json's `architectures` say (all-mpnet-base-v2's names MPNetForMaskedLM), unless
    it is a SPLADE one, which reads its masked-LM head, or a CrossEncoder (sentence-transformers 6: its
    Transformer module's `transformer_task` is sequence-classification), which reads its classifier; any other
    folder, the head `architectures` name."""
    try:
        modules = read_modules(directory)
    except ModelLoadError:
        modules = None  # architectures decide, as for a folder without modules.json
    sentence = (modules is not None and all(kind != "SpladePooling" for kind, _ in modules)
                and _transformer_task(modules) in (None, "feature-extraction"))
    return None if sentence else head_of(config)


def _transformer_task(modules: list[tuple[str, Path]]) -> str | None:
    """sentence-transformers 6's `transformer_task` of the Transformer module (None: not said, which is an
    embedding model's Transformer, as in every earlier version)."""
    folder = next((folder for kind, folder in modules if kind == "Transformer"), None)
    try:
        settings = read_module_json(folder / MODULE_SETTINGS) if folder is not None else None
    except ModelLoadError:
        return None
    task = settings.get("transformer_task") if isinstance(settings, dict) else None
    return task if isinstance(task, str) else None


def parse_head(head: str | None) -> str | None:
    """A head name as users write it ("base" for the bare encoder) -> the model's (None)."""
    if head not in HEADS:
        raise InputError(f"head={head!r}; use one of {', '.join(HEADS)}.")
    return None if head == "base" else head


def export_dtype(dtype: str | torch.dtype | None) -> torch.dtype:
    """The dtype to write: float32 unless told float16 or bfloat16 (spelt as `pipeline(dtype=...)` takes them)."""
    resolved = torch.float32 if dtype is None else resolve_dtype(dtype, torch.device("cpu"))
    if resolved not in (torch.float32, torch.float16, torch.bfloat16):
        raise InputError(f"dtype={dtype!r}; a checkpoint is written in float32, float16 or bfloat16.")
    return resolved


def transformers_config(config: EncoderConfig, head: str | None, dtype: torch.dtype, tied: bool | None) -> dict:
    """config.json: the checkpoint's own, naming the PyTorch class, the labels and the dtype written."""
    data = {k: v for k, v in config.raw.items() if k not in ("transformers_version", "_name_or_path", "num_labels")}
    name = str(dtype).removeprefix("torch.")
    data.update(architectures=[architecture(config, head)], model_type=config.model_type,
                id2label={str(i): label for i, label in sorted(config.id2label.items())},
                label2id=dict(config.label2id), dtype=name, torch_dtype=name)  # torch_dtype: transformers 4
    if tied is not None:
        data["tie_word_embeddings"] = tied
    return data


def check_out_dir(out: Path, source: Path | None, overwrite: bool) -> Path:
    """Refuse, before anything is read, a folder that holds files (unless `overwrite`), a path that is a
    file, and the checkpoint's own folder `source` (its weights would be replaced while they are read)."""
    out = Path(out).expanduser()
    if out.exists() and not out.is_dir():
        raise InputError(f"{out} is a file; give a folder to write the checkpoint into.")
    if source is not None and out.resolve() == Path(source).resolve():
        raise InputError(f"{out} is the checkpoint's own folder; write the converted checkpoint to another one.")
    if (source is not None and out.resolve().is_relative_to(Path(source).resolve()) and out.is_dir()
            and any(out.iterdir())):  # a module's folder (1_Pooling): its config.json would become the model's
        raise InputError(f"{out} is a folder of the checkpoint's own, which it reads (a sentence-transformers "
                         "module's settings); write the converted checkpoint outside the checkpoint's folder, or "
                         "into a new folder.")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise InputError(f"{out} is not empty; pass overwrite=True (--overwrite) to replace the checkpoint files "
                         "in it, or choose an empty folder.")
    return out


def _kept_tensors(directory: Path, config: EncoderConfig, head: str | None, prefix: str) -> dict:
    """Base-model tensors transformers' class holds and coulisse's model does not: the pooler of a base
    model, a family's `kept` tensors. Read from the checkpoint again, only when there is such a thing."""
    row = EXPORTS[config.model_type]
    wanted = (*row.kept, *(("pooler.",) if row.pooler and head is None else ()))
    if not wanted:
        return {}
    tensors = normalize_keys(read_weights(directory)[0], config.family.prefixes)
    kept = {prefix + k.removeprefix("{base}."): t for k, t in tensors.items()
            if k.removeprefix("{base}.").startswith(wanted)}
    pooler = {k: t for k, t in kept.items() if ".pooler." in f".{k}"}
    H = config.hidden_size
    for key, t in pooler.items():
        if tuple(t.shape) not in ((H, H), (H,)):
            raise WeightShapeError(f"tensor {key} has shape {tuple(t.shape)}, but hidden_size {H} implies "
                                   f"{(H, H) if key.endswith('weight') else (H,)}; check config.json.")
    if row.pooler and head is None and not pooler:
        log.warning("%s has no pooler tensors: transformers' %s will initialise its pooler at random "
                    "(pooler_output only; last_hidden_state is exact)", directory, architecture(config, None))
    return kept


def sentence_modules(directory: Path, config: EncoderConfig, head: str | None) -> list[tuple[Path, str]]:
    """The sentence-transformers files to carry, as (source, name in the output): none unless the folder has a
    modules.json whose Transformer module is the folder itself and `head` is the one its modules read. Module
    folders are those `read_modules` checked to lie inside the model's (their links too); only their files are
    copied, never a folder within them."""
    modules = read_modules(directory)
    if modules is None:
        return []
    if head != (theirs := default_head(directory, config)):
        log.info("%s: its sentence-transformers modules read the %s head, not the %s saved: not carried", directory,
                 theirs or "base", head or "base")
        return []
    carried = [(directory / name, name) for name in SENTENCE_FILES if (directory / name).is_file()]
    for kind, folder in modules:
        where = Path(os.path.normpath(folder.relative_to(directory)))  # "1_Pooling/.." is the folder itself
        if where == Path(".") or folder.resolve() == directory.resolve():
            continue  # the Transformer module: config, weights and tokenizer are written anew
        if not folder.is_dir():
            continue  # a module without files (Normalize's folder is often absent): absent in the output too
        for entry in sorted(folder.iterdir()):
            if entry.is_file():
                carried.append((entry, (where / entry.name).as_posix()))
            else:
                log.warning("%s: module %s's subfolder %s is not carried", directory, kind, entry.name)
    return carried


def save_pretrained(directory: Path, config: EncoderConfig, tokenizer: Tokenizer, head: str | None, out: Path, *,
                    dtype: str | torch.dtype | None = None, overwrite: bool = False) -> Path:
    """Write the checkpoint in `directory` (config, tokenizer, `head`) into `out` for transformers."""
    return _save(directory, config, tokenizer, head, out, dtype=dtype, overwrite=overwrite)[0]


def _save(directory: Path, config: EncoderConfig, tokenizer: Tokenizer, head: str | None, out: Path, *,
          dtype: str | torch.dtype | None, overwrite: bool) -> tuple[Path, list[str]]:
    """`save_pretrained`, and the names of the files written (relative to `out`)."""
    out = check_out_dir(out, directory, overwrite)
    dtype = export_dtype(dtype)
    model = load_model(directory, config, head)  # fp32, as read: no fast path, no quantization
    prefix = config.family.prefixes[0] + "." if head is not None else ""
    tensors, tied = checkpoint_tensors(model.named_parameters(), _sources(config.family, model.head), prefix)
    tensors.update(_kept_tensors(directory, config, head, prefix))
    # Written on `out`'s file system first, so that moves are renames, with the umask's permissions (`tempfile.mkdtemp`
    # would make a new `out` private to its owner): inside `out` where it exists (a mount point, a folder in a
    # read-only parent: beside it, every move crossed devices or was refused, audit 40), else beside it, where
    # the new folder is one rename.
    hidden = f".coulisse-{secrets.token_hex(4)}"
    staging = out / hidden if out.is_dir() else out.parent / f".{out.name}{hidden}"
    staging.mkdir(parents=True)
    try:
        save_safetensors(tensors, staging / "model.safetensors", dtype)
        config_data = transformers_config(config, head, dtype, tied)
        (staging / "config.json").write_text(json.dumps(config_data, indent=2, ensure_ascii=False) + "\n",
                                             encoding="utf-8")
        save_tokenizer(tokenizer, directory, staging, config.family)
        for source, name in sentence_modules(directory, config, head):
            (staging / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, staging / name)
        written = sorted(p.relative_to(staging).as_posix() for p in staging.rglob("*") if p.is_file())
        _move_into(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log.info("saved %s (%s, %d tensors, %s) to %s", architecture(config, head), config.model_type, len(tensors),
             str(dtype).removeprefix("torch."), out)
    return out, written


def _move_into(staging: Path, out: Path) -> None:
    """Everything written at once where it can be (a new folder is one rename); into an existing folder, file
    by file, then the checkpoint files of a previous one that ours did not replace are removed (after: a move
    that fails leaves the previous checkpoint's files, not a folder without weights)."""
    if not out.exists():
        os.replace(staging, out)
        return
    ours = {p.name for p in staging.iterdir()}
    stale = {p for pattern in (*STALE_WEIGHTS, *STALE_TOKENIZER) for p in out.glob(pattern) if p.name not in ours}
    for name in sorted(ours):
        if (staging / name).is_dir():  # a sentence-transformers module's folder: its files replace those there
            (out / name).mkdir(exist_ok=True)
            _move_into(staging / name, out / name)
        else:
            os.replace(staging / name, out / name)
    for path in sorted(stale):
        log.info("removing %s, left by a previous checkpoint", path)
        path.unlink()


def convert(model: str | Path, out: str | Path, *, head: str | None = None, dtype: str | torch.dtype | None = None,
            overwrite: bool = False, revision: str | None = None) -> tuple[Path, list[str]]:
    """`coulisse convert`: a Hub id or folder -> a transformers checkpoint in `out`, and the names of the files
    written there. `head` ("base" for the bare encoder) defaults to the one config.json's `architectures`
    names, or to the bare encoder for a sentence-transformers folder (`default_head`)."""
    # What can be refused without the checkpoint is refused before it is looked for (or downloaded).
    export_dtype(dtype)
    if head is not None:
        parse_head(head)
    check_out_dir(Path(out), None, overwrite)
    directory = resolve_model(model, revision)
    check_out_dir(Path(out), directory, overwrite)
    directory = transformer_folder(directory)  # sentence-transformers before v2: what transformers reads is there
    config = EncoderConfig.from_file(directory / "config.json")
    chosen = default_head(directory, config) if head is None else parse_head(head)
    tokenizer = Tokenizer.from_dir(directory, model_type=config.model_type, max_positions=config.max_positions,
                                   vocab_size=config.vocab_size)
    tokenizer.model_max_length = min(tokenizer.model_max_length, config.max_positions)
    return _save(directory, config, tokenizer, chosen, Path(out), dtype=dtype, overwrite=overwrite)

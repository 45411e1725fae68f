"""A sentence-transformers folder's `modules.json`: its modules, each module's folder checked to lie inside the
model's folder. Read by feature extraction and SPLADE to pool, by `coulisse.export` to carry the modules into
a converted folder, and by the load to find the transformer of the layout before sentence-transformers v2
(`0_Transformer/`); it sits below them.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from coulisse.errors import ModelLoadError
from coulisse.hub import check_links
from coulisse.jsonfile import read_json

log = logging.getLogger(__name__)

MODULES_FILE = "modules.json"
MODULE_SETTINGS = "sentence_bert_config.json"  # the Transformer module's: max_seq_length, do_lower_case
SETTINGS_FILE = "config_sentence_transformers.json"  # prompts, default_prompt_name, similarity, truncate_dim


def read_module_json(path: Path) -> Any:
    """A module file's JSON, or one ModelLoadError that says to fix it or drop modules.json."""
    return read_json(path, fix="fix the file, or delete the folder's modules.json")


def read_modules(directory: Path) -> list[tuple[str, Path]] | None:
    """modules.json's modules as (class name, folder), or None when the folder has no modules.json. Each
    module's folder must lie inside `directory` (a crafted `"path": "../../etc"` is refused, never read)."""
    path = directory / "modules.json"
    if not path.is_file():
        return None
    modules = read_module_json(path)
    if not isinstance(modules, list) or not all(isinstance(module, dict) for module in modules):
        raise ModelLoadError(f"{path} is not a list of modules (objects with a type and a path); fix the file, or "
                             "delete it to use the folder as a plain checkpoint.")
    root, found = directory.resolve(), []
    for i, module in enumerate(modules):
        kind, sub = module.get("type", ""), module.get("path", "")
        if not isinstance(kind, str) or not isinstance(sub, str):
            raise ModelLoadError(f"{path}: module {i} has type {kind!r} and path {sub!r}; both must be strings. "
                                 "Fix the file, or delete it.")
        folder = directory / sub
        if Path(sub).is_absolute() or not folder.resolve().is_relative_to(root):
            raise ModelLoadError(f"{path}: module {i}'s path {sub!r} leads out of the model folder, which coulisse "
                                 "never reads; a module's files lie in a subfolder of the model's.")
        found.append((kind.rsplit(".", 1)[-1], folder))
    # The load checked the links of the folder and of its first-level subfolders, but not of hidden ones (".x")
    # nor of those reached through a link or deeper ("a/b"): a module's folder among those is checked here.
    checked = {root} | {entry.resolve() for entry in directory.iterdir()
                        if entry.is_dir() and not entry.is_symlink() and not entry.name.startswith(".")}
    check_links(directory, [folder for _, folder in found if folder.resolve() not in checked])
    return found


def transformer_folder(directory: Path) -> Path:
    """The folder of the transformer's config, tokenizer and weights: `directory`, or where sentence-transformers'
    layout before v2 kept them, the Transformer module's folder that modules.json names (`0_Transformer/`,
    checked to lie inside `directory`); its Pooling and Normalize modules are read from `directory` as always."""
    if (directory / "config.json").exists() or not (directory / "modules.json").is_file():
        return directory
    try:
        modules = read_modules(directory) or []
    except ModelLoadError:  # a broken modules.json: the load says so where it reads it
        return directory
    inner = next((folder for kind, folder in modules if kind == "Transformer"), None)
    if inner is None or inner.resolve() == directory.resolve() or not (inner / "config.json").is_file():
        return directory
    log.info("%s keeps its transformer in %s/ (sentence-transformers' layout before v2): read from there",
             directory, inner.relative_to(directory))
    return inner

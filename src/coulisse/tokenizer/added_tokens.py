"""The settings and added tokens of a tokenizer folder, read as transformers 5's `from_pretrained` reads them.

Three files may add tokens to a vocabulary: tokenizer_config.json's `added_tokens_decoder` (id -> token and its
flags), the older `added_tokens.json` (token -> id), and the special tokens themselves (the named ones and
`additional_special_tokens`, in tokenizer_config.json or special_tokens_map.json). transformers 5 reads them in
an order with precedence rules of its own (`PreTrainedTokenizerBase._from_pretrained`, then
`TokenizersBackend.__init__`): what is reproduced here, so that ids, `len(tokenizer)`, special-token masks and
`decode(skip_special_tokens=True)` are the same.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tokenizers import AddedToken
from tokenizers import Tokenizer as Backend

from coulisse.errors import TokenizerLoadError
from coulisse.jsonfile import read_json

# transformers' SPECIAL_TOKENS_ATTRIBUTES, in its order (new ids are given in that order).
NAMED = ("bos", "eos", "unk", "sep", "pad", "cls", "mask")
EXTRA_KEYS = ("additional_special_tokens", "extra_special_tokens")
FLAGS = ("content", "single_word", "lstrip", "rstrip", "normalized", "special")
# Settings read as they are -> (the types they may have, what to say); bool is not an int here (True is 1).
SETTING_TYPES = {
    "tokenizer_class": ((str, type(None)), "a class name such as \"BertTokenizer\""),
    "do_lower_case": (bool, "true or false"),
    "tokenize_chinese_chars": (bool, "true or false"),
    "strip_accents": ((bool, type(None)), "true, false or null"),
    "trim_offsets": (bool, "true or false"),
}


def _read(path: Path) -> dict:
    if not path.is_file() or path.stat().st_size == 0:
        return {}
    data = read_json(path, error=TokenizerLoadError, fix="fix or delete it")
    return data if isinstance(data, dict) else {}


def read_settings(directory: Path) -> tuple[dict, dict[int, AddedToken]]:
    """(settings, added tokens by id) of a folder. The settings are tokenizer_config.json, and
    special_tokens_map.json over it as transformers 5 merges them: not at all when the config has
    `added_tokens_decoder`; otherwise the map's named tokens win, and its `additional_special_tokens` apply only
    where the config lists none (kept apart as `additional_special_tokens`: a SentencePiece model's control
    pieces take their place). The config's special tokens beyond the named ones are `extra_special_tokens`
    (transformers 5's name for them)."""
    config = _read(directory / "tokenizer_config.json")
    settings = {k: v for k, v in config.items() if k not in EXTRA_KEYS}
    extras = config.get("extra_special_tokens") or config.get("additional_special_tokens",
                                                                config.get("extra_special_tokens"))
    present = any(k in config for k in EXTRA_KEYS)
    smap = {} if "added_tokens_decoder" in config else _read(directory / "special_tokens_map.json")
    for key, value in smap.items():
        if key == "extra_special_tokens" and isinstance(value, list):
            extras = list(extras or []) + [t for t in value if t not in (extras or [])]
            present = True
        elif key not in EXTRA_KEYS and key != "added_tokens_decoder":
            settings[key] = value
    # added_tokens.json is read before the map's additional tokens are seen
    seen = [_content(t) for t in extras] if isinstance(extras, list) else []
    if present:
        settings["extra_special_tokens"] = extras if isinstance(extras, list) else []
    elif isinstance(smap.get("additional_special_tokens"), list):
        settings["additional_special_tokens"] = smap["additional_special_tokens"]
    _check_types(settings, directory)
    named = [_content(settings[f"{n}_token"]) for n in NAMED if settings.get(f"{n}_token")]
    return settings, _decoder(directory, config, set(named) | set(seen))


def _check_types(settings: dict, directory: Path) -> None:
    """The settings the builders hand to the Rust library (or look up in a table) as they are: a value of another
    type is named here, not as pyo3's "'list' object is not an instance of 'bool'" or "unhashable type"."""
    for key, (types, expected) in SETTING_TYPES.items():
        if key in settings and not isinstance(settings[key], types):
            value = settings[key]
            shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
            raise TokenizerLoadError(
                f"{key} in the tokenizer settings of {directory} (tokenizer_config.json or special_tokens_map.json) "
                f"is {shown} ({type(value).__name__}), not {expected}; fix it, or delete the key.")


def _content(token: Any) -> str:
    return str(token.get("content", "")) if isinstance(token, dict) else str(token)


def _token(spec: Any, where: str, **overrides: Any) -> AddedToken:
    """An AddedToken from a string or a saved dict (its flags kept, `overrides` over them)."""
    if isinstance(spec, AddedToken):
        return spec
    if isinstance(spec, str):
        return AddedToken(spec, **overrides)
    if not isinstance(spec, dict) or not isinstance(spec.get("content"), str):
        raise TokenizerLoadError(
            f"{where} is {spec!r}, not a token (a string, or an object with a string `content`); fix or delete it.")
    flags = {k: spec[k] for k in FLAGS if k in spec}
    return AddedToken(**{**flags, **overrides})


def model_specific_tokens(settings: dict) -> dict[str, str]:
    """Settings named `*_token` beyond the standard seven, whose value is a token: transformers 5 makes them named
    special tokens too (`model_specific_special_tokens`)."""
    standard = {f"{n}_token" for n in NAMED}
    return {k: _content(v) for k, v in settings.items()
            if k.endswith("_token") and k not in standard and (isinstance(v, str) or
                                                              (isinstance(v, dict) and isinstance(v.get("content"),
                                                                                                   str)))}


def _decoder(directory: Path, config: dict, specials: set[str]) -> dict[int, AddedToken]:
    """The tokens a folder adds by id: tokenizer_config.json's `added_tokens_decoder`, else added_tokens.json
    (special where a special setting names the token, then matched on the raw text)."""
    if "added_tokens_decoder" in config:
        table = config["added_tokens_decoder"]
        if not isinstance(table, dict):
            raise TokenizerLoadError(f"added_tokens_decoder in {directory / 'tokenizer_config.json'} is not an "
                                     "object of id -> token; fix or delete it.")
        out = {}
        for key, spec in table.items():
            if not str(key).isdigit():
                raise TokenizerLoadError(f"added_tokens_decoder in {directory / 'tokenizer_config.json'} has the "
                                         f"id {key!r}, not a number; fix or delete it.")
            out[int(key)] = _token(spec, f"added_tokens_decoder[{key!r}] in {directory / 'tokenizer_config.json'}")
        return out
    path = directory / "added_tokens.json"
    table = _read(path)
    if any(not isinstance(i, int) or isinstance(i, bool) for i in table.values()):
        raise TokenizerLoadError(f"{path} must map each token to an integer id; fix or delete it.")
    return {i: AddedToken(t, normalized=t not in specials, special=t in specials) for t, i in table.items()}


def add_tokens(backend: Backend, added: dict[int, AddedToken], settings: dict, named: dict[str, Any],
               extras: list) -> None:
    """Add the folder's added and special tokens to `backend` in one call, in transformers 5's order: the
    added tokens by id, then the named special tokens (`named`: name -> string or saved dict, the class default
    where the settings name none), then the extra ones, each skipped when an earlier one has its text (the Rust
    library keeps the first flags it sees for a text; a token of the vocabulary keeps its id, a new one gets
    the next free id)."""
    named = {**named, **{k.removesuffix("_token"): v for k, v in model_specific_tokens(settings).items()}}
    named_text = [_content(v) for v in named.values() if v]
    tokens = [added[i] for i in sorted(added)]
    known = set(backend.get_added_tokens_decoder()[i].content for i in backend.get_added_tokens_decoder())
    known |= {t.content for t in tokens}
    for name, spec in named.items():
        if spec and _content(spec) not in known:
            tokens.append(_token(spec, f"{name}_token", special=True))
            known.add(_content(spec))
    for i, spec in enumerate(extras):
        if _content(spec) not in known:
            tokens.append(_token(spec, f"extra_special_tokens[{i}]", special=True))
            known.add(_content(spec))
    for token in tokens:
        if not token.special and token.content in named_text:
            token.special = True
    backend.add_tokens(tokens)

"""Stage 0: a model folder (or Hub id) -> config, tokenizer and encoder, loaded once."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from coulisse.config import EncoderConfig
from coulisse.errors import TokenizerLoadError
from coulisse.hub import resolve_model
from coulisse.models import EncoderModel, load_model
from coulisse.sentence_modules import transformer_folder
from coulisse.tokenizer import Tokenizer

log = logging.getLogger(__name__)


@dataclass
class Checkpoint:
    """Everything loaded from one model folder. `model_dir` holds the transformer's own files (config, tokenizer,
    weights): the folder itself, or the Transformer module's folder of sentence-transformers' layout before v2."""

    name: str
    directory: Path
    config: EncoderConfig
    tokenizer: Tokenizer
    model: EncoderModel
    model_dir: Path | None = None

    def __post_init__(self) -> None:
        if self.model_dir is None:
            self.model_dir = self.directory

    def __repr__(self) -> str:
        """Where it was read from and what it is, not every field of the config, tokenizer and model (2 kB)."""
        c = self.config
        return (f"Checkpoint(name={self.name!r}, directory={str(self.directory)!r}, model_type={c.model_type!r}, "
                f"layers={c.num_hidden_layers}, hidden_size={c.hidden_size}, labels={c.num_labels})")


# A model that reads relative positions only takes its tokenizer's length limit up to this many times its
# position table (4,096 tokens for DeBERTa-v3's 512).
RELATIVE_LENGTHS = 8


def load_checkpoint(model: str | Path, head: str | None, revision: str | None = None,
                    tokenizer_dir: Path | None = None) -> Checkpoint:
    """The model's folder read: its config, weights and tokenizer (`tokenizer_dir`'s instead, where given:
    `pipeline(model=A, tokenizer=B)`, A's folder then needs no tokenizer files of its own)."""
    directory = resolve_model(model, revision)
    model_dir = transformer_folder(directory)
    config = EncoderConfig.from_file(model_dir / "config.json")
    source = tokenizer_dir if tokenizer_dir is not None else model_dir
    tokenizer = load_tokenizer(source, config)
    encoder = load_model(model_dir, config, head)  # first: a vocab_size that the weights contradict is named
    check_tokenizer(tokenizer, config, source)
    return Checkpoint(str(model), directory, config, tokenizer, encoder, model_dir)


def load_tokenizer(source: Path, config: EncoderConfig) -> Tokenizer:
    """The tokenizer files in `source`, for the model `config` describes, truncating at most at `length_ceiling`
    (not yet checked against the model: `check_tokenizer`)."""
    # A tokenizer whose folder names no limit cuts at the position table's (docs/dropin.md)...
    tokenizer = Tokenizer.from_dir(source, model_type=config.model_type, max_positions=config.max_positions,
                                   vocab_size=config.vocab_size)
    tokenizer.reads_any_length = config.position_limit is None
    tokenizer.model_max_length = min(tokenizer.model_max_length, length_ceiling(config))
    return tokenizer


def length_ceiling(config: EncoderConfig) -> int:
    """The longest input a tokenizer of this model may let through: what its position table embeds. A model that
    reads no absolute position (DeBERTa-v3's relative buckets) keeps its tokenizer's own limit, as transformers
    does (a long-document fine-tune's 1024 or 2048 was cut at 512, audit 44), up to RELATIVE_LENGTHS times its
    table: attention's cost grows with the square of the length, and a tokenizer_config.json saying 999999999
    let one request hold a server for minutes (audit 44, review)."""
    if config.position_limit is not None:
        return config.position_limit
    return RELATIVE_LENGTHS * config.max_positions


def check_tokenizer(tokenizer: Tokenizer, config: EncoderConfig, directory: Path) -> None:
    """The tokenizer's ids must index the model's tables: an id past `vocab_size` (or a token type past
    `type_vocab_size`) would fail inside the first forward, for every input that holds it, and a special
    token its template names but the vocabulary lacks fails at the first call. Checked once here, on the
    vocabulary and on one encoded text and pair, so a mismatched or broken folder is refused at load."""
    vocab = tokenizer.get_vocab()
    token, top = max(vocab.items(), key=lambda item: item[1], default=("", -1))
    if top >= config.vocab_size:
        raise TokenizerLoadError(
            f"the tokenizer in {directory} gives {token!r} the id {top}, but the model's embedding table has "
            f"{config.vocab_size} rows (vocab_size in config.json): the tokenizer files are not this model's. "
            "Use the tokenizer the model was trained with.")
    if 2 * len(vocab) < config.vocab_size:
        # Not refused (the ids fit), but most of the model's words are out of reach: nearly every word becomes
        # the unknown token, and the labels are those of a near-empty text.
        log.warning("the tokenizer in %s knows %d tokens, but the model's embedding table has %d rows "
                    "(vocab_size in config.json): most of the model's vocabulary is out of its reach, and texts "
                    "become mostly unknown tokens. A broken conversion writes such a tokenizer (transformers 5's "
                    "CamembertTokenizer(vocab_file=...) keeps 6 tokens of a SentencePiece model); use the "
                    "tokenizer the model was trained with, saved by AutoTokenizer.from_pretrained(folder).",
                    directory, len(vocab), config.vocab_size)
    if missing := missing_template_token(tokenizer):
        raise TokenizerLoadError(
            f"the tokenizer in {directory} has a post-processor template naming the special token {missing!r}, "
            "which its special_tokens do not define: tokenizer.json is broken. Download it again, or use the "
            "tokenizer the model was trained with.")
    try:
        # a snowman: no vocabulary of these models has it, so the unknown token is looked up too
        single, pair = tokenizer.encode_batch(["a \u2603"], truncation=False)[0], \
            tokenizer.encode_batch(["a"], ["b"], truncation=False)[0]
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as e:  # the Rust binding's PanicException is a BaseException
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise TokenizerLoadError(
            f"the tokenizer in {directory} fails on a one-word text ({type(e).__name__}: {first}); its files "
            "are broken (a special token its template names may be missing from the vocabulary). Download "
            "them again, or use the tokenizer the model was trained with.") from None
    ids, types = [*single.ids, *pair.ids], [*single.type_ids, *pair.type_ids]
    if (bad := next((i for i in ids if i >= config.vocab_size), None)) is not None:
        raise TokenizerLoadError(
            f"the tokenizer in {directory} adds the special id {bad}, but the model's embedding table has "
            f"{config.vocab_size} rows (vocab_size in config.json): its post-processor's ids are not this "
            "model's. Use the tokenizer the model was trained with.")
    embedded = config.family.token_types and config.type_vocab_size > 0  # DeBERTa-v3: 0, types never read
    if embedded and max(single.type_ids, default=0) >= config.type_vocab_size:
        raise TokenizerLoadError(
            f"the tokenizer in {directory} gives a single text the token type {max(single.type_ids)}, but the "
            f"model embeds only types 0 to {config.type_vocab_size - 1} (type_vocab_size in config.json). Use the "
            "tokenizer the model was trained with.")
    if embedded and max(types, default=0) >= config.type_vocab_size:
        # A BERT with type_vocab_size 1 reads single texts, as in transformers; a pair is refused by the engine.
        log.info("%s embeds %d token type(s) (type_vocab_size in config.json): it reads single texts, and "
                 "(text, text_pair) inputs, whose second text has type %d, are refused.", directory,
                 config.type_vocab_size, max(types))


def missing_template_token(tokenizer: Tokenizer) -> str | None:
    """A special token a TemplateProcessing post-processor names but does not define: the Rust library
    panics on it, printing its own backtrace before Python sees an error, so it is looked for first."""
    import json

    processor = getattr(tokenizer.backend, "post_processor", None)
    state = processor.__getstate__() if processor is not None else None
    if not isinstance(state, (bytes, str)):  # a Python tokenizer's own post-processing
        return None
    processors = [json.loads(state)]
    while processors:
        processor = processors.pop()
        processors += processor.get("processors") or []  # a Sequence of processors
        if processor.get("type") != "TemplateProcessing":
            continue
        defined = processor.get("special_tokens") or {}
        for piece in [*(processor.get("single") or []), *(processor.get("pair") or [])]:
            name = (piece.get("SpecialToken") or {}).get("id") if isinstance(piece, dict) else None
            if name is not None and name not in defined:
                return name
    return None


# The files besides the weights that `model_files` names, in a fixed order: a corpus job's record and the int8
# cache's key are made of them, so a list that changed would refuse to resume a job an earlier version started
# (the Hub's download list grew in session 41: kept apart from it).
MODEL_FILE_NAMES = ("config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                    "sentencepiece.bpe.model", "spiece.model", "vocab.txt", "vocab.json", "merges.txt",
                    "added_tokens.json", "tokenizer.model", "spm.model", "modules.json", "sentence_bert_config.json",
                    "1_Pooling/config.json")


def model_files(directory: Path) -> list[Path]:
    """The files a load reads from `directory`: config.json, the tokenizer files there, and the weight file
    `read_weights` picks (with its shards, each checked to stay inside the folder). What a resumed corpus
    job hashes to know that the model is the one its first run loaded, whatever the path says."""
    import json

    from coulisse.weights.formats import _shard_path, find_weight_file

    inner = transformer_folder(directory)  # sentence-transformers before v2: its 0_Transformer/, and the root's
    files = [folder / name for folder in dict.fromkeys((inner, directory)) for name in MODEL_FILE_NAMES
             if (folder / name).is_file()]
    weights = find_weight_file(inner)
    files.append(weights)
    if weights.name.endswith(".index.json"):
        try:
            shards = sorted(set(json.loads(weights.read_text(encoding="utf-8"))["weight_map"].values()))
        except (ValueError, KeyError, TypeError, AttributeError):
            shards = []  # the load names what is wrong with the index; its bytes are hashed all the same
        files += [p for p in (_shard_path(weights, s) for s in shards) if p.is_file()]
    return files

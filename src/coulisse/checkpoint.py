"""Stage 0: a model folder (or Hub id) -> config, tokenizer and encoder, loaded once."""

from __future__ import annotations

import json
import logging
import os
import stat
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from coulisse.config import EncoderConfig
from coulisse.defaults import BUNDLED_ACCURACY, BUNDLED_MODEL, DEFAULT_MODELS, TF_ALLOCINE_ACCURACY
from coulisse.errors import HubUnreachableError, ModelNotFoundError, TokenizerLoadError
from coulisse.hub import download_hint, is_offline, local_model, resolve_model
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


def default_model(task: str, revision: str | None = None) -> str | None:
    """The model to load for `task` when the caller named none: the default if it is cached or downloadable,
    else the bundled one (for the tasks it serves). None when the task has no default.

    A Hub that drops packets (a firewall) lets a request wait its whole timeout, 10 s or more: what is awaited
    is said after `HUB_NOTICE_AFTER` seconds, and once the Hub has failed to answer, neither this process (a
    notebook, a loop building pipelines) nor the next ones (each `coulisse classify` is a process: a memo in the
    cache folder, per Hub endpoint) ask it again for the default model before `HUB_RETRY_AFTER` seconds."""
    name = DEFAULT_MODELS.get(task)
    if name is None:
        return None
    failed = _HUB_FAILED.get(name)
    ago = time.monotonic() - failed if failed is not None else None if is_offline() else _unanswered_ago(name)
    if ago is not None and ago < HUB_RETRY_AFTER and revision is None:
        if local_model(name) is not None:  # downloaded since
            return name
        # Said as a warning once per process: a command run again within HUB_RETRY_AFTER of one the Hub left
        # unanswered (the memo on disk) must still say that the bundled model answers.
        level = logging.INFO if name in _FELL_BACK else logging.WARNING
        _FELL_BACK.add(name)
        log.log(level, "%s: the Hugging Face Hub failed to answer %.0f s ago; using the bundled %s (the Hub is asked "
                "again after %.0f s; --model %s asks it now, HF_HUB_OFFLINE=1 never).", name, ago, BUNDLED_MODEL,
                HUB_RETRY_AFTER, name)
        return BUNDLED_MODEL
    notice = threading.Timer(HUB_NOTICE_AFTER, log.warning, args=(
        "waiting for the Hugging Face Hub to answer for %s, the default model (HF_HUB_OFFLINE=1 skips the Hub; "
        "--model %s runs the bundled model at once)", name, BUNDLED_MODEL))
    notice.daemon = True
    notice.start()
    try:
        resolve_model(name, revision)
        return name
    except ModelNotFoundError as e:
        if isinstance(e, HubUnreachableError) and not is_offline():
            _HUB_FAILED[name] = time.monotonic()
            _remember_unanswered(name)
        # Said once per process and default model (a notebook or a loop builds pipelines again and again).
        level = logging.INFO if name in _FELL_BACK else logging.WARNING
        _FELL_BACK.add(name)
        if is_offline():
            log.log(level, "%s is not in the Hugging Face cache and HF_HUB_OFFLINE is set: using the bundled %s "
                    "(%.1f %% accuracy on held-out Allociné reviews, %s reaches %.1f %%). To get %s: %s; to "
                    "choose the bundled model and silence this line: --model %s or COULISSE_MODEL=%s (in Python: "
                    "model=%r).", name, BUNDLED_MODEL, 100 * BUNDLED_ACCURACY, name, 100 * TF_ALLOCINE_ACCURACY,
                    name, download_hint(name), BUNDLED_MODEL, BUNDLED_MODEL, BUNDLED_MODEL)
        else:
            log.log(level, "%s could not be loaded (%s); using the bundled %s instead (%.1f %% accuracy on held-out "
                    "Allociné reviews, %s reaches %.1f %%). To get %s: %s, or pass --model / model=. Without "
                    "network, HF_HUB_OFFLINE=1 skips asking the Hub.", name, _first_sentence(str(e)), BUNDLED_MODEL,
                    100 * BUNDLED_ACCURACY, name, 100 * TF_ALLOCINE_ACCURACY, name, download_hint(name))
        return BUNDLED_MODEL
    finally:
        notice.cancel()


HUB_NOTICE_AFTER = 2.0  # seconds without an answer from the Hub before the wait is said
HUB_RETRY_AFTER = 300.0  # seconds during which a Hub that failed is not asked again for a default model
_FELL_BACK: set[str] = set()  # the default models whose fallback was already a warning in this process
_HUB_FAILED: dict[str, float] = {}  # default model -> when the Hub last failed to answer for it (monotonic)
# The same, across processes (each `coulisse classify` is one): {Hub endpoint: {default model: time.time()}}
# in the cache folder (COULISSE_CACHE). A missing, unreadable or odd file is no memo; a failed write, none kept.
UNANSWERED_FILE = "hub-unanswered.json"


def _unanswered_path() -> Path | None:
    from coulisse.engine.cache import cache_dir

    folder = cache_dir()
    return None if folder is None else folder / UNANSWERED_FILE


def _endpoint() -> str:
    from huggingface_hub import constants

    return str(constants.ENDPOINT)


MEMO_BYTES = 65536  # a memo holds a few names; anything bigger is not ours


def _read_unanswered(path: Path) -> dict:
    """The memo, or {} for anything else there: never following a link, never waiting on a FIFO, never reading
    more than MEMO_BYTES (a link to /dev/zero reports size 0)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        return {}
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return {}
        data = os.read(fd, MEMO_BYTES + 1)
        memo = json.loads(data.decode("utf-8")) if len(data) <= MEMO_BYTES else {}
    except (OSError, ValueError):
        return {}
    finally:
        os.close(fd)
    return memo if isinstance(memo, dict) else {}


def _unanswered_ago(name: str) -> float | None:
    """Seconds since another process found the Hub (this endpoint) silent for `name`; None if none did."""
    path = _unanswered_path()
    if path is None:
        return None
    when = _read_unanswered(path).get(_endpoint())
    when = when.get(name) if isinstance(when, dict) else None
    if isinstance(when, bool) or not isinstance(when, (int, float)):
        return None
    ago = time.time() - when
    return ago if ago >= 0 else None  # a clock set back: ask the Hub


def _remember_unanswered(name: str) -> None:
    path = _unanswered_path()
    if path is None:
        return
    memo = _read_unanswered(path)
    by_endpoint = memo.get(_endpoint())
    by_endpoint = by_endpoint if isinstance(by_endpoint, dict) else {}
    by_endpoint[name] = time.time()
    memo[_endpoint()] = by_endpoint
    import tempfile

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, partial = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)  # a new file of ours (O_EXCL)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(json.dumps(memo))
        os.replace(partial, path)  # replaces a link or a FIFO there too, never writing through it
    except OSError as e:  # a read-only cache: the next run asks the Hub again, nothing worse
        log.debug("could not keep the Hub memo %s: %s", path, e)


def _first_sentence(message: str) -> str:
    """The message up to its first ". " or "; " outside parentheses: a reason in parentheses (a timeout's
    advice) may hold its own, and the sentence goes on after it (", and it is not in the cache ...")."""
    depth = 0
    for i, c in enumerate(message):
        depth += (c == "(") - (c == ")")
        if depth == 0 and c in ".;" and message[i + 1:i + 2] == " ":
            return message[:i]
    return message.rstrip(".")

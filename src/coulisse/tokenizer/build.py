"""Build a fast `tokenizers.Tokenizer` from a checkpoint's slow tokenizer files.

Each builder reproduces, piece for piece, what transformers 5 constructs for that file format, so
that ids, offsets and special tokens are identical: SentencePiece (CamemBERT, XLM-R and DeBERTa-v2 layouts),
WordPiece `vocab.txt`, byte-level BPE `vocab.json` + `merges.txt`, Moses BPE. A `tokenizer.json` is read by
`tokenizer_json.py` around the same pipelines; `backend.py` picks which files a folder is read from.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

from coulisse.errors import TokenizerLoadError
from coulisse.families import (
    DEBERTA_SPECIALS,
    MPNET_SPECIALS,
    ROBERTA_SPECIALS,
    WORDPIECE_SPECIALS,
    Family,
    family_of,
)
from coulisse.jsonfile import read_json
from coulisse.tokenizer import moses
from coulisse.tokenizer.added_tokens import NAMED, add_tokens
from coulisse.tokenizer.sentencepiece_model import BPE, SentencePieceModel, load_sentencepiece

SPM_FILES = ("sentencepiece.bpe.model", "spiece.model", "tokenizer.model", "spm.model")
# transformers' CamembertTokenizer's extra special tokens where the settings list none.
CAMEMBERT_EXTRAS = ("<s>NOTUSED", "</s>NOTUSED", "<unk>NOTUSED")

# Special tokens each layout uses when the checkpoint's files say nothing (the tokenizer classes' own, as the
# families table has them; FlauBERT's files keep the Moses tokenizer's).
DEFAULT_SPECIALS = {"sentencepiece": ROBERTA_SPECIALS, "bpe": ROBERTA_SPECIALS, "wordpiece": WORDPIECE_SPECIALS,
                    "moses": moses.SPECIALS, "deberta": DEBERTA_SPECIALS, "mpnet": MPNET_SPECIALS}
# The most entries a vocabulary file may hold where the model's vocab_size is not known: twice the largest
# released vocabularies (XLM-V's 901,629; Gemma's 256,000; XLM-R's 250,002). The Rust library spends ~37 times
# a file's size reading it (a 10^7-line vocab.txt: 87 s and 4 GB) before anything can refuse it.
MAX_VOCAB_ENTRIES = 2_000_000


def vocab_bound(vocab_size: int | None) -> int:
    """The most entries a vocabulary file may hold for a model of `vocab_size` rows: twice that, and some
    (blank lines, repeated tokens, a merges file's header), more could never index its embedding table; but never
    under MAX_VOCAB_ENTRIES, so that a config.json whose vocab_size is wrong (1,000 for 32,005 rows) reaches the
    weights' shape check, which names config.json, rather than a refusal of the vocabulary."""
    return MAX_VOCAB_ENTRIES if vocab_size is None else max(MAX_VOCAB_ENTRIES, 2 * vocab_size + 1024)


def _refuse_long(path: Path, bound: int, vocab_size: int | None, separator: bytes = b"\n") -> None:
    """Refuse a vocabulary file with more than `bound` entries, counted as `separator` bytes (lines; a vocab.json's
    commas, one fewer than its entries at least), reading no further than the bound."""
    count = 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            count += chunk.count(separator)
            if count > bound:
                rows = (f"the model's embedding table has {vocab_size} rows (vocab_size in config.json)"
                        if vocab_size is not None else "no released vocabulary has half as many")
                raise TokenizerLoadError(
                    f"{path} holds more than {bound:,} entries, but {rows}: it is not this model's vocabulary, or "
                    "is corrupt; use the tokenizer files the model was trained with.")


@dataclass
class TokenizerFiles:
    """What was found in a checkpoint directory, and the settings its configs carry."""

    directory: Path
    settings: dict  # tokenizer_config.json and special_tokens_map.json (`added_tokens.read_settings`)
    model_type: str | None
    added: dict[int, AddedToken] = field(default_factory=dict)  # added tokens by id (`added_tokens.read_settings`)
    vocab_size: int | None = None  # config.json's, which bounds the vocabulary files (`vocab_bound`)

    @property
    def family(self) -> Family | None:
        """The family whose slow-tokenizer layout these files follow: tokenizer_config.json's class, else
        the model's type."""
        return family_of(self.settings.get("tokenizer_class"), self.model_type)

    def refuse_long(self, path: Path, separator: bytes = b"\n") -> None:
        _refuse_long(path, vocab_bound(self.vocab_size), self.vocab_size, separator)

    def special(self, name: str, layout: str) -> str | None:
        value = self.settings.get(f"{name}_token", DEFAULT_SPECIALS[layout].get(name))
        if isinstance(value, dict):
            value = value.get("content")
        return value


def _add_tokens(tok: Tokenizer, files: TokenizerFiles, layout: str | None, mask_lstrip: bool = False,
                control: list[str] | None = None) -> None:
    """The folder's added tokens and special tokens, as transformers registers them (`added_tokens`).

    Where the settings name no special token, the layout's default stands in for it (None: a tokenizer.json,
    whose class transformers may not know). Only CamemBERT's default mask token strips the space before it
    (`mask_lstrip`). The extra special tokens are the config's; without them, a SentencePiece model's
    `control` pieces (transformers' SentencePieceExtractor makes them the additional ones), else
    special_tokens_map.json's, else CamemBERT's "<s>NOTUSED" pieces. The list used is recorded in the settings
    as `extra_special_tokens`, where the Tokenizer reads it."""
    named: dict = {}
    for name in NAMED:
        value = files.settings.get(f"{name}_token")
        if value is None and layout is not None:
            value = DEFAULT_SPECIALS[layout].get(name)
        if name == "mask" and mask_lstrip and isinstance(value, str):
            value = AddedToken(value, lstrip=True, special=True)
        named[name] = value
    extras = files.settings.get("extra_special_tokens", control)
    if extras is None:
        camembert = files.family is not None and files.family.spm_layout == "camembert"
        extras = files.settings.get("additional_special_tokens", list(CAMEMBERT_EXTRAS) if camembert else [])
    add_tokens(tok, files.added, files.settings, named, extras)
    files.settings["extra_special_tokens"] = [t.get("content") if isinstance(t, dict) else str(t) for t in extras]


def _moses_specials(files: TokenizerFiles) -> list[AddedToken]:
    """FlauBERT's special tokens, in the order its Python tokenizer registers them; a token given as a dict
    keeps its own lstrip/rstrip."""
    seen: dict[str, AddedToken] = {}
    for name in ("pad", "unk", "bos", "eos", "sep", "cls", "mask"):
        content = files.special(name, "moses")
        if content and content not in seen:
            spec = files.settings.get(f"{name}_token")
            spec = spec if isinstance(spec, dict) else {}
            seen[content] = AddedToken(content, lstrip=bool(spec.get("lstrip", False)),
                                       rstrip=bool(spec.get("rstrip", False)), normalized=False, special=True)
    return list(seen.values())


def _template(files: TokenizerFiles, layout: str, tok: Tokenizer, names: tuple[str, str] = ("cls", "sep")
              ) -> processors.PostProcessor:
    """The first and last special tokens around each sequence: cls and sep, or bos and eos (CamemBERT's and
    XLM-R's classes build their template from those)."""
    cls, sep = files.special(names[0], layout), files.special(names[1], layout)
    for name, token in ((names[0], cls), (names[1], sep)):
        if not token or token != "".join(token.split()):
            raise TokenizerLoadError(
                f"{name}_token {token!r} in {files.directory} is empty or holds whitespace, which cannot mark a "
                f"sequence; set {name}_token in tokenizer_config.json to the model's own (such as <s> or [CLS]).")
    cls_id, sep_id = tok.token_to_id(cls), tok.token_to_id(sep)
    if cls_id is None or sep_id is None:
        raise TokenizerLoadError(
            f"special tokens {cls!r}/{sep!r} are not in the vocabulary of {files.directory}; "
            f"set {names[0]}_token/{names[1]}_token in tokenizer_config.json."
        )
    if layout in ("wordpiece", "deberta"):  # [CLS] A [SEP] B [SEP], B with token type 1
        return processors.TemplateProcessing(
            single=f"{cls}:0 $A:0 {sep}:0",
            pair=f"{cls}:0 $A:0 {sep}:0 $B:1 {sep}:1",
            special_tokens=[(cls, cls_id), (sep, sep_id)],
        )
    return processors.TemplateProcessing(
        single=f"{cls} $A {sep}",
        pair=f"{cls} $A {sep} {sep} $B {sep}",
        special_tokens=[(cls, cls_id), (sep, sep_id)],
    )


def build_sentencepiece(files: TokenizerFiles, path: Path) -> Tokenizer:
    spm = load_sentencepiece(path)
    if spm.model_type == BPE:
        raise TokenizerLoadError(
            f"{path} is a SentencePiece BPE model; coulisse reads Unigram models (CamemBERT, XLM-R). "
            "Save a tokenizer.json next to it with transformers' `tokenizer.save_pretrained(dir)`."
        )
    layout = files.family.spm_layout if files.family else "xlm-roberta"
    if layout == "deberta" or path.name == "spm.model":
        return build_deberta_sentencepiece(files, spm)
    pad, unk, mask = (files.special(n, "sentencepiece") for n in ("pad", "unk", "mask"))
    if layout == "camembert":
        # fairseq's CamemBERT dictionary: four specials in front, the spm <unk> demoted.
        vocab = [("<s>NOTUSED", 0.0), (pad, 0.0), ("</s>NOTUSED", 0.0), (unk, 0.0), ("<unk>NOTUSED", -100.0)]
        vocab += spm.pieces[1:]
    else:
        # XLM-R layout: <s> <pad> </s> <unk>, then the spm pieces shifted by one.
        bos, eos = files.special("bos", "sentencepiece"), files.special("eos", "sentencepiece")
        vocab = [(bos, 0.0), (pad, 0.0), (eos, 0.0), (unk, 0.0)] + spm.pieces[3:]
    vocab.append((mask, 0.0))
    return _xlmr_backend(files, layout, vocab, 3, spm.precompiled_charsmap, spm.control_pieces())


def _xlmr_backend(files: TokenizerFiles, layout: str, vocab: list[tuple[str, float]], unk_id: int,
                  charsmap: bytes | None, control: list[str] | None) -> Tokenizer:
    """CamemBERT's and XLM-R's tokenizer around a Unigram vocabulary: the character map, whitespace split,
    then the metaspace (`CamembertTokenizer` / `XLMRobertaTokenizer`)."""
    tok = Tokenizer(models.Unigram(vocab, unk_id=unk_id, byte_fallback=False))
    if charsmap:
        tok.normalizer = normalizers.Precompiled(charsmap)
    prepend = "always" if files.settings.get("add_prefix_space", True) else "never"
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Metaspace("▁", prepend_scheme=prepend, split=True)]
    )
    tok.decoder = decoders.Metaspace("▁", prepend_scheme=prepend)
    _add_tokens(tok, files, "sentencepiece", mask_lstrip=layout == "camembert", control=control)
    tok.post_processor = _template(files, "sentencepiece", tok, ("bos", "eos"))
    return tok


def build_deberta_sentencepiece(files: TokenizerFiles, spm: SentencePieceModel) -> Tokenizer:
    """DeBERTa-v2/v3 `spm.model` as transformers 5's `DebertaV2Tokenizer` builds it: the pieces in their own
    order ([PAD] [CLS] [SEP] [UNK] first), [MASK] appended after them; the spm's control pieces become special
    tokens, its user-defined pieces stay pieces of the Unigram model (SentencePiece's own reading; until
    5.25 transformers split the text on them as added tokens). Its normalizer is the spm's own character map
    (SentencePiece's NFKC: "…" becomes "..."), then a right strip and space runs to one space, as
    transformers builds it from 5.25 on (5.0–5.24 used whitespace runs to one space, NFC and a right strip,
    which left such characters unknown; that is still the rule for an spm without a character map).
    Lowercased first with `do_lower_case`; words split on punctuation first with `split_by_punct`."""
    unk = files.special("unk", "deberta")
    ids = {piece: i for i, (piece, score) in enumerate(spm.pieces) if score == 0.0}
    return _deberta_backend(files, spm.pieces, ids.get(unk, spm.unk_id), spm.precompiled_charsmap,
                            spm.control_pieces())


def _deberta_backend(files: TokenizerFiles, pieces: list[tuple[str, float]], unk_id: int, charsmap: bytes | None,
                     control: list[str] | None) -> Tokenizer:
    settings = files.settings
    tok = Tokenizer(models.Unigram(pieces, unk_id=unk_id, byte_fallback=False))
    steps = [normalizers.Lowercase()] if settings.get("do_lower_case", False) else []
    if charsmap:
        steps += [normalizers.Precompiled(charsmap), normalizers.Strip(left=False, right=True),
                  normalizers.Replace(Regex(r" {2,}"), " ")]
    else:
        steps += [normalizers.Replace(Regex(r"\s{2,}|[\n\r\t]"), " "), normalizers.NFC(),
                  normalizers.Strip(left=False, right=True)]
    tok.normalizer = normalizers.Sequence(steps)
    prepend = "always" if settings.get("add_prefix_space", True) else "first"
    words = [pre_tokenizers.Punctuation(behavior="isolated")] if settings.get("split_by_punct", False) else []
    tok.pre_tokenizer = pre_tokenizers.Sequence([*words, pre_tokenizers.Metaspace("▁", prepend_scheme=prepend)])
    tok.decoder = decoders.Metaspace("▁", prepend_scheme=prepend)
    _add_tokens(tok, files, "deberta", control=control)
    tok.post_processor = _template(files, "deberta", tok)
    return tok


def build_wordpiece(files: TokenizerFiles, path: Path) -> Tokenizer:
    # transformers 5 hands the file to the Rust library, whose reader numbers lines split on "\n" alone, each
    # stripped of its trailing whitespace; a repeated token keeps its last line's number. Python's
    # splitlines() also splits on U+2028, U+0085, \x1c-\x1e..., shifting every later id.
    files.refuse_long(path)
    return _wordpiece_backend(files, models.WordPiece.read_file(str(path)))


def _wordpiece_backend(files: TokenizerFiles, vocab: dict[str, int]) -> Tokenizer:
    """BERT's tokenizer around a WordPiece vocabulary (`BertTokenizer`: lowercased unless `do_lower_case` is
    false). MPNet's (`MPNetTokenizer`, the family's `json_rebuild` "mpnet") has RoBERTa's special tokens and
    layout instead (`<s> A </s></s> B </s>`, no token types, offsets trimmed of spaces), its mask token taking
    the space before it."""
    layout = "mpnet" if files.family is not None and files.family.json_rebuild == "mpnet" else "wordpiece"
    unk = files.special("unk", layout)
    tok = Tokenizer(models.WordPiece(vocab, unk_token=unk))
    tok.normalizer = normalizers.BertNormalizer(
        clean_text=True,
        handle_chinese_chars=files.settings.get("tokenize_chinese_chars", True),
        strip_accents=files.settings.get("strip_accents"),
        lowercase=files.settings.get("do_lower_case", True),
    )
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece(prefix="##")
    _add_tokens(tok, files, layout, mask_lstrip=layout == "mpnet")
    if layout == "mpnet":
        sep, cls = files.special("sep", layout), files.special("cls", layout)
        tok.post_processor = processors.RobertaProcessing((sep, tok.token_to_id(sep)), (cls, tok.token_to_id(cls)),
                                                          trim_offsets=True, add_prefix_space=False)
    else:
        tok.post_processor = _template(files, "wordpiece", tok)
    return tok


def build_bytelevel_bpe(files: TokenizerFiles, vocab_path: Path, merges_path: Path) -> Tokenizer:
    files.refuse_long(vocab_path, b",")
    files.refuse_long(merges_path)
    vocab = read_json(vocab_path, error=TokenizerLoadError, fix="download the tokenizer's files again")
    merges = []
    for line in merges_path.read_text(encoding="utf-8").splitlines():
        if line.startswith("#version") or not line.strip():
            continue
        a, b = line.split(" ")
        merges.append((a, b))
    return _bytelevel_backend(files, vocab, merges)


def _bytelevel_backend(files: TokenizerFiles, vocab: dict[str, int], merges: list[tuple[str, str]]) -> Tokenizer:
    """RoBERTa's tokenizer around a byte-level BPE (`RobertaTokenizer`)."""
    tok = Tokenizer(
        models.BPE(vocab, merges, dropout=None, continuing_subword_prefix="", end_of_word_suffix="", fuse_unk=False)
    )
    add_prefix_space = bool(files.settings.get("add_prefix_space", False))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=add_prefix_space)
    tok.decoder = decoders.ByteLevel()
    _add_tokens(tok, files, "bpe")
    sep, cls = files.special("sep", "bpe"), files.special("cls", "bpe")
    tok.post_processor = processors.RobertaProcessing(
        (sep, tok.token_to_id(sep)),
        (cls, tok.token_to_id(cls)),
        trim_offsets=files.settings.get("trim_offsets", True),
        add_prefix_space=add_prefix_space,
    )
    return tok


def build_moses_bpe(files: TokenizerFiles, vocab_path: Path, merges_path: Path) -> tuple[Tokenizer, dict]:
    """FlauBERT's files (`coulisse.tokenizer.moses`); the settings gain FlauBERT's special tokens where its
    tokenizer_config.json is silent, so that `Tokenizer.special_tokens` names them too."""
    # the folder's added tokens first, by id (transformers' `add_tokens` saves them in added_tokens_decoder or
    # added_tokens.json), then the special tokens that they do not hold: new ones take the next free ids in that
    # order, as in transformers
    tokens = [files.added[i] for i in sorted(files.added)]
    named_text = {t.content for t in _moses_specials(files)}
    for token in tokens:
        token.special = token.special or token.content in named_text
    specials = _moses_specials(files)
    extra = files.settings.get("additional_special_tokens") or files.settings.get("extra_special_tokens")
    for token in extra or moses.EXTRA_SPECIALS:
        content = token.get("content") if isinstance(token, dict) else token
        if content not in {t.content for t in specials}:
            specials.append(AddedToken(content, normalized=False, special=True))
    known = {t.content for t in tokens}
    tokens += [t for t in specials if t.content not in known]
    named = {f"{name}_token": files.special(name, "moses") for name in moses.SPECIALS}
    files.refuse_long(vocab_path, b",")
    files.refuse_long(merges_path)
    tok = moses.build_moses_bpe(vocab_path, merges_path, unk=named["unk_token"], bos=named["bos_token"],
                                sep=named["sep_token"], specials=tokens,
                                lowercase=bool(files.settings.get("do_lowercase", False)))
    return tok, {**named, **files.settings}

"""The model families coulisse runs: one row per config.json `model_type`, and the only place they differ.

A row says where a family's weights sit in its checkpoints (base-model prefixes, the name table), which
task heads it has and their checkpoint layouts, how its config.json spells the encoder's fields, how it
numbers positions, and how its slow tokenizer files are laid out. `coulisse.config`, `coulisse.models`
and `coulisse.tokenizer` read the row; none of them branches on a family's name.

Adding a family:

- whose blocks are BERT's (`coulisse.models.bert`: post-LayerNorm blocks, learned absolute positions,
  an optional projection when `embedding_size` differs from `hidden_size`): add one `Family(...)` row to
  `FAMILIES`, plus a head class in `coulisse.models.heads` only where its head layout is new;
- whose blocks differ: write `coulisse/models/<family>.py` (a base model that maps `Packed` ids to packed
  hidden states, and its `checkpoint_keys` name table), then add the row that points to it.

Class and function names are strings ("module.name" under `coulisse.models`), resolved when a model is
built: this module is plain data, importing neither torch nor `coulisse.models`, so that the config and
the tokenizer (which never import torch) read the same rows.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Family:
    """One row of `FAMILIES`: what a model type's checkpoints, config.json and tokenizer files look like."""

    model_type: str
    # Base-model prefixes of checkpoint keys ("bert." in "bert.encoder.layer.0..."), tried in order.
    prefixes: tuple[str, ...]
    # task -> head builder ("module.Name" under coulisse.models): a callable taking the config. The head
    # names the checkpoint keys of its own parameters (`KEYS`). A family module may keep that table
    # itself: then the name of its mapping ("deberta_v2.HEADS").
    heads: Mapping[str, str] | str
    # The base model (packed ids -> packed hidden states) and its name table (our parameter name ->
    # checkpoint keys, base prefix removed).
    model: str = "bert.BertModel"
    checkpoint_keys: str = "bert.checkpoint_keys"
    # RoBERTa family: positions are numbered from pad_token_id + 1, not 0.
    positions_from_pad: bool = False
    # The padding index those positions count from where the family's code fixes it whatever pad_token_id
    # says (MPNet: 1); None: pad_token_id.
    padding_idx: int | None = None
    # FlauBERT (transformers' XLM): given no attention mask, a sequence is its first (ids != pad) tokens, as
    # transformers reads `lengths` off the ids; the other families attend to every token then, pads included.
    mask_from_pad: bool = False
    # Base-model checkpoint keys (prefix removed) the model may leave unread without it being an error.
    unused_ok: tuple[str, ...] = ()
    # A config.json flag that, set false, says the model reads no absolute positions (DeBERTa-v2's
    # `position_biased_input`: relative buckets only, so any input length runs); None: it always reads them.
    absolute_positions_flag: str | None = None
    # config.json: our `EncoderConfig` field -> this family's key for it (DistilBERT's "dim"), the family's
    # defaults where they differ from BERT's (by our field names), and fields computed from the others.
    config_keys: Mapping[str, str] = field(default_factory=dict)
    config_defaults: Mapping[str, Any] = field(default_factory=dict)
    config_fields: Callable[[dict], dict] | None = None
    # Whether transformers' config class reads only the family's spelling (ModernBERT: `norm_eps`, never a
    # `layer_norm_eps` the same file may hold): ours is then ignored, the family's key or default used.
    config_keys_only: bool = False
    # config.json flags that turn the family's transformers model into a decoder (causal self-attention, cross
    # attention): coulisse runs bidirectional encoders, so a checkpoint with one of them true is refused (the
    # other families' transformers code never reads them).
    decoder_flags: tuple[str, ...] = ()
    # Tokenizer: whether it returns token_type_ids (the model embeds them); transformers' name for its slow
    # tokenizer (how a tokenizer folder without config.json is recognised); the layout of SentencePiece
    # files ("xlm-roberta", "camembert": fairseq's dictionary, "deberta") and of vocab.json + merges.txt
    # ("byte-level": GPT-2/RoBERTa, or "moses": XLM/FlauBERT's Moses words and `</w>` merges); whether
    # transformers has only a Python tokenizer for the family (ours then runs Python code too: it keeps that
    # tokenizer's way of truncating pairs, and encodes one text at a time).
    token_types: bool = False
    tokenizer_class: str = ""
    spm_layout: str = "xlm-roberta"
    bpe: str = "byte-level"
    python_tokenizer: bool = False
    # How transformers 5's class for the family reads a tokenizer.json: it keeps the vocabulary (merges,
    # SentencePiece character map) and rebuilds the rest as it does from the slow files: "wordpiece"
    # (BertTokenizer), "mpnet" (MPNetTokenizer, also its vocab.txt's layout), "byte-level" (RobertaTokenizer),
    # "camembert", "xlm-roberta", "deberta"; "" where no
    # tokenizer.json is rebuilt (the file then runs as written).
    json_rebuild: str = ""
    # The special tokens of transformers' tokenizer class where tokenizer_config.json names none (None: the
    # class has no such token, as BERT's has no bos / eos), and its extra ones (`additional_special_tokens`).
    special_tokens: Mapping[str, str | None] = field(default_factory=dict)
    extra_special_tokens: tuple[str, ...] = ()


WORDPIECE_SPECIALS = {"bos": None, "eos": None, "unk": "[UNK]", "sep": "[SEP]", "pad": "[PAD]", "cls": "[CLS]",
                      "mask": "[MASK]"}
ROBERTA_SPECIALS = {"bos": "<s>", "eos": "</s>", "unk": "<unk>", "sep": "</s>", "pad": "<pad>", "cls": "<s>",
                    "mask": "<mask>"}
DEBERTA_SPECIALS = {**WORDPIECE_SPECIALS, "bos": "[CLS]", "eos": "[SEP]"}
MPNET_SPECIALS = {**ROBERTA_SPECIALS, "unk": "[UNK]"}
# transformers' BERT, RoBERTa (CamemBERT, XLM-R) and ELECTRA models become causal with `is_decoder`, and read
# `add_cross_attention` (an error there without `is_decoder`)
DECODER_FLAGS = ("is_decoder", "add_cross_attention")

BERT_HEADS = {
    "sequence-classification": "heads.BertClassificationHead",
    "token-classification": "heads.TokenClassificationHead",
    "question-answering": "heads.QuestionAnsweringHead",
    "masked-lm": "heads.BertMaskedLMHead",
    "multiple-choice": "heads.BertMultipleChoiceHead",
}
# RoBERTa's multiple-choice head is BERT's: the base model's pooler, then `classifier`.
ROBERTA_HEADS = {**BERT_HEADS, "sequence-classification": "heads.RobertaClassificationHead",
                 "masked-lm": "heads.RobertaMaskedLMHead"}
DISTILBERT_HEADS = {**BERT_HEADS, "sequence-classification": "heads.DistilBertClassificationHead",
                    "masked-lm": "heads.DistilBertMaskedLMHead",
                    "multiple-choice": "heads.DistilBertMultipleChoiceHead"}


def _xlm_fields(d: dict) -> dict:
    """XLM / FlauBERT: the feed-forward is 4 x the model width, GELU unless `gelu_activation` is false."""
    return {"intermediate_size": 4 * d["hidden_size"],
            "hidden_act": "gelu" if d.get("gelu_activation", True) else "relu"}


def _rows(*families: Family) -> dict[str, Family]:
    return {f.model_type: f for f in families}


FAMILIES: dict[str, Family] = _rows(
    Family("bert", ("bert",), BERT_HEADS, token_types=True, tokenizer_class="BertTokenizer",
           special_tokens=WORDPIECE_SPECIALS, json_rebuild="wordpiece", decoder_flags=DECODER_FLAGS),
    Family("roberta", ("roberta",), ROBERTA_HEADS, positions_from_pad=True, tokenizer_class="RobertaTokenizer",
           special_tokens=ROBERTA_SPECIALS, json_rebuild="byte-level", decoder_flags=DECODER_FLAGS),
    Family("camembert", ("roberta", "camembert"), ROBERTA_HEADS, positions_from_pad=True,
           tokenizer_class="CamembertTokenizer", spm_layout="camembert", special_tokens=ROBERTA_SPECIALS,
           json_rebuild="camembert", decoder_flags=DECODER_FLAGS),
    Family("xlm-roberta", ("roberta",), ROBERTA_HEADS, positions_from_pad=True,
           tokenizer_class="XLMRobertaTokenizer", special_tokens=ROBERTA_SPECIALS, json_rebuild="xlm-roberta",
           decoder_flags=DECODER_FLAGS),
    # DistilBERT computes BERT's blocks without token types or pooler, under other checkpoint names.
    Family("distilbert", ("distilbert",), DISTILBERT_HEADS, checkpoint_keys="distilbert.checkpoint_keys",
           config_keys={"hidden_size": "dim", "num_hidden_layers": "n_layers", "num_attention_heads": "n_heads",
                        "intermediate_size": "hidden_dim", "hidden_act": "activation"},
           config_defaults={"num_hidden_layers": 6, "type_vocab_size": 0},
           tokenizer_class="DistilBertTokenizer", special_tokens=WORDPIECE_SPECIALS, json_rebuild="wordpiece"),
    # ELECTRA discriminators: BERT's blocks; word vectors may be narrower than the encoder
    # (`embedding_size`, then `embeddings_project`).
    Family("electra", ("electra",), {"sequence-classification": "heads.ElectraClassificationHead",
                                     "token-classification": "heads.TokenClassificationHead"},
           config_defaults={"vocab_size": 30522, "embedding_size": 128, "hidden_size": 256,
                            "num_attention_heads": 4, "intermediate_size": 1024},
           token_types=True, tokenizer_class="ElectraTokenizer", special_tokens=WORDPIECE_SPECIALS,
           json_rebuild="wordpiece", decoder_flags=DECODER_FLAGS),
    # FlauBERT (transformers' XLM architecture): its own blocks. Language embeddings are added only for a
    # `langs` input, which no tokenizer returns (transformers' pipelines never pass one): unread here too.
    Family("flaubert", ("transformer",), {"sequence-classification": "heads.SequenceSummaryHead",
                                          "token-classification": "heads.TokenClassificationHead"},
           model="flaubert.FlaubertModel", checkpoint_keys="flaubert.checkpoint_keys",
           unused_ok=("lang_embeddings.",),
           config_keys={"hidden_size": "emb_dim", "num_hidden_layers": "n_layers", "num_attention_heads": "n_heads"},
           config_defaults={"vocab_size": 30145, "hidden_size": 2048, "num_attention_heads": 16,
                            "type_vocab_size": 0, "pad_token_id": 2},
           config_fields=_xlm_fields, tokenizer_class="FlaubertTokenizer", python_tokenizer=True, bpe="moses",
           mask_from_pad=True, special_tokens={"bos": "<s>", "eos": None, "unk": "<unk>", "sep": "</s>",
                                               "pad": "<pad>", "cls": "</s>", "mask": "<special1>"},
           extra_special_tokens=tuple(f"<special{i}>" for i in range(10))),
    # DeBERTa-v2/v3: its own blocks (disentangled relative attention) and heads. Checkpoints with
    # `position_biased_input: false` may carry an absolute position table the model never reads.
    Family("deberta-v2", ("deberta",), "deberta_v2.HEADS", model="deberta_v2.DebertaV2Model",
           checkpoint_keys="deberta_v2.checkpoint_keys", unused_ok=("embeddings.position_embeddings.",),
           absolute_positions_flag="position_biased_input",
           config_defaults={"vocab_size": 128100, "hidden_size": 1536, "num_hidden_layers": 24,
                            "num_attention_heads": 24, "intermediate_size": 6144, "type_vocab_size": 0,
                            "layer_norm_eps": 1e-7},
           token_types=True, tokenizer_class="DebertaV2Tokenizer", spm_layout="deberta",
           special_tokens=DEBERTA_SPECIALS, json_rebuild="deberta"),
    # MPNet: RoBERTa's embeddings (no token types) and heads, BERT's blocks under other names plus one
    # relative-position bias shared by every layer (`coulisse.models.mpnet`); a WordPiece vocabulary.
    Family("mpnet", ("mpnet",), ROBERTA_HEADS, model="mpnet.MPNetModel", checkpoint_keys="mpnet.checkpoint_keys",
           positions_from_pad=True, padding_idx=1,
           config_defaults={"vocab_size": 30527, "type_vocab_size": 0, "pad_token_id": 1},
           tokenizer_class="MPNetTokenizer", special_tokens=MPNET_SPECIALS, json_rebuild="mpnet"),
    # ModernBERT: its own blocks (pre-norm, rotary positions, local attention, GeGLU) and heads. Its tokenizer
    # is a generic tokenizer.json (PreTrainedTokenizerFast), run as written; no slow tokenizer files.
    Family("modernbert", ("model",), "modernbert.HEADS", model="modernbert.ModernBertModel",
           checkpoint_keys="modernbert.checkpoint_keys",
           config_keys={"layer_norm_eps": "norm_eps", "hidden_act": "hidden_activation"}, config_keys_only=True,
           config_defaults={"vocab_size": 50368, "hidden_size": 768, "num_hidden_layers": 22,
                            "num_attention_heads": 12, "intermediate_size": 1152, "max_position_embeddings": 8192,
                            "type_vocab_size": 0, "layer_norm_eps": 1e-5, "pad_token_id": 50283}),
)


# The tokenizer classes that run a tokenizer.json as written, in transformers 5 as in coulisse.
GENERIC_TOKENIZER_CLASSES = ("PreTrainedTokenizerFast", "TokenizersBackend")
# Tokenizer classes that transformers 5 defines as a family's class under another name (`MobileBertTokenizer =
# BertTokenizer` in its models/mobilebert): they are that class, its rebuild of a tokenizer.json included.
TOKENIZER_ALIASES = {"LayoutLMTokenizer": "BertTokenizer", "LxmertTokenizer": "BertTokenizer",
                     "MobileBertTokenizer": "BertTokenizer", "SqueezeBertTokenizer": "BertTokenizer",
                     "BartTokenizer": "RobertaTokenizer", "LEDTokenizer": "RobertaTokenizer",
                     "LongformerTokenizer": "RobertaTokenizer", "MvpTokenizer": "RobertaTokenizer"}


def _class_key(name: str) -> str:
    return name.lower().removesuffix("fast")


_ALIASES = {_class_key(alias): _class_key(name) for alias, name in TOKENIZER_ALIASES.items()}


def family_of(*names: str | None) -> Family | None:
    """The first row that one of `names` designates, tried in order: a `model_type`, or a tokenizer class
    name ("CamembertTokenizerFast"); None when none does."""
    for name in names:
        if not name:
            continue
        if name in FAMILIES:
            return FAMILIES[name]
        key = _ALIASES.get(_class_key(name), _class_key(name))
        found = next((f for f in FAMILIES.values() if f.tokenizer_class and _class_key(f.tokenizer_class) == key),
                     None)
        if found is not None:
            return found
    return None

"""Stage 3 for token classification (NER): token logits -> entities with character offsets (numpy only).

A faithful port of transformers 5's `TokenClassificationPipeline` post-processing: softmax per token,
special tokens dropped, `word` rebuilt by the tokenizer's decoder, subwords detected from the offsets,
then the `aggregation_strategy` (none / simple / first / average / max) and `ignore_labels`. A text
longer than the model is cut into windows that share `stride` tokens (the tokenizer's overflowing
tokens); entities found twice in the overlap are resolved as transformers does.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from tokenizers import Encoding

from coulisse.engine import Item
from coulisse.errors import InputError
from coulisse.tasks.base import PRE, UNUSED, Batch, Option, Pipeline, one_of
from coulisse.tasks.functional import softmax
from coulisse.tokenizer import Tokenizer, check_texts

log = logging.getLogger(__name__)

AGGREGATIONS = ("none", "simple", "first", "average", "max")
WORD_AGGREGATIONS = ("first", "average", "max")


def word_aware(tokenizer: Tokenizer) -> bool:
    """A WordPiece model marks word continuations ("##"), so a token longer than its text is a subword;
    other models (BPE, Unigram) only have transformers' heuristic: no space just before the token."""
    return bool(getattr(tokenizer.backend.model, "continuing_subword_prefix", None))


def loses_spaces(tokenizer: Tokenizer) -> bool:
    """Whether a word decoded alone loses the space before it, so that words joined again lose the spaces between
    them: SentencePiece's "▁" (Metaspace) and Moses BPE's "</w>" do; WordPiece marks subwords instead, and
    byte-level BPE keeps the space as a byte ("Ġ"): transformers' words are right there, and kept."""
    return not word_aware(tokenizer) and type(tokenizer.backend.decoder).__name__ != "ByteLevel"


def gather_pre_entities(sentence: str, encoding: Encoding, scores: np.ndarray,
                        tokenizer: Tokenizer) -> list[dict]:
    """One dict per real token: its token string, scores, offsets, index, and whether it continues a word."""
    words = word_aware(tokenizer)
    unk = tokenizer.unk_token_id
    pre_entities = []
    for idx, (token_id, special, (start, end)) in enumerate(
            zip(encoding.ids, encoding.special_tokens_mask, encoding.offsets, strict=True)):
        if special:
            continue
        word = tokenizer.convert_ids_to_tokens(token_id)
        word_ref = sentence[start:end]
        if words:
            is_subword = len(word) != len(word_ref)
        else:
            is_subword = start > 0 and " " not in sentence[start - 1 : start + 1]
        if token_id == unk:
            word, is_subword = word_ref, False
        pre_entities.append({"word": word, "scores": scores[idx], "start": start, "end": end, "index": idx,
                             "is_subword": is_subword})
    return pre_entities


def aggregate(pre_entities: list[dict], aggregation: str, id2label: dict[int, str],
              tokenizer: Tokenizer) -> list[dict]:
    if aggregation in ("none", "simple"):
        entities = []
        for pre in pre_entities:
            best = int(pre["scores"].argmax())
            entities.append({"entity": id2label[best], "score": pre["scores"][best], "index": pre["index"],
                             "word": pre["word"], "start": pre["start"], "end": pre["end"]})
    else:
        entities = aggregate_words(pre_entities, aggregation, id2label, tokenizer)
    if aggregation == "none":
        return entities
    return group_entities(entities, tokenizer)


def aggregate_word(entities: list[dict], aggregation: str, id2label: dict[int, str],
                   tokenizer: Tokenizer) -> dict:
    """The tokens of one word -> one entity whose label the strategy picks."""
    if aggregation == "first":
        scores = entities[0]["scores"]
    elif aggregation == "max":
        scores = max(entities, key=lambda e: e["scores"].max())["scores"]
    else:  # average
        scores = np.nanmean(np.stack([e["scores"] for e in entities]), axis=0)
    best = int(scores.argmax())
    return {"entity": id2label[best], "score": scores[best],
            "word": tokenizer.convert_tokens_to_string([e["word"] for e in entities]),
            "start": entities[0]["start"], "end": entities[-1]["end"]}


def aggregate_words(entities: list[dict], aggregation: str, id2label: dict[int, str],
                    tokenizer: Tokenizer) -> list[dict]:
    """Force the tokens of a word to agree: micro|soft| com|pany| -> microsoft| company|."""
    words: list[dict] = []
    group: list[dict] = []
    for entity in entities:
        if group and not entity["is_subword"]:
            words.append(aggregate_word(group, aggregation, id2label, tokenizer))
            group = []
        group.append(entity)
    if group:
        words.append(aggregate_word(group, aggregation, id2label, tokenizer))
    return words


def get_tag(entity_name: str) -> tuple[str, str]:
    """("B" or "I", tag); a label without a B-/I- prefix continues (I) its own tag."""
    if entity_name.startswith(("B-", "I-")):
        return entity_name[0], entity_name[2:]
    return "I", entity_name


def group_sub_entities(entities: list[dict], tokenizer: Tokenizer) -> dict:
    return {"entity_group": entities[0]["entity"].split("-", 1)[-1],
            "score": np.mean(np.nanmean([e["score"] for e in entities])),
            "word": tokenizer.convert_tokens_to_string([e["word"] for e in entities]),
            "start": entities[0]["start"], "end": entities[-1]["end"]}


def group_entities(entities: list[dict], tokenizer: Tokenizer) -> list[dict]:
    """Adjacent entities of one tag become one group; a B- tag always opens a new group."""
    groups: list[dict] = []
    current: list[dict] = []
    for entity in entities:
        if current:
            bi, tag = get_tag(entity["entity"])
            _, last_tag = get_tag(current[-1]["entity"])
            if tag != last_tag or bi == "B":
                groups.append(group_sub_entities(current, tokenizer))
                current = []
        current.append(entity)
    if current:
        groups.append(group_sub_entities(current, tokenizer))
    return groups


def aggregate_overlapping_entities(entities: list[dict]) -> list[dict]:
    """Entities of consecutive windows that overlap: keep the longer, or on a tie the higher score."""
    if not entities:
        return entities
    entities = sorted(entities, key=lambda e: e["start"])
    kept = []
    previous = entities[0]
    for entity in entities:
        if previous["start"] <= entity["start"] < previous["end"]:
            length, before = entity["end"] - entity["start"], previous["end"] - previous["start"]
            if length > before or (length == before and entity["score"] > previous["score"]):
                previous = entity
        else:
            kept.append(previous)
            previous = entity
    kept.append(previous)
    return kept


def text_entities(sentence: str, windows: list[Encoding], logits: list[np.ndarray], tokenizer: Tokenizer,
                  id2label: dict[int, str], aggregation: str = "none",
                  ignore_labels: list[str] | None = None) -> list[dict]:
    """One text's windows and their token logits `(length, labels)` -> its entities, transformers' shape."""
    ignore = ["O"] if ignore_labels is None else list(ignore_labels)
    entities = []
    for encoding, window_logits in zip(windows, logits, strict=True):
        scores = softmax(np.asarray(window_logits, dtype=np.float32))
        pre_entities = gather_pre_entities(sentence, encoding, scores, tokenizer)
        found = aggregate(pre_entities, aggregation, id2label, tokenizer)
        if aggregation in WORD_AGGREGATIONS and loses_spaces(tokenizer):
            # A group of words is written as the text has it. transformers joins its words' strings, which
            # SentencePiece tokenizers decode without the spaces between them (CamemBERT: "attendu un cours" ->
            # "attenduuncours"; FlauBERT's, which transformers refuses, the same).
            for entity in found:
                entity["word"] = sentence[entity["start"] : entity["end"]]
        entities += [e for e in found if e.get("entity") not in ignore and e.get("entity_group") not in ignore]
    if len(windows) > 1:
        entities = aggregate_overlapping_entities(entities)
    return [{**e, "score": float(e["score"])} for e in entities]


def _refused(name: str, value: Any, accepted: Any) -> Any:
    if value != accepted:
        raise InputError(f"{name}={value!r} is not supported by coulisse's token classification; pass the "
                         "text as one string (offsets then come from the tokenizer).")
    return value


class TokenClassificationPipeline(Pipeline):
    """Texts -> entities (`aggregation_strategy`, `ignore_labels`, `stride`), transformers' "token-classification"
    and "ner"."""

    task = "token-classification"
    head = "token-classification"
    OPTIONS = {
        "aggregation_strategy": Option("none", check=one_of(*AGGREGATIONS),
                                       doc="none (one result per token), simple, first, average or max"),
        "ignore_labels": Option(None, doc="labels left out of the results (default ['O'])"),
        "stride": Option(None, PRE,
                         doc="tokens shared by the windows a long text is read in (default: cut)"),
        # transformers' pre-split words and slow-tokenizer offsets: not supported, refused by name
        "is_split_into_words": Option(False, UNUSED, check=lambda name, v: _refused(name, v, False),
                                      doc="refused: pass the text as one string"),
        "delimiter": Option(None, UNUSED, check=lambda name, v: _refused(name, v, None),
                            doc="refused with is_split_into_words"),
        "offset_mapping": Option(None, UNUSED, check=lambda name, v: _refused(name, v, None),
                                 doc="refused: offsets come from the tokenizer"),
    }

    def resolve_options(self, options: dict[str, Any], given: dict[str, Any]) -> dict[str, Any]:
        options["aggregation_strategy"] = options["aggregation_strategy"] or "none"
        if isinstance(options["ignore_labels"], str):
            raise InputError(f"ignore_labels={options['ignore_labels']!r}; pass a list of labels, e.g. ['O'].")
        if options["stride"] is not None:
            # Only an explicit "none" is refused, as in transformers (by default, windows' token-level entities
            # are merged like groups); here also one the pipeline set, which transformers does not see at the call
            # and answers with the tokens windows share listed twice (docs/dropin.md)
            self._check_stride(options["stride"], explicit_none=given.get("aggregation_strategy") == "none")
        return options

    def _check_stride(self, stride: Any, explicit_none: bool) -> None:
        room = self.tokenizer.model_max_length - self.tokenizer.backend.num_special_tokens_to_add(False)
        if not isinstance(stride, int) or isinstance(stride, bool) or not 0 <= stride < room:
            raise InputError(f"stride={stride!r}; pass a number of tokens from 0 to {room - 1} (windows hold "
                             f"{room} tokens of text besides the special tokens).")
        if explicit_none:
            raise InputError('stride splits long texts into windows, whose entities can only be merged '
                             'with an aggregation_strategy other than "none"; pass e.g. '
                             'aggregation_strategy="simple".')

    def preprocess(self, inputs: Any, stride: int | None = None) -> Batch:
        """Per text, its windows: one (truncated) encoding, or, with a stride, every window of the text.
        The batch's items are every window of every text, in order; its context, the windows per text."""
        texts, single = check_texts(inputs)
        encodings = self.tokenizer.encode_batch(texts, truncation=True, stride=stride or 0)
        if stride is None:
            cut = sum(1 for e in encodings if e.overflowing)
            if cut:
                log.warning("%d text(s) longer than %d tokens were truncated; pass stride=N to cover them "
                            "whole", cut, self.tokenizer.model_max_length)
            windows = [[e] for e in encodings]
        else:
            windows = [[e, *e.overflowing] for e in encodings]
        items = [Item(e.ids, e.type_ids) for w in windows for e in w]
        return Batch(items, texts, single, context=windows)

    def postprocess(self, outputs: list[np.ndarray], batch: Batch, *, aggregation_strategy: str = "none",
                    ignore_labels: list[str] | None = None) -> list:
        """Each text's windows and their token logits -> entities (see `text_entities`)."""
        if aggregation_strategy in WORD_AGGREGATIONS and not word_aware(self.tokenizer):
            log.warning("the tokenizer does not mark subwords: aggregation_strategy=%r finds words with "
                        "transformers' fallback heuristic (a token not preceded by a space continues a word)",
                        aggregation_strategy)
        results, at = [], 0
        for text, windows in zip(batch.inputs, batch.context, strict=True):
            results.append(text_entities(text, windows, outputs[at : at + len(windows)], self.tokenizer,
                                         self.config.id2label, aggregation_strategy, ignore_labels))
            at += len(windows)
        return results[0] if batch.single else results

"""Which tokens pushed a sequence classifier to its answer: Integrated Gradients and occlusion.

**Integrated Gradients** (Sundararajan et al., 2017, `integrated_gradients.py`) integrates the gradient of
the target label's logit along the straight path from a baseline (each word's vector replaced by the pad or
`<mask>` token's, positions kept) to the text; its scores add up to the logit difference, up to the completeness
gap reported with every result.

**Occlusion** (each token replaced, one at a time) is the model-agnostic check: token i receives F(x) − F(x with token i
replaced by the baseline token). Replacing, not removing, keeps every other token at its position, and uses
the same baseline token as Integrated Gradients, so the two read alike; every variant keeps the text's own
positions, as Integrated Gradients' path does (transformers, given the pad ids alone, would renumber the RoBERTa
family's after each one: README, "Which words pushed the answer"). It runs through the pipeline's own
forward stage (the engine, int8 included), all variants in one batched call: T forwards of T tokens,
so its cost grows as T² (a 500-token review: 250,000 tokens through the model, where Integrated Gradients
runs 32 forward and backward passes).

Both give one score per token; a word's score is the sum of its tokens' (words as the tokenizer's
pre-tokenizer splits them: `Encoding.word_ids`).
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from coulisse.engine import Item
from coulisse.errors import InputError
from coulisse.models import EncoderModel
from coulisse.tasks.integrated_gradients import DEFAULT_STEPS, MAX_STEPS, integrated_gradients

METHODS = ("integrated_gradients", "occlusion")
BASELINES = ("pad", "mask")


@dataclass
class Word:
    """A word of the text (a pre-tokenizer word, its end punctuation apart): its characters, its tokens, the sum
    of their scores."""

    text: str
    start: int
    end: int
    tokens: list[int]  # indices into the token list
    attribution: float


@dataclass
class Attribution:
    """One text's attributions towards `label`: per token (special tokens score 0) and per word."""

    text: str
    tokens: list[str]
    ids: list[int]
    offsets: list[tuple[int, int]]  # characters of the original text; (0, 0) for special tokens
    special: list[bool]
    scores: list[float]  # per token
    words: list[Word]
    target: int
    label: str
    logits: list[float]  # F(x), every label
    baseline_logits: list[float]  # F(x'), every label
    method: str
    steps: int | None  # gradient evaluations spent (integrated_gradients), None for occlusion
    baseline: str  # "pad" or "mask"
    baseline_id: int
    truncated: bool  # the text was cut at the model's limit: the tail has no score
    # the weights the scores come from: "fp32" (Integrated Gradients always), else those of the pipeline's forward
    # (occlusion): "int8", "bf16", "fp16"
    weights: str = "fp32"
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def delta(self) -> float:
        """F(x) − F(x') for the target label: what the scores should add up to."""
        return self.logits[self.target] - self.baseline_logits[self.target]

    @property
    def gap(self) -> float:
        """The completeness gap: Σ scores − (F(x) − F(x')). Small for Integrated Gradients (quadrature error);
        occlusion has no such axiom, and its gap only says how far the tokens interact."""
        return float(sum(self.scores)) - self.delta

    def top_words(self, k: int = 5, sign: int = 1) -> list[Word]:
        """The k words pushing hardest towards the label (`sign=1`) or against it (`sign=-1`)."""
        ranked = sorted((w for w in self.words if sign * w.attribution > 0), key=lambda w: -sign * w.attribution)
        return ranked[:k]

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.update(delta=self.delta, gap=self.gap)
        return out

    def __repr__(self) -> str:
        """One line a notebook can read: the label explained, how, and the words that pushed hardest (every
        field is in `to_dict()`)."""
        def listed(sign: int) -> str:
            return ", ".join(f"{w.text} {w.attribution:+.3f}" for w in self.top_words(3, sign)) or "none"

        shown = self.text if len(self.text) <= 40 else self.text[:39] + "…"
        words = f"{len(self.words)} word{'' if len(self.words) == 1 else 's'}"
        return (f"<Attribution of {shown!r} towards {self.label} ({self.method}, {self.weights}): towards "
                f"{listed(1)}; against {listed(-1)}; {words}, gap {self.gap:+.2e}>")


# -- checks ------------------------------------------------------------------------------------------------


def check_request(method: str, steps: int | None, baseline: str) -> tuple[str, int | None]:
    """The method and its step count, checked before any model work; one-line InputErrors."""
    if method not in METHODS:
        raise InputError(f"method={method!r}; use one of {', '.join(METHODS)}.")
    if baseline not in BASELINES:
        raise InputError(f"baseline={baseline!r}; use one of {', '.join(BASELINES)}.")
    if method == "occlusion":
        if steps is not None:
            raise InputError(f"steps={steps!r} is for method='integrated_gradients'; occlusion runs one forward "
                             "per token. Drop steps.")
        return method, None
    if steps is None:
        return method, DEFAULT_STEPS
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise InputError(f"steps={steps!r}; pass a positive number of quadrature nodes (default {DEFAULT_STEPS}).")
    if steps > MAX_STEPS:
        raise InputError(f"steps={steps} is above the maximum, {MAX_STEPS}; pass at most {MAX_STEPS} (the default, "
                         f"{DEFAULT_STEPS}, is enough for smooth models, and kinks are refined on their own).")
    return method, steps


def check_target(target: int | str | None, id2label: dict[int, str]) -> int | None:
    """A label id from an id or a label name; None stays None (the highest logit, once known)."""
    if target is None:
        return None
    if isinstance(target, str):
        by_name = {name: i for i, name in id2label.items()}
        if target not in by_name:
            raise InputError(f"target={target!r} is not a label of this model; use one of "
                             f"{', '.join(map(str, id2label.values()))}, or a label id.")
        return by_name[target]
    if isinstance(target, bool) or not isinstance(target, (int, np.integer)) or target not in id2label:
        raise InputError(f"target={target!r}; pass a label name or an id from 0 to {len(id2label) - 1}.")
    return int(target)


def baseline_token(tokenizer, baseline: str) -> int:
    token_id = tokenizer.pad_token_id if baseline == "pad" else tokenizer.mask_token_id
    name = tokenizer.special_tokens.get(baseline)
    if token_id is None or name is None or tokenizer.convert_tokens_to_ids(name) != token_id:
        raise InputError(f"baseline={baseline!r}: this tokenizer has no {baseline} token; use baseline="
                         f"{'mask' if baseline == 'pad' else 'pad'!r}.")
    return token_id


# -- words -------------------------------------------------------------------------------------------------


def group_words(text: str, offsets: Sequence[tuple[int, int]], word_ids: Sequence[int | None],
                special: Sequence[bool], scores: Sequence[float]) -> list[Word]:
    """Tokens -> words of the text, in order; a word's score is the sum of its tokens'. A token without a
    word id (a tokenizer that gives none) is a word of its own."""
    groups: dict[Any, list[int]] = {}
    for i, (word, is_special) in enumerate(zip(word_ids, special, strict=True)):
        if not is_special:
            groups.setdefault(("word", word) if word is not None else ("token", i), []).append(i)
    words, pending = [], []
    for tokens in _peel_punctuation(text, offsets, sorted(groups.values())):
        start = min(offsets[i][0] for i in tokens)
        end = max(offsets[i][1] for i in tokens)
        while start < end and text[start].isspace():  # pieces such as "▁mot" may span the space before
            start += 1
        if start == end:  # a piece spanning no character (byte-level BPE's lone space): the next word's
            pending += tokens
            continue
        tokens, pending = pending + tokens, []
        while end < len(text) and _joins(text[end]):  # a decomposed accent's mark ("e\u0301", NFC normalised by
            end += 1  # the tokenizer, its offsets the letter's), a variation selector: the word's own characters
        score = float(sum(scores[i] for i in tokens))
        if words and (text[words[-1].end:start] == "\u200d" or (  # a ZWJ sequence (👩‍👩‍👧) is one word
                start == words[-1].end and words[-1].text.endswith("\u200d"))):
            last = words[-1]
            words[-1] = Word(text[last.start:end], last.start, end, last.tokens + tokens, last.attribution + score)
            continue
        words.append(Word(text[start:end], start, end, tokens, score))
    if pending and words:
        last = words[-1]
        last.tokens += pending
        last.attribution += float(sum(scores[i] for i in pending))
    return words


def _joins(char: str) -> bool:
    """A character that belongs to the one before it: a combining mark, a variation selector, a zero-width
    joiner."""
    return unicodedata.category(char).startswith("M") or char in "\u200d\ufe0e\ufe0f"


def _is_punctuation(text: str, span: tuple[int, int]) -> bool:
    chars = text[span[0]:span[1]].strip()
    return bool(chars) and all(unicodedata.category(c).startswith("P") for c in chars)


def _peel_punctuation(text: str, offsets: Sequence[tuple[int, int]], groups: list[list[int]]) -> list[list[int]]:
    """A pre-tokenizer that splits on spaces only (SentencePiece's Metaspace: CamemBERT, XLM-R) makes
    "excellent," one word; WordPiece's and byte-level BPE's split the comma off. Punctuation tokens at either
    end of a word become words of their own, so that every tokenizer lists "excellent" and "," apart (a
    word's inner punctuation, as in "d'HuggingFace" or "chef-d'œuvre", stays). A piece whose characters
    overlap the next piece's goes with it: SentencePiece's lone "▁" before "'" or "¿", which the tokenizer gives
    that character's offsets, or the pieces of a normalised "…" ("." at (0, 1), "..." at (0, 2) of "…."). Peeled
    apart, they listed, and printed, a character twice."""
    out = []
    for tokens in groups:
        units: list[list[int]] = []
        for i in tokens:
            if units and offsets[units[-1][-1]][1] > offsets[i][0]:
                units[-1].append(i)
            else:
                units.append([i])
        spans = [(min(offsets[i][0] for i in unit), max(offsets[i][1] for i in unit)) for unit in units]
        head, tail = 0, len(units)
        while head < tail - 1 and _is_punctuation(text, spans[head]):
            head += 1
        while tail - 1 > head and _is_punctuation(text, spans[tail - 1]):
            tail -= 1
        if head == tail - 1 and _is_punctuation(text, spans[head]):  # punctuation alone: as it was
            out.append(tokens)
            continue
        out += units[:head] + [[i for unit in units[head:tail] for i in unit]] + units[tail:]
    return out


# -- occlusion ---------------------------------------------------------------------------------------------


def occlusion(forward: Callable[[list[Item]], list[np.ndarray]], ids: list[int], type_ids: list[int] | None,
              special: Sequence[bool], target: int | None, baseline_id: int
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Per-token F(x) − F(x with that token replaced by `baseline_id`) `(T,)`, F(x), F(x') and the target;
    `forward` is a pipeline's forward stage (items -> one logits row each)."""
    words = [i for i, s in enumerate(special) if not s]
    # Every variant keeps the text's positions (Packed.from_lists): the pad stands in for the word, which alone
    # changes, as on Integrated Gradients' path; a pad the text holds keeps its own numbering, so that
    # "replacing" it changes nothing and scores 0.
    items = [Item(list(ids), type_ids),
             Item([baseline_id if not s else t for t, s in zip(ids, special, strict=True)], type_ids, ids)]
    for i in words:
        variant = list(ids)
        variant[i] = baseline_id
        items.append(Item(variant, type_ids, ids))
    rows = np.stack(forward(items)).astype(np.float64)
    target = int(np.argmax(rows[0])) if target is None else target
    scores = np.zeros(len(ids))
    scores[words] = rows[0, target] - rows[2:, target]
    return scores, rows[0], rows[1], target


# -- attention ---------------------------------------------------------------------------------------------


def attention_rollout(attentions: np.ndarray) -> np.ndarray:
    """Attention rollout (Abnar & Zuidema, 2020) of `(layers, heads, T, T)` probabilities: each layer's
    head mean, with the residual connection as half an identity, rows renormalised, multiplied from the
    first layer up. Row i: how much of token i's last representation traces back to each input token."""
    eye = np.eye(attentions.shape[-1])
    rollout = eye
    for a in attentions.astype(np.float64):
        mixed = 0.5 * a.mean(0) + 0.5 * eye
        mixed /= mixed.sum(-1, keepdims=True)
        rollout = mixed @ rollout
    return rollout


# -- one text ----------------------------------------------------------------------------------------------


WEIGHTS = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}


def weights_of(preparation) -> str:
    """What a pipeline's own forward runs (`Preparation`): "int8", or its dtype ("fp32", "bf16", "fp16")."""
    return preparation.quantize or WEIGHTS.get(preparation.dtype, str(preparation.dtype).removeprefix("torch."))


@dataclass
class Scorer:
    """How tokens are scored, and on what: Integrated Gradients on `gradient_model()` (fp32, called only for
    it), or occlusion through `forward`, a pipeline's forward stage (items -> one logits row each), whose
    weights are `weights` (`weights_of`)."""

    method: str
    steps: int | None
    baseline: str
    baseline_id: int
    gradient_model: Callable[[], EncoderModel]
    forward: Callable[[list[Item]], list[np.ndarray]]
    weights: str

    @property
    def ran_on(self) -> str:
        return "fp32" if self.method == "integrated_gradients" else self.weights

    def score(self, ids: list[int], type_ids: list[int] | None, special: Sequence[bool], target: int | None
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray, int, int | None]:
        """Per-token scores `(T,)`, F(x) and F(x') (every label), the target (F(x)'s argmax when None) and the
        gradient evaluations spent (None for occlusion)."""
        if self.method == "integrated_gradients":
            return integrated_gradients(self.gradient_model(), ids, type_ids, special, target, self.baseline_id,
                                        self.steps)
        return (*occlusion(self.forward, ids, type_ids, special, target, self.baseline_id), None)


def attribute(text: str, encoding, scorer: Scorer, *, target: int | None, id2label: dict[int, str],
              uses_token_types: bool, truncated: bool, fixed: Sequence[bool] | None = None,
              extra: dict[str, Any] | None = None, word_ids: Sequence[int | None] | None = None) -> Attribution:
    """One tokenized text (`encoding`, a tokenizers `Encoding`) -> its `Attribution`. `fixed`: the tokens held
    as they are in the baseline and given no score (default: the special tokens; a pair adds its second text,
    zero-shot its hypothesis), reported as special tokens with offsets (0, 0): only `text` is scored. `word_ids`:
    the tokenizer's words (`Tokenizer.word_ids`), where they are not the backend's (FlauBERT's)."""
    ids = list(encoding.ids)
    special = [bool(s) for s in (encoding.special_tokens_mask if fixed is None else fixed)]
    type_ids = list(encoding.type_ids) if uses_token_types else None
    scores, logits, base, target, steps = scorer.score(ids, type_ids, special, target)
    return _result(text, encoding, special, scores, logits, base, target, steps, scorer, id2label, truncated,
                   extra, word_ids)


def attribute_windows(text: str, encoding, cuts: list[list[int]], scorer: Scorer, *, target: int,
                      id2label: dict[int, str], uses_token_types: bool,
                      word_ids: Sequence[int | None] | None = None) -> Attribution:
    """A text read whole in windows (`long_text="chunk"`), whose answer is the mean F̄ of its windows' logits:
    `encoding` is the whole text's (not truncated), `cuts` each window's token indices into it
    (`windows.split_windows`). F̄ is a mean of functions of the windows' tokens, and both methods are linear
    in F: a token's score for F̄ is the mean over the windows of its scores in each (0 where a window lacks
    it), exactly; Integrated Gradients' path moves every window's tokens together, occlusion replaces the token
    in every window that holds it. So the scores add up to F̄(x) − F̄(x') as one window's do."""
    mask = list(encoding.special_tokens_mask)
    types = list(encoding.type_ids)
    scores = np.zeros(len(encoding.ids))
    logits, base, spent = [], [], 0
    for cut in cuts:
        ids = [encoding.ids[i] for i in cut]
        got, fx, fb, _, steps = scorer.score(ids, [types[i] for i in cut] if uses_token_types else None,
                                             [bool(mask[i]) for i in cut], target)
        np.add.at(scores, cut, got / len(cuts))
        logits.append(fx)
        base.append(fb)
        spent += steps or 0
    return _result(text, encoding, [bool(m) for m in mask], scores, np.mean(logits, 0), np.mean(base, 0), target,
                   spent if scorer.method == "integrated_gradients" else None, scorer, id2label, False,
                   {"windows": len(cuts)}, word_ids)


def _result(text: str, encoding, special: list[bool], scores: np.ndarray, logits: np.ndarray, base: np.ndarray,
            target: int, steps: int | None, scorer: Scorer, id2label: dict[int, str], truncated: bool,
            extra: dict[str, Any] | None, word_ids: Sequence[int | None] | None = None) -> Attribution:
    offsets = [(0, 0) if s else tuple(o) for o, s in zip(encoding.offsets, special, strict=True)]
    words = group_words(text, offsets, list(encoding.word_ids if word_ids is None else word_ids), special, scores)
    return Attribution(text, list(encoding.tokens), list(encoding.ids), offsets, special,
                       [float(s) for s in scores], words, target, id2label[target], logits.tolist(), base.tolist(),
                       scorer.method, steps, scorer.baseline, scorer.baseline_id, truncated, scorer.ran_on,
                       dict(extra or {}))

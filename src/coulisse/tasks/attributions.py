"""Which tokens pushed a sequence classifier to its answer: Integrated Gradients and occlusion.

**Integrated Gradients** (Sundararajan et al., 2017) over the input word vectors. The baseline x' is the
same sequence with every non-special token's word vector replaced by the pad (or `<mask>`) token's; special
tokens, positions and token types are kept, so the baseline is "this frame, no words". Token i receives

    a_i = (x_i − x'_i) · ∫₀¹ ∂F(x' + α(x − x'))/∂x_i dα

where F is the target label's logit. The a_i sum to F(x) − F(x') (completeness); the sum minus that
difference, the *completeness gap*, measures the quadrature error and is reported with every result.

The integral is taken with composite **Gauss–Legendre** quadrature, not the Riemann/trapezoid sums of the
paper: along the straight path the integrand is a smooth (analytic, for GELU/tanh networks) function of α,
and an n-node Gauss–Legendre rule is exact for polynomials of degree 2n − 1, so its error falls off
exponentially where the trapezoid's falls as 1/n². Measured on the tiny random BERT and CamemBERT of the
tests, worst |gap| / |F(x) − F(x')|: 32 Gauss–Legendre nodes 1e-5 (fp32 rounding), the 32-interval
trapezoid 1e-3. A ReLU (DistilBERT's head) puts kinks on the path, where no fixed rule converges fast
(DistilBERT: 15 % at 32 nodes, 1 % at 256 trapezoid intervals), nor where a softmax is sharp enough
to act like one (a random DeBERTa: 8 % at 32 nodes); so the rule is **adaptive**: every panel
of the path knows what its scores must add up to, F(b) − F(a), and a panel that misses it is halved. The
default `DEFAULT_STEPS` nodes (8 panels of 4) are all smooth models need; kinks get narrow panels, up to
8 × steps evaluations. A panel whose miss is within the fp32 rounding of its own check counts as exact, so
that many panels (a large `steps`) do not add their rounding up into a refinement no halving can satisfy.
`steps` is at most `MAX_STEPS`; `Attribution.steps` says how many were spent, and the gap is reported with every
result. The steps run through the model in batches of copies of the sequence (`STEP_TOKENS` tokens at
most per backward pass).

Gradients need the fp32 model with plain linear layers: the prepared model (oneDNN-prepacked or int8)
has no backward, so the pipeline loads an fp32 copy for them (`Pipeline.gradient_model`).

**Occlusion** (leave one token out) is the model-agnostic check: token i receives F(x) − F(x with token i
replaced by the baseline token). Replacing, not removing, keeps every other token at its position, and uses
the same baseline token as Integrated Gradients, so the two read alike. It runs through the pipeline's own
forward stage (the engine, int8 included), all variants in one batched call: T forwards of T tokens,
so its cost grows as T² (a 500-token review: 250,000 tokens through the model, where Integrated Gradients
runs 32 forward and backward passes).

Both give one score per token; a word's score is the sum of its tokens' (words as the tokenizer's
pre-tokenizer splits them: `Encoding.word_ids`).
"""

from __future__ import annotations

import heapq
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from coulisse.engine import Item
from coulisse.errors import InputError
from coulisse.models import EncoderModel, Packed

METHODS = ("integrated_gradients", "occlusion")
BASELINES = ("pad", "mask")
DEFAULT_STEPS = 32  # Gauss-Legendre nodes of the first pass
PANEL_NODES = 4  # nodes per panel: 32 steps are 8 panels of 4
TOLERANCE = 0.005  # the panels' completeness errors may add up to this share of |F(x) − F(x')|
STEP_TOKENS = 4096  # tokens per backward pass: the interpolation steps of one text are batched up to this
# One fp32 forward pass gives F within ROUNDING · eps · max(1, |logits|) of its exact value. Measured against a
# float64 copy of the model at 129 to 25,001 points of a path: at most 9.2 (the tiny random model of every family
# of the tests, 3.9 to 9.2; the bundled model 1.9 to 3.0; a random 12-layer, 768-wide CamemBERT 4.6 to 5.4), so
# 32 leaves a margin of 3.5. A panel's check is two such passes: a miss within twice this counts as exact.
ROUNDING = 32
# The most nodes a first pass may ask for: 4,096 times the default. At 2^17 nodes the panels are 3e-5 wide, past
# any gain (smooth models reach fp32's floor at 32 nodes, kinks are refined from any start), and a 380-token
# review already takes 50 M token-gradients: 62 s and 540 MB with the bundled 1-layer model on 2 cores, days with
# a 12-layer, 768-wide one (1.8 s an evaluation there); the refinement may spend 8 times more. A larger count is a
# slip: refused.
MAX_STEPS = 2**17


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
    weights: str = "fp32"  # the weights the scores come from: "fp32", or "int8" (occlusion on an int8 pipeline)
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
        return (f"<Attribution of {shown!r} towards {self.label} ({self.method}, {self.weights}): towards "
                f"{listed(1)}; against {listed(-1)}; {len(self.words)} words, gap {self.gap:+.2e}>")


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
        words.append(Word(text[start:end], start, end, tokens, float(sum(scores[i] for i in tokens))))
    if pending and words:
        last = words[-1]
        last.tokens += pending
        last.attribution += float(sum(scores[i] for i in pending))
    return words


def _is_punctuation(text: str, span: tuple[int, int]) -> bool:
    chars = text[span[0]:span[1]].strip()
    return bool(chars) and all(unicodedata.category(c).startswith("P") for c in chars)


def _peel_punctuation(text: str, offsets: Sequence[tuple[int, int]], groups: list[list[int]]) -> list[list[int]]:
    """A pre-tokenizer that splits on spaces only (SentencePiece's Metaspace: CamemBERT, XLM-R) makes
    "excellent," one word; WordPiece's and byte-level BPE's split the comma off. Punctuation tokens at either
    end of a word become words of their own, so that every tokenizer lists "excellent" and "," apart (a
    word's inner punctuation, as in "d'HuggingFace" or "chef-d'œuvre", stays)."""
    out = []
    for tokens in groups:
        head, tail = 0, len(tokens)
        while head < tail - 1 and _is_punctuation(text, offsets[tokens[head]]):
            head += 1
        while tail - 1 > head and _is_punctuation(text, offsets[tokens[tail - 1]]):
            tail -= 1
        if head == tail - 1 and _is_punctuation(text, offsets[tokens[head]]):  # punctuation alone: as it was
            out.append(tokens)
            continue
        out += [[i] for i in tokens[:head]] + [tokens[head:tail]] + [[i] for i in tokens[tail:]]
    return out


# -- Integrated Gradients ----------------------------------------------------------------------------------


def gauss_legendre(nodes: int, lo: float | np.ndarray = 0.0, hi: float | np.ndarray = 1.0
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Nodes in [lo, hi] and weights (summing to hi − lo) of the `nodes`-point Gauss-Legendre rule; `lo` and `hi`
    as arrays `(P,)` give every panel's at once, `(P, nodes)`."""
    t, w = np.polynomial.legendre.leggauss(nodes)  # on [-1, 1], weights sum to 2
    lo, hi = np.asarray(lo)[..., None], np.asarray(hi)[..., None]
    return lo + (t + 1) / 2 * (hi - lo), w / 2 * (hi - lo)


def packed_copies(model: EncoderModel, ids: list[int], type_ids: list[int] | None, copies: int) -> Packed:
    return Packed.from_lists([ids] * copies, None if type_ids is None else [type_ids] * copies,
                             model.config.position_offset)


def embedding_gradients(model: EncoderModel, p: Packed, embeds: torch.Tensor, target: int,
                        weights: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits `(B, labels)` of a packed batch run from word vectors `embeds` `(T, E)`, and the gradient of
    Σ_b weights_b · logits[b, target] with respect to `embeds`."""
    with torch.inference_mode(False), torch.enable_grad():
        embeds = embeds.detach().clone().requires_grad_(True)
        logits = model.forward_packed(p, inputs_embeds=embeds)  # (B, labels)
        objective = logits[:, target] if weights is None else logits[:, target] * weights
        (grad,) = torch.autograd.grad(objective.sum(), embeds)
    return logits.detach(), grad


class _Path:
    """The straight path x' + α(x − x') of one sequence, run in batches of copies of it."""

    def __init__(self, model: EncoderModel, ids: list[int], type_ids: list[int] | None, x: torch.Tensor,
                 x0: torch.Tensor, step_tokens: int):
        self.model, self.ids, self.type_ids, self.x, self.x0 = model, ids, type_ids, x, x0
        self.per_pass = max(1, step_tokens // len(ids))

    def _chunks(self, alphas: np.ndarray):
        for lo in range(0, len(alphas), self.per_pass):
            a = torch.tensor(alphas[lo : lo + self.per_pass], dtype=self.x.dtype)
            path = self.x0[None] + a[:, None, None] * (self.x - self.x0)[None]  # (k, T, E)
            yield lo, path.reshape(-1, self.x.shape[-1]), packed_copies(self.model, self.ids, self.type_ids, len(a))

    def logits(self, alphas: np.ndarray) -> np.ndarray:
        """F at each α: `(len(alphas), labels)`."""
        with torch.inference_mode():
            rows = [self.model.forward_packed(p, inputs_embeds=e) for _, e, p in self._chunks(alphas)]
        return torch.cat(rows).double().numpy()

    def contributions(self, alphas: np.ndarray, weights: np.ndarray, target: int, group: int = 1) -> np.ndarray:
        """Per group of `group` consecutive nodes and token, Σ weight · (x − x') · ∂F/∂x at α:
        `(len(alphas) // group, T)`, summed in float64 as the batches come (never a row per node)."""
        out = torch.zeros(len(alphas) // group, len(self.ids), dtype=torch.float64)
        for lo, embeds, p in self._chunks(alphas):
            w = torch.tensor(weights[lo : lo + p.batch_size], dtype=self.x.dtype)
            _, grad = embedding_gradients(self.model, p, embeds, target, w)
            rows = ((self.x - self.x0)[None] * grad.view(p.batch_size, *self.x.shape)).sum(-1)  # (k, T)
            out.index_add_(0, torch.arange(lo, lo + p.batch_size) // group, rows.double())
        return out.numpy()


class _Panels:
    """The panels [a, b] of the path, the worst first, and the sum of their errors, a panel within `noise` (the
    rounding of its own check) counting as exact.

    A heap and a running total: taking out the worst panel costs log n, and the stopping rule reads one number.
    (Re-summing every panel's error after each removal cost n²: 25,000 panels at steps=100000 ran for minutes.)
    The running total adds and subtracts non-negative float64 terms: its own rounding, ~n · 1e-16 of the total,
    is nothing beside what is allowed (≥ 1e-5)."""

    def __init__(self, noise: float):
        self.noise, self.counted = noise, 0.0  # Σ of the errors that count
        self._heap: list[tuple[float, float, float, np.ndarray]] = []  # (−counted error, a, b, token scores)

    def add(self, edges: np.ndarray, parts: np.ndarray, errors: np.ndarray) -> None:
        """Panels `edges` `(P, 2)`, their token scores `(P, T)` and completeness errors `(P,)`."""
        for (a, b), part, error in zip(edges.tolist(), parts, errors.tolist(), strict=True):
            counted = error if error > self.noise else 0.0
            heapq.heappush(self._heap, (-counted, a, b, part))
            self.counted += counted

    def split_worst(self, allowed: float, most: int) -> np.ndarray:
        """Take the worst panels out, `most` at most, until the others' counted errors fit in `allowed`; their halves
        `(2k, 2)`, to be integrated and added back."""
        halves: list[tuple[float, float]] = []
        while self._heap and self.counted > allowed and len(halves) < 2 * most:
            negative, a, b, _ = heapq.heappop(self._heap)
            self.counted += negative
            halves += [(a, (a + b) / 2), ((a + b) / 2, b)]
        return np.array(halves, dtype=np.float64).reshape(-1, 2)

    def scores(self) -> np.ndarray:
        """The panels' token scores summed along the path `(T,)`."""
        return np.sum([panel[3] for panel in sorted(self._heap, key=lambda panel: panel[1])], axis=0)


def integrated_gradients(model: EncoderModel, ids: list[int], type_ids: list[int] | None, special: Sequence[bool],
                         target: int | None, baseline_id: int, steps: int = DEFAULT_STEPS,
                         tolerance: float = TOLERANCE, max_steps: int | None = None,
                         step_tokens: int = STEP_TOKENS) -> tuple[np.ndarray, np.ndarray, np.ndarray, int, int]:
    """Per-token scores `(T,)`, F(x) and F(x') (every label), the target (the argmax of F(x) when None) and
    the number of gradient evaluations spent.

    `steps` nodes (rounded up to whole panels) of composite Gauss-Legendre on equal panels of `PANEL_NODES`,
    then adaptive: each panel [a, b] knows what its scores must add up to, F(b) − F(a) (forward passes only),
    and the worst panels are halved until the panels' errors (a panel within the rounding of its check,
    `ROUNDING`, counting as exact) add up to at most `tolerance` · |F(x) − F(x')|, or `max_steps` (default
    8 · steps) are spent. Smooth models never refine, at any step count; a ReLU's kinks, or a softmax sharp
    enough to act like one (the tiny random DeBERTa of the tests), get narrow panels."""
    table = model.base.input_embeddings.weight
    x = table[torch.tensor(ids)].detach()  # (T, E)
    keep = torch.tensor(list(special), dtype=torch.bool)
    x0 = torch.where(keep[:, None], x, table[baseline_id].detach())  # (T, E): special tokens kept
    path = _Path(model, ids, type_ids, x, x0, step_tokens)
    base, logits = path.logits(np.array([0.0, 1.0]))
    target = int(np.argmax(logits)) if target is None else target
    nodes = min(steps, PANEL_NODES)
    edges = np.linspace(0.0, 1.0, -(-steps // nodes) + 1)
    at = {0.0: base[target], 1.0: logits[target]}
    allowed = max(tolerance * abs(logits[target] - base[target]), 1e-5)
    # A panel's error, Σ its scores − (F(b) − F(a)), is measured with two fp32 forward passes, each off by up to
    # ROUNDING · eps · scale: a miss that small is rounding, which no halving removes (each half brings an F of
    # its own). Summed over n panels it would grow as n, whatever the model: 25,000 panels of the bundled model
    # (steps=100000, "Je déteste tellement ça !") miss by 6e-8 on average, 1.5e-3 in all, more than the 1.1e-3
    # allowed: the old rule refined them towards the budget. (The sum itself is float64: the misses, not their
    # sum, are fp32's.)
    scale = max(1.0, float(np.abs(logits).max()), float(np.abs(base).max()))
    panels = _Panels(noise=2 * ROUNDING * torch.finfo(x.dtype).eps * scale)
    budget, used = max_steps or 8 * steps, 0
    todo = np.stack([edges[:-1], edges[1:]], axis=1)  # (panels, 2)
    while len(todo):
        alphas, weights = gauss_legendre(nodes, todo[:, 0], todo[:, 1])  # (panels, nodes)
        parts = path.contributions(alphas.ravel(), weights.ravel(), target, group=nodes)  # (panels, T)
        used += nodes * len(todo)
        missing = sorted(set(todo.ravel().tolist()) - at.keys())
        if missing:  # none when the first panel is the whole path (steps < 2 * PANEL_NODES)
            at.update(zip(missing, path.logits(np.array(missing))[:, target], strict=True))
        ends = np.array([[at[a], at[b]] for a, b in todo.tolist()])  # (panels, 2): F(a), F(b)
        panels.add(todo, parts, np.abs(parts.sum(1) - (ends[:, 1] - ends[:, 0])))
        todo = panels.split_worst(allowed, (budget - used) // (2 * nodes))
    return panels.scores(), logits, base, target, used


# -- occlusion ---------------------------------------------------------------------------------------------


def occlusion(forward: Callable[[list[Item]], list[np.ndarray]], ids: list[int], type_ids: list[int] | None,
              special: Sequence[bool], target: int | None, baseline_id: int
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Per-token F(x) − F(x with that token replaced by `baseline_id`) `(T,)`, F(x), F(x') and the target;
    `forward` is a pipeline's forward stage (items -> one logits row each)."""
    words = [i for i, s in enumerate(special) if not s]
    # the words' positions stay: the pad stands in for the word, which alone changes (Packed.from_lists); x
    # itself is numbered as the pipeline numbers it, a pad the text holds included
    every = [not s for s in special]
    items = [Item(list(ids), type_ids),
             Item([baseline_id if not s else t for t, s in zip(ids, special, strict=True)], type_ids, every)]
    for i in words:
        variant = list(ids)
        variant[i] = baseline_id
        items.append(Item(variant, type_ids, [j == i for j in range(len(ids))]))
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


def attribute(text: str, encoding, *, method: str, steps: int | None, target: int | None, baseline: str,
              baseline_id: int, id2label: dict[int, str], gradient_model: Callable[[], EncoderModel],
              forward: Callable[[list[Item]], list[np.ndarray]], uses_token_types: bool, truncated: bool,
              weights: str, fixed: Sequence[bool] | None = None, extra: dict[str, Any] | None = None) -> Attribution:
    """One tokenized text (`encoding`, a tokenizers `Encoding`) -> its `Attribution`. `gradient_model` is
    called only for Integrated Gradients; `forward` (the pipeline's stage) only for occlusion. `fixed`: the
    tokens held as they are in the baseline and given no score (default: the special tokens; a zero-shot
    pair adds its hypothesis), reported as special tokens with offsets (0, 0): only `text` is scored."""
    ids = list(encoding.ids)
    special = [bool(s) for s in (encoding.special_tokens_mask if fixed is None else fixed)]
    type_ids = list(encoding.type_ids) if uses_token_types else None
    if method == "integrated_gradients":
        scores, logits, base, target, steps = integrated_gradients(gradient_model(), ids, type_ids, special, target,
                                                                   baseline_id, steps)
        weights = "fp32"
    else:
        scores, logits, base, target = occlusion(forward, ids, type_ids, special, target, baseline_id)
    offsets = [(0, 0) if s else tuple(o) for o, s in zip(encoding.offsets, special, strict=True)]
    words = group_words(text, offsets, list(encoding.word_ids), special, scores)
    return Attribution(text, list(encoding.tokens), ids, offsets, special, [float(s) for s in scores], words,
                       target, id2label[target], logits.tolist(), base.tolist(), method, steps, baseline,
                       baseline_id, truncated, weights, dict(extra or {}))

"""Integrated Gradients for a sequence classifier: which tokens pushed it to its answer (`attributions.py`
puts the scores on words; occlusion, the model-agnostic check, lives there).

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
"""

from __future__ import annotations

import heapq
import logging
from collections.abc import Sequence

import numpy as np
import torch

from coulisse.models import EncoderModel, Packed

log = logging.getLogger(__name__)

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
    `ROUNDING`, counting as exact) add up to at most `tolerance` · |F(x) − F(x')| (1e-5 at least), or
    `max_steps` (default 8 · steps) are spent: a completeness gap still above that is logged as a warning.
    Smooth models never refine, at any step count; a ReLU's kinks, or a softmax sharp enough to act like one (the
    tiny random DeBERTa of the tests), get narrow panels."""
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
    scores = panels.scores()
    gap = float(scores.sum()) - (logits[target] - base[target])
    if panels.counted > allowed and abs(gap) > allowed:  # the budget ran out first, and it shows in the sum
        log.warning("Integrated Gradients ran %d gradient evaluations (its budget for steps=%d: %d) with a "
                    "completeness gap of %+.2e, above the %.2e allowed (%.1f %% of |F(x) − F(x')| = %.2e, at least "
                    "1e-5): the scores are that far off; pass a larger steps.", used, steps, budget, gap, allowed,
                    100 * tolerance, abs(logits[target] - base[target]))
    return scores, logits, base, target, used

"""Attention over packed sequences (models/bert.py): the padded layout and the per-sequence layout give the
attention of each sequence alone, on mixed lengths (a real key mask), equal lengths, one sequence, with
first_only, and the rule that picks a layout per batch.

The oracle is an independent float64 computation, softmax(q·kᵀ·scale)·v per sequence. The two fp32
layouts differ from it, and from each other, only by rounding: padded keys get probability exactly 0
(exp(-inf)), so both sum the same non-zero terms, in an order that depends on the kernel's blocking. The
bound, per sequence of n keys, u = 2⁻²⁴: each score q·k over d terms is off by at most
γ_d·scale·(|q|·|k|) = S (γ_d = d·u / (1 - d·u)); a softmax probability's relative error is at most
2S + (n + 4)u (its own score, the max, exp to a few ulps, a sum of n terms); the output Σ p_j v_j adds
γ_n·max|v|. So |Δout| ≤ max|v|·(2S + (2n + 8)u); we allow twice that for second-order terms.
"""

from __future__ import annotations

import pytest
import torch

from coulisse.models import bert
from coulisse.models.bert import Packed, Trace, attend_padded, attend_sequences, packed_attention, per_sequence

U = 2.0 ** -24
HEADS, HEAD_DIM = 4, 16


def packed(lengths: list[int]) -> Packed:
    return Packed.from_lists([[5] * n for n in lengths], None, offset=0)


def oracle(qkv: torch.Tensor, lengths: list[int], heads: int, first_only: bool) -> tuple[torch.Tensor, float]:
    """Per sequence, in float64: the attention output `(T, H)` (or `(B, H)`) and the rounding bound above."""
    H = qkv.shape[1] // 3
    d = H // heads
    scale = d ** -0.5
    outs, bound, start = [], 0.0, 0
    for n in lengths:
        q, k, v = qkv[start:start + n].double().view(n, 3, heads, d).permute(1, 2, 0, 3)  # (h, n, d)
        if first_only:
            q = q[:, :1]
        probs = (q @ k.transpose(-1, -2) * scale).softmax(-1)  # (h, Lq, n)
        outs.append((probs @ v).transpose(0, 1).reshape(-1, H))
        gamma = d * U / (1 - d * U)
        S = gamma * scale * (q.abs() @ k.abs().transpose(-1, -2)).max().item()
        bound = max(bound, 2 * v.abs().max().item() * (2 * S + (2 * n + 8) * U))
        start += n
    return torch.cat(outs), bound


CASES = {
    "mixed lengths (key mask)": [23, 7, 16, 1, 30],
    "equal lengths (no mask)": [12, 12, 12],
    "one sequence": [19],
    "one token each": [1, 1],
}


@pytest.mark.parametrize("first_only", [False, True], ids=["all queries", "first_only"])
@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("layout", [attend_padded, attend_sequences], ids=["padded", "per-sequence"])
def test_layout_equals_each_sequence_alone(layout, case, first_only):
    lengths = CASES[case]
    torch.manual_seed(0)
    qkv = torch.randn(sum(lengths), 3 * HEADS * HEAD_DIM) * 2
    p = packed(lengths)
    want, bound = oracle(qkv, lengths, HEADS, first_only)
    got = layout(qkv, p, HEADS, first_only)
    assert got.shape == want.shape == ((len(lengths) if first_only else sum(lengths)), HEADS * HEAD_DIM)
    assert (got.double() - want).abs().max().item() <= bound
    if case.startswith("mixed"):
        assert p.key_mask is not None  # the masked case really is one


@pytest.mark.parametrize("first_only", [False, True], ids=["all queries", "first_only"])
def test_layouts_agree_at_base_size(first_only):
    """12 heads x 64, the engine's kind of batch (sorted lengths, long ones): padded vs per-sequence."""
    lengths = [211, 198, 180, 150, 97]
    torch.manual_seed(1)
    qkv = torch.randn(sum(lengths), 3 * 768)
    p = packed(lengths)
    want, bound = oracle(qkv, lengths, 12, first_only)
    padded, sequences = attend_padded(qkv, p, 12, first_only), attend_sequences(qkv, p, 12, first_only)
    assert (padded.double() - want).abs().max().item() <= bound
    assert (sequences.double() - want).abs().max().item() <= bound
    assert (padded - sequences).abs().max().item() <= 2 * bound


@pytest.mark.slow  # torch.use_deterministic_algorithms takes ~15 s to switch on
def test_padding_rows_are_zeroed_not_left_uninitialised():
    """The padded copy starts from `new_empty`: with torch filling uninitialised memory with NaN, a padding row
    left unwritten would reach the output through 0 · NaN."""
    lengths = [9, 3, 6]
    torch.manual_seed(2)
    qkv = torch.randn(sum(lengths), 3 * HEADS * HEAD_DIM)
    p = packed(lengths)
    before = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)  # with fill_uninitialized_memory (default True): empty = NaN
    try:
        assert torch.utils.deterministic.fill_uninitialized_memory
        assert torch.isnan(torch.empty(4)).all()
        rows = bert.padded_rows(qkv, p)
        got = attend_padded(qkv, p, HEADS)
    finally:
        torch.use_deterministic_algorithms(before)
    assert rows.shape == (3, 9, qkv.shape[1])
    assert not rows[1, 3:].any() and not rows[2, 6:].any()  # zeros, not NaN (NaN is truthy)
    assert torch.equal(rows[0], qkv[:9]) and torch.equal(rows[1, :3], qkv[9:12]) and torch.equal(rows[2, :6], qkv[12:])
    want, bound = oracle(qkv, lengths, HEADS, False)
    assert not torch.isnan(got).any() and (got.double() - want).abs().max().item() <= bound


def test_trace_keeps_padded_probabilities_whatever_the_rule():
    lengths = [8, 5]
    torch.manual_seed(3)
    qkv = torch.randn(sum(lengths), 3 * HEADS * HEAD_DIM)
    trace = Trace()
    got = packed_attention(qkv, packed(lengths), HEADS, trace=trace)
    want, bound = oracle(qkv, lengths, HEADS, False)
    assert (got.double() - want).abs().max().item() <= bound
    (probs,) = trace.attentions
    assert probs.shape == (2, HEADS, 8, 8)
    assert torch.equal(probs[1, :, :, 5:], torch.zeros(HEADS, 8, 3))  # padded keys: probability exactly 0
    torch.testing.assert_close(probs.sum(-1), torch.ones(2, HEADS, 8))


# -- the rule ------------------------------------------------------------------------------------------------


def test_rule_is_a_pure_function_of_the_lengths():
    m = bert.PER_SEQUENCE_MIN_MEAN_LENGTH
    # One length (one sequence included): the padded layout is the packed tensor itself, a view.
    assert not per_sequence([3]) and not per_sequence([500]) and not per_sequence([200] * 4)
    assert per_sequence([m + 1, m - 1]) and per_sequence([2 * m, 1]) and per_sequence([300, 280, 12])
    assert not per_sequence([m, m - 2]) and not per_sequence([m, m - 1, m - 1]) and not per_sequence([6, 5] * 128)
    assert per_sequence([m + 2, m - 1, m - 1])  # the mean decides, not the shortest
    assert [per_sequence([m - 1, m]) for _ in range(3)] == [False] * 3


def test_packed_attention_takes_the_rules_layout(monkeypatch):
    """Each batch goes where the rule says (seen through which function runs), and both give the oracle."""
    calls: list[str] = []
    for name in ("attend_padded", "attend_sequences"):
        real = getattr(bert, name)
        monkeypatch.setattr(bert, name, lambda *a, _real=real, _name=name, **k: calls.append(_name) or _real(*a, **k))
    torch.manual_seed(4)
    for lengths, want_layout in (([40, 33, 20], "attend_sequences"), ([6, 4, 3, 3], "attend_padded"),
                                 ([25, 25], "attend_padded"), ([30], "attend_padded")):
        qkv = torch.randn(sum(lengths), 3 * HEADS * HEAD_DIM)
        for first_only in (False, True):
            calls.clear()
            got = packed_attention(qkv, packed(lengths), HEADS, first_only)
            want, bound = oracle(qkv, lengths, HEADS, first_only)
            assert calls == [want_layout] and (got.double() - want).abs().max().item() <= bound


@pytest.mark.slow
def test_real_model_equals_transformers_in_both_layouts(minilm_dir):
    """all-MiniLM-L6-v2 (real weights): a batch of long sentences (per-sequence) and one of short words
    (padded) give transformers' hidden states for each text alone (the model-level tolerance of
    test_minilm.py, 1e-4: six layers of fp32 rounding)."""
    from transformers import AutoModel, AutoTokenizer

    from coulisse import pipeline

    long = ["The quick brown fox jumps over the lazy dog, again and again, until the dog wakes up.",
            "Sentences are passed as a list of strings, and each one is encoded on its own."]
    short = ["Yes.", "No way!", "Fine", "Bof."]
    tok = AutoTokenizer.from_pretrained(str(minilm_dir))
    model = AutoModel.from_pretrained(str(minilm_dir)).eval()
    pipe = pipeline("feature-extraction", model=minilm_dir)
    for texts, loop in ((long, True), (short, False)):
        lengths = [len(tok(t)["input_ids"]) for t in texts]
        assert per_sequence(lengths) is loop
        for text, ours in zip(texts, pipe(texts), strict=True):
            with torch.no_grad():
                want = model(**tok([text], return_tensors="pt")).last_hidden_state[0]
            assert (torch.as_tensor(ours[0]) - want).abs().max().item() <= 1e-4

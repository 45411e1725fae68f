"""The C attention over packed sequences (src/coulisse/models/_attention.c) against float64 arithmetic, SDPA,
and itself under other thread counts and instruction sets."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from coulisse import pipeline
from coulisse.models import fastpath
from coulisse.models import quantize as Q
from coulisse.models.bert import Packed

pytestmark = pytest.mark.skipif(Q.kernels() is None, reason="the C kernels are not built")

U = 2.0**-24  # fp32 unit roundoff


def packed(lengths: list[int], hidden: int, seed: int = 0, spread: float = 2.0) -> tuple[torch.Tensor, Packed]:
    torch.manual_seed(seed)
    qkv = torch.randn(sum(lengths), 3 * hidden) * spread
    ids = [[0] * n for n in lengths]
    return qkv, Packed.from_lists(ids, None, 0)


def c_attention(qkv: torch.Tensor, p: Packed, heads: int, first_only: bool = False,
                rel: torch.Tensor | None = None) -> torch.Tensor:
    out = fastpath.c_packed_attention(qkv, p, heads, first_only, rel=rel)
    assert out is not None
    return out


def reference(qkv: torch.Tensor, p: Packed, heads: int, first_only: bool = False,
              rel: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """softmax(q k^T / sqrt(d)) v in float64, and an error bound per output element for fp32 arithmetic:
    a score is a d-term dot product, off by at most gamma_d * sum_c |q_c k_c| (gamma_k = k u / (1 - k u)),
    times the scale; an error delta in the scores moves each probability by a factor within exp(+-2 delta),
    exp's polynomial and the fp32 roundings of p_j, the sum and the output add a few u plus gamma_n each,
    and an output is a convex combination of the v_j: so |error| <= (2 delta + gamma_n * 2 + 8 u) * max|v|.
    `rel` (`(heads or 1, 2 W - 1)`, column W - 1 + j - i): a bias added to the scores. The kernel scales it (by
    log2 e, or 1 / scale for the raw products of the AMX unit) and adds it to a score that is scaled once more or
    already: at most four roundings, each within u of |scaled product| + |bias|, so delta grows by 4 u times that
    (a -inf bias is a key left out; the kernel's 2^-126 for it is far below every bound)."""
    H = qkv.shape[1] // 3
    d = H // heads
    outs, bounds, start = [], [], 0
    gamma = lambda k: k * U / (1 - k * U)  # noqa: E731
    for n in p.lengths:
        q, k, v = qkv[start:start + n].double().view(n, 3, heads, d).permute(1, 2, 0, 3)  # (h, n, d) each
        scale = d**-0.5
        products = scale * (q.abs() @ k.abs().transpose(1, 2))  # (h, n, n)
        block = None
        if rel is not None:
            at = torch.arange(n)
            block = rel.double()[:, at[None, :] - at[:, None] + (rel.shape[1] - 1) // 2].expand(heads, n, n)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=block)  # float64
        delta = gamma(d) * products.amax(-1)  # (h, n)
        if block is not None:
            delta = delta + 4 * U * (products + block.abs().nan_to_num(posinf=0.0)).amax(-1)
        vmax = v.abs().amax(1)  # (h, d)
        bound = (2 * delta + 2 * gamma(n) + 8 * U)[:, :, None] * vmax[:, None, :]  # (h, n, d)
        out, bound = out.transpose(0, 1).reshape(n, H), bound.transpose(0, 1).reshape(n, H)
        outs.append(out[:1] if first_only else out)
        bounds.append(bound[:1] if first_only else bound)
        start += n
    return torch.cat(outs), torch.cat(bounds)


def rel_table(heads: int, width: int, seed: int, shared: bool = False, band: int | None = None) -> torch.Tensor:
    """A relative bias for sequences of up to `width` tokens: `(heads or 1, 2 width - 1)` of N(0, 2) values, or
    with `band` a window: 0 for keys at most `band` away from the query, -inf beyond (ModernBERT's local layers)."""
    torch.manual_seed(seed)
    if band is not None:
        offsets = torch.arange(1 - width, width).abs()
        return torch.where(offsets <= band, 0.0, float("-inf"))[None].repeat(1 if shared else heads, 1)
    return torch.randn(1 if shared else heads, 2 * width - 1) * 2


SHAPES = [(768, 12), (384, 12), (96, 4), (60, 5)]  # head widths 64, 32, 24 (AVX2 only), 12 (scalar only)


@pytest.mark.parametrize("hidden,heads", SHAPES, ids=[f"d{h // n}" for h, n in SHAPES])
@pytest.mark.parametrize("first_only", [False, True], ids=["all", "first-only"])
def test_matches_float64_within_the_fp32_bound(hidden, heads, first_only):
    """Sequence lengths around every vector and block boundary (1, 7, 8, 15, 16, 17, 33, 130, 200)."""
    qkv, p = packed([1, 7, 8, 15, 16, 17, 33, 130, 200], hidden)
    out = c_attention(qkv, p, heads, first_only)
    expected, bound = reference(qkv, p, heads, first_only)
    err = (out.double() - expected).abs()
    assert out.shape == expected.shape
    assert (err <= bound).all(), f"max error {err.max():.2e}, where the bound was {bound[err > bound].min():.2e}"


def sdpa_per_sequence(qkv: torch.Tensor, p: Packed, heads: int) -> torch.Tensor:
    H, start, rows = qkv.shape[1] // 3, 0, []
    for n in p.lengths:
        q, k, v = qkv[start:start + n].view(1, n, 3, heads, H // heads).permute(2, 0, 3, 1, 4)
        rows.append(F.scaled_dot_product_attention(q, k, v)[0].transpose(0, 1).reshape(n, H))
        start += n
    return torch.cat(rows)


def test_agrees_with_sdpa_per_sequence():
    """What the engine ran before: SDPA per sequence, in fp32. Both are within the bound of the exact result."""
    qkv, p = packed([5, 64, 129, 300], 768, seed=1)
    out = c_attention(qkv, p, 12)
    sdpa = sdpa_per_sequence(qkv, p, 12)
    _, bound = reference(qkv, p, 12)
    assert ((out - sdpa).abs().double() <= 2 * bound).all()


def test_first_only_gives_the_full_runs_first_rows_to_the_bit():
    qkv, p = packed([3, 40, 17, 90], 384, seed=2)
    assert torch.equal(c_attention(qkv, p, 12, first_only=True), c_attention(qkv, p, 12)[p.starts])


@pytest.mark.parametrize("batch", [[300], [7, 300, 12, 64, 64]], ids=["one-sequence", "five"])
def test_thread_count_does_not_change_a_bit(batch):
    """Each output row is computed by one thread in a fixed order, whoever takes its unit; one long
    sequence is split into query ranges over the threads (the split must not show either)."""
    qkv, p = packed(batch, 768, seed=3)
    results = at_thread_counts(lambda: c_attention(qkv, p, 12))
    assert torch.equal(results[0], results[1]) and torch.equal(results[0], results[2])


def at_thread_counts(run, counts=(1, 2, 3)) -> list[torch.Tensor]:
    """`run()` under each thread count, torch's own restored after."""
    previous = torch.get_num_threads()
    try:
        results = []
        for threads in counts:
            torch.set_num_threads(threads)
            results.append(run())
        return results
    finally:
        torch.set_num_threads(previous)


@pytest.mark.parametrize("where", ["key", "query"])
@pytest.mark.parametrize("poison", [float("nan"), float("inf")])
def test_a_poisoned_value_stays_in_its_sequence_and_head(poison, where):
    """A NaN or inf in a key or query of one head of one sequence: the outputs that SDPA makes NaN are NaN
    here too (a NaN score, or exp(inf - inf)), never a finite value; the other heads and sequences keep
    the bits of a clean run."""
    qkv, p = packed([20, 37, 9], 768, seed=4)
    clean = c_attention(qkv, p, 12)
    poisoned = qkv.clone()
    poisoned[20 + 5, (768 if where == "key" else 0) + 64 * 3 + 10] = poison  # sequence 1, head 3
    out = c_attention(poisoned, p, 12)
    sdpa = sdpa_per_sequence(poisoned, p, 12)
    head3 = slice(64 * 3, 64 * 4)
    assert sdpa[20:57, head3].isnan().any()
    assert torch.equal(out.isnan(), sdpa.isnan())
    mask = torch.ones_like(out, dtype=torch.bool)
    mask[20:57, head3] = False
    assert torch.equal(out[mask], clean[mask])


def test_a_query_whose_scores_are_all_minus_inf_gets_nan():
    """An inf in a query against keys all negative on that dimension: every score is -inf. The softmax of
    such a row is 0 / 0, NaN (as `torch.softmax` and transformers' eager attention give); SDPA's flash
    kernel writes zeros there instead, a finite output from a poisoned input, which coulisse does not copy.
    The other queries keep their bits."""
    qkv, p = packed([20], 128, seed=5)
    qkv[:, 128 + 5] = -qkv[:, 128 + 5].abs() - 0.1  # head 0's keys, dimension 5
    clean = c_attention(qkv, p, 2)
    qkv[3, 5] = float("inf")  # head 0's query 3
    out = c_attention(qkv, p, 2)
    q, k = qkv[:, :64], qkv[:, 128:192]
    assert ((q @ k.T)[3] == float("-inf")).all() and (q @ k.T)[3].softmax(-1).isnan().all()
    assert out[3, :64].isnan().all()
    mask = torch.ones_like(out, dtype=torch.bool)
    mask[3, :64] = False
    assert torch.equal(out[mask], clean[mask])


ISA_SCRIPT = """
import sys, torch
from coulisse.models import fastpath
from coulisse.models.quantize import kernels
from coulisse.models.bert import Packed
torch.manual_seed(0)
lengths = [1, 9, 16, 31, 77, 128]
p = Packed.from_lists([[0] * n for n in lengths], None, 0)
out = {}
for hidden, heads in ((768, 12), (96, 4)):
    qkv = torch.randn(sum(lengths), 3 * hidden) * 2
    rel = torch.randn(heads, 2 * 130 - 1) * 2
    out[hidden] = (qkv, fastpath.c_packed_attention(qkv, p, heads, False), rel,
                   fastpath.c_packed_attention(qkv, p, heads, False, rel=rel))
torch.save({"isa": kernels().isa(), "out": out}, sys.argv[1])
"""


def test_each_instruction_set_is_within_the_bound(tmp_path):
    """COULISSE_INT8_ISA caps the kernels' instruction set (read once per process): the scalar, AVX2 and
    AVX-512 paths that this CPU has each meet the float64 bound, with a relative bias and without."""
    isas = {}
    for isa in ("scalar", "avx2", "avx512"):
        path = tmp_path / f"{isa}.pt"
        env = {**os.environ, "COULISSE_INT8_ISA": isa}
        subprocess.run([sys.executable, "-c", ISA_SCRIPT, str(path)], env=env, check=True)
        result = torch.load(path)
        isas[isa] = result["isa"]
        lengths = [1, 9, 16, 31, 77, 128]
        p = Packed.from_lists([[0] * n for n in lengths], None, 0)
        for hidden, heads in ((768, 12), (96, 4)):
            qkv, out, rel, biased = result["out"][hidden]
            expected, bound = reference(qkv, p, heads)
            assert ((out.double() - expected).abs() <= bound).all(), (isa, hidden)
            expected, bound = reference(qkv, p, heads, rel=rel)
            assert ((biased.double() - expected).abs() <= bound).all(), (isa, hidden, "relative bias")
    assert isas["scalar"] == "scalar"


def test_inputs_it_cannot_take_fall_back_on_sdpa():
    """bf16, a strided view, a forward autograd records: None, and `packed_attention` runs SDPA instead."""
    qkv, p = packed([4, 9], 96)
    assert fastpath.c_packed_attention(qkv.bfloat16(), p, 4, False) is None
    assert fastpath.c_packed_attention(torch.randn(13, 600)[:, :288], p, 4, False) is None
    assert fastpath.c_packed_attention(qkv.clone().requires_grad_(), p, 4, False) is None
    with torch.no_grad():
        assert fastpath.c_packed_attention(qkv.clone().requires_grad_(), p, 4, False) is not None


def test_gradients_flow_through_a_model_with_the_kernel_installed(tf_camembert_dir):
    """Attributions take gradients with respect to the word vectors. On a model with plain fp32 layers and
    the kernel installed, they must be SDPA's gradients (the kernel has no backward: it steps aside while
    autograd records), not the residual path's alone."""
    model = pipeline("sentiment-analysis", model=str(tf_camembert_dir)).gradient_model  # plain fp32 layers
    assert fastpath.install_c_attention(model) > 0
    p = Packed.from_lists([[5, 17, 42, 8, 6], [5, 99, 6]], None, model.config.position_offset)
    table = model.base.input_embeddings.weight
    grads = []
    for kernel in (fastpath.c_packed_attention, None):
        for m in model.modules():
            if hasattr(type(m), "kernel"):
                m.kernel = kernel
        embeds = table[p.input_ids].detach().clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(model.forward_packed(p, inputs_embeds=embeds).sum(), embeds)
        grads.append(grad)
    assert torch.allclose(grads[0], grads[1], atol=1e-6)


def test_pipelines_install_it_and_agree_with_sdpa(monkeypatch, tf_camembert_dir):
    """fp32 and int8 pipelines run attention in C (their preparation says so), bf16 ones too where the CPU
    multiplies bf16 pairs (else SDPA); with COULISSE_C_ATTENTION=0, SDPA. fp32 results agree within float
    rounding."""
    texts = ["un", "deux trois quatre cinq six sept huit neuf dix onze douze", "treize quatorze"]
    monkeypatch.setenv("COULISSE_C_ATTENTION", "0")
    plain = pipeline("sentiment-analysis", model=str(tf_camembert_dir))
    monkeypatch.delenv("COULISSE_C_ATTENTION")
    fast = pipeline("sentiment-analysis", model=str(tf_camembert_dir))
    assert "attention in C" in fast.preparation.fast_path
    assert "attention in C" not in plain.preparation.fast_path
    attentions = [m for m in fast.model.modules() if hasattr(type(m), "kernel")]
    assert attentions and all(m.kernel is not None for m in attentions)
    int8 = pipeline("sentiment-analysis", model=str(tf_camembert_dir), quantize="int8")
    bf16 = pipeline("sentiment-analysis", model=str(tf_camembert_dir), dtype="bfloat16")
    assert "attention in C" in int8.preparation.fast_path  # int8's activations are fp32
    has = Q.kernels().has_bf16_dot()
    assert ("attention in C" in bf16.preparation.fast_path) == has  # bf16 q/k/v: the kernel reads them, or SDPA
    a = plain(texts, top_k=None)
    b = fast(texts, top_k=None)
    for x, y in zip(a, b, strict=True):
        assert [r["label"] for r in x] == [r["label"] for r in y]
        assert max(abs(r["score"] - s["score"]) for r, s in zip(x, y, strict=True)) < 1e-5


# ---------------------------------------------------------------- bf16 products (int8 pipelines, AVX512-BF16)

UB = 2.0**-9  # bf16 unit roundoff (8 significant bits, rounding to nearest even)
needs_bf16_dot = pytest.mark.skipif(not getattr(Q.kernels(), "has_bf16_dot", lambda: False)(),
                                    reason="this CPU does not multiply bf16 pairs (no AVX512-BF16)")


EXP2_BF16 = 7.5e-5  # exp2_bf16's relative error, evaluated in fp32 over |r| <= 1/2 (_attention.c)


def bf16_attention(qkv: torch.Tensor, p: Packed, heads: int, first_only: bool = False,
                   rel: torch.Tensor | None = None) -> torch.Tensor:
    out = fastpath.c_packed_attention(qkv, p, heads, first_only, bf16=True, rel=rel)
    assert out is not None
    return out


def reference_bf16(qkv: torch.Tensor, p: Packed, heads: int, first_only: bool = False,
                   rel: torch.Tensor | None = None):
    """What the bf16 kernel computes, in float64: q, k and v rounded to bf16 (as its conversions round, to
    nearest even), exact products. Its own error against that: the fp32 bound of `reference` for the sums,
    the softmax and the output, times one more rounding, the probabilities' to bf16 (relative UB each; the
    normalizing sum stays the fp32 one). So |error| <= ((1 + 2 delta)(1 + UB)(1 + 2 gamma_n + 8 u) - 1)
    max|v|, with delta the fp32 score bound of the rounded q and k — about UB * max|v|: a pairing or layout
    mistake moves outputs by the order of max|v| itself. Its 2^x (`exp2_bf16`, degree 3) is within EXP2_BF16
    relative of the exact one, in the probabilities and in their sum alike: 2 EXP2_BF16 max|v| more."""
    rounded = qkv.bfloat16().float()
    expected, bound = reference(rounded, p, heads, first_only, rel)
    H = qkv.shape[1] // 3
    d, vmaxes, start = H // heads, [], 0
    for n in p.lengths:
        v = rounded[start:start + n, 2 * H:].double().view(n, heads, d).abs().amax(0).reshape(H)  # per head column
        vmaxes.append(v.expand(1 if first_only else n, H))
        start += n
    vmax = torch.cat(vmaxes)
    return expected, bound + (1 + bound / vmax) * UB * vmax + 2 * EXP2_BF16 * vmax + 1e-30


@needs_bf16_dot
@pytest.mark.parametrize("hidden,heads", [(768, 12), (384, 12), (128, 2), (512, 4)],
                         ids=["d64", "d32", "d64-two-heads", "d128"])
@pytest.mark.parametrize("first_only", [False, True], ids=["all", "first-only"])
def test_bf16_products_match_rounded_inputs_in_float64(hidden, heads, first_only):
    """Odd and even lengths around every block of 16 and 32 keys (pairs of keys in P V: an odd last key
    pairs with a zero one)."""
    qkv, p = packed([1, 2, 7, 15, 16, 17, 31, 32, 33, 63, 130, 201], hidden, seed=11)
    out = bf16_attention(qkv, p, heads, first_only)
    expected, bound = reference_bf16(qkv, p, heads, first_only)
    err = (out.double() - expected).abs()
    assert (err <= bound).all(), f"max error {err.max():.2e}, bound there {bound[err > bound].min():.2e}"
    fp32 = c_attention(qkv, p, heads, first_only)
    assert not torch.equal(out, fp32), "bf16 products were asked for and this CPU has them"


@needs_bf16_dot
def test_bf16_probabilities_are_the_rounded_exact_ones():
    """With one-hot values (key j's value is the j-th unit vector) the output is the probabilities themselves:
    P's bf16 words over the fp32 sum of 2^x. Beneath the bound above, which bf16's rounding of P dominates,
    this pins 2^x (`exp2_bf16`): output · (exact sum) is the bf16 rounding of the exact probability within
    the sum's relative error (2 EXP2_BF16 with fp32's own), or one bf16 step away where 2^x's error crossed a
    rounding boundary — rarely (about EXP2_BF16 / 2^-8 of them, ~2 %; at most 10 % here). A 2^x off by
    2.5e-3 relative breaks both."""
    n = d = 64
    torch.manual_seed(21)
    qk = (torch.randn(n, 2 * d) * 1.5).bfloat16().float()  # exact in bf16: the kernel's rounding changes nothing
    qkv = torch.cat([qk, torch.eye(n, d)], 1)
    p = Packed.from_lists([[0] * n], None, 0)
    out = bf16_attention(qkv, p, 1).double()
    scores = qk[:, :d].double() @ qk[:, d:].double().T * d**-0.5
    exact = torch.exp(scores - scores.amax(1, keepdim=True))
    rounded = exact.float().bfloat16().double()  # bf16 of p (through fp32: a double rounding off by an fp32 ulp)
    got = out * exact.sum(1, keepdim=True)
    near = (got - rounded).abs() <= (2 * EXP2_BF16 + 64 * U) * rounded + 1e-30
    # one bf16 step: 2^-7 relative at most
    step = (got - rounded).abs() <= 2.0**-7 * rounded * (1 + 2 * EXP2_BF16 + 64 * U)
    assert step.all(), f"{(~step).sum()} probabilities off by more than a bf16 step"
    assert (~near).float().mean() <= 0.10, f"{(~near).float().mean():.1%} of the probabilities a step away"


AMX_SCRIPT = """
import sys, torch
sys.path.insert(0, sys.argv[2])
from test_attention_kernel import packed, rel_table
from coulisse.models import fastpath
from coulisse.models.quantize import kernels
out = {}
for hidden, heads in ((768, 12), (384, 12)):
    qkv, p = packed([1, 2, 15, 16, 17, 31, 32, 33, 63, 130, 201], hidden, seed=13)
    out[hidden] = fastpath.c_packed_attention(qkv, p, heads, False, bf16=True)
    out[hidden, "rel"] = fastpath.c_packed_attention(qkv, p, heads, False, bf16=True, rel=rel_table(heads, 201, 14))
torch.save({"amx": kernels().has_amx_attention(), "out": out}, sys.argv[1])
"""


@needs_bf16_dot
@pytest.mark.skipif(not getattr(Q.kernels(), "has_amx_attention", lambda: False)(),
                    reason="no AMX-BF16 here (or COULISSE_ATTENTION_AMX=0): the bf16 tests run the AVX512-BF16 unit")
def test_amx_tiles_and_the_avx512_bf16_unit_each_meet_the_bound(tmp_path):
    """Where AMX-BF16 runs the bf16 products (every bf16 test here then tests the tiles), the AVX512-BF16 unit
    that COULISSE_ATTENTION_AMX=0 keeps (read once per process: a child process) still meets the same float64
    bound, with a relative bias and without; both sum in other orders, so their outputs differ somewhere (the tiles
    did run)."""
    path = tmp_path / "avx512bf16.pt"
    env = {**os.environ, "COULISSE_ATTENTION_AMX": "0"}
    subprocess.run([sys.executable, "-c", AMX_SCRIPT, str(path), os.path.dirname(__file__)], env=env, check=True)
    other = torch.load(path)
    assert other["amx"] is False
    for hidden, heads in ((768, 12), (384, 12)):
        qkv, p = packed([1, 2, 15, 16, 17, 31, 32, 33, 63, 130, 201], hidden, seed=13)
        tiles = bf16_attention(qkv, p, heads)
        expected, bound = reference_bf16(qkv, p, heads)
        for out in (tiles, other["out"][hidden]):
            err = (out.double() - expected).abs()
            assert (err <= bound).all(), (hidden, f"max error {err.max():.2e}")
        assert not torch.equal(tiles, other["out"][hidden])
        rel = rel_table(heads, 201, 14)
        tiles = bf16_attention(qkv, p, heads, rel=rel)
        expected, bound = reference_bf16(qkv, p, heads, rel=rel)
        for out in (tiles, other["out"][hidden, "rel"]):
            err = (out.double() - expected).abs()
            assert (err <= bound).all(), (hidden, f"relative bias: max error {err.max():.2e}")
        assert not torch.equal(tiles, other["out"][hidden, "rel"])


@needs_bf16_dot
def test_bf16_products_thread_count_and_first_only_do_not_change_a_bit():
    qkv, p = packed([7, 300, 12, 65], 768, seed=12)
    results = at_thread_counts(lambda: bf16_attention(qkv, p, 12))
    assert torch.equal(results[0], results[1]) and torch.equal(results[0], results[2])
    assert torch.equal(bf16_attention(qkv, p, 12, first_only=True), results[0][p.starts])


@needs_bf16_dot
def test_bf16_products_give_a_query_its_bits_wherever_it_sits_in_its_block():
    """Each query's output depends on its own query and the sequence's keys and values only: two queries whose q
    parts are swapped (k and v left in place) swap their outputs to the bit. The AMX unit makes a block's softmax
    rows four at a time, and the rows of a block's tail (here 30 queries: 28 and 29) one at a time; the pairs below
    move queries between the positions of a group, between groups and blocks, and between a group and the tail."""
    hidden = 768
    qkv, p = packed([30, 9], hidden, seed=21, spread=3.0)
    base = bf16_attention(qkv, p, 12)
    for i, j in ((0, 3), (1, 17), (5, 29), (28, 2), (30, 36)):
        swapped = qkv.clone()
        swapped[[i, j], :hidden] = qkv[[j, i], :hidden]
        out = bf16_attention(swapped, p, 12)
        assert torch.equal(out[[i, j]], base[[j, i]]), (i, j)
        others = [r for r in range(len(base)) if r not in (i, j)]
        assert torch.equal(out[others], base[others]), (i, j)


@pytest.mark.parametrize("bf16", [False, True])
def test_an_output_not_aligned_to_a_cache_line_gets_the_same_bits(bf16):
    """The AMX unit writes whole lines of an aligned output around the caches (non-temporal stores); where the
    output starts elsewhere it stores as the other units do: the same values either way."""
    qkv, p = packed([7, 300, 12, 65], 768, seed=15)
    aligned = (bf16_attention if bf16 else c_attention)(qkv, p, 12)
    buffer = torch.full((aligned.numel() + 1,), float("nan"))
    shifted = buffer[1:].view_as(aligned)  # 4 bytes past a 64-byte boundary
    assert shifted.data_ptr() % 64 != 0
    Q.kernels().attention(qkv.data_ptr(), shifted.data_ptr(), p.starts.data_ptr(), p.length_tensor.data_ptr(),
                          p.batch_size, 768, 12, 64**-0.5, False, 2, bf16)
    assert torch.equal(shifted, aligned)


@needs_bf16_dot
@pytest.mark.parametrize("where", ["key", "query", "value"])
def test_bf16_products_keep_a_nan_in_its_sequence_and_head(where):
    """As in fp32 (and SDPA): a NaN key poisons its head's rows of that sequence, a NaN query its own row of
    that head, a NaN value its column of that head in that sequence. Everything else keeps the bits of a
    clean run."""
    qkv, p = packed([20, 37, 9], 768, seed=13)
    clean = bf16_attention(qkv, p, 12)
    poisoned = qkv.clone()
    column = {"query": 0, "key": 768, "value": 1536}[where] + 64 * 3 + 10
    poisoned[20 + 5, column] = float("nan")
    out = bf16_attention(poisoned, p, 12)
    hit = torch.zeros_like(out, dtype=torch.bool)
    if where == "value":
        hit[20:57, 64 * 3 + 10] = True
    elif where == "key":
        hit[20:57, 64 * 3:64 * 4] = True
    else:
        hit[25, 64 * 3:64 * 4] = True
    assert out[hit].isnan().all()
    assert torch.equal(out[~hit], clean[~hit])


def test_bf16_products_step_aside_where_pairs_do_not_fill_vectors():
    """Head widths that 32 does not divide (24 here), or a CPU without AVX512-BF16: the fp32 kernel's
    bits, whatever was asked."""
    qkv, p = packed([5, 40, 17], 96, seed=14)
    assert torch.equal(bf16_attention(qkv, p, 4), c_attention(qkv, p, 4))
    if not Q.kernels().has_bf16_dot():
        qkv, p = packed([5, 40, 17], 768, seed=14)
        assert torch.equal(bf16_attention(qkv, p, 12), c_attention(qkv, p, 12))


def test_int8_pipelines_take_bf16_products_where_the_cpu_has_them(monkeypatch, tf_camembert_dir):
    """int8 pipelines install the bf16-product kernel exactly where the CPU multiplies bf16 pairs, and say
    so; COULISSE_ATTENTION_BF16=0 keeps fp32 products; exact pipelines never take them."""
    from coulisse.engine.cpu import this_machine

    has = Q.kernels().has_bf16_dot()
    assert this_machine().attention.options["int8_bf16_products"] == has  # /proc/cpuinfo and cpuid agree
    int8 = pipeline("sentiment-analysis", model=str(tf_camembert_dir), quantize="int8")
    monkeypatch.setenv("COULISSE_ATTENTION_BF16", "0")
    int8_fp32 = pipeline("sentiment-analysis", model=str(tf_camembert_dir), quantize="int8")
    monkeypatch.delenv("COULISSE_ATTENTION_BF16")
    exact = pipeline("sentiment-analysis", model=str(tf_camembert_dir))

    def kernels(pipe):
        return {m.kernel for m in pipe.model.modules() if hasattr(type(m), "kernel")}

    assert kernels(int8) == ({fastpath.c_packed_attention_bf16} if has else {fastpath.c_packed_attention})
    assert ("bf16 products" in int8.preparation.fast_path) == has
    assert kernels(int8_fp32) == kernels(exact) == {fastpath.c_packed_attention}
    assert "bf16 products" not in exact.preparation.fast_path + int8_fp32.preparation.fast_path


def test_bf16_inputs_give_the_bits_of_their_fp32_values():
    """bf16 q/k/v (bf16 pipelines) are read as they are: the same words the kernel makes from fp32 inputs
    holding the same values (a bf16 value converts to itself), so the same outputs to the bit; fp32 out."""
    qkv, p = packed([1, 6, 33, 64, 130], 768, seed=15)
    rounded = qkv.bfloat16()
    out = fastpath.c_packed_attention(rounded, p, 12, False)
    if not Q.kernels().has_bf16_dot():
        assert out is None  # SDPA then
        return
    assert out.dtype == torch.float32
    assert torch.equal(out, bf16_attention(rounded.float(), p, 12))
    assert torch.equal(fastpath.c_packed_attention(rounded, p, 12, True), out[p.starts])
    # a head width 32 does not divide: not taken (SDPA)
    small, p2 = packed([4, 9], 96)
    assert fastpath.c_packed_attention(small.bfloat16(), p2, 4, False) is None


@needs_bf16_dot
def test_bf16_pipelines_with_the_kernel_agree_with_sdpa(monkeypatch, minilm_dir):
    """all-MiniLM-L6-v2 (head width 32) in bf16, with the kernel reading its bf16 q/k/v (fp32 softmax and
    output) and on SDPA (bf16 throughout): both within bf16's budget of the fp32 embeddings (cosine
    >= 0.9999, what bench/quality_bf16.py measures at 0.99998), and the kernel really ran."""
    texts = ["Un film magnifique, je le reverrai.", "Ennuyeux du début à la fin.", "court"]
    exact = pipeline("feature-extraction", model=str(minilm_dir))
    monkeypatch.setenv("COULISSE_C_ATTENTION", "0")
    sdpa = pipeline("feature-extraction", model=str(minilm_dir), dtype="bfloat16")
    monkeypatch.delenv("COULISSE_C_ATTENTION")
    fast = pipeline("feature-extraction", model=str(minilm_dir), dtype="bfloat16")
    assert "bf16 q/k/v" in fast.preparation.fast_path and "attention in C" not in sdpa.preparation.fast_path
    ran, real = [], fastpath.c_packed_attention
    monkeypatch.setattr(fastpath, "c_packed_attention", lambda *a, **k: ran.append(real(*a, **k)) or ran[-1])

    def pooled(pipe):
        return [torch.tensor(x).float().reshape(-1, 384).mean(0) for x in pipe(texts)]

    reference, with_sdpa, with_kernel = pooled(exact), pooled(sdpa), pooled(fast)
    assert ran and all(out is not None for out in ran)
    for r, a, b in zip(reference, with_sdpa, with_kernel, strict=True):
        assert F.cosine_similarity(r, a, 0) >= 0.9999 and F.cosine_similarity(r, b, 0) >= 0.9999


def test_int8_projection_hands_q_k_v_over_in_bf16_to_the_same_bits(minilm_dir):
    """int8 pipelines whose attention takes bf16 products have their query/key/value projection write bf16 where
    coulisse's GEMM runs on AMX tiles (`forward_bf16`): the rounding the kernel applies to fp32 inputs, so the
    layer's bf16 output is its fp32 output rounded, and the embeddings are the same bits either way. Elsewhere
    the projection stays fp32."""
    from coulisse.models.bert import SelfAttention

    pipe = pipeline("feature-extraction", model=str(minilm_dir), quantize="int8")
    attention = [m for m in pipe.model.modules() if isinstance(m, SelfAttention)]
    bf16_products = Q.kernels().has_bf16_dot()
    assert attention and all(m.kernel_reads_bf16 == bf16_products for m in attention)  # head width 32
    qkv = attention[0].qkv
    x = torch.randn(40, 384, generator=torch.Generator().manual_seed(3))
    made = qkv.forward_bf16(x)
    on_tiles = bf16_products and getattr(qkv, "gemm", None) == "coulisse" and Q.amx_tiles(384)
    assert made.dtype == (torch.bfloat16 if on_tiles else torch.float32)
    assert ("q/k/v written in bf16" in pipe.preparation.fast_path) == on_tiles
    assert torch.equal(made, qkv(x).to(made.dtype))
    texts = ["Un film magnifique, porté par des acteurs justes et une mise en scène d'une rare élégance.",
             "Je me suis ennuyé du début à la fin : scénario creux, dialogues plats, rien à sauver."] * 3
    handed = pipe(texts)
    for m in attention:
        m.kernel_reads_bf16 = False
    assert pipe(texts) == handed


# A batch whose longest sequence leaves the threads even work (whole sequences are the units), and one whose longest
# is more than a thread's share (~n^2 a head: 300^2 x 2 threads > the batch's sum, so the units stay heads).
CODES_BATCHES = {"whole sequences": [37, 5, 70, 1, 64, 33, 19], "one dominates": [300, 12, 7]}


@pytest.mark.parametrize("bf16", [False, True], ids=["fp32", "bf16"])
@pytest.mark.parametrize("batch", list(CODES_BATCHES), ids=list(CODES_BATCHES))
def test_codes_are_quantize_rows_of_the_output_to_the_bit(batch, bf16):
    """`codes=True` (the attention block's int8 layer reads its input so): the output rows' `Codes` alone, the codes
    and scales quantize_rows makes of the fp32 output, on one thread or two, whether the kernel quantized each
    sequence's rows on the thread that made them or the rows written out in one pass after."""
    qkv, p = packed(CODES_BATCHES[batch], 768, seed=16)
    run = fastpath.c_packed_attention_bf16 if bf16 else fastpath.c_packed_attention
    out = run(qkv, p, 12, False)
    expected = Q.quantize_rows(out)
    for codes in at_thread_counts(lambda: run(qkv, p, 12, False, codes=True), counts=(1, 2)):
        assert isinstance(codes, Q.Codes)
        assert torch.equal(codes.q, expected[0]) and torch.equal(codes.scale, expected[1])
    # first_only: the first rows, fp32 (the classification heads read them, not an int8 layer)
    assert torch.equal(run(qkv, p, 12, True, codes=True), out[p.starts])


def test_codes_keep_a_poisoned_sequence_to_itself():
    """A NaN query: its rows of that head are NaN, so their scale is NaN (quantize_rows' rule: the row's outputs
    downstream are NaN, never finite); every other row keeps the codes of a clean run."""
    qkv, p = packed(CODES_BATCHES["whole sequences"], 768, seed=17)
    clean = fastpath.c_packed_attention(qkv, p, 12, False, codes=True)
    qkv[37 + 5 + 3, 64 * 2] = float("nan")  # sequence 2 (70 tokens), its query 3, head 2
    codes = fastpath.c_packed_attention(qkv, p, 12, False, codes=True)
    hit = torch.zeros(qkv.shape[0], dtype=torch.bool)
    hit[37 + 5 + 3] = True
    assert codes.scale[hit].isnan().all()
    assert torch.equal(codes.q[~hit], clean.q[~hit]) and torch.equal(codes.scale[~hit], clean.scale[~hit])


needs_int8_dot = pytest.mark.skipif(not getattr(Q.kernels(), "has_int8_dot", lambda: False)(),
                                    reason="this CPU does not multiply bytes into int32 (no AVX512-VNNI)")


@needs_int8_dot
def test_int8_attention_hands_its_rows_over_as_codes_alone(minilm_dir, monkeypatch):
    """int8 layers on coulisse's GEMM with the C attention: the attention's rows reach the attention block's output
    projection as their codes alone (no fp32 rows), and the embeddings are the bits of the fp32 rows handed over."""
    from coulisse.models.bert import Attention

    pipe = pipeline("feature-extraction", model=str(minilm_dir), quantize="int8")
    blocks = [m for m in pipe.model.modules() if isinstance(m, Attention)]
    assert blocks and all(m.self.kernel_gives_codes for m in blocks)
    handed = []
    add_norm = Q.Int8Linear.forward_add_norm

    def spy(self, x, *rest):
        if any(self is block.output.dense for block in blocks):
            handed.append(isinstance(x, Q.Codes))
        return add_norm(self, x, *rest)

    monkeypatch.setattr(Q.Int8Linear, "forward_add_norm", spy)
    texts = ["Un film magnifique, porté par des acteurs justes et une mise en scène d'une rare élégance.",
             "Je me suis ennuyé du début à la fin : scénario creux, dialogues plats, rien à sauver."] * 4
    alone = pipe(texts)
    assert handed == [True] * len(blocks)  # one batch
    handed.clear()
    for m in blocks:
        m.self.kernel_gives_codes = False
    assert pipe(texts) == alone
    assert handed == [False] * len(blocks)


# ---------------------------------------------------------------- a relative bias on the scores (MPNet)

REL_LENGTHS = [1, 7, 8, 15, 16, 17, 33, 130, 200]
REL_TABLES = {"per-head": {}, "shared": {"shared": True}, "band": {"band": 5}}


@pytest.mark.parametrize("table", list(REL_TABLES))
@pytest.mark.parametrize("hidden,heads", SHAPES, ids=[f"d{h // n}" for h, n in SHAPES])
@pytest.mark.parametrize("first_only", [False, True], ids=["all", "first-only"])
def test_a_relative_bias_matches_float64_within_the_fp32_bound(hidden, heads, first_only, table):
    """Each head's bias by offset (MPNet), one row shared by the heads, and a band of -inf outside a window, in a
    table wider than the batch needs (its middle column is offset 0, whatever the longest sequence): within the
    float64 bound of `reference`. Without the bias, the outputs move far past it."""
    qkv, p = packed(REL_LENGTHS, hidden, seed=31)
    rel = rel_table(heads, 205, 32, **REL_TABLES[table])
    out = c_attention(qkv, p, heads, first_only, rel=rel)
    expected, bound = reference(qkv, p, heads, first_only, rel)
    err = (out.double() - expected).abs()
    assert (err <= bound).all(), f"max error {err.max():.2e}, where the bound was {bound[err > bound].min():.2e}"
    unbiased = (c_attention(qkv, p, heads, first_only).double() - expected).abs()
    assert (unbiased > bound).any()


def test_a_relative_bias_reads_the_offset_of_key_from_query():
    """One head, values one-hot by key: the output is each query's probabilities. A bias of +30 at one offset only
    puts (nearly) all of a query's weight on the key at that offset from it, wherever that key is in range."""
    n = 24
    qkv = torch.cat([torch.zeros(n, 2 * n), torch.eye(n)], 1)  # q = k = 0: every score is its bias
    p = Packed.from_lists([[0] * n], None, 0)
    for offset in (-3, 0, 5):
        rel = torch.zeros(1, 2 * n - 1)
        rel[0, n - 1 + offset] = 30.0
        out = c_attention(qkv, p, 1, rel=rel)
        for i in range(n):
            j = i + offset
            if 0 <= j < n:
                assert out[i].argmax() == j and out[i, j] > 0.999, (offset, i)
            else:  # the offset falls outside the sequence: every key weighs the same
                assert torch.allclose(out[i], torch.full((n,), 1 / n)), (offset, i)


@needs_bf16_dot
@pytest.mark.parametrize("table", ["per-head", "band"])
@pytest.mark.parametrize("first_only", [False, True], ids=["all", "first-only"])
def test_a_relative_bias_with_bf16_products_within_the_bound(first_only, table):
    """The bf16-product unit (on AMX tiles where the CPU has them: raw products there, the bias divided by the scale
    they are multiplied by) within `reference_bf16`'s bound with the bias."""
    qkv, p = packed([1, 2, 15, 16, 17, 31, 32, 33, 63, 130, 201], 768, seed=33)
    rel = rel_table(12, 201, 34, **REL_TABLES[table])
    out = bf16_attention(qkv, p, 12, first_only, rel=rel)
    expected, bound = reference_bf16(qkv, p, 12, first_only, rel)
    err = (out.double() - expected).abs()
    assert (err <= bound).all(), f"max error {err.max():.2e}, bound there {bound[err > bound].min():.2e}"


@pytest.mark.parametrize("bf16", [False, True], ids=["fp32", "bf16"])
def test_a_relative_bias_keeps_the_bits_across_threads_first_only_and_codes(bf16):
    """With a bias as without: one thread or three give the same bits; `first_only` gives the full run's first rows;
    `codes` are quantize_rows' of the output, whole sequences or heads as the units."""
    if bf16 and not Q.kernels().has_bf16_dot():
        pytest.skip("this CPU does not multiply bf16 pairs (no AVX512-BF16)")
    run = fastpath.c_packed_attention_bf16 if bf16 else fastpath.c_packed_attention
    for lengths in CODES_BATCHES.values():
        qkv, p = packed(lengths, 768, seed=35)
        rel = rel_table(12, max(lengths), 36)
        results = at_thread_counts(lambda: run(qkv, p, 12, False, rel=rel))  # noqa: B023
        assert torch.equal(results[0], results[1]) and torch.equal(results[0], results[2])
        assert torch.equal(run(qkv, p, 12, True, rel=rel), results[0][p.starts])
        codes = run(qkv, p, 12, False, codes=True, rel=rel)
        expected = Q.quantize_rows(results[0])
        assert torch.equal(codes.q, expected[0]) and torch.equal(codes.scale, expected[1])


def test_a_relative_bias_it_cannot_read_is_refused_or_left_to_sdpa():
    """Too narrow for the longest sequence, or rows that are neither one nor one a head: a ValueError from the
    kernel (a caller's bug). Another dtype, a strided view, a table that needs gradients: None (SDPA's turn)."""
    qkv, p = packed([4, 9], 96)
    with pytest.raises(ValueError, match="relative bias"):
        fastpath.c_packed_attention(qkv, p, 4, False, rel=torch.zeros(4, 2 * 8 - 1))
    with pytest.raises(ValueError, match="relative bias"):
        fastpath.c_packed_attention(qkv, p, 4, False, rel=torch.zeros(2, 2 * 9 - 1))
    assert fastpath.c_packed_attention(qkv, p, 4, False, rel=torch.zeros(4, 17, dtype=torch.float64)) is None
    assert fastpath.c_packed_attention(qkv, p, 4, False, rel=torch.zeros(4, 34)[:, ::2]) is None
    assert fastpath.c_packed_attention(qkv, p, 4, False, rel=torch.zeros(4, 17, requires_grad=True)) is None


@pytest.mark.parametrize("bf16", [False, True], ids=["fp32", "bf16"])
@pytest.mark.parametrize("hidden,heads", [(64, 1), (24, 1), (12, 1)], ids=["d64", "d24", "d12"])
def test_a_key_a_band_leaves_out_weighs_exactly_zero(bf16, hidden, heads):
    """Values one-hot by key: each output row is its query's probabilities. Keys outside a window of 3 (a -inf bias)
    get exactly 0, not the 2^-126 that the base-2 exponentials stop at (products with it are subnormal, which Intel
    cores compute ~100x slower); the keys inside sum to 1. Head widths 64, 24 and 12 take the AVX-512, AVX2 and scalar
    units where the CPU has them; bf16: the bf16-product unit (AMX tiles where present; 32 divides 64 only)."""
    if bf16 and not (Q.kernels().has_bf16_dot() and hidden % 32 == 0):
        pytest.skip("bf16 products need AVX512-BF16 and a head width that 32 divides")
    n = hidden
    torch.manual_seed(37)
    qkv = torch.cat([torch.randn(n, 2 * hidden), torch.eye(n)], 1)
    p = Packed.from_lists([[0] * n], None, 0)
    rel = rel_table(1, n, 0, band=3)
    out = (bf16_attention if bf16 else c_attention)(qkv, p, 1, rel=rel)
    at = torch.arange(n)
    outside = (at[:, None] - at[None, :]).abs() > 3
    assert (out[outside] == 0).all()
    assert torch.allclose(out.sum(1), torch.ones(n), atol=1e-2 if bf16 else 1e-5)


# ---------------------------------------------------------------- a band's keys outside every window are skipped

BAND_LENGTHS = [1, 7, 40, 129, 300, 517]  # one block of queries to dozens, windows inside and past the sequence


def band_checks(hidden: int, heads: int, bf16: bool) -> None:
    """The two claims of a unit that skips the keys a band leaves out (key_range in _attention.c), for one head width
    on whichever unit this process runs (`bf16`: the bf16-product one):
    - the same bits as the unit computing every key: a table of -1e30 where the band has -inf leaves no offset out
      (every key is computed, and weighs exactly 0 there as with -inf), at 1 and 2 threads, all queries and
      first-only, with its codes;
    - keys are skipped: NaN keys and values at both ends of a 600-token sequence reach the queries whose window holds
      them, and no query farther than a block of queries and a vector of keys (100 tokens) from them, whose rows are
      those of a run with finite values there. Computing every key, every row would be NaN (NaN scores)."""
    run = fastpath.c_packed_attention_bf16 if bf16 else fastpath.c_packed_attention
    qkv, p = packed(BAND_LENGTHS, hidden, seed=41)
    band = rel_table(heads, 520, 0, band=20)
    every = band.nan_to_num(neginf=-1e30)
    for first_only in (False, True):
        skipped = at_thread_counts(lambda: run(qkv, p, heads, first_only, rel=band), (1, 2))  # noqa: B023
        computed = run(qkv, p, heads, first_only, rel=every)
        assert torch.equal(skipped[0], computed) and torch.equal(skipped[1], computed), (hidden, first_only)
    codes, codes_every = (run(qkv, p, heads, False, codes=True, rel=table) for table in (band, every))
    assert torch.equal(codes.q, codes_every.q) and torch.equal(codes.scale, codes_every.scale)
    n, window = 600, 8
    qkv, p = packed([n], hidden, seed=42)
    clean = run(qkv, p, heads, False, rel=rel_table(heads, n, 0, band=window))
    qkv[[0, n - 1], hidden:] = float("nan")  # keys and values of the first and last token
    out = run(qkv, p, heads, False, rel=rel_table(heads, n, 0, band=window))
    assert out[:window + 1].isnan().all() and out[n - 1 - window:].isnan().all()
    assert torch.equal(out[100:n - 100], clean[100:n - 100])


BAND_SHAPES = [(768, 12), (96, 4), (60, 5)]  # head widths 64, 24 (AVX2 only), 12 (scalar only)


@pytest.mark.parametrize("hidden,heads", BAND_SHAPES, ids=[f"d{h // n}" for h, n in BAND_SHAPES])
def test_a_band_skips_the_keys_outside_its_windows_without_changing_a_bit(hidden, heads):
    """The fp32 units this CPU runs (AVX-512 for 64, AVX2 for 24, scalar for 12): `band_checks`."""
    band_checks(hidden, heads, bf16=False)


@needs_bf16_dot
def test_a_band_skips_keys_with_bf16_products_without_changing_a_bit():
    """The bf16-product unit (AMX tiles where the CPU has them): `band_checks`."""
    band_checks(768, 12, bf16=True)


BAND_SCRIPT = """
import sys
sys.path.insert(0, sys.argv[1])
from test_attention_kernel import band_checks
band_checks(768, 12, bf16=sys.argv[2] == "bf16")
"""


@pytest.mark.parametrize("cap", ["avx2", "scalar", "no-amx"])
def test_a_band_skips_keys_in_the_units_this_cpu_does_not_pick(cap):
    """A head width of 64 on the units a capped process runs (read once per process: a child each): AVX2 and scalar
    (COULISSE_INT8_ISA), and the AVX512-BF16 unit where AMX would take the bf16 products (COULISSE_ATTENTION_AMX=0)."""
    env = {**os.environ, **({"COULISSE_ATTENTION_AMX": "0"} if cap == "no-amx" else {"COULISSE_INT8_ISA": cap})}
    if cap == "no-amx" and not Q.kernels().has_bf16_dot():
        pytest.skip("this CPU does not multiply bf16 pairs (no AVX512-BF16)")
    subprocess.run([sys.executable, "-c", BAND_SCRIPT, os.path.dirname(__file__), "bf16" if cap == "no-amx" else ""],
                   env=env, check=True)


LONG_SHAPES = [(768, 12), (96, 4)]  # head widths 64 (AVX-512 where present, else AVX2) and 24 (AVX2 only)


@pytest.mark.parametrize("hidden,heads", LONG_SHAPES, ids=[f"d{h // n}" for h, n in LONG_SHAPES])
@pytest.mark.parametrize("table", [None, "band"], ids=["global", "band"])
def test_long_sequences_within_the_fp32_bound(hidden, heads, table):
    """Sequences past the lengths where the AVX-512 unit takes its queries by superblocks of 64 and its keys by chunks
    of 512 (600: one chunk and a part; 1,100: three, its last superblock partial), with the values copied out of the
    packed rows (from 256 tokens on): within the float64 bound of `reference`, all queries and first-only; a band's
    keys skipped by blocks of queries too."""
    qkv, p = packed([600, 37, 1100], hidden, seed=43)
    rel = rel_table(heads, 1100, 0, band=70) if table else None
    for first_only in (False, True):
        out = c_attention(qkv, p, heads, first_only, rel=rel)
        expected, bound = reference(qkv, p, heads, first_only, rel)
        err = (out.double() - expected).abs()
        assert (err <= bound).all(), f"max error {err.max():.2e}, where the bound was {bound[err > bound].min():.2e}"

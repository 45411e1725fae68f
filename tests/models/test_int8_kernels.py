"""The fused C kernels around the int8 GEMM (src/coulisse/models/_int8.c) against the PyTorch ops they replace."""

from __future__ import annotations

import importlib.util
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from coulisse import pipeline
from coulisse.models import native
from coulisse.models import quantize as Q
from coulisse.models.swap import identity


@pytest.fixture
def no_kernels(monkeypatch):
    """Run the PyTorch fallback, as on an install built without a C compiler."""
    monkeypatch.setattr(native, "_KERNELS", False)


@pytest.fixture(params=[1, 2], ids=["1-thread", "2-threads"])
def threads(request):
    previous = torch.get_num_threads()
    torch.set_num_threads(request.param)
    yield request.param
    torch.set_num_threads(previous)


def fallback(fn, *args):
    saved, native._KERNELS = native._KERNELS, False
    try:
        return fn(*args)
    finally:
        native._KERNELS = saved


def test_kernels_are_built_where_a_compiler_exists():
    """The install compiles them (setup.py); without this, the tests below would silently skip."""
    if shutil.which("cc") is None and shutil.which("gcc") is None:
        pytest.skip("no C compiler on this machine")
    assert Q.kernels() is not None, "coulisse.models._int8 was not built: run `pip install -e .` again"


def test_rows_run_on_torchs_own_openmp_runtime():
    """Built with OpenMP (setup.py, where the compiler has it), the kernels split rows over the OpenMP team
    that runs PyTorch's GEMMs: one `libgomp.so.1` in the process, PyTorch's (the module links that soname;
    wheels such as sentencepiece's carry renamed copies, `libgomp-<hash>.so.1`, which nothing else binds to).
    A second runtime would bring a second team of threads spinning against the first on a 2-core machine."""
    k = Q.kernels()
    if k is None or k.threading() != "openmp":
        pytest.skip("the kernels were built without OpenMP (POSIX threads)")
    with open("/proc/self/maps", encoding="utf-8") as maps:
        runtimes = {line.split()[-1] for line in maps if line.rstrip().rsplit("/", 1)[-1].startswith("libgomp.so")}
    assert len(runtimes) == 1, runtimes
    assert runtimes.pop().startswith(str(Path(torch.__file__).parent)), "libgomp should be PyTorch's copy"


def test_posix_threads_give_the_same_bits(tmp_path):
    """COULISSE_INT8_THREADS=posix (the build without OpenMP, and the A/B switch) splits the rows the same
    way: codes, scales and outputs equal to the bit, in a process of its own (the choice is read once)."""
    k = Q.kernels()
    if k is None:
        pytest.skip("no C kernels")
    script = """
import sys, torch
from coulisse.models.native import dequantize_rows, kernels
from coulisse.models.quantize import quantize_rows
torch.set_num_threads(2); torch.manual_seed(0)
x = torch.randn(300, 768) * 3; y = torch.randn(300, 3072) * 50
q, s = quantize_rows(x); d = dequantize_rows(y.clone(), s, torch.randn(3072), True)
torch.save({"q": q, "s": s, "d": d, "threading": kernels().threading()}, sys.argv[1])
"""
    results = {}
    for choice in ("default", "posix"):
        env = {**os.environ, "COULISSE_INT8_THREADS": choice}
        subprocess.run([sys.executable, "-c", script, str(tmp_path / choice)], env=env, check=True)
        results[choice] = torch.load(tmp_path / choice)
    assert results["posix"]["threading"] == "posix"
    for key in ("q", "s", "d"):
        assert torch.equal(results["default"][key], results["posix"][key]), key


@pytest.mark.parametrize("rows", [3, 100], ids=["fbgemm-rows", "onednn-rows"])
def test_a_nan_in_a_row_reaches_that_row_only(rows):
    """A NaN in a token's activations (a broken checkpoint, an fp16 overflow upstream) makes that token's
    scale NaN, as the PyTorch fallback's amax does, so its outputs come out NaN, as fp32's would (the
    server's /predict and the embedding jobs refuse non-finite results), rather than finite values
    computed as if the element were not there. The other tokens are untouched: per-token scales and
    exact int32 sums make their outputs the same bits as without it."""
    if Q.kernels() is None:
        pytest.skip("no C kernels")
    torch.manual_seed(rows)
    x = torch.randn(4, 771)
    x[0, 5], x[1, 770] = float("nan"), float("nan")  # in a vector, and in the scalar tail
    _, scale = Q.quantize_rows(x)
    _, expected = fallback(Q.quantize_rows, x)
    assert scale[:2].isnan().all() and expected[:2].isnan().all()
    assert torch.equal(scale[2:], expected[2:])

    linear = nn.Linear(768, 3072)
    layer = Q.Int8Linear(linear, 127, gelu=True, codes=Q.quantize_weight(linear.weight, 127), small_rows=64)
    clean = torch.randn(rows, 768)
    poisoned = clean.clone()
    poisoned[1, 7] = float("nan")
    for _ in range(4):  # fbgemm packs its weights once a layer has seen a few small batches
        out, reference = layer(poisoned), layer(clean)
    assert out[1].isnan().all()
    others = [0, *range(2, rows)]
    assert torch.equal(out[others], reference[others])


ISA_SCRIPT = """
import sys, torch
from coulisse.models.native import add_norm_rows, dequantize_rows, kernels
from coulisse.models.quantize import quantize_rows
torch.set_num_threads(2); torch.manual_seed(0)
x = torch.randn(300, 771) * 3; x[1] = 0; x[3, :7] = torch.tensor([0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 127.0])
x[4, 9] = x[5, 770] = float("nan")
y = torch.randn(300, 3101) * 4; s = torch.rand(300) + 0.5; b = torch.randn(3101)  # 96 x 32 + 16 + 8 + 5 columns
r = torch.randn(300, 771); n = torch.randn(300, 771) * 30; norm = torch.nn.LayerNorm(771)
with torch.no_grad():
    norm.weight.normal_(); norm.bias.normal_()
q, qs = quantize_rows(x)
torch.save({"isa": kernels().isa(), "q": q, "s": qs, "d": dequantize_rows(y.clone(), s[:, None], b, False),
            "gelu": dequantize_rows(y.clone(), s[:, None], b, True),
            "norm": add_norm_rows(n.clone(), s[:, None], torch.randn(771), r, norm)}, sys.argv[1])
"""


def test_each_instruction_set_gives_the_same_bits(tmp_path):
    """COULISSE_INT8_ISA caps the kernels' instruction set (scalar, AVX2, AVX-512: whatever this CPU has),
    each in a process of its own (read once). Quantize and the plain dequantize are elementwise IEEE
    arithmetic (division, FMA, round half to even): the same bits on every path. GELU's vector paths share
    one table and order of operations, so AVX-512 must give AVX2's bits wherever both run vectors (the scalar tail
    uses libm's erff instead; its bound is tested above). add_norm sums a row in 8 or 16 partial sums: the
    outputs then differ by the rounding of the mean and variance only, a few ulp of the normalized values
    (|z| <= sqrt(771) here).
    Every path gives a row holding a NaN a NaN scale."""
    k = Q.kernels()
    if k is None:
        pytest.skip("no C kernels")
    results = {}
    for isa in ("scalar", "avx2", "avx512"):
        env = {**os.environ, "COULISSE_INT8_ISA": isa}
        subprocess.run([sys.executable, "-c", ISA_SCRIPT, str(tmp_path / isa)], env=env, check=True)
        results[isa] = torch.load(tmp_path / isa)
    ran = {isa: r["isa"] for isa, r in results.items()}
    best = ran["avx512"]  # the highest cap is no cap: the CPU's own level (this process may run capped)
    assert ran["scalar"] == "scalar"
    assert ran[best] == best, "a cap at the CPU's own level must run that level"
    if best == "avx512":
        assert ran["avx2"] == "avx2"
    paths = {results[isa]["isa"]: results[isa] for isa in results}  # distinct paths this CPU ran
    assert len(paths) == {"scalar": 1, "avx2": 2, "avx512": 3}[best]
    first = paths["scalar"]
    for name, r in paths.items():
        assert r["s"][4:6].isnan().all(), name  # rows 4 and 5 hold a NaN: their codes are meaningless
        keep = [i for i in range(300) if i not in (4, 5)]
        assert torch.equal(r["q"][keep], first["q"][keep]), name
        assert torch.equal(r["s"][keep], first["s"][keep]), name
        assert torch.equal(r["d"], first["d"]), name
    if "avx512" in paths:
        a, b = paths["avx512"]["gelu"], paths["avx2"]["gelu"]
        vector = 3088  # columns both compute 16 or 8 lanes at a time; AVX2 takes 8 more, AVX-512 leaves 13
        assert torch.equal(a[:, :vector], b[:, :vector])
        # past them, one side's libm erff against the other's table (each within ~1e-7 |v|)
        assert torch.allclose(a[:, vector:], b[:, vector:], rtol=1e-6, atol=1e-5)
        assert not torch.equal(a[:, vector:], b[:, vector:]), "the test should cover both tails"
        a, b = paths["avx512"]["norm"], paths["avx2"]["norm"]
        assert not torch.equal(a, torch.zeros_like(a))
        # |Δz| <= |z| · few ulp from rstd plus rstd · few ulp·|mean| from the mean: 1e-5 absolute on z and
        # beta of order 1, with |gamma| of order 1 here, is ~100 ulp of margin, far below a wrong sum.
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-4), (a - b).abs().max()


CODES_SCRIPT = """
import sys, torch
from coulisse.models.native import CODES, add_norm_rows, dequantize_rows, kernels
from coulisse.models.quantize import quantize_rows
torch.set_num_threads(2); torch.manual_seed(1)
y = torch.randn(300, 3101) * 4; s = torch.rand(300, 1) + 0.5; b = torch.randn(3101)
y[7, 12] = float("nan"); y[8, 20] = float("inf")
n = torch.randn(300, 771) * 30; r = torch.randn(300, 771); nb = torch.randn(771); norm = torch.nn.LayerNorm(771)
with torch.no_grad():
    norm.weight.normal_(); norm.bias.normal_()
out = {"isa": kernels().isa()}
for name, result in (("gelu", dequantize_rows(y.clone(), s, b, True, codes=True)),
                     ("plain", dequantize_rows(y.clone(), s, b, False, codes=True)),
                     ("norm", add_norm_rows(n.clone(), s, nb, r, norm, codes=True))):
    out[name] = (getattr(result, CODES), quantize_rows(result))  # made in the pass; made again from its floats
torch.save(out, sys.argv[1])
"""


def test_codes_made_in_a_pass_equal_quantizing_its_output(tmp_path):
    """The GELU and add + LayerNorm passes can quantize their finished rows for the next int8 layer
    (models/quantize.py, "codes"): on every instruction-set level, those codes and scales are the ones
    quantize_rows gives for the pass's output floats, to the bit — the next layer computes exactly what it
    would have. A row holding a NaN gets a NaN scale either way; a row holding +inf an infinite one (the
    passes track max |y| as integer bits, where a NaN's exceed infinity's: an infinity is no NaN)."""
    if Q.kernels() is None:
        pytest.skip("no C kernels")
    for isa in ("scalar", "avx2", "avx512"):
        env = {**os.environ, "COULISSE_INT8_ISA": isa}
        subprocess.run([sys.executable, "-c", CODES_SCRIPT, str(tmp_path / isa)], env=env, check=True)
        result = torch.load(tmp_path / isa)
        for name in ("gelu", "plain", "norm"):
            (q, scale), (q_again, scale_again) = result[name]
            torch.testing.assert_close(scale, scale_again, rtol=0, atol=0, equal_nan=True)
            clean = ~scale[:, 0].isnan()
            assert torch.equal(q[clean], q_again[clean]), (isa, name)
            assert clean.sum() == (299 if name != "norm" else 300), (isa, name)
            if name != "norm":
                assert scale[8, 0] == float("inf"), (isa, name)


def activations(rows: int, cols: int) -> torch.Tensor:
    torch.manual_seed(cols)
    x = torch.randn(rows, cols) * 2
    x[1] = 0.0  # an all-zero token: scale clamps, codes are the zero point
    x[2, 0] = 300.0  # an outlier token
    # Exact halves after scaling (row max 127 -> scale 1): round half to even, as torch.round does.
    x[3] = torch.tensor([0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 127.0] * cols)[:cols]
    return x


@pytest.mark.parametrize("cols", [5, 8, 33, 768, 771])  # tails shorter than a vector, and not
def test_quantize_rows_equals_torch_ops(cols, threads):
    kernels = Q.kernels()
    if kernels is None:
        pytest.skip("C kernels not built")
    x = activations(70, cols)
    q, scale = Q.quantize_rows(x)
    q_ref, scale_ref = fallback(Q.quantize_rows, x)
    assert q.dtype == torch.uint8 and q.shape == x.shape and scale.shape == (70, 1)
    assert torch.equal(scale, scale_ref)
    assert torch.equal(q, q_ref)
    assert (q[1] == 128).all()
    if cols >= 7:
        assert q[3, :6].tolist() == [128, 130, 130, 128, 126, 126]  # half to even, then + 128


def test_quantize_codes_equal_the_divisions_near_every_half_integer(threads):
    """The AVX-512 kernel divides by the row's scale without vdivps (x · RN(1/s), corrected by one FMA residual:
    Markstein's theorem gives RN(x / s) itself). Values a few ulps around (k + 1/2) · s for every k, over scales
    spanning 2^-40 .. 2^20: the codes torch's division gives, every one (x · RN(1/s) alone misses ~1.5 % here,
    as bench checks in C showed on 128M such quotients)."""
    if Q.kernels() is None:
        pytest.skip("C kernels not built")
    g = torch.Generator().manual_seed(21)
    rows, cols = 512, 768
    m = torch.ldexp(1 + torch.rand(rows, 1, generator=g), torch.randint(-40, 20, (rows, 1), generator=g))
    s = m / 127
    k = torch.randint(-127, 127, (rows, cols), generator=g).float()
    x = ((k + 0.5) * s).view(torch.int32)
    x = (x + torch.randint(-4, 5, x.shape, generator=g, dtype=torch.int32)).view(torch.float32)
    x = torch.where(x.abs() <= m, x, x * 0.5)
    x[:, 0] = m[:, 0]  # the row's maximum sets the scale s = m / 127
    q, scale = Q.quantize_rows(x)
    q_ref, scale_ref = fallback(Q.quantize_rows, x)
    assert torch.equal(scale, scale_ref)
    assert torch.equal(q, q_ref), (q != q_ref).sum()


U = 2.0**-24  # unit roundoff of float32


def exact_dequantize(acc: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor, gelu: bool):
    """`acc · scale + bias` (then GELU) in float64 with libm's erf: the same reference on every CPU.

    PyTorch's own float32 GELU is no reference: its vectorized erf differs between its AVX2 and AVX-512
    builds (on an AVX-512 machine it was 1.1e-6 away from ours at v = -3.47, where both are within their
    own bounds of the true value).
    """
    v = (acc.double() * scale.double() + bias.double()).numpy()
    if not gelu:
        return v, v
    erf = np.vectorize(math.erf, otypes=[np.float64])(v / math.sqrt(2))
    return v, 0.5 * v * (1 + erf)


# The vector paths' GELU (the table in _kernels.h): |error| <= 8.7e-8 |v|, the final rounding included, over every
# fp32 input, as bench/gelu_table.py computes it from the table and the kernels' order of operations (fp32 FMAs
# emulated in float64, erf in float64). A coefficient of t off by 1e-6, or A&S's erf (the kernels before session
# 18), exceeds it somewhere on the grid of test_gelu_kernel_over_the_whole_range.
GELU_VECTOR_ERROR = 8.7e-8


def vector_columns(cols: int) -> int:
    """The leading columns the dequantize pass computes in vectors (16 or 8 lanes); the rest are its scalar tail."""
    lanes = {"avx512": 16, "avx2": 8}.get(Q.kernels().isa())
    return cols - cols % lanes if lanes else 0


def error_bound(acc, scale, bias, v: np.ndarray, exact: np.ndarray, gelu: bool) -> np.ndarray:
    """What float32 arithmetic and GELU's approximations may add, element by element.

    - `acc · s + b` in float32 (one multiply and one add, or one FMA): at most 2u(|acc·s| + |b|);
      GELU's slope is at most 1.13, so GELU carries that at most 1.13 times.
    - Vector columns: GELU_VECTOR_ERROR |v| (the table's polynomial, its fp32 evaluation and rounding).
    - The scalar tail (libm's erff, a few ulp): erf within 1.5e-7 + u, plus `1 - |erf|` times (1e-7 + 8u) near
      the tails, times |v|/2; then `0.5 · v · (1 + erf)`: the add is exact near erf = -1 (Sterbenz) and within
      u elsewhere, the two products within u each: 3u|GELU(v)|.
    This holds wherever the kernel runs (AVX-512, AVX2 or scalar path), whatever the CPU.
    """
    linear = 2 * U * ((acc.double() * scale.double()).abs() + bias.double().abs()).numpy()
    if not gelu:
        return linear + 1e-45
    erf_abs = np.abs(2 * np.divide(exact, v, out=np.ones_like(v), where=v != 0) - 1)
    erf_error = 1.5e-7 + (1 - erf_abs) * (1e-7 + 8 * U) + U
    bound = 1.13 * linear + 0.5 * np.abs(v) * erf_error + 3 * U * np.abs(exact) + 1e-45
    vector = vector_columns(v.shape[-1])
    bound[..., :vector] = 1.13 * linear[..., :vector] + GELU_VECTOR_ERROR * np.abs(v[..., :vector]) + 1e-45
    return bound


@pytest.mark.parametrize("cols", [3, 8, 37, 3072])
@pytest.mark.parametrize("gelu", [False, True])
def test_dequantize_rows_within_error_bound(cols, gelu, threads):
    """The kernel against exact arithmetic, within the bound derived in `error_bound` (not one CPU's
    PyTorch): the rows' random values, GELU's saturated tails (±1e4) and zeros."""
    if Q.kernels() is None:
        pytest.skip("C kernels not built")
    torch.manual_seed(cols)
    acc = torch.randn(50, cols) * 40
    acc[0, : min(cols, 3)] = torch.tensor([1e4, -1e4, 0.0])[: min(cols, 3)]  # GELU's saturated tails
    scale = torch.rand(50, 1) * 0.2
    bias = torch.randn(cols)
    out = Q.dequantize_rows(acc.clone(), scale, bias, gelu).double().numpy()
    v, exact = exact_dequantize(acc, scale, bias, gelu)
    excess = np.abs(out - exact) / error_bound(acc, scale, bias, v, exact, gelu)
    assert excess.max() <= 1, f"error {excess.max():.2f}x the bound at {v.flat[excess.argmax()]}"
    # The PyTorch fallback computes the same function; its GELU's error is undocumented and differs per
    # build (oneDNN's or ATen's vectorized erf), so this only tells the exact erf form (within ~1e-6 here)
    # from a wrong formula: GELU's tanh form is up to 5e-4 away, a missing bias or scale far more.
    fallback_out = fallback(Q.dequantize_rows, acc.clone(), scale, bias, gelu).double().numpy()
    assert (np.abs(fallback_out - exact) / np.maximum(1, np.abs(exact))).max() < 1e-5


def test_gelu_kernel_over_the_whole_range():
    """GELU on a dense grid over [-12, 12], where erf goes from its linear part to its tails, the table's intervals
    meet (every 0.8) and its saturation starts (5.6): within the bound everywhere."""
    if Q.kernels() is None:
        pytest.skip("C kernels not built")
    acc = torch.linspace(-12, 12, 48_001)[None]
    scale, bias = torch.ones(1, 1), torch.zeros(acc.shape[1])
    out = Q.dequantize_rows(acc.clone(), scale, bias, True).double().numpy()
    v, exact = exact_dequantize(acc, scale, bias, True)
    assert (np.abs(out - exact) / error_bound(acc, scale, bias, v, exact, True)).max() <= 1


def test_dequantize_works_in_place():
    if Q.kernels() is None:
        pytest.skip("C kernels not built")
    acc = torch.ones(4, 16)
    out = Q.dequantize_rows(acc, torch.full((4, 1), 2.0), torch.arange(16.0), False)
    assert out.data_ptr() == acc.data_ptr()
    assert torch.equal(out, (2 + torch.arange(16.0)).expand(4, 16))


def test_int8_linear_with_fused_gelu_matches_unfused():
    torch.manual_seed(0)
    linear = nn.Linear(64, 96)
    x = torch.randn(40, 64)
    fused, plain = Q.Int8Linear(linear, 63, gelu=True), Q.Int8Linear(linear, 63)
    with torch.inference_mode():
        assert (fused(x) - F.gelu(plain(x))).abs().max() < 1e-5
        assert (fused(x) - F.gelu(linear(x))).abs().max() < 0.05 * F.gelu(linear(x)).abs().max()


def test_quantized_model_fuses_the_feed_forward_gelu(tf_camembert_dir):
    pipe = pipeline("sentiment-analysis", model=str(tf_camembert_dir), quantize="int8")
    for layer in pipe.model.base.encoder.layer:
        assert layer.intermediate.dense.gelu
        assert layer.intermediate.act is identity
        assert not layer.output.dense.gelu and not layer.attention.self.qkv.gelu


def test_pipeline_same_answers_with_and_without_kernels(tf_camembert_dir, no_kernels):
    """End to end, the C path and the PyTorch path compute the same int8 arithmetic."""
    if importlib.util.find_spec("coulisse.models._int8") is None:
        pytest.skip("C kernels not built")
    texts = ["Un film magnifique.", "Je déteste tellement ça !", "Bof.",
             "Le scénario est creux et la mise en scène paresseuse, on s'ennuie ferme pendant deux heures. " * 3]
    pipe = pipeline("sentiment-analysis", model=str(tf_camembert_dir), quantize="int8")
    items = pipe.preprocess(texts)
    slow = np.array(pipe.forward(items))  # no_kernels: PyTorch ops
    native._KERNELS = None  # look the kernels up again
    assert Q.kernels() is not None
    fast = np.array(pipe.forward(items))
    assert np.abs(fast - slow).max() < 1e-4 * max(1.0, np.abs(slow).max())


needs_int8_dot = pytest.mark.skipif(not getattr(Q.kernels(), "has_int8_dot", lambda: False)(),
                                    reason="this CPU does not multiply bytes into int32 (no AVX512-VNNI)")


def onednn_gemm(xq: torch.Tensor, q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    packed = torch.ops.onednn.qlinear_prepack(q, None)
    zeros = torch.zeros(len(q), dtype=torch.long)
    return torch.ops.onednn.qlinear_pointwise(xq, 1.0, Q.ZERO_POINT, packed, scale, zeros, None, 1.0, 0, torch.float32,
                                              "none", [], "")


def assert_near_onednn(out: torch.Tensor, xq: torch.Tensor, q: torch.Tensor, scale: torch.Tensor, where) -> None:
    """oneDNN's output for the same codes, within its own rounding. Its VNNI kernels keep the sum in int32 and
    round once (equal to ours to the bit on a Zen 4); its AMX kernel (brgemm) splits long sums (k = 3,072) and
    subtracts the zero point's share (128 · Σw) in fp32, so each of those few terms is rounded once: the error is
    at most a couple of fp32 ulps of the terms' magnitudes, scale · (|Σ x·w| + 128 · |Σ w|). Measured on a
    Sapphire Rapids-class Xeon: ≤ 0.18 of one such ulp; allowed: 2."""
    oracle = onednn_gemm(xq, q, scale)
    terms = (xq.double() @ q.double().T).abs() + Q.ZERO_POINT * q.double().sum(1).abs()
    bound = 2 * torch.finfo(torch.float32).eps * scale.double() * terms
    excess = ((out.double() - oracle.double()).abs() - bound).max().item()
    assert excess <= 0, (where, excess)


@needs_int8_dot
@pytest.mark.parametrize("k, n", [(4, 16), (96, 48), (768, 2304), (3072, 768)])
def test_few_row_kernel_gives_onednns_bits(k, n):
    """sum(x8 · w) · w_scale with exact int32 sums, for every row count around its groups of 8 rows, an odd
    number of 16-column blocks (48: a pair and a single), and the extreme codes (activations 0 and 255,
    weights ±127) that would overflow 16-bit sums: to the bit, the exact integer sums rounded to fp32 once
    and times the scale (the kernel's arithmetic, the same on every CPU); and oneDNN's output within its own
    rounding (equal to the bit on a Zen 4; AMX's kernel rounds partial terms: `assert_near_onednn`)."""
    torch.manual_seed(3)
    q = torch.randint(-127, 128, (n, k), dtype=torch.int8)
    q[0], q[-1] = 127, -127
    scale = torch.rand(n) * 0.01 + 1e-4
    w, colsum, s = Q._small_pack(q, scale)
    for m in (1, 2, 7, 8, 9, 16, 17, 31, 32):
        xq = torch.randint(0, 256, (m, k), dtype=torch.uint8)
        xq[0], xq[-1] = 255, 0
        out = torch.empty(m, n)
        Q.kernels().small_gemm(xq.data_ptr(), w.data_ptr(), colsum.data_ptr(), s.data_ptr(), out.data_ptr(), m, k, n,
                               2)
        exact = ((xq.long() - Q.ZERO_POINT) @ q.long().T).to(torch.int32).float() * scale
        assert torch.equal(out, exact), (m, k, n)
        assert_near_onednn(out, xq, q, scale, (m, k, n))


@needs_int8_dot
def test_few_row_kernel_runs_in_the_layer_and_refuses_what_it_cannot_take():
    """Layers whose shapes fit take it for batches of up to `small_rows` once small batches recur (a few rows
    then give the answers of the same rows in a batch on oneDNN); others keep fbgemm; the C call checks
    shapes."""
    from coulisse.engine.cpu import this_machine

    plan = this_machine().int8  # the plan says what runs: fewer rows where coulisse's GEMM runs on AMX tiles
    amx = plan.options.get("gemm") == "coulisse" and "amx_int8" in this_machine().features.flags
    assert plan.options["small_rows"] == (Q.SMALL_GEMM_ROWS_AMX if amx else Q.SMALL_GEMM_ROWS)
    torch.manual_seed(4)
    layer = Q.Int8Linear(nn.Linear(96, 208), 127, small_rows=Q.SMALL_GEMM_ROWS)
    assert layer.small_kernel == "coulisse"
    assert Q.Int8Linear(nn.Linear(96, 200), 127).small_kernel == ("fbgemm" if Q.fbgemm_available() else None)
    x = torch.randn(5, 96) * 3
    with torch.inference_mode():
        for _ in range(Q.PACK_SMALL_AFTER):
            small = layer(x)
        assert isinstance(layer.packed_small, tuple)
        layer.small_rows = 0
        large = layer(x)
    assert torch.allclose(small, large, rtol=1e-6, atol=1e-6)  # as fbgemm's (equal to the bit on a Zen 4)
    with pytest.raises(ValueError, match="multiple"):
        Q.kernels().small_gemm(0, 0, 0, 0, 0, 1, 6, 16, 1)


def test_fbgemm_takes_our_codes_even_where_its_own_rounding_would_differ():
    """fbgemm quantizes its fp32 input itself, adding the zero point before it rounds: 35.49999237 + 128 is
    a tie in fp32 (163.5), so fed x / s it would take the code 36 where ours is round(35.49999237) = 35. It
    is fed our codes instead (as integers): a few rows on fbgemm and a batch on oneDNN then agree."""
    if not Q.fbgemm_available():
        pytest.skip("no fbgemm in this PyTorch build")
    torch.manual_seed(2)
    layer = Q.Int8Linear(nn.Linear(96, 200), 63)
    x = torch.rand(4, 96)
    x[:, 0] = 127.0  # the row scale max|x| / 127 is then exactly 1: x / s = x
    x[:, 1] = 35.49999237060547  # float32, two steps below 35.5
    assert torch.round(x[0, 1]) == 35 and (x[0, 1] + 128).item() == 163.5
    with torch.inference_mode():
        for _ in range(Q.PACK_SMALL_AFTER):
            small = layer(x)
        assert layer.packed_small is not None
        layer.small_rows = 0
        large = layer(x)  # oneDNN
    assert torch.allclose(small, large, rtol=1e-6, atol=1e-6), (small - large).abs().max()


@pytest.mark.parametrize("gelu", [False, True])
def test_few_rows_on_fbgemm_equal_many_rows_on_onednn(gelu):
    """A short input runs on fbgemm, a batch on oneDNN: same codes, same int32 sums, same answers."""
    torch.manual_seed(1)
    layer = Q.Int8Linear(nn.Linear(96, 200), 63, gelu=gelu)
    if not Q.fbgemm_available():
        pytest.skip("no fbgemm in this PyTorch build")
    x = torch.randn(Q.SMALL_BATCH_ROWS, 96) * 4
    with torch.inference_mode():
        first = [layer(x) for _ in range(Q.PACK_SMALL_AFTER - 1)]  # oneDNN until small batches recur
        assert layer.packed_small is None
        small = layer(x)  # fbgemm
        assert layer.packed_small is not None
        assert all(torch.allclose(small, f, rtol=1e-6, atol=1e-6) for f in first)
        one_by_one = torch.cat([layer(row[None]) for row in x[:5]])  # fbgemm, one row at a time
        layer.small_rows = 0
        large = layer(x)  # oneDNN
    assert torch.allclose(small, large, rtol=1e-6, atol=1e-6)
    assert torch.allclose(one_by_one, large[:5], rtol=1e-6, atol=1e-6)


def own_gemm(xq, packed, m, k, n, threads, op=0, x_scale=None, bias=None, gelu=False, residual=None, norm=None,
             codes=None, rows=None, keep=True):
    """`int8_gemm` on tensors; `codes`: a `(u8 (m, n), scales (m, 1))` pair to fill, or None; `rows`: fp32 rows
    that the kernel quantizes into `xq` and `x_scale` first, or None; without `keep`, no output (None)."""
    w, colsum, s = packed
    out = torch.empty(m, n) if keep else None
    ptr = lambda t: 0 if t is None else t.data_ptr()  # noqa: E731
    Q.kernels().int8_gemm(xq.data_ptr(), w.data_ptr(), colsum.data_ptr(), s.data_ptr(), ptr(out), m, k, n,
                          threads, op, ptr(x_scale), ptr(bias), gelu, ptr(residual),
                          ptr(norm.weight if norm else None), ptr(norm.bias if norm else None),
                          norm.eps if norm else 0.0, ptr(codes[0] if codes else None), ptr(codes[1] if codes else None),
                          ptr(rows))
    return out


@needs_int8_dot
@pytest.mark.parametrize("k, n", [(4, 16), (96, 48), (96, 80), (768, 2304), (3072, 768)])
def test_gemm_gives_the_exact_sums_rounded_once(k, n, threads):
    """coulisse's GEMM for any row count: the exact int32 sums rounded to fp32 once, times the scale, to the
    bit, for row counts around its 8-row tiles and 32-row blocks, column blocks by threes and the rest (80: a
    group of 3 and a pair; 16: one), extreme codes; and oneDNN's output within its rounding
    (`assert_near_onednn`; equal on a Zen 4)."""
    torch.manual_seed(5)
    q = torch.randint(-127, 128, (n, k), dtype=torch.int8)
    q[0], q[-1] = 127, -127
    scale = torch.rand(n) * 0.01 + 1e-4
    packed = Q._small_pack(q, scale)
    for m in (1, 7, 8, 9, 33, 40, 100, 257):
        xq = torch.randint(0, 256, (m, k), dtype=torch.uint8)
        xq[0], xq[-1] = 255, 0
        out = own_gemm(xq, packed, m, k, n, threads)
        exact = ((xq.long() - Q.ZERO_POINT) @ q.long().T).to(torch.int32).float() * scale
        assert torch.equal(out, exact), (m, k, n)
        assert_near_onednn(out, xq, q, scale, (m, k, n))


@needs_int8_dot
@pytest.mark.parametrize("m", [1, 31, 100, 300])
@pytest.mark.parametrize("k", [96, 128], ids=["vnni", "amx-where-present"])
def test_gemm_finishes_its_rows_as_the_separate_passes_do(m, k, threads):
    """Each block of rows finished inside the GEMM call (dequantize + bias [+ GELU], or + residual + LayerNorm,
    with or without the next layer's codes) gives the bits of the same passes run after the GEMM; and so does
    each block quantizing its fp32 rows first, inside the call. k = 128 runs on AMX tiles where the CPU has
    them (k a multiple of 64), 13 column blocks: an odd one after the pairs."""
    torch.manual_seed(6)
    n = 208
    q, scale = Q.quantize_weight(torch.randn(n, k), 127)
    packed = Q._small_pack(q, scale)
    x = torch.randn(m, k) * 3
    xq, x_scale = Q.quantize_rows(x)
    bias, residual = torch.randn(n), torch.randn(m, n)
    norm = nn.LayerNorm(n)
    nn.init.normal_(norm.weight)
    nn.init.normal_(norm.bias)
    product = own_gemm(xq, packed, m, k, n, threads)
    for gelu in (False, True):
        codes = (torch.empty(m, n, dtype=torch.uint8), torch.empty(m, 1))
        out = own_gemm(xq, packed, m, k, n, threads, 1, x_scale, bias, gelu, codes=codes)
        expected = Q.dequantize_rows(product.clone(), x_scale, bias, gelu, codes=True)
        assert torch.equal(out, expected)
        assert all(torch.equal(a, b) for a, b in zip(codes, getattr(expected, Q.CODES), strict=True))
        assert torch.equal(own_gemm(xq, packed, m, k, n, threads, 1, x_scale, bias, gelu), expected)
        # codes only (no output kept: each block's rows in a scratch per thread), the same codes
        alone = (torch.full((m, n), 7, dtype=torch.uint8), torch.zeros(m, 1))
        assert own_gemm(xq, packed, m, k, n, threads, 1, x_scale, bias, gelu, codes=alone, keep=False) is None
        assert all(torch.equal(a, b) for a, b in zip(alone, getattr(expected, Q.CODES), strict=True))
    codes = (torch.empty(m, n, dtype=torch.uint8), torch.empty(m, 1))
    out = own_gemm(xq, packed, m, k, n, threads, 2, x_scale, bias, residual=residual, norm=norm, codes=codes)
    expected = Q.add_norm_rows(product.clone(), x_scale, bias, residual, norm, codes=True)
    assert torch.equal(out, expected)
    assert all(torch.equal(a, b) for a, b in zip(codes, getattr(expected, Q.CODES), strict=True))
    # given the fp32 rows instead of codes, each block quantizes its own first: quantize_rows' codes, same output
    made = (torch.full((m, k), 7, dtype=torch.uint8), torch.zeros(m, 1))
    out = own_gemm(made[0], packed, m, k, n, threads, 2, made[1], bias, residual=residual, norm=norm, rows=x)
    assert torch.equal(made[0], xq) and torch.equal(made[1], x_scale) and torch.equal(out, expected)


@needs_int8_dot
@pytest.mark.parametrize("m", [97, 2113, 4100])
def test_gemm_gives_the_same_bits_whatever_the_thread_count(m):
    """Threads take blocks of rows as they come (on AMX tiles, smaller ones towards the end: `amx_next_rows`), each
    with a scratch of its own where only codes are kept: 1 to 8 threads, more than this machine has cores included,
    give every output, code and scale the same bits, residual + LayerNorm and GELU with codes alone. Blocks long
    enough (k = 3,072) that threads sharing a core overlap: a race is timing-bound, but two threads given one
    scratch failed this in each of three runs on a 2-core machine."""
    torch.manual_seed(13)
    k, n = 3072, 768
    q, scale = Q.quantize_weight(torch.randn(n, k), 127)
    packed = Q._small_pack(q, scale)
    xq, x_scale = Q.quantize_rows(torch.randn(m, k) * 3)
    bias, residual = torch.randn(n), torch.randn(m, n)
    norm = nn.LayerNorm(n)
    nn.init.normal_(norm.weight)
    runs = []
    for threads in (1, 2, 3, 5, 8):
        codes = (torch.empty(m, n, dtype=torch.uint8), torch.empty(m, 1))
        out = own_gemm(xq, packed, m, k, n, threads, 2, x_scale, bias, residual=residual, norm=norm, codes=codes)
        alone = (torch.empty(m, n, dtype=torch.uint8), torch.empty(m, 1))
        own_gemm(xq, packed, m, k, n, threads, 1, x_scale, bias, True, codes=alone, keep=False)
        runs.append((out, *codes, *alone))
    for run in runs[1:]:
        assert all(torch.equal(a, b) for a, b in zip(runs[0], run, strict=True))


@needs_int8_dot
@pytest.mark.parametrize("gelu", [True, False], ids=["gelu", "dequantize"])
def test_codes_only_rows_get_quantize_rows_scale_with_poisoned_and_small_rows(gelu, threads):
    """Codes only, in blocks of rows (m > 96; on AMX tiles where the CPU has them, k = 128), each row's max |output|
    tracked as its columns are made instead of found by a pass of its own: every row's codes and scale are those of
    quantize_rows on the fp32 rows, to the bit, including a row whose scale is NaN (only its own scale is), one whose
    scale is infinite, and rows whose outputs all sit near GELU's minimum (-0.17: their max |output| is a negative
    output's)."""
    torch.manual_seed(11)
    m, k, n = 300, 128, 208
    q, scale = Q.quantize_weight(torch.randn(n, k), 127)
    packed = Q._small_pack(q, scale)
    xq, x_scale = Q.quantize_rows(torch.randn(m, k) * 3)
    x_scale[5], x_scale[6] = float("nan"), float("inf")
    x_scale[200:210] = 0.0  # these rows' outputs are the bias alone
    bias = torch.full((n,), -0.75) + 0.01 * torch.randn(n) if gelu else torch.randn(n)
    product = own_gemm(xq, packed, m, k, n, threads)
    expected = getattr(Q.dequantize_rows(product.clone(), x_scale, bias, gelu, codes=True), Q.CODES)
    alone = (torch.full((m, n), 7, dtype=torch.uint8), torch.zeros(m, 1))
    assert own_gemm(xq, packed, m, k, n, threads, 1, x_scale, bias, gelu, codes=alone, keep=False) is None
    assert torch.equal(alone[0], expected[0])
    assert torch.equal(alone[1].view(torch.int32), expected[1].view(torch.int32))  # NaN scales too, bit for bit
    assert torch.isnan(alone[1][5]).all() and torch.isfinite(alone[1][7:]).all() and torch.isfinite(alone[1][:5]).all()
    if gelu:
        assert (alone[1][200:210] < 0.18 / 127).all()


AMX_SCRIPT = """
import sys, torch
from torch import nn
from coulisse.models import quantize as Q
torch.manual_seed(8)
out = {"amx": Q.kernels().has_amx_int8()}
for k, n in ((768, 2304), (3072, 768), (128, 208)):
    q, scale = Q.quantize_weight(torch.randn(n, k), 127)
    w, colsum, s = Q._small_pack(q, scale)
    norm = nn.LayerNorm(n)
    nn.init.normal_(norm.weight)
    # up to 96 rows the columns split (tails, whole strips); then blocks of up to 8 tiles of 32 rows, smaller towards
    # the end (300, 916, 960 and 2,113 rows: 10, 29, 30 and 67 tiles, the last one row)
    for m in (1, 15, 17, 33, 64, 70, 100, 300, 916, 960, 2113):
        x = torch.randn(m, k) * 3
        xq, x_scale = torch.empty(m, k, dtype=torch.uint8), torch.empty(m, 1)
        bias, residual = torch.randn(n), torch.randn(m, n)
        product = torch.empty(m, n)
        K = Q.kernels()
        K.int8_gemm(xq.data_ptr(), w.data_ptr(), colsum.data_ptr(), s.data_ptr(), product.data_ptr(), m, k, n, 2, 0,
                    x_scale.data_ptr(), 0, False, 0, 0, 0, 0.0, 0, 0, x.data_ptr())
        gelu, codes = torch.empty(m, n), (torch.empty(m, n, dtype=torch.uint8), torch.empty(m, 1))
        K.int8_gemm(xq.data_ptr(), w.data_ptr(), colsum.data_ptr(), s.data_ptr(), gelu.data_ptr(), m, k, n, 2, 1,
                    x_scale.data_ptr(), bias.data_ptr(), True, 0, 0, 0, 0.0, codes[0].data_ptr(), codes[1].data_ptr())
        alone = (torch.empty(m, n, dtype=torch.uint8), torch.empty(m, 1))  # codes only: no output kept
        K.int8_gemm(xq.data_ptr(), w.data_ptr(), colsum.data_ptr(), s.data_ptr(), 0, m, k, n, 2, 1,
                    x_scale.data_ptr(), bias.data_ptr(), True, 0, 0, 0, 0.0, alone[0].data_ptr(), alone[1].data_ptr())
        assert torch.equal(alone[0], codes[0]) and torch.equal(alone[1], codes[1])
        normed = torch.empty(m, n)
        K.int8_gemm(xq.data_ptr(), w.data_ptr(), colsum.data_ptr(), s.data_ptr(), normed.data_ptr(), m, k, n, 2, 2,
                    x_scale.data_ptr(), bias.data_ptr(), False, residual.data_ptr(), norm.weight.data_ptr(),
                    norm.bias.data_ptr(), 1e-5, 0, 0)
        out[(k, n, m)] = (xq, x_scale, product, gelu, *codes, normed)
torch.save(out, sys.argv[1])
"""


def test_amx_tiles_run_where_the_cpu_has_them():
    """int8_gemm's blocks go to AMX-INT8 tiles exactly where /proc/cpuinfo lists amx_int8 (and AVX512-VNNI, the
    kernel's other half): the tile state was granted, nothing silently fell back."""
    k = Q.kernels()
    if k is None or os.environ.get("COULISSE_INT8_AMX") == "0":
        pytest.skip("no C kernels, or AMX turned off for this run")
    from coulisse.engine.cpu import read_flags

    assert k.has_amx_int8() == ("amx_int8" in read_flags() and k.has_int8_dot())


@pytest.mark.skipif(not getattr(Q.kernels(), "has_amx_int8", lambda: False)(),
                    reason="no AMX-INT8 here: int8_gemm's blocks run on AVX512-VNNI only")
def test_amx_blocks_give_the_vnni_blocks_bits(tmp_path):
    """On AMX tiles (this process) and on AVX512-VNNI (COULISSE_INT8_AMX=0, read once per process: a child),
    int8_gemm computes the same exact int32 sums, so every output is the same to the bit: the in-call
    quantization, the product, GELU + codes, residual + LayerNorm; row counts around the 16-row tiles, 32-row
    steps and 128-row blocks, shapes whose weights span several 512 kB chunks; up to 96 rows the tiles split the
    columns between the threads (whole 32-row strips, and a tail from a padded copy: 64 rows have none)."""
    runs = {}
    for name, env in (("amx", {}), ("vnni", {"COULISSE_INT8_AMX": "0"})):
        path = tmp_path / f"{name}.pt"
        subprocess.run([sys.executable, "-c", AMX_SCRIPT, str(path)], env={**os.environ, **env}, check=True)
        runs[name] = torch.load(path)
    assert runs["amx"].pop("amx") is True and runs["vnni"].pop("amx") is False
    assert runs["amx"].keys() == runs["vnni"].keys()
    for key, tensors in runs["amx"].items():
        assert all(torch.equal(a, b) for a, b in zip(tensors, runs["vnni"][key], strict=True)), key


@needs_int8_dot
def test_gemm_refuses_what_it_cannot_take():
    k = Q.kernels()
    with pytest.raises(ValueError, match="multiple of 4"):
        k.int8_gemm(0, 0, 0, 0, 0, 1, 6, 16, 1, 0, 0, 0, False, 0, 0, 0, 0.0, 0, 0)
    with pytest.raises(ValueError, match="op"):  # a finishing pass without its scales
        k.int8_gemm(0, 0, 0, 0, 0, 1, 8, 16, 1, 1, 0, 0, False, 0, 0, 0, 0.0, 0, 0)
    with pytest.raises(ValueError, match="op"):
        k.int8_gemm(0, 0, 0, 0, 0, 1, 8, 16, 1, 3, 1, 1, False, 0, 0, 0, 0.0, 0, 0)
    with pytest.raises(ValueError, match="op"):  # rows to quantize, and nowhere to put their scales
        k.int8_gemm(0, 0, 0, 0, 0, 1, 8, 16, 1, 0, 0, 0, False, 0, 0, 0, 0.0, 0, 0, 1)
    # no output (out 0): only op 1 with codes, which are then all the call keeps
    with pytest.raises(ValueError, match="no output"):
        k.int8_gemm(0, 0, 0, 0, 0, 1, 8, 16, 1, 1, 1, 1, False, 0, 0, 0, 0.0, 0, 0)
    with pytest.raises(ValueError, match="no output"):
        k.int8_gemm(0, 0, 0, 0, 0, 1, 8, 16, 1, 2, 1, 1, False, 1, 1, 1, 1e-5, 1, 1)
    # a bf16 output: only op 1 without codes on AMX tiles (k = 96 never runs there)
    with pytest.raises(ValueError, match="bf16 output"):
        k.int8_gemm(0, 0, 0, 0, 0, 1, 96, 16, 1, 1, 1, 1, False, 0, 0, 0, 0.0, 0, 0, 0, True)
    with pytest.raises(ValueError, match="bf16 output"):
        k.int8_gemm(0, 0, 0, 0, 0, 1, 128, 16, 1, 0, 0, 0, False, 0, 0, 0, 0.0, 0, 0, 0, True)
    with pytest.raises(ValueError, match="bf16 output"):
        k.int8_gemm(0, 0, 0, 0, 0, 1, 128, 16, 1, 1, 1, 1, False, 0, 0, 0, 0.0, 1, 1, 0, True)


@pytest.mark.skipif(not Q.amx_tiles(768) if Q.kernels() else True,
                    reason="no AMX-INT8 here: int8_gemm writes bf16 on tiles only")
@pytest.mark.parametrize("m", [7, 33, 70, 100, 916])
def test_gemm_on_tiles_writes_the_bf16_rounding_of_its_fp32_output(m, threads):
    """op 1 (dequantize + bias) with a bf16 output: to the bit the fp32 output rounded to nearest even (torch's
    conversion), on the column split (<= 96 rows, a padded tail at 7, 33, 70) and the row tasks; extremes too."""
    torch.manual_seed(11)
    k, n = 768, 2304
    packed = Q._small_pack(*Q.quantize_weight(torch.randn(n, k), 127))
    xq, x_scale = Q.quantize_rows(torch.randn(m, k) * 3)
    x_scale[0] = 1e37  # a row whose products overflow bf16's (and fp32's) range: inf both ways
    bias = torch.randn(n)
    fp32 = own_gemm(xq, packed, m, k, n, threads, 1, x_scale, bias)
    w, colsum, s = packed
    out = torch.empty(m, n, dtype=torch.bfloat16)
    Q.kernels().int8_gemm(xq.data_ptr(), w.data_ptr(), colsum.data_ptr(), s.data_ptr(), out.data_ptr(), m, k, n,
                          threads, 1, x_scale.data_ptr(), bias.data_ptr(), False, 0, 0, 0, 0.0, 0, 0, 0, True)
    assert torch.isinf(fp32[0]).any()
    assert torch.equal(out, fp32.bfloat16())


@needs_int8_dot
@pytest.mark.parametrize("rows", [1, 5, 32, 33, 100, 700])
def test_layer_on_own_gemm_answers_as_on_onednn(rows):
    """An `Int8Linear` on coulisse's GEMM (`gemm="coulisse"`: the plan's choice on AVX512-VNNI without AMX)
    against the same codes on oneDNN: forward with and without GELU, and the `*Output` block's fused residual
    + LayerNorm, with the codes handed to the next layer; a few rows go through its few-row kernel. Within
    1e-6 (oneDNN's products equal ours to the bit on a Zen 4; another CPU's oneDNN may round its sums in
    another order), 1e-5 after the LayerNorm (which scales a difference by gamma / std, std ~0.5 here). The
    layer keeps one packed copy of its weights, none for oneDNN."""
    torch.manual_seed(7)
    linear = nn.Linear(96, 208)
    codes = Q.quantize_weight(linear.weight, 127)
    norm = nn.LayerNorm(208)
    x, residual = torch.randn(rows, 96) * 3, torch.randn(rows, 208)
    for gelu in (False, True):
        own = Q.Int8Linear(linear, 127, gelu=gelu, codes=codes, small_rows=Q.SMALL_GEMM_ROWS, gemm="coulisse")
        ref = Q.Int8Linear(linear, 127, gelu=gelu, codes=codes, small_rows=0, gemm="onednn")
        assert own.gemm == "coulisse" and own.packed is None and "coulisse's GEMM" in repr(own)
        with torch.inference_mode():
            a, b = own(x), ref(x)
            assert torch.allclose(a, b, rtol=1e-6, atol=1e-6), (a - b).abs().max()
            if gelu:  # the codes travel, equal to quantizing the output
                assert torch.equal(getattr(a, Q.CODES)[0], Q.quantize_rows(a)[0])
            a, b = own.forward_add_norm(x, residual, norm), ref.forward_add_norm(x, residual, norm)
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-5), (a - b).abs().max()
        assert torch.equal(getattr(a, Q.CODES)[0], Q.quantize_rows(a)[0])
    # a layer whose shapes do not fit the kernel's blocks stays on oneDNN
    assert Q.Int8Linear(nn.Linear(96, 200), 127, gemm="coulisse").gemm == "onednn"


@needs_int8_dot
@pytest.mark.parametrize("rows", [5, 100])
def test_a_nan_row_stays_in_its_row_on_own_gemm(rows):
    """A poison row (a NaN in its input) gives NaN outputs in that row only, through the few-row kernel and the
    many-row one with its fused passes: the other rows are those of the batch without it, to the bit."""
    torch.manual_seed(8)
    linear, norm = nn.Linear(96, 208), nn.LayerNorm(208)
    layer = Q.Int8Linear(linear, 127, gelu=True, small_rows=Q.SMALL_GEMM_ROWS, gemm="coulisse")
    dense = Q.Int8Linear(linear, 127, small_rows=Q.SMALL_GEMM_ROWS, gemm="coulisse")
    x, residual = torch.randn(rows, 96), torch.randn(rows, 208)
    poisoned = x.clone()
    poisoned[3, 7] = float("nan")
    with torch.inference_mode():
        for run in (layer, lambda t: dense.forward_add_norm(t, residual, norm)):
            clean, bad = run(x), run(poisoned)
            assert bad[3].isnan().all()
            keep = torch.arange(rows) != 3
            assert torch.equal(bad[keep], clean[keep])


@needs_int8_dot
def test_feed_forward_hands_its_inner_rows_over_as_codes_alone(minilm_dir, monkeypatch):
    """int8 layers on coulisse's GEMM (the plan's choice with AVX512-VNNI): the feed-forward's GELU output reaches
    the second layer as its codes alone (`forward_codes`: int8_gemm keeps no fp32 rows), and the embeddings are the
    bits of the same layers handing over fp32 rows that carry their codes."""
    from coulisse.models.bert import Layer

    pipe = pipeline("feature-extraction", model=str(minilm_dir), quantize="int8")
    layers = [m for m in pipe.model.modules() if isinstance(m, Layer)]
    assert layers and all(m.intermediate.dense.codes_out for m in layers)
    for m in layers:  # the attention's own codes (tests/models/test_attention_kernel.py) off: fp32 rows there
        m.attention.self.kernel_gives_codes = False
    handed = []
    add_norm = Q.Int8Linear.forward_add_norm
    monkeypatch.setattr(Q.Int8Linear, "forward_add_norm",
                        lambda self, x, *rest: handed.append(isinstance(x, Q.Codes)) or add_norm(self, x, *rest))
    texts = ["Un film magnifique, porté par des acteurs justes et une mise en scène d'une rare élégance.",
             "Je me suis ennuyé du début à la fin : scénario creux, dialogues plats, rien à sauver."] * 4
    alone = pipe(texts)
    # one batch: each layer's attention block took fp32 rows, its feed-forward's second GEMM codes alone
    assert handed.count(True) == handed.count(False) == len(layers)
    handed.clear()
    for m in layers:
        m.intermediate.dense.codes_out = False
    assert pipe(texts) == alone
    assert not any(handed)

"""Fusions around the GEMMs (models/fastpath.py, models/quantize.py, _int8.c) against float64 arithmetic.

Bounds, from fp32's unit roundoff u = 2^-24:
- A GEMM of n terms summed in fp32 is off by at most n·u·Σ|x·w| (+ u|b|); any blocking oneDNN picks
  sums fewer terms in series, so the bound holds whatever the order.
- GELU's slope is at most 1.13 in magnitude, so a GEMM error passes through it at most ×1.13. Both PyTorch
  and oneDNN evaluate erf by Abramowitz & Stegun 7.1.26 (|error| ≤ 1.5e-7), which moves GELU = v/2 (1 +
  erf) by ≤ 0.75e-7·|v|; tanh is within a few ulps in both; the C pass's table is within 8.7e-8·|v|
  (tests/models/test_int8_kernels.py). We allow 2^-22·|v| (≈ 2.4e-7·|v|) for the approximation and
  2^-22·|gelu| for the rounding of the few operations around it.
- LayerNorm of a row of n fp32 values (the C kernel: 8 lanes summing n/8 terms each, then 8 lanes and a
  tail, so at most k = n/8 + 8 additions in series): the mean is off by Δμ ≤ k·u·mean|v|; the variance,
  a sum of squares of deviations (each rounded, ≤ 2u), by ≤ (k + 2)·u relative plus Δμ² (its first-order
  term 2Δμ·mean(v − μ) vanishes); so rstd = 1/√(var + eps) by ≤ ((k + 2)/2 + 2)·u relative. Then
  z = (v − μ)·rstd is off by ≤ rstd·(Δμ + u|v − μ|) + |z|·(rel_rstd + u), and y = z·γ + β (one fma) by
  ≤ |γ|·Δz + u|y|. torch's own fp32 layer_norm meets the same bound (checked below), so the fused pass is
  as accurate as the ops it replaces.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from factory import TEXTS
from torch import nn

from coulisse import pipeline
from coulisse.engine.cpu import this_machine
from coulisse.models import fastpath, native
from coulisse.models import quantize as Q
from coulisse.models.bert import DenseNorm, Intermediate
from coulisse.models.fastpath import BF16Linear, MklLinear, PackedLinear

U = 2.0**-24
U_BF16 = 2.0**-8

needs_onednn = pytest.mark.skipif(not fastpath.onednn_fp32_available(), reason="this torch has no oneDNN linear")


@pytest.fixture(params=[1, 2], ids=["1-thread", "2-threads"])
def threads(request):
    previous = torch.get_num_threads()
    torch.set_num_threads(request.param)
    yield request.param
    torch.set_num_threads(previous)


def reference_activation(name: str, y: torch.Tensor) -> torch.Tensor:
    if name == "gelu":
        return 0.5 * y * (1 + torch.erf(y / math.sqrt(2)))
    if name == "gelu_tanh":
        return 0.5 * y * (1 + torch.tanh(math.sqrt(2 / math.pi) * (y + 0.044715 * y**3)))
    return y.clamp(min=0)


def gemm64(linear: nn.Linear, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """`(x @ W.T + b in float64, the fp32 GEMM's error bound n·u·(|x|·|W|.T + |b|))`."""
    w, b, x = linear.weight.detach().double(), linear.bias.detach().double(), x.double()
    return x @ w.T + b, x.shape[1] * U * (x.abs() @ w.abs().T + b.abs())


@needs_onednn
@pytest.mark.parametrize("activation", ["gelu", "gelu_tanh", "relu"])
def test_packed_linear_post_op_is_the_activation_of_the_linear(activation, threads):
    torch.manual_seed(0)
    linear = nn.Linear(96, 200)
    x = torch.randn(257, 96) * 3  # odd row count: a partial last tile
    with torch.inference_mode():
        out = PackedLinear(linear, activation)(x).double()
    y, gemm_bound = gemm64(linear, x)
    exact = reference_activation(activation, y)
    bound = 1.13 * gemm_bound + 2**-22 * (y.abs() + exact.abs())
    assert ((out - exact).abs() / bound).max() <= 1
    assert (out < 0).any() if activation != "relu" else (out == 0).any()  # the activation did run


def test_pack_linears_fuses_the_feed_forward_activation(monkeypatch):
    if not fastpath.onednn_fp32_available():
        pytest.skip("this torch has no oneDNN linear")
    from coulisse.config import EncoderConfig

    config = EncoderConfig.from_dict(dict(model_type="bert", vocab_size=30, hidden_size=32, num_hidden_layers=1,
                                          num_attention_heads=4, intermediate_size=64, hidden_act="gelu_new"))
    block = Intermediate(config)
    x = torch.randn(5, 32)
    with torch.inference_mode():
        expected = F.gelu(block.dense(x), approximate="tanh")
        assert fastpath.pack_linears(block, fuse_activation=True) == 1
        out = block(x)
    assert block.dense.activation == "gelu_tanh" and block.act(x) is x
    assert (out - expected).abs().max() <= 1e-5  # the module bound above, for 32 terms of |x·w| ≲ 1
    monkeypatch.setenv("COULISSE_FUSE", "0")  # the benchmarks' A/B switch keeps them apart
    block = Intermediate(config)
    fastpath.pack_linears(block, fuse_activation=True)
    assert block.dense.activation is None and block.act(x) is not x


def layer_norm_bound(v: torch.Tensor, norm: nn.LayerNorm, y_exact: torch.Tensor) -> torch.Tensor:
    """The fp32 forward error bound of the module docstring, per element, from the float64 row `v`."""
    n = v.shape[1]
    k = n / 8 + 8
    mu = v.mean(1, keepdim=True)
    d = v - mu
    rstd = 1 / torch.sqrt((d**2).mean(1, keepdim=True) + norm.eps)
    d_mu = k * U * v.abs().mean(1, keepdim=True)
    rel_rstd = ((k + 2) / 2 + 2) * U + rstd**2 * d_mu**2
    d_z = rstd * (d_mu + U * d.abs()) + (d * rstd).abs() * (rel_rstd + U)
    return norm.weight.detach().double().abs() * d_z + U * y_exact.abs() + 1e-30


def norm64(v: torch.Tensor, norm: nn.LayerNorm) -> torch.Tensor:
    return F.layer_norm(v, v.shape[1:], norm.weight.detach().double(), norm.bias.detach().double(), norm.eps)


def dense_norm_inputs(rows: int, cols: int):
    torch.manual_seed(cols)
    acc = torch.randn(rows, cols) * 50  # a GEMM's raw sums
    scale = torch.rand(rows, 1) * 0.01 + 1e-4  # per-token scales
    bias, residual = torch.randn(cols), torch.randn(rows, cols) * 3
    residual[1] += 1000.0  # a row far from zero mean: the variance must not cancel
    norm = nn.LayerNorm(cols, eps=1e-12)
    with torch.no_grad():
        norm.weight.normal_()
        norm.bias.normal_()
    return acc, scale, bias, residual, norm


@pytest.mark.parametrize("cols", [5, 8, 33, 768, 771])  # tails shorter than a vector, and not
def test_fused_add_norm_kernel_within_the_layer_norm_bound(cols, threads):
    if Q.kernels() is None:
        pytest.skip("the C kernels are not built (no compiler at install)")
    acc, scale, bias, residual, norm = dense_norm_inputs(67, cols)
    # the row before the norm, as the unfused path computes it (the same fma, then the same add)
    v = Q.dequantize_rows(acc.clone(), scale, bias, False) + residual
    with torch.no_grad():
        fused = Q.add_norm_rows(acc.clone(), scale, bias, residual, norm)
        torch_fp32 = norm(v)
    exact = norm64(v.double(), norm)
    bound = layer_norm_bound(v.double(), norm, exact)
    assert ((fused.double() - exact).abs() / bound).max() <= 1
    assert ((torch_fp32.double() - exact).abs() / bound).max() <= 1, "torch's own layer_norm meets it too"


@pytest.mark.parametrize("cols", [5, 768, 771])
def test_add_norm_gives_each_row_its_own_bits_beside_another(cols, threads):
    """The kernel runs two rows side by side where it can (AVX-512), each with its own operations in its own order:
    every row, its codes and its code scale come out as they do with the row alone in its call (odd row counts
    leave a row alone at each thread's end), tails shorter than a vector included."""
    if Q.kernels() is None:
        pytest.skip("the C kernels are not built (no compiler at install)")
    acc, scale, bias, residual, norm = dense_norm_inputs(11, cols)
    residual[3] *= 50  # a row unlike its neighbour
    together = Q.add_norm_rows(acc.clone(), scale, bias, residual, norm, codes=True)
    alone = [Q.add_norm_rows(acc[i:i + 1].clone(), scale[i:i + 1], bias, residual[i:i + 1], norm, codes=True)
             for i in range(len(acc))]
    assert torch.equal(together, torch.cat(alone))
    codes, code_scale = getattr(together, Q.CODES)
    assert torch.equal(codes, torch.cat([getattr(a, Q.CODES)[0] for a in alone]))
    assert torch.equal(code_scale, torch.cat([getattr(a, Q.CODES)[1] for a in alone]))


def test_add_norm_fallback_is_the_unfused_ops(monkeypatch):
    acc, scale, bias, residual, norm = dense_norm_inputs(9, 40)
    monkeypatch.setattr(native, "_KERNELS", False)
    with torch.no_grad():
        out = Q.add_norm_rows(acc.clone(), scale, bias, residual, norm)
        expected = norm(torch.addcmul(bias, acc, scale) + residual)
    assert torch.equal(out, expected)


@pytest.mark.parametrize("rows", [3, 200], ids=["fbgemm-rows", "onednn-rows"])
def test_int8_dense_norm_uses_the_fused_pass(rows, monkeypatch):
    """DenseNorm over an Int8Linear asks it for the fused pass, whose output is the unfused block's
    (same GEMM, same codes, same row before the norm) within the LayerNorm bound."""
    if not Q.onednn_available():
        pytest.skip("this torch has no oneDNN int8 GEMM")
    torch.manual_seed(rows)
    block = DenseNorm(64, 48, 1e-12)
    x, residual = torch.randn(rows, 64), torch.randn(rows, 48)
    block.dense = Q.Int8Linear(block.dense, small_rows=64)
    calls, real = [], Q.add_norm_rows
    monkeypatch.setattr(Q, "add_norm_rows", lambda *args, **kw: calls.append(len(args)) or real(*args, **kw))
    with torch.inference_mode():
        fused = block(x, residual)
        v = block.dense(x) + residual  # the unfused block's row before the norm
    assert calls, "DenseNorm did not ask the int8 layer for its fused pass"
    exact = norm64(v.double(), block.LayerNorm)
    assert ((fused.double() - exact).abs() / layer_norm_bound(v.double(), block.LayerNorm, exact)).max() <= 1


def test_int8_pipeline_with_and_without_kernels_agree(factory, monkeypatch):
    """End to end: the fused pass (C) and the PyTorch fallback give the same logits up to what a flipped
    int8 code can move (the LayerNorm outputs differ by ulps, which may round an activation code the other
    way): far below the int8 error budget that tests/models/test_quantize.py checks against fp32."""
    directory = factory.checkpoint("bert")
    fused = pipeline("text-classification", model=directory, quantize="int8")
    monkeypatch.setattr(native, "_KERNELS", False)
    plain = pipeline("text-classification", model=directory, quantize="int8")
    a, b = (np.array(p.forward(p.preprocess(TEXTS))) for p in (fused, plain))
    exact = pipeline("text-classification", model=directory)
    e = np.array(exact.forward(exact.preprocess(TEXTS)))
    assert np.abs(a - b).max() <= 0.25 * np.abs(a - e).max() + 1e-5


def test_int8_pipeline_on_coulisse_gemm_answers_as_on_onednn(factory, monkeypatch):
    """Where the plan puts int8 on coulisse's GEMM (AVX512-VNNI without AMX), every encoder layer it fits runs on it,
    one text at a time (its few-row kernel) and in a batch (the many-row one, rows finished in the call), and
    the logits are oneDNN's (`COULISSE_INT8_GEMM=onednn`) up to what a flipped int8 code can move (equal to
    the bit on a Zen 4): far below int8's own error against fp32."""
    if this_machine().int8.options.get("gemm") != "coulisse":
        pytest.skip("the plan keeps oneDNN's int8 GEMM on this CPU")
    directory = factory.checkpoint("bert")
    own = pipeline("text-classification", model=directory, quantize="int8")
    monkeypatch.setenv("COULISSE_INT8_GEMM", "onednn")
    ref = pipeline("text-classification", model=directory, quantize="int8")
    for pipe, gemm in ((own, "coulisse"), (ref, "onednn")):
        layers = [m for m in pipe.model.modules() if isinstance(m, Q.Int8Linear)]
        # the tiny model's odd feed-forward width (37) does not fit the kernel's blocks: those stay on oneDNN
        fits = [m.in_features % 4 == 0 and m.out_features % 16 == 0 for m in layers]
        assert any(fits) and not all(fits)
        assert [m.gemm for m in layers] == [gemm if fit else "onednn" for fit in fits]
    items = own.preprocess(TEXTS).items
    batch = [np.array(p.forward(items)) for p in (own, ref)]
    single = [np.concatenate([np.array(p.forward([item])) for item in items]) for p in (own, ref)]
    exact = pipeline("text-classification", model=directory)
    e = np.array(exact.forward(exact.preprocess(TEXTS)))
    budget = 0.25 * np.abs(batch[1] - e).max() + 1e-5
    assert np.abs(batch[0] - batch[1]).max() <= budget and np.abs(single[0] - single[1]).max() <= budget
    assert np.abs(single[0] - batch[0]).max() <= budget


def test_int8_layers_take_the_codes_their_inputs_carry(factory, monkeypatch):
    """The GELU and add + LayerNorm passes hand the next int8 layer its input already quantized
    (models/quantize.py, "codes"): per encoder layer only the attention output (and, in the first layer,
    the embeddings) is quantized on its own, and not even that where the C attention hands its rows over as
    codes (`SelfAttention.kernel_gives_codes`, coulisse's GEMM; not the last layer, whose first rows only the head
    reads, in fp32); the logits are those of quantizing every input separately, to the bit (the same codes)."""
    if Q.kernels() is None or not Q.onednn_available():
        pytest.skip("needs the C kernels and oneDNN's int8 GEMM")
    monkeypatch.setenv("COULISSE_INT8_SMALL", "0")  # no few-row kernel: every batch on the many-row GEMM
    directory = factory.checkpoint("bert")
    pipe = pipeline("text-classification", model=directory, quantize="int8")
    layers = len(pipe.model.base.encoder.layer)
    items = pipe.preprocess(TEXTS).items
    # an input without codes is quantized on its own (by quantize_rows, or inside coulisse's GEMM call)
    calls, real_codes_of = [], Q.codes_of
    monkeypatch.setattr(Q, "codes_of",
                        lambda x, rows: real_codes_of(x, rows) or calls.append(tuple(rows.shape)))
    blocks = [layer.attention for layer in pipe.model.base.encoder.layer]
    handed = sum(b.self.kernel_gives_codes and getattr(b.output.dense, "gemm", None) == "coulisse"
                 and b.output.dense.takes_codes(b.output.LayerNorm) for b in blocks[:-1])
    pipe.engine.max_batch_tokens = 10**6  # one batch
    with_codes = np.array(pipe.forward(items))
    assert len(calls) == layers + 1 - handed, calls  # each attention output not handed over, the embeddings once
    calls.clear()
    monkeypatch.setattr(Q, "codes_of", lambda x, rows: calls.append(tuple(rows.shape)))
    separate = np.array(pipe.forward(items))
    assert len(calls) == 4 * layers - handed, calls  # q/k/v input, attention output, both feed-forward inputs
    assert np.array_equal(with_codes, separate)


def fp32_layer(kernel: str, linear: nn.Linear, c_gelu: bool):
    if Q.kernels() is None:
        pytest.skip("the C kernels are not built (no compiler at install)")
    if kernel == "onednn" and not fastpath.onednn_fp32_available():
        pytest.skip("this torch has no oneDNN linear")
    return PackedLinear(linear, c_gelu=c_gelu) if kernel == "onednn" else MklLinear(linear, c_gelu=c_gelu)


@pytest.mark.parametrize("kernel", ["onednn", "mkl"])
@pytest.mark.parametrize("gelu", [False, True], ids=["bias", "bias+gelu"])
def test_fp32_linear_c_pass_within_the_gemm_bound(kernel, gelu, threads):
    """The fp32 layers' GEMM runs without its bias, which the C pass adds (then GELU): one more rounding
    after the GEMM's n-term sums, so n + 1 terms in the bound; GELU as in the post-op test above."""
    torch.manual_seed(0)
    linear = nn.Linear(96, 200)
    x = torch.randn(257, 96) * 3
    layer = fp32_layer(kernel, linear, gelu)
    assert layer.c_pass and layer.c_gelu == gelu
    with torch.inference_mode():
        out = layer(x).double()
    y, gemm_bound = gemm64(linear, x)
    gemm_bound = gemm_bound * (x.shape[1] + 1) / x.shape[1]
    if gelu:
        exact = reference_activation("gelu", y)
        bound = 1.13 * gemm_bound + 2**-22 * (y.abs() + exact.abs())
    else:
        exact, bound = y, gemm_bound
    assert ((out - exact).abs() / bound).max() <= 1
    assert (out < 0).any() and (out.min() > -0.2 if gelu else out.min() < -1)  # GELU ran only when asked


@pytest.mark.parametrize("kernel", ["onednn", "mkl"])
def test_fp32_dense_norm_uses_the_c_pass(kernel, monkeypatch):
    """DenseNorm over an fp32 fast layer asks it for the bias + residual + LayerNorm pass: within the
    LayerNorm bound of the row the unfused block would normalize (the same bits: GEMM, + bias, + residual)."""
    torch.manual_seed(1)
    block = DenseNorm(64, 48, 1e-12)
    with torch.no_grad():
        block.LayerNorm.weight.normal_()
        block.LayerNorm.bias.normal_()
    x, residual = torch.randn(200, 64), torch.randn(200, 48) * 3
    block.dense = fp32_layer(kernel, block.dense, False)
    calls, real = [], native.add_norm_rows
    monkeypatch.setattr(native, "add_norm_rows", lambda *args: calls.append(len(args)) or real(*args))
    with torch.inference_mode():
        fused = block(x, residual)
        v = block.dense(x) + residual
    assert calls, "DenseNorm did not ask the fp32 layer for its C pass"
    exact = norm64(v.double(), block.LayerNorm)
    assert ((fused.double() - exact).abs() / layer_norm_bound(v.double(), block.LayerNorm, exact)).max() <= 1


@pytest.mark.parametrize("kernel", ["onednn", "mkl"])
def test_pack_linears_runs_the_erf_gelu_in_the_c_pass(kernel, monkeypatch):
    from coulisse.config import EncoderConfig

    if kernel == "onednn" and not fastpath.onednn_fp32_available():
        pytest.skip("this torch has no oneDNN linear")
    if Q.kernels() is None:
        pytest.skip("the C kernels are not built (no compiler at install)")
    config = dict(model_type="bert", vocab_size=30, hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                  intermediate_size=64)
    block = Intermediate(EncoderConfig.from_dict({**config, "hidden_act": "gelu"}))
    x = torch.randn(5, 32)
    with torch.inference_mode():
        expected = F.gelu(block.dense(x))
        assert fastpath.pack_linears(block, kernel=kernel) == 1
        out = block(x)
    assert block.dense.c_gelu and block.act(x) is x
    assert (out - expected).abs().max() <= 1e-5  # the bound above, for 32 terms of |x·w| ≲ 1
    tanh = Intermediate(EncoderConfig.from_dict({**config, "hidden_act": "gelu_new"}))
    fastpath.pack_linears(tanh, kernel=kernel)  # the C pass has the erf form only: tanh stays in PyTorch
    assert not tanh.dense.c_gelu and tanh.act(x) is not x
    monkeypatch.setenv("COULISSE_FUSE", "0")  # the benchmarks' A/B switch: GEMM with its bias, GELU apart
    block = Intermediate(EncoderConfig.from_dict({**config, "hidden_act": "gelu"}))
    fastpath.pack_linears(block, kernel=kernel)
    assert not block.dense.c_pass and block.act(x) is not x


def test_fp32_layers_without_the_c_kernels_are_plain_linears(monkeypatch):
    monkeypatch.setattr(native, "_KERNELS", False)
    torch.manual_seed(2)
    linear, norm = nn.Linear(40, 24), nn.LayerNorm(24)
    x, residual = torch.randn(9, 40), torch.randn(9, 24)
    layer = MklLinear(linear, c_gelu=True)
    assert not layer.c_pass and not layer.c_gelu
    with torch.inference_mode():
        assert torch.equal(layer(x), F.linear(x, linear.weight, linear.bias))
        assert torch.equal(layer.forward_add_norm(x, residual, norm), norm(linear(x) + residual))


@pytest.mark.parametrize("activation", ["gelu", "gelu_tanh"])
def test_bf16_packed_post_op(activation):
    """Where oneDNN runs bf16 (AMX, AVX512-BF16 or AVX-512 BW/VL/DQ): the activation is applied to the fp32
    sums before the one rounding to bf16, so the error is the GEMM's (bf16 inputs: as in test_bf16.py),
    times GELU's slope ≤ 1.13, plus one bf16 rounding of the output."""
    if this_machine().bf16.kernel != "onednn":
        pytest.skip("this CPU has no oneDNN bf16 prepack (needs AMX, AVX512-BF16 or AVX-512 BW/VL/DQ)")
    torch.manual_seed(0)
    linear = nn.Linear(96, 40)
    x = torch.randn(33, 96) * 3
    with torch.inference_mode():
        out = BF16Linear(linear, packed=True, activation=activation)(x)
    assert out.dtype == torch.bfloat16
    xb, wb, bb = (t.detach().to(torch.bfloat16).double() for t in (x, linear.weight, linear.bias))
    y = xb @ wb.T + bb
    exact = reference_activation(activation, y)
    bound = 1.13 * 96 * U * (xb.abs() @ wb.abs().T + bb.abs()) + 2**-22 * y.abs() + U_BF16 * exact.abs() + 1e-30
    assert ((out.double() - exact).abs() / bound).max() <= 1


def test_bf16_linears_fuse_only_on_the_packed_path():
    from coulisse.config import EncoderConfig

    config = EncoderConfig.from_dict(dict(model_type="bert", vocab_size=30, hidden_size=32, num_hidden_layers=1,
                                          num_attention_heads=4, intermediate_size=64, hidden_act="gelu"))
    block = Intermediate(config)
    fastpath.bf16_linears(block, packed=False)
    assert block.dense.activation is None and block.act is not None
    with pytest.raises(ValueError, match="bug"):
        BF16Linear(nn.Linear(4, 4), packed=False, activation="gelu")


def embeddings_inputs(types: list[int] | None):
    from coulisse.config import EncoderConfig
    from coulisse.models.bert import Embeddings, Packed

    torch.manual_seed(4)
    block = Embeddings(EncoderConfig(model_type="bert", vocab_size=50, hidden_size=40, max_position_embeddings=64))
    with torch.no_grad():
        for table in (block.word_embeddings, block.position_embeddings, block.token_type_embeddings):
            table.weight.normal_(0, 2)
        block.LayerNorm.weight.normal_()
        block.LayerNorm.bias.normal_()
    ids = [[5, 17, 3, 49, 0, 8], [2, 2, 31]]
    type_ids = None if types is None else [types[: len(s)] for s in ids]
    return block, Packed.from_lists(ids, type_ids, 2)


@pytest.mark.parametrize("types", [None, [0] * 6], ids=["no-type-ids", "type-ids-all-0"])
def test_embeddings_take_one_c_pass_within_the_layer_norm_bound(types, monkeypatch):
    """With `norm_kernel` (set by the CPU fast path) and no gradients, the three lookups' sum and the LayerNorm are
    one C pass (add_norm_rows: the word vector + the type-0 vector, then + the position vector, in fp32), within the
    LayerNorm bound of that row; with gradients, or a second segment, the ops of an `nn.Module` as before."""
    if Q.kernels() is None:
        pytest.skip("the C kernels are not built (no compiler at install)")
    block, p = embeddings_inputs(types)
    with torch.no_grad():
        unfused = block(p)
    assert fastpath.install_c_embeddings(block) == 1 and block.norm_kernel is Q.add_norm_rows
    calls, real = [], Q.kernels()

    class Counting:  # the C module, its add_norm_rows calls counted
        def __getattr__(self, name):
            if name == "add_norm_rows":
                return lambda *args: calls.append(args) or real.add_norm_rows(*args)
            return getattr(real, name)

    monkeypatch.setattr(native, "_KERNELS", Counting())
    with torch.no_grad():
        fused = block(p)
        words, pos = block.word_embeddings(p.input_ids), block.position_embeddings(p.position_ids)
        v = (words + block.token_type_embeddings.weight[0]) + pos  # the pass's row, in its order
    assert len(calls) == 1
    exact = norm64(v.double(), block.LayerNorm)
    assert ((fused.double() - exact).abs() / layer_norm_bound(v.double(), block.LayerNorm, exact)).max() <= 1
    assert (fused - unfused).abs().max() < 1e-4  # the same function as the three ops (fp32 rounding apart)
    grad = block(p)  # gradients on: the module's ops, differentiable
    assert grad.requires_grad and len(calls) == 1 and torch.equal(grad.detach(), unfused)
    if types is not None:  # a second segment's type vector is not a constant row: the ops again
        block2, p2 = embeddings_inputs([0, 1, 1, 1, 1, 1])
        block2.norm_kernel = Q.add_norm_rows
        with torch.no_grad():
            out = block2(p2)
            block2.norm_kernel = None
            assert len(calls) == 1 and torch.equal(out, block2(p2))

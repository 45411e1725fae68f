"""`dtype="bfloat16"` on the CPU: mixed precision (bf16 linear layers, fp32 elsewhere), on whatever CPU runs it.

The error budget. bf16 keeps 8 significant bits: unit roundoff u = 2^-8 (fp32: 2^-24). A `BF16Linear`
rounds its input and its weight (each product off by ≤ 2u relative), sums in fp32 (negligible next to
that) and rounds its output (u). With terms of random sign the rounding errors of a dot product add like
a random walk, so an output is off by about 2u·‖x∘w‖₂ + u·|y|; for the random weights below
‖x∘w‖₂ ≈ |y|, hence ≲ 3u ≈ 1.2 % per GEMM, and 4u as a bound with room. Errors enter the fp32 residual
stream once per GEMM and are not amplified by LayerNorm (it rescales signal and error alike), so after
L layers of 4 GEMMs in series the hidden states are off by at most 16·L·u relative, added linearly
(worst case; a random walk gives 4·√L·u). The fp32 head maps that to the logits: |Δlogit| ≤ 16·L·u ·
max(1, max|logit|). Top-1 must then agree wherever the exact margin exceeds twice that bound.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from factory import ARCHS, CLASSIFIER_ARCHS, TEXTS
from torch import nn

from coulisse import pipeline
from coulisse.engine.cpu import this_machine
from coulisse.models.fastpath import BF16Linear

U_BF16 = 2.0**-8
U_FP32 = 2.0**-24


def budget(layers: int) -> float:
    return 16 * layers * U_BF16


@pytest.mark.parametrize("packed", [False, True], ids=["reference", "onednn"])
def test_bf16_linear_is_bf16_inputs_fp32_sums_bf16_output(packed):
    """Against float64 on the bf16-rounded input and weight: the only error left is the fp32 sum's
    (≤ n·u32·Σ|x·w|, n = 96 terms) and the output's rounding to bf16 (≤ u·|y|)."""
    if packed and this_machine().bf16.kernel != "onednn":
        pytest.skip("this CPU has no oneDNN bf16 prepack (needs AMX, AVX512-BF16 or AVX-512 BW/VL/DQ)")
    torch.manual_seed(0)
    linear = nn.Linear(96, 40)
    x = torch.randn(33, 96) * 3
    layer = BF16Linear(linear, packed)
    with torch.inference_mode():
        out = layer(x)
    assert out.dtype == torch.bfloat16 and out.shape == (33, 40)
    xb, wb, bb = (t.detach().to(torch.bfloat16).double() for t in (x, linear.weight, linear.bias))
    exact = xb @ wb.T + bb
    bound = 96 * U_FP32 * ((xb.abs() @ wb.abs().T) + bb.abs()) + U_BF16 * exact.abs() + 1e-30
    assert ((out.double() - exact).abs() / bound).max() <= 1
    fp64 = x.double() @ linear.weight.detach().double().T + linear.bias.detach().double()
    assert (out.double() - fp64).abs().max() > 0, "bf16 should differ from fp32 at all"


def test_only_the_encoder_linear_layers_turn_bf16(factory):
    pipe = pipeline("text-classification", model=factory.checkpoint("bert"), dtype="bfloat16")
    encoder = pipe.model.base.encoder
    linears = [m for m in encoder.modules() if isinstance(m, BF16Linear)]
    assert len(linears) == 4 * 2  # qkv, attention output, feed-forward in and out, per layer
    assert not any(isinstance(m, nn.Linear) for m in encoder.modules())
    norms = [m for m in pipe.model.modules() if isinstance(m, nn.LayerNorm)]
    assert norms and all(m.weight.dtype == torch.float32 for m in norms)  # the residual stream stays fp32
    assert pipe.preparation.dtype == torch.bfloat16 and "bf16" in pipe.preparation.fast_path


@pytest.mark.parametrize("arch", ARCHS + CLASSIFIER_ARCHS)
def test_bf16_logits_within_the_error_budget(factory, arch):
    directory = factory.checkpoint(arch)
    fp32 = pipeline("text-classification", model=directory)
    bf16 = pipeline("text-classification", model=directory, dtype="bfloat16")
    a = np.array(fp32.forward(fp32.preprocess(TEXTS)))
    b = np.array(bf16.forward(bf16.preprocess(TEXTS)))
    layers = fp32.model.config.num_hidden_layers
    bound = budget(layers) * max(1.0, np.abs(a).max())
    delta = np.abs(a - b).max()
    assert 0 < delta <= bound, (delta, bound)
    top2 = np.sort(a, axis=1)[:, -2:]
    clear = top2[:, 1] - top2[:, 0] > 2 * bound
    assert (a.argmax(1) == b.argmax(1))[clear].all()


def test_deberta_v2_runs_in_bf16(tmp_path_factory):
    from test_deberta_v2 import DebertaFactory

    deberta = DebertaFactory(tmp_path_factory.mktemp("deberta-bf16"))
    directory = deberta.checkpoint("v3")
    fp32 = pipeline("text-classification", model=directory)
    bf16 = pipeline("text-classification", model=directory, dtype="bfloat16")
    a, b = (np.stack(p.forward(p.preprocess(TEXTS))) for p in (fp32, bf16))
    assert 0 < np.abs(a - b).max() <= budget(fp32.model.config.num_hidden_layers) * max(1.0, np.abs(a).max())


def test_slow_path_warns_once_in_one_line(factory, caplog):
    with caplog.at_level(logging.WARNING, logger="coulisse"):
        pipeline("text-classification", model=factory.checkpoint("bert"), dtype="bfloat16")
    warnings = [r.getMessage() for r in caplog.records if "bfloat16" in r.getMessage()]
    if this_machine().bf16.fast:
        assert warnings == []
    else:
        assert len(warnings) == 1 and "\n" not in warnings[0] and "int8" in warnings[0], warnings


@pytest.mark.slow
def test_minilm_embeddings_cosine_goal(minilm_dir):
    """The issue's goal on real weights: all-MiniLM-L6-v2 sentence embeddings at cosine ≥ 0.999 (mean)."""
    from test_quantize import SENTENCES

    fp32 = pipeline("feature-extraction", model=str(minilm_dir), pooling="mean", normalize=True)
    bf16 = pipeline("feature-extraction", model=str(minilm_dir), pooling="mean", normalize=True, dtype="bfloat16")
    cosine = (np.array(fp32(SENTENCES)) * np.array(bf16(SENTENCES))).sum(1)
    assert cosine.mean() >= 0.999 and cosine.min() >= 0.998, cosine
    assert cosine.max() < 1 - 1e-7, "bf16 should differ from fp32 at all"

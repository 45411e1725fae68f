"""int8 on real weights: all-MiniLM-L6-v2 sentence embeddings stay close to fp32."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from coulisse import pipeline
from coulisse.engine.cpu import this_machine
from coulisse.models.quantize import Int8Linear, quantize_model


def plan_weight_max() -> int:
    """The largest weight code the kernel plan allows on this CPU: 127 with VNNI or AMX, 63 on AVX2."""
    return 2 ** (this_machine().int8.options.get("weight_bits", 7) - 1) - 1

SENTENCES = [
    "J'ai attendu un cours d'HuggingFace toute ma vie.",
    "Je déteste tellement ça !",
    "Un film magnifique, porté par des acteurs formidables.",
    "Le scénario est creux et la mise en scène paresseuse, on s'ennuie ferme pendant deux heures.",
    "A wonderful movie with a moving story and great actors.",
    "The plot makes no sense and the dialogue is painfully flat.",
    "Quelle surprise : drôle, émouvant, intelligent.",
    "Les effets spéciaux ont mal vieilli mais l'histoire tient toujours la route.",
    "I would not recommend this film to anyone.",
    "Une comédie légère, parfaite pour un dimanche soir en famille.",
]


@pytest.mark.slow
def test_int8_embeddings_cosine_to_fp32(minilm_dir):
    fp32 = pipeline("feature-extraction", model=str(minilm_dir), pooling="mean", normalize=True)
    int8 = pipeline("feature-extraction", model=str(minilm_dir), pooling="mean", normalize=True, quantize="int8")
    a, b = np.array(fp32(SENTENCES)), np.array(int8(SENTENCES))
    cosine = (a * b).sum(1)  # both normalised
    assert cosine.mean() >= 0.99, cosine
    assert cosine.min() >= 0.98, cosine
    assert cosine.max() < 1 - 1e-6, "int8 should differ from fp32 at all"


def test_int8_linear_close_to_fp32_with_this_cpus_weight_range():
    """Depends on the CPU: quantize_model picks 8-bit weights where the CPU sums int8 pairs straight
    into 32 bits (AVX-512 VNNI, AVX-VNNI, AMX) and 7-bit weights elsewhere (AVX2's 16-bit pair sums
    would saturate: 2·255·127 > 32767, while 2·255·63 = 32130 fits). On each kind, the int8 arithmetic
    itself is exact (test_int8_linear_is_exact_integer_arithmetic); only the quantization step differs,
    halved with 8 bits, hence the two thresholds (measured ≈ 0.5 % and ≈ 1 % relative error)."""
    weight_max = plan_weight_max()
    torch.manual_seed(0)
    linear = nn.Linear(64, 48)
    x = torch.randn(33, 64) * 3
    x[5] *= 40  # an outlier token must not coarsen the others (per-token scales)
    q = Int8Linear(linear, weight_max)
    with torch.inference_mode():
        ref, out = linear(x), q(x)
    others = [i for i in range(33) if i != 5]
    rel = (out[others] - ref[others]).norm() / ref[others].norm()
    assert rel < (0.01 if weight_max == 127 else 0.02)
    assert out.shape == ref.shape and q(x[None]).shape == (1, 33, 48)


def test_quantize_rejects_unknown_mode(tf_camembert_dir):
    from coulisse.errors import InputError

    pipe = pipeline("sentiment-analysis", model=str(tf_camembert_dir))
    with pytest.raises(InputError, match="int4"):
        quantize_model(pipe.model, "int4")


@pytest.mark.parametrize("weight_max", [63, None], ids=["7-bit", "this-cpu"])
def test_int8_linear_is_exact_integer_arithmetic(weight_max):
    """Same on every CPU: the layer computes `s_x·s_w·Σ q_x·q_w + b` with exact int32 sums, so it
    equals that formula in float64 up to float32 rounding (the int32 sum's conversion, the products by
    the two scales and the bias add: 4u relative, u = 2^-24). A saturating 16-bit pair sum would be
    off by thousands of codes."""
    weight_max = weight_max or plan_weight_max()
    torch.manual_seed(1)
    linear = nn.Linear(96, 40)
    x = torch.randn(70, 96) * 3
    x[7] *= 50
    layer = Int8Linear(linear, weight_max)
    with torch.inference_mode():
        out = layer(x).double()
    # The codes as the layer defines them (float32 division, round half to even), the rest in float64.
    w = linear.weight.detach()
    s_w = w.abs().amax(1).clamp(min=1e-12) / weight_max
    q_w = torch.round(w / s_w[:, None]).clamp(-weight_max, weight_max).double()
    s_x = x.abs().amax(1, keepdim=True).clamp(min=1e-12) / 127
    q_x = torch.round(x / s_x).double()
    product = (q_x @ q_w.T) * s_x.double() * s_w.double()
    expected = product + linear.bias.detach().double()
    bound = 4 * 2.0**-24 * (product.abs() + linear.bias.detach().double().abs()) + 1e-30
    assert ((out - expected).abs() / bound).max() <= 1


def test_pipeline_quantizes_with_the_plans_weight_width(tf_camembert_dir):
    """The weight codes of every layer stay within the plan's width (7 bits without VNNI, where 8 would
    saturate AVX2's 16-bit pair sums), and reach it: the largest weight of each channel maps to ±max."""
    pipe = pipeline("sentiment-analysis", model=str(tf_camembert_dir), quantize="int8")
    layers = [m for m in pipe.model.base.encoder.modules() if isinstance(m, Int8Linear)]
    assert layers
    codes = [layer._unpacked_small[0] for layer in layers if layer._unpacked_small is not None]
    if not codes:
        pytest.skip("no fbgemm in this PyTorch: the codes are only held in oneDNN's opaque layout")
    assert all(q.abs().amax(1).eq(plan_weight_max()).all() for q in codes)


@pytest.mark.parametrize("quantize", [None, "int8"])
def test_a_hook_that_edits_a_layers_output_in_place_reaches_the_next_layer(tf_camembert_dir, quantize):
    """An ablation: a forward hook zeroes the first layer's output in place, so every token after it is alike and
    two different texts score the same. The int8 layers passed the next layer codes attached to the output,
    which the edit did not reach: it read the old values, and the texts scored apart (audit 46). Hooks on the
    feed-forward see tensors, never codes alone."""
    pipe = pipeline("text-classification", model=str(tf_camembert_dir), quantize=quantize, top_k=None)
    texts = ["Un film magnifique, porté par des acteurs formidables.", "Je déteste tellement ça !"]
    untouched = [{d["label"]: d["score"] for d in row} for row in pipe(texts)]
    assert abs(untouched[0]["POSITIVE"] - untouched[1]["POSITIVE"]) > 1e-3  # the texts differ without the hook
    layer = pipe.model.base.encoder.layer[0]
    seen = []
    hooks = [layer.output.register_forward_hook(lambda module, args, out: out.zero_()),
             layer.intermediate.register_forward_hook(lambda module, args, out: seen.append(type(out)))]
    try:
        ablated = [{d["label"]: d["score"] for d in row} for row in pipe(texts)]
    finally:
        for hook in hooks:
            hook.remove()
    assert abs(ablated[0]["POSITIVE"] - ablated[1]["POSITIVE"]) < 1e-6
    assert seen and all(kind is torch.Tensor for kind in seen)
    again = [{d["label"]: d["score"] for d in row} for row in pipe(texts)]  # hooks gone: codes pass again
    assert again == untouched


def test_the_small_batch_weights_are_packed_once_by_threads_arriving_together(monkeypatch):
    """A served pipeline runs batches on several threads: the layer that packs its few-row weights on its third
    small batch did it once per thread that got there, and one could read the weights another had just let go
    (a TypeError; audit 46). One packs; the others wait and use its packing."""
    import threading
    import time

    from coulisse.models import quantize as Q

    layer = Q.Int8Linear(nn.Linear(96, 208), 127)  # oneDNN's layer: its few-row packing comes later
    if layer._unpacked_small is None:
        pytest.skip("no few-row kernel for a oneDNN layer on this machine (no fbgemm)")
    packs = []

    def slow_pack(q, scale):
        packs.append(threading.get_ident())
        time.sleep(0.2)  # the others arrive meanwhile
        return ("packed", q, scale)

    monkeypatch.setattr(Q, "_small_pack", slow_pack)
    monkeypatch.setattr(Q, "_fbgemm_pack", slow_pack)
    layer._small_calls = Q.PACK_SMALL_AFTER - 1
    start, seen, failures = threading.Barrier(4), [], []

    def small_batch():
        start.wait()
        try:
            seen.append(layer._small())
        except Exception as e:  # noqa: BLE001 (what the race raised)
            failures.append(e)

    threads = [threading.Thread(target=small_batch) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert failures == [] and len(packs) == 1
    assert len(seen) == 4 and all(s is seen[0] and s[0] == "packed" for s in seen)


def test_a_module_put_in_place_after_a_forward_is_looked_at_once_said(tf_camembert_dir):
    """The hook check lists the model's modules once (a walk per forward cost ~0.1 ms); a module swapped in after
    a forward is in that list once `modules_changed` is called, as prepare_model calls it (session review)."""
    pipe = pipeline("text-classification", model=str(tf_camembert_dir), quantize="int8")
    pipe("Un film.")
    assert not pipe.model._hooked()
    layer = pipe.model.base.encoder.layer[0]
    fresh = nn.Identity()
    layer.extra = fresh
    fresh.register_forward_hook(lambda module, args, out: None)
    assert not pipe.model._hooked()  # the list of the first forward
    pipe.model.modules_changed()
    assert pipe.model._hooked()

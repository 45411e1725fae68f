"""int8 on real weights: all-MiniLM-L6-v2 sentence embeddings stay close to fp32."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from coulisse import pipeline
from coulisse.models.quantize import Int8Linear, has_vnni, quantize_model

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


def test_int8_linear_matches_fp32_linear():
    """With the weight range quantize_model picks for this CPU (7 bits without VNNI, where 8-bit
    weights let the kernel's 16-bit pair sums saturate)."""
    weight_max = 127 if has_vnni() else 63
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

"""The checked name table: checkpoints with older or wider layouts load into the same model, and the result
still equals transformers'. (Missing, misshapen and unused tensors are in tests/test_errors.py.)"""

from __future__ import annotations

import copy
import shutil

import pytest
import torch
from factory import assert_close

from coulisse import pipeline

TEXTS = ["Un film magnifique, des acteurs excellents.", "Quel ennui… deux heures perdues !", "Bof."]


def _copy_tokenizer(factory, arch, directory):
    for f in factory.tokenizer_files(arch).iterdir():
        if f.name != "config.json":
            shutil.copy(f, directory)


def test_legacy_gamma_beta_layer_norm_names(factory, tmp_path):
    """Old BERT checkpoints name LayerNorm parameters gamma/beta; transformers renames them, so must we."""
    ref = factory.reference("bert").model
    state = {k.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta"): v
             for k, v in ref.state_dict().items()}
    assert sum(k.endswith(".gamma") for k in state) == 5  # embeddings + 2 per layer
    ref.config.save_pretrained(tmp_path)
    torch.save(state, tmp_path / "pytorch_model.bin")
    _copy_tokenizer(factory, "bert", tmp_path)
    tok = factory.hf_tokenizer("bert")
    with torch.no_grad():
        want = ref(**tok(TEXTS, padding=True, return_tensors="pt")).logits
    pipe = pipeline("text-classification", model=tmp_path)
    assert_close("logits legacy gamma/beta", pipe.model(**pipe.tokenizer(TEXTS, padding=True,
                                                                          return_tensors="pt")).logits, want)


@pytest.mark.parametrize("arch", ["camembert", "bert"])
def test_masked_lm_checkpoint_serves_feature_extraction(factory, tmp_path, arch):
    """camembert-base and bert-base ship *ForMaskedLM weights: the LM head is ignored, the encoder used."""
    import transformers

    config = copy.deepcopy(factory.reference(arch).model.config)
    config.architectures = None
    torch.manual_seed(7)
    mlm = transformers.AutoModelForMaskedLM.from_config(config).eval()
    mlm.save_pretrained(tmp_path)
    _copy_tokenizer(factory, arch, tmp_path)
    tok = factory.hf_tokenizer(arch)
    inputs = tok(TEXTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        want = mlm.base_model(**inputs).last_hidden_state
    real = inputs["attention_mask"].bool()
    pipe = pipeline("feature-extraction", model=tmp_path)
    got = pipe.model(**pipe.tokenizer(TEXTS, padding=True, return_tensors="pt")).last_hidden_state
    assert_close(f"hidden states MaskedLM checkpoint [{arch}]", got[real], want[real])


def test_prefixed_and_bare_base_keys_load_alike(factory):
    """A base checkpoint (no `roberta.` prefix) and a classifier (prefixed) share one encoder: every weight as read
    (before the preparation prepacks the linear ones, whose state dict it then refuses)."""
    from coulisse.config import EncoderConfig
    from coulisse.models import load_model

    def encoder(folder):
        return load_model(folder, EncoderConfig.from_file(folder / "config.json"))

    bare = encoder(factory.checkpoint("xlm-roberta", base=True))
    prefixed = encoder(factory.checkpoint("xlm-roberta"))
    for a, b in zip(bare.state_dict().items(), prefixed.state_dict().items(), strict=True):
        assert a[0] == b[0] and torch.equal(a[1], b[1])
    assert len(bare.state_dict()) > 0

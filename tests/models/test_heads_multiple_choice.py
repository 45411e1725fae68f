"""`*ForMultipleChoice` through the Python API: `model(input_ids (B, C, L), attention_mask)` gives logits
`(B, C)` equal to transformers' (pooled first token -> one score per choice: BERT and the RoBERTa family
through the base model's pooler, DistilBERT through pre_classifier + ReLU), for the seven families."""

from __future__ import annotations

import pytest
import torch
from factory import ARCHS, assert_close, assert_distinct_rows

from coulisse.errors import InputError
from coulisse.pipelines import load_checkpoint

PROMPTS = ["À Paris, la pizza se mange", "Le film commence"]
CHOICES = [["avec une fourchette et un couteau.", "à la main, pliée en deux.", "froide."],
           ["à vingt heures.", "quand la salle est pleine, après une demi-heure de publicités.", "jamais."]]


def choice_inputs(tokenizer) -> dict[str, torch.Tensor]:
    """Every (prompt, choice) pair padded to one length, then laid out `(questions, choices, length)`."""
    firsts = [p for p, choices in zip(PROMPTS, CHOICES, strict=True) for _ in choices]
    seconds = [c for choices in CHOICES for c in choices]
    flat = tokenizer(firsts, seconds, padding=True, return_tensors="pt")
    return {k: v.view(len(PROMPTS), len(CHOICES[0]), -1) for k, v in flat.items()}


@pytest.mark.parametrize("arch", ARCHS)
def test_choice_logits_equal_transformers(task_factory, arch):
    checkpoint = load_checkpoint(task_factory.checkpoint(arch, "multiple-choice"), "multiple-choice")
    inputs = choice_inputs(checkpoint.tokenizer)
    assert int(inputs["attention_mask"].sum(-1).min()) < inputs["input_ids"].shape[-1]  # padding inside
    logits = checkpoint.model(**inputs).logits
    with torch.no_grad():
        expected = task_factory.model(arch, "multiple-choice")(**inputs).logits
    assert logits.shape == expected.shape == (len(PROMPTS), len(CHOICES[0]))
    assert_distinct_rows(expected.T)  # choices score apart
    assert_close("multiple-choice logits", logits, expected)


@pytest.mark.parametrize("arch", ["bert", "camembert"])
def test_choice_hidden_states_and_attentions_per_sequence_as_transformers(task_factory, arch):
    """output_hidden_states / output_attentions were dropped for (B, C, L) inputs (audit 44): they come per
    (prompt, choice) sequence, (B*C, ...), as transformers returns them (padding positions zero here)."""
    checkpoint = load_checkpoint(task_factory.checkpoint(arch, "multiple-choice"), "multiple-choice")
    inputs = choice_inputs(checkpoint.tokenizer)
    out = checkpoint.model(**inputs, output_hidden_states=True, output_attentions=True)
    with torch.no_grad():
        expected = task_factory.model(arch, "multiple-choice")(**inputs, output_hidden_states=True,
                                                                output_attentions=True)
    assert out.logits.shape == expected.logits.shape
    real = inputs["attention_mask"].reshape(-1, inputs["attention_mask"].shape[-1]).bool()
    assert len(out.hidden_states) == len(expected.hidden_states)
    for ours, theirs in zip(out.hidden_states, expected.hidden_states, strict=True):
        assert ours.shape == theirs.shape
        assert_close("multiple-choice hidden states", ours[real], theirs[real])
    # transformers 5's SDPA attention returns none; ours: one (B*C, heads, L, L) per layer
    config = checkpoint.config
    assert [tuple(a.shape) for a in out.attentions] == [
        (real.shape[0], config.num_attention_heads, real.shape[1], real.shape[1])] * config.num_hidden_layers


def test_choices_need_a_multiple_choice_head(task_factory):
    directory = task_factory.checkpoint("bert", "token-classification")
    checkpoint = load_checkpoint(directory, "token-classification")
    with pytest.raises(InputError, match="multiple-choice"):
        checkpoint.model(**choice_inputs(checkpoint.tokenizer))

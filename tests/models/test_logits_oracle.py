"""Logits and hidden states equal transformers' (fp32, max |Δ| ≤ 1e-4) for every architecture × weight format,
and for every tokenizer format, on tiny random checkpoints that transformers itself wrote (tests/factory.py).

Coverage:
- classifier: 7 architectures × 4 weight formats (safetensors, sharded safetensors, torch.save .bin,
  sharded .bin + index), each with its native slow tokenizer files (vocab.txt for BERT, DistilBERT and
  ELECTRA, sentencepiece for CamemBERT and XLM-R, byte-level vocab.json + merges.txt for RoBERTa, Moses
  vocab.json + merges.txt for FlauBERT, whose only transformers tokenizer is that Python one);
- tokenizer.json: the 6 architectures transformers has a fast tokenizer for (safetensors);
- base model: the 7 architectures × (base checkpoint as safetensors and .bin, classifier checkpoint read
  as a base model), compared on real tokens;
each batched (padded `model(**inputs)`, and the packed engine) and one text at a time.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from factory import (
    ALL_ARCHS,
    FAST_TOKENIZER_ARCHS,
    LABELS,
    NATIVE_TOKENIZER,
    TEXTS,
    WEIGHT_FORMATS,
    assert_close,
    assert_distinct_rows,
    assert_same_encoding,
)

from coulisse import pipeline

_REFERENCE: dict = {}


def reference(factory, arch: str, tokenizer_format: str, base: bool):
    """transformers' inputs and outputs for TEXTS, batched and one by one (computed once per session)."""
    key = (arch, tokenizer_format, base)
    if key not in _REFERENCE:
        ref = factory.reference(arch)
        tok = factory.hf_tokenizer(arch, tokenizer_format)
        model = ref.base if base else ref.model

        def run(texts):
            inputs = tok(texts, padding=True, truncation=True, max_length=ref.max_length, return_tensors="pt")
            if arch == "distilbert":
                # transformers 5 maps distilbert to BertTokenizer, whose token_type_ids DistilBERT ignores;
                # coulisse, like DistilBertTokenizer, returns only what the model takes.
                assert not inputs.pop("token_type_ids").any()
            with torch.no_grad():
                out = model(**inputs)
            return inputs, out.last_hidden_state if base else out.logits

        _REFERENCE[key] = run(TEXTS), [run([t]) for t in TEXTS]
    return _REFERENCE[key]


def check_classifier(factory, arch: str, directory, tokenizer_format: str) -> None:
    pipe = pipeline("text-classification", model=directory)
    (inputs, logits), singles = reference(factory, arch, tokenizer_format, base=False)
    assert_distinct_rows(logits)
    assert pipe.config.id2label == LABELS

    ours_inputs = pipe.tokenizer(TEXTS, padding=True, truncation=True, return_tensors="pt")
    assert_same_encoding(ours_inputs, inputs)
    assert_close(f"logits batched [{arch}]", pipe.model(**ours_inputs).logits, logits)
    # The packed, length-sorted engine behind pipe(...).
    assert_close(f"logits engine [{arch}]", np.stack(pipe.forward(pipe.preprocess(TEXTS))), logits)

    for text, (single_inputs, single_logits) in zip(TEXTS, singles, strict=True):
        ours_single = pipe.tokenizer([text], truncation=True, return_tensors="pt")
        assert_same_encoding(ours_single, single_inputs)
        assert_close(f"logits one by one [{arch}]", pipe.model(**ours_single).logits, single_logits)


@pytest.mark.parametrize("weights", WEIGHT_FORMATS)
@pytest.mark.parametrize("arch", ALL_ARCHS)
def test_classifier_logits_equal_transformers(factory, arch, weights):
    directory = factory.checkpoint(arch, weights)
    check_classifier(factory, arch, directory, NATIVE_TOKENIZER[arch])


@pytest.mark.parametrize("arch", FAST_TOKENIZER_ARCHS)
def test_tokenizer_json_checkpoints_equal_transformers(factory, arch):
    directory = factory.checkpoint(arch, "safetensors", tokenizer="tokenizer.json")
    assert (directory / "tokenizer.json").is_file()
    assert not any((directory / n).exists() for n in ("vocab.txt", "vocab.json", "sentencepiece.bpe.model"))
    check_classifier(factory, arch, directory, "tokenizer.json")


@pytest.mark.parametrize("source", ["base-safetensors", "base-bin", "classifier"])
@pytest.mark.parametrize("arch", ALL_ARCHS)
def test_hidden_states_equal_transformers(factory, arch, source):
    weights = "bin" if source == "base-bin" else "safetensors"
    directory = factory.checkpoint(arch, weights, base=source != "classifier")
    pipe = pipeline("feature-extraction", model=directory)
    (inputs, hidden), singles = reference(factory, arch, NATIVE_TOKENIZER[arch], base=True)
    real = inputs["attention_mask"].bool()
    assert_distinct_rows(hidden[:, 0])

    ours_inputs = pipe.tokenizer(TEXTS, padding=True, truncation=True, return_tensors="pt")
    assert_same_encoding(ours_inputs, inputs)
    ours = pipe.model(**ours_inputs).last_hidden_state
    assert ours.shape == hidden.shape
    assert_close(f"hidden states batched [{arch}]", ours[real], hidden[real])

    # pipe(texts) returns, per text, [1][tokens][hidden] as transformers' feature-extraction pipeline does.
    features = pipe(TEXTS)
    for i, feature in enumerate(features):
        assert_close(f"hidden states pipeline [{arch}]", np.asarray(feature)[0], hidden[i][real[i]])

    for text, (_, single_hidden) in zip(TEXTS, singles, strict=True):
        out = pipe.model(**pipe.tokenizer([text], truncation=True, return_tensors="pt")).last_hidden_state
        assert_close(f"hidden states one by one [{arch}]", out, single_hidden)


@pytest.mark.parametrize("arch", ALL_ARCHS)
def test_padded_ids_without_a_mask_or_left_padded_number_positions_as_transformers(factory, arch):
    """`model(input_ids)` on a padded batch without a mask (or with one of ones) attends to the pad tokens, as
    transformers does; and positions come from the ids, not the mask: the RoBERTa family gives a pad token position
    pad_token_id, the others number every column (a left-padded text starts past 0). Classifier logits with right
    padding, and the base model's real tokens with left padding, against transformers'."""
    ref = factory.reference(arch).model
    pad = ref.config.pad_token_id
    g = torch.Generator().manual_seed(7)
    ids = torch.randint(5, ref.config.vocab_size, (3, 9), generator=g)
    ids[ids == pad] = 5
    ids[1, 6:], ids[2, 3:] = pad, pad  # right padding
    ours = pipeline("text-classification", model=factory.checkpoint(arch)).model
    base = pipeline("feature-extraction", model=factory.checkpoint(arch, base=True)).model
    with torch.no_grad():
        for mask in (None, torch.ones_like(ids), (ids != pad).long()):
            kwargs = {} if mask is None else {"attention_mask": mask}
            assert_close(f"{arch} logits, right padding, mask {mask}", ours(input_ids=ids, **kwargs).logits,
                         ref(input_ids=ids, **kwargs).logits)
        left = torch.stack([row.roll(int((row == pad).sum())) for row in ids])  # the same texts, padded on the left
        mask = (left != pad).long()
        theirs = ref.base_model(input_ids=left, attention_mask=mask).last_hidden_state
        real = mask.bool()
        assert_close(f"{arch} hidden states, left padding", base(input_ids=left, attention_mask=mask)
                     .last_hidden_state[real], theirs[real])


@pytest.mark.parametrize("arch", ["bert", "camembert", "distilbert"])
def test_an_empty_batch_gives_empty_outputs_of_transformers_shapes(factory, arch):
    """`model(input_ids=(0, L))`: an internal attention error was said (audit 44); the outputs have no row and
    the shapes a batch would have (transformers 5 raises a reshape error there)."""
    from coulisse.errors import InputError

    for pipe in (pipeline("text-classification", model=factory.checkpoint(arch)),
                 pipeline("feature-extraction", model=factory.checkpoint(arch, base=True))):
        full = pipe.model(**pipe.tokenizer(["Un film."], return_tensors="pt"), output_hidden_states=True)
        ids = torch.zeros(0, 5, dtype=torch.long)
        empty = pipe.model(input_ids=ids, attention_mask=ids, output_hidden_states=True)
        assert empty.keys() == full.keys()
        for name in empty:
            mine, theirs = empty[name], full[name]
            for a, b in zip(*((mine, theirs) if isinstance(mine, tuple) else ((mine,), (theirs,))), strict=True):
                assert a.shape[0] == 0 and a.shape[2:] == b.shape[2:] and a.dim() == b.dim()
        with pytest.raises(InputError, match=r"input_ids of shape \(2, 0\)"):
            pipe.model(input_ids=torch.zeros(2, 0, dtype=torch.long))

"""The engine: batching plans, order, and results independent of how inputs were grouped."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from coulisse import pipeline
from coulisse.engine import Engine, Item

TEXTS = [
    "J'ai attendu un cours d'HuggingFace toute ma vie.",
    "Je déteste tellement ça !",
    "Un film « magnifique », porté par des acteurs formidables… 😍",
    "Bof.",
    "Le scénario est creux, les dialogues sont plats et la mise en scène paresseuse. " * 12,
    "Quelle surprise : drôle, émouvant, intelligent.",
    "Nul\tà\tpleurer\net long.",
]


@pytest.fixture(scope="module")
def classifier(tf_camembert_dir):
    return pipeline("sentiment-analysis", model=str(tf_camembert_dir))


@pytest.fixture(scope="module")
def extractor(tf_camembert_dir):
    return pipeline("feature-extraction", model=str(tf_camembert_dir))


def test_plan_respects_budget_and_covers_every_input():
    engine = Engine.__new__(Engine)
    engine.max_batch_tokens, engine.max_batch_size = 100, 4
    lengths = [5, 60, 30, 99, 120, 7, 7, 7, 7, 7, 40]
    batches = engine.plan(lengths)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for batch in batches:
        assert len(batch) <= 4
        # a batch may exceed the budget only when it holds a single over-long input
        assert sum(lengths[i] for i in batch) <= 100 or len(batch) == 1
    flat = [lengths[i] for b in batches for i in b]
    assert flat == sorted(lengths, reverse=True)


@pytest.mark.parametrize("budget", [1, 64, 300, 100_000])
def test_logits_do_not_depend_on_grouping(classifier, budget):
    items = classifier.preprocess(TEXTS)
    alone = [classifier.engine.forward([it])[0].numpy() for it in items]
    classifier.engine.max_batch_tokens = budget
    try:
        batched = classifier.forward(items)
    finally:
        classifier.engine.max_batch_tokens = 4096
    assert np.abs(np.array(batched) - np.array(alone)).max() <= 1e-5
    assert len({round(float(r[0]), 4) for r in alone}) > 3, "logits should differ between inputs"


@pytest.mark.parametrize("budget", [1, 64, 100_000])
def test_hidden_states_do_not_depend_on_grouping(extractor, budget, monkeypatch):
    items = extractor.preprocess(TEXTS)
    monkeypatch.setattr(extractor.engine, "max_batch_tokens", budget)
    batched = extractor.forward(items)
    for item, hidden in zip(items, batched, strict=True):
        alone = extractor.engine.forward([item]).numpy()
        assert hidden.shape == (len(item.ids), extractor.config.hidden_size)
        assert np.abs(hidden - alone).max() <= 1e-5


@pytest.mark.parametrize("budget", [1, 64, 100_000])
def test_selected_rows_split_by_each_inputs_own_count(extractor, budget, monkeypatch):
    """`select_token_id` (fill-mask's masked rows) travels as an argument: each input gets the rows of its
    own occurrences of the token, in order, whatever the batching; nothing is left set on the model."""
    items = extractor.preprocess(TEXTS)
    token = items[0].ids[3]  # a piece that occurs a different number of times in each text
    full = extractor.forward(items)
    monkeypatch.setattr(extractor.engine, "max_batch_tokens", budget)
    selected = extractor.engine.run(items, select_token_id=token)
    counts = [it.ids.count(token) for it in items]
    assert len(set(counts)) > 1
    for item, rows, hidden in zip(items, selected, full, strict=True):
        assert rows.shape == (item.ids.count(token), extractor.config.hidden_size)
        assert np.abs(rows - hidden[np.array(item.ids) == token]).max(initial=0) <= 1e-5
    assert all(h.shape[0] == len(it.ids) for it, h in zip(items, extractor.forward(items), strict=True))


def test_first_token_shortcut_equals_full_encoder(classifier):
    """Sequence heads skip the last layer's other queries; the result must equal the full path."""
    items = classifier.preprocess(TEXTS)
    from coulisse.models import Packed

    p = Packed.from_lists([it.ids for it in items], None, classifier.config.position_offset)
    with torch.inference_mode():
        full = classifier.model.base(p)[p.starts]
        short = classifier.model.base(p, first_only=True)
    assert torch.allclose(full, short, atol=1e-5)


def test_padded_model_call_equals_engine(classifier):
    """The notebook's `model(**tokenizer(..., padding=True))` gives the engine's logits."""
    inputs = classifier.tokenizer(TEXTS, padding=True, truncation=True, return_tensors="pt")
    logits = classifier.model(**inputs).logits.numpy()
    assert np.abs(logits - np.array(classifier.forward(classifier.preprocess(TEXTS)))).max() <= 1e-5


def test_half_precision_path_runs_close_to_fp32(tf_camembert_dir, classifier):
    """The GPU path (the whole model cast to fp16, packed batches) exercised on the CPU with fp16. (CPU
    bf16 is mixed precision instead, with its own tests: tests/models/test_bf16.py.)"""
    bf16 = pipeline("sentiment-analysis", model=str(tf_camembert_dir), dtype="float16")
    assert next(bf16.model.parameters()).dtype == torch.float16
    a = np.array(bf16.forward(bf16.preprocess(TEXTS)))
    b = np.array(classifier.forward(classifier.preprocess(TEXTS)))
    assert a.dtype == np.float32
    assert np.abs(a - b).max() < 0.1


def test_int8_agrees_with_fp32(tf_camembert_dir, classifier):
    int8 = pipeline("sentiment-analysis", model=str(tf_camembert_dir), quantize="int8")
    from coulisse.models.quantize import Int8Linear

    layer = int8.model.base.encoder.layer[0].attention.self.qkv
    assert isinstance(layer, Int8Linear), "linear layers should be int8 modules"
    a = np.array(int8.forward(int8.preprocess(TEXTS)))
    b = np.array(classifier.forward(classifier.preprocess(TEXTS)))
    # A tiny random model with large weights is int8's worst case; real weights: test_int8_quality.
    assert np.abs(a - b).max() < 0.1
    assert np.abs(a - b).max() > 0, "int8 should not be bit-identical to fp32"


def test_progress_callback_counts_every_input(classifier):
    seen = []
    classifier.engine.max_batch_tokens = 64
    try:
        classifier.forward(classifier.preprocess(TEXTS), progress=seen.append)
    finally:
        classifier.engine.max_batch_tokens = 4096
    assert sum(seen) == len(TEXTS) and len(seen) > 1


def test_items_accept_token_types():
    item = Item([1, 2, 3], [0, 0, 1])
    assert item.type_ids == [0, 0, 1]


def test_every_cpu_batch_asks_the_heap_trimmer(classifier, monkeypatch):
    """The trimmer decides when freed activations go back (weights/mapped.py); the engine asks it once per
    batch, so a long run never gathers more than its budget of garbage."""
    import coulisse.engine.engine as engine_module

    calls = []
    monkeypatch.setattr(engine_module.heap_trimmer, "after_batch", lambda: calls.append(1))
    items = classifier.preprocess(TEXTS)
    monkeypatch.setattr(classifier.engine, "max_batch_tokens", max(len(it.ids) for it in items))
    batches = classifier.engine.plan([len(it.ids) for it in items])
    assert len(batches) > 1
    classifier.forward(items)
    assert len(calls) == len(batches)

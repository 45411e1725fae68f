"""`pipeline("token-classification")` (alias "ner") equals transformers 5's pipeline: same entities, labels,
words, offsets and indices, scores within 1e-4, for the seven families with their real tokenizers, every
`aggregation_strategy`, `ignore_labels`, and long texts cut into strided windows.

The checkpoints (tests/task_factory.py) are random, with B-/I- labels and a bias that makes about 40% of
tokens "O", and a tokenizer limit of 40 tokens, so the long text spans several windows.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from factory import ARCHS, max_delta

from coulisse import pipeline
from coulisse.errors import InputError, ModelLoadError
from coulisse.tasks.token_classification import AGGREGATIONS, text_entities

# transformers warns once per token when the tokenizer has no subword marker; coulisse logs it once per call.
pytestmark = pytest.mark.filterwarnings("ignore:Tokenizer does not support real words")

TEXTS = [
    "Emmanuel Macron a rencontré Angela Merkel à Berlin, puis Jean-Baptiste est rentré à Montréal.",
    "Je m'appelle jean-baptiste et je vis à montréal",
    "Bœuf, cœur, sœur : l'œuvre de Zoë à Saint-Étienne 😍",
    "Où est passé le réalisateur d'« Amélie » ?",
]
LONG = " ".join(TEXTS * 2)
MAX_LENGTH = 40
OPTIONS = [{}] + [{"aggregation_strategy": a} for a in AGGREGATIONS] + [
    {"aggregation_strategy": "none", "ignore_labels": []},
    {"aggregation_strategy": "simple", "ignore_labels": ["O", "LOC"]},
    {"aggregation_strategy": "average", "ignore_labels": []},
]


def option_id(options: dict) -> str:
    return ",".join(f"{k}={v}" for k, v in options.items()) or "default"


def assert_same_entities(ours: list, theirs: list, kind: str) -> None:
    """Same entities in the same order, same keys in the same order, equal values; scores within 1e-4."""
    assert isinstance(ours, list) and len(ours) == len(theirs), (ours, theirs)
    if theirs and isinstance(theirs[0], list):
        for a, b in zip(ours, theirs, strict=True):
            assert_same_entities(a, b, kind)
        return
    for a, b in zip(ours, theirs, strict=True):
        assert list(a) == list(b), (a, b)
        assert [v for k, v in a.items() if k != "score"] == [v for k, v in b.items() if k != "score"], (a, b)
        assert isinstance(a["score"], float)
    if theirs:
        delta = max_delta(kind, [a["score"] for a in ours], [float(b["score"]) for b in theirs])
        assert delta <= 1e-4, f"{kind}: max |Δ score| = {delta:.3g}"


def written_as_the_text(theirs: list, texts: str | list[str], aggregation: str | None, hf_tokenizer) -> list:
    """transformers' entities, with each group's word read from the text between transformers' own offsets,
    where coulisse differs on purpose: word aggregations on a SentencePiece tokenizer, whose words transformers
    joins without the spaces between them ("cours d'HuggingFace" -> "coursd'HuggingFace")."""
    backend = hf_tokenizer.backend_tokenizer
    if aggregation not in ("first", "average", "max") or type(backend.model).__name__ == "WordPiece" or \
            type(backend.decoder).__name__ == "ByteLevel":  # byte-level BPE keeps each word's space: no gluing
        return theirs
    if isinstance(texts, str):
        return written_as_the_text([theirs], [texts], aggregation, hf_tokenizer)[0]
    return [[{**entity, "word": text[entity["start"] : entity["end"]]} for entity in entities]
            for text, entities in zip(texts, theirs, strict=True)]


def test_a_group_of_words_is_written_as_the_text_has_it(task_factory):
    """CamemBERT (SentencePiece): transformers' "first" glues a group's words ("coursd'HuggingFacetoute");
    coulisse writes the text's own characters, spaces included."""
    directory = task_factory.checkpoint("camembert", "token-classification", model_max_length=MAX_LENGTH)
    ours = pipeline("ner", model=directory)
    for aggregation in ("first", "average", "max"):
        groups = [e for e in ours(TEXTS[0], aggregation_strategy=aggregation, ignore_labels=[])]
        assert any(" " in e["word"] for e in groups), groups  # a group of several words, spaces kept
        for e in groups:
            assert e["word"] == TEXTS[0][e["start"] : e["end"]] and e["word"] == e["word"].strip(), e


@pytest.fixture(scope="module", params=ARCHS)
def pipes(request, task_factory):
    directory = task_factory.checkpoint(request.param, "token-classification", model_max_length=MAX_LENGTH)
    return pipeline("ner", model=directory), task_factory.hf_pipeline("token-classification", directory)


@pytest.mark.parametrize("options", OPTIONS, ids=option_id)
def test_entities_equal_transformers(pipes, options):
    ours, theirs = pipes
    aggregation = options.get("aggregation_strategy")
    assert_same_entities(ours(TEXTS, **options),
                         written_as_the_text(theirs(TEXTS, **options), TEXTS, aggregation, theirs.tokenizer),
                         "ner scores")
    assert_same_entities(ours(TEXTS[0], **options),
                         written_as_the_text(theirs(TEXTS[0], **options), TEXTS[0], aggregation, theirs.tokenizer),
                         "ner scores")


@pytest.mark.parametrize("options", [{"stride": 8}, {"stride": 0, "aggregation_strategy": "simple"}] + [
    {"stride": 8, "aggregation_strategy": a} for a in AGGREGATIONS[1:]], ids=option_id)
def test_long_text_windows_equal_transformers(pipes, options):
    ours, theirs = pipes
    windows = ours.preprocess([LONG], options["stride"]).context[0]  # the windows of each text
    assert len(windows) >= 3  # the overlap resolution has work to do
    expected = written_as_the_text(theirs(LONG, **options), LONG, options.get("aggregation_strategy"),
                                   theirs.tokenizer)
    assert_same_entities(ours(LONG, **options), expected, "ner scores (strided windows)")


def test_long_text_without_stride_is_truncated_as_transformers(pipes):
    ours, theirs = pipes
    options = {"aggregation_strategy": "simple"}
    assert_same_entities(ours([LONG], **options), theirs([LONG], **options), "ner scores")


def test_random_model_exercises_grouping_and_ignore_labels(pipes):
    """The oracle comparison means something only if "O" is dropped and groups span several tokens."""
    ours, _ = pipes

    def count(**options) -> int:
        return sum(len(entities) for entities in ours(TEXTS, **options))

    tokens = [e for text in ours(TEXTS, ignore_labels=[]) for e in text]
    labels = {e["entity"] for e in tokens}
    assert "O" in labels and labels & {"B-PER", "B-LOC"} and labels & {"I-PER", "I-LOC"}, labels
    assert 0 < count() < len(tokens)
    assert count(aggregation_strategy="simple", ignore_labels=[]) < len(tokens)
    assert count(aggregation_strategy="first", ignore_labels=[]) < count(aggregation_strategy="simple",
                                                                         ignore_labels=[])


def test_postprocess_without_weights_equals_transformers(pipes):
    """Stage 3 alone: the same (peaky, seeded) logits through both post-processings, every strategy."""
    ours, theirs = pipes
    rng = np.random.default_rng(0)
    encoding = ours.tokenizer.encode_batch([TEXTS[0]])[0]
    logits = rng.normal(0, 3, size=(len(encoding.ids), len(ours.config.id2label))).astype(np.float32)
    outputs = {"logits": torch.from_numpy(logits)[None], "sentence": TEXTS[0],
               "special_tokens_mask": torch.tensor([encoding.special_tokens_mask]),
               "offset_mapping": torch.tensor([encoding.offsets]), "input_ids": torch.tensor([encoding.ids]),
               "is_last": True, "word_ids": None, "word_to_chars_map": None}
    from transformers.pipelines.token_classification import AggregationStrategy

    for aggregation in AGGREGATIONS:
        for ignore in (None, [], ["O", "PER"]):
            expected = written_as_the_text(theirs.postprocess([outputs], AggregationStrategy(aggregation), ignore),
                                           TEXTS[0], aggregation, theirs.tokenizer)
            got = text_entities(TEXTS[0], [encoding], [logits], ours.tokenizer, ours.config.id2label,
                                aggregation, ignore)
            assert_same_entities(got, expected, "ner post-processing alone")


def test_batched_equals_one_by_one(pipes):
    ours, _ = pipes
    for options in ({}, {"aggregation_strategy": "simple"}, {"aggregation_strategy": "max", "stride": 8}):
        assert_same_entities(ours(TEXTS + [LONG], **options), [ours(t, **options) for t in TEXTS + [LONG]],
                             "ner batched vs one by one")


def test_option_errors(pipes):
    ours, _ = pipes
    with pytest.raises(InputError, match="aggregation_strategy"):
        ours(TEXTS[0], aggregation_strategy="longest")
    with pytest.raises(InputError, match="aggregation_strategy"):
        ours(LONG, aggregation_strategy="none", stride=8)
    with pytest.raises(InputError, match="stride=40"):
        ours(LONG, aggregation_strategy="simple", stride=MAX_LENGTH)
    with pytest.raises(InputError, match="unknown option"):
        ours(TEXTS[0], grouped_entities=True)


def test_checkpoint_without_token_head_is_refused(factory):
    with pytest.raises(ModelLoadError, match="token-classification head"):
        pipeline("token-classification", model=factory.checkpoint("camembert", base=True))

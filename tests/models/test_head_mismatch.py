"""A checkpoint asked for another head than the one it was fine-tuned with (audit 40): a head it half holds is
refused as a missing head, not as a file that disagrees with its config; a head whose tensors it holds under the
same names and shapes loads, as in transformers, with a warning that its outputs were trained for another task."""

from __future__ import annotations

import logging

import pytest

from coulisse.errors import ModelLoadError
from coulisse.pipelines import load_checkpoint, pipeline


def test_a_token_classifier_asked_for_sentence_labels_lacks_the_pooler(task_factory):
    """BERT's token classifier has classifier.*, the sentence head's names, but no pooler."""
    directory = task_factory.checkpoint("bert", "token-classification")
    with pytest.raises(ModelLoadError) as error:
        load_checkpoint(directory, "sequence-classification")
    message = str(error.value)
    assert "has no complete sequence-classification head" in message
    assert "pooler.dense.weight" in message and "BertForTokenClassification" in message
    assert "use task 'token-classification' or task 'feature-extraction'" in message
    assert "does not match its config.json" not in message


def test_a_missing_head_names_the_task_the_architectures_run(task_factory):
    """A masked LM asked for labels was told to use 'feature-extraction' alone (audit 44): the task its
    architectures run comes first."""
    directory = task_factory.checkpoint("camembert", "masked-lm")
    with pytest.raises(ModelLoadError) as error:
        load_checkpoint(directory, "sequence-classification")
    assert "use task 'fill-mask' or task 'feature-extraction'" in str(error.value)


def test_a_sentence_classifier_read_as_a_token_classifier_warns(factory, caplog):
    """classifier.weight has the same name and shape in both BERT heads: it loads per token, and says so once."""
    directory = factory.checkpoint("bert")
    with caplog.at_level(logging.WARNING, logger="coulisse.models.model"):
        tagger = pipeline("ner", model=directory)
    warnings = [r.getMessage() for r in caplog.records if r.name == "coulisse.models.model"]
    assert len(warnings) == 1, warnings
    assert "BertForSequenceClassification" in warnings[0] and "token-classification" in warnings[0]
    assert isinstance(tagger("Jean habite à Paris."), list)


@pytest.mark.parametrize("task", ["text-classification", "feature-extraction"])
def test_the_head_its_architectures_name_loads_without_a_word(factory, caplog, task):
    directory = factory.checkpoint("bert")
    with caplog.at_level(logging.WARNING, logger="coulisse.models.model"):
        pipeline(task, model=directory)
    assert not [r for r in caplog.records if r.name == "coulisse.models.model"]

"""The one contract: every task declares its options and implements the stages; the base class owns the call."""

from __future__ import annotations

import re

import numpy as np
import pytest

from coulisse import pipeline
from coulisse.errors import DeviceError, InputError
from coulisse.tasks import TASKS
from coulisse.tasks.base import Batch, Pipeline
from coulisse.tasks.functional import sigmoid, softmax, top_k
from coulisse.tasks.text_classification import TextClassificationPipeline


@pytest.mark.parametrize("name", sorted(TASKS))
def test_every_task_follows_the_contract(name):
    cls = TASKS[name]
    assert issubclass(cls, Pipeline)
    assert cls.__call__.__code__ is Pipeline.__call__.__code__, f"{name} writes its own __call__"
    for stage in ("preprocess", "postprocess"):
        assert stage in vars(cls), f"{name} does not implement {stage}"
    assert cls.OPTIONS, f"{name} declares no options"
    assert not [m for m in vars(cls) if m in ("_options", "check_options")], "options are checked in one place"


@pytest.mark.parametrize("name", sorted(TASKS))
def test_none_leaves_an_option_at_its_default(name):
    """transformers' `_sanitize_parameters` reads None as "not set" (`if top_k is not None`): so does every
    option here, but those transformers takes whenever they are given: text-classification's top_k (None: every
    label) and max_length (a tokenizer keyword, handed over as given), zero-shot's multi_label (`if
    "multi_label" in kwargs`)."""
    cls = TASKS[name]
    for option, spec in cls.option_table().items():
        checked = cls.check_options({option: None})
        if spec.none_is_value:
            assert checked == {option: None}, option
        else:
            assert checked == {}, option
    assert [o for o, spec in cls.option_table().items() if spec.none_is_value] == {
        "text-classification": ["top_k", "max_length"], "zero-shot-classification": ["multi_label"]}.get(name, [])


@pytest.mark.parametrize("task, options, word", [
    ("sentiment-analysis", {"top_kk": 1}, "top_kk"),
    ("sentiment-analysis", {"top_k": 0}, "top_k"),
    ("sentiment-analysis", {"function_to_apply": "softplus"}, "softplus"),
    ("feature-extraction", {"pooling": "max"}, "pooling"),
    ("fill-mask", {"tokenizer_kwargs": {"truncate": True}}, "'truncate' (did you mean 'truncation'?)"),
    ("fill-mask", {"tokenizer_kwargs": {"max_length": 0}}, "max_length"),
    ("feature-extraction", {"tokenize_kwargs": {"truncation": "longest"}}, "truncation"),
    ("token-classification", {"is_split_into_words": True}, "is_split_into_words"),
    ("text-classification", {"batchsize": 8}, "'batchsize' (did you mean 'batch_size'?)"),
    ("text-classification", {"batch_size": 0}, "batch_size"),
    ("text-classification", {"truncation": "sometimes"}, "truncation"),
    ("text-classification", {"padding": "maximum"}, "padding"),
    ("text-classification", {"model_kwargs": {"dtyp": "auto"}}, "'dtyp' (did you mean 'dtype'?)"),
    ("text-classification", {"device_map": {"a": "cpu", "b": "meta"}}, "splits the model"),
    ("fill-mask", {"top_k": "5"}, "top_k"),
    ("question-answering", {"doc_stride": -1}, "doc_stride"),
    ("zero-shot-classification", {"hypothesis_template": "no braces"}, "{}"),
    ("token-classification", {"aggregation_strategy": "loudest"}, "aggregation_strategy"),
])
def test_constructor_options_are_checked_before_the_model_loads(tmp_path, task, options, word):
    """The folder does not exist: an option error that wins over the loading error was checked first."""
    with pytest.raises((InputError, DeviceError), match=re.escape(word)):
        pipeline(task, model=str(tmp_path / "no-such-model"), **options)


@pytest.mark.parametrize("task", ["text-classification", "feature-extraction"])
def test_a_text_of_no_token_is_one_input_error(tf_camembert_dir, task):
    """add_special_tokens=False on "" (or spaces) leaves nothing for the model: one InputError naming the input
    (it was an internal ValueError of the attention kernel, or an IndexError)."""
    pipe = pipeline(task, model=str(tf_camembert_dir))
    options = {"add_special_tokens": False} if task == "text-classification" else {
        "tokenize_kwargs": {"add_special_tokens": False}}
    for inputs, index in (("", 0), (["Un bon film.", "   "], 1)):
        with pytest.raises(InputError, match=f"input {index} has no tokens .*add_special_tokens=True"):
            pipe(inputs, **options)
    assert pipe("Un bon film.", **options) is not None  # a text with tokens still runs without specials


def test_call_options_merge_table_pipeline_and_call(tf_camembert_dir):
    classifier = pipeline("sentiment-analysis", model=str(tf_camembert_dir), top_k=None)
    texts = ["Un film magnifique.", "Bof."]
    every = classifier(texts)
    assert [len(r) for r in every] == [2, 2]  # the pipeline's default: every label
    assert [set(r) for r in classifier(texts, top_k=1)[0]] == [{"label", "score"}]  # the call's wins
    with pytest.raises(InputError, match="unknown option"):
        classifier(texts, topk=1)


def test_stages_compose_to_the_call(tf_camembert_dir):
    """preprocess -> forward -> postprocess is exactly what `__call__` returns, for a bare string too."""
    classifier = pipeline("sentiment-analysis", model=str(tf_camembert_dir))
    for inputs in ("Je déteste tellement ça !", ["Un film magnifique.", "Bof."]):
        batch = classifier.preprocess(inputs)
        assert isinstance(batch, Batch) and len(batch) == (1 if isinstance(inputs, str) else 2)
        options = classifier.options({})
        staged = classifier.postprocess(classifier.forward(batch), batch, **classifier.stage_options(options, "post"))
        assert staged == classifier(inputs)


def test_shared_numpy_helpers():
    x = np.array([[1.0, 2.0, 3.0], [1000.0, 1000.0, 0.0]])
    p = softmax(x)
    np.testing.assert_allclose(p.sum(-1), 1.0)
    np.testing.assert_allclose(p[1, :2], 0.5)  # no overflow on large logits
    np.testing.assert_allclose(sigmoid(np.array([0.0])), 0.5)
    assert top_k(np.array([0.1, 0.5, 0.5, 0.2]), 3).tolist() == [1, 2, 3]  # ties keep index order
    assert top_k(np.array([0.3, 0.1]), None).tolist() == [0, 1]


def test_progress_counts_every_input_once_per_engine_batch():
    """`progress=` (documented in docs/dropin.md): a callable given the inputs finished after each engine batch;
    the counts add up to the inputs, a list's or a stream's."""
    pipe = pipeline("text-classification", model="coulisse/mini-allocine", max_batch_size=64)
    texts = [f"Un film {'très ' * (i % 7)}bon." for i in range(300)]
    done: list[int] = []
    assert pipe(texts, progress=done.append) == pipe(texts)
    assert sum(done) == len(texts) and len(done) >= len(texts) // 64 and max(done) <= 64
    streamed: list[int] = []
    assert list(pipe(iter(texts), progress=streamed.append)) == pipe(texts)
    assert sum(streamed) == len(texts)


def test_progress_true_is_a_bar_and_anything_else_is_refused_before_work(capsys):
    """`progress=True`, a notebook user's first guess, ran the first batch and then failed with "'bool' object is
    not callable"; it is a tqdm bar over the inputs. `show_progress_bar` (sentence-transformers') is told it."""
    pipe = pipeline("text-classification", model="coulisse/mini-allocine")
    texts = [f"Un film {'très ' * (i % 7)}bon." for i in range(40)]
    assert pipe(texts, progress=True) == pipe(texts) and pipe(texts, progress=False) == pipe(texts)
    assert "40/40" in capsys.readouterr().err  # the bar, closed at its total
    forward = pipe.forward
    pipe.forward = lambda *a, **k: pytest.fail("the model ran before the option was refused")
    try:
        with pytest.raises(InputError, match="progress=3; pass True for a progress bar, or a callable"):
            pipe(texts, progress=3)
        with pytest.raises(InputError, match="'show_progress_bar' .did you mean 'progress'"):
            pipe(texts, show_progress_bar=True)
    finally:
        pipe.forward = forward


def test_a_streams_refusal_names_the_streams_position():
    """A stream is checked a window at a time: `text[44]` of the window read at input 256 is the row 300 a user
    looks up (the message named 44 alone)."""
    pipe = pipeline("text-classification", model="coulisse/mini-allocine")
    texts = ["Un bon film."] * 600
    texts[300] = None
    with pytest.raises(InputError, match=r"text\[44\] is a NoneType.*the stream's input 300\)"):
        list(pipe(t for t in texts))
    texts[300], texts[3] = "ok", None
    with pytest.raises(InputError) as first:  # the first window's positions are the stream's: said as they are
        list(pipe(t for t in texts))
    assert "text[3]" in str(first.value) and "stream" not in str(first.value)


def test_the_repr_says_what_the_pipeline_runs_in():
    exact = pipeline("text-classification", model="coulisse/mini-allocine")
    assert repr(exact) == "TextClassificationPipeline(task='text-classification', model='coulisse/mini-allocine')"
    assert "quantize='int8'" in repr(pipeline("text-classification", model="coulisse/mini-allocine",
                                              quantize="int8"))
    assert "name_or_path=" in repr(exact.tokenizer) and "'pad': '<pad>'" in repr(exact.tokenizer)


@pytest.mark.parametrize("task", sorted(TASKS))
def test_help_of_a_call_lists_the_task_keywords(task):
    """`help(pipe.__call__)` (and Jupyter's `pipe?`) names every keyword the task takes, with its default and
    one line on what it does: docs/dropin.md, which says the same at length, is not in the wheel."""
    cls = TASKS[task]
    doc = cls.__call__.__doc__
    assert cls.__call__.__code__ is Pipeline.__call__.__code__  # the same call, no wrapper frame
    assert f"Keywords of {cls.task}" in doc and "progress=None: " in doc
    for name, option in cls.option_table().items():
        assert option.doc, f"{task}: {name} says nothing"
        assert f"    {name}={option.default!r}: {option.doc}\n" in doc, (task, name)


def test_a_subclass_keeps_its_own_call():
    class Mine(TextClassificationPipeline):
        def __call__(self, *args, **kwargs):
            """Mine."""
            return "mine"

    class Below(Mine):
        pass

    assert Below.__call__ is Mine.__call__ and Below.__call__.__doc__ == "Mine."

"""`coulisse.pipeline`: the three public stages of the notebook, batching that does not change results, and
post-processing with transformers' output shapes and default rule. Oracles: transformers 5's
`pipeline("text-classification")` on the same tiny checkpoint, and the TF fixture's logits."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from factory import TEXTS, assert_close

from coulisse import pipeline
from coulisse.errors import InputError
from coulisse.tasks.text_classification import default_function, label_scores

SHORT = ["Un film magnifique, des acteurs excellents.", "Quel ennui… deux heures perdues !", "Bof.",
         "« Amélie » 😍", "À\tvoir\nabsolument"]

# (num_labels, problem_type) -> the function transformers applies by default
LABEL_CONFIGS = {
    "3-labels": (3, None),
    "3-labels-single": (3, "single_label_classification"),
    "1-label": (1, None),
    "multi-label": (3, "multi_label_classification"),
    "regression": (1, "regression"),
}
OPTIONS = [{}, {"top_k": 1}, {"top_k": None}, {"top_k": 2}, {"function_to_apply": "softmax"},
           {"function_to_apply": "sigmoid", "top_k": None}, {"function_to_apply": "none", "top_k": 2}]


def assert_same_results(ours, theirs, tol: float = 1e-4) -> None:
    """Same nesting, same labels in the same order, scores within `tol`."""
    assert type(ours) is type(theirs), (ours, theirs)
    if isinstance(theirs, list):
        assert len(ours) == len(theirs), (ours, theirs)
        for a, b in zip(ours, theirs, strict=True):
            assert_same_results(a, b, tol)
    else:
        assert set(ours) == set(theirs) == {"label", "score"}
        assert ours["label"] == theirs["label"], (ours, theirs)
        assert isinstance(ours["score"], float)
        assert abs(ours["score"] - theirs["score"]) <= tol, (ours, theirs)


@pytest.fixture(scope="module", params=list(LABEL_CONFIGS))
def pipes(request, factory):
    import transformers

    num_labels, problem_type = LABEL_CONFIGS[request.param]
    directory = factory.checkpoint("bert", num_labels=num_labels, problem_type=problem_type)
    theirs = transformers.pipeline("text-classification", model=str(directory), device="cpu")
    return pipeline("text-classification", model=directory), theirs


# -- post-processing --------------------------------------------------------------------------------


@pytest.mark.parametrize("options", OPTIONS,
                         ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()) or "default")
def test_outputs_equal_transformers_pipeline(pipes, options):
    ours, theirs = pipes
    assert_same_results(ours(SHORT[0], **options), theirs(SHORT[0], **options))
    assert_same_results(ours(SHORT, **options), theirs(SHORT, **options))


def test_legacy_shapes(pipes):
    ours, _ = pipes
    single = ours(SHORT[0])
    assert isinstance(single, list) and len(single) == 1 and set(single[0]) == {"label", "score"}
    many = ours(SHORT[:2])
    assert isinstance(many, list) and all(isinstance(r, dict) for r in many)
    every = ours(SHORT[0], top_k=None)
    assert [r["label"] for r in every] != [] and len(every) == ours.config.num_labels
    assert [r["score"] for r in every] == sorted((r["score"] for r in every), reverse=True)


def test_postprocess_without_weights_equals_transformers(pipes):
    """label_scores / default_function are plain numpy: feed both implementations the same logits."""
    from transformers.pipelines.text_classification import ClassificationFunction

    ours, theirs = pipes
    cfg = ours.config
    rng = np.random.default_rng(0)
    function = default_function(cfg.problem_type, cfg.num_labels)
    for _ in range(5):
        logits = rng.normal(scale=3, size=cfg.num_labels).astype(np.float32)
        outputs = {"logits": torch.from_numpy(logits[None])}
        for top_k, legacy in [(1, True), (1, False), (None, False), (2, False)]:
            assert_same_results(label_scores(logits, cfg.id2label, function, top_k, legacy),
                                theirs.postprocess(outputs, top_k=top_k, _legacy=legacy), tol=1e-6)
            for name in ("softmax", "sigmoid", "none"):
                assert_same_results(
                    label_scores(logits, cfg.id2label, name, top_k, legacy),
                    theirs.postprocess(outputs, function_to_apply=ClassificationFunction[name.upper()],
                                       top_k=top_k, _legacy=legacy), tol=1e-6)


@pytest.mark.parametrize(("problem_type", "num_labels", "function"), [
    ("regression", 1, "none"), ("regression", 3, "none"), ("multi_label_classification", 3, "sigmoid"),
    (None, 1, "sigmoid"), ("single_label_classification", 1, "sigmoid"), (None, 2, "softmax"),
    ("single_label_classification", 5, "softmax"),
])
def test_default_function_rule(problem_type, num_labels, function):
    """transformers' rule, as written in TextClassificationPipeline.postprocess."""
    assert default_function(problem_type, num_labels) == function


def test_pipeline_keyword_defaults_and_bad_options(pipes):
    """top_k given to pipeline(): transformers still wraps a bare string's result in a list (only a call's
    own top_k unwraps it)."""
    import transformers

    ours, _ = pipes
    directory = ours.checkpoint.directory
    for top_k in (None, 1, 2):
        every = pipeline("text-classification", model=directory, top_k=top_k)
        theirs = transformers.pipeline("text-classification", model=str(directory), device="cpu", top_k=top_k)
        assert_same_results(every(SHORT[0]), theirs(SHORT[0]))
        assert_same_results(every(SHORT[:2]), theirs(SHORT[:2]))
        assert_same_results(every(SHORT[0], top_k=top_k), theirs(SHORT[0], top_k=top_k))
    with pytest.raises(InputError, match="top_k"):
        ours(SHORT[0], top_k=0)
    with pytest.raises(InputError, match="function_to_apply"):
        ours(SHORT[0], function_to_apply="tanh")
    with pytest.raises(InputError, match="unknown option 'top_n' \\(did you mean 'top_k'\\?\\)"):
        ours(SHORT[0], top_n=2)


def test_text_pairs_equal_transformers(factory):
    import transformers

    directory = factory.checkpoint("bert")
    ours = pipeline("text-classification", model=directory)
    theirs = transformers.pipeline("text-classification", model=str(directory), device="cpu")
    pair = {"text": "Le film est-il bon ?", "text_pair": "Oui, excellent."}
    assert_same_results(ours(pair), theirs(pair))
    assert_same_results(ours([pair, {"text": "Bof.", "text_pair": "Nul."}], top_k=None),
                        theirs([pair, {"text": "Bof.", "text_pair": "Nul."}], top_k=None))
    # text_pair= as a call keyword: transformers hands it to the tokenizer, the second member of every text's pair
    for inputs, options in (("Le film est-il bon ?", {}), ("Le film est-il bon ?", {"top_k": None}),
                            (["Le film est-il bon ?", "Bof."], {})):
        assert_same_results(ours(inputs, text_pair="Oui, excellent.", **options),
                            theirs(inputs, text_pair="Oui, excellent.", **options))
    assert_same_results(ours("Le film est-il bon ?", text_pair="Oui, excellent."), [ours(pair)])
    with pytest.raises(InputError, match="text_pair is given twice"):
        ours(pair, text_pair="Non.")
    with pytest.raises(InputError, match="text_pair=3"):
        ours("Bof.", text_pair=3)


@pytest.mark.parametrize("arch", ["camembert", "roberta", "bert"])
def test_special_token_strings_in_a_text_equal_transformers(factory, arch):
    """A text that holds the pad token's string ("x<pad>y"): the same ids as transformers, and, for the RoBERTa
    family, the pad token's position, not counted in the others' (transformers numbers positions from the
    ids); batched with other texts or alone alike."""
    import transformers

    directory = factory.checkpoint(arch)
    ours = pipeline("text-classification", model=directory)
    theirs = transformers.pipeline("text-classification", model=str(directory), device="cpu")
    specials = ours.tokenizer.special_tokens
    texts = [f"Un film{specials['pad']} magnifique.", f"{specials['pad']}{specials['pad']}Bof.",
             f"Quel {specials['cls']} ennui{specials['sep']} !", "Sans rien de spécial."]
    assert [ours.tokenizer(t)["input_ids"] for t in texts] == [theirs.tokenizer(t)["input_ids"] for t in texts]
    assert_same_results(ours(texts, top_k=None, function_to_apply="none"),
                        theirs(texts, top_k=None, function_to_apply="none"))
    assert_same_results(ours(texts[0], top_k=None), theirs(texts[0], top_k=None))


# -- batching never changes results -------------------------------------------------------------------


@pytest.mark.parametrize("arch", ["camembert", "bert", "distilbert"])
@pytest.mark.parametrize("max_batch_tokens", [4096, 40])
def test_batched_equals_one_by_one(factory, arch, max_batch_tokens):
    pipe = pipeline("text-classification", model=factory.checkpoint(arch), max_batch_tokens=max_batch_tokens)
    texts = TEXTS + SHORT
    batched = pipe(texts, top_k=None, function_to_apply="none")
    for text, result in zip(texts, batched, strict=True):
        single = pipe(text, top_k=None, function_to_apply="none")
        assert [r["label"] for r in single] == [r["label"] for r in result]
        assert_close("pipeline batched vs one by one", [r["score"] for r in result],
                     [r["score"] for r in single], tol=1e-5)

    features = pipeline("feature-extraction", model=factory.checkpoint(arch, base=True),
                        max_batch_tokens=max_batch_tokens)
    batched = features(texts)
    for text, result in zip(texts, batched, strict=True):
        assert_close("feature-extraction batched vs one by one", np.asarray(result),
                     np.asarray(features(text)), tol=1e-5)


def test_feature_extraction_shape_and_tensors(factory):
    pipe = pipeline("feature-extraction", model=factory.checkpoint("roberta", base=True))
    ids = pipe.tokenizer(SHORT[0])["input_ids"]
    out = pipe(SHORT[0])
    assert len(out) == 1 and len(out[0]) == len(ids) and len(out[0][0]) == 32
    tensor = pipe(SHORT[0], return_tensors=True)
    assert isinstance(tensor, torch.Tensor) and tensor.shape == (1, len(ids), 32)
    assert np.allclose(tensor.numpy(), np.asarray(out))


# -- the notebook's three stages, on the TensorFlow oracle ----------------------------------------------


def test_three_stages_like_the_notebook(tf_camembert_dir):
    expected = json.loads((tf_camembert_dir / "expected.json").read_text(encoding="utf-8"))
    classifier = pipeline("sentiment-analysis", model=tf_camembert_dir)
    raw_inputs = expected["texts"][:2]

    inputs = classifier.tokenizer(raw_inputs, padding=True, truncation=True, return_tensors="pt")
    assert inputs["input_ids"][0].tolist() == expected["input_ids"][0]
    outputs = classifier.model(**inputs)
    assert outputs.logits.shape == torch.Size([2, 2])
    assert_close("notebook stages vs TF", outputs.logits, np.float32(expected["logits"][:2]))
    assert classifier.model.config.id2label == {0: "NEGATIVE", 1: "POSITIVE"}

    logits = np.asarray(expected["logits"][:2], dtype=np.float64)
    probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    want = [{"label": ["NEGATIVE", "POSITIVE"][int(p.argmax())], "score": float(p.max())} for p in probs]
    assert_same_results(classifier.postprocess(outputs.logits), want)
    assert_same_results(classifier(raw_inputs), want)
    assert_same_results(classifier(raw_inputs[0]), want[:1])


def test_stage_three_given_something_else_than_logits_says_so(tf_camembert_dir):
    """The course computes softmax(outputs.logits) the cell before: passing those probabilities applied a second
    softmax (scores flattened, silently); argmax's class ids gave one result at 0.5; a base model's output, hidden
    states or a wrong width answered garbage or a KeyError (audit 46)."""
    import warnings

    import transformers

    classifier = pipeline("sentiment-analysis", model=tf_camembert_dir)
    inputs = classifier.tokenizer(["Super film !", "Quel ennui..."], padding=True, return_tensors="pt")
    logits = classifier.model(**inputs).logits
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        classifier.postprocess(logits)  # logits: no warning
    with pytest.warns(UserWarning, match="sum to 1, probabilities.*pass outputs.logits"):
        classifier.postprocess(torch.nn.functional.softmax(logits, dim=-1))
    from coulisse import AutoModel

    base = AutoModel.from_pretrained(tf_camembert_dir)(**inputs)
    theirs = transformers.modeling_outputs.BaseModelOutput(last_hidden_state=base.last_hidden_state)
    ids = logits.argmax(-1)
    for wrong, said in ((ids, rf"integers \[{ids[0]}, {ids[1]}\] \(class ids"),
                        (torch.randn(2, 3), "3 scores per text; this model has 2 labels"),
                        (base, "a base model's output"), (theirs, "a base model's output"),
                        (base.last_hidden_state, r"shape \(2, \d+, \d+\) \(a base model's last_hidden_state")):
        with pytest.raises(InputError, match=said):
            classifier.postprocess(wrong)


def test_unknown_task_is_refused(tf_camembert_dir):
    with pytest.raises(InputError, match="summarization") as far:
        pipeline("summarization", model=tf_camembert_dir)
    assert "did you mean" not in str(far.value)
    # The French spelling, a likely first try, gets the closest task.
    with pytest.raises(InputError, match=r"^unknown task 'sentiment-analyse' \(did you mean 'sentiment-analysis'\?\)"):
        pipeline("sentiment-analyse", model=tf_camembert_dir)
    # the model given first, a common slip: said how to pass it (audit 46)
    for model in (str(tf_camembert_dir), "tblard/tf-allocine"):
        with pytest.raises(InputError, match=r"a folder or a Hub id\? the task comes first and the model second"):
            pipeline(model)


def test_max_batch_size_reaches_the_engine(factory):
    """A caller that already cut its batches (the server's batcher) passes its count; nothing is set on the
    engine from outside."""
    pipe = pipeline("text-classification", model=factory.checkpoint("camembert"), max_batch_size=2)
    assert [len(batch) for batch in pipe.engine.plan([5] * 5)] == [2, 2, 1]
    for text, result in zip(SHORT * 3, pipe(SHORT * 3, top_k=None), strict=True):
        assert_close("pipeline max_batch_size=2 vs one by one", [r["score"] for r in result],
                     [r["score"] for r in pipe(text, top_k=None)], tol=1e-5)


def test_help_names_every_task():
    """`help(pipeline)` is where a notebook user looks for the task names: each task and alias is there,
    quoted as it is passed, so a task added to TASKS without a line in the docstring fails here."""
    from coulisse.pipelines import ALIASES, TASKS, pipeline

    for name in [*TASKS, *ALIASES]:
        assert f'"{name}"' in pipeline.__doc__, name


def test_a_pipeline_pickles_as_how_it_was_built(tmp_path, tf_camembert_dir, monkeypatch):
    """transformers' pipelines pickle (joblib, a spawned worker, deepcopy); coulisse's prepared weights are
    oneDNN's opaque tensors, which torch cannot serialize, and pickling failed on them (audit 39). A pipeline
    pickles as `pipeline()`'s arguments, options included, and unpickles to the same answers."""
    import concurrent.futures
    import copy
    import multiprocessing
    import pickle

    texts = ["Un film excellent.", "Quel navet !"]
    pipe = pipeline("sentiment-analysis", model="coulisse/mini-allocine", top_k=None, quantize="int8", threads=1)
    data = pickle.dumps(pipe)
    assert len(data) < 10_000  # the recipe, not the weights
    again = pickle.loads(data)
    assert again.preparation.quantize == "int8" and again.preparation.threads == 1
    assert again(texts) == pipe(texts) and len(again(texts)[0]) == 2  # top_k=None kept: every label
    assert copy.deepcopy(pipe)(texts) == pipe(texts)
    relative = tmp_path / "work"
    shutil.copytree(tf_camembert_dir, relative / "m")
    monkeypatch.chdir(relative)
    local = pickle.dumps(pipeline("sentiment-analysis", model="m", tokenizer="m"))
    monkeypatch.chdir(tmp_path)  # unpickled elsewhere: "m" is the folder it was, not a Hub id
    assert pickle.loads(local).checkpoint.directory == (relative / "m").resolve()
    for where in ({"token": "hf_secret_token"}, {"model_kwargs": {"token": "hf_secret_token"}}):
        secret = pipeline("sentiment-analysis", model="coulisse/mini-allocine", **where)
        assert b"secret" not in pickle.dumps(secret)  # never a token in a pickle (coulisse does not use it anyway)
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        assert pool.submit(pipe, texts).result(timeout=300) == pipe(texts)


def test_a_pipeline_built_without_the_factory_says_why_it_does_not_pickle(tf_camembert_dir):
    import pickle

    from coulisse.checkpoint import load_checkpoint
    from coulisse.tasks import TextClassificationPipeline

    direct = TextClassificationPipeline(load_checkpoint(tf_camembert_dir, "sequence-classification"))
    with pytest.raises(TypeError, match="built without coulisse.pipeline"):
        pickle.dumps(direct)


def test_an_async_generator_is_told_how_to_call_from_asyncio():
    """An async generator is not an iterable the call can read: the message says what to do (it said "must be a
    string or a list of strings, got async_generator": audit 41)."""
    from coulisse.errors import InputError

    async def reviews():
        yield "Bien."

    pipe = pipeline("text-classification", model="coulisse/mini-allocine")
    with pytest.raises(InputError, match=r"async_generator \(asyncio\).*asyncio.to_thread"):
        pipe(reviews())


def test_a_model_folder_without_tokenizer_files_takes_the_tokenizer_given(factory, tmp_path):
    """`pipeline(model=A, tokenizer=B)` where A holds only config.json and the weights (as transformers takes it):
    A's own tokenizer was read first, and the folder was refused for lacking one (audit 42)."""
    transformers = pytest.importorskip("transformers")
    source = factory.checkpoint("bert")
    bare = tmp_path / "weights-only"
    bare.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(source / name, bare / name)
    ours = pipeline("text-classification", model=str(bare), tokenizer=str(source), top_k=None)
    theirs = transformers.pipeline("text-classification", model=str(bare), tokenizer=str(source), top_k=None)
    assert ours.tokenizer.name_or_path == str(source)
    for a, b in zip(ours(TEXTS), theirs(TEXTS, truncation=True, max_length=512), strict=True):
        assert [x["label"] for x in a] == [x["label"] for x in b]
        assert_close("tokenizer= from another folder", torch.tensor([x["score"] for x in a]),
                     torch.tensor([x["score"] for x in b]))


def test_num_labels_against_id2label_is_read_as_transformers_reads_it(factory, tmp_path, caplog):
    """A hand-edited config.json: num_labels 2 beside three names in id2label. transformers 5 takes num_labels and
    names the labels LABEL_i; coulisse refused the 2-row head, blaming num_labels, the field that was right
    (audit 43). Now the same answers, and one warning naming both fields."""
    import json
    import logging
    import shutil

    import transformers

    folder = tmp_path / "model"
    shutil.copytree(factory.checkpoint("bert", num_labels=2), folder)  # a 2-row head
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    config.update(num_labels=2, id2label={"0": "négatif", "1": "positif", "2": "neutre"},
                  label2id={"négatif": 0, "positif": 1, "neutre": 2})
    (folder / "config.json").write_text(json.dumps(config), encoding="utf-8")
    with caplog.at_level(logging.WARNING, logger="coulisse.config"):
        ours = pipeline("text-classification", model=folder)
    theirs = transformers.pipeline("text-classification", model=str(folder), device="cpu")
    assert_same_results(ours(SHORT, top_k=None), theirs(SHORT, top_k=None))
    assert {r["label"] for r in ours(SHORT[0], top_k=None)} == {"LABEL_0", "LABEL_1"}
    said = [r.getMessage() for r in caplog.records if r.name == "coulisse.config"]  # not transformers' own
    assert len(said) == 1 and "num_labels 2 but names 3 labels in id2label" in said[0], said


def test_a_dropped_pipeline_frees_its_model_without_the_garbage_collector(factory):
    """The hook check's module list held the model itself: a reference cycle, so a pipeline dropped after a call
    kept its model and mapped weights until the collector's next pass (a worker of the CI pre-check saw a dropped
    pipeline's pages still resident: session 46). Freed by reference counting, as before."""
    import gc
    import weakref

    for quantize in (None, "int8"):
        pipe = pipeline("sentiment-analysis", model=factory.checkpoint("camembert"), quantize=quantize)
        pipe(["Un film magnifique.", "Je déteste tellement ça !"])
        model = weakref.ref(pipe.model)
        gc.disable()
        try:
            del pipe
            assert model() is None, quantize
        finally:
            gc.enable()


def test_the_checkpoints_repr_is_short(tf_camembert_dir):
    """Where it was read from and what it is (audit 48: every field of the config, tokenizer and model, 2.3 kB)."""
    text = repr(pipeline("sentiment-analysis", model=str(tf_camembert_dir)).checkpoint)
    assert text.startswith("Checkpoint(name=") and "model_type='camembert'" in text and len(text) < 300, text


def test_save_pretrained_takes_the_older_directory_keyword_with_a_warning(tf_camembert_dir, tmp_path):
    """`save_directory` is transformers' name; 0.1.0's `directory=` works one release more, said (audit 48)."""
    pipe = pipeline("sentiment-analysis", model=str(tf_camembert_dir))
    with pytest.warns(FutureWarning, match=r"save_pretrained\(directory=...\) is now save_pretrained\(save_directory"):
        saved = pipe.save_pretrained(directory=tmp_path / "old")
    assert (saved / "model.safetensors").is_file()
    assert (pipe.save_pretrained(save_directory=tmp_path / "new") / "model.safetensors").is_file()

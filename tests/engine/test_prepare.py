"""Model preparation happens in one place, is checked before loading, and is logged once."""

from __future__ import annotations

import logging

import pytest
import torch

from coulisse import pipeline
from coulisse.errors import InputError


@pytest.mark.parametrize("options, word", [({"threads": 0}, "threads"), ({"quantize": "int4"}, "int4"),
                                           ({"dtype": "float64"}, "dtype")])
def test_bad_preparation_fails_before_loading(tmp_path, options, word):
    """The folder does not exist: the option error comes first, so it was checked before loading."""
    with pytest.raises(InputError, match=word):
        pipeline("sentiment-analysis", model=str(tmp_path / "absent"), **options)


@pytest.mark.parametrize("quantize", [None, "int8"])
def test_preparation_is_chosen_once_and_logged_once(tf_camembert_dir, caplog, quantize):
    previous = torch.get_num_threads()
    try:
        with caplog.at_level(logging.INFO, logger="coulisse"):
            pipe = pipeline("sentiment-analysis", model=str(tf_camembert_dir), quantize=quantize, threads=1)
    finally:
        torch.set_num_threads(previous)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("prepared ")]
    assert len(lines) == 1, lines
    chosen = pipe.preparation
    assert (chosen.device.type, chosen.dtype, chosen.quantize, chosen.threads) == ("cpu", torch.float32, quantize, 1)
    assert chosen.describe() in lines[0]
    if quantize:
        assert "int8" in lines[0]


def test_fast_preset_is_the_plans_mode(tf_camembert_dir):
    from coulisse.engine.cpu import this_machine

    pipe = pipeline("sentiment-analysis", model=str(tf_camembert_dir), fast=True)
    mode = this_machine().fast
    chosen = pipe.preparation
    assert (chosen.quantize, chosen.dtype) == {"int8": ("int8", torch.float32), "bfloat16": (None, torch.bfloat16),
                                               "float32": (None, torch.float32)}[mode]
    exact = pipeline("sentiment-analysis", model=str(tf_camembert_dir))
    assert (exact.preparation.quantize, exact.preparation.dtype) == (None, torch.float32)  # exact stays the default


@pytest.mark.parametrize("options, word", [({"fast": True, "quantize": "int8"}, "fast=True"),
                                           ({"fast": True, "dtype": "bfloat16"}, "fast=True"),
                                           ({"fast": "yes"}, "fast=")])
def test_fast_conflicts_fail_before_loading(tmp_path, options, word):
    with pytest.raises(InputError, match=word):
        pipeline("sentiment-analysis", model=str(tmp_path / "absent"), **options)

"""Model preparation happens in one place, is checked before loading, and is logged once."""

from __future__ import annotations

import logging

import pytest
import torch

from coulisse import pipeline
from coulisse.errors import InputError


@pytest.mark.parametrize("options, word", [({"threads": 0}, "threads"), ({"quantize": "int4"}, "int4"),
                                           ({"dtype": "float64"}, "dtype"),
                                           # built, then every call failed in LayerNorm (mixed dtype): audit 43
                                           ({"quantize": "int8", "dtype": "bfloat16"}, "int8 runs beside float32"),
                                           ({"quantize": "int8", "dtype": torch.float16}, "not float16 ones")])
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


@pytest.mark.parametrize("options, word", [({"fast": True, "quantize": "int8"}, "drop quantize='int8' "),
                                           ({"fast": True, "dtype": "bfloat16"}, r"drop dtype='bfloat16' \(--dtype"),
                                           ({"fast": "yes"}, "fast=")])
def test_fast_conflicts_fail_before_loading(tmp_path, options, word):
    with pytest.raises(InputError, match=word) as refused:
        pipeline("sentiment-analysis", model=str(tmp_path / "absent"), **options)
    assert "=None" not in str(refused.value)  # only what was given is named (`quantize=None` was, as a setting)


def test_onednn_cache_bound_is_set_unless_the_user_chose():
    from coulisse.engine.prepare import (
        IDEEP_CACHE_ENTRIES,
        IDEEP_CACHE_VARIABLE,
        ONEDNN_CACHE_ENTRIES,
        ONEDNN_CACHE_VARIABLE,
        bound_onednn_cache,
    )

    environ: dict[str, str] = {}
    assert bound_onednn_cache(environ).count("coulisse's") == 2
    assert environ == {ONEDNN_CACHE_VARIABLE: str(ONEDNN_CACHE_ENTRIES), IDEEP_CACHE_VARIABLE: str(IDEEP_CACHE_ENTRIES)}
    environ = {ONEDNN_CACHE_VARIABLE: "4096", IDEEP_CACHE_VARIABLE: "2048"}
    assert bound_onednn_cache(environ).count("yours") == 2
    assert environ == {ONEDNN_CACHE_VARIABLE: "4096", IDEEP_CACHE_VARIABLE: "2048"}


# Prepares a pipeline, then runs oneDNN GEMMs of more row counts than the bound allows, twice over, with
# oneDNN's creation log on: a bounded (LRU) cache has evicted each shape before it comes back.
SWEEP_SCRIPT = """
import sys, torch
from coulisse import pipeline
from coulisse.engine.prepare import ONEDNN_CACHE_ENTRIES
pipeline("sentiment-analysis", model=sys.argv[1], threads=1)
weight = torch.ops.mkldnn._reorder_linear_weight(torch.randn(16, 16), None)
x = torch.randn(ONEDNN_CACHE_ENTRIES + 16, 16)
for sweep in range(2):
    for rows in range(1, ONEDNN_CACHE_ENTRIES + 16):
        torch.ops.mkldnn._linear_pointwise(x[:rows], weight, None, "none", [], "")
"""


def _matmul_cache_hits(model_dir, environ: dict) -> int:
    import os
    import subprocess
    import sys

    from coulisse.engine.prepare import ONEDNN_CACHE_ENTRIES

    env = {k: v for k, v in os.environ.items() if k != "ONEDNN_PRIMITIVE_CACHE_CAPACITY"}
    env.update(environ, ONEDNN_VERBOSE="profile_create")
    done = subprocess.run([sys.executable, "-c", SWEEP_SCRIPT, str(model_dir)], env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    # The sweep's GEMMs (an inner product or a matmul, as oneDNN names them), not the model's reorders
    created = [line for line in done.stdout.splitlines()
               if "create:cache_" in line and (",inner_product," in line or ",matmul," in line)]
    assert len(created) >= 2 * ONEDNN_CACHE_ENTRIES, f"oneDNN logged too few creations: {done.stdout[-1000:]}"
    return sum("create:cache_hit" in line for line in created)


@pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="no oneDNN in this torch")
def test_pipelines_bound_onednns_primitive_cache(tf_camembert_dir):
    """Varied token counts make new oneDNN primitives; a pipeline's preparation bounds how many stay (the
    resident memory otherwise grows by ~0.5 MB per primitive, up to 1,024). With the user's own capacity,
    which coulisse keeps, the second sweep finds every shape again."""
    from coulisse.engine.prepare import ONEDNN_CACHE_ENTRIES

    assert _matmul_cache_hits(tf_camembert_dir, {}) == 0
    assert _matmul_cache_hits(tf_camembert_dir, {"ONEDNN_PRIMITIVE_CACHE_CAPACITY": "1024"}) >= ONEDNN_CACHE_ENTRIES


@pytest.mark.parametrize("options", [{}, {"quantize": "int8"}, {"fast": True}])
def test_token_budget_is_the_plans_unless_given(tf_camembert_dir, options):
    """Without `max_batch_tokens`, a pipeline batches by the kernel plan's budget for what it prepared (int8 on AMX
    tiles: 4,096 tokens) or the engine's 1,024; a given budget always wins."""
    from coulisse.engine import DEFAULT_BATCH_TOKENS
    from coulisse.engine.cpu import this_machine

    pipe = pipeline("sentiment-analysis", model=str(tf_camembert_dir), **options)
    expected = this_machine().int8.options.get("batch_tokens") if pipe.preparation.quantize else None
    assert pipe.preparation.batch_tokens == expected
    assert pipe.engine.max_batch_tokens == (expected or DEFAULT_BATCH_TOKENS)
    assert pipeline("sentiment-analysis", model=str(tf_camembert_dir), max_batch_tokens=333,
                    **options).engine.max_batch_tokens == 333


SETTLE_SCRIPT = """
import sys, torch
torch.set_num_threads(2)
from coulisse.engine.prepare import settle_vector_math
settle_vector_math()
a = torch.randn(11, 768, generator=torch.Generator().manual_seed(0)) * 0.5
print(int(torch.equal(torch.tanh(a), torch.tanh(a)) and torch.equal(torch.exp(a), torch.exp(a))))
"""


@pytest.mark.slow
def test_a_process_first_tanh_and_exp_equal_its_later_ones():
    """torch 2.13's first vectorized tanh or exp of a process is sometimes imprecise (one fresh process in about
    five, the same script without `settle_vector_math`, on an AMX Xeon); after it, the first call of each in a fresh
    process gives the bits of the second, in every one of 8 processes (each would catch its absence ~1 time in 5)."""
    import subprocess
    import sys

    results = [subprocess.run([sys.executable, "-c", SETTLE_SCRIPT], capture_output=True, text=True, check=True)
               .stdout.strip() for _ in range(8)]
    assert results == ["1"] * 8


def test_pipelines_settle_torchs_vector_math_first(tf_camembert_dir, monkeypatch):
    """Every CPU pipeline's preparation calls `settle_vector_math` (the classification heads' tanh: a pipeline's
    first logits are then its later ones)."""
    from coulisse.engine import prepare

    calls = []
    monkeypatch.setattr(prepare, "settle_vector_math", lambda: calls.append(1))
    pipeline("text-classification", model=str(tf_camembert_dir))
    assert calls == [1]

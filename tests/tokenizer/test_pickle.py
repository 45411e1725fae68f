"""Tokenizers pickle and deep-copy (audit 38, F5): spawn-based multiprocessing, `datasets.map(num_proc=...)`,
DataLoader workers. FlauBERT's Python pre-tokenizer, which the Rust library cannot serialize, travels beside the
backend's JSON."""

from __future__ import annotations

import copy
import multiprocessing
import pickle

import pytest
from factory import CORPUS, TEXTS, train_moses_bpe

from coulisse.tokenizer import Tokenizer

SAMPLES = CORPUS[:4] + TEXTS[:3] + ["", "  <s>Je  </s> déteste<mask> x", "l’œuvre « Amélie » … ``oui'' !!!"]
PAIRS = [(SAMPLES[0], SAMPLES[1]), (SAMPLES[2], ""), ("Qui ?", SAMPLES[3])]


@pytest.fixture(scope="module", params=["camembert", "tf_camembert", "bert", "flaubert"])
def tokenizer(request, tmp_path_factory) -> Tokenizer:
    if request.param == "flaubert":
        pytest.importorskip("sacremoses")
        directory = tmp_path_factory.mktemp("flaubert")
        train_moses_bpe(directory)
        return Tokenizer.from_dir(directory, model_type="flaubert", max_positions=512)
    fixture = {"camembert": "camembert_dir", "tf_camembert": "tf_camembert_dir", "bert": "minilm_dir"}
    model_type = {"bert": "bert"}.get(request.param, "camembert")
    return Tokenizer.from_dir(request.getfixturevalue(fixture[request.param]), model_type=model_type)


def _encodings(tok: Tokenizer) -> list:
    out = []
    for batch in (tok(SAMPLES, return_offsets_mapping=True),
                  tok([a for a, _ in PAIRS], [b for _, b in PAIRS], return_offsets_mapping=True),
                  tok(SAMPLES, padding=True, truncation=True, max_length=12, return_offsets_mapping=True)):
        rows = len(batch["input_ids"])
        out.append(({k: list(v) for k, v in batch.items()}, [batch.word_ids(i) for i in range(rows)]))
    return out


def test_pickle_round_trip_encodes_the_same(tokenizer):
    twin = pickle.loads(pickle.dumps(tokenizer))
    assert twin is not tokenizer and twin.backend is not tokenizer.backend
    assert _encodings(twin) == _encodings(tokenizer)
    assert twin.is_fast == tokenizer.is_fast and twin.special_tokens == tokenizer.special_tokens
    assert twin.decode(twin(SAMPLES[0])["input_ids"]) == tokenizer.decode(tokenizer(SAMPLES[0])["input_ids"])


def test_deepcopy_encodes_the_same_and_is_independent(tokenizer):
    twin = copy.deepcopy(tokenizer)
    assert twin.backend is not tokenizer.backend and twin._lock is not tokenizer._lock
    assert _encodings(twin) == _encodings(tokenizer)
    twin.model_max_length, twin.padding_side = 7, "left"
    assert tokenizer.model_max_length != 7 and tokenizer.padding_side == "right"
    assert _encodings(pickle.loads(pickle.dumps(tokenizer))) == _encodings(tokenizer)  # pickled twice


def test_calls_leave_the_pickle_unchanged(tokenizer):
    """datasets fingerprints a `.map()` by pickling its function, tokenizer included: the truncation a call set on
    the backend made each fingerprint new, so a second identical map tokenized everything again where
    transformers' tokenizer finds its cache (training-interop audit)."""
    datasets = pytest.importorskip("datasets")
    fresh = copy.deepcopy(tokenizer)
    before = pickle.dumps(fresh)
    fresh(SAMPLES, truncation=True, max_length=5)
    fresh([SAMPLES[0] * 400], truncation=True, max_length=9)  # a long text: word-by-word judged once
    fresh(SAMPLES[:2], padding="max_length", max_length=12, truncation=True)
    assert pickle.dumps(fresh) == before
    assert datasets.fingerprint.Hasher.hash(fresh) == datasets.fingerprint.Hasher.hash(copy.deepcopy(tokenizer))
    assert fresh(SAMPLES)["input_ids"] == tokenizer(SAMPLES)["input_ids"]  # and the next call sets its own


def test_copy_is_still_shallow(tokenizer):
    twin = copy.copy(tokenizer)
    assert twin.backend is tokenizer.backend and twin(SAMPLES[0])["input_ids"] == tokenizer(SAMPLES[0])["input_ids"]


def test_spawn_pool_encodes_as_the_parent(tokenizer):
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        ids = pool.map(tokenizer.encode, SAMPLES[:6])
    assert ids == [tokenizer.encode(text) for text in SAMPLES[:6]]


def test_a_pickle_of_an_older_build_saves_as_a_pipeline_says(tokenizer, tmp_path):
    """A tokenizer pickled before it kept the folder it was read from (`directory`): it encodes as before, and
    `save_pretrained` says to save the pipeline, not AttributeError: 'directory' (audit 48)."""
    from coulisse.errors import InputError

    state = tokenizer.__getstate__()
    del state["directory"]
    old = object.__new__(Tokenizer)
    old.__setstate__(state)
    assert _encodings(old) == _encodings(tokenizer)
    with pytest.raises(InputError, match="save the pipeline instead"):
        old.save_pretrained(tmp_path / "saved")

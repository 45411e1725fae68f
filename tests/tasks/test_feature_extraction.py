"""`pipeline("feature-extraction")`: last hidden states as transformers returns them by default; sentence
embeddings with `pooling="cls" | "mean" | "auto"` and `normalize`, equal to pooling transformers' hidden
states over real tokens (seven families) and, on the real all-MiniLM-L6-v2, to sentence-transformers'
`encode` (cosine ≥ 0.99999), read from the folder's `modules.json` / `1_Pooling/config.json`.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from factory import ARCHS, assert_close

from coulisse import pipeline
from coulisse.errors import InputError, UnsupportedModelError
from coulisse.tasks.feature_extraction import SentenceConfig, sentence_config

TEXTS = ["J'ai attendu un cours d'HuggingFace toute ma vie.", "Bof.", "« Amélie » reste un chef-d'œuvre 😍",
         "Les acteurs sont excellents, la musique est magnifique. " * 3]


@pytest.fixture(scope="module", params=ARCHS)
def tiny(request, task_factory):
    arch = request.param
    return arch, pipeline("feature-extraction", model=task_factory.checkpoint(arch, "base")), task_factory


def reference_hidden(task_factory, arch: str, text: str) -> torch.Tensor:
    """transformers' last hidden state of one unpadded text `(length, H)`."""
    model, tok = task_factory.model(arch, "base"), task_factory.factory.hf_tokenizer(arch)
    inputs = tok(text, return_tensors="pt")
    if arch == "distilbert":
        inputs.pop("token_type_ids", None)
    with torch.no_grad():
        return model(**inputs).last_hidden_state[0]


def test_default_is_transformers_hidden_states(tiny):
    arch, ours, task_factory = tiny
    theirs = task_factory.hf_pipeline("feature-extraction", task_factory.checkpoint(arch, "base"))
    for text in TEXTS:
        got, expected = ours(text), theirs(text)
        assert np.asarray(got).shape == np.asarray(expected).shape == (1, len(got[0]), 32)
        assert_close("feature-extraction hidden states", got, expected)


@pytest.mark.parametrize("pooling", ["cls", "mean"])
@pytest.mark.parametrize("normalize", [False, True])
def test_pooled_embeddings_equal_pooled_transformers_states(tiny, pooling, normalize):
    arch, ours, task_factory = tiny
    got = ours(TEXTS, pooling=pooling, normalize=normalize)
    for text, vector in zip(TEXTS, got, strict=True):
        hidden = reference_hidden(task_factory, arch, text)
        expected = hidden[0] if pooling == "cls" else hidden.mean(0)
        if normalize:
            expected = torch.nn.functional.normalize(expected, dim=0)
        assert isinstance(vector, list) and len(vector) == 32
        assert_close(f"sentence embedding ({pooling})", vector, expected)
    assert np.asarray(got).std(0).max() > 1e-2  # inputs tell apart


def test_auto_without_sentence_transformers_config_is_mean(tiny):
    _, ours, _ = tiny
    assert ours(TEXTS[0], pooling="auto") == ours(TEXTS[0], pooling="mean")
    tensor = ours(TEXTS[0], pooling="auto", normalize=True, return_tensors=True)
    assert tensor.shape == (32,) and abs(float(tensor.norm()) - 1) < 1e-6


def test_option_errors(tiny):
    _, ours, _ = tiny
    with pytest.raises(InputError, match="pooling='max'"):
        ours(TEXTS[0], pooling="max")
    with pytest.raises(InputError, match="normalize=True"):
        ours(TEXTS[0], normalize=True)


# -- sentence-transformers folders ------------------------------------------------------------------


def test_minilm_folder_config(minilm_dir):
    assert sentence_config(minilm_dir) == SentenceConfig("mean", True, 256, False)


def write_modules(directory, *modules: str, pooling: dict | None = None) -> None:
    listing = [{"idx": i, "name": str(i), "path": "1_Pooling" if m == "Pooling" else "",
                "type": f"sentence_transformers.models.{m}"} for i, m in enumerate(modules)]
    (directory / "modules.json").write_text(json.dumps(listing), encoding="utf-8")
    if pooling is not None:
        (directory / "1_Pooling").mkdir(exist_ok=True)
        (directory / "1_Pooling" / "config.json").write_text(json.dumps(pooling), encoding="utf-8")


def test_sentence_config_formats(tmp_path):
    assert sentence_config(tmp_path) is None
    write_modules(tmp_path, "Transformer", "Pooling", pooling={"pooling_mode_cls_token": True})
    assert sentence_config(tmp_path) == SentenceConfig("cls", False, None, False)
    write_modules(tmp_path, "Transformer", "Pooling", "Normalize", pooling={"pooling_mode": "mean"})
    (tmp_path / "sentence_bert_config.json").write_text('{"max_seq_length": 128, "do_lower_case": true}')
    assert sentence_config(tmp_path) == SentenceConfig("mean", True, 128, True)
    write_modules(tmp_path, "Transformer", "Pooling", pooling={"pooling_mode": "max"})
    with pytest.raises(UnsupportedModelError, match="max"):
        sentence_config(tmp_path)
    write_modules(tmp_path, "Transformer", "Pooling", "Dense", pooling={"pooling_mode": "mean"})
    with pytest.raises(UnsupportedModelError, match="Dense"):
        sentence_config(tmp_path)


@pytest.mark.parametrize("listing, settings, message", [
    ({"Transformer": ""}, None, "not a list of modules"),
    ([1, 2], None, "not a list of modules"),
    ([{"type": "sentence_transformers.models.Pooling", "path": 5}], None, "must be strings"),
    # a crafted path never reads outside the model folder: a secret config.json out there stays unread
    ([{"type": "sentence_transformers.models.Pooling", "path": "../outside"}], None, "leads out of the model folder"),
    ([{"type": "sentence_transformers.models.Pooling", "path": "/etc"}], None, "leads out of the model folder"),
    ([{"type": "sentence_transformers.models.Transformer", "path": ""}], [512], "not an object"),
    ([{"type": "sentence_transformers.models.Transformer", "path": ""}], {"max_seq_length": "512"},
     "max_seq_length='512'"),
])
def test_crafted_module_files_are_refused_in_one_line(tmp_path, listing, settings, message):
    """modules.json and its settings files are untrusted input, for dense and sparse encoders alike."""
    from coulisse.errors import ModelLoadError
    from coulisse.tasks.sparse_embedding import splade_config

    folder = tmp_path / "model"
    folder.mkdir()
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "config.json").write_text('{"pooling_mode": "cls"}')  # what a read would find
    (folder / "modules.json").write_text(json.dumps(listing))
    if settings is not None:
        (folder / "sentence_bert_config.json").write_text(json.dumps(settings))
    with pytest.raises(ModelLoadError, match=message):
        sentence_config(folder)
    if isinstance(listing, list) and listing and isinstance(listing[0], dict):  # the same listing, SPLADE's
        listing = [*listing, {"type": "sentence_transformers.sparse_encoder.models.SpladePooling", "path": ""}]
        (folder / "modules.json").write_text(json.dumps(listing))
    with pytest.raises(ModelLoadError, match=message):
        splade_config(folder)


@pytest.fixture(scope="module")
def minilm(minilm_dir):
    return pipeline("feature-extraction", model=minilm_dir)


@pytest.mark.slow
def test_minilm_equals_sentence_transformers(minilm, minilm_dir):
    """Real weights: the folder's own pooling (mean, Normalize, 256 tokens) gives sentence-transformers'
    embeddings; the long text checks the truncation at max_seq_length."""
    from sentence_transformers import SentenceTransformer

    texts = TEXTS + ["A review that goes on and on. " * 80]
    expected = SentenceTransformer(str(minilm_dir), device="cpu").encode(texts)
    got = np.asarray(minilm(texts, pooling="auto"), dtype=np.float64)
    cosine = (got * expected).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(expected, axis=1)
    assert cosine.min() >= 0.99999, cosine
    assert_close("all-MiniLM-L6-v2 vs sentence-transformers", got, expected)
    assert np.allclose(np.linalg.norm(got, axis=1), 1, atol=1e-6)


@pytest.mark.slow
def test_minilm_french_paraphrases_score_closer_than_unrelated(minilm):
    cat, cat_again, stocks = minilm(["Le chat dort sur le canapé du salon.",
                                     "Un chat fait la sieste sur le sofa.",
                                     "La Bourse de Paris a chuté de trois pour cent ce matin."],
                                    pooling="auto")
    film, film_again, train = minilm(["J'ai adoré ce film, les acteurs sont formidables.",
                                      "Ce film m'a beaucoup plu, les comédiens sont excellents.",
                                      "Le train pour Lyon part à huit heures."], pooling="auto")
    for a, b, unrelated in ((cat, cat_again, stocks), (film, film_again, train)):
        a, b, unrelated = map(np.asarray, (a, b, unrelated))
        assert a @ b > max(a @ unrelated, b @ unrelated) + 0.1


def test_prompts_as_sentence_transformers_applies_them(minilm_dir, tmp_path):
    """pooling="auto" puts the folder's default prompt before each text, as SentenceTransformer.encode does;
    `prompt_name` and `prompt` choose another; token states get a prompt only when one is named. Without
    the default prompt, the vectors differ from sentence-transformers' by ~0.07."""
    import shutil

    from sentence_transformers import SentenceTransformer

    folder = tmp_path / "prompted"
    shutil.copytree(minilm_dir, folder)
    (folder / "config_sentence_transformers.json").write_text(json.dumps(
        {"prompts": {"query": "query: ", "passage": "passage: "}, "default_prompt_name": "passage"}))
    st = SentenceTransformer(str(folder), device="cpu")
    pipe = pipeline("feature-extraction", model=folder, pooling="auto")
    texts = TEXTS[:2]
    assert_close("default prompt", np.asarray(pipe(texts)), st.encode(texts))
    assert_close("prompt_name", np.asarray(pipe(texts, prompt_name="query")), st.encode(texts, prompt_name="query"))
    assert_close("prompt", np.asarray(pipe(texts, prompt="q: ")), st.encode(texts, prompt="q: "))
    assert_close("no prompt", np.asarray(pipe(texts, prompt="")), st.encode(texts, prompt=""))
    assert np.abs(np.asarray(pipe(texts)) - np.asarray(pipe(texts, prompt=""))).max() > 1e-2
    plain = pipeline("feature-extraction", model=folder)  # transformers' token states: no prompt unless named
    def length(text: str) -> int:
        return len(plain.tokenizer(text)["input_ids"])

    assert len(plain(texts[0])[0]) == length(texts[0])
    assert len(plain(texts[0], prompt_name="query")[0]) == length("query: " + texts[0]) > length(texts[0])
    with pytest.raises(InputError, match=r"prompt_name='doc' is not a prompt of this model .*'passage', 'query'"):
        pipe(texts, prompt_name="doc")
    # A Pooling module that leaves the prompt's tokens out: pooled past them, as sentence-transformers does
    # (the pipeline refused it before audit 41, and `coulisse embed`, which has no prompt option, with it).
    pooled_with_prompt = np.asarray(pipe(texts))
    config = json.loads((folder / "1_Pooling" / "config.json").read_text()) | {"include_prompt": False}
    (folder / "1_Pooling" / "config.json").write_text(json.dumps(config))
    st, pipe = SentenceTransformer(str(folder), device="cpu"), pipeline("feature-extraction", model=folder,
                                                                        pooling="auto")
    for options in ({}, {"prompt_name": "query"}, {"prompt": "q: "}, {"prompt": ""}):
        assert_close(f"without the prompt's tokens {options}", np.asarray(pipe(texts, **options)),
                     st.encode(texts, **options))
    assert np.abs(np.asarray(pipe(texts)) - pooled_with_prompt).max() > 1e-2


@pytest.mark.slow
@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_an_explicit_pooling_leaves_the_folders_normalize_out(minilm, minilm_dir, pooling):
    """all-MiniLM-L6-v2's modules.json ends in Normalize, which pooling="auto" applies; pooling="mean" or "cls"
    pools transformers' hidden states and no more, unless normalize=True is asked (audit 46, F3)."""
    import transformers

    tok = transformers.AutoTokenizer.from_pretrained(str(minilm_dir))
    model = transformers.AutoModel.from_pretrained(str(minilm_dir)).eval()
    inputs = tok(TEXTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**inputs).last_hidden_state  # (B, L, 384)
    mask = inputs["attention_mask"][..., None].to(hidden.dtype)
    expected = (hidden * mask).sum(1) / mask.sum(1) if pooling == "mean" else hidden[:, 0]
    got = np.asarray(minilm(TEXTS, pooling=pooling), dtype=np.float64)
    assert_close(f"all-MiniLM-L6-v2 pooling={pooling} vs transformers", got, expected)
    assert np.linalg.norm(got, axis=1).min() > 1.5  # far from the unit vectors Normalize would give
    unit = torch.nn.functional.normalize(expected, dim=-1)
    assert_close(f"all-MiniLM-L6-v2 pooling={pooling}, normalize=True", minilm(TEXTS, pooling=pooling, normalize=True),
                 unit)

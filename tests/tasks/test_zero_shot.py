"""`pipeline("zero-shot-classification")` against transformers 5's pipeline, on tiny random NLI classifiers
(labels entailment / neutral / contradiction, and other layouts) with the real CamemBERT and BERT tokenizers:
same labels in the same order, scores within 1e-4; and how the default hypothesis template is chosen."""

from __future__ import annotations

import copy
import json
import shutil

import pytest
import torch
from factory import max_delta

from coulisse import pipeline
from coulisse.errors import InputError, UnsupportedModelError
from coulisse.tasks.zero_shot import model_language, nli_ids

NLI = {0: "entailment", 1: "neutral", 2: "contradiction"}
MNLI = {0: "CONTRADICTION", 1: "NEUTRAL", 2: "ENTAILMENT"}
TWO = {0: "entailment", 1: "not_entailment"}
TEXTS = ["Le PSG a battu l'OM trois buts à zéro hier soir au Parc des Princes.",
         "Le gouvernement présentera sa réforme des retraites au Parlement la semaine prochaine.",
         "Un film long, lent, bavard : on s'ennuie ferme pendant deux heures et quart. " * 12]
LABELS = ["sport", "politique", "cinéma", "cuisine", "économie"]
FR = "Ce texte parle de {}."


@pytest.fixture(scope="module")
def nli(factory, tmp_path_factory):
    """(arch, labels) -> (coulisse pipeline, transformers 5 pipeline), on one checkpoint truncating at 64."""
    import transformers

    root = tmp_path_factory.mktemp("nli")
    made = {}

    def get(arch: str, labels: dict[int, str] = NLI):
        key = (arch, tuple(labels.values()))
        if key not in made:
            config = copy.deepcopy(factory.reference(arch).model.config)
            config.id2label, config.label2id = dict(labels), {v: k for k, v in labels.items()}
            torch.manual_seed(300 + len(made))
            model = transformers.AutoModelForSequenceClassification.from_config(config).eval()
            d = root / f"{arch}-{len(made)}"
            model.save_pretrained(d)
            for f in factory.tokenizer_files(arch).iterdir():
                if f.name != "config.json":
                    shutil.copy(f, d / f.name)
            # Both truncate the text (only the text) at 64 tokens, so the long text is cut.
            (d / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 64}), encoding="utf-8")
            theirs = transformers.pipeline("zero-shot-classification", model=str(d), device="cpu")
            made[key] = (pipeline("zero-shot-classification", model=d), theirs)
        return made[key]

    return get


def assert_same(kind: str, ours, theirs, tol: float = 1e-4) -> None:
    assert type(ours) is type(theirs), (ours, theirs)
    if isinstance(theirs, list):
        assert len(ours) == len(theirs)
        for a, b in zip(ours, theirs, strict=True):
            assert_same(kind, a, b, tol)
        return
    assert set(ours) == {"sequence", "labels", "scores"}
    assert ours["sequence"] == theirs["sequence"]
    assert ours["labels"] == theirs["labels"], (ours, theirs)
    assert all(isinstance(s, float) for s in ours["scores"])
    assert max_delta(kind, ours["scores"], theirs["scores"]) <= tol, (ours, theirs)


CALLS = {
    "labels": {"candidate_labels": LABELS, "hypothesis_template": FR},
    "multi-label": {"candidate_labels": LABELS, "hypothesis_template": FR, "multi_label": True},
    "comma-string": {"candidate_labels": "sport, politique ,cinéma,", "hypothesis_template": FR},
    "one-label": {"candidate_labels": ["sport"], "hypothesis_template": FR},
    "custom-template": {"candidate_labels": LABELS[:3], "hypothesis_template": "Cet article concerne : {}"},
    "custom-multi": {"candidate_labels": LABELS[:3], "hypothesis_template": "Il s'agit de {} !",
                     "multi_label": True},
}


@pytest.mark.parametrize("arch", ["camembert", "bert"])
@pytest.mark.parametrize("call", list(CALLS))
def test_outputs_equal_transformers(nli, arch, call):
    ours, theirs = nli(arch)
    assert_same(f"zero-shot scores ({arch})", ours(TEXTS, **CALLS[call]), theirs(TEXTS, **CALLS[call]))
    assert_same(f"zero-shot scores ({arch})", ours(TEXTS[0], **CALLS[call]), theirs(TEXTS[0], **CALLS[call]))


@pytest.mark.parametrize("labels", [MNLI, TWO], ids=["mnli-order", "two-labels"])
@pytest.mark.parametrize("multi_label", [False, True])
def test_other_label_layouts_equal_transformers(nli, labels, multi_label):
    ours, theirs = nli("bert", labels)
    options = {"candidate_labels": LABELS, "multi_label": multi_label}
    assert_same("zero-shot scores (bert, other layouts)", ours(TEXTS, **options), theirs(TEXTS, **options))


def test_default_template_follows_the_model_language(nli):
    ours, theirs = nli("camembert")
    assert ours.default_template == FR
    assert_same("zero-shot scores (camembert)", ours(TEXTS[0], candidate_labels=LABELS),
                theirs(TEXTS[0], candidate_labels=LABELS, hypothesis_template=FR))
    ours, theirs = nli("bert")
    assert ours.default_template == "This example is {}."
    assert_same("zero-shot scores (bert)", ours(TEXTS[0], LABELS), theirs(TEXTS[0], LABELS))


@pytest.mark.parametrize("raw, model_type, readme, language", [
    ({}, "camembert", None, "fr"),
    ({}, "bert", None, None),
    ({"language": "fr"}, "bert", None, "fr"),
    ({"language": ["fr"]}, "xlm-roberta", None, "fr"),
    ({"language": "en"}, "camembert", None, "en"),
    ({}, "bert", "---\nlanguage: fr\nlicense: mit\n---\n# Modèle\n", "fr"),
    ({}, "xlm-roberta", "---\nlanguage:\n- fr\n---\n", "fr"),
    ({}, "camembert", "---\nlanguage:\n- en\n- fr\n- de\n---\n", None),
    ({}, "camembert", "# no metadata\n", "fr"),
])
def test_model_language(tmp_path, raw, model_type, readme, language):
    if readme is not None:
        (tmp_path / "README.md").write_text(readme, encoding="utf-8")
    assert model_language(raw, model_type, tmp_path) == language


def test_nli_ids():
    assert nli_ids({"entailment": 0, "neutral": 1, "contradiction": 2}) == (0, 2)
    assert nli_ids({"CONTRADICTION": 0, "NEUTRAL": 1, "ENTAILMENT": 2}) == (2, 0)
    assert nli_ids({"neutral": 0, "Entails": 1, "Contradicts": 2}) == (1, 2)
    assert nli_ids({"entailment": 0, "not_entailment": 1}) == (0, 1)
    with pytest.raises(UnsupportedModelError, match="no label starting with 'entail'"):
        nli_ids({"négatif": 0, "neutre": 1, "positif": 2})


def test_a_classifier_that_is_not_nli_is_refused(factory):
    with pytest.raises(UnsupportedModelError, match="needs an NLI classifier"):
        pipeline("zero-shot-classification", model=factory.checkpoint("bert"))


@pytest.mark.parametrize("options, message", [
    ({}, "candidate_labels=None"),
    ({"candidate_labels": " , "}, "candidate_labels=\\[\\]"),
    ({"candidate_labels": ["a", 3]}, "candidate_labels\\[1\\] is a int"),
    ({"candidate_labels": "a,b", "hypothesis_template": "Sans accolades."}, "has no \\{\\}"),
    ({"candidate_labels": "a,b", "top_k": 2}, "unknown option"),
])
def test_bad_calls_raise_input_errors(nli, options, message):
    ours, _ = nli("bert")
    with pytest.raises(InputError, match=message):
        ours("Un texte.", **options)

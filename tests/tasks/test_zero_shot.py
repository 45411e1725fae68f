"""`pipeline("zero-shot-classification")` against transformers 5's pipeline, on tiny random NLI classifiers
(labels entailment / neutral / contradiction, and other layouts) with the real CamemBERT and BERT tokenizers:
same labels in the same order, scores within 1e-4; and how the default hypothesis template is chosen. Then
`explain`: a candidate label's attributions against Integrated Gradients and leave-one-out logits computed on
the transformers model for the same pair."""

from __future__ import annotations

import copy
import json
import shutil

import numpy as np
import pytest
import torch
from factory import max_delta, reference_integrated_gradients

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


@pytest.mark.parametrize("multi_label", [False, True])
def test_repeated_labels_are_scored_as_transformers_does_and_said(nli, caplog, multi_label):
    """A label named twice is scored twice (transformers' output, kept), with one warning naming it."""
    ours, theirs = nli("camembert")
    options = {"candidate_labels": "sport, politique, sport", "hypothesis_template": FR, "multi_label": multi_label}
    with caplog.at_level("WARNING", logger="coulisse.tasks.zero_shot"):
        got = ours(TEXTS[:2], **options)
    assert_same("zero-shot scores (repeated label)", got, theirs(TEXTS[:2], **options))
    said = [r.getMessage() for r in caplog.records if "more than once" in r.getMessage()]
    assert len(said) == 1 and "'sport'" in said[0] and "'politique'" not in said[0], said
    assert ("share the probability" in said[0]) is not multi_label
    caplog.clear()
    with caplog.at_level("WARNING", logger="coulisse.tasks.zero_shot"):
        ours(TEXTS[0], candidate_labels=LABELS, hypothesis_template=FR)
    assert not caplog.records


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
    ({"candidate_labels": ["a", 3]}, "candidate_labels\\[1\\] is an int"),
    ({"candidate_labels": "a,b", "hypothesis_template": "Sans accolades."},
     "must hold one \\{\\}.*write e.g. 'Sans accolades \\{\\}.'"),  # in the template's own words
    ({"candidate_labels": "a,b", "hypothesis_template": "About this"}, "write e.g. 'About this \\{\\}.'"),
    ({"candidate_labels": "a,b", "hypothesis_template": "{} ou {} ?"}, "must hold one \\{\\}"),
    ({"candidate_labels": "a,b", "top_k": 2}, "unknown option"),
])
def test_bad_calls_raise_input_errors(nli, options, message):
    ours, _ = nli("bert")
    with pytest.raises(InputError, match=message):
        ours("Un texte.", **options)


def test_only_a_hypothesis_too_long_is_said_to_be_one(nli, monkeypatch):
    """A label longer than the model's limit cannot fit, said in the call's words; any other failure of the
    tokenizer (a panic, TokenizerLoadError) was reworded the same way (audit 46) and stays what it is."""
    from coulisse.errors import TokenizerLoadError

    ours, _ = nli("bert")
    with pytest.raises(InputError, match="cannot fit a hypothesis into 64 tokens"):
        ours("Un texte.", candidate_labels=[" ".join(["mot"] * 200)])

    def panics(*args, **kwargs):
        raise TokenizerLoadError("the tokenizer's library failed on an input")

    monkeypatch.setattr(ours.tokenizer, "encode_batch", panics)
    with pytest.raises(TokenizerLoadError, match="failed on an input"):
        ours("Un texte.", candidate_labels="a,b")


@pytest.mark.parametrize("where, call", [
    ("sequences\\[1\\]", lambda ours: ours(["Un texte.", "Un \ud800 texte."], candidate_labels="a,b")),
    ("candidate_labels\\[1\\]", lambda ours: ours("Un texte.", candidate_labels=["a", "b\ud800"])),
    ("hypothesis_template", lambda ours: ours("Un texte.", candidate_labels="a", hypothesis_template="{} \udc80")),
])
def test_a_lone_surrogate_is_named_by_the_callers_names(nli, where, call):
    """Not by its index among the (text, hypothesis) pairs, nor as a hypothesis that cannot fit."""
    ours, _ = nli("bert")
    with pytest.raises(InputError, match=f"^{where} is not valid Unicode \\(lone surrogate at position"):
        call(ours)


# -- explanations: which words pushed a text towards a candidate label ---------------------------------------
# The oracle is Integrated Gradients computed on the transformers model, one node at a time, for the pair its
# own tokenizer builds: the text's tokens go from the pad token's vector to their own, the hypothesis and the
# special tokens stay, and the gradient is the entailment logit's.


def pair_ig(theirs, text: str, hypothesis: str, entailment: int, steps: int = 32) -> tuple[list[int], np.ndarray]:
    enc = theirs.tokenizer(text, hypothesis, truncation="only_first", return_tensors="pt")
    ids = enc.pop("input_ids")[0]
    moved = torch.tensor([s == 0 for s in enc.sequence_ids(0)])
    return ids.tolist(), reference_integrated_gradients(theirs.model, ids, moved, theirs.tokenizer.pad_token_id,
                                                        entailment, steps, **enc)


@pytest.mark.parametrize("arch", ["camembert", "bert"])
def test_integrated_gradients_of_a_label_equal_transformers(nli, arch):
    ours, theirs = nli(arch)
    text = TEXTS[0]
    for label in ("sport", "cuisine"):
        a = ours.explain(text, candidate_labels=LABELS, target=label, hypothesis_template=FR)
        ids, want = pair_ig(theirs, text, FR.format(label), ours.entailment_id)
        assert a.ids == ids and a.label == label and a.target == ours.entailment_id
        assert a.extra == {"hypothesis": FR.format(label), "nli_label": "entailment"}
        # Both sum 32 fp32 gradients of models that agree within ~1e-6 per logit (a smooth model: no refinement).
        assert a.steps == 32
        assert max_delta(f"zero-shot IG vs transformers [{arch}]", a.scores, want) <= 1e-4
        assert np.abs(want).max() > 1e-2  # the oracle is not trivially zero
        # Completeness: the text's scores add up to F(x) - F(x') of the entailment logit.
        assert abs(a.gap) <= 0.01 * abs(a.delta)
        # Only the text is scored: the hypothesis is held, scored 0, and no word comes from it.
        hypothesis_tokens = [i for i, s in enumerate(a.special) if s and a.scores[i] == 0.0]
        assert len(hypothesis_tokens) > 3 and not a.truncated
        assert all(text[w.start:w.end] == w.text for w in a.words)
        assert sum(w.attribution for w in a.words) == pytest.approx(sum(a.scores), abs=1e-9)


def test_the_default_target_is_the_top_label_and_its_logit_is_transformers(nli):
    ours, theirs = nli("bert")
    texts = TEXTS[:2]
    explained = ours.explain(texts, candidate_labels=LABELS, method="occlusion")
    answers = theirs(texts, candidate_labels=LABELS)
    assert [a.label for a in explained] == [r["labels"][0] for r in answers]
    for a, text in zip(explained, texts, strict=True):
        enc = theirs.tokenizer(text, a.extra["hypothesis"], truncation="only_first", return_tensors="pt")
        with torch.no_grad():
            logits = theirs.model(**enc).logits[0].numpy()
        assert max_delta("zero-shot F(x) vs transformers", a.logits, logits) <= 1e-4
    multi = ours.explain(texts[0], candidate_labels=LABELS, multi_label=True, method="occlusion")
    assert multi.label == theirs(texts[0], candidate_labels=LABELS, multi_label=True)["labels"][0]


def test_occlusion_of_a_label_equals_leave_one_out_entailment_logits(nli):
    ours, theirs = nli("camembert")
    text = "Le PSG a battu l'OM hier soir."
    a = ours.explain(text, candidate_labels=LABELS, target=1, hypothesis_template=FR, method="occlusion")
    assert a.label == "politique"
    enc = theirs.tokenizer(text, FR.format("politique"), truncation="only_first", return_tensors="pt")
    ids = enc.pop("input_ids")[0]
    table = theirs.model.get_input_embeddings().weight.detach()

    def entailment(token_ids):
        # Through inputs_embeds: every token keeps its position (with input_ids, RoBERTa-style models would
        # renumber the positions after a pad token, which is not "this token replaced").
        return theirs.model(inputs_embeds=table[token_ids][None], **enc).logits[0, ours.entailment_id]

    with torch.no_grad():
        full = entailment(ids)
        for i, s in enumerate(enc.sequence_ids(0)):
            if s != 0:
                assert a.scores[i] == 0.0
                continue
            variant = ids.clone()
            variant[i] = theirs.tokenizer.pad_token_id
            assert abs(a.scores[i] - float(full - entailment(variant))) <= 1e-5


def test_a_long_text_is_cut_and_says_so(nli):
    ours, _ = nli("bert")  # the checkpoint truncates at 64 tokens; TEXTS[2] is longer
    a = ours.explain(TEXTS[2], candidate_labels=LABELS, target="cinéma", method="occlusion")
    assert a.truncated and len(a.ids) <= 64


@pytest.mark.parametrize("options, message", [
    ({"candidate_labels": LABELS, "target": "tennis"}, "not one of the candidate labels"),
    ({"candidate_labels": LABELS, "target": 5}, "index, 0 to 4"),
    ({"candidate_labels": LABELS, "method": "shap"}, "method='shap'"),
    ({}, "candidate_labels=None"),
])
def test_bad_explain_requests_raise_input_errors(nli, options, message):
    ours, _ = nli("bert")
    with pytest.raises(InputError, match=message):
        ours.explain("Un texte.", **options)

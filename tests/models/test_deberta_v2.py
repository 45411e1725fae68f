"""DeBERTa-v2/v3 (`coulisse.models.deberta_v2`) against transformers 5, on tiny random checkpoints that
transformers itself wrote with a DeBERTa-v3-style SentencePiece model trained here (tests/factory.py).

Configs: v3 (log buckets, c2p|p2c with shared keys, normalised relative table, no absolute positions),
v2 with the convolution layer, c2p alone without buckets (own pos_key_proj, absolute positions, token
types, a relative span shorter than the long text), p2c alone with an embedding width below the hidden
size, and transformers' defaults (no relative attention). Weight formats: safetensors for each, and
sharded safetensors, `torch.save` .bin and sharded .bin for v3. Logits and hidden states within 1e-4,
ids identical, batched equal to one by one within 1e-5; token classification, masked LM (legacy and
`legacy: false` heads), multiple choice, question answering, fill-mask and zero-shot pipelines; int8 close
to fp32.
"""

from __future__ import annotations

import copy
import json
import logging
import shutil

import numpy as np
import pytest
import torch
from factory import (
    CORPUS,
    LABELS,
    TEXTS,
    assert_close,
    assert_distinct_rows,
    assert_same_encoding,
    max_delta,
    train_deberta_spm,
    write_weights,
)

from coulisse import pipeline
from coulisse.config import EncoderConfig
from coulisse.errors import UnsupportedModelError
from coulisse.models.deberta_v2 import DebertaV2Options, log_buckets

CONFIGS = {
    "v3": dict(relative_attention=True, position_buckets=16, max_relative_positions=-1, pos_att_type="p2c|c2p",
               share_att_key=True, norm_rel_ebd="layer_norm", position_biased_input=False),
    "conv": dict(relative_attention=True, position_buckets=16, pos_att_type="p2c|c2p", share_att_key=True,
                 norm_rel_ebd="layer_norm", position_biased_input=False, conv_kernel_size=3),
    "c2p-unbucketed": dict(relative_attention=True, pos_att_type=["c2p"], max_relative_positions=48,
                           type_vocab_size=2),
    "p2c-embedding-size": dict(relative_attention=True, position_buckets=32, pos_att_type="p2c",
                               embedding_size=24, position_biased_input=False, pooler_hidden_act="tanh"),
    "absolute": dict(),
}
TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
            initializer_range=0.2, max_position_embeddings=512)
NLI = {0: "entailment", 1: "neutral", 2: "contradiction"}
AUTO = {"sequence-classification": "AutoModelForSequenceClassification", "base": "AutoModel",
        "token-classification": "AutoModelForTokenClassification", "masked-lm": "AutoModelForMaskedLM",
        "multiple-choice": "AutoModelForMultipleChoice", "question-answering": "AutoModelForQuestionAnswering"}


class DebertaFactory:
    """Tiny transformers DeBERTa-v2 models (the oracles) and the checkpoint folders they wrote."""

    def __init__(self, root):
        from transformers import AutoTokenizer

        self.root = root
        self.tokenizer_dir = root / "tokenizer"
        train_deberta_spm(self.tokenizer_dir)
        # microsoft/mdeberta-v3-base's tokenizer_config.json
        (self.tokenizer_dir / "tokenizer_config.json").write_text(
            json.dumps({"do_lower_case": False, "vocab_type": "spm"}), encoding="utf-8")
        (self.tokenizer_dir / "config.json").write_text(json.dumps({"model_type": "deberta-v2"}), encoding="utf-8")
        self.hf_tokenizer = AutoTokenizer.from_pretrained(str(self.tokenizer_dir))
        self.models: dict = {}
        self.dirs: dict = {}

    def model(self, name: str, head: str = "sequence-classification", labels=LABELS, **extra):
        key = (name, head, tuple(labels.values()), tuple(sorted(extra.items())))
        if key not in self.models:
            import transformers

            tok = self.hf_tokenizer
            config = transformers.DebertaV2Config(
                vocab_size=len(tok), pad_token_id=tok.pad_token_id, id2label=dict(labels),
                label2id={v: k for k, v in labels.items()}, **TINY, **CONFIGS[name], **extra)
            torch.manual_seed(len(self.models))
            model = getattr(transformers, AUTO[head]).from_config(config).eval()
            with torch.no_grad():  # LayerNorms start at 1 and 0, biases at 0: make every tensor count
                for pname, p in model.named_parameters():
                    if "LayerNorm" in pname or pname.endswith("bias"):
                        p.add_(torch.randn_like(p) * 0.2)
            self.models[key] = model
        return self.models[key]

    def checkpoint(self, name: str, head: str = "sequence-classification", weights: str = "safetensors",
                   labels=LABELS, **extra):
        key = (name, head, weights, tuple(labels.values()), tuple(sorted(extra.items())))
        if key not in self.dirs:
            d = self.root / f"{name}-{head}-{weights}-{len(self.dirs)}"
            d.mkdir()
            write_weights(self.model(name, head, labels, **extra), d, weights)
            for f in self.tokenizer_dir.iterdir():
                if f.name != "config.json":
                    shutil.copy(f, d / f.name)
            self.dirs[key] = d
        return self.dirs[key]

    def inputs(self, texts, **kwargs):
        return self.hf_tokenizer(texts, padding=True, truncation=True, max_length=512, return_tensors="pt", **kwargs)


@pytest.fixture(scope="module")
def deberta(tmp_path_factory):
    return DebertaFactory(tmp_path_factory.mktemp("deberta-v2"))


def check_classifier(deberta, name: str, directory) -> None:
    pipe = pipeline("text-classification", model=directory)
    ref = deberta.model(name)
    inputs = deberta.inputs(TEXTS)
    with torch.no_grad():
        logits = ref(**inputs).logits
    assert_distinct_rows(logits)
    assert pipe.config.id2label == LABELS

    ours_inputs = pipe.tokenizer(TEXTS, padding=True, truncation=True, return_tensors="pt")
    assert_same_encoding(ours_inputs, inputs)
    assert_close(f"deberta logits batched [{name}]", pipe.model(**ours_inputs).logits, logits)
    engine = np.stack(pipe.forward(pipe.preprocess(TEXTS)))
    assert_close(f"deberta logits engine [{name}]", engine, logits)
    for i, text in enumerate(TEXTS):
        single = deberta.inputs([text])
        with torch.no_grad():
            single_logits = ref(**single).logits
        ours_single = pipe.tokenizer([text], truncation=True, return_tensors="pt")
        assert_same_encoding(ours_single, single)
        assert_close(f"deberta logits one by one [{name}]", pipe.model(**ours_single).logits, single_logits)
        alone = pipe.forward(pipe.preprocess([text]))[0]
        assert max_delta("deberta engine batched vs one by one", engine[i], alone) <= 1e-5


@pytest.mark.parametrize("name", CONFIGS)
def test_classifier_logits_equal_transformers(deberta, name):
    check_classifier(deberta, name, deberta.checkpoint(name))


@pytest.mark.parametrize("weights", ["sharded-safetensors", "bin", "sharded-bin"])
def test_weight_formats(deberta, weights):
    directory = deberta.checkpoint("v3", weights=weights)
    assert not (directory / "model.safetensors").exists()
    check_classifier(deberta, "v3", directory)


@pytest.mark.parametrize("weights", ["safetensors", "bin"])
@pytest.mark.parametrize("name", CONFIGS)
def test_hidden_states_equal_transformers(deberta, name, weights):
    if weights == "bin" and name != "v3":
        pytest.skip("one config is enough for the .bin base model")
    pipe = pipeline("feature-extraction", model=deberta.checkpoint(name, "base", weights))
    ref = deberta.model(name, "base")
    inputs = deberta.inputs(TEXTS)
    real = inputs["attention_mask"].bool()
    with torch.no_grad():
        hidden = ref(**inputs).last_hidden_state
    assert_distinct_rows(hidden[:, 0])
    ours_inputs = pipe.tokenizer(TEXTS, padding=True, truncation=True, return_tensors="pt")
    assert_same_encoding(ours_inputs, inputs)
    assert_close(f"deberta hidden states batched [{name}]", pipe.model(**ours_inputs).last_hidden_state[real],
                 hidden[real])
    for i, feature in enumerate(pipe(TEXTS)):
        assert_close(f"deberta hidden states pipeline [{name}]", np.asarray(feature)[0], hidden[i][real[i]])


@pytest.mark.parametrize("name", CONFIGS)
def test_batching_does_not_change_results(deberta, name):
    """Sorted, token-budgeted, packed batches of every size give each text's one-by-one hidden states."""
    pipe = pipeline("feature-extraction", model=deberta.checkpoint(name, "base"))
    items = pipe.preprocess(TEXTS + CORPUS)
    alone = [pipe.forward([item])[0] for item in items]
    for budget in (64, 300, 100_000):
        pipe.engine.max_batch_tokens = budget
        for a, b in zip(pipe.forward(items), alone, strict=True):
            assert max_delta("deberta batched vs one by one", a, b) <= 1e-5


def test_token_classification_equals_transformers(deberta):
    ner = {0: "O", 1: "B-PER", 2: "I-PER", 3: "B-LOC", 4: "I-LOC"}
    directory = deberta.checkpoint("v3", "token-classification", labels=ner)
    pipe = pipeline("token-classification", model=directory)
    ref = deberta.model("v3", "token-classification", labels=ner)
    inputs = deberta.inputs(TEXTS)
    real = inputs["attention_mask"].bool()
    with torch.no_grad():
        logits = ref(**inputs).logits
    assert_close("deberta token logits", pipe.model(**inputs).logits[real], logits[real])


@pytest.mark.parametrize("name,legacy", [("v3", True), ("p2c-embedding-size", True), ("v3", False)],
                         ids=["legacy", "legacy-embedding-size", "lm_predictions"])
def test_masked_lm_logits_equal_transformers(deberta, name, legacy):
    directory = deberta.checkpoint(name, "masked-lm", legacy=legacy)
    model = deberta.model(name, "masked-lm", legacy=legacy)
    keys = set(model.state_dict())
    assert any(k.startswith("cls.predictions" if legacy else "lm_predictions") for k in keys)
    pipe = pipeline("fill-mask", model=directory)
    inputs = deberta.inputs(TEXTS)
    real = inputs["attention_mask"].bool()
    with torch.no_grad():
        logits = model(**inputs).logits
    assert_close(f"deberta masked-LM logits [{name}]", pipe.model(**inputs).logits[real], logits[real])


def test_fill_mask_pipeline_equals_transformers(deberta):
    import transformers

    directory = deberta.checkpoint("v3", "masked-lm", legacy=True)
    ours = pipeline("fill-mask", model=directory)
    theirs = transformers.pipeline("fill-mask", model=str(directory), device="cpu")
    texts = ["Le film est [MASK].", "J'ai [MASK] ce film, il est [MASK] !", "[MASK]"]
    for options in ({}, {"top_k": 3}, {"targets": ["▁film", "▁le"]}):
        a, b = ours(texts, **options), theirs(texts, **options)
        flat_a, flat_b = json.dumps(a, default=str), json.dumps(b, default=str)
        strip = [[(p["token"], p["token_str"], p["sequence"]) for p in _flatten(x)] for x in (a, b)]
        assert strip[0] == strip[1], (flat_a, flat_b)
        scores = [[p["score"] for p in _flatten(x)] for x in (a, b)]
        assert max_delta("deberta fill-mask scores", scores[0], scores[1]) <= 1e-4


@pytest.mark.parametrize("legacy", [True, False], ids=["legacy", "lm_predictions"])
def test_sparse_embeddings_equal_sentence_transformers(deberta, tmp_path, legacy):
    """SPLADE over DeBERTa-v3's masked-LM heads (both layouts), against sentence-transformers' SparseEncoder
    written over the same folder (bound: the masked-LM logits', ReLU, log1p and max being 1-Lipschitz)."""
    from sentence_transformers import SparseEncoder
    from sentence_transformers.base.modules import Transformer
    from sentence_transformers.sparse_encoder.modules import SpladePooling

    source = deberta.checkpoint("v3", "masked-lm", legacy=legacy)
    SparseEncoder(modules=[Transformer(str(source), transformer_task="fill-mask"), SpladePooling()]).save(
        str(tmp_path / "splade"))
    theirs = SparseEncoder(str(tmp_path / "splade"), device="cpu").encode(TEXTS, convert_to_sparse_tensor=False)
    ours = pipeline("sparse-embedding", model=tmp_path / "splade")(TEXTS, return_tensors=True)
    assert max_delta("deberta SPLADE weights", np.stack([t.to_dense().numpy() for t in ours]),
                     theirs.numpy()) <= 1e-4


def _flatten(result):
    if isinstance(result, dict):
        return [result]
    return [p for r in result for p in _flatten(r)]


def test_multiple_choice_equals_transformers(deberta):
    from coulisse.pipelines import load_checkpoint

    directory = deberta.checkpoint("conv", "multiple-choice")
    model = load_checkpoint(directory, "multiple-choice").model
    ref = deberta.model("conv", "multiple-choice")
    prompts = ["Le film est", "La musique est"]
    choices = [["excellent.", "nul.", "long."], ["magnifique.", "ratée.", "absente."]]
    enc = deberta.hf_tokenizer([p for p in prompts for _ in range(3)], [c for cs in choices for c in cs],
                               padding=True, return_tensors="pt")
    inputs = {k: v.view(2, 3, -1) for k, v in enc.items()}
    with torch.no_grad():
        logits = ref(**inputs).logits
    assert_close("deberta multiple-choice logits", model(**inputs).logits, logits)


def test_question_answering_equals_transformers(deberta):
    """Start/end logits of DeBERTa-v2's QA head on question/context pairs, then the pipeline's answer is a
    span of the context whose score is the product of the softmaxed start and end logits transformers gives."""
    labels = {0: "LABEL_0", 1: "LABEL_1"}  # a QA head has two outputs: start and end
    directory = deberta.checkpoint("v3", "question-answering", labels=labels)
    ref = deberta.model("v3", "question-answering", labels=labels)
    qa = pipeline("question-answering", model=directory)
    questions, contexts = ["Qui a construit la tour ?", "Quand ?"], ["Gustave Eiffel l'a construite.", "En 1889."]
    inputs = deberta.hf_tokenizer(questions, contexts, padding=True, return_tensors="pt")
    real = inputs["attention_mask"].bool()
    with torch.no_grad():
        theirs = ref(**inputs)
    ours = qa.model(**inputs).logits  # (B, L, 2)
    assert_close("deberta qa start logits", ours[..., 0][real], theirs.start_logits[real])
    assert_close("deberta qa end logits", ours[..., 1][real], theirs.end_logits[real])
    answer = qa(question=questions[0], context=contexts[0])
    assert contexts[0][answer["start"]:answer["end"]] == answer["answer"] and 0 < answer["score"] <= 1


def test_zero_shot_equals_transformers(deberta):
    import transformers

    directory = deberta.checkpoint("v3", labels=NLI)
    (directory / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 64}), encoding="utf-8")
    ours = pipeline("zero-shot-classification", model=directory)
    theirs = transformers.pipeline("zero-shot-classification", model=str(directory), device="cpu")
    texts = ["Le PSG a battu l'OM trois buts à zéro hier soir au Parc des Princes.", TEXTS[-1]]
    labels = ["sport", "politique", "cinéma", "cuisine"]
    for options in ({}, {"multi_label": True}, {"hypothesis_template": "Ce texte parle de {}."}):
        a = ours(texts, candidate_labels=labels, **options)
        b = theirs(texts, candidate_labels=labels, **options)
        for x, y in zip(a, b, strict=True):
            assert (x["sequence"], x["labels"]) == (y["sequence"], y["labels"])
            assert max_delta("deberta zero-shot scores", x["scores"], y["scores"]) <= 1e-4


def test_int8_finds_every_encoder_linear_and_stays_close(deberta):
    from coulisse.models.quantize import Int8Linear

    directory = deberta.checkpoint("c2p-unbucketed", "base")
    fp32 = pipeline("feature-extraction", model=directory)
    int8 = pipeline("feature-extraction", model=directory, quantize="int8")
    # Per layer: fused q/k/v, pos_key_proj, attention output, intermediate, output.
    swapped = [n for n, m in int8.model.base.encoder.named_modules() if isinstance(m, Int8Linear)]
    assert len(swapped) == 5 * 2 and any("pos_key_proj" in n for n in swapped), swapped
    a = np.concatenate([np.asarray(x)[0] for x in fp32(TEXTS)])
    b = np.concatenate([np.asarray(x)[0] for x in int8(TEXTS)])
    cosine = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    max_delta("deberta int8 1 - cosine", 1 - cosine, np.zeros_like(cosine))
    assert cosine.min() >= 0.98 and cosine.mean() >= 0.995, (cosine.min(), cosine.mean())
    assert np.abs(a - b).max() > 1e-6, "int8 should differ from fp32 at all"
    # The classifier (v3: shared keys project the relative table with the int8 q/k/v layer) runs and stays
    # close: measured max |Δ| 0.04 on logits up to 1.2.
    fp32 = pipeline("text-classification", model=deberta.checkpoint("v3"))
    int8 = pipeline("text-classification", model=deberta.checkpoint("v3"), quantize="int8")
    a, b = (np.stack(p.forward(p.preprocess(TEXTS))) for p in (fp32, int8))
    assert max_delta("deberta int8 logits", a, b) <= 0.1
    assert len(int8(TEXTS, top_k=None)) == len(TEXTS)


def test_config_defaults_are_transformers(deberta):
    import transformers

    ours = EncoderConfig.from_dict({"model_type": "deberta-v2"})
    theirs = transformers.DebertaV2Config()
    for field in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                  "hidden_act", "max_position_embeddings", "type_vocab_size", "layer_norm_eps", "pad_token_id"):
        assert getattr(ours, field) == getattr(theirs, field), field
    opts = DebertaV2Options.from_config(ours)
    assert (opts.relative_attention, opts.position_biased_input, opts.pos_att_type, opts.legacy) == (
        theirs.relative_attention, theirs.position_biased_input, (), theirs.legacy)
    assert opts.max_relative_positions == 512 and opts.span == 512 and opts.pooler_hidden_size == 1536


@pytest.mark.parametrize("buckets,max_position", [(16, 512), (256, 512), (32, 48), (8, 64)])
def test_log_buckets_equal_transformers(buckets, max_position):
    from transformers.models.deberta_v2.modeling_deberta_v2 import make_log_bucket_position

    rel = torch.arange(-2000, 2001)
    expected = make_log_bucket_position(rel, buckets, max_position).long()
    assert torch.equal(log_buckets(rel, buckets, max_position), expected)


@pytest.mark.parametrize("change,message", [({"pos_att_type": "p2p|c2p"}, "p2p"),
                                            ({"conv_kernel_size": 4}, "conv_kernel_size=4"),
                                            ({"conv_kernel_size": 3, "conv_act": "mish"}, "mish"),
                                            ({"attention_head_size": 64}, "attention_head_size=64"),
                                            # at load, where the first call failed in torch's words (audit 44)
                                            ({"pooler_hidden_size": 48}, "pooler_hidden_size=48 .* hidden_size=32")])
def test_unsupported_configs_say_which_field(deberta, tmp_path, change, message):
    shutil.copytree(deberta.checkpoint("v3"), tmp_path / "ckpt")
    config = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    (tmp_path / "ckpt" / "config.json").write_text(json.dumps({**config, **change}))
    with pytest.raises(UnsupportedModelError, match=message):
        pipeline("text-classification", model=tmp_path / "ckpt")


def test_unused_absolute_position_table_is_ignored(deberta, tmp_path):
    """Some DeBERTa checkpoints keep a position table that `position_biased_input: false` never reads;
    transformers drops it silently, and so does coulisse (any other stray encoder tensor stays an error)."""
    model = copy.deepcopy(deberta.model("v3"))
    state = dict(model.state_dict())
    state["deberta.embeddings.position_embeddings.weight"] = torch.randn(512, 32)
    model.config.save_pretrained(tmp_path)
    torch.save(state, tmp_path / "pytorch_model.bin")
    for f in deberta.tokenizer_dir.iterdir():
        if f.name != "config.json":
            shutil.copy(f, tmp_path / f.name)
    pipe = pipeline("text-classification", model=tmp_path)
    inputs = deberta.inputs(TEXTS[:3])
    with torch.no_grad():
        assert_close("deberta logits batched [v3]", pipe.model(**inputs).logits, model(**inputs).logits)


@pytest.mark.parametrize("name", ["v3", "absolute"])
def test_past_the_position_table_without_truncation(deberta, name):
    """truncation=False on a text longer than 512 tokens: a model that reads absolute positions cannot embed
    it (transformers: IndexError), which is refused in one line; v3's relative buckets run any length, as
    transformers' does."""
    from coulisse.errors import InputError

    pipe = pipeline("text-classification", model=deberta.checkpoint(name))
    text = " ".join(["le film est long"] * 200)
    assert len(pipe.tokenizer(text)["input_ids"]) > 512
    if name == "absolute":
        with pytest.raises(InputError, match=r"input 0 has \d+ tokens.* at most 512 positions.*truncation=True"):
            pipe(text, truncation=False)
        return
    inputs = deberta.hf_tokenizer([text], return_tensors="pt")
    with torch.no_grad():
        expected = torch.softmax(deberta.model(name)(**inputs).logits, -1)[0]
    got = pipe(text, truncation=False, top_k=None)
    assert_close("deberta v3 past 512 tokens", [r["score"] for r in sorted(got, key=lambda r: r["label"])],
                 [float(expected[i]) for i in sorted(LABELS, key=lambda i: LABELS[i])])


def test_relative_only_keeps_its_tokenizers_longer_limit(deberta, tmp_path, caplog):
    """DeBERTa-v3 reads no absolute position: a fine-tune whose tokenizer says 1,024 tokens (config.json's table
    512) was cut at 512, answering otherwise than transformers (audit 44). A model that reads the table is
    still cut at it."""
    import transformers

    text = " ".join(["le film est long et lent"] * 80)
    for name, limit in (("v3", 1024), ("absolute", 512)):
        directory = tmp_path / name
        shutil.copytree(deberta.checkpoint(name), directory)
        (directory / "tokenizer_config.json").write_text(
            json.dumps({"do_lower_case": False, "vocab_type": "spm", "model_max_length": 1024}), encoding="utf-8")
        pipe = pipeline("text-classification", model=directory)
        assert pipe.tokenizer.model_max_length == limit
        assert 512 < len(pipe.tokenizer(text)["input_ids"]) < 1024
        if name == "v3":
            theirs = transformers.pipeline("text-classification", model=str(directory), device="cpu", top_k=None)
            expected = {r["label"]: r["score"] for r in theirs([text], truncation=True)[0]}
            got = {r["label"]: r["score"] for r in pipe(text, truncation=True, top_k=None)}
            assert max_delta("deberta v3 at 1,024 tokens", [got[k] for k in sorted(got)],
                             [expected[k] for k in sorted(got)]) <= 1e-4
        # a row past the limit, not cut: the warning says whether the model fails on it (v3 runs it)
        with caplog.at_level(logging.WARNING, logger="coulisse.tokenizer.tokenizer"):
            pipe.tokenizer(text * 2)
        said = " ".join(r.getMessage() for r in caplog.records)
        assert ("reads relative positions only and runs it" in said) is (name == "v3")
        assert ("the model would fail on it" in said) is (name == "absolute")
        caplog.clear()
    # a limit past any DeBERTa's tuning (999999999 held one server request for minutes): 8 times the table
    directory = tmp_path / "v3"
    (directory / "tokenizer_config.json").write_text(
        json.dumps({"do_lower_case": False, "vocab_type": "spm", "model_max_length": 999999999}), encoding="utf-8")
    assert pipeline("text-classification", model=directory).tokenizer.model_max_length == 8 * 512


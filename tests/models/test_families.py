"""The family table (`coulisse.families`) is the one place families differ: a family whose blocks are BERT's
is one row (here data2vec-text, added by a test), and the two families added through it — ELECTRA (BERT's
blocks, one row and its head) and FlauBERT (its own blocks, `coulisse.models.flaubert`) — equal
transformers 5 beyond the classifier oracle of test_logits_oracle.py: token classification, config
variants, int8 equal to its formula, typed errors for what they lack. Oracle: transformers' own models, ≤ 1e-4.
"""

from __future__ import annotations

import copy
import json
import shutil

import numpy as np
import pytest
import torch
from factory import (
    CLASSIFIER_ARCHS,
    CORPUS,
    LABELS,
    TEXTS,
    assert_close,
    assert_distinct_rows,
    assert_same_encoding,
    write_weights,
)

from coulisse import pipeline
from coulisse.config import ACTIVATION_NAMES, EncoderConfig
from coulisse.engine import Item
from coulisse.errors import UnsupportedModelError
from coulisse.families import FAMILIES, ROBERTA_HEADS, Family

NER_LABELS = {0: "O", 1: "B-PER", 2: "I-PER", 3: "B-LOC", 4: "I-LOC"}


def transformers_model(factory, arch: str, auto: str = "AutoModelForSequenceClassification", seed: int = 0,
                       config=None, **changes):
    """A transformers model of `arch` (the factory's config, with `changes`), LayerNorms moved off 1 and 0."""
    import transformers

    config = copy.deepcopy(config or factory.reference(arch).model.config)
    for key, value in changes.items():
        setattr(config, key, value)
    torch.manual_seed(seed)
    model = getattr(transformers, auto).from_config(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name.lower():
                p.add_(torch.randn_like(p) * 0.2)
    return model


def save(factory, model, directory, tokenizer_arch: str, weights: str = "safetensors"):
    directory.mkdir(parents=True, exist_ok=True)
    write_weights(model, directory, weights)
    for f in factory.tokenizer_files(tokenizer_arch).iterdir():
        if f.name != "config.json":
            shutil.copy(f, directory / f.name)
    return directory


def oracle(model, tok, texts, **kwargs):
    inputs = tok(texts, padding=True, truncation=True, max_length=512, return_tensors="pt")
    with torch.no_grad():
        return inputs, model(**inputs, **kwargs)


def check_sequence_classifier(kind: str, pipe, inputs, logits) -> None:
    # Rows 10x the comparison's tolerance apart already make equal logits meaningful; the tiny random
    # FlauBERT variants (ReLU, tanh summary) have come as close as 0.009 across runs (the default is 1e-2).
    assert_distinct_rows(logits, min_spread=1e-3)
    ours = pipe.tokenizer(TEXTS, padding=True, truncation=True, return_tensors="pt")
    assert_same_encoding(ours, inputs)
    assert_close(f"logits batched [{kind}]", pipe.model(**ours).logits, logits)
    assert_close(f"logits engine [{kind}]", np.stack(pipe.forward(pipe.preprocess(TEXTS))), logits)


# -- the table ---------------------------------------------------------------------------------------------


def test_a_family_with_berts_blocks_is_one_row(factory, tmp_path, monkeypatch):
    """data2vec-text is RoBERTa under another model_type and checkpoint prefix: one `Family` row (no code, no
    head class) and it loads, tokenizes and computes as its transformers twin does."""
    import transformers

    monkeypatch.setitem(FAMILIES, "data2vec-text", Family(
        "data2vec-text", ("data2vec_text",), ROBERTA_HEADS, positions_from_pad=True,
        tokenizer_class="RobertaTokenizer"))
    roberta = factory.reference("roberta").model.config
    fields = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
              "max_position_embeddings", "type_vocab_size", "layer_norm_eps", "pad_token_id", "bos_token_id",
              "eos_token_id", "id2label", "label2id", "initializer_range")
    config = transformers.Data2VecTextConfig(**{f: getattr(roberta, f) for f in fields})
    classifier = transformers_model(factory, "roberta", config=config)
    assert type(classifier).__name__ == "Data2VecTextForSequenceClassification"
    directory = save(factory, classifier, tmp_path / "classifier", "roberta", weights="sharded-safetensors")
    tok = transformers.AutoTokenizer.from_pretrained(str(directory))
    inputs, out = oracle(classifier, tok, TEXTS)
    pipe = pipeline("text-classification", model=directory)
    assert pipe.config.id2label == LABELS and pipe.config.position_offset == roberta.pad_token_id + 1
    check_sequence_classifier("data2vec-text", pipe, inputs, out.logits)

    base = save(factory, classifier.base_model, tmp_path / "base", "roberta")
    real = inputs["attention_mask"].bool()
    with torch.no_grad():
        hidden = classifier.base_model(**inputs).last_hidden_state
    ours = pipeline("feature-extraction", model=base)
    got = ours.model(**ours.tokenizer(TEXTS, padding=True, truncation=True, return_tensors="pt")).last_hidden_state
    assert_close("hidden states [data2vec-text]", got[real], hidden[real])


def test_every_row_names_what_exists():
    from coulisse.models.model import resolve

    for family in FAMILIES.values():
        assert callable(resolve(family.model)) and callable(resolve(family.checkpoint_keys)), family.model_type
        heads = resolve(family.heads) if isinstance(family.heads, str) else family.heads
        for task, builder in heads.items():
            assert callable(resolve(builder) if isinstance(builder, str) else builder), (family.model_type, task)


def test_a_head_the_family_lacks_is_a_typed_error(factory):
    with pytest.raises(UnsupportedModelError, match=r"electra checkpoints with the heads sequence-classification, "
                                                    r"token-classification .* not masked-lm"):
        pipeline("fill-mask", model=factory.checkpoint("electra"))


def test_config_defaults_and_spellings_follow_transformers():
    """A config.json leaving fields out gets transformers' defaults; FlauBERT's XLM spellings map onto ours.
    MPNet embeds no token types and counts positions from 2 (max_position_embeddings 514: 512 tokens)."""
    import transformers

    for ours, theirs in [(EncoderConfig.from_dict({"model_type": "electra"}), transformers.ElectraConfig()),
                         (EncoderConfig.from_dict({"model_type": "flaubert"}), transformers.FlaubertConfig()),
                         (EncoderConfig.from_dict({"model_type": "mpnet"}), transformers.MPNetConfig())]:
        assert (ours.vocab_size, ours.hidden_size, ours.num_hidden_layers, ours.num_attention_heads,
                ours.pad_token_id) == (theirs.vocab_size, theirs.hidden_size, theirs.num_hidden_layers,
                                       theirs.num_attention_heads, theirs.pad_token_id)
    mpnet = EncoderConfig.from_dict({"model_type": "mpnet", "max_position_embeddings": 514})
    assert (mpnet.type_vocab_size, mpnet.position_offset, mpnet.max_positions) == (0, 2, 512)
    assert EncoderConfig.from_dict({"model_type": "electra"}).embedding_size == 128
    assert EncoderConfig.from_dict({"model_type": "electra"}).intermediate_size == 1024
    relu = transformers.FlaubertConfig(emb_dim=64, n_layers=3, n_heads=8, gelu_activation=False, pre_norm=True)
    ours = EncoderConfig.from_dict(relu.to_dict())
    assert (ours.hidden_size, ours.num_hidden_layers, ours.num_attention_heads, ours.intermediate_size,
            ours.hidden_act, ours.pre_norm) == (64, 3, 8, 256, "relu", True)


@pytest.mark.parametrize("arch", ["bert", "roberta"])
def test_a_stray_embedding_size_is_ignored_as_transformers_ignores_it(factory, tmp_path, arch):
    """Only ELECTRA reads embedding_size: in a BERT or RoBERTa config.json, coulisse expected an ELECTRA-style
    projection and refused the weights with a shape error that never named the field (audit 44)."""
    folder = tmp_path / arch
    shutil.copytree(factory.checkpoint(arch), folder)
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    (folder / "config.json").write_text(json.dumps({**config, "embedding_size": 16}), encoding="utf-8")
    texts = ["Un film magnifique.", "Je déteste tellement ça !"]
    plain = pipeline("text-classification", model=factory.checkpoint(arch))(texts, top_k=None)
    stray = pipeline("text-classification", model=folder)(texts, top_k=None)
    assert stray == plain


# -- ELECTRA and FlauBERT beyond the classifier oracle -----------------------------------------------------


@pytest.mark.parametrize("arch", CLASSIFIER_ARCHS)
def test_token_classification_equals_transformers(factory, tmp_path, arch):
    config = copy.deepcopy(factory.reference(arch).model.config)
    config.id2label, config.label2id = dict(NER_LABELS), {v: k for k, v in NER_LABELS.items()}
    model = transformers_model(factory, arch, "AutoModelForTokenClassification", seed=5, config=config)
    directory = save(factory, model, tmp_path / arch, arch, weights="bin")
    inputs, out = oracle(model, factory.hf_tokenizer(arch), TEXTS)
    real = inputs["attention_mask"].bool()
    pipe = pipeline("token-classification", model=directory)
    ours = pipe.tokenizer(TEXTS, padding=True, truncation=True, return_tensors="pt")
    assert_same_encoding(ours, inputs)
    assert_close(f"token logits batched [{arch}]", pipe.model(**ours).logits[real], out.logits[real])
    items = [Item(e.ids, e.type_ids) for e in pipe.tokenizer.encode_batch(TEXTS)]
    for i, rows in enumerate(pipe.forward(items)):
        assert_close(f"token logits engine [{arch}]", rows, out.logits[i][real[i]])
    for text, entities in zip(TEXTS[:4], pipe(TEXTS[:4], aggregation_strategy="simple"), strict=True):
        assert all(0 <= e["start"] <= e["end"] <= len(text) for e in entities)


@pytest.mark.parametrize("arch", ["bert", "distilbert"])
@pytest.mark.parametrize("act", sorted(ACTIVATION_NAMES))
def test_every_activation_the_config_accepts_runs_as_transformers(factory, tmp_path, arch, act):
    """What config.json may name (ACTIVATION_NAMES) is what the models run: "tanh" passed the check and then
    failed as a bare KeyError in the blocks."""
    field = "activation" if arch == "distilbert" else "hidden_act"
    model = transformers_model(factory, arch, seed=3, **{field: act})
    directory = save(factory, model, tmp_path / arch, arch)
    inputs = factory.hf_tokenizer(arch)(TEXTS, padding=True, truncation=True, max_length=512, return_tensors="pt")
    inputs.pop("token_type_ids") if arch == "distilbert" else None  # DistilBERT's forward takes none
    with torch.no_grad():
        logits = model(**inputs).logits
    assert_distinct_rows(logits, min_spread=1e-3)
    pipe = pipeline("text-classification", model=directory)
    assert_close(f"logits [{arch} {act}]", np.stack(pipe.forward(pipe.preprocess(TEXTS))), logits)


@pytest.mark.parametrize("arch", ["bert", "electra"])
def test_one_token_type_reads_single_texts_and_refuses_pairs(factory, tmp_path, arch):
    """type_vocab_size 1 (no second segment): transformers loads it and classifies single texts, and so does
    coulisse; a pair, whose second text has type 1, is one InputError instead of an IndexError in the table."""
    from coulisse.errors import InputError

    model = transformers_model(factory, arch, seed=4, type_vocab_size=1)
    directory = save(factory, model, tmp_path / arch, arch)
    inputs, out = oracle(model, factory.hf_tokenizer(arch), TEXTS)
    pipe = pipeline("text-classification", model=directory)
    assert_close(f"logits [{arch}, one type]", np.stack(pipe.forward(pipe.preprocess(TEXTS))), out.logits)
    with pytest.raises(InputError, match="embeds only types 0 to 0 .* not \\(text, text_pair\\) pairs"):
        pipe({"text": TEXTS[0], "text_pair": TEXTS[1]})


def test_electra_tokenizer_equals_transformers_on_the_corpus(factory):
    """ELECTRA ships WordPiece vocab.txt files (transformers 5 reads them with BertTokenizer): token types too."""
    from coulisse.tokenizer import Tokenizer

    ours = Tokenizer.from_dir(factory.checkpoint("electra"), model_type="electra")
    theirs = factory.hf_tokenizer("electra")
    assert_same_encoding(ours(CORPUS, padding=True), theirs(CORPUS, padding=True))
    assert_same_encoding(ours(CORPUS[:9], CORPUS[9:], padding=True), theirs(CORPUS[:9], CORPUS[9:], padding=True))


def test_electra_without_projection_and_with_token_types(factory, tmp_path):
    """embedding_size = hidden_size: no embeddings_project; text pairs carry token types 0 and 1."""
    model = transformers_model(factory, "electra", seed=3, embedding_size=32)
    directory = save(factory, model, tmp_path / "electra", "electra")
    pipe = pipeline("text-classification", model=directory)
    assert not hasattr(pipe.model.base, "embeddings_project")
    inputs, out = oracle(model, factory.hf_tokenizer("electra"), TEXTS)
    check_sequence_classifier("electra embedding_size=hidden", pipe, inputs, out.logits)
    tok = factory.hf_tokenizer("electra")
    pairs = tok(TEXTS[:4], TEXTS[2:6], padding=True, truncation=True, max_length=40, return_tensors="pt")
    assert pairs["token_type_ids"].any()
    ours = pipe.tokenizer(TEXTS[:4], TEXTS[2:6], padding=True, truncation=True, max_length=40, return_tensors="pt")
    assert_same_encoding(ours, pairs)
    with torch.no_grad():
        want = model(**pairs).logits
    assert_close("logits pairs [electra]", pipe.model(**ours).logits, want)


def _pre_norm_cache(config):
    """transformers 5 fails on pre-norm FlauBERT models: that branch indexes its cache per layer (`cache[i]`),
    which EncoderDecoderCache does not support. Handing each layer the whole (empty) cache back runs the
    branch's arithmetic unchanged."""
    from transformers.cache_utils import DynamicCache, EncoderDecoderCache

    class PerLayer(EncoderDecoderCache):
        def __getitem__(self, layer: int):
            return self

    return PerLayer(DynamicCache(config=config), DynamicCache(config=config))


VARIANTS = {
    "pre_norm": dict(pre_norm=True),
    "relu, tanh summary": dict(gelu_activation=False, summary_activation="tanh"),
    "languages, sinusoidal positions": dict(n_langs=2, use_lang_emb=True, sinusoidal_embeddings=True),
}


@pytest.mark.parametrize("variant", VARIANTS)
def test_flaubert_variants_equal_transformers(factory, tmp_path, variant):
    model = transformers_model(factory, "flaubert", seed=11, **VARIANTS[variant])
    directory = save(factory, model, tmp_path / "flaubert", "flaubert")
    tok = factory.hf_tokenizer("flaubert")
    extra = {"cache": _pre_norm_cache(model.config)} if variant == "pre_norm" else {}
    inputs, out = oracle(model, tok, TEXTS, **extra)
    pipe = pipeline("text-classification", model=directory)
    check_sequence_classifier(f"flaubert {variant}", pipe, inputs, out.logits)
    for text, row in zip(TEXTS, pipe.forward(pipe.preprocess(TEXTS)), strict=True):
        extra = {"cache": _pre_norm_cache(model.config)} if variant == "pre_norm" else {}
        _, single = oracle(model, tok, [text], **extra)
        assert_close(f"logits one by one [flaubert {variant}]", row[None], single.logits)


@pytest.mark.parametrize("change, message", [
    (dict(summary_type="last"), "summary_type='last'"),
    (dict(summary_proj_to_labels=False), "summary_proj_to_labels=False"),
    (dict(summary_activation="softmax"), "summary_activation='softmax'"),
])
def test_unsupported_flaubert_summaries_say_which_field(factory, tmp_path, change, message):
    model = factory.reference("flaubert").model
    save(factory, model, tmp_path, "flaubert")
    config = json.loads((tmp_path / "config.json").read_text(encoding="utf-8"))
    (tmp_path / "config.json").write_text(json.dumps({**config, **change}), encoding="utf-8")
    with pytest.raises(UnsupportedModelError, match=message):
        pipeline("text-classification", model=tmp_path)


def fake_int8(model, weight_max: int) -> int:
    """Make every encoder linear layer of a transformers model compute coulisse's int8 formula in float64:
    `s_x·s_w·Σ q_x·q_w + b`, per-token activation codes `round(x / s_x)`, `s_x = max|x| / 127`, and
    per-channel weight codes `round(w / s_w)`, `s_w = max|w| / weight_max`. Returns how many layers."""
    count = 0
    for name, module in model.named_modules():
        encoder = ".encoder." in name or name.startswith(("transformer.attentions.", "transformer.ffns."))
        if encoder and isinstance(module, torch.nn.Linear):
            module.forward = _int8_formula(module.weight.detach(), module.bias.detach(), weight_max)
            count += 1
    return count


def _int8_formula(w, bias, weight_max: int):
    s_w = w.abs().amax(1).clamp(min=1e-12) / weight_max
    q_w = torch.round(w / s_w[:, None]).clamp(-weight_max, weight_max).double()
    s_w, bias = s_w.double(), bias.double()

    def forward(x):
        s_x = x.abs().amax(-1, keepdim=True).clamp(min=1e-12) / 127
        return ((torch.round(x / s_x).double() @ q_w.T) * s_x.double() * s_w + bias).float()

    return forward


@pytest.mark.parametrize("arch", (*CLASSIFIER_ARCHS, "mpnet"))
def test_int8_computes_the_quantized_formula_end_to_end(factory, arch):
    """Oracle: the transformers model with its encoder layers computing the int8 formula (`fake_int8`), at
    this CPU's weight width (8 bits with VNNI or AMX, 7 without). The layers equal that formula to float32
    rounding (test_quantize.py), so the two models part only where an activation code moves: activations
    that differ by float32 rounding (~1e-6) cross a rounding boundary of x / s_x for ~1e-4 of the codes,
    and each moved code is one step, against half a step of rounding on every code for int8 itself. Over
    the ~1e5 codes of these models, moved codes weigh at most ~5 % of int8's own error (√(10 moved codes)
    steps against √(1e5)·0.29): this CPU measured no moved code at all (~1e-7 of the largest logit).
    Bounds: within 1 % of the largest logit (int8 moves these tiny random models with large weights,
    int8's worst case, by 2-4 %) and 4x closer to the formula than fp32 is."""
    from coulisse.engine.cpu import this_machine
    from coulisse.models.quantize import Int8Linear, onednn_available

    if not onednn_available():
        pytest.skip("no oneDNN int8 in this PyTorch: fbgemm's per-tensor path has another formula")
    directory = factory.checkpoint(arch)
    fp32 = pipeline("text-classification", model=directory)
    int8 = pipeline("text-classification", model=directory, quantize="int8")
    layers = [m for m in int8.model.base.encoder.modules() if isinstance(m, Int8Linear)]
    assert len(layers) == 4 * 2  # qkv, attention output, feed-forward in and out, per layer
    assert sum(m.gelu for m in layers) == 2, "the feed-forward GELU runs inside the int8 layer"
    a = np.array(int8.forward(int8.preprocess(TEXTS)))
    b = np.array(fp32.forward(fp32.preprocess(TEXTS)))
    reference = copy.deepcopy(factory.reference(arch).model)
    weight_max = 2 ** (this_machine().int8.options.get("weight_bits", 7) - 1) - 1  # the pipeline's plan
    assert fake_int8(reference, weight_max) == 6 * 2
    _, out = oracle(reference, factory.hf_tokenizer(arch), TEXTS)
    expected = out.logits.numpy()
    scale = np.abs(b).max()
    assert np.abs(a - expected).max() < 0.01 * scale
    assert np.abs(a - expected).max() < 0.25 * np.abs(b - expected).max()

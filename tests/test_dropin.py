"""Swap the import, keep the script: code written for transformers 5's `pipeline()` runs unchanged with
`from coulisse import pipeline`, and gives transformers' results (labels and shapes equal, numbers within
1e-4: both compute in fp32, and transformers pads its batches of 8 while coulisse packs them, which moves
scores by ~1e-7). Each script below is run twice, once per import line, on the same tiny random checkpoint.

Also: every rejected option fails in one line before any file of the model is opened; streamed inputs are
read a window at a time; `batch_size` bounds the engine's batches.
"""

from __future__ import annotations

import copy
import shutil
import types

import numpy as np
import pytest
import torch
from factory import FAST_TOKENIZER_ARCHS, TEXTS

from coulisse import pipeline
from coulisse.errors import DeviceError, InputError
from coulisse.tasks.streams import WINDOW

TRANSFORMERS = "from transformers import pipeline"
COULISSE = "from coulisse import pipeline"

# A user's sentiment script, as written for transformers: every input kind, constructor and call options.
CLASSIFY = '''
from transformers import pipeline
import datasets
from transformers.pipelines.pt_utils import KeyDataset

def run(model_dir, texts):
    classifier = pipeline("text-classification", model=model_dir, batch_size=8, device=-1, truncation=True,
                          top_k=None, dtype="auto", num_workers=0)
    out = {"str": classifier(texts[0]), "list": classifier(texts)}
    out["generator"] = classifier(text for text in texts)
    dataset = datasets.Dataset.from_dict({"text": texts, "label": [i % 2 for i in range(len(texts))]})
    out["keydataset"] = classifier(KeyDataset(dataset, "text"), batch_size=4)
    out["call options"] = classifier(texts, top_k=2, function_to_apply="sigmoid", max_length=16, padding=True)
    out["pairs"] = classifier([{"text": t, "text_pair": "Vraiment."} for t in texts[:3]], truncation="only_first")
    plain = pipeline("sentiment-analysis", model=model_dir, device="cpu", torch_dtype="float32")
    out["legacy str"] = plain(texts[1])
    out["legacy generator"] = plain(t for t in texts[:3])
    out["top_k=1 call"] = plain(texts[1], top_k=1)
    out["no specials"] = plain(texts[:2], add_special_tokens=False)
    out["text_pair="] = plain(texts[0], text_pair="Vraiment.")
    out["empty text_pair"] = plain({"text": texts[0], "text_pair": ""})  # one text alone, as the tokenizer reads ""
    out["text_pair='' call"] = plain(texts[:2], text_pair="")
    out["mixed pairs"] = plain([{"text": texts[0], "text_pair": "Vraiment."}, texts[1], {"text": texts[2]},
                                {"text": texts[3], "text_pair": ""}])
    capped = pipeline("text-classification", model=model_dir, truncation=True, max_length=8)
    out["max_length=None call"] = capped(texts[:2], max_length=None)  # the model's limit, not the pipeline's 8
    out["predict"], out["transform"] = plain.predict(texts[:2]), plain.transform(texts[2])
    out["dtype"] = [str(plain.dtype), str(plain.torch_dtype)]
    return out
'''

NER = '''
from transformers import pipeline

def run(model_dir, texts):
    ner = pipeline("token-classification", model=model_dir, device=-1, aggregation_strategy="simple")
    return {"simple": ner(texts), "none": ner(texts[0], aggregation_strategy="none", ignore_labels=[]),
            "first": ner((t for t in texts[:2]), aggregation_strategy="first", batch_size=2),
            "stride": ner(texts[-1], stride=8, aggregation_strategy="max")}
'''

FILL = '''
from transformers import pipeline

def run(model_dir, texts):
    unmask = pipeline("fill-mask", model=model_dir, device=-1, top_k=3)
    return {"one": unmask(texts[0]), "list": unmask(texts, top_k=2, batch_size=2),
            "targets": unmask(texts[1], targets=["le", "la"]),
            "generator": unmask(t for t in texts),
            "truncated": unmask(texts[0], tokenizer_kwargs={"truncation": True, "max_length": 12})}
'''

ZERO_SHOT = '''
from transformers import pipeline

def run(model_dir, texts):
    classifier = pipeline("zero-shot-classification", model=model_dir, device=-1, batch_size=4)
    labels = ["sport", "politique", "cinéma"]
    return {"one": classifier(texts[0], candidate_labels=labels),
            "list": classifier(texts, candidate_labels=labels, multi_label=True),
            "positional": classifier(texts[1], labels, hypothesis_template="Ce texte parle de {}."),
            "generator": classifier((t for t in texts), candidate_labels="sport, cinéma"),
            # given at a call, None is multi_label=False there, whatever the pipeline's default
            "multi_label=None": pipeline("zero-shot-classification", model=model_dir, device=-1, multi_label=True,
                                         candidate_labels=labels)(texts[0], multi_label=None)}
'''

FEATURES = '''
from transformers import pipeline

def run(model_dir, texts):
    extractor = pipeline("feature-extraction", model=model_dir, device=-1, truncation=True)
    return {"one": extractor(texts[0]), "list": extractor(texts[:3], batch_size=2),
            "tensors": extractor(texts[1], return_tensors=True),
            "kwargs": extractor(texts[0], tokenize_kwargs={"max_length": 6}, truncation=None),
            "generator": extractor(t for t in texts[:2])}
'''


# The course's three stages, by a transformers user: the pipeline's tokenizer and model as transformers' objects.
STAGES = '''
from transformers import pipeline
import torch

def run(model_dir, texts):
    classifier = pipeline("sentiment-analysis", model=model_dir)
    tok, model = classifier.tokenizer, classifier.model
    inputs = tok(texts, padding=True, truncation=True, return_tensors="pt").to("cpu")
    mask = inputs["attention_mask"]
    # transformers 5 gives DistilBERT token types its model does not read; coulisse leaves them out (docs/dropin.md)
    types = model.config.model_type != "distilbert"
    out = {"encoding": {k: v for k, v in inputs.items() if types or k != "token_type_ids"},
           "word_ids": [inputs.word_ids(i) for i in range(len(texts))],
           "tokens": [inputs.tokens(i) for i in range(len(texts))]}
    with torch.no_grad():
        outputs = model(**inputs, output_hidden_states=True)
        out["logits"], out["by name"], out["first"] = outputs.logits, outputs["logits"], outputs[0]
        out["hidden states"] = [h * mask[..., None] for h in outputs.hidden_states]
        out["tuple"] = model(**inputs, return_dict=False)[0]
        out["no mask"] = model(input_ids=inputs["input_ids"]).logits
        out["ones"] = model(input_ids=inputs["input_ids"], attention_mask=torch.ones_like(mask)).logits
    out["specials"] = [tok.pad_token, tok.pad_token_id, tok.cls_token, tok.cls_token_id, tok.sep_token,
                       tok.sep_token_id, tok.mask_token, tok.mask_token_id, tok.unk_token, tok.unk_token_id,
                       tok.bos_token, tok.bos_token_id, tok.eos_token, tok.eos_token_id, tok.all_special_tokens,
                       tok.all_special_ids, tok.vocab_size, len(tok)]
    out["encode"] = tok.encode(texts[0])
    out["encode pair"] = tok.encode(texts[0], texts[1])
    out["empty pair"] = [tok(texts[0], text_pair="")["input_ids"], tok([texts[0]], text_pair=[""])["input_ids"]]
    out["batch_decode"] = tok.batch_decode(inputs["input_ids"], skip_special_tokens=True)
    out["decode one"] = tok.decode(inputs["input_ids"][0, 1])
    out["tokenize"] = tok.tokenize(texts[0])
    out["unknown token"] = tok.convert_tokens_to_ids(["zzqqxx", tok.pad_token])
    out["to tokens"] = tok.convert_ids_to_tokens(inputs["input_ids"][1], skip_special_tokens=True)
    out["special mask"] = tok(texts, padding=True, return_special_tokens_mask=True)["special_tokens_mask"]
    out["no mask key"] = sorted(k for k in tok(texts[0], return_attention_mask=False) if types or k != "token_type_ids")
    out["id2label"] = model.config.id2label
    out["inputs="] = classifier(inputs=texts[0])
    return out
'''


def run_script(script: str, import_line: str, *args):
    """Run `script` with its pipeline import swapped for `import_line`; what its `run` returns."""
    assert TRANSFORMERS in script
    namespace: dict = {}
    exec(compile(script.replace(TRANSFORMERS, import_line), "<user script>", "exec"), namespace)
    results = namespace["run"](*args)
    # A generator or a dataset in gives a lazy iterator out, in both; read it here.
    lazy = [k for k, v in results.items() if isinstance(v, types.GeneratorType) or hasattr(v, "__next__")]
    return {k: ("iterator", list(v)) if k in lazy else v for k, v in results.items()}


def assert_same(where: str, ours, theirs, tol: float = 1e-4) -> None:
    """Same structure and types; strings and ints equal; floats and arrays within `tol`."""
    if isinstance(theirs, torch.Tensor):
        assert isinstance(ours, torch.Tensor) and ours.shape == theirs.shape, (where, ours, theirs)
        np.testing.assert_allclose(ours.numpy(), theirs.numpy(), atol=tol, err_msg=where)
        return
    if isinstance(theirs, (np.floating, float)):
        assert isinstance(ours, (float, np.floating)) and abs(ours - theirs) <= tol, (where, ours, theirs)
        return
    assert type(ours) is type(theirs), (where, type(ours), type(theirs), ours, theirs)
    if isinstance(theirs, dict):
        assert set(ours) == set(theirs), (where, ours, theirs)
        for key in theirs:
            assert_same(f"{where}.{key}", ours[key], theirs[key], tol)
    elif isinstance(theirs, (list, tuple)):
        assert len(ours) == len(theirs), (where, ours, theirs)
        for i, (a, b) in enumerate(zip(ours, theirs, strict=True)):
            assert_same(f"{where}[{i}]", a, b, tol)
    else:
        assert ours == theirs, (where, ours, theirs)


def assert_script_equal(script: str, *args) -> None:
    theirs = run_script(script, TRANSFORMERS, *args)
    ours = run_script(script, COULISSE, *args)
    assert list(ours) == list(theirs)
    for key in theirs:
        assert_same(key, ours[key], theirs[key])


# -- the scripts -------------------------------------------------------------------------------------


SHORT = ["Un film magnifique, des acteurs excellents.", "Quel ennui… deux heures perdues !", "Bof.",
         "« Amélie » 😍", "À\tvoir\nabsolument"]


@pytest.mark.slow
def test_sentiment_script_runs_unchanged(factory, tmp_path):
    # TEXTS ends with a text past 512 tokens: truncation=True is what lets transformers run it, at the
    # tokenizer's model_max_length (which MiniLM's bare vocab.txt does not carry: a real checkpoint's does).
    shutil.copytree(factory.checkpoint("bert"), tmp_path, dirs_exist_ok=True)
    (tmp_path / "tokenizer_config.json").write_text('{"model_max_length": 512}', encoding="utf-8")
    assert_script_equal(CLASSIFY, str(tmp_path), TEXTS + SHORT)


@pytest.mark.slow
def test_sentiment_script_on_a_sentencepiece_model(factory):
    assert_script_equal(CLASSIFY, str(factory.checkpoint("camembert")), SHORT + TEXTS[:3])


@pytest.mark.parametrize("arch", FAST_TOKENIZER_ARCHS)
def test_the_three_stages_objects_behave_as_transformers(factory, arch):
    """The tokenizer and model behind the pipeline, used the way a transformers user uses them (special tokens,
    encode / decode, word_ids, output_hidden_states, a tuple, ids without a mask): the same values."""
    assert_script_equal(STAGES, str(factory.checkpoint(arch)), SHORT)


@pytest.mark.slow
def test_ner_script_runs_unchanged(task_factory):
    directory = task_factory.checkpoint("bert", "token-classification", model_max_length=24)
    assert_script_equal(NER, str(directory), SHORT[:3] + ["Marie Curie est née à Varsovie et a vécu à Paris. " * 3])


@pytest.mark.slow
def test_fill_mask_script_runs_unchanged(task_factory):
    texts = ["Le film est [MASK] et les acteurs sont bons.", "J'ai [MASK] ce film.", "Quel [MASK] !"]
    assert_script_equal(FILL, str(task_factory.checkpoint("bert", "masked-lm")), texts)


@pytest.mark.slow
def test_zero_shot_script_runs_unchanged(factory, tmp_path):
    import transformers

    config = copy.deepcopy(factory.reference("bert").model.config)
    labels = {0: "entailment", 1: "neutral", 2: "contradiction"}
    config.id2label, config.label2id = labels, {v: k for k, v in labels.items()}
    torch.manual_seed(7)
    transformers.AutoModelForSequenceClassification.from_config(config).eval().save_pretrained(tmp_path)
    for f in factory.tokenizer_files("bert").iterdir():
        if f.name != "config.json":
            shutil.copy(f, tmp_path / f.name)
    assert_script_equal(ZERO_SHOT, str(tmp_path), SHORT[:3])


@pytest.mark.slow
def test_feature_extraction_script_runs_unchanged(task_factory):
    assert_script_equal(FEATURES, str(task_factory.checkpoint("bert", "base")), SHORT)


# -- options refused before anything is read ---------------------------------------------------------


REFUSED = [
    ({"batchsize": 8}, "'batchsize' (did you mean 'batch_size'?)"),
    ({"num_worker": 2}, "'num_worker' (did you mean 'num_workers'?)"),
    ({"torch_dtyp": "float16"}, "'torch_dtyp' (did you mean 'torch_dtype'?)"),
    ({"top_n": 2}, "'top_n' (did you mean 'top_k'?)"),
    ({"model_kwargs": {"attn_implementaton": "sdpa"}}, "did you mean 'attn_implementation'?"),
    ({"dtype": "float64"}, "dtype='float64'"),
    ({"dtype": torch.float64}, "dtype=torch.float64"),
    ({"dtype": "int8"}, "dtype='int8'"),
    ({"device": -2}, "device=-2"),
    ({"device": "gpu"}, "device='gpu'"),
    ({"framework": "tf"}, "framework='tf'"),
    ({"image_processor": "google/vit-base"}, "image_processor='google/vit-base'"),
    ({"processor": object()}, "processor="),
    ({"pipeline_class": dict}, "pipeline_class="),
    ({"batch_size": 0}, "batch_size=0"),
    ({"top_k": 0}, "top_k=0"),
    ({"truncation": "sometimes"}, "truncation='sometimes'"),
    ({"stride": 16}, "stride=16 only applies with long_text='chunk'; pass long_text='chunk' to pipeline() too"),
    ({"dtype": "float16", "model_kwargs": {"dtype": "float32"}}, "dtype is given twice"),
]


@pytest.fixture
def no_weights(factory, tmp_path, monkeypatch):
    """A checkpoint folder without its weight file, and a loader that fails the test if it is reached."""
    source = factory.checkpoint("bert")
    for f in source.iterdir():
        if f.name != "model.safetensors":
            shutil.copy(f, tmp_path / f.name)

    def fail(*args, **kwargs):
        raise AssertionError("the model was being loaded before the options were checked")

    import coulisse.pipelines

    monkeypatch.setattr(coulisse.pipelines, "load_checkpoint", fail)
    monkeypatch.setattr(coulisse.pipelines, "resolve_model", fail)
    return tmp_path


@pytest.mark.parametrize(("options", "message"), REFUSED, ids=[m for _, m in REFUSED])
def test_rejected_options_fail_in_one_line_before_loading(no_weights, options, message):
    with pytest.raises((InputError, DeviceError)) as caught:
        pipeline("text-classification", model=str(no_weights), **options)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_unknown_option_lists_only_options_a_user_may_pass(no_weights):
    with pytest.raises(InputError) as caught:
        pipeline("text-classification", model=str(no_weights), zzz=1)
    offered = str(caught.value).split("valid options: ")[1].rstrip(".").split(", ")
    assert {"batch_size", "top_k", "dtype", "quantize", "truncation"} <= set(offered)
    # private names, options refused whatever their value, and **kwargs are not offered
    assert not [name for name in offered if name.startswith("_")]
    assert not {"kwargs", "image_processor", "feature_extractor", "video_processor", "processor"} & set(offered)


def test_call_options_fail_before_the_forward(factory, monkeypatch):
    pipe = pipeline("text-classification", model=factory.checkpoint("bert"))

    def fail(*args, **kwargs):
        raise AssertionError("the model ran before the call's options were checked")

    monkeypatch.setattr(pipe.engine, "run", fail)
    for options, message in [({"batchsize": 2}, "did you mean 'batch_size'?"), ({"topk": 1}, "did you mean 'top_k'?"),
                             ({"max_length": -1}, "max_length=-1"), ({"padding": "maximal"}, "padding='maximal'")]:
        with pytest.raises(InputError, match=message.replace("?", r"\?").replace("(", r"\(")):
            pipe(SHORT, **options)
    # a stream's options are checked at the call, not when its first result is read
    with pytest.raises(InputError, match="did you mean 'top_k'"):
        pipe((t for t in SHORT), topk=1)


# -- what the loading options mean ----------------------------------------------------------------------


def test_loading_options_take_transformers_meaning(factory):
    import transformers

    directory = factory.checkpoint("bert")
    reference = pipeline("text-classification", model=directory)(SHORT, top_k=None)
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(directory))
    for options in [{"device": -1}, {"device": torch.device("cpu")}, {"device_map": "cpu"},
                    {"device_map": {"": "cpu"}}, {"dtype": "auto"}, {"dtype": torch.float32},
                    {"torch_dtype": "float32"}, {"model_kwargs": {"torch_dtype": torch.float32}},
                    {"tokenizer": str(directory)}, {"tokenizer": tokenizer}, {"config": str(directory)},
                    {"use_fast": True, "trust_remote_code": False, "revision": None, "binary_output": True,
                     "framework": "pt", "code_revision": None, "local_files_only": True}]:
        pipe = pipeline("text-classification", model=directory, **options)
        assert pipe.device == torch.device("cpu") and pipe.dtype == torch.float32, options
        assert pipe(SHORT, top_k=None) == reference, options
    model = transformers.AutoModelForSequenceClassification.from_pretrained(str(directory))
    with pytest.raises(InputError, match="save_pretrained"):
        pipeline("text-classification", model=model)


def test_batch_size_bounds_the_engine_batches(factory):
    texts = SHORT * 7
    pipe = pipeline("text-classification", model=factory.checkpoint("bert"), batch_size=4)
    sizes: list[int] = []
    forward = pipe.engine.forward

    def spy(items, *args, **kwargs):
        sizes.append(len(items))
        return forward(items, *args, **kwargs)

    pipe.engine.forward = spy
    every = pipe(texts, top_k=None)
    assert max(sizes) == 4 and sum(sizes) == len(texts)
    sizes.clear()
    # other batches, other GEMM shapes: fp32 sums in another order (measured differences ~1e-7)
    assert_same("batch_size=3", pipe(texts, top_k=None, batch_size=3), every, tol=1e-5)
    assert max(sizes) == 3 and sum(sizes) == len(texts)


def test_streams_are_read_a_window_at_a_time(factory):
    pipe = pipeline("text-classification", model=factory.checkpoint("bert"))
    texts = [SHORT[i % len(SHORT)] + f" {i}" for i in range(2 * WINDOW + 10)]
    pulled = []

    def source():
        for text in texts:
            pulled.append(text)
            yield text

    results = pipe(source())
    assert pulled == []  # nothing is read before the first result is asked for
    first = next(results)
    assert len(pulled) == WINDOW
    rest = list(results)
    assert_same("stream", [first, *rest], pipe(texts), tol=1e-5)
    with pytest.raises(TypeError, match="no length"):
        len(pipe(iter(texts)))


def test_datasets_stream_in_order(factory):
    import datasets
    from transformers.pipelines.pt_utils import KeyDataset

    pipe = pipeline("text-classification", model=factory.checkpoint("bert"))
    expected = pipe(SHORT)
    table = datasets.Dataset.from_dict({"text": SHORT, "label": list(range(len(SHORT)))})
    keyed = pipe(KeyDataset(table, "text"))
    assert len(keyed) == len(SHORT)
    assert_same("KeyDataset", list(keyed), expected, tol=1e-5)
    # transformers refuses a datasets.Dataset itself; coulisse streams its rows ({"text": ...} dicts)
    assert_same("Dataset", list(pipe(table)), expected, tol=1e-5)
    one_column = datasets.Dataset.from_dict({"review": SHORT})  # one column: its values
    assert_same("one column", list(pipe(one_column)), expected, tol=1e-5)
    if hasattr(datasets, "Column"):  # datasets 4+: ds["text"] is a Column, neither a list nor a Dataset
        column = pipe(table["text"])
        assert len(column) == len(SHORT)
        assert_same("column", list(column), expected, tol=1e-5)
    if hasattr(datasets, "IterableColumn"):  # a streaming dataset's column
        streaming = datasets.IterableDataset.from_generator(lambda: ({"text": t} for t in SHORT))
        assert_same("iterable column", list(pipe(streaming["text"])), expected, tol=1e-5)
    assert_same("tuple", pipe(tuple(SHORT)), expected, tol=1e-5)
    assert_same("iterator", list(pipe(iter(SHORT))), expected, tol=1e-5)


def test_return_all_scores_is_ignored_as_in_transformers_5(factory, caplog):
    import transformers

    directory = factory.checkpoint("bert")
    theirs = transformers.pipeline("text-classification", model=str(directory), device="cpu")
    ours = pipeline("text-classification", model=directory)
    assert_same("return_all_scores", ours(SHORT[0], return_all_scores=True), theirs(SHORT[0], return_all_scores=True))
    assert "top_k=None" in caplog.text


def test_dropin_doc_lists_every_transformers_argument():
    """docs/dropin.md names every argument of transformers' pipeline() and of each task's call."""
    import inspect
    from pathlib import Path

    import transformers

    doc = (Path(__file__).parents[1] / "docs" / "dropin.md").read_text(encoding="utf-8")
    names = [n for n in inspect.signature(transformers.pipeline).parameters if n != "kwargs"]
    names += ["torch_dtype", "batch_size", "num_workers", "binary_output", "local_files_only"]
    from transformers.pipelines import (
        FeatureExtractionPipeline,
        FillMaskPipeline,
        TextClassificationPipeline,
        TokenClassificationPipeline,
    )

    for cls in (FeatureExtractionPipeline, FillMaskPipeline, TextClassificationPipeline,
                TokenClassificationPipeline):
        names += [n for n in inspect.signature(cls._sanitize_parameters).parameters
                  if n not in ("self", "kwargs", "tokenizer_kwargs")]
    names += ["candidate_labels", "hypothesis_template", "multi_label", "truncation", "max_length", "padding"]
    missing = [n for n in names if f"`{n}`" not in doc]
    assert not missing, missing


def test_the_objects_save_report_their_dtype_and_refuse_training(factory, tmp_path):
    """The tokenizer saves files transformers reads back to the same ids; the model says its dtype and config as
    transformers' do, and refuses `labels=` (a training loss) in one line rather than an unexpected keyword."""
    import json

    import transformers

    folder = factory.checkpoint("camembert")
    pipe = pipeline("text-classification", model=folder)
    written = pipe.tokenizer.save_pretrained(tmp_path / "tokenizer")  # the paths written, as transformers' tuple
    assert str(tmp_path / "tokenizer" / "tokenizer.json") in written and isinstance(written, tuple)
    assert (tmp_path / "tokenizer" / "tokenizer_config.json").is_file()
    theirs = transformers.AutoTokenizer.from_pretrained(tmp_path / "tokenizer")
    assert theirs(SHORT)["input_ids"] == pipe.tokenizer(SHORT)["input_ids"]
    assert pipe.model.config.to_dict() == json.loads((folder / "config.json").read_text(encoding="utf-8"))
    assert pipe.model.dtype == torch.float32 and pipe.model.device == torch.device("cpu")
    assert pipeline("text-classification", model=folder, dtype="bfloat16").model.dtype == torch.bfloat16
    inputs = pipe.tokenizer(SHORT, padding=True, return_tensors="pt")
    with pytest.raises(InputError, match="coulisse runs inference only"):
        pipe.model(**inputs, labels=torch.zeros(len(SHORT), dtype=torch.long))
    # ids past the position table, as an untruncated tokenizer call gives them: one line, not torch's IndexError
    limit = pipe.model.config.position_limit
    long = pipe.tokenizer(" ".join(["film"] * (2 * limit)), return_tensors="pt")
    assert long["input_ids"].shape[1] > limit
    with pytest.raises(InputError, match=f"embeds at most {limit} positions. Tokenize with truncation=True"):
        pipe.model(**long)
    padded = pipe.tokenizer([SHORT[0], "x " * (2 * limit)], padding=True, truncation=True, return_tensors="pt")
    assert pipe.model(**padded).logits.shape[0] == 2  # a truncated batch at the limit runs


def test_a_left_padded_batch_past_bert_positions_is_one_line(minilm_dir):
    """BERT numbers positions by column, padding included (as transformers does): a left-padded text of fewer
    tokens than the table can still reach past it. The check counted the mask's tokens and let torch's IndexError
    through (audit 46); it says what happened and how to pad instead."""
    pipe = pipeline("feature-extraction", model=str(minilm_dir))
    limit = pipe.model.config.position_limit
    real = pipe.tokenizer(" ".join(["film"] * (limit - 20)), truncation=True, return_tensors="pt")
    width = limit + 8
    pad = width - real["input_ids"].shape[1]
    ids = torch.cat([torch.zeros(1, pad, dtype=torch.long), real["input_ids"]], 1)
    mask = torch.cat([torch.zeros(1, pad, dtype=torch.long), real["attention_mask"]], 1)
    with pytest.raises(InputError, match=rf"the last at position {width} counting the padding on its left; this "
                                         rf"model embeds at most {limit} positions\..*padding_side = 'right'"):
        pipe.model(input_ids=ids, attention_mask=mask)
    right = pipe.model(input_ids=real["input_ids"], attention_mask=real["attention_mask"])
    assert right.last_hidden_state.shape[1] == real["input_ids"].shape[1]  # the same text, right-padded, runs


def test_output_attentions_and_hidden_states_equal_transformers_eager():
    """`output_attentions=True` / `output_hidden_states=True` on a padded batch: every layer's probabilities and
    hidden states equal transformers' (its eager attention, the one that returns them) where query and key are real
    tokens; coulisse puts zeros where transformers computes rows for padding."""
    import transformers

    from coulisse.defaults import BUNDLED_DIR

    pipe = pipeline("text-classification", model=BUNDLED_DIR)
    reference = transformers.AutoModelForSequenceClassification.from_pretrained(
        BUNDLED_DIR, attn_implementation="eager").eval()
    inputs = pipe.tokenizer(SHORT, padding=True, return_tensors="pt")
    ours = pipe.model(**inputs, output_attentions=True, output_hidden_states=True)
    with torch.no_grad():
        theirs = reference(**inputs, output_attentions=True, output_hidden_states=True)
    real = inputs["attention_mask"].bool()
    heads = reference.config.num_attention_heads
    pairs = (real[:, None, :, None] & real[:, None, None, :]).expand(-1, heads, -1, -1)
    assert len(ours.attentions) == len(theirs.attentions) == reference.config.num_hidden_layers
    assert len(ours.hidden_states) == len(theirs.hidden_states) == reference.config.num_hidden_layers + 1
    for a, b in zip(ours.attentions, theirs.attentions, strict=True):
        assert a.shape == b.shape and (a - b)[pairs].abs().max() <= 1e-5 and not a[~pairs].any()
    for a, b in zip(ours.hidden_states, theirs.hidden_states, strict=True):
        assert a.shape == b.shape and (a - b)[real].abs().max() <= 1e-4 and not a[~real].any()
    assert ours.keys() == ["logits", "hidden_states", "attentions", "last_hidden_state"]
    assert torch.equal(ours[2][0], ours.attentions[0]) and ours.to_tuple()[0] is ours.logits

"""transformers' Auto classes (`coulisse.auto`): the course's cells run with their import line changed and give
transformers' ids and, within 1e-4, its hidden states and logits (both compute in fp32; coulisse packs what
transformers pads, which moves values by ~1e-7). The TensorFlow checkpoint, which transformers 5 cannot read,
gives TensorFlow's own logits (expected.json, written by tests/fixtures/tf_camembert/make_fixture.py).

Also: every head's Auto class against transformers' on tiny random checkpoints, the keywords refused before
any file is read, and the Hub path through a local Hugging Face cache.
"""

from __future__ import annotations

import copy
import json
import shutil

import numpy as np
import pytest
import torch
from factory import FAST_TOKENIZER_ARCHS, assert_close, assert_distinct_rows

import coulisse
from coulisse.errors import HubUnreachableError, InputError, ModelLoadError

TRANSFORMERS = "from transformers import "
COULISSE = "from coulisse import "

# The notebook's cells (../shared/seed), in its order, with `checkpoint` and `raw_inputs` as arguments.
COURSE = '''
from transformers import AutoTokenizer, AutoModel, AutoModelForSequenceClassification
import torch

def run(checkpoint, raw_inputs):
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    inputs = tokenizer(raw_inputs, padding=True, truncation=True, return_tensors="pt")
    model = AutoModel.from_pretrained(checkpoint)
    outputs = model(**inputs)
    mask = inputs["attention_mask"]
    out = {"input_ids": inputs["input_ids"], "attention_mask": mask,
           "hidden state shape": list(outputs.last_hidden_state.shape),
           "hidden states": outputs.last_hidden_state * mask[..., None]}
    model = AutoModelForSequenceClassification.from_pretrained(checkpoint)
    outputs = model(**inputs)
    out["logits shape"] = list(outputs.logits.shape)
    out["logits"] = outputs.logits
    out["predictions"] = torch.nn.functional.softmax(outputs.logits, dim=-1)
    out["id2label"] = model.config.id2label
    out["decoded"] = tokenizer.decode(inputs["input_ids"][0], skip_special_tokens=True)
    return out
'''

RAW_INPUTS = ["J'ai attendu un cours d'HuggingFace toute ma vie.", "Je déteste tellement ça !",
              "« Amélie » 😍, à\tvoir\nabsolument"]


def run_course(import_line: str, *args) -> dict:
    namespace: dict = {}
    exec(compile(COURSE.replace(TRANSFORMERS, import_line), "<the course's cells>", "exec"), namespace)
    return namespace["run"](*args)


@pytest.mark.parametrize("arch", FAST_TOKENIZER_ARCHS)
def test_the_courses_cells_give_transformers_results(factory, arch):
    checkpoint = str(factory.checkpoint(arch))
    theirs = run_course(TRANSFORMERS, checkpoint, RAW_INPUTS)
    ours = run_course(COULISSE, checkpoint, RAW_INPUTS)
    assert list(ours) == list(theirs)
    for key, value in theirs.items():
        if isinstance(value, torch.Tensor):
            assert ours[key].shape == value.shape and ours[key].dtype == value.dtype, key
            assert_close(f"{arch} {key}", ours[key], value.detach())
        else:
            assert ours[key] == value, key
    assert_distinct_rows(theirs["logits"])  # a model that told the texts apart: equal logits prove something


def test_the_courses_tensorflow_checkpoint_gives_tensorflows_logits(tf_camembert_dir):
    """`from_tf=True`, as the notebook asks: the tf_model.h5 read without TensorFlow, TensorFlow's logits."""
    expected = json.loads((tf_camembert_dir / "expected.json").read_text(encoding="utf-8"))
    texts = expected["texts"]
    tokenizer = coulisse.AutoTokenizer.from_pretrained(tf_camembert_dir)
    inputs = tokenizer(texts, padding=True, truncation=True, return_tensors="pt")
    assert [row[row != tokenizer.pad_token_id].tolist() for row in inputs["input_ids"]] == expected["input_ids"]
    model = coulisse.AutoModelForSequenceClassification.from_pretrained(tf_camembert_dir, from_tf=True)
    assert_close("AutoModelForSequenceClassification vs TensorFlow", model(**inputs).logits,
                 np.float32(expected["logits"]))
    assert model.config.id2label == {0: "NEGATIVE", 1: "POSITIVE"}
    # The encoder alone, from the same fine-tuned file (its head left unread): what the classifier's head reads.
    base = coulisse.AutoModel.from_pretrained(tf_camembert_dir, from_tf=True)
    hidden = base(**inputs).last_hidden_state
    assert hidden.shape == (len(texts), inputs["input_ids"].shape[1], model.config.hidden_size)
    with torch.no_grad():
        logits = model.head(hidden[:, 0])
    assert_close("the head on AutoModel's first token vs TensorFlow", logits, np.float32(expected["logits"]))


# -- every head -----------------------------------------------------------------------------------------


HEAD_CLASSES = {"token-classification": "AutoModelForTokenClassification", "masked-lm": "AutoModelForMaskedLM",
                "base": "AutoModel"}


@pytest.mark.parametrize("arch", ["bert", "camembert", "distilbert", "modernbert"])
@pytest.mark.parametrize("head", sorted(HEAD_CLASSES))
def test_each_heads_auto_class_gives_transformers_logits(task_factory, arch, head):
    import transformers

    folder = task_factory.checkpoint(arch, head)
    name = HEAD_CLASSES[head]
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    inputs = tokenizer(RAW_INPUTS, padding=True, truncation=True, return_tensors="pt")
    ours_tok = coulisse.AutoTokenizer.from_pretrained(folder)
    assert torch.equal(ours_tok(RAW_INPUTS, padding=True, truncation=True, return_tensors="pt")["input_ids"],
                       inputs["input_ids"])
    if arch == "distilbert":
        inputs.pop("token_type_ids", None)
    with torch.no_grad():
        theirs = getattr(transformers, name).from_pretrained(folder).eval()(**inputs)
    ours = getattr(coulisse, name).from_pretrained(folder)(**inputs)
    key = "last_hidden_state" if head == "base" else "logits"
    mask = inputs["attention_mask"][..., None]
    assert ours[key].shape == theirs[key].shape
    assert_close(f"{arch} {name}", ours[key] * mask, theirs[key] * mask)


def test_multiple_choice_auto_class(task_factory):
    import transformers

    folder = task_factory.checkpoint("bert", "multiple-choice")
    tokenizer = coulisse.AutoTokenizer.from_pretrained(folder)
    prompt = "Le film était"
    choices = ["magnifique.", "ennuyeux à mourir.", "long."]
    pairs = tokenizer([prompt] * len(choices), choices, padding=True, return_tensors="pt")
    inputs = {k: v.unsqueeze(0) for k, v in pairs.items()}  # (1 question, 3 choices, length)
    with torch.no_grad():
        theirs = transformers.AutoModelForMultipleChoice.from_pretrained(folder).eval()(**inputs).logits
    ours = coulisse.AutoModelForMultipleChoice.from_pretrained(folder)(**inputs).logits
    assert ours.shape == theirs.shape == (1, 3)
    assert_close("AutoModelForMultipleChoice", ours, theirs)


def test_question_answering_outputs_read_as_transformers(factory, tmp_path):
    """transformers' QA output: start_logits and end_logits, first in the tuple; coulisse's logits stay."""
    import transformers

    config = copy.deepcopy(factory.reference("bert").model.config)
    config.num_labels = 2
    torch.manual_seed(11)
    transformers.AutoModelForQuestionAnswering.from_config(config).eval().save_pretrained(tmp_path)
    for f in factory.tokenizer_files("bert").iterdir():
        if f.name != "config.json":
            shutil.copy(f, tmp_path / f.name)
    tokenizer = coulisse.AutoTokenizer.from_pretrained(tmp_path)
    inputs = tokenizer(["Qui a réalisé Amélie ?", "Où ?"], ["Jean-Pierre Jeunet a réalisé Amélie.", "À Paris."],
                       padding=True, return_tensors="pt")
    with torch.no_grad():
        theirs = transformers.AutoModelForQuestionAnswering.from_pretrained(tmp_path).eval()(**inputs)
    ours = coulisse.AutoModelForQuestionAnswering.from_pretrained(tmp_path)(**inputs)
    assert list(ours.keys()) == list(theirs.keys()) == ["start_logits", "end_logits"]
    mask = inputs["attention_mask"].bool()
    for name in ("start_logits", "end_logits"):
        assert ours[name].shape == theirs[name].shape
        assert_close(name, ours[name][mask], theirs[name][mask])
    assert torch.equal(ours.logits.unbind(-1)[0], ours.start_logits)
    model = coulisse.AutoModelForQuestionAnswering.from_pretrained(tmp_path)
    assert torch.equal(model(**inputs, return_dict=False)[0], ours.start_logits)
    # the course's post-processing masks them in place: tensors of their own, outside inference mode (audit 45)
    kept = ours.logits.clone()
    ours.start_logits[~mask] = -10000
    ours.end_logits[~mask] = -10000
    assert torch.equal(ours.logits, kept)


# -- what from_pretrained takes ---------------------------------------------------------------------------


def test_a_base_checkpoint_has_no_head_to_load(task_factory):
    with pytest.raises(ModelLoadError, match="has no sequence-classification head") as refused:
        coulisse.AutoModelForSequenceClassification.from_pretrained(task_factory.checkpoint("bert", "base"))
    # the way out in the Auto classes' words, not the pipeline's task (audit 46)
    assert "use AutoModel.from_pretrained(...), or a checkpoint fine-tuned" in str(refused.value)


REFUSED = [
    ("AutoModel", {"cache_dir": "/tmp/hf"}, "cache_dir= is not taken; coulisse reads huggingface_hub's cache: set "
                                            "HF_HUB_CACHE"),
    ("AutoModel", {"torch_dype": "float32"}, "'torch_dype' (did you mean 'torch_dtype'?)"),
    ("AutoModel", {"dtype": "float64"}, "dtype='float64'"),
    ("AutoModel", {"quantize": "int4"}, "quantize='int4'"),
    ("AutoModel", {"fast": True, "dtype": "bfloat16"}, "fast=True (--fast) chooses the precision itself"),
    ("AutoModel", {"device_map": {"a": "cpu", "b": "cuda:0"}}, "splits the model"),
    ("AutoModel", {"token": 3}, "token=3"),
    ("AutoModelForSequenceClassification", {"num_labels": 5}, "num_labels= is not taken"),
    ("AutoModelForSequenceClassification", {"output_hidden_states": True},
     "model(**inputs, output_hidden_states=True)"),
    ("AutoModelForMaskedLM", {"subfolder": "mlm"}, "subfolder= is not taken"),
    ("AutoTokenizer", {"padding_side": "middle"}, "padding_side='middle'; use one of right, left"),
    ("AutoTokenizer", {"model_max_length": 0}, "model_max_length=0"),
    ("AutoTokenizer", {"do_lower_case": True}, "do_lower_case= is not taken"),
    ("AutoTokenizer", {"padding": True}, "unknown option 'padding' (did you mean 'padding_side'?)"),
    ("AutoConfig", {"cache_dir": "/tmp/hf"}, "cache_dir= is not taken"),
]


@pytest.mark.parametrize(("name", "kwargs", "message"), REFUSED)
def test_refused_keywords_fail_in_one_line_before_any_file_is_read(tmp_path, name, kwargs, message):
    missing = tmp_path / "no-such-model"  # a keyword refused after looking for the folder would say it is missing
    with pytest.raises(InputError) as raised:
        getattr(coulisse, name).from_pretrained(missing, **kwargs)
    assert message in str(raised.value) and "\n" not in str(raised.value)


def test_positional_arguments_after_the_model_are_refused(factory):
    with pytest.raises(InputError, match="one positional argument"):
        coulisse.AutoModel.from_pretrained(factory.checkpoint("bert"), "config")
    with pytest.raises(TypeError, match=r"AutoTokenizer\.from_pretrained"):
        coulisse.AutoTokenizer()


def test_tokenizer_keywords_override_the_folders(factory):
    folder = factory.checkpoint("camembert")
    plain = coulisse.AutoTokenizer.from_pretrained(folder)
    tokenizer = coulisse.AutoTokenizer.from_pretrained(folder, model_max_length=8, padding_side="left",
                                                       truncation_side="left", use_fast=True)
    assert (plain.padding_side, plain.truncation_side) == ("right", "right")
    assert (tokenizer.padding_side, tokenizer.truncation_side, tokenizer.model_max_length) == ("left", "left", 8)
    long = "Un film magnifique, des acteurs excellents et une musique inoubliable."
    ids = tokenizer(long, truncation=True)["input_ids"]
    assert len(ids) == 8 and ids[-4:] == plain(long)["input_ids"][-4:]  # the end kept: truncation_side="left"
    padded = tokenizer(["Bof.", long], padding=True, truncation=True)["attention_mask"][0]
    assert padded[0] == 0 and padded[-1] == 1
    # never past what the position table embeds (the forward would refuse the longer ids)
    table = factory.reference("camembert").model.config.max_position_embeddings - 2  # RoBERTa's offset of 2
    assert coulisse.AutoTokenizer.from_pretrained(folder, model_max_length=10**6).model_max_length == table


def test_model_max_length_may_exceed_the_folders_own_limit(factory, tmp_path):
    shutil.copytree(factory.checkpoint("bert"), tmp_path, dirs_exist_ok=True)
    (tmp_path / "tokenizer_config.json").write_text('{"model_max_length": 16}', encoding="utf-8")
    assert coulisse.AutoTokenizer.from_pretrained(tmp_path).model_max_length == 16
    assert coulisse.AutoTokenizer.from_pretrained(tmp_path, model_max_length=100).model_max_length == 100


def test_a_tokenizer_saved_alone_loads_without_a_config(factory, tmp_path):
    """transformers' tokenizer.save_pretrained(folder) writes no config.json; AutoTokenizer reads it there too."""
    import transformers

    transformers.AutoTokenizer.from_pretrained(factory.checkpoint("roberta")).save_pretrained(tmp_path)
    assert not (tmp_path / "config.json").exists()
    theirs = transformers.AutoTokenizer.from_pretrained(tmp_path)(RAW_INPUTS)["input_ids"]
    assert coulisse.AutoTokenizer.from_pretrained(tmp_path)(RAW_INPUTS)["input_ids"] == theirs


def test_int8_and_dtype_are_the_pipelines(factory):
    folder = factory.checkpoint("camembert")
    tokenizer = coulisse.AutoTokenizer.from_pretrained(folder)
    inputs = tokenizer(RAW_INPUTS, padding=True, return_tensors="pt")
    exact = coulisse.AutoModelForSequenceClassification.from_pretrained(folder)(**inputs).logits
    int8 = coulisse.AutoModelForSequenceClassification.from_pretrained(folder, quantize="int8")(**inputs).logits
    piped = coulisse.pipeline("text-classification", model=folder, quantize="int8").model(**inputs).logits
    assert torch.equal(int8, piped)
    assert (int8 - exact).abs().max() > 0  # quantized weights round: the keyword was applied
    model = coulisse.AutoModel.from_pretrained(folder, torch_dtype=torch.bfloat16)
    assert model.dtype == torch.bfloat16
    assert coulisse.AutoModel.from_pretrained(folder, dtype="float32", torch_dtype="bfloat16").dtype == torch.float32


# -- the Hub path -------------------------------------------------------------------------------------------


def test_the_courses_checkpoint_by_its_hub_id(offline_hub, tf_camembert_dir):
    expected = json.loads((tf_camembert_dir / "expected.json").read_text(encoding="utf-8"))
    checkpoint = "tblard/tf-allocine"
    tokenizer = coulisse.AutoTokenizer.from_pretrained(checkpoint, local_files_only=True)
    assert tokenizer.name_or_path == checkpoint
    inputs = tokenizer(expected["texts"][:2], padding=True, truncation=True, return_tensors="pt")
    model = coulisse.AutoModelForSequenceClassification.from_pretrained(checkpoint, from_tf=True)
    assert model.name_or_path == checkpoint
    assert_close("tblard/tf-allocine from the cache vs TensorFlow", model(**inputs).logits,
                 np.float32(expected["logits"][:2]))
    assert coulisse.AutoConfig.from_pretrained(checkpoint).id2label == {0: "NEGATIVE", 1: "POSITIVE"}


def test_the_courses_checkpoint_offline_points_at_the_bundled_model(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(HubUnreachableError, match="coulisse/mini-allocine"):
        coulisse.AutoTokenizer.from_pretrained("tblard/tf-allocine")


def test_the_auto_classes_are_in_the_package(tmp_path):
    assert set(coulisse.AUTO_CLASSES) <= set(dir(coulisse)) and set(coulisse.AUTO_CLASSES) <= set(coulisse.__all__)
    model = coulisse.AutoModelForSequenceClassification.from_pretrained("coulisse/mini-allocine")
    tokenizer = coulisse.AutoTokenizer.from_pretrained("coulisse/mini-allocine")
    outputs = model(**tokenizer(RAW_INPUTS[:2], padding=True, return_tensors="pt"))
    pipe = coulisse.pipeline("sentiment-analysis", model="coulisse/mini-allocine")
    want = [max(range(2), key=lambda i: row[i]) for row in outputs.logits.tolist()]
    assert [pipe.model.config.label2id[r["label"]] for r in pipe(RAW_INPUTS[:2])] == want


def test_a_tokenizer_asked_by_hub_id_saves_the_files_it_was_read_from(offline_hub, tf_camembert_dir, tmp_path,
                                                                      monkeypatch):
    """`name_or_path` is the id asked (as in transformers); saving copies the cached folder's files, never a
    folder of the same relative name in the working directory (audit 45)."""
    tokenizer = coulisse.AutoTokenizer.from_pretrained("tblard/tf-allocine")
    assert tokenizer.name_or_path == "tblard/tf-allocine"
    junk = tmp_path / "tblard" / "tf-allocine"  # made after the load, which would have read it as the folder
    junk.mkdir(parents=True)
    (junk / "sentencepiece.bpe.model").write_bytes(b"not a model")
    monkeypatch.chdir(tmp_path)
    written = tokenizer.save_pretrained(tmp_path / "saved")
    assert str(tmp_path / "saved" / "sentencepiece.bpe.model") in written
    assert (tmp_path / "saved" / "sentencepiece.bpe.model").read_bytes() == \
        (tf_camembert_dir / "sentencepiece.bpe.model").read_bytes()
    again = coulisse.AutoTokenizer.from_pretrained(tmp_path / "saved")
    assert again(RAW_INPUTS)["input_ids"] == tokenizer(RAW_INPUTS)["input_ids"]


def test_num_parameters_counts_the_weights_read_as_transformers_does(factory, minilm_dir):
    """The prepared model's linear weights are neither parameters nor buffers; num_parameters counts what was read,
    and the state dict, which would save a model without them, is refused (audit 45)."""
    import transformers

    folder = factory.checkpoint("camembert")
    theirs = transformers.AutoModelForSequenceClassification.from_pretrained(folder)
    ours = coulisse.AutoModelForSequenceClassification.from_pretrained(folder)
    assert ours.num_parameters() == theirs.num_parameters()
    assert ours.num_parameters(exclude_embeddings=True) == theirs.num_parameters(exclude_embeddings=True)
    assert ours.num_parameters(only_trainable=True) == 0  # inference only
    # a base model without the pooler transformers' BERT carries (coulisse computes no pooler_output)
    base, reference = coulisse.AutoModel.from_pretrained(minilm_dir), transformers.AutoModel.from_pretrained(minilm_dir)
    pooler = sum(p.numel() for p in reference.pooler.parameters())
    assert base.num_parameters() == reference.num_parameters() - pooler
    assert sum(p.numel() for p in base.parameters()) < base.num_parameters()  # the prepacked ones are elsewhere
    with pytest.raises(InputError, match="prepacked for this CPU") as refused:
        base.state_dict()
    assert "\n" not in str(refused.value)


def test_what_transformers_has_and_coulisse_does_not_is_said(factory):
    folder = factory.checkpoint("bert")
    with pytest.raises(AttributeError, match="Auto classes"):
        coulisse.BertModel  # noqa: B018
    assert not hasattr(coulisse, "CamembertForSequenceClassification")  # hasattr still answers
    with pytest.raises(InputError, match="from_config builds an untrained model"):
        coulisse.AutoModel.from_config(coulisse.AutoConfig.from_pretrained(folder))
    model = coulisse.AutoModelForSequenceClassification.from_pretrained(folder)
    with pytest.raises(AttributeError, match=r"pipeline\(task, model=folder\)\.save_pretrained\(out\)"):
        model.save_pretrained(folder)
    inputs = coulisse.AutoTokenizer.from_pretrained(folder)(RAW_INPUTS, padding=True, return_tensors="pt")
    outputs = model(**inputs)
    assert outputs.loss is None  # transformers' outputs without labels
    assert repr(outputs) == f"ModelOutput(logits={outputs.logits!r})"  # the fields set, as transformers prints
    import transformers

    theirs = transformers.AutoConfig.from_pretrained(folder)
    config = coulisse.AutoConfig.from_pretrained(folder)
    assert (config.hidden_dropout_prob, config.initializer_range) == (theirs.hidden_dropout_prob,
                                                                      theirs.initializer_range)
    with pytest.raises(AttributeError, match="no such key"):
        config.no_such_setting  # noqa: B018


def test_a_field_of_the_other_kind_of_output_is_an_attribute_error_naming_the_model_that_gives_it(factory):
    """The lesson of "Behind the pipeline": a base model gives hidden states, a head logits. Reading the other one
    was None, and the learner's next line failed on 'NoneType' (audit 46); transformers' outputs lack the
    attribute. Both raise AttributeError; coulisse's says which model to load."""
    import transformers

    folder = factory.checkpoint("bert")
    inputs = coulisse.AutoTokenizer.from_pretrained(folder)(RAW_INPUTS, padding=True, return_tensors="pt")
    theirs = {"base": transformers.AutoModel.from_pretrained(folder)(**inputs),
              "head": transformers.AutoModelForSequenceClassification.from_pretrained(folder)(**inputs)}
    ours = {"base": coulisse.AutoModel.from_pretrained(folder)(**inputs),
            "head": coulisse.AutoModelForSequenceClassification.from_pretrained(folder)(**inputs)}
    for kind, name, said in (("base", "logits", r"base model's.*AutoModelForSequenceClassification"),
                             ("head", "last_hidden_state", r"head's.*output_hidden_states=True"),
                             ("head", "start_logits", "question-answering head's")):
        with pytest.raises(AttributeError):
            getattr(theirs[kind], name)
        with pytest.raises(AttributeError, match=said):
            getattr(ours[kind], name)
        assert not hasattr(ours[kind], name) and name not in ours[kind]
    assert ours["base"].hidden_states is None and ours["head"].attentions is None  # as transformers' when not asked
    assert theirs["base"].hidden_states is None and theirs["head"].attentions is None
    with_hidden = coulisse.AutoModelForSequenceClassification.from_pretrained(folder)(**inputs,
                                                                                     output_hidden_states=True)
    assert with_hidden.last_hidden_state.shape == ours["base"].last_hidden_state.shape
    # dataclasses' own readers see the unset field as None, as before (session review)
    import dataclasses

    assert dataclasses.asdict(ours["base"])["logits"] is None
    doubled = dataclasses.replace(ours["head"], logits=ours["head"].logits * 2)
    assert torch.equal(doubled.logits, ours["head"].logits * 2)


def test_a_text_without_a_token_in_a_batch(factory):
    """A row of attention_mask all zeros: a base model gives that row zeros and the others transformers' (as
    before); a head, which reads each text's first token, has none to read: one line (was torch's IndexError)."""
    import transformers

    folder = factory.checkpoint("bert")
    inputs = coulisse.AutoTokenizer.from_pretrained(folder)(RAW_INPUTS, padding=True, return_tensors="pt")
    mask = inputs["attention_mask"].clone()
    mask[1] = 0
    ours = coulisse.AutoModel.from_pretrained(folder)(input_ids=inputs["input_ids"], attention_mask=mask)
    with torch.no_grad():
        theirs = transformers.AutoModel.from_pretrained(folder)(input_ids=inputs["input_ids"], attention_mask=mask)
    kept = mask[0].bool()
    assert_close("row 0 beside an empty row", ours.last_hidden_state[0][kept], theirs.last_hidden_state[0][kept])
    assert not ours.last_hidden_state[1].any()
    head = coulisse.AutoModelForSequenceClassification.from_pretrained(folder)
    with pytest.raises(InputError, match="a row of attention_mask is all zeros"):
        head(input_ids=inputs["input_ids"], attention_mask=mask)


def test_the_courses_first_mistakes_with_model_are_one_line_saying_what_to_pass(factory):
    """Each was torch's AttributeError ('list' object has no attribute 'dim') or IndexError from inside the
    forward (audit 46)."""
    folder = factory.checkpoint("bert")
    tokenizer = coulisse.AutoTokenizer.from_pretrained(folder)
    model = coulisse.AutoModelForSequenceClassification.from_pretrained(folder)
    inputs = tokenizer(RAW_INPUTS, padding=True, return_tensors="pt")
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    vocabulary = model.config.vocab_size
    mistakes = [
        (lambda: model(inputs), r"whole output as one argument; unpack it: model\(\*\*inputs\)"),
        (lambda: model(dict(inputs)), "unpack it"),
        (lambda: model(**tokenizer(RAW_INPUTS, padding=True)), "input_ids is a list; the model takes torch tensors"),
        (lambda: model(**tokenizer(RAW_INPUTS, padding=True, return_tensors="np")),
         r"input_ids is a ndarray.*torch.from_numpy"),
        (lambda: model(ids, attention_mask=mask.tolist()), "attention_mask is a list"),
        (lambda: model(ids, attention_mask=mask[:, :3]),
         rf"attention_mask of shape \({len(RAW_INPUTS)}, 3\) for input_ids of shape"),
        (lambda: model(ids.clamp(max=0) + vocabulary), f"input id {vocabulary} is outside this model's vocabulary"),
        (lambda: model(ids - 1000), "is outside this model's vocabulary"),
        (lambda: model(ids, attention_mask=torch.zeros_like(mask)), "a row of attention_mask is all zeros"),
    ]
    for mistake, said in mistakes:
        with pytest.raises(InputError, match=said):
            mistake()
    assert model(**inputs).logits.shape == (len(RAW_INPUTS), model.config.num_labels)  # the right call still runs


def test_a_tokenizer_of_a_family_coulisse_does_not_run_still_loads(factory, tmp_path):
    """transformers' AutoTokenizer reads a T5 folder's tokenizer; so does coulisse's, the files alone."""
    import transformers

    transformers.AutoTokenizer.from_pretrained(factory.checkpoint("camembert")).save_pretrained(tmp_path)
    (tmp_path / "config.json").write_text('{"model_type": "t5", "vocab_size": 32005}', encoding="utf-8")
    theirs = transformers.AutoTokenizer.from_pretrained(tmp_path)(RAW_INPUTS)["input_ids"]
    assert coulisse.AutoTokenizer.from_pretrained(tmp_path)(RAW_INPUTS)["input_ids"] == theirs
    with pytest.raises(coulisse.errors.UnsupportedModelError, match="unsupported model_type 't5'"):
        coulisse.AutoModel.from_pretrained(tmp_path)  # its model, though, coulisse does not run


def test_a_model_max_length_past_what_the_model_reads_is_lowered_aloud(factory, caplog):
    folder = factory.checkpoint("bert")
    with caplog.at_level("WARNING", logger="coulisse.auto"):
        tokenizer = coulisse.AutoTokenizer.from_pretrained(folder, model_max_length=10**6)
    table = factory.reference("bert").model.config.max_position_embeddings
    assert tokenizer.model_max_length == table
    assert f"model_max_length=1000000 is past what {folder} reads ({table} tokens" in caplog.text

"""`coulisse.export` (`pipe.save_pretrained`, `coulisse convert`) against transformers 5, which must load what
coulisse writes as its own checkpoint: no missing, unexpected or mismatched key; the class config.json names;
ids identical to coulisse's; logits within 1e-4 of coulisse's (fp32 sums in another order: the oracle suites'
tolerance); every tensor equal to the transformers model that wrote the source checkpoint.

Sources: tiny random models of every family and every head coulisse has (the heads are read from the family
table), written by transformers in every weight format (tests/factory.py), and the TensorFlow fixture
(tests/fixtures/tf_camembert: tblard/tf-allocine's layout, the real CamemBERT SentencePiece model); the real
all-MiniLM-L6-v2 folder. LayerNorms and biases are moved off their initial 1 and 0, so that a name mix-up
between two of them changes the output.
"""

from __future__ import annotations

import copy
import json
import shutil
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pytest
import torch
from factory import TEXTS, assert_close, assert_distinct_rows, assert_same_encoding, train_deberta_spm, write_weights
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from coulisse import pipeline
from coulisse.checkpoint import load_checkpoint
from coulisse.errors import InputError, ModelLoadError
from coulisse.export import EXPORTS, convert, head_of, parse_head
from coulisse.families import FAMILIES
from coulisse.models.model import resolve

transformers = pytest.importorskip("transformers")

AUTO = {"sequence-classification": "AutoModelForSequenceClassification",
        "token-classification": "AutoModelForTokenClassification",
        "question-answering": "AutoModelForQuestionAnswering", "masked-lm": "AutoModelForMaskedLM",
        "multiple-choice": "AutoModelForMultipleChoice", None: "AutoModel"}
NER_LABELS = {0: "O", 1: "B-PER", 2: "I-PER", 3: "B-LOC", 4: "I-LOC"}
# DeBERTa-v3's layout (tests/models/test_deberta_v2.py's "v3"): relative attention, log buckets, no absolute
# positions; the factory's tiny sizes.
DEBERTA = dict(relative_attention=True, position_buckets=16, max_relative_positions=-1, pos_att_type="p2c|c2p",
               share_att_key=True, norm_rel_ebd="layer_norm", position_biased_input=False, hidden_size=32,
               num_hidden_layers=2, num_attention_heads=4, intermediate_size=37, initializer_range=0.2,
               max_position_embeddings=512)
PROMPTS = ["À Paris, la pizza se mange", "Le film commence"]
CHOICES = [["avec une fourchette et un couteau.", "à la main, pliée en deux.", "froide."],
           ["à vingt heures.", "quand la salle est pleine, après une demi-heure de publicités.", "jamais."]]


def heads(model_type: str) -> list[str | None]:
    """Every head the family table gives `model_type`, and the base model (None)."""
    table = FAMILIES[model_type].heads
    return [*(table if isinstance(table, Mapping) else resolve(table)), None]


CASES = [(arch, head) for arch in FAMILIES for head in heads(arch)]


class Sources:
    """Tiny transformers models (the oracles) with every head, and the checkpoint folders they wrote."""

    def __init__(self, factory, root):
        self.factory, self.root = factory, root
        self.models: dict = {}
        self.dirs: dict = {}
        self.deberta_tokenizer = root / "deberta-tokenizer"
        train_deberta_spm(self.deberta_tokenizer)
        (self.deberta_tokenizer / "tokenizer_config.json").write_text(
            json.dumps({"do_lower_case": False, "vocab_type": "spm"}), encoding="utf-8")
        (self.deberta_tokenizer / "config.json").write_text(json.dumps({"model_type": "deberta-v2"}),
                                                            encoding="utf-8")

    def config(self, arch: str, head: str | None, **changes):
        if arch == "deberta-v2":
            tok = transformers.AutoTokenizer.from_pretrained(str(self.deberta_tokenizer))
            labels = self.factory.reference("bert").model.config.id2label
            config = transformers.DebertaV2Config(vocab_size=len(tok), pad_token_id=tok.pad_token_id,
                                                  id2label=dict(labels), **DEBERTA)
        else:
            config = copy.deepcopy(self.factory.reference(arch).model.config)
        if head == "token-classification":
            config.id2label = dict(NER_LABELS)
        elif head == "question-answering":  # start and end logits
            config.id2label = {0: "LABEL_0", 1: "LABEL_1"}
        config.label2id = {v: k for k, v in config.id2label.items()}
        for key, value in changes.items():
            setattr(config, key, value)
        return config

    def model(self, arch: str, head: str | None, **changes):
        key = (arch, head, tuple(sorted(changes.items())))
        if key not in self.models:
            torch.manual_seed(len(self.models))
            model = getattr(transformers, AUTO[head]).from_config(self.config(arch, head, **changes)).eval()
            with torch.no_grad():
                for name, p in model.named_parameters():
                    if "norm" in name.lower() or name.endswith("bias"):
                        p.add_(torch.randn_like(p) * 0.2)
            self.models[key] = model
        return self.models[key]

    def checkpoint(self, arch: str, head: str | None, weights: str = "safetensors", **changes):
        key = (arch, head, weights, tuple(sorted(changes.items())))
        if key not in self.dirs:
            d = self.root / f"{arch}-{head or 'base'}-{weights}-{len(self.dirs)}"
            d.mkdir()
            write_weights(self.model(arch, head, **changes), d, weights)
            tokenizer = self.deberta_tokenizer if arch == "deberta-v2" else self.factory.tokenizer_files(arch)
            for f in tokenizer.iterdir():
                if f.name != "config.json":
                    shutil.copy(f, d / f.name)
            self.dirs[key] = d
        return self.dirs[key]


@pytest.fixture(scope="module")
def sources(factory, tmp_path_factory):
    return Sources(factory, tmp_path_factory.mktemp("export-sources"))


def load_output(out, head):
    """transformers on the converted folder: the model (and what loading reported) and the tokenizer."""
    model, info = getattr(transformers, AUTO[head]).from_pretrained(str(out), output_loading_info=True)
    assert info == {"missing_keys": set(), "unexpected_keys": set(), "mismatched_keys": set(),
                    "error_msgs": []}, info
    return model.eval(), transformers.AutoTokenizer.from_pretrained(str(out))


def outputs(model, head, inputs) -> torch.Tensor:
    """What a head computes, as one tensor: logits, start/end logits stacked, or hidden states."""
    with torch.no_grad():
        out = model(**inputs)
    if head is None:
        return out.last_hidden_state
    if head == "question-answering" and hasattr(out, "start_logits"):
        return torch.stack([out.start_logits, out.end_logits], -1)
    return out.logits


def check_round_trip(source, out, head, oracle=None, texts=TEXTS) -> None:
    """Convert `source`, load the result with transformers, compare ids and outputs with coulisse's (and every
    tensor with `oracle`, the transformers model that wrote `source`)."""
    convert(source, out, head=head or "base")
    model, tok = load_output(out, head)
    config = json.loads((out / "config.json").read_text(encoding="utf-8"))
    assert config["architectures"] == [type(model).__name__]
    if oracle is not None:
        assert type(model).__name__ == type(oracle).__name__  # the class transformers itself picks
        theirs, ours = oracle.state_dict(), model.state_dict()
        assert sorted(ours) == sorted(theirs)
        for key, value in theirs.items():
            assert torch.equal(ours[key], value), key
    ours = load_checkpoint(source, head)
    if head == "multiple-choice":
        firsts = [p for p, choices in zip(PROMPTS, CHOICES, strict=True) for _ in choices]
        seconds = [c for choices in CHOICES for c in choices]
        encoded = [t(firsts, seconds, padding=True, return_tensors="pt") for t in (ours.tokenizer, tok)]
        assert_same_encoding(*encoded)
        a, b = ({k: v.view(len(PROMPTS), len(CHOICES[0]), -1) for k, v in e.items()} for e in encoded)
        assert_close("export: multiple-choice logits", outputs(ours.model, head, a), outputs(model, head, b))
        return
    if head == "masked-lm":  # (texts, 512, vocab) logits would be 0.4 GB: the 512-token text is for other heads
        texts = [t for t in texts if len(t) < 1000]
    a = ours.tokenizer(texts, padding=True, truncation=True, return_tensors="pt")
    b = tok(texts, padding=True, truncation=True, return_tensors="pt")  # truncated at the limit written
    assert_same_encoding(a, b)
    want = outputs(model, head, b)
    got = outputs(ours.model, head, a)
    if ours.model.per_token:  # padding rows are zeros on our side, whatever on transformers'
        real = b["attention_mask"].bool()
        got, want = got[real], want[real]
    assert_close(f"export: {head or 'base'} outputs", got, want)


# -- every family, every head ------------------------------------------------------------------------------


def test_every_family_has_an_export_row():
    assert set(EXPORTS) == set(FAMILIES)


@pytest.mark.parametrize(("arch", "head"), CASES, ids=[f"{a}-{h or 'base'}" for a, h in CASES])
def test_round_trip_every_family_and_head(sources, tmp_path, arch, head):
    check_round_trip(sources.checkpoint(arch, head), tmp_path / "out", head, sources.model(arch, head))


def test_deberta_masked_lm_without_legacy_head(sources, tmp_path):
    """`legacy: false`: the decoder is the word-embedding matrix with the head's own bias."""
    source = sources.checkpoint("deberta-v2", "masked-lm", legacy=False)
    check_round_trip(source, tmp_path / "out", "masked-lm", sources.model("deberta-v2", "masked-lm", legacy=False))


@pytest.mark.parametrize("arch", ["bert", "roberta", "distilbert", "modernbert"])
def test_untied_decoder_is_written_and_untied(sources, tmp_path, arch):
    """A masked-LM decoder that differs from the word embeddings is saved apart, with tie_word_embeddings
    false (transformers would otherwise overwrite it with the embeddings); a tied one is left out."""
    model = sources.model(arch, "masked-lm", tie_word_embeddings=False)
    decoder = model.get_output_embeddings()
    assert not torch.equal(decoder.weight, model.get_input_embeddings().weight)
    if arch not in ("distilbert", "modernbert"):  # ModernBERT's decoder holds its only bias
        # transformers 4 always shared the decoder's bias with the head's `bias` (transformers 5 unties both
        # with the flag, and reads the decoder's); checkpoints hold them equal.
        own_bias = model.cls.predictions.bias if arch == "bert" else model.lm_head.bias
        with torch.no_grad():
            decoder.bias.copy_(own_bias)
    check_round_trip(sources.checkpoint(arch, "masked-lm", tie_word_embeddings=False), tmp_path / "untied",
                     "masked-lm", model)
    assert json.loads((tmp_path / "untied" / "config.json").read_text())["tie_word_embeddings"] is False
    tied = sources.checkpoint(arch, "masked-lm")
    check_round_trip(tied, tmp_path / "tied", "masked-lm", sources.model(arch, "masked-lm"))
    assert json.loads((tmp_path / "tied" / "config.json").read_text())["tie_word_embeddings"] is True
    for theirs, ours in [(tied, tmp_path / "tied"), (sources.checkpoint(arch, "masked-lm", tie_word_embeddings=False),
                                                      tmp_path / "untied")]:
        # the keys transformers' own save_pretrained wrote: tied tensors once
        with safe_open(str(theirs / "model.safetensors"), "pt") as a, \
                safe_open(str(ours / "model.safetensors"), "pt") as b:
            assert sorted(a.keys()) == sorted(b.keys())


DECODERS = {"bert": "cls.predictions.decoder.weight", "roberta": "lm_head.decoder.weight",
            "distilbert": "vocab_projector.weight", "modernbert": "decoder.weight"}


@pytest.mark.parametrize("arch", list(DECODERS))
def test_an_untied_decoder_missing_from_the_file_is_refused(sources, tmp_path, arch):
    """tie_word_embeddings false and no decoder tensor: transformers draws a random decoder (reported missing);
    coulisse used the word embeddings without a word, logits 6-10 away (audit 43). Refused, saying both fixes."""
    folder = tmp_path / "untied"
    shutil.copytree(sources.checkpoint(arch, "masked-lm", tie_word_embeddings=False), folder)
    tensors = load_file(folder / "model.safetensors")
    assert tensors.pop(DECODERS[arch]) is not None
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(ModelLoadError, match=f"tie_word_embeddings: false .* holds no {DECODERS[arch]} tensor"):
        pipeline("fill-mask", model=folder)
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    (folder / "config.json").write_text(json.dumps({**config, "tie_word_embeddings": True}), encoding="utf-8")
    assert pipeline("fill-mask", model=folder).model is not None  # tied: the embeddings are its decoder


# -- every weight format -----------------------------------------------------------------------------------


@pytest.mark.parametrize("weights", ["safetensors", "sharded-safetensors", "bin", "sharded-bin"])
@pytest.mark.parametrize(("arch", "head"), [("camembert", "sequence-classification"), ("bert", "masked-lm"),
                                            ("xlm-roberta", None)])
def test_round_trip_every_weight_format(sources, tmp_path, weights, arch, head):
    """`.bin` files hold tied tensors twice (same storage); sharded ones split a layer's tensors apart."""
    check_round_trip(sources.checkpoint(arch, head, weights), tmp_path / "out", head, sources.model(arch, head))


def test_tensorflow_h5_fixture(tf_camembert_dir, tmp_path):
    """tblard/tf-allocine's layout: weights TensorFlow saved, `{}` tokenizer_config.json, the real CamemBERT
    SentencePiece model. The output's logits equal TensorFlow's own (expected.json) and coulisse's; the long
    review is cut at 512 tokens by transformers too (model_max_length written)."""
    expected = json.loads((tf_camembert_dir / "expected.json").read_text(encoding="utf-8"))
    out = tmp_path / "tf-allocine-pt"
    check_round_trip(tf_camembert_dir, out, "sequence-classification", texts=expected["texts"])
    assert head_of(load_checkpoint(tf_camembert_dir, None).config) == "sequence-classification"
    model, tok = load_output(out, "sequence-classification")
    inputs = tok(expected["texts"], padding=True, truncation=True, return_tensors="pt")
    assert [row[row != tok.pad_token_id].tolist() for row in inputs["input_ids"]] == expected["input_ids"]
    with torch.no_grad():
        logits = model(**inputs).logits
    assert_close("export: TF fixture logits vs TensorFlow", logits, np.float32(expected["logits"]))
    assert_distinct_rows(logits)
    assert model.config.id2label == {0: "NEGATIVE", 1: "POSITIVE"}
    names = {p.name for p in out.iterdir()}
    assert names == {"config.json", "model.safetensors", "tokenizer.json", "sentencepiece.bpe.model",
                     "tokenizer_config.json", "special_tokens_map.json"}
    assert (out / "sentencepiece.bpe.model").read_bytes() == (tf_camembert_dir / "sentencepiece.bpe.model").read_bytes()
    # The slow tokenizer transformers rebuilds from the SentencePiece file alone gives the same ids.
    (out / "tokenizer.json").unlink()
    slow = transformers.AutoTokenizer.from_pretrained(str(out))
    assert slow(expected["texts"], truncation=True)["input_ids"] == expected["input_ids"]


def test_converting_a_converted_folder_writes_the_same_tokenizer_files(tf_camembert_dir, tmp_path):
    """The original CamemBERT files list "<s>NOTUSED" pieces as additional_special_tokens beside the SentencePiece
    model's control pieces: the output holds one list, the one transformers 5 reads and saves, so a second convert
    changes nothing."""
    convert(tf_camembert_dir, tmp_path / "once")
    convert(tmp_path / "once", tmp_path / "twice")
    for name in ("tokenizer_config.json", "special_tokens_map.json", "tokenizer.json"):
        assert (tmp_path / "once" / name).read_bytes() == (tmp_path / "twice" / name).read_bytes(), name
    theirs = transformers.AutoTokenizer.from_pretrained(str(tf_camembert_dir))
    theirs.save_pretrained(str(tmp_path / "transformers"))
    saved = json.loads((tmp_path / "transformers" / "tokenizer_config.json").read_text(encoding="utf-8"))
    ours = json.loads((tmp_path / "once" / "tokenizer_config.json").read_text(encoding="utf-8"))
    for key in ("extra_special_tokens", "additional_special_tokens"):
        assert ours.get(key) == saved.get(key), key
    again = transformers.AutoTokenizer.from_pretrained(str(tmp_path / "twice"))
    assert again.all_special_tokens == theirs.all_special_tokens
    assert again(TEXTS)["input_ids"] == theirs(TEXTS)["input_ids"]


@pytest.mark.slow
def test_real_minilm(minilm_dir, tmp_path):
    """all-MiniLM-L6-v2 (a sentence-transformers folder, BertModel with its pooler, tokenizer.json + vocab.txt):
    every tensor and the hidden states equal transformers' own load of the original."""
    oracle = transformers.AutoModel.from_pretrained(str(minilm_dir)).eval()
    check_round_trip(minilm_dir, tmp_path / "out", None, oracle)
    original = transformers.AutoTokenizer.from_pretrained(str(minilm_dir))
    converted = transformers.AutoTokenizer.from_pretrained(str(tmp_path / "out"))
    assert_same_encoding(converted(TEXTS, padding=True, truncation=True), original(TEXTS, padding=True,
                                                                                    truncation=True))
    assert (tmp_path / "out" / "vocab.txt").read_bytes() == (minilm_dir / "vocab.txt").read_bytes()


# -- dtype, pipelines, refusals ------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_dtype_is_the_fp32_weights_rounded(sources, tmp_path, dtype):
    source = sources.checkpoint("camembert", "sequence-classification")
    convert(source, tmp_path / "fp32")
    convert(source, tmp_path / dtype, dtype=dtype)
    want = getattr(torch, dtype)
    with safe_open(str(tmp_path / "fp32" / "model.safetensors"), "pt") as full, \
            safe_open(str(tmp_path / dtype / "model.safetensors"), "pt") as low:
        assert sorted(full.keys()) == sorted(low.keys())
        for key in full.keys():  # noqa: SIM118 - safe_open is no dict
            tensor = low.get_tensor(key)
            assert tensor.dtype == want, key
            assert torch.equal(tensor, full.get_tensor(key).to(want)), key
    config = json.loads((tmp_path / dtype / "config.json").read_text())
    assert config["dtype"] == config["torch_dtype"] == dtype
    model = transformers.AutoModelForSequenceClassification.from_pretrained(str(tmp_path / dtype))
    assert model.dtype == want


def test_pipeline_save_pretrained_equals_convert(sources, tmp_path):
    """`pipe.save_pretrained` writes what `coulisse convert` writes, also from an int8 pipeline (its fp32
    weights: transformers has no format for coulisse's int8 layers)."""
    source = sources.checkpoint("roberta", "token-classification")
    convert(source, tmp_path / "cli")
    for name, options in [("fp32", {}), ("int8", {"quantize": "int8"})]:
        pipe = pipeline("token-classification", model=source, **options)
        assert pipe.save_pretrained(tmp_path / name) == tmp_path / name
        assert sorted(p.name for p in (tmp_path / name).iterdir()) == sorted(p.name for p in
                                                                              (tmp_path / "cli").iterdir())
        for file in ("config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
            assert (tmp_path / name / file).read_bytes() == (tmp_path / "cli" / file).read_bytes(), file
        with safe_open(str(tmp_path / name / "model.safetensors"), "pt") as a, \
                safe_open(str(tmp_path / "cli" / "model.safetensors"), "pt") as b:
            assert sorted(a.keys()) == sorted(b.keys())
            assert all(torch.equal(a.get_tensor(k), b.get_tensor(k)) for k in a.keys())  # noqa: SIM118
    feature = pipeline("feature-extraction", model=source)
    feature.save_pretrained(tmp_path / "base")
    assert json.loads((tmp_path / "base" / "config.json").read_text())["architectures"] == ["RobertaModel"]


def test_non_empty_folder_is_refused_before_reading(sources, tmp_path):
    source = sources.checkpoint("bert", "sequence-classification")
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match=r"is not empty; pass overwrite=True \(--overwrite\)"):
        convert(source, out)
    assert [p.name for p in out.iterdir()] == ["notes.txt"]
    (out / "pytorch_model.bin").write_bytes(b"stale")  # would be read before nothing, but is not ours
    (out / "vocab.json").write_text("{}")
    (out / "added_tokens.json").write_text('{"[ENT]": 30522}')  # transformers would read it with ours (audit 40)
    convert(source, out, overwrite=True)
    names = {p.name for p in out.iterdir()}
    assert "notes.txt" in names and not names & {"pytorch_model.bin", "vocab.json", "added_tokens.json"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no staging folder left
    assert not [n for n in names if n.startswith(".")]
    with pytest.raises(InputError, match="the checkpoint's own folder"):
        convert(source, source, overwrite=True)
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError, match="is a file"):
        convert(source, tmp_path / "file")


def test_an_existing_folder_on_another_device_is_written_from_inside(sources, tmp_path, monkeypatch):
    """OUT_DIR a mount point (a container's volume): every rename from beside it crossed devices (EXDEV), and with
    overwrite the previous checkpoint's weights were removed first, leaving none (audit 40). The files are now
    staged inside an existing OUT_DIR; and a move that fails leaves the previous checkpoint's files in place."""
    import errno
    import os

    source = sources.checkpoint("bert", "sequence-classification")
    out = tmp_path / "volume"
    out.mkdir()
    replace = os.replace

    def across_devices(src, dst):  # `out` is its own file system: a rename into it from outside fails
        if out in Path(dst).parents and out not in Path(src).parents:
            raise OSError(errno.EXDEV, "Invalid cross-device link", str(src))
        return replace(src, dst)

    monkeypatch.setattr(os, "replace", across_devices)
    convert(source, out)
    assert "model.safetensors" in {p.name for p in out.iterdir()}
    (out / "model.safetensors").rename(out / "pytorch_model.bin")  # the previous checkpoint, in another format
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def failing(src, dst):
        if Path(dst).name == "special_tokens_map.json":
            raise OSError(errno.EIO, "Input/output error", str(src))
        return across_devices(src, dst)

    monkeypatch.setattr(os, "replace", failing)
    with pytest.raises(OSError, match="Input/output error"):
        convert(source, out, overwrite=True)
    assert (out / "pytorch_model.bin").read_bytes() == before["pytorch_model.bin"]  # not removed before the moves
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]  # the staging folder is gone
    monkeypatch.setattr(os, "replace", across_devices)
    convert(source, out, overwrite=True)
    assert {p.name for p in out.iterdir()} == set(before) - {"pytorch_model.bin"} | {"model.safetensors"}
    assert pipeline("text-classification", model=str(out))("Un film.")[0]["label"] == \
        pipeline("text-classification", model=str(source))("Un film.")[0]["label"]


def test_dtype_and_permissions(sources, tmp_path):
    source = sources.checkpoint("bert", "sequence-classification")
    for dtype in ("int8", torch.int8, "auto-ish"):
        with pytest.raises(InputError, match="dtype="):
            convert(source, tmp_path / "out", dtype=dtype)
    assert not (tmp_path / "out").exists()
    (tmp_path / "reference").mkdir()
    convert(source, tmp_path / "out")  # a new folder, as any other the user makes (umask), not private
    assert (tmp_path / "out").stat().st_mode == (tmp_path / "reference").stat().st_mode
    (tmp_path / "reference.txt").write_text("")
    modes = {p.name: p.stat().st_mode for p in (tmp_path / "out").iterdir()}
    assert set(modes.values()) == {(tmp_path / "reference.txt").stat().st_mode}, modes


def test_head_names_and_defaults(sources):
    assert parse_head("base") is None
    with pytest.raises(InputError, match="head='classifier'; use one of sequence-classification"):
        parse_head("classifier")
    for arch, head in [("bert", None), ("distilbert", "masked-lm"), ("deberta-v2", "multiple-choice")]:
        config = load_checkpoint(sources.checkpoint(arch, head), None).config
        assert head_of(config) == head  # from the architectures transformers wrote
    config = load_checkpoint(sources.checkpoint("bert", None), None).config
    config.architectures = ["BertForPreTraining"]
    with pytest.raises(InputError, match="BertForPreTraining.*pass the head"):
        head_of(config)


def test_a_config_without_architectures_asks_for_the_head_by_its_names(sources, tmp_path):
    """The library's `head=` and the command's `--head` (audit 40: the message named neither)."""
    folder = tmp_path / "src"
    shutil.copytree(sources.checkpoint("bert", "sequence-classification"), folder)
    config = json.loads((folder / "config.json").read_text())
    config.pop("architectures", None)
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(InputError, match=r"none of which says which head to save; pass the head \(head=, or --head"):
        convert(folder, tmp_path / "out")
    convert(folder, tmp_path / "out", head="sequence-classification")
    assert json.loads((tmp_path / "out" / "config.json").read_text())["architectures"] == \
        ["BertForSequenceClassification"]

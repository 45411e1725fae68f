"""What a tokenizer.json and its tokenizer_config.json say beside the pipeline itself, read as transformers 5
reads them: the file's `padding` and `truncation` sections give the default padding side, truncation side and
pad token (tokenizer_config.json's own keys win), and `split_special_tokens: true` reads special tokens written
in a text as text, also after a pickle (audit 42). The oracle is `AutoTokenizer` on the same folder."""

from __future__ import annotations

import json
import logging
import pickle

import pytest
from factory import CORPUS

from coulisse.errors import TokenizerLoadError
from coulisse.tokenizer import Tokenizer

transformers = pytest.importorskip("transformers")
TEXTS = ["Un film magnifique, vraiment très long et très beau.", "Bof.", "le film <|pad|> est bon"]
PAD, EXTRA = "<pad>", "<|pad|>"


def unigram(vocabulary: tuple[str, ...] = (PAD, "<unk>", "<s>", "</s>", "<mask>")) -> dict:
    """A SentencePiece-like Unigram tokenizer.json trained on the factory's French corpus, with an extra special
    token that no default names."""
    from tokenizers import AddedToken, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from tokenizers import Tokenizer as Backend

    tok = Backend(models.Unigram())
    tok.normalizer, tok.pre_tokenizer = normalizers.NFKC(), pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    trainer = trainers.UnigramTrainer(vocab_size=200, special_tokens=list(vocabulary), unk_token="<unk>")
    tok.train_from_iterator(CORPUS * 4, trainer)
    ids = {token: tok.token_to_id(token) for token in ("<s>", "</s>")}
    tok.post_processor = processors.TemplateProcessing(single="<s> $A </s>", pair="<s> $A </s> $B:1 </s>:1",
                                                       special_tokens=list(ids.items()))
    tok.add_special_tokens([AddedToken(EXTRA, special=True, normalized=False)])
    return json.loads(tok.to_str())


def folder(tmp_path, data: dict, settings: dict) -> tuple[Tokenizer, object]:
    (tmp_path / "tokenizer.json").write_text(json.dumps(data), encoding="utf-8")
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": 512, "bos_token": "<s>",
              "eos_token": "</s>", "unk_token": "<unk>", "mask_token": "<mask>", **settings}
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    theirs = transformers.AutoTokenizer.from_pretrained(str(tmp_path))
    return Tokenizer.from_dir(tmp_path, model_type="camembert"), theirs


def padding(direction: str, pad_token: str = PAD, pad_id: int = 0) -> dict:
    return {"strategy": "BatchLongest", "direction": direction, "pad_to_multiple_of": None, "pad_id": pad_id,
            "pad_type_id": 0, "pad_token": pad_token}


def truncation(direction: str) -> dict:
    return {"direction": direction, "max_length": 512, "strategy": "LongestFirst", "stride": 0}


def same(ours, theirs, **options) -> None:
    a, b = ours(TEXTS, **options), theirs(TEXTS, **options)
    assert a["input_ids"] == b["input_ids"] and a["attention_mask"] == b["attention_mask"], options


@pytest.mark.parametrize("direction", ["Left", "Right"])
def test_the_files_padding_and_truncation_directions_are_the_defaults(tmp_path, direction):
    data = {**unigram(), "padding": padding(direction), "truncation": truncation(direction)}
    ours, theirs = folder(tmp_path, data, {"pad_token": PAD})
    assert ours.padding_side == theirs.padding_side == direction.lower()
    assert ours.truncation_side == theirs.truncation_side == direction.lower()
    same(ours, theirs, padding=True)
    same(ours, theirs, padding=True, truncation=True, max_length=6)


def test_tokenizer_config_sides_win_over_the_files(tmp_path):
    data = {**unigram(), "padding": padding("Left"), "truncation": truncation("Left")}
    ours, theirs = folder(tmp_path, data, {"pad_token": PAD, "padding_side": "right", "truncation_side": "right"})
    assert ours.padding_side == theirs.padding_side == "right" == ours.truncation_side == theirs.truncation_side
    same(ours, theirs, padding=True, truncation=True, max_length=6)


@pytest.mark.parametrize("vocabulary", [(PAD, "<unk>", "<s>", "</s>", "<mask>"), ("<unk>", "<s>", "</s>", "<mask>")])
def test_the_files_pad_token_pads_where_the_settings_name_none(tmp_path, vocabulary):
    """With `<pad>` in the vocabulary, coulisse padded with it; without, it refused padding=True."""
    data = unigram(vocabulary)
    extra = next(t["id"] for t in data["added_tokens"] if t["content"] == EXTRA)
    ours, theirs = folder(tmp_path, {**data, "padding": padding("Right", EXTRA, extra)}, {})
    assert ours.pad_token_id == theirs.pad_token_id == extra
    same(ours, theirs, padding=True)


def test_split_special_tokens_reads_them_as_text_also_after_a_pickle(tmp_path):
    ours, theirs = folder(tmp_path, unigram(), {"pad_token": PAD, "split_special_tokens": True})
    ids = ours(TEXTS[2])["input_ids"]
    assert ids == theirs(TEXTS[2])["input_ids"] and ours.convert_tokens_to_ids(EXTRA) not in ids
    assert pickle.loads(pickle.dumps(ours))(TEXTS[2])["input_ids"] == ids
    kept, _ = folder(tmp_path, unigram(), {"pad_token": PAD})
    assert kept.convert_tokens_to_ids(EXTRA) in kept(TEXTS[2])["input_ids"]  # by default, a special token


def test_a_class_over_another_model_type_is_said(tmp_path, caplog, monkeypatch):
    """BertTokenizer over a Unigram file: transformers 5 builds a WordPiece over its vocabulary (mostly [UNK]);
    coulisse runs the file as written, and says so (once per process: a fresh record of what was said)."""
    from coulisse.tokenizer import tokenizer_json

    monkeypatch.setattr(tokenizer_json, "_WARNED", set())
    (tmp_path / "tokenizer.json").write_text(json.dumps(unigram()), encoding="utf-8")
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "BertTokenizer"}),
                                                    encoding="utf-8")
    with caplog.at_level(logging.WARNING, logger="coulisse.tokenizer.tokenizer_json"):
        Tokenizer.from_dir(tmp_path, model_type="bert")
    assert any("reads a WordPiece model, and tokenizer.json holds a Unigram one" in r.getMessage()
               for r in caplog.records)


@pytest.mark.parametrize("data", [[], {"model": None}], ids=["a list", "no model"])
def test_a_file_without_a_model_is_refused_without_the_other_model_warning(tmp_path, caplog, monkeypatch, data):
    """Nothing to run: the refusal alone, not first a warning about "a no one" (audit 43)."""
    from coulisse.tokenizer import tokenizer_json

    monkeypatch.setattr(tokenizer_json, "_WARNED", set())
    (tmp_path / "tokenizer.json").write_text(json.dumps(data), encoding="utf-8")
    with (caplog.at_level(logging.WARNING, logger="coulisse.tokenizer.tokenizer_json"),
          pytest.raises(TokenizerLoadError)):
        Tokenizer.from_dir(tmp_path, model_type="bert")
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]

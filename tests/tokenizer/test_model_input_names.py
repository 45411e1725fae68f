"""Which inputs the tokenizer returns: tokenizer_config.json's `model_input_names`, and the generic classes'
defaults, as transformers 5 reads them. Without `token_type_ids` a BERT reads every token type as 0, a pair's
second text included, so the pair's logits change (checked against transformers' pipeline)."""

from __future__ import annotations

import json
import shutil

import pytest
from factory import as_lists, assert_close

from coulisse import pipeline
from coulisse.tokenizer import Tokenizer

PAIRS = [{"text": "Le film est-il bon ?", "text_pair": "Oui, excellent."},
         {"text": "Bof.", "text_pair": "Nul, vraiment nul, du début à la fin."}]
CASES = {
    "names-without-types": {"model_input_names": ["input_ids", "attention_mask"]},
    "names-with-types": {"model_input_names": ["input_ids", "token_type_ids", "attention_mask"]},
    "generic-class": {"tokenizer_class": "PreTrainedTokenizerFast"},
    "generic-class-names-with-types": {"tokenizer_class": "PreTrainedTokenizerFast",
                                       "model_input_names": ["input_ids", "token_type_ids", "attention_mask"]},
    "tokenizers-backend": {"tokenizer_class": "TokenizersBackend"},
    # no attention_mask returned (the call and pad): it was always returned (training-interop audit)
    "names-without-mask": {"model_input_names": ["input_ids", "token_type_ids"]},
}


@pytest.fixture
def folder(factory, tmp_path, request):
    directory = tmp_path / "bert"
    shutil.copytree(factory.checkpoint("bert", tokenizer="tokenizer.json"), directory)
    path = directory / "tokenizer_config.json"
    settings = json.loads(path.read_text(encoding="utf-8"))
    settings.update(CASES[request.param])
    path.write_text(json.dumps(settings), encoding="utf-8")
    return directory


@pytest.mark.parametrize("folder", list(CASES), indirect=True)
def test_the_returned_inputs_equal_transformers(folder):
    import transformers

    theirs = transformers.AutoTokenizer.from_pretrained(str(folder))
    ours = Tokenizer.from_dir(folder, model_type="bert")
    assert ours.model_input_names == theirs.model_input_names
    for pair in PAIRS:
        want = theirs(pair["text"], pair["text_pair"])
        got = as_lists(ours(pair["text"], pair["text_pair"]))
        assert got == {key: list(value) for key, value in want.items()}


@pytest.mark.parametrize("folder", list(CASES), indirect=True)
def test_pair_logits_equal_transformers(folder):
    import transformers

    ours = pipeline("text-classification", model=folder)
    theirs = transformers.pipeline("text-classification", model=str(folder), device="cpu")
    got, want = ours(PAIRS, top_k=None, function_to_apply="none"), theirs(PAIRS, top_k=None, function_to_apply="none")
    for a, b in zip(got, want, strict=True):
        assert [x["label"] for x in a] == [x["label"] for x in b]
        assert_close("pair logits", [x["score"] for x in a], [x["score"] for x in b])


def test_names_set_at_run_time_decide_the_mask_too(minilm_dir):
    import transformers

    theirs = transformers.AutoTokenizer.from_pretrained(str(minilm_dir))
    ours = Tokenizer.from_dir(minilm_dir, model_type="bert")
    rows = [[101, 2023, 102], [101, 102]]
    for names in (["input_ids"], ["input_ids", "attention_mask"]):
        ours.model_input_names, theirs.model_input_names = list(names), list(names)
        assert as_lists(ours(PAIRS[0]["text"])) == {k: list(v) for k, v in theirs(PAIRS[0]["text"]).items()}
        assert as_lists(ours.pad({"input_ids": rows})) == as_lists(theirs.pad({"input_ids": rows}))
        assert "attention_mask" in ours(PAIRS[0]["text"], return_attention_mask=True)

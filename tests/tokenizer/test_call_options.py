"""`pad_to_multiple_of` and `return_length` of the tokenizer call equal transformers 5's on the same files: fast
tokenizers of three families and FlauBERT's Python one (which counts a batch's lengths before padding), batches
and single texts, lists and tensors."""

from __future__ import annotations

import pytest
from factory import assert_same_encoding

from coulisse.errors import InputError
from coulisse.tokenizer import Tokenizer

TEXTS = ["J'ai attendu un cours d'HuggingFace toute ma vie.", "Je déteste tellement ça !", "Bof."]
PAIRS = ["Une phrase de contexte assez longue pour être coupée.", "Court.", "Encore une autre phrase."]
FAMILIES = {"minilm": "bert", "camembert": "camembert", "roberta": "roberta", "flaubert": "flaubert"}


@pytest.fixture(scope="module", params=list(FAMILIES))
def tokenizers(request, camembert_dir, minilm_dir, factory):
    from transformers import AutoTokenizer

    directory = {"minilm": minilm_dir, "camembert": camembert_dir}.get(request.param)
    if directory is None:
        directory = factory.tokenizer_files(request.param)
    ours = Tokenizer.from_dir(directory, model_type=FAMILIES[request.param], max_positions=512)
    return ours, AutoTokenizer.from_pretrained(str(directory))


def both(tokenizers, *args, **options):
    ours, theirs = tokenizers
    return ours(*args, **options), theirs(*args, **options)


PADDINGS = [dict(padding=True, pad_to_multiple_of=8), dict(padding="longest", pad_to_multiple_of=5),
            dict(padding="max_length", max_length=70, pad_to_multiple_of=32),
            dict(padding="max_length", max_length=16, truncation=True, pad_to_multiple_of=8),
            dict(padding=True, truncation=True, max_length=8, pad_to_multiple_of=4),
            dict(padding=True, pad_to_multiple_of=8, padding_side="left"),
            dict(padding=False, pad_to_multiple_of=8)]


@pytest.mark.parametrize("options", PADDINGS, ids=lambda o: "-".join(f"{k}={v}" for k, v in o.items()))
@pytest.mark.parametrize("return_tensors", [None, "pt"])
def test_pad_to_multiple_of(tokenizers, options, return_tensors):
    if options["padding"] is False and return_tensors:
        options = {**options, "padding": True}
    options = {**options, "return_tensors": return_tensors}
    ours, theirs = both(tokenizers, TEXTS, **options)
    assert_same_encoding(ours, theirs)
    assert_same_encoding(*both(tokenizers, TEXTS, PAIRS, **options))
    assert_same_encoding(*both(tokenizers, TEXTS[1], **options))


@pytest.mark.parametrize("options", [dict(), dict(padding=True), dict(padding=True, pad_to_multiple_of=8),
                                     dict(padding="max_length", max_length=80),
                                     dict(truncation=True, max_length=6, padding=True)],
                         ids=lambda o: "-".join(f"{k}={v}" for k, v in o.items()) or "plain")
@pytest.mark.parametrize("return_tensors", [None, "pt"])
def test_return_length(tokenizers, options, return_tensors):
    if return_tensors and not options.get("padding"):
        pytest.skip("a ragged batch has no tensor")
    options = {**options, "return_tensors": return_tensors, "return_length": True}
    for args in ((TEXTS,), (TEXTS, PAIRS), (TEXTS[0],), ([TEXTS[2]],)):
        ours, theirs = both(tokenizers, *args, **options)
        assert "length" in theirs
        assert_same_encoding(ours, theirs)
        assert type(ours["length"]) is type(theirs["length"]), args


@pytest.mark.parametrize("options", [dict(padding=True, truncation=True, max_length=12, pad_to_multiple_of=8),
                                     dict(padding="max_length", max_length=10, pad_to_multiple_of=4,
                                          truncation="only_first")])
def test_a_cut_that_is_not_a_multiple_is_refused(tokenizers, options):
    ours, theirs = tokenizers
    with pytest.raises(ValueError, match="multiple"):
        theirs(TEXTS, TEXTS, **options)
    with pytest.raises(InputError, match=f"truncation to {options['max_length']} tokens and padding to a multiple "
                                         f"of {options['pad_to_multiple_of']}"):
        ours(TEXTS, TEXTS, **options)


@pytest.mark.parametrize("value", [0, -8, 2.5, "8", True])
def test_a_multiple_that_is_not_a_positive_int_is_refused(tokenizers, value):
    ours, _ = tokenizers
    with pytest.raises(InputError, match="pad_to_multiple_of"):
        ours(TEXTS, padding=True, pad_to_multiple_of=value)


def test_padding_to_max_length_without_a_limit_pads_nothing(monkeypatch, camembert_dir):
    """A folder that states no model_max_length (CamemBERT's here), loaded without max_positions: transformers
    does not pad to max_length then; padding to the "no limit" sentinel (10**9 ids a row) would exhaust memory.
    The sentinel is lowered so that the old behaviour fails fast instead."""
    from transformers import AutoTokenizer

    from coulisse.tokenizer import tokenizer as module

    monkeypatch.setattr(module, "UNBOUNDED", 10**5)
    ours, theirs = Tokenizer.from_dir(camembert_dir, model_type="camembert"), AutoTokenizer.from_pretrained(
        str(camembert_dir))
    assert ours.model_max_length == module.UNBOUNDED and theirs.model_max_length > 10**18
    assert_same_encoding(ours(TEXTS, padding="max_length"), theirs(TEXTS, padding="max_length"))


def test_a_call_without_truncation_warns_once_of_a_row_longer_than_the_model_reads(minilm_dir, caplog):
    """As transformers warns (once per tokenizer): the row is kept whole, and the model would fail on it. A
    call that truncates, and the pipelines (which truncate or cut windows themselves), say nothing."""
    import logging

    from transformers import AutoTokenizer

    import coulisse

    tok = Tokenizer.from_dir(minilm_dir, model_type="bert", max_positions=512)
    long = "mot " * 600
    library = logging.getLogger("transformers")
    propagate, library.propagate = library.propagate, True  # transformers' own handler only, unless told
    try:
        with caplog.at_level(logging.WARNING):
            n = len(AutoTokenizer.from_pretrained(str(minilm_dir))(long)["input_ids"])  # kept whole
    finally:
        library.propagate = propagate
    assert f"({n} > 512)" in caplog.text  # and warned of
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="coulisse"):
        assert len(tok(long, truncation=True)["input_ids"]) == 512
        assert not caplog.records
        assert len(tok(long, verbose=False)["input_ids"]) == n > 512  # transformers' verbose=False: no warning
        assert not caplog.records
        assert len(tok(long)["input_ids"]) == n
        assert len(tok([long, "Bof."])["input_ids"][0]) == n
        pipe = coulisse.pipeline("feature-extraction", model=str(minilm_dir))
        pipe(long)
        pipe.tokenizer(long, truncation=True)
    said = [r.getMessage() for r in caplog.records if "longer than this model reads" in r.getMessage()]
    assert said == [f"a sequence of {n} tokens is longer than this model reads (512); the model would fail on it: "
                    "pass truncation=True to cut it to 512"]


def test_tokenize_takes_one_text(tokenizers):
    """A list was read as pre-split words: all the texts' tokens, flattened, silently (transformers tokenizes the
    first text only, silently too): refused in one line saying what to write (audit 46)."""
    ours, theirs = tokenizers
    assert ours.tokenize("Un film magnifique.") == theirs.tokenize("Un film magnifique.")
    for call in (lambda: ours.tokenize(["Un film.", "Nul."]), lambda: ours.tokenize("Un film.", ["Nul."])):
        with pytest.raises(InputError, match=r"tokenize takes one text, a str; (text|pair) is a list"):
            call()

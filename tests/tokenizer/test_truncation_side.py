"""Left truncation (TEI's `truncation_direction: "Left"`): the ids equal transformers' tokenizer with
`truncation_side = "left"` on the same files, for texts and pairs, every strategy, specials kept."""

from __future__ import annotations

import pytest

from coulisse.tokenizer import Tokenizer

TEXTS = ["J'ai attendu un cours d'HuggingFace toute ma vie, et le voici enfin.", "Je déteste tellement ça !",
         "Bof."]
PAIRS = ["Une phrase de contexte assez longue pour être coupée en deux.", "Court.", "Encore une autre phrase."]


@pytest.fixture(scope="module", params=["camembert", "minilm", "flaubert"])
def tokenizers(request, camembert_dir, minilm_dir, factory):
    from transformers import AutoTokenizer

    directory, model_type = {"camembert": (camembert_dir, "camembert"), "minilm": (minilm_dir, "bert"),
                             "flaubert": (None, "flaubert")}[request.param]
    if directory is None:
        directory = factory.tokenizer_files("flaubert")  # a Python tokenizer (Moses + BPE): the one-by-one path
    theirs = AutoTokenizer.from_pretrained(str(directory))
    theirs.truncation_side = "left"
    return Tokenizer.from_dir(directory, model_type=model_type, max_positions=512), theirs


@pytest.mark.parametrize("max_length", [6, 9])
def test_texts_keep_their_end(tokenizers, max_length):
    ours, theirs = tokenizers
    got = [e.ids for e in ours.encode_batch(TEXTS, max_length=max_length, direction="left")]
    assert got == theirs(TEXTS, truncation=True, max_length=max_length)["input_ids"]
    # not the right cut: the test would fail if the direction were dropped
    assert got[0] != [e.ids for e in ours.encode_batch(TEXTS[:1], max_length=max_length)][0]


@pytest.mark.parametrize("strategy", ["longest_first", "only_first", "only_second"])
def test_pairs(tokenizers, strategy):
    ours, theirs = tokenizers
    max_length = 12
    texts, pairs = (TEXTS, PAIRS) if strategy != "only_second" else (["Court."] * 3, PAIRS)
    texts = texts if strategy != "only_first" else TEXTS
    pairs = pairs if strategy != "only_first" else ["Oui."] * 3
    got = [e.ids for e in ours.encode_batch(texts, pairs, max_length=max_length, strategy=strategy, direction="left")]
    assert got == theirs(texts, pairs, truncation=strategy, max_length=max_length)["input_ids"]


def test_the_pipeline_option_reaches_the_tokenizer(tf_camembert_dir):
    from transformers import AutoTokenizer

    import coulisse

    pipe = coulisse.pipeline("text-classification", model=str(tf_camembert_dir))
    theirs = AutoTokenizer.from_pretrained(str(tf_camembert_dir))
    theirs.truncation_side = "left"
    long = " ".join(TEXTS * 40)
    limit = pipe.tokenizer.model_max_length  # the config's positions: the fixture's tokenizer_config has none
    batch = pipe.preprocess([long], truncation_side="left")
    assert list(batch.items[0].ids) == theirs(long, truncation=True, max_length=limit)["input_ids"]
    assert len(batch.items[0].ids) == limit
    with pytest.raises(coulisse.errors.InputError, match="truncation_side"):
        pipe(long, truncation_side="middle")


@pytest.fixture(scope="module")
def sided(tmp_path_factory, minilm_dir):
    """vocab.txt with a tokenizer_config.json that pads and truncates on the left."""
    import json
    import shutil

    from transformers import AutoTokenizer

    directory = tmp_path_factory.mktemp("sides")
    shutil.copy(minilm_dir / "vocab.txt", directory / "vocab.txt")
    (directory / "config.json").write_text(json.dumps({"model_type": "bert"}))
    (directory / "tokenizer_config.json").write_text(json.dumps(
        {"truncation_side": "left", "padding_side": "left", "model_max_length": 8}))
    return Tokenizer.from_dir(directory, model_type="bert"), AutoTokenizer.from_pretrained(str(directory))


def test_tokenizer_config_sides_are_the_defaults(sided):
    from factory import assert_same_encoding

    ours, theirs = sided
    assert (ours.padding_side, ours.truncation_side) == (theirs.padding_side, theirs.truncation_side) == ("left",) * 2
    texts = ["short", "one two three four five six seven eight nine ten"]
    for padding, options in ((True, {}), (True, {"padding_side": "right"}), ("max_length", {"max_length": 12})):
        a = ours(texts, padding=padding, truncation=True, **options)
        b = theirs(texts, padding=padding, truncation=True, **options)
        assert_same_encoding(a, b)
        assert [a.tokens(i) for i in range(2)] == [b.tokens(i) for i in range(2)]
        assert [a.word_ids(i) for i in range(2)] == [b.word_ids(i) for i in range(2)]
    assert [e.ids for e in ours.encode_batch(texts)] == theirs(texts, truncation=True)["input_ids"]


def test_a_side_that_is_neither_is_refused(tmp_path, minilm_dir):
    import json
    import shutil

    from coulisse.errors import InputError, TokenizerLoadError

    shutil.copy(minilm_dir / "vocab.txt", tmp_path / "vocab.txt")
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"padding_side": "middle"}))
    with pytest.raises(TokenizerLoadError, match="padding_side='middle'.*'right' nor 'left'"):
        Tokenizer.from_dir(tmp_path, model_type="bert")
    (tmp_path / "tokenizer_config.json").write_text("{}")
    with pytest.raises(InputError, match="padding_side='up'"):
        Tokenizer.from_dir(tmp_path, model_type="bert")(["a", "b c"], padding=True, padding_side="up")


def test_pipelines_truncate_on_the_tokenizer_config_side(tf_camembert_dir, tmp_path):
    """transformers' pipelines cut where the tokenizer does: tokenizer_config.json's `truncation_side`, unless
    the call says otherwise."""
    import json
    import shutil

    from transformers import AutoTokenizer

    import coulisse

    folder = tmp_path / "model"
    shutil.copytree(tf_camembert_dir, folder)
    (folder / "tokenizer_config.json").write_text(json.dumps({"truncation_side": "left"}))
    theirs = AutoTokenizer.from_pretrained(str(folder))
    long = " ".join(TEXTS * 40)
    for task in ("text-classification", "feature-extraction"):
        pipe = coulisse.pipeline(task, model=str(folder))
        limit = pipe.tokenizer.model_max_length
        assert list(pipe.preprocess([long]).items[0].ids) == theirs(long, truncation=True, max_length=limit)[
            "input_ids"]
        theirs.truncation_side = "right"
        assert list(pipe.preprocess([long], truncation_side="right").items[0].ids) == theirs(
            long, truncation=True, max_length=limit)["input_ids"]
        theirs.truncation_side = "left"


def test_a_truncation_side_that_is_neither_is_an_input_error_naming_it(minilm_dir):
    """As padding_side's (audit 46, F12): the Rust library's bare ValueError ("Unknown `direction`") said neither
    where the side was set nor that it is the caller's. Still a ValueError, as transformers raises; a call that
    does not truncate reads no side, as transformers'."""
    from factory import tokenizer_and_transformers

    from coulisse.errors import InputError

    ours, theirs = tokenizer_and_transformers(minilm_dir, "bert")
    ours.truncation_side = theirs.truncation_side = "Left"
    with pytest.raises(ValueError, match="Left"):
        theirs(TEXTS, truncation=True, max_length=5)
    said = "the tokenizer's truncation_side is 'Left'; use 'right' or 'left'"
    for call in (lambda: ours(TEXTS, truncation=True, max_length=5), lambda: ours.encode_batch(TEXTS),
                 lambda: ours.encode_windows(TEXTS, PAIRS, max_length=12, stride=2)):
        with pytest.raises(InputError, match=said):
            call()
    with pytest.raises(InputError, match="truncation_side='middle'; use 'right' or 'left'"):
        ours.encode_batch(TEXTS, max_length=5, direction="middle")
    assert ours(TEXTS)["input_ids"] == theirs(TEXTS)["input_ids"]

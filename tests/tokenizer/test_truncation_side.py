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

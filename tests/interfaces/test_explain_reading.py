"""Every explain view reads a text as the pipeline's call reads it: its own options (truncation_side, max_length,
tokenize_kwargs, tokenizer_kwargs, a pooling, a prompt, max_seq_len, top_k) apply, so the tokens, the embedding and
the answer shown are those `pipe(text)` computes (audit 46, review-tokenizer-explain F2 and F3).

The expected values come from the pipeline's own call: `pipe.run`, the three stages `pipe(...)` runs, which also
gives the batch its preprocess made."""

from __future__ import annotations

import numpy as np
import pytest
from test_explain import qa_model  # noqa: F401 (the fixture: committed QA checkpoints)

from coulisse import pipeline
from coulisse.explain import report, stages

LONG = "Un navet sans nom, ennuyeux et long. " * 3 + "Mais la fin est sublime, un chef-d'oeuvre absolu, magnifique !"
SENTENCE = "the quick brown fox jumps over the lazy dog " * 3


def flat(out: str) -> str:
    """The terminal's lines with their wrapping undone (every whitespace run one space)."""
    return " ".join(out.split())


def call(pipe, *args, **kwargs):
    """What `pipe(*args, **kwargs)` runs, and returns: (the preprocess's batch, the result)."""
    inputs, kwargs = pipe.parse_call(args, kwargs)
    return pipe.run(inputs, pipe.options(kwargs))


@pytest.fixture(scope="module")
def left_classifier():
    """mini-allocine keeping a long text's last 16 tokens: its answer is POSITIVE, and NEGATIVE read from the
    start."""
    return pipeline("sentiment-analysis", model="coulisse/mini-allocine", truncation_side="left", max_length=16)


def test_the_terminal_classifies_the_text_the_pipeline_reads(left_classifier):
    pipe = left_classifier
    batch, (answer,) = call(pipe, LONG)
    ids = batch.items[0].ids
    out = flat(stages(pipe, LONG))
    assert f"Answer: {answer['label']} ({answer['score']:.4f})" in out
    assert f"input_ids {ids}" in out and "truncation at 16 tokens" in out
    whole = len(pipe.tokenizer(LONG, truncation=False)["input_ids"])
    assert f"the text has {whole} tokens and the model reads 16" in out and f"the first {whole - 16} are cut" in out


def test_the_terminals_batch_holds_the_ids_the_pipeline_reads(left_classifier):
    """The course's padded batch: each row the ids the pipeline reads of its text, and its logits the pipeline's."""
    pipe = left_classifier
    texts = [LONG, "Bof."]
    batch, _ = call(pipe, texts)
    rows = [item.ids for item in batch.items]
    out = flat(stages(pipe, texts).split("Batch:")[1])
    assert "input_ids shape (2, 16)" in out and f"input_ids[0] {rows[0]}" in out
    assert f"input_ids[1] {rows[1] + [pipe.tokenizer.pad_token_id] * (16 - len(rows[1]))}" in out
    printed = out.split("model(**inputs).logits, shape (2, 2): ")[1].split(" [")
    logits = np.array([[float(v) for v in row.strip(" []").split()] for row in printed[:2]])
    # printed to 4 decimals, from the padded eager path against the packed engine
    assert np.abs(logits - np.stack(pipe.forward(batch.items))).max() <= 6e-5


@pytest.fixture(scope="module")
def short_embedder(minilm_dir):
    return pipeline("feature-extraction", model=minilm_dir, tokenize_kwargs={"truncation": True, "max_length": 8})


def test_the_embedding_shown_is_the_pipelines_with_its_tokenize_kwargs(short_embedder):
    pipe = short_embedder
    batch, vector = call(pipe, SENTENCE, pooling="auto")
    ids, vector = batch.items[0].ids, np.asarray(vector)
    (x,) = report(pipe, SENTENCE).inspections
    assert [r.id for r in x.seen] == ids and x.attentions.shape[-1] == 8
    assert np.abs(np.asarray(x.head.vector) - vector).max() < 1e-6
    out = flat(stages(pipe, SENTENCE))
    assert f"input_ids {ids}" in out and "truncation at 8 tokens" in out and "mean of the 8 token vectors" in out
    assert f"starts {flat(np.array2string(vector[:6], precision=4))}" in out


def test_the_pipelines_own_pooling_and_prompt_are_shown(minilm_dir):
    """A pipeline that pools with cls and puts a prompt first: the page's tokens are the prompted text's, its
    vector the call's; the terminal says cls."""
    pipe = pipeline("feature-extraction", model=minilm_dir, pooling="cls", prompt="query: ")
    batch, vector = call(pipe, "Le chat dort.")
    (x,) = report(pipe, "Le chat dort.").inspections
    assert x.text == batch.inputs[0] == "query: Le chat dort."
    assert [r.id for r in x.seen] == batch.items[0].ids
    assert np.abs(np.asarray(x.head.vector) - np.asarray(vector)).max() < 1e-6
    assert any("'query: '" in note for note in x.notes)
    out = flat(stages(pipe, "Le chat dort."))
    assert "pooling='cls': the first token's vector" in out and f"input_ids {batch.items[0].ids}" in out
    assert f"starts {flat(np.array2string(np.asarray(vector)[:6], precision=4))}" in out


def test_fill_mask_reads_the_text_cut_by_its_tokenizer_kwargs(task_factory):
    pipe = pipeline("fill-mask", model=task_factory.checkpoint("camembert", "masked-lm"),
                    tokenizer_kwargs={"truncation": True, "max_length": 12})
    text = "Le film est <mask> ! " + "Une scène de plus, encore une autre. " * 6
    batch, proposals = call(pipe, text)
    (x,) = report(pipe, text).inspections
    assert [r.id for r in x.seen] == batch.items[0].ids and len(x.seen) == 12
    out = flat(stages(pipe, text))
    assert f"input_ids {batch.items[0].ids}" in out
    for p in proposals:
        assert f"{p['score']:.4f} {p['token_str']!r}" in out


def test_question_answering_stage_one_is_the_pipelines_first_window(qa_model):  # noqa: F811
    directory, question, context = qa_model
    pipe = pipeline("question-answering", model=directory, max_seq_len=40, doc_stride=10)
    batch, answer = call(pipe, question=question, context=context)
    out = flat(stages(pipe, context, question=question))
    assert len(batch.items) > 1 and f"input_ids {batch.items[0].ids}" in out and "windows of 40 tokens" in out
    assert f"Answer: {answer['answer']!r} ({answer['score']:.4f}" in out
    (x,) = report(pipe, context, question=question).inspections
    assert [r.id for r in x.seen] == batch.items[0].ids and x.head.answer == answer


def test_sparse_embedding_keeps_the_pipelines_top_k(task_factory):
    pipe = pipeline("sparse-embedding", model=task_factory.checkpoint("bert", "masked-lm"), top_k=5)
    entries = pipe("Le chat dort sur le canapé.")
    out = flat(stages(pipe, "Le chat dort sur le canapé."))
    assert len(entries) == 5 and "5 of 30,522 entries active" in out
    for entry in entries:
        assert f"{entry['value']:.4f} {entry['token']}" in out


def test_entities_come_from_the_pipelines_own_windows(task_factory):
    """A pipeline reading long texts in windows sharing 32 tokens: the entities shown are its call's (explain's
    own windows, a quarter of the model's limit, are for a pipeline that sets no stride)."""
    import re

    pipe = pipeline("token-classification", model=task_factory.checkpoint("camembert", "token-classification"),
                    stride=32, aggregation_strategy="simple")
    text = "Jean-Baptiste vit à Montréal et travaille à Paris depuis 2019. " * 50  # over 512 tokens
    batch, entities = call(pipe, text)
    (x,) = report(pipe, text).inspections
    assert len(batch.items) > 1 and x.head.entities == entities
    assert [r.id for r in x.seen] == batch.items[0].ids
    out = stages(pipe, text).split("Entities of the whole text")[1]
    assert "sharing 32" in flat(out)
    printed = re.findall(r"^  (\S+)\s+([\d.]+)  \[(\d+):(\d+)\]", out, flags=re.MULTILINE)
    assert printed == [(e["entity_group"], f"{e['score']:.4f}", str(e["start"]), str(e["end"])) for e in entities]


def test_a_long_text_explained_says_no_stride_to_pass(task_factory, caplog):
    """Reading through the pipeline's own preprocess made explain log token classification's "truncated; pass
    stride=N" for a long text, an option explain does not take, while its entities read the text whole (the
    explain-regression audit); the stages show the first window, and the entities cover the text."""
    import logging

    pipe = pipeline("token-classification", model=task_factory.checkpoint("camembert", "token-classification"))
    text = "Jean-Baptiste vit à Montréal et travaille à Paris depuis 2019. " * 50  # over 512 tokens
    with caplog.at_level(logging.WARNING):
        out = stages(pipe, text)
        (x,) = report(pipe, text).inspections
    assert "Entities of the whole text" in out and x.head.entities
    assert not [r for r in caplog.records if "pass stride" in r.getMessage()], caplog.text
    with caplog.at_level(logging.WARNING):
        pipe(text)  # the pipeline's own call still says it
    assert any("pass stride" in r.getMessage() for r in caplog.records)


def test_a_text_without_a_mask_is_named_among_several(task_factory):
    """The second of two texts without a mask was said to be "text 0" (the pipeline's numbering of the one text
    explain hands it at a time)."""
    from coulisse.errors import InputError

    pipe = pipeline("fill-mask", model=task_factory.checkpoint("camembert", "masked-lm"))
    with pytest.raises(InputError, match=r"^'Pas de masque ici\.' has no mask token \(<mask>\) in the tokens"):
        stages(pipe, ["Le film est <mask> !", "Pas de masque ici."])


def test_a_zero_shot_pipeline_built_with_its_labels_is_explained_with_them(nli_dir):
    """`pipeline("zero-shot-classification", candidate_labels=..., hypothesis_template=...)` answers `zs(text)`
    with the labels it was built with; `stages(zs, text)` and `report(zs, text)` asked for `labels=` all the same
    (note 46's leftover). Labels given to the call still win, as in the pipeline's call."""
    labels, template = ["cinéma", "sport"], "Ce texte parle de {}."
    built = pipeline("zero-shot-classification", model=str(nli_dir), candidate_labels=labels,
                              hypothesis_template=template)
    text = "Un film magnifique, des acteurs formidables."
    assert stages(built, text) == stages(built, text, labels=labels, template=template)
    assert "Ce texte parle de sport." in stages(built, text)
    other = stages(built, text, labels=["météo", "politique"])
    assert "Ce texte parle de météo." in other and "sport" not in other
    page = report(built, text)
    assert "Ce texte parle de" in page.html()

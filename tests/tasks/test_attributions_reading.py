"""`pipe.explain` explains the input and the label the pipeline's call answers (audit 38, findings 1, 3 and 7):

- the text is read with the pipeline's reading options (`truncation_side`, `max_length`, `text_pair`...), as
  `preprocess` reads it: the ids explained are the call's, and F(x) its logits;
- `long_text="chunk"`: the answer is the mean F̄ of the windows' logits, and so is what is explained; both methods
  are linear in F, so a token's score is the mean of its scores in the windows (checked against each window
  explained alone), and the scores add up to F̄(x) − F̄(x');
- the default target is the label of the pipeline's own answer (int8 included), and `weights` says what ran.
"""

from __future__ import annotations

import numpy as np
import pytest
from factory import LABELS, TEXTS, max_delta

from coulisse import pipeline
from coulisse.errors import InputError
from coulisse.tasks.base import PRE

TEXT = "Les acteurs sont excellents, la musique est magnifique, mais la fin est bâclée et le scénario trop long."


def call_logits(pipe, text: str, **options) -> np.ndarray:
    """The logits behind `pipe(text, **options)`'s answer: its own stages (the mean of windows in chunk mode)."""
    batch = pipe.preprocess([text], **pipe.stage_options(pipe.options(options), PRE))
    rows = np.asarray(pipe.forward(batch.items), dtype=np.float64)
    return rows.mean(0), batch


@pytest.fixture(scope="module")
def camembert(factory):
    return factory.checkpoint("camembert")


@pytest.mark.parametrize("options", [{"truncation_side": "left", "max_length": 12}, {"max_length": 10},
                                     {"text_pair": "Un second texte."}])
@pytest.mark.parametrize("method", ["integrated_gradients", "occlusion"])
def test_explain_reads_the_text_as_the_call_does(camembert, options, method):
    """Built with reading options, the pipeline's call reads another input than the tokenizer's defaults: explain
    explains that one (it re-tokenized with default truncation, and ignored them)."""
    pipe = pipeline("text-classification", model=camembert, **options)
    want, batch = call_logits(pipe, TEXT)
    a = pipe.explain(TEXT, method=method)
    assert a.ids == batch.items[0].ids
    assert max_delta(f"F(x) {options}", np.asarray(a.logits), want) <= 1e-5
    assert a.target == int(np.argmax(want)) and a.label == pipe(TEXT)[0]["label"]
    assert a.truncated == ("max_length" in options)
    if "text_pair" in options:  # the pair is held as the special tokens are, and scored 0
        pair = [i for i, s in enumerate(a.special) if s and a.tokens[i] not in ("<s>", "</s>")]
        assert pair and not any(a.scores[i] for i in pair) and a.extra["text_pair"] == options["text_pair"]
    if "truncation_side" in options:  # the end of the text is kept: its last word is explained
        assert a.words[-1].text == "." and a.words[0].start > 0
    # the same options given to explain, on a pipeline built without them
    plain = pipeline("text-classification", model=camembert)
    assert plain.explain(TEXT, method=method, **options).ids == a.ids


def test_explain_refuses_options_that_do_not_say_how_a_text_is_read(camembert):
    pipe = pipeline("text-classification", model=camembert)
    with pytest.raises(InputError, match=r"not top_k; drop it\.$") as caught:
        pipe.explain(TEXT, top_k=None)
    assert "truncation_side" in str(caught.value) and "\n" not in str(caught.value)
    with pytest.raises(InputError, match="truncation_side='middle'"):
        pipe.explain(TEXT, truncation_side="middle")


@pytest.mark.parametrize("method", ["integrated_gradients", "occlusion"])
def test_chunk_mode_explains_the_mean_of_the_windows(camembert, method):
    """`long_text="chunk"`: F̄ = the mean of the windows' logits, the call's answer. A token in one window alone
    scores its score in that window (explained alone: the same window is what `long_text="truncate"` keeps) over
    the number of windows; the scores add up to F̄(x) − F̄(x') (Integrated Gradients)."""
    pipe = pipeline("text-classification", model=camembert, long_text="chunk", max_length=10, stride=3)
    want, batch = call_logits(pipe, TEXT)
    windows = len(batch.items)
    assert windows >= 3  # the middle windows share tokens on both sides
    a = pipe.explain(TEXT, method=method)
    assert a.extra["windows"] == windows and not a.truncated
    assert a.ids == pipe.tokenizer.encode_batch([TEXT], truncation=False)[0].ids  # the whole text
    assert max_delta("F̄(x)", np.asarray(a.logits), want) <= 1e-5
    assert a.target == int(np.argmax(want)) and a.label == pipe(TEXT)[0]["label"]
    first = pipe.explain(TEXT, method=method, long_text="truncate", target=a.target)  # window 1 alone
    alone = range(1, 10 - 1 - 3)  # the first window's tokens that the second does not share
    assert max_delta("window 1's tokens", np.asarray(a.scores)[alone], np.asarray(first.scores)[alone] / windows) \
        <= 1e-6
    if method == "integrated_gradients":
        assert abs(a.gap) <= 1e-3 * abs(a.delta) + 1e-5 and a.steps >= windows * 32
    for target in LABELS:
        assert pipe.explain(TEXT, method=method, target=target).label == LABELS[target]
    from coulisse.interfaces.attribution_view import attribution_lines

    said = " ".join(" ".join(attribution_lines(a, color=False)).split())
    assert f"the mean over the {windows} windows the text is read in. F(x) = {a.logits[a.target]:+.4f}" in said


def test_chunk_mode_refuses_what_it_refuses_in_a_call(camembert):
    pipe = pipeline("text-classification", model=camembert, long_text="chunk")
    with pytest.raises(InputError, match="it takes no truncation_side: use long_text='truncate'"):
        pipe.explain(TEXT, truncation_side="left")


@pytest.mark.parametrize("options", [{"truncation_side": "left", "max_length": 12}, {"max_length": 10},
                                     {"text_pair": "Un second texte."}])
def test_the_page_shows_the_input_and_answer_of_the_call(camembert, options):
    """`coulisse.explain.report` / the studio's views: the token table, the attention and the answer are the
    call's input and answer, which the words' scores explain (the table tokenized apart, with defaults)."""
    from coulisse.interfaces.inspection import inspect_text

    pipe = pipeline("text-classification", model=camembert, **options)
    want, batch = call_logits(pipe, TEXT)
    x = inspect_text(pipe, TEXT)
    assert [t.id for t in x.seen] == batch.items[0].ids == x.attribution.ids
    assert x.attentions.shape[-1] == len(batch.items[0].ids)
    assert max_delta(f"answer {options}", np.asarray(x.head.logits), want) <= 1e-5
    assert x.head.answer["label"] == x.attribution.label == pipe(TEXT)[0]["label"]
    if "truncation_side" in options:
        assert any("truncation_side='left'" in n for n in x.notes), x.notes
    if "text_pair" in options:
        assert x.sequences == (TEXT, options["text_pair"])


def test_the_page_of_a_text_read_in_windows_is_refused_in_one_line(camembert):
    from coulisse.interfaces.inspection import inspect_text

    pipe = pipeline("text-classification", model=camembert, long_text="chunk", max_length=10)
    with pytest.raises(InputError, match=r"reads the text in \d+ windows .*long_text='truncate'") as caught:
        inspect_text(pipe, TEXT)
    assert "\n" not in str(caught.value)
    short = inspect_text(pipe, "Bof.")  # one window: the call's input, as truncation reads it
    assert [t.id for t in short.seen] == short.attribution.ids


def test_int8_default_target_is_the_int8_answer(camembert, monkeypatch):
    """An int8 pipeline's Integrated Gradients run on fp32 weights, but explain the label its own (int8) forward
    answers, as occlusion does: a label the fp32 logits would not pick is explained when int8 answers it."""
    int8 = pipeline("text-classification", model=camembert, quantize="int8")
    fp32 = int8.explain(TEXTS[0], target=0)
    other = int(np.argmin(fp32.logits))  # never fp32's argmax
    rigged = np.full(len(LABELS), -5.0, dtype=np.float32)
    rigged[other] = 5.0
    monkeypatch.setattr(int8, "forward", lambda items, *args, **kwargs: [rigged] * len(items))
    a = int8.explain(TEXTS[0])
    assert a.target == other and a.weights == "fp32"


def test_every_text_explains_its_own_answer(camembert):
    int8 = pipeline("text-classification", model=camembert, quantize="int8")
    for a, answer in zip(int8.explain(TEXTS[:4]), int8(TEXTS[:4]), strict=True):
        assert a.label == answer["label"]


def test_weights_say_what_ran(camembert):
    """Occlusion runs through the pipeline's own forward: bf16 is labelled bf16 (it said fp32); Integrated
    Gradients take fp32 gradients whatever the pipeline runs."""
    from coulisse.interfaces.inspection import inspect_text

    try:
        bf16 = pipeline("text-classification", model=camembert, dtype="bfloat16")
    except InputError as e:  # a CPU without bf16
        pytest.skip(str(e))
    assert bf16.explain(TEXTS[0], method="occlusion").weights == "bf16"
    assert bf16.explain(TEXTS[0]).weights == "fp32"
    notes = inspect_text(bf16, TEXTS[0]).notes
    assert any("come from the bf16 weights" in n and "fp32 weights" in n for n in notes), notes

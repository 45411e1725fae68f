"""text-classification's `long_text="chunk"` in Python (what `--long-text chunk` runs in the corpus jobs): a text
over the model's limit is read whole, in windows sharing `stride` tokens, and scored on the mean of their logits.

Oracle, built apart from coulisse.tasks.windows: the tokenizer backend's own overflow windows (tokenizers'
`truncate(max_length, stride)`: windows of the text's tokens that share `stride` of them, each given the special
tokens), each run alone through transformers' model of the same folder; the mean of those logits, softmaxed.
Tolerance: both run fp32 over at most 24 positions of a tiny model (logits of order 1): a few float32 ulps
each, 1e-5 with margin, as the other oracle tests of this size.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from factory import LONG_REVIEW as LONG
from factory import WINDOW_LIMIT

from coulisse.errors import InputError
from coulisse.tasks.functional import softmax

LIMIT = WINDOW_LIMIT


@pytest.fixture(scope="module")
def pipe(windowed_classifier):
    return windowed_classifier


@pytest.fixture(scope="module")
def reference(pipe, tmp_path_factory):
    from transformers import AutoModelForSequenceClassification

    # the same weights, saved for transformers (the fixture folder holds TensorFlow's)
    folder = pipe.save_pretrained(tmp_path_factory.mktemp("long-text") / "pt")
    return AutoModelForSequenceClassification.from_pretrained(str(folder)).eval()


def oracle(pipe, reference, text: str, size: int, stride: int) -> np.ndarray:
    backend = pipe.tokenizer.backend
    backend.enable_truncation(size, stride=stride)
    try:
        first = backend.encode(text)
    finally:
        backend.no_truncation()
        pipe.tokenizer._truncation = None  # the wrapper's record of the backend's state
    windows = [first, *first.overflowing]
    with torch.no_grad():
        logits = [reference(input_ids=torch.tensor([w.ids])).logits[0].numpy() for w in windows]
    return softmax(np.mean(np.asarray(logits, dtype=np.float64), axis=0).astype(np.float32))


@pytest.mark.parametrize(("stride", "max_length"), [(None, None), (0, None), (7, None), (3, 16)])
def test_chunk_scores_are_the_mean_of_the_windows_logits(pipe, reference, stride, max_length):
    size = max_length or LIMIT
    body = size - pipe.tokenizer.backend.num_special_tokens_to_add(False)
    step = body // 4 if stride is None else stride
    texts = [LONG, "Court et bon.", LONG[:250]]
    got = pipe(texts, long_text="chunk", top_k=None, stride=stride, max_length=max_length)
    for text, scores in zip(texts, got, strict=True):
        expected = oracle(pipe, reference, text, size, step)
        by_label = {s["label"]: s["score"] for s in scores}
        np.testing.assert_allclose([by_label[pipe.config.id2label[i]] for i in range(len(expected))], expected,
                                   rtol=0, atol=1e-5)
    truncated = pipe(LONG, top_k=None)  # the start only: other scores, so the windows were read
    assert not np.allclose([s["score"] for s in truncated], [s["score"] for s in got[0]], atol=1e-4)


def test_a_text_that_fits_is_read_as_truncation_reads_it(pipe):
    short = "Court et bon."
    assert pipe.preprocess([short], long_text="chunk").items[0].ids == pipe.preprocess([short]).items[0].ids
    assert pipe(short, long_text="chunk") == pipe(short)


def test_chunk_keeps_the_call_shapes(pipe):
    assert isinstance(pipe(LONG, long_text="chunk"), list) and isinstance(pipe(LONG, long_text="chunk")[0], dict)
    assert len(pipe([LONG, LONG], long_text="chunk", top_k=2)) == 2
    streamed = list(pipe(iter([LONG, "Bof."]), long_text="chunk", batch_size=1))
    assert streamed == pipe([LONG, "Bof."], long_text="chunk")


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"long_text": "split"}, "long_text"),
    ({"long_text": "chunk", "stride": -1}, "stride"),
    ({"long_text": "chunk", "stride": 40}, "stride 40: the tokens two windows share must be"),
    ({"long_text": "chunk", "text_pair": "b"}, "takes no text pairs"),
    ({"long_text": "chunk", "truncation_side": "left"}, "takes no truncation_side"),
    ({"stride": 5}, "stride=5 only applies with long_text='chunk'"),  # transformers ignores it; the docs refuse it
    ({"long_text": "truncate", "stride": 0}, "stride=0 only applies with long_text='chunk'"),
])
def test_what_chunk_cannot_take_is_refused(pipe, kwargs, message):
    with pytest.raises(InputError, match=message):
        pipe(LONG, **kwargs)

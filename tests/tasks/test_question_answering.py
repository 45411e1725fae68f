"""`pipeline("question-answering")` against transformers 4.x, whose pipeline transformers 5 removed.

The oracle ran once in a transformers 4.57 venv (tests/fixtures/qa/make_fixture.py) on tiny random CamemBERT
and BERT checkpoints with the real tokenizers; its answers are committed in expected.json. Answers, start
and end must be equal, scores within 1e-4. The heads of all seven families are checked against transformers
5's `*ForQuestionAnswering` logits, and the numpy span decoding and the argument handling run without weights.
"""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from factory import ARCHS, assert_close, max_delta

from coulisse import pipeline
from coulisse.errors import InputError, ModelLoadError, UnsupportedModelError
from coulisse.tasks.question_answering import decode_spans, parse_inputs, select_starts_ends

QA_FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "qa"


def fixture_checkpoint(family: str, tmp: Path, camembert_spm: Path, minilm_dir: Path) -> Path:
    """The committed checkpoint plus the vocabulary file the tests' packages ship (not committed twice)."""
    d = tmp / family
    shutil.copytree(QA_FIXTURES / family, d)
    if family == "camembert":
        shutil.copy(camembert_spm, d / "sentencepiece.bpe.model")
    else:
        shutil.copy(minilm_dir / "vocab.txt", d / "vocab.txt")
    return d


@pytest.fixture(scope="module", params=["camembert", "bert"])
def oracle(request, tmp_path_factory, camembert_spm, minilm_dir):
    d = fixture_checkpoint(request.param, tmp_path_factory.mktemp("qa"), camembert_spm, minilm_dir)
    record = json.loads((d / "expected.json").read_text(encoding="utf-8"))
    return pipeline("question-answering", model=d), record


def assert_same_answers(kind: str, ours, theirs, tol: float = 1e-4) -> None:
    """Same nesting; per answer the same text and offsets, and a score within `tol`."""
    assert type(ours) is type(theirs), (ours, theirs)
    if isinstance(theirs, list):
        assert len(ours) == len(theirs), (ours, theirs)
        for a, b in zip(ours, theirs, strict=True):
            assert_same_answers(kind, a, b, tol)
        return
    assert set(ours) == {"score", "start", "end", "answer"}, ours
    span = (ours["answer"], ours["start"], ours["end"])
    assert span == (theirs["answer"], theirs["start"], theirs["end"]), (ours, theirs)
    assert isinstance(ours["score"], float) and isinstance(ours["start"], int)
    delta = max_delta(kind, ours["score"], theirs["score"])
    assert delta <= tol, (ours, theirs)


def test_every_call_and_option_equals_transformers4(oracle):
    qa, record = oracle
    assert record["transformers"].startswith("4.")
    for case in record["cases"]:
        ours = qa(*case["args"], **case["kwargs"])
        assert_same_answers(f"qa score vs transformers 4 ({record['family']})", ours, case["expected"])


def test_long_contexts_are_cut_into_transformers4_windows(oracle):
    qa, record = oracle
    cases = [c for c in record["cases"] if "windows" in c]
    assert cases and all(len(c["windows"]) > 2 for c in cases)
    for case in cases:
        kw = case["kwargs"]
        max_seq_len = kw.get("max_seq_len", 384)
        stride = kw.get("doc_stride", min(max_seq_len // 2, 128))
        windows = qa.windows(parse_inputs((), kw["question"], kw["context"]), max_seq_len, stride)
        assert [w.encoding.ids for w in windows] == case["windows"], case["name"]
        assert all(len(w.encoding.ids) <= max_seq_len for w in windows)


def test_the_oracle_answers_are_not_trivial(oracle):
    """Random weights must still rank spans differently per question, or equal answers would prove little."""
    _, record = oracle
    answers = {json.dumps(c["expected"], sort_keys=True) for c in record["cases"]}
    assert len(answers) >= 12

    def flat(x):
        return [a for y in x for a in flat(y)] if isinstance(x, list) else [x]

    scores = {a["score"] for c in record["cases"] for a in flat(c["expected"])}
    assert len(scores) > 20


def transformers4_null_scores(tok, model, question: str, context: str, max_seq_len: int,
                              doc_stride: int) -> tuple[list[list[int]], list[float]]:
    """Each window's ids and start[CLS] x end[CLS], computed as transformers 4's pipeline did (its preprocess,
    `_forward` and postprocess) with transformers 5's tokenizer `tok` and `*ForQuestionAnswering` `model`: CLS and
    the context's tokens kept, the others at -10000 before each softmax."""
    enc = tok(text=question, text_pair=context, truncation="only_second", max_length=max_seq_len, stride=doc_stride,
              return_overflowing_tokens=True, return_token_type_ids=True)
    products = []
    for i, ids in enumerate(enc["input_ids"]):
        kept = np.array([s == 1 for s in enc.sequence_ids(i)]) | (np.array(ids) == tok.cls_token_id)
        with torch.no_grad():
            out = model(**{k: torch.tensor([enc[k][i]]) for k in tok.model_input_names if k in enc})
        start, end = (np.where(kept, x[0].numpy().astype(np.float64), -10000.0)
                      for x in (out.start_logits, out.end_logits))
        start, end = (np.exp(x - x.max()) / np.exp(x - x.max()).sum() for x in (start, end))
        products.append(float(start[0] * end[0]))
    return enc["input_ids"], products


def test_the_null_answer_scores_the_lowest_cls_product_of_all_windows(oracle, tmp_path, camembert_spm, minilm_dir):
    """handle_impossible_answer=True over 6 (CamemBERT) or 9 (BERT) windows: the empty answer scores the lowest
    start[CLS] x end[CLS] of all windows (transformers 4's rule), here a middle window's. top_k exceeds the
    number of answers, so the empty one is among them (audit 46, F1)."""
    import transformers

    qa, record = oracle
    d = fixture_checkpoint(record["family"], tmp_path, camembert_spm, minilm_dir)
    tok = transformers.AutoTokenizer.from_pretrained(str(d))
    model = transformers.AutoModelForQuestionAnswering.from_pretrained(str(d), dtype=torch.float32).eval()
    recorded = next(c for c in record["cases"] if c["name"] == "long-small-windows")
    kw = recorded["kwargs"]
    windows, _ = transformers4_null_scores(tok, model, kw["question"], kw["context"], kw["max_seq_len"],
                                           kw["doc_stride"])
    assert windows == recorded["windows"]  # transformers 5's tokenizer cuts transformers 4's windows
    context = ". ".join(kw["context"].split(". ")[:5]) + "."  # five sentences: a few windows of 40 tokens
    windows, products = transformers4_null_scores(tok, model, kw["question"], context, 40, 8)
    assert len(windows) > 4
    # the first and last windows score higher: one window's product in place of the minimum would show
    assert min(products) < 0.9 * min(products[0], products[-1])
    answers = qa(question=kw["question"], context=context, max_seq_len=40, doc_stride=8, top_k=5000,
                 handle_impossible_answer=True)
    assert len(answers) < 5000
    nulls = [a for a in answers if a["answer"] == "" and a["score"] > 0]
    assert [(a["start"], a["end"]) for a in nulls] == [(0, 0)]
    assert nulls[0]["score"] == pytest.approx(min(products), rel=1e-4, abs=0)


SIDES = json.loads((QA_FIXTURES / "sides.json").read_text(encoding="utf-8"))  # make_sides_fixture.py


def sided_checkpoint(run: dict, tmp: Path, camembert_spm: Path, minilm_dir: Path) -> Path:
    d = fixture_checkpoint(run["family"], tmp, camembert_spm, minilm_dir)
    path = d / "tokenizer_config.json"
    path.write_text(json.dumps({**json.loads(path.read_text(encoding="utf-8")), **run["sides"]}), encoding="utf-8")
    return d


def case_windows(qa, kwargs: dict) -> list[list[int]]:
    max_seq_len = kwargs.get("max_seq_len", 384)
    stride = kwargs.get("doc_stride", min(max_seq_len // 2, 128))
    windows = qa.windows(parse_inputs((), kwargs["question"], kwargs["context"]), max_seq_len, stride)
    return [w.encoding.ids for w in windows]


@pytest.mark.parametrize("run", SIDES["runs"], ids=lambda r: f"{r['family']}-{'-'.join(map(str, r['sides'].items()))}")
def test_the_tokenizer_sides_equal_transformers4(run, tmp_path, camembert_spm, minilm_dir):
    """tokenizer_config.json's `truncation_side: "left"` cuts the windows from the context's end, and
    `padding_side: "left"` puts the context first: windows and answers as transformers 4's pipeline gives them."""
    assert SIDES["transformers"].startswith("4.")
    qa = pipeline("question-answering", model=sided_checkpoint(run, tmp_path, camembert_spm, minilm_dir))
    for case in run["cases"]:
        if "windows" in case:
            assert case_windows(qa, case["kwargs"]) == case["windows"], case["name"]
        assert_same_answers(f"qa score vs transformers 4 ({run['family']}, {run['sides']})", qa(**case["kwargs"]),
                            case["expected"])


def test_a_truncation_side_set_on_the_tokenizer_reaches_the_windows(tmp_path, camembert_spm, minilm_dir):
    """As in transformers, `qa.tokenizer.truncation_side = "left"` after loading applies to the next call."""
    run = next(r for r in SIDES["runs"] if r["family"] == "camembert" and r["sides"] == {"truncation_side": "left"})
    qa = pipeline("question-answering", model=fixture_checkpoint("camembert", tmp_path, camembert_spm, minilm_dir))
    case = next(c for c in run["cases"] if c["name"] == "long-small-windows")
    assert case_windows(qa, case["kwargs"]) != case["windows"]  # right, the file's default
    qa.tokenizer.truncation_side = "left"
    assert case_windows(qa, case["kwargs"]) == case["windows"]


# -- heads: every family's *ForQuestionAnswering against transformers 5 ------------------------------------


@pytest.fixture(scope="module")
def qa_checkpoints(factory, tmp_path_factory):
    import transformers

    root = tmp_path_factory.mktemp("qa-heads")
    made = {}
    for i, arch in enumerate(ARCHS):
        config = copy.deepcopy(factory.reference(arch).model.config)
        config.num_labels = 2
        torch.manual_seed(200 + i)
        model = transformers.AutoModelForQuestionAnswering.from_config(config).eval()
        d = root / arch
        model.save_pretrained(d)
        for f in factory.tokenizer_files(arch).iterdir():
            if f.name != "config.json":
                shutil.copy(f, d / f.name)
        made[arch] = (d, model)
    return made


@pytest.fixture(scope="module")
def bert_qa(qa_checkpoints):
    return pipeline("question-answering", model=qa_checkpoints["bert"][0])


@pytest.mark.parametrize("arch", ARCHS)
def test_head_logits_equal_transformers(arch, qa_checkpoints):
    directory, reference = qa_checkpoints[arch]
    qa = pipeline("question-answering", model=directory)
    inputs = qa.tokenizer(["Qui a construit la tour ?", "Quand ?"],
                          ["Gustave Eiffel l'a construite en deux ans.", "En 1889, pour l'Exposition."],
                          padding=True, return_tensors="pt")
    ours = qa.model(**inputs).logits  # (B, L, 2), zeros at padding
    with torch.inference_mode():
        theirs = reference(**inputs)
    mask = inputs["attention_mask"].bool()
    assert_close(f"qa start/end logits ({arch})", ours[..., 0][mask], theirs.start_logits[mask])
    assert_close(f"qa start/end logits ({arch})", ours[..., 1][mask], theirs.end_logits[mask])
    answer = qa(question="Qui a construit la tour ?", context="Gustave Eiffel l'a construite en deux ans.")
    assert set(answer) == {"score", "start", "end", "answer"} and 0 < answer["score"] <= 1


def test_a_checkpoint_without_a_qa_head_is_refused(factory):
    with pytest.raises(ModelLoadError, match="no question-answering head"):
        pipeline("question-answering", model=factory.checkpoint("bert"))


@pytest.mark.parametrize("arch", ["bert", "modernbert"])
def test_a_head_without_two_outputs_is_refused(factory, tmp_path, arch):
    """A `*ForQuestionAnswering` saved with num_labels=3: transformers fails unpacking (start, end) from it; coulisse
    refuses it at load, in one line, instead of answering from the first two columns."""
    import transformers

    config = copy.deepcopy(factory.reference(arch).model.config)
    config.num_labels = 3
    transformers.AutoModelForQuestionAnswering.from_config(config).save_pretrained(tmp_path)
    for f in factory.tokenizer_files(arch).iterdir():
        if f.name != "config.json":
            shutil.copy(f, tmp_path / f.name)
    with pytest.raises(UnsupportedModelError, match=r"3 outputs \(num_labels=3\); an extractive QA head has 2"):
        pipeline("question-answering", model=tmp_path)


# -- without weights: span decoding and argument handling -------------------------------------------------


def test_decode_spans_keeps_ordered_short_context_spans():
    start = np.array([[0.0, 0.1, 0.6, 0.3]], dtype=np.float32)
    end = np.array([[0.0, 0.5, 0.2, 0.3]], dtype=np.float32)
    allowed = np.array([[1, 0, 1, 1]])  # token 1 is the question
    starts, ends, scores = decode_spans(start, end, 3, 2, allowed)
    assert list(zip(starts.tolist(), ends.tolist(), strict=True)) == [(2, 3), (2, 2), (3, 3)]
    np.testing.assert_allclose(scores, [0.18, 0.12, 0.09], rtol=1e-6)


def test_null_score_is_the_lowest_cls_product():
    logits = np.array([3.0, 0.0, 1.0, 2.0], dtype=np.float32)
    p_mask = np.array([0, 1, 0, 0])
    _, _, _, null = select_starts_ends(logits, logits, p_mask, 1e6, 1, True, 15)
    p = np.exp([3.0, 1.0, 2.0]) / np.exp([3.0, 1.0, 2.0]).sum()
    assert null == pytest.approx(p[0] ** 2, rel=1e-6)


@pytest.mark.parametrize("args, kwargs, n", [
    ((), {"question": "Q ?", "context": "C."}, 1),
    (("Q ?", "C."), {}, 1),
    (({"question": "Q ?", "context": "C."},), {}, 1),
    (([{"question": "Q ?", "context": "C."}] * 3,), {}, 3),
    ((), {"question": ["Q ?", "R ?"], "context": "C."}, 2),
    ((), {"question": ["Q ?", "R ?"], "context": ["C.", "D."]}, 2),
])
def test_call_signatures_of_transformers4(args, kwargs, n):
    assert len(parse_inputs(args, **kwargs)) == n


@pytest.mark.parametrize("args, kwargs, message", [
    ((), {"question": ["Q ?", "R ?"], "context": ["C."]}, "2 questions but 1 contexts"),
    ((), {"question": "Q ?", "context": ""}, "context is empty"),
    ((), {"question": "Q ?"}, "pass question= and context="),
    (({"question": "Q ?"},), {}, "'question' and 'context' keys"),
    (("Q ?",), {}, "is not a question"),
    ((), {"question": "Q ?", "context": 3}, "must be strings"),
])
def test_bad_calls_raise_input_errors(args, kwargs, message):
    with pytest.raises(InputError, match=message):
        parse_inputs(args, **kwargs)


@pytest.mark.parametrize("options, message", [
    ({"top_k": 0}, "top_k=0"),
    ({"max_answer_len": -1}, "max_answer_len=-1"),
    ({"doc_stride": 50, "max_seq_len": 40}, "doc_stride \\(50\\) is larger"),
    ({"max_seq_len": 5000}, "exceeds the"),
    ({"topk": 2}, "unknown option"),
    ({"max_seq_len": 12, "doc_stride": 4}, "cannot cut windows"),
])
def test_bad_options_raise_input_errors(options, message, bert_qa):
    qa = bert_qa
    with pytest.raises(InputError, match=message):
        qa(question="Quelle est la hauteur de la tour Eiffel aujourd'hui ?", context="Elle mesure 330 m.",
           **options)


@pytest.mark.parametrize("arch", ARCHS)
def test_a_question_that_leaves_only_the_stride_is_one_input_error(arch, qa_checkpoints):
    """Where the question and the special tokens leave exactly `doc_stride` tokens of a window to a context that
    must be cut, tokenizers panics (BERT's post-processor) or raises (RoBERTa's): both are one InputError. One
    token more of room cuts the windows."""
    qa = pipeline("question-answering", model=qa_checkpoints[arch][0])
    question = "Où le film a-t-il été tourné et par qui a-t-il été produit cette année-là ?"
    context = "Le film a été tourné à Lyon en 2019 par une petite équipe. " * 8
    n = len(qa.tokenizer.encode_batch([question], add_special_tokens=False)[0].ids)
    specials = len(qa.tokenizer.encode_batch(["a"], ["b"])[0].ids) - len(
        qa.tokenizer.encode_batch(["a"], ["b"], add_special_tokens=False)[0].ids)
    stride = 8
    with pytest.raises(InputError, match="no more than the stride"):
        qa(question=question, context=context, max_seq_len=n + specials + stride, doc_stride=stride)
    answer = qa(question=question, context=context, max_seq_len=n + specials + stride + 1, doc_stride=stride)
    assert context[answer["start"]:answer["end"]] == answer["answer"]


@pytest.mark.parametrize("where", ["question", "context"])
def test_a_lone_surrogate_is_one_input_error_naming_its_text(where, bert_qa):
    """JSON's "\\ud800" decodes to a string UTF-8 cannot carry: the Rust binding refuses it with a bare TypeError
    (the server answered 500 for a question holding one, and a misleading window message for a context)."""
    texts = {"question": "Où ?", "context": "Le film a été tourné à Lyon."}
    texts[where] = texts[where][:3] + "\ud800" + texts[where][3:]
    with pytest.raises(InputError, match=f"^{where} 0 is not valid Unicode \\(lone surrogate at position 3\\)"):
        bert_qa(**texts)


def test_windows_use_transformers4_sentencepiece_offsets(oracle):
    """transformers 4 kept the space before a word in its first SentencePiece token; ids do not change."""
    qa, record = oracle
    text = "Le camembert  vient\tde Normandie."
    plain, legacy = qa.tokenizer.encode_batch([text])[0], qa.window_tokenizer.encode_batch([text])[0]
    assert plain.ids == legacy.ids
    if record["family"] == "bert":
        assert qa.window_tokenizer is qa.tokenizer
        return
    starts = [s for s, _ in legacy.offsets[1:-1]]
    assert [text[s] for s in starts[1:] if text[s].isspace()] == [" ", " ", "\t", " "]
    assert [s for s, _ in plain.offsets[1:-1]] != starts


@pytest.mark.parametrize("padding", [True, "max_length", "longest", False, "do_not_pad"])
def test_padding_is_accepted_and_moves_no_answer(padding, bert_qa):
    """transformers 4's preprocess takes `padding=` (windows padded to max_seq_len): it changes no answer there,
    and coulisse, whose batches are packed, accepts it the same (it said "unknown option": audit 40)."""
    question, context = "Quelle est la hauteur de la tour Eiffel ?", "La tour Eiffel mesure 330 m. Elle est à Paris."
    assert bert_qa(question=question, context=context, padding=padding, top_k=3) == \
        bert_qa(question=question, context=context, top_k=3)
    with pytest.raises(InputError, match="padding="):
        bert_qa(question=question, context=context, padding="yes")

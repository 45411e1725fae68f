"""`POST /` in the Inference API's shape (`Service.run_task`) within the bounds TEI's routes keep (bounds.py,
task_bounds.py), whatever the served task: a text the task truncates is cut to TEI's 250 characters per token
before the tokenizer sees it, one it reads whole is refused past them; zero-shot's pairs take turns on the tokenizer
thread; a request's model inputs (question answering's and token classification's windows) are at most
--max-client-batch-size, each holding its permit; a bad pre-processing parameter is said to be a parameter.

Oracles: the pipeline on the same inputs (its answer to the whole text, its own count of windows), the tokenizer's
own inputs (recorded), the order in which the tokenizer thread ran the requests' jobs."""

from __future__ import annotations

import asyncio
import json
import shutil
import threading
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
import httpx  # noqa: E402
from starlette.testclient import TestClient  # noqa: E402
from test_server_errors import error, until_in_flight  # noqa: E402
from test_server_tokenizer_bounds import record_jobs, record_lengths  # noqa: E402

import coulisse  # noqa: E402
from coulisse.interfaces.server import ServerSettings, create_app  # noqa: E402
from coulisse.interfaces.server.bounds import CHARS_PER_TOKEN, TURN_CHARACTERS  # noqa: E402

QUESTION = "Combien mesure la tour ?"
SENTENCE = "La tour Eiffel mesure 330 mètres. "
# No prefix of it is tokenized alone (tokenizer/prefix.py needs spaces), and its first tokens do not depend on its
# length, as those of "aaa..." do on its parity in CamemBERT's BPE
NO_SPACES = "abcdefghij"
FIXTURES = {"question-answering": "qa", "fill-mask": "fill", "token-classification": "ner",
            "zero-shot-classification": "zero_shot"}


@pytest.fixture(scope="module")
def qa(minilm_dir, tmp_path_factory):
    folder = tmp_path_factory.mktemp("qa") / "bert"
    shutil.copytree(Path(__file__).resolve().parents[1] / "fixtures" / "qa" / "bert", folder)
    shutil.copy(minilm_dir / "vocab.txt", folder / "vocab.txt")
    return coulisse.pipeline("question-answering", model=str(folder))


@pytest.fixture(scope="module")
def ner(task_factory):
    folder = task_factory.checkpoint("bert", "token-classification", model_max_length=64)
    return coulisse.pipeline("token-classification", model=str(folder))


@pytest.fixture(scope="module")
def fill(task_factory):
    return coulisse.pipeline("fill-mask", model=str(task_factory.checkpoint("bert", "masked-lm", model_max_length=64)))


@pytest.fixture(scope="module")
def zero_shot(nli_dir):
    return coulisse.pipeline("zero-shot-classification", model=str(nli_dir))


def limit_of(pipe) -> int:
    """TEI's bound: 250 characters per token the model takes."""
    return pipe.tokenizer.model_max_length * CHARS_PER_TOKEN


def same_answer(served: dict, expected: dict) -> None:
    assert {k: v for k, v in served.items() if k != "score"} == {k: v for k, v in expected.items() if k != "score"}
    assert served["score"] == pytest.approx(expected["score"], rel=1e-4, abs=1e-6)


# -- characters ------------------------------------------------------------------------------------------------


def test_a_long_text_is_cut_before_the_tokenizer_sees_it_as_on_predict(monkeypatch, classifier):
    """A text 10,000 characters past the bound, without spaces (1.9 M of them held the thread 1.5 s here): the
    tokenizer gets the bound's characters, and the scores are the pipeline's on the whole text."""
    limit = limit_of(classifier)
    text = NO_SPACES * ((limit + 10_000) // len(NO_SPACES)) + " mais la fin du film est superbe"
    seen = record_lengths(monkeypatch, classifier.tokenizer)
    with TestClient(create_app(classifier)) as c:
        served = c.post("/", json={"inputs": text, "parameters": {"function_to_apply": "none"}})
    assert served.status_code == 200, served.text
    assert seen and max(seen) <= limit, max(seen)
    monkeypatch.undo()
    whole = {r["label"]: r["score"] for r in classifier(text, function_to_apply="none", top_k=None)}
    assert {r["label"]: r["score"] for r in served.json()[0]} == pytest.approx(whole, abs=1e-5)


def test_a_zero_shot_premise_is_cut_and_a_hypothesis_past_the_bound_refused(monkeypatch, zero_shot):
    """The premise gives up tokens (truncation only_first): cut, to the pipeline's scores on the whole text. A
    hypothesis is never truncated: a label past the bound is refused by its name, before it is tokenized."""
    limit = limit_of(zero_shot)
    text = NO_SPACES * ((limit + 10_000) // len(NO_SPACES)) + " un film superbe"
    labels = ["cinéma", "politique"]
    seen = record_lengths(monkeypatch, zero_shot.tokenizer)
    with TestClient(create_app(zero_shot)) as c:
        served = c.post("/", json={"inputs": text, "parameters": {"candidate_labels": labels}})
        seen_before = list(seen)
        refused = c.post("/", json={"inputs": "Un film superbe", "parameters": {
            "candidate_labels": ["cinéma", "x" * (limit + 1)]}})
    assert served.status_code == 200, served.text
    assert max(seen_before) <= limit, max(seen_before)
    assert len(seen) == len(seen_before)  # the long label never reached the tokenizer
    message = error(refused, 422, "Validation")
    assert f"`parameters.candidate_labels[1]` must have less than {limit} characters" in message
    monkeypatch.undo()
    whole = zero_shot(text, candidate_labels=labels)
    assert {r["label"]: r["score"] for r in served.json()} == pytest.approx(
        dict(zip(whole["labels"], whole["scores"], strict=True)), abs=1e-5)


@pytest.mark.parametrize("task", ["question-answering", "fill-mask", "token-classification"])
def test_a_text_read_whole_past_teis_characters_is_refused_before_it_is_tokenized(task, request, monkeypatch):
    """Question answering reads its context whole, fill-mask its text (it does not truncate), token classification
    with `stride` its text: past the bound, a 422 as /tokenize answers, and the tokenizer never sees it."""
    pipe = request.getfixturevalue(FIXTURES[task])
    limit = limit_of(pipe)
    long = "mot " * (limit // 4 + 1)
    body, given = {
        "question-answering": ({"inputs": {"question": QUESTION, "context": long}}, len(QUESTION) + len(long)),
        "fill-mask": ({"inputs": long + pipe.tokenizer.special_tokens["mask"]},
                      len(long) + len(pipe.tokenizer.special_tokens["mask"])),
        "token-classification": ({"inputs": long, "parameters": {"stride": 8, "aggregation_strategy": "simple"}},
                                 len(long)),
    }[task]
    seen = record_lengths(monkeypatch, pipe.tokenizer)
    with TestClient(create_app(pipe)) as c:
        message = error(c.post("/", json=body), 422, "Validation")
    assert f"`inputs` must have less than {limit} characters. Given: {given}" in message
    assert seen == []


def test_zero_shot_pairs_take_turns_with_a_short_request(monkeypatch, zero_shot):
    """A premise of 18,000 characters and four labels: four (premise, hypothesis) pairs the tokenizer encodes, one
    job each; a short request sent while the first runs goes next. Before, the four were one job."""
    premise = "bon film " * 2000
    assert len(premise) > TURN_CHARACTERS
    jobs, first_long = record_jobs(monkeypatch, zero_shot.tokenizer)
    app = create_app(zero_shot)

    async def scenario():
        transport = httpx.ASGITransport(app=app)
        async with app.router.lifespan_context(app), httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            long = asyncio.ensure_future(c.post("/", json={"inputs": premise, "parameters": {
                "candidate_labels": ["cinéma", "sport", "cuisine", "politique"]}}, timeout=60))
            await asyncio.get_running_loop().run_in_executor(None, first_long.wait, 10)
            short = await c.post("/", json={"inputs": "Super film !", "parameters": {
                "candidate_labels": ["cinéma", "sport"]}}, timeout=60)
            return await long, short

    long, short = asyncio.run(scenario())
    assert long.status_code == 200 and short.status_code == 200, (long.text[:200], short.text[:200])
    assert jobs == ["long", "short", "long", "long", "long"], jobs


# -- model inputs ----------------------------------------------------------------------------------------------


def windowed(task: str, pipe, reps: int):
    """A request whose text the task reads in windows: (its body, the pipeline's call, the pipeline's windows)."""
    if task == "question-answering":
        inputs = {"question": QUESTION, "context": SENTENCE * reps}
        return {"inputs": inputs}, lambda: pipe(**inputs), len(pipe.preprocess(inputs))
    text = "Marie habite à Paris. " * reps
    parameters = {"stride": 8, "aggregation_strategy": "simple"}
    return ({"inputs": text, "parameters": parameters}, lambda: pipe(text, **parameters),
            len(pipe.preprocess(text, stride=8)))


@pytest.mark.parametrize("task, reps", [("question-answering", 250), ("token-classification", 40)])
def test_a_request_holds_at_most_max_client_batch_size_windows(task, reps, request):
    """Each window is one model input: as many as --max-client-batch-size is the pipeline's answer, one more is
    TEI's 422 for too large a batch, naming the count. Before, any number ran behind one permit."""
    pipe = request.getfixturevalue(FIXTURES[task])
    body, call, windows = windowed(task, pipe, reps)
    assert windows >= 4
    with TestClient(create_app(pipe, ServerSettings(max_client_batch_size=windows))) as c:
        served = c.post("/", json=body)
    with TestClient(create_app(pipe, ServerSettings(max_client_batch_size=windows - 1))) as c:
        refused = c.post("/", json=body)
    assert served.status_code == 200, served.text
    expected = call()
    for got, want in zip(*(x if isinstance(x, list) else [x] for x in (served.json(), expected)), strict=True):
        same_answer(got, want)
    message = error(refused, 422, "Validation")
    assert message.startswith("windows of the") and \
        f") {windows} > maximum allowed batch size {windows - 1} (--max-client-batch-size)" in message


def test_a_context_of_thousands_of_windows_is_refused_after_a_few_are_made(qa, monkeypatch):
    """doc_stride=370 of 384: windows 8 tokens apart, ~1,000 of them for a 30,000-character context (the
    pipeline's count). The server windows growing prefixes of it and refuses once one has more than 32: the
    tokenizer made a few dozen windows, not the thousand (4,660 for 128,000 characters: 1 s and 500 MB)."""
    parameters = {"max_seq_len": 384, "doc_stride": 370}
    inputs = {"question": QUESTION, "context": SENTENCE * 900}
    assert len(qa.preprocess(inputs, **parameters)) > 20 * 32
    made: list[int] = []
    encode_windows = qa.window_tokenizer.encode_windows

    def counting(*args, **kwargs):
        out = encode_windows(*args, **kwargs)
        made.append(sum(len(w) for w in out))
        return out

    monkeypatch.setattr(qa.window_tokenizer, "encode_windows", counting)
    with TestClient(create_app(qa)) as c:
        message = error(c.post("/", json={"inputs": inputs, "parameters": parameters}), 422, "Validation")
    assert "> maximum allowed batch size 32 (--max-client-batch-size)" in message, message
    assert "max_seq_len=384, doc_stride=370" in message and "characters" in message
    assert 32 < sum(made) <= 4 * 32, made


def test_every_window_holds_a_permit(qa, monkeypatch):
    """--max-concurrent-requests 16 (one kept for requests of one input): a question of 16 windows or more holds
    the other 15 while its windows run, so a question of several windows beside it is refused (429), as a batch
    of several texts would be. Before, each question held one permit, whatever its windows."""
    body, _, windows = windowed("question-answering", qa, 500)
    assert 16 <= windows <= 32
    small, _, small_windows = windowed("question-answering", qa, 100)
    assert small_windows >= 2
    release, entered = threading.Event(), threading.Event()
    forward = qa.forward

    def held(items, *args, **kwargs):
        entered.set()
        release.wait(10)
        return forward(items, *args, **kwargs)

    monkeypatch.setattr(qa, "forward", held)
    app = create_app(qa, ServerSettings(max_concurrent_requests=16, max_wait_ms=0))

    async def scenario():
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
                first = asyncio.create_task(c.post("/", json=body, timeout=60))
                await until_in_flight(app, 1)
                await asyncio.get_running_loop().run_in_executor(None, entered.wait, 10)
                refused = await c.post("/", json=small, timeout=60)
                release.set()
                return refused, await first

    refused, first = asyncio.run(scenario())
    assert first.status_code == 200, first.text
    message = error(refused, 429, "Overloaded")
    assert f"16 of 16 inputs in flight, the last 1 kept for requests of one input, this request has {small_windows}" \
        in message


# -- parameters ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("task, parameters, said", [
    ("question-answering", {"max_seq_len": 2000}, "max_seq_len=2000"),
    ("question-answering", {"max_seq_len": 64, "doc_stride": 100}, "doc_stride (100)"),
    ("zero-shot-classification", {"candidate_labels": ["cinéma"], "hypothesis_template": "Il parle de {}. \ud800"},
     "parameters.hypothesis_template is"),
    ("zero-shot-classification", {"candidate_labels": ["cinéma", "a\ud800"]}, "parameters.candidate_labels[1] is"),
    ("zero-shot-classification", {"candidate_labels": ["mot " * 600]}, "hypothesis"),
])
def test_a_bad_preprocessing_parameter_is_said_to_be_one(task, parameters, said, request):
    """A value the pipeline refuses only when it preprocesses (a window longer than the model's positions, a
    hypothesis that cannot fit) is an error in `parameters`, not in `inputs`."""
    pipe = request.getfixturevalue(FIXTURES[task])
    inputs = {"question": QUESTION, "context": SENTENCE} if task == "question-answering" else "Un film superbe"
    body = json.dumps({"inputs": inputs, "parameters": parameters}).encode()  # "\ud800" escaped: JSON carries it
    with TestClient(create_app(pipe)) as c:
        message = error(c.post("/", content=body, headers={"content-type": "application/json"}), 422, "Validation")
    assert message.startswith("Input validation error: parameters") and said in message, message


def test_post_processing_runs_off_the_event_loop(qa, monkeypatch):
    """Question answering's post-processing is quadratic in the answers kept (~220 ms for top_k=100 over 12
    windows): on the event loop, every other request and probe would wait for it. It runs on the tokenizer thread,
    with the same answer."""
    threads, real = [], qa.postprocess

    def recording(*args, **kwargs):
        threads.append(threading.current_thread().name)
        return real(*args, **kwargs)

    monkeypatch.setattr(qa, "postprocess", recording)
    body = {"inputs": {"question": QUESTION, "context": SENTENCE * 3}, "parameters": {"top_k": 2}}
    with TestClient(create_app(qa)) as c:
        answer = c.post("/", json=body)
    assert answer.status_code == 200, answer.text
    assert threads and all(name.startswith("coulisse-tokenize") for name in threads), threads
    monkeypatch.setattr(qa, "postprocess", real)
    expected = qa(question=QUESTION, context=SENTENCE * 3, top_k=2)
    served = answer.json()
    assert [{k: v for k, v in a.items() if k != "score"} for a in served] == [
        {k: v for k, v in a.items() if k != "score"} for a in expected]
    # the served score is float32's shortest text (docs/server.md): equal to float32 precision
    assert [a["score"] for a in served] == pytest.approx([a["score"] for a in expected], rel=1e-6)

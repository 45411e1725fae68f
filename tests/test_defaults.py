"""No model named: tf-allocine when it can be had, else the bundled model with one warning; a named model
never falls back. The last test is the README's first command on a machine without the Hub."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from factory import make_hf_cache

from coulisse import defaults, hub_fallback, pipeline
from coulisse.errors import ModelNotFoundError

COURSE = ["J'ai attendu un cours d'HuggingFace toute ma vie.", "Je déteste tellement ça !"]


def closed_port() -> int:
    """A local port nobody listens on: bound, then closed, so connections are refused at once."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def no_hub(tmp_path, monkeypatch):
    """An empty cache and a Hub endpoint that refuses connections."""
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.delenv("HF_HOME", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{closed_port()}")
    return tmp_path / "empty-cache"


@pytest.fixture
def stand_in_bundle(monkeypatch, tf_camembert_dir, tmp_path):
    """The TF fixture in place of the shipped model, so the selection logic is tested on its own; and a
    process that has not fallen back yet (the warning is said once per process), nor found the Hub silent (a
    cache folder of its own for the memo other processes read)."""
    monkeypatch.setenv("COULISSE_CACHE", str(tmp_path / "coulisse-cache"))
    monkeypatch.setattr(defaults, "BUNDLED_DIR", tf_camembert_dir)
    monkeypatch.setattr(hub_fallback, "_FELL_BACK", set())
    monkeypatch.setattr(hub_fallback, "_HUB_FAILED", {})
    return tf_camembert_dir


def test_bundled_name_resolves_to_the_package_folder():
    from coulisse.hub import resolve_model

    assert resolve_model(defaults.BUNDLED_MODEL) == defaults.BUNDLED_DIR
    assert defaults.BUNDLED_DIR.is_relative_to(Path(defaults.__file__).parent)


def test_no_model_and_no_hub_falls_back_with_one_warning(no_hub, stand_in_bundle, caplog):
    with caplog.at_level(logging.WARNING, logger="coulisse"):
        classifier = pipeline("sentiment-analysis")
    assert classifier.checkpoint.name == defaults.BUNDLED_MODEL
    assert classifier.checkpoint.directory == stand_in_bundle
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1
    line = warnings[0].getMessage()
    assert "\n" not in line
    for part in ("tblard/tf-allocine", defaults.BUNDLED_MODEL, "97.4 %", "download"):
        assert part in line, (part, line)
    assert [r["label"] for r in classifier(COURSE)] == [r["label"] for r in
                                                         pipeline("sentiment-analysis", model=stand_in_bundle)(COURSE)]


def test_the_fallback_is_a_warning_once_per_process(no_hub, stand_in_bundle, caplog, monkeypatch):
    """A notebook or a loop that builds the pipeline again falls back again, said at INFO after the first
    warning; a Hub that failed is asked again after HUB_RETRY_AFTER."""
    monkeypatch.setattr(hub_fallback, "HUB_RETRY_AFTER", 0.0)
    with caplog.at_level(logging.INFO, logger="coulisse"):
        for _ in range(3):
            assert pipeline("sentiment-analysis").checkpoint.name == defaults.BUNDLED_MODEL
    said = [r for r in caplog.records if "could not be loaded" in r.getMessage()]
    assert [r.levelno for r in said] == [logging.WARNING, logging.INFO, logging.INFO]
    assert "HF_HUB_OFFLINE=1 skips asking the Hub" in said[0].getMessage()


@pytest.fixture
def silent_hub(tmp_path, monkeypatch):
    """A Hub endpoint that accepts connections and never answers (a firewall dropping packets, a dead proxy):
    the list of connections it got."""
    import threading

    import huggingface_hub.constants

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    held: list[socket.socket] = []

    def accept():
        while True:
            try:
                held.append(server.accept()[0])
            except OSError:  # closed below
                return

    threading.Thread(target=accept, daemon=True).start()
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    endpoint = f"http://127.0.0.1:{server.getsockname()[1]}"
    monkeypatch.setenv("HF_ENDPOINT", endpoint)
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", endpoint)  # both read when huggingface_hub loads
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_DOWNLOAD_TIMEOUT", 1.5)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_ETAG_TIMEOUT", 1.5)
    yield held
    server.close()
    for conn in held:
        conn.close()


def test_a_silent_hub_is_said_while_awaited_and_not_asked_again_at_once(silent_hub, stand_in_bundle, caplog,
                                                                        monkeypatch):
    """The wait is said before the fallback (a silent minute looks like a hang), and the next pipeline of the
    process does not wait again; after HUB_RETRY_AFTER, the Hub is asked again."""
    monkeypatch.setattr(hub_fallback, "HUB_NOTICE_AFTER", 0.2)
    with caplog.at_level(logging.INFO, logger="coulisse"):
        assert pipeline("sentiment-analysis").checkpoint.name == defaults.BUNDLED_MODEL
        messages = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
        assert messages[0].startswith("waiting for the Hugging Face Hub to answer for tblard/tf-allocine"), messages
        assert "HF_HUB_OFFLINE=1 skips the Hub" in messages[0]
        assert "could not be loaded" in messages[1] and len(messages) == 2, messages
        asked = len(silent_hub)
        assert asked >= 1
        caplog.clear()
        assert pipeline("sentiment-analysis").checkpoint.name == defaults.BUNDLED_MODEL
        assert len(silent_hub) == asked  # no connection: nothing waited for (a timer would flake under load)
        assert [r.levelno for r in caplog.records if "failed to answer" in r.getMessage()] == [logging.INFO]
        assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
        monkeypatch.setattr(hub_fallback, "HUB_RETRY_AFTER", 0.0)
        assert pipeline("sentiment-analysis").checkpoint.name == defaults.BUNDLED_MODEL
        assert len(silent_hub) > asked


def test_offline_the_fallback_says_how_to_silence_it(tmp_path, monkeypatch, stand_in_bundle, caplog):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with caplog.at_level(logging.WARNING, logger="coulisse"):
        assert pipeline("sentiment-analysis").checkpoint.name == defaults.BUNDLED_MODEL
    (line,) = [r.getMessage() for r in caplog.records]
    assert line.startswith("tblard/tf-allocine is not in the Hugging Face cache and HF_HUB_OFFLINE is set: using "
                           f"the bundled {defaults.BUNDLED_MODEL}"), line
    assert f"COULISSE_MODEL={defaults.BUNDLED_MODEL}" in line
    assert f"(in Python: model={defaults.BUNDLED_MODEL!r})" in line  # a notebook's spelling of the same


def test_no_model_offline_falls_back(tmp_path, monkeypatch, stand_in_bundle):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert pipeline("text-classification").checkpoint.name == defaults.BUNDLED_MODEL


def test_cached_tf_allocine_wins_without_warning(tmp_path, monkeypatch, tf_camembert_dir, stand_in_bundle, caplog):
    cache = tmp_path / "hf" / "hub"
    snapshot = make_hf_cache(cache, tf_camembert_dir)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{closed_port()}")
    with caplog.at_level(logging.WARNING, logger="coulisse"):
        classifier = pipeline("sentiment-analysis")
    assert classifier.checkpoint.name == defaults.DEFAULT_MODEL
    assert classifier.checkpoint.directory == snapshot
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_a_named_model_never_falls_back(no_hub, stand_in_bundle):
    with pytest.raises(ModelNotFoundError, match="tblard/tf-allocine"):
        pipeline("sentiment-analysis", model="tblard/tf-allocine")


def test_tasks_without_a_default_still_ask_for_a_model(no_hub):
    from coulisse.errors import InputError

    with pytest.raises(InputError, match="no default model"):
        pipeline("feature-extraction")


def coulisse_script() -> str:
    script = Path(sys.executable).parent / "coulisse"
    if not script.is_file():
        pytest.skip(f"no installed console script beside {sys.executable} (pip install -e .)")
    return str(script)


def test_readme_first_command_runs_offline_on_the_bundled_model(tmp_path):
    """The README's first command, as a newcomer without the Hub runs it: the installed console script,
    an empty cache, the Hub endpoint on a closed port. Two labels, one notice line, exit 0."""
    assert (defaults.BUNDLED_DIR / "model.safetensors").is_file(), "the bundled model is not in the package"
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env.update(HF_HOME=str(tmp_path / "hf"), HF_ENDPOINT=f"http://127.0.0.1:{closed_port()}")
    run = subprocess.run([coulisse_script(), "classify", *COURSE], capture_output=True, text=True, env=env,
                         timeout=120, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    stderr = run.stderr.strip().splitlines()
    assert len(stderr) == 1 and "Traceback" not in run.stderr, run.stderr
    assert defaults.BUNDLED_MODEL in stderr[0] and "tblard/tf-allocine" in stderr[0]
    lines = run.stdout.strip().splitlines()
    assert len(lines) == 2
    labels = [line.split()[0] for line in lines]
    expected = [r["label"] for r in pipeline("sentiment-analysis", model=defaults.BUNDLED_MODEL)(COURSE)]
    assert labels == expected
    assert set(labels) <= {"POSITIVE", "NEGATIVE"}


def test_the_notice_quotes_the_cards_accuracy():
    """The fallback notice states the bundled model's held-out accuracy: the figure of its model card."""
    import re

    card = (defaults.BUNDLED_DIR / "README.md").read_text(encoding="utf-8")
    found = re.search(r"\| this model \(through coulisse\) \| [\d.]+ % \((\d+)/(\d+)\)", card)
    assert found, "the model card states no held-out accuracy"
    assert round(int(found.group(1)) / int(found.group(2)), 3) == defaults.BUNDLED_ACCURACY


def test_the_fallback_notice_keeps_the_reason_and_the_cache_whole():
    """A timeout's reason holds its own "; ..." advice inside the parentheses: the notice's first sentence
    goes on past it, to the cache that was searched."""
    from coulisse.hub_fallback import _first_sentence

    message = ("could not get 'a/b' from the Hugging Face Hub at https://hf.co (ReadTimeout: timed out; a slow "
               "link needs a larger HF_HUB_DOWNLOAD_TIMEOUT / HF_HUB_ETAG_TIMEOUT (seconds)), and it is not in the "
               "cache /c. Fixes: download it.")
    assert _first_sentence(message) == message.split(". Fixes")[0]
    assert _first_sentence("no such model. Check the id; or pass a folder.") == "no such model"
    assert _first_sentence("offline; set HF_HUB_OFFLINE=0") == "offline"
    assert _first_sentence("one sentence.") == "one sentence"


def test_the_next_process_does_not_wait_for_a_hub_that_was_silent(silent_hub, stand_in_bundle, caplog):
    """Each `coulisse classify` is a new process: one that finds the Hub silent leaves a memo (per endpoint, in the
    cache folder), and the next run within HUB_RETRY_AFTER uses the bundled model at once, saying so."""
    assert pipeline("sentiment-analysis").checkpoint.name == defaults.BUNDLED_MODEL
    asked = len(silent_hub)
    run = subprocess.run([sys.executable, "-c", "from coulisse import pipeline; "
                          "print(pipeline('sentiment-analysis').checkpoint.name)"],
                         capture_output=True, text=True, timeout=120, env=os.environ.copy())
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == defaults.BUNDLED_MODEL
    assert len(silent_hub) == asked  # not asked again
    (line,) = [line for line in run.stderr.splitlines() if "tblard/tf-allocine" in line]
    assert "failed to answer" in line and defaults.BUNDLED_MODEL in line and "--model tblard/tf-allocine" in line


def test_a_memo_for_another_endpoint_or_an_odd_memo_is_no_memo(tmp_path, monkeypatch):
    import json
    import time

    monkeypatch.setenv("COULISSE_CACHE", str(tmp_path))
    memo = tmp_path / hub_fallback.UNANSWERED_FILE
    here, name = hub_fallback._endpoint(), "tblard/tf-allocine"
    for text in (json.dumps({"http://elsewhere": {name: time.time()}}), "not json", "[1, 2]",
                 json.dumps({here: {name: True}}), json.dumps({here: [name]}),
                 json.dumps({here: {name: time.time() + 3600}})):  # a clock set back
        memo.write_text(text)
        assert hub_fallback._unanswered_ago(name) is None, text
    memo.write_text(json.dumps({here: {name: time.time() - 5}}))
    assert 4 < hub_fallback._unanswered_ago(name) < 60


@pytest.mark.parametrize("kind", ["fifo", "link to /dev/zero", "huge"])
def test_a_memo_that_is_no_small_regular_file_is_no_memo_and_never_blocks(tmp_path, monkeypatch, kind):
    """The memo sits in a cache folder others may write: a FIFO there blocked every run that used the default
    model, a link to /dev/zero read without end (audit 39, review)."""
    from fifo import fifo_at

    monkeypatch.setenv("COULISSE_CACHE", str(tmp_path))
    memo = tmp_path / hub_fallback.UNANSWERED_FILE
    if kind == "fifo":
        with fifo_at(memo):
            assert hub_fallback._unanswered_ago("tblard/tf-allocine") is None
            hub_fallback._remember_unanswered("tblard/tf-allocine")  # replaces it, never writes through it
        assert memo.is_file() and hub_fallback._unanswered_ago("tblard/tf-allocine") is not None
        return
    if kind == "huge":
        memo.write_text('{"x": "' + "y" * hub_fallback.MEMO_BYTES + '"}')
    else:
        memo.symlink_to("/dev/zero")
    assert hub_fallback._unanswered_ago("tblard/tf-allocine") is None


def test_the_memo_is_read_where_os_has_no_o_nonblock(tmp_path, monkeypatch):
    """Windows has no os.O_NONBLOCK (nor O_NOFOLLOW): reading the memo raised AttributeError in the README's first
    command, `pipeline("sentiment-analysis")` with the default model (audit 44)."""
    monkeypatch.setenv("COULISSE_CACHE", str(tmp_path))
    hub_fallback._remember_unanswered("tblard/tf-allocine")
    monkeypatch.delattr(os, "O_NONBLOCK")
    monkeypatch.delattr(os, "O_NOFOLLOW")
    assert 0 <= hub_fallback._unanswered_ago("tblard/tf-allocine") < 60

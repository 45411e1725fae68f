"""When the Hub cannot be reached or understood: DNS failure, refused connection, timeout, HTTP 5xx, a
malformed answer. The real huggingface_hub code path runs against local servers (127.0.0.1 only); the
installed `coulisse` command must print one line naming the model, the cache searched and the fixes, and
exit 1. "No such model" stays a plain ModelNotFoundError, so a caller can tell the two apart."""

from __future__ import annotations

import http.server
import json
import os
import socket
import socketserver
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from importlib.metadata import distribution
from pathlib import Path

import pytest

from coulisse import hub_download
from coulisse.errors import HubUnreachableError, ModelNotFoundError
from coulisse.hub import resolve_model
from coulisse.hub_download import download_hint

MODEL = "some-org/some-model"
Answer = Callable[[http.server.BaseHTTPRequestHandler, threading.Event], None]


def reply(status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> Answer:
    def answer(handler, release):
        handler.send_response(status)
        for name, value in (headers or {}).items():
            handler.send_header(name, value)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        if handler.command != "HEAD":
            handler.wfile.write(body)

    return answer


def hang(handler, release) -> None:
    release.wait(60)  # accept, then never answer; released when the test ends


def model_api_then(file_answer: Answer) -> Answer:
    """The model API answers (config + weights listed); every file request gets `file_answer`."""
    listing = {"id": MODEL, "sha": "0" * 40, "siblings": [{"rfilename": "config.json"},
                                                          {"rfilename": "model.safetensors"}]}
    api = reply(200, json.dumps(listing).encode(), {"Content-Type": "application/json"})

    def answer(handler, release):
        (api if handler.path.startswith("/api/models/") else file_answer)(handler, release)

    return answer


@contextmanager
def serving(server: socketserver.BaseServer, release: threading.Event | None = None) -> Iterator[str]:
    """Run `server` (bound to 127.0.0.1, a free port) in a thread; on exit, release hanging handlers and stop."""
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        if release is not None:
            release.set()
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@contextmanager
def local_hub(answer: Answer) -> Iterator[str]:
    """An HTTP server that answers every request with `answer`."""
    release = threading.Event()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            answer(self, release)

        do_HEAD = do_GET

        def log_message(self, *args):
            pass

    with serving(http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler), release) as address:
        yield f"http://{address}"


@contextmanager
def not_tls() -> Iterator[str]:
    """An https:// endpoint whose server answers the TLS handshake in plain text: the handshake fails at once."""

    class Handler(socketserver.BaseRequestHandler):
        def handle(self):
            self.request.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")

    with serving(socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)) as address:
        yield f"https://{address}"


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens once the socket closes


# -- the installed command, one process per failure ---------------------------------------------------------


def coulisse_command() -> list[str]:
    script = Path(sys.executable).parent / "coulisse"
    if not script.is_file():
        pytest.skip(f"no installed console script beside {sys.executable} (pip install -e .)")
    return [str(script)]


def classify(endpoint: str, tmp_path: Path) -> tuple[subprocess.CompletedProcess, Path]:
    cache = tmp_path / "hf" / "hub"
    env = {k: v for k, v in os.environ.items()
           if k not in {"HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "COULISSE_MODEL", "HF_TOKEN"}}
    # huggingface_hub reads both timeouts (whole seconds) when it is imported.
    env.update(HF_HOME=str(tmp_path / "hf"), HF_HUB_CACHE=str(cache), HF_ENDPOINT=endpoint,
               HF_HUB_ETAG_TIMEOUT="1", HF_HUB_DOWNLOAD_TIMEOUT="1")
    result = subprocess.run([*coulisse_command(), "classify", "--model", MODEL, "Bonjour"], env=env,
                            capture_output=True, text=True, timeout=120)
    return result, cache


def assert_one_line_unreachable(result: subprocess.CompletedProcess, cache: Path, endpoint: str,
                                reason: str) -> None:
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    line = lines[0]
    assert line.startswith("Error: HubUnreachableError: "), line
    # classify is French sentiment: the message also names the bundled model, which runs offline
    for word in (repr(MODEL), str(cache), endpoint, reason, download_hint(MODEL), "HF_HUB_OFFLINE=1",
                 "local folder", "Offline, the bundled French sentiment model runs: --model coulisse/mini-allocine"):
        assert word in line, (word, line)


FAILURES = {
    # name: (how the server answers, or None for no server; a word the reason must carry)
    "refused": (None, "Connect"),
    "timeout": (hang, "Timeout"),
    "http-500": (reply(500, b"oops"), "HTTP 500"),
    "garbage": (reply(200, b"<html>not json at all"), "malformed answer"),
    "files-404": (model_api_then(reply(404, b"no")), "HTTP 404"),  # a mirror serving the API, not the files
}


@pytest.mark.parametrize("name", list(FAILURES))
def test_an_unreachable_hub_is_one_line(name, tmp_path):
    answer, reason = FAILURES[name]
    if answer is None:
        endpoint = f"http://127.0.0.1:{closed_port()}"
        result, cache = classify(endpoint, tmp_path)
    else:
        with local_hub(answer) as endpoint:
            result, cache = classify(endpoint, tmp_path)
    assert_one_line_unreachable(result, cache, endpoint, reason)


def test_a_tls_failure_is_one_line(tmp_path):
    with not_tls() as endpoint:
        result, cache = classify(endpoint, tmp_path)
    assert_one_line_unreachable(result, cache, endpoint, "SSL")


def test_a_dns_failure_is_one_line(tmp_path):
    endpoint = "http://nonexistent.invalid"  # .invalid never resolves (RFC 6761)
    result, cache = classify(endpoint, tmp_path)
    assert_one_line_unreachable(result, cache, endpoint, "Connect")


@pytest.mark.slow
def test_retried_file_errors_end_in_one_line(tmp_path):
    """huggingface_hub retries a 5xx file request five times and logs each retry: the notices must not
    precede the error line at the default verbosity. `Retry-After: 0` makes huggingface_hub wait 1 s between
    tries instead of its 1+2+4+8+8 s back-off: the same five retries, each logged (the 503, then the wait),
    in 5 s instead of 23 s; the server counts them."""
    busy, tries = reply(503, b"busy", {"Retry-After": "0"}), []

    def counted(handler, release):
        tries.append(handler.path)
        busy(handler, release)

    with local_hub(model_api_then(counted)) as endpoint:
        result, cache = classify(endpoint, tmp_path)
    assert_one_line_unreachable(result, cache, endpoint, "HTTP 503")
    assert len(tries) >= 6, tries  # the first try and five retries


# -- the same code path in this process: "no such model" versus "Hub unreachable" -------------------------


@pytest.fixture
def online(tmp_path, monkeypatch):
    """The Hub at `point(url)`, an empty cache, 1 s timeouts."""
    from huggingface_hub import constants, file_download, hf_api

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    # huggingface_hub read HF_HUB_OFFLINE when first imported, maybe during a test that set it.
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_DOWNLOAD_TIMEOUT", 1)
    monkeypatch.setattr(constants, "HF_HUB_ETAG_TIMEOUT", 1)

    def point(url: str) -> None:
        # huggingface_hub 0.x copies ENDPOINT into the modules that use it when they are imported.
        for module in (constants, hf_api, file_download):
            if hasattr(module, "ENDPOINT"):
                monkeypatch.setattr(module, "ENDPOINT", url)

    return point


def test_no_such_model_is_not_an_unreachable_hub(online):
    body = json.dumps({"error": "Repository not found"}).encode()
    with local_hub(reply(404, body, {"X-Error-Code": "RepoNotFound"})) as endpoint:
        online(endpoint)
        with pytest.raises(ModelNotFoundError, match=f"no model '{MODEL}'") as info:
            resolve_model(MODEL)
    assert not isinstance(info.value, HubUnreachableError)


@pytest.mark.parametrize("body", [b"[]", b"{}", b'{"id": "x", "siblings": "abc"}', b"\xff\xfe"])
def test_json_that_is_not_a_model_listing_is_a_malformed_answer(online, body):
    with local_hub(reply(200, body, {"Content-Type": "application/json"})) as endpoint:
        online(endpoint)
        with pytest.raises(HubUnreachableError, match="malformed answer") as info:
            resolve_model(MODEL)
    assert "\n" not in str(info.value)


def test_in_python_the_traceback_is_the_error_alone_and_the_chain_is_in_the_debug_log(online, caplog):
    """In a notebook, `pipeline(...)` without the Hub shows coulisse's error, not the ~60 lines of
    huggingface_hub -> httpx -> httpcore -> socket frames it replaced; the chain stays in the debug log.
    Both sorts: the Hub unreachable (a refused port) and the Hub answering that the model does not exist."""
    import logging
    import traceback

    from coulisse import pipeline

    caplog.set_level(logging.DEBUG, logger="coulisse.hub")
    online(f"http://127.0.0.1:{closed_port()}")
    with pytest.raises(HubUnreachableError) as unreachable:
        pipeline("sentiment-analysis", model=MODEL)
    body = json.dumps({"error": "Repository not found"}).encode()
    with local_hub(reply(404, body, {"X-Error-Code": "RepoNotFound"})) as endpoint:
        online(endpoint)
        with pytest.raises(ModelNotFoundError) as missing:
            pipeline("sentiment-analysis", model=MODEL)
    for info in (unreachable, missing):
        shown = "".join(traceback.format_exception(info.value))
        assert shown.count("Traceback (most recent call last)") == 1, shown
        assert "direct cause" not in shown and "During handling" not in shown, shown
    assert "Offline, the bundled French sentiment model runs" in str(unreachable.value)
    chains = [r.exc_info[1] for r in caplog.records if r.exc_info]
    assert any("Connect" in type(e).__name__ or "Connect" in type(e.__cause__ or e).__name__ for e in chains), \
        [type(e) for e in chains]
    assert any(type(e).__name__ == "RepositoryNotFoundError" for e in chains), [type(e) for e in chains]


def test_unreachable_is_a_model_not_found_error():
    assert issubclass(HubUnreachableError, ModelNotFoundError)


# -- the fix the message suggests --------------------------------------------------------------------------


def test_the_hint_names_the_command_the_installed_huggingface_hub_provides():
    scripts = {e.name for e in distribution("huggingface_hub").entry_points if e.group == "console_scripts"}
    command = "hf" if "hf" in scripts else "huggingface-cli"
    assert download_hint(MODEL) == f"`{command} download {MODEL}` while online"


@pytest.mark.parametrize(("scripts", "command"), [({"hf", "tiny-agents"}, "hf"), ({"huggingface-cli"},
                                                   "huggingface-cli"), (set(), "huggingface-cli")])
def test_the_hint_follows_the_console_scripts(monkeypatch, scripts, command):
    monkeypatch.setattr(hub_download, "_hub_commands", lambda: scripts)
    assert download_hint(MODEL) == f"`{command} download {MODEL}` while online"
    assert download_hint(MODEL, "v2") == f"`{command} download {MODEL} --revision v2` while online"


def test_offline_with_an_empty_cache_suggests_the_installed_command(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(HubUnreachableError) as info:
        resolve_model(MODEL)
    message = str(info.value)
    assert download_hint(MODEL) in message and str(tmp_path / "empty") in message
    if "hf" in hub_download._hub_commands():
        assert "huggingface-cli" not in message


def test_a_one_part_name_that_is_no_folder_here_says_so_with_the_closest_folder(tmp_path, monkeypatch):
    """`-m my-checkpoint` for the folder ./my_checkpoint: a Hub id as far as the name goes, but the error also
    says that no such folder is here, and names the close one; `owner/name` is a Hub id alone."""
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty"))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "my_checkpoint").mkdir()
    (tmp_path / "other").mkdir()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(HubUnreachableError) as offline:
        resolve_model("my-checkpoint")
    assert str(offline.value).endswith(f" No folder 'my-checkpoint' is here ({tmp_path}) either; did you mean "
                                       "./my_checkpoint?")
    with pytest.raises(HubUnreachableError) as far:
        resolve_model("zzz")
    assert str(far.value).endswith(f" No folder 'zzz' is here ({tmp_path}) either.")
    with pytest.raises(HubUnreachableError) as two_parts:
        resolve_model("someone/my-checkpoint")
    assert "No folder" not in str(two_parts.value)
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)  # read when huggingface_hub loads
    monkeypatch.setattr("huggingface_hub.constants.ENDPOINT", f"http://127.0.0.1:{closed_port()}")
    with pytest.raises(HubUnreachableError) as online:
        resolve_model("my-checkpoint")
    assert "ConnectError" in str(online.value) and str(online.value).endswith("did you mean ./my_checkpoint?")

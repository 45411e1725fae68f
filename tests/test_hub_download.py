"""Downloads through the real huggingface_hub code path, from a local Hub that speaks its protocol (the model API's
listing and commit, `resolve/<revision>/<file>` with `X-Repo-Commit` and `ETag`) for one repo read from a folder:
which files are fetched and from which commit, a snapshot left partial by a failed download, a file shorter than
the Hub said, the token each request carries, sentence-transformers' settings and module files (audit 41)."""

from __future__ import annotations

import hashlib
import http.server
import json
import logging
import os
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
import torch
from task_factory import sparse_encoder_folder
from test_hub_network import coulisse_command, online, reply, serving  # noqa: F401  (online: a fixture)

from coulisse import SparseEncoder, pipeline
from coulisse.errors import HubUnreachableError, ModelLoadError
from coulisse.hub import resolve_model
from coulisse.hub_cache import VOCABULARY_FILES
from coulisse.hub_download import TOKENIZER_FILES
from coulisse.tokenizer.build import SPM_FILES

REPO = "some-org/some-model"
COMMIT = "c0ffee" + "0" * 34


class Hub:
    """One repo at one commit, its files read from `folder`; `failing` files answer 500, `short` ones send half
    their bytes (with a Content-Length that says so, after a HEAD that gave the whole size). Every request is
    kept: (method, path, the Authorization header)."""

    def __init__(self, folder: Path):
        self.folder, self.failing, self.short, self.requests = folder, set(), set(), []
        self.cut: set[str] = set()  # files whose GET says their whole length, sends half and closes

    def files(self) -> list[str]:
        return sorted(str(p.relative_to(self.folder)) for p in self.folder.rglob("*") if p.is_file())

    def answer(self, handler: http.server.BaseHTTPRequestHandler) -> None:
        path = unquote(urlsplit(handler.path).path)
        self.requests.append((handler.command, path, handler.headers.get("Authorization")))
        if path.startswith(f"/api/models/{REPO}"):
            listing = {"id": REPO, "sha": COMMIT, "siblings": [{"rfilename": f} for f in self.files()]}
            return self.send(handler, 200, json.dumps(listing).encode(), {"Content-Type": "application/json"})
        prefix = f"/{REPO}/resolve/"
        revision, _, name = path.removeprefix(prefix).partition("/")
        file = self.folder / name
        if not path.startswith(prefix) or revision not in ("main", COMMIT) or not file.is_file():
            return self.send(handler, 404, b"not found", {"X-Error-Code": "EntryNotFound"})
        if name in self.failing:  # Retry-After: 0, so huggingface_hub's five retries wait 1 s each, not 1 to 8 s
            return self.send(handler, 500, b"busy", {"Retry-After": "0"})
        data = file.read_bytes()
        headers = {"X-Repo-Commit": COMMIT, "ETag": f'"{hashlib.sha1(data).hexdigest()}"'}
        if handler.command == "GET" and name in self.short:
            data = data[: len(data) // 2]
        if handler.command == "GET" and name in self.cut:
            handler.send_response(200)
            handler.send_header("Content-Length", str(len(data)))
            handler.end_headers()
            handler.wfile.write(data[: len(data) // 2])
            handler.close_connection = True
            return
        self.send(handler, 200, data, headers)

    @staticmethod
    def send(handler, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        reply(status, body, headers)(handler, None)  # test_hub_network's answer, sent now

    def resolved(self) -> list[str]:
        """The files asked for, each once, as `<revision>/<file>`."""
        return sorted({p.removeprefix(f"/{REPO}/resolve/") for m, p, _ in self.requests if "/resolve/" in p})


@contextmanager
def hub_serving(hub: Hub, monkeypatch) -> Iterator[str]:
    """`hub` on a local port, where huggingface_hub's file URLs lead too (their template is built from the
    endpoint when huggingface_hub is imported)."""
    from huggingface_hub import constants

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            hub.answer(self)

        do_HEAD = do_GET

        def log_message(self, *args):
            pass

    with serving(http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler), threading.Event()) as address:
        monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE",
                            f"http://{address}/{{repo_id}}/resolve/{{revision}}/{{filename}}")
        yield f"http://{address}"


@pytest.fixture
def classifier_repo(factory, tmp_path) -> Path:
    """A repo with both weight formats: only the safetensors are fetched."""
    import shutil

    folder = tmp_path / "repo"
    shutil.copytree(factory.checkpoint("bert"), folder)
    shutil.copy(factory.checkpoint("bert", "bin") / "pytorch_model.bin", folder)
    return folder


def test_the_files_come_from_the_commit_the_listing_named(online, classifier_repo, monkeypatch):  # noqa: F811
    """Each file is asked for at the commit (a push during the download cannot mix two), and refs/main is
    written, so the next load, and one without the network, find the snapshot; the second load asks nothing."""
    hub = Hub(classifier_repo)
    with hub_serving(hub, monkeypatch) as endpoint:
        online(endpoint)
        folder = resolve_model(REPO)
        asked = hub.resolved()
        assert asked and all(a.startswith(f"{COMMIT}/") for a in asked), asked
        assert f"{COMMIT}/model.safetensors" in asked and f"{COMMIT}/pytorch_model.bin" not in asked
        assert folder.name == COMMIT and (folder.parent.parent / "refs" / "main").read_text() == COMMIT
        before = len(hub.requests)
        assert resolve_model(REPO) == folder and len(hub.requests) == before


def test_a_partial_snapshot_is_completed_once_the_hub_answers(online, classifier_repo, monkeypatch,  # noqa: F811
                                                               caplog):
    """The config and tokenizer files came, the weights did not. coulisse's own download writes the revision's
    ref only once every file is there; transformers' AutoConfig writes it with config.json alone: such a
    snapshot was taken as the model, and every later load failed without asking the Hub (audit 41). Offline it
    is loaded as it is, and the load names what it lacks; online the missing file is fetched, and while the Hub
    fails the snapshot is loaded as it is, with a warning saying what it lacks."""
    hub = Hub(classifier_repo)
    hub.failing.add("model.safetensors")
    with hub_serving(hub, monkeypatch) as endpoint:
        online(endpoint)
        with pytest.raises(HubUnreachableError, match="HTTP 500"):
            resolve_model(REPO)
        refs = Path(os.environ["HF_HUB_CACHE"]) / f"models--{REPO.replace('/', '--')}" / "refs"
        assert not (refs / "main").exists()  # the snapshot is not this revision's yet
        refs.mkdir(parents=True, exist_ok=True)
        (refs / "main").write_text(COMMIT)  # what another library's partial download leaves
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
        with pytest.raises(ModelLoadError, match="no usable weight file"):
            pipeline("text-classification", model=REPO)
        monkeypatch.delenv("HF_HUB_OFFLINE")
        with caplog.at_level(logging.WARNING, logger="coulisse.hub"):
            assert resolve_model(REPO).name == COMMIT
        (said,) = [r.getMessage() for r in caplog.records if r.name == "coulisse.hub"]
        assert "could not be reached" in said and "(weights)" in said
        hub.failing.clear()
        before = len(hub.requests)
        scores = pipeline("text-classification", model=REPO)(["Un film superbe."], top_k=None)
        assert len(hub.requests) > before and f"{COMMIT}/model.safetensors" in hub.resolved()
    local = pipeline("text-classification", model=classifier_repo)(["Un film superbe."], top_k=None)
    assert scores == local


def test_a_file_shorter_than_the_hub_said_is_a_download_cut_short(online, classifier_repo,  # noqa: F811
                                                                   monkeypatch):
    """huggingface_hub's size check raises a bare OSError: not a disk to check, a download to run again."""
    hub = Hub(classifier_repo)
    hub.short.add("model.safetensors")
    with hub_serving(hub, monkeypatch) as endpoint:
        online(endpoint)
        with pytest.raises(HubUnreachableError, match="was cut short") as info:
            resolve_model(REPO)
    assert "free space" not in str(info.value) and "\n" not in str(info.value)


@pytest.mark.slow
def test_a_connection_cut_mid_file_is_one_line_from_the_command(classifier_repo, monkeypatch, tmp_path):
    """huggingface_hub resumes a cut download five times, logging each try through its own handler and, as a
    warning, through the command's: 24 lines before the error (audit 41). One line, at the default verbosity."""
    hub = Hub(classifier_repo)
    hub.cut.add("model.safetensors")
    env = {k: v for k, v in os.environ.items() if k not in {"HF_HUB_OFFLINE", "COULISSE_MODEL", "HF_TOKEN"}}
    with hub_serving(hub, monkeypatch) as endpoint:
        env.update(HF_HOME=str(tmp_path / "hf"), HF_ENDPOINT=endpoint, HF_HUB_DOWNLOAD_TIMEOUT="2")
        result = subprocess.run([*coulisse_command(), "classify", "-m", REPO, "Bonjour"], env=env,
                                capture_output=True, text=True, timeout=300)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1 and len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: HubUnreachableError: ") and REPO in lines[0]
    assert sum(p.endswith("model.safetensors") for _, p, _ in hub.requests) > 2  # it did resume, quietly


def test_the_token_given_is_the_token_sent(online, classifier_repo, monkeypatch):  # noqa: F811
    """pipeline(token="...") sends that token (it was ignored, with a warning); token=False sends none, even with
    HF_TOKEN set; no token sends HF_TOKEN's, as huggingface_hub does."""
    monkeypatch.setenv("HF_TOKEN", "hf_from_the_environment")
    cases = (("hf_given", "Bearer hf_given"), (False, None), (None, "Bearer hf_from_the_environment"))
    for i, (token, sent) in enumerate(cases):
        monkeypatch.setenv("HF_HUB_CACHE", str(classifier_repo.parent / f"cache-{i}"))  # each downloads
        hub = Hub(classifier_repo)
        with hub_serving(hub, monkeypatch) as endpoint:
            online(endpoint)
            monkeypatch.setenv("HF_HUB_CACHE", str(classifier_repo.parent / f"cache-{i}"))
            pipeline("text-classification", model=REPO, token=token)
        assert hub.requests and {auth for _, _, auth in hub.requests} == {sent}, (token, hub.requests[:3])


def test_a_sentence_transformers_repo_brings_its_settings_and_module_files(online, task_factory,  # noqa: F811
                                                                         tmp_path, monkeypatch):
    """config_sentence_transformers.json (prompts, max_active_dims) and 1_SpladePooling/config.json (sum,
    log1p_relu) were not downloaded: a Hub id ran max pooling, relu, no prompt and every weight (audit 41)."""
    folder, theirs = sparse_encoder_folder(task_factory, "camembert", tmp_path, strategy="sum",
                                           activation="log1p_relu", prompts={"query": "requête : "},
                                           default_prompt_name="query", max_active_dims=6)
    hub = Hub(folder)
    texts = ["Le chat dort sur le canapé.", "Un film long, lent, bavard."]
    with hub_serving(hub, monkeypatch) as endpoint:
        online(endpoint)
        ours = SparseEncoder(REPO)
    assert {"config_sentence_transformers.json", "1_SpladePooling/config.json"} <= {
        a.split("/", 1)[1] for a in hub.resolved()}
    # A snapshot an earlier coulisse left without the pooling module's settings is completed (they decide the
    # weights: sum or max), not taken as it is.
    settings = ours.pipeline.checkpoint.directory / "1_SpladePooling" / "config.json"
    settings.unlink()
    with hub_serving(hub, monkeypatch) as endpoint:
        online(endpoint)
        assert resolve_model(REPO) == ours.pipeline.checkpoint.directory
    assert settings.is_file()
    assert ours.max_active_dims == 6 and ours.default_prompt_name == "query"
    expected = theirs.encode(texts).to_dense()
    got = ours.encode(texts).to_dense()
    assert (got != 0).sum(dim=1).tolist() == [6, 6]
    assert torch.allclose(got, expected, atol=1e-4, rtol=0)


def test_every_file_the_tokenizer_reads_is_downloaded():
    """A DeBERTa-v3 repo's spm.model, a Llama-style tokenizer.model: the loader reads them, so the download
    fetches them (it did not, and such a repo loaded from a folder but not by its Hub id)."""
    assert set(SPM_FILES) <= set(VOCABULARY_FILES) <= set(TOKENIZER_FILES)
    assert {"tokenizer.json", "vocab.txt", "vocab.json", "merges.txt", "tokenizer_config.json"} <= set(TOKENIZER_FILES)


def test_a_revision_never_writes_a_ref_outside_the_repos_refs(tmp_path):
    """The ref is written from the revision asked for: `refs/pr/1` nests as huggingface_hub nests it; a revision
    that climbs out of refs/ writes nothing (a Hub would have refused it; a fake one may not)."""
    from coulisse.hub_download import _write_ref

    refs = tmp_path / "models--a--b" / "refs"
    _write_ref(refs, "../../../escape", COMMIT)
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []
    _write_ref(refs, "refs/pr/1", COMMIT)
    assert (refs / "refs" / "pr" / "1").read_text() == COMMIT


def test_a_jobs_record_names_the_files_an_earlier_version_named(minilm_dir):
    """A corpus job's record and the int8 cache's key are made of `model_files`: its names must not follow the
    Hub's download list, which grew this session (a job an earlier version started was refused on resume,
    "1_Pooling/config.json: gone, config_sentence_transformers.json: added", though no file had changed)."""
    from coulisse.checkpoint import model_files

    names = [str(p.relative_to(minilm_dir)) for p in model_files(minilm_dir)]
    assert "1_Pooling/config.json" in names and "config_sentence_transformers.json" not in names
    assert names[0] == "config.json" and names[-1] == "model.safetensors"


@pytest.mark.parametrize("revision", [".", "../x", "a/../b", "/etc", "dev/", "a b"])
def test_a_revision_that_is_no_ref_name_is_refused_before_the_cache_and_the_hub(revision, online):  # noqa: F811
    """The revision becomes a path in the cache (refs/<revision>): "." reached a message about a ref that is not a
    regular file, or about the disk (review of session 41). Refused in one line, nothing asked."""
    from coulisse.errors import InvalidModelIdError

    online("http://127.0.0.1:9")  # never asked: a request would fail as unreachable, not as this
    with pytest.raises(InvalidModelIdError, match=f"revision={revision!r} is not a branch, tag or commit"):
        resolve_model(REPO, revision=revision)

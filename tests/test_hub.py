"""Where models come from: the standard Hugging Face cache, laid out here as huggingface_hub lays out
`tblard/tf-allocine` (blobs, refs/main, snapshots/<commit>/ with TF weights only and a `{}` tokenizer
config), offline; and the Hub download, simulated without network."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from factory import ALLOCINE_FILES, COMMIT, make_hf_cache

from coulisse import pipeline
from coulisse.errors import ModelNotFoundError
from coulisse.hub import resolve_model
from coulisse.hub_cache import hub_cache_dir

REPO = "tblard/tf-allocine"


def tf_scores(tf_camembert_dir: Path) -> tuple[list[str], list[dict]]:
    """The fixture's texts and the results TensorFlow's logits imply (softmax, argmax)."""
    expected = json.loads((tf_camembert_dir / "expected.json").read_text(encoding="utf-8"))
    logits = np.asarray(expected["logits"], dtype=np.float64)
    probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    return expected["texts"], [{"label": ["NEGATIVE", "POSITIVE"][int(p.argmax())], "score": float(p.max())}
                               for p in probs]


def assert_results(got: list[dict], want: list[dict]) -> None:
    assert [g["label"] for g in got] == [w["label"] for w in want]
    assert max(abs(g["score"] - w["score"]) for g, w in zip(got, want, strict=True)) <= 1e-4


@pytest.fixture
def allocine_cache(tmp_path, monkeypatch, tf_camembert_dir):
    cache = tmp_path / "hf" / "hub"
    snapshot = make_hf_cache(cache, tf_camembert_dir)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("HF_HOME", raising=False)
    return cache, snapshot


def test_hub_id_resolves_to_the_cached_snapshot(allocine_cache):
    cache, snapshot = allocine_cache
    assert hub_cache_dir() == cache
    assert resolve_model(REPO) == snapshot
    assert resolve_model(REPO, revision=COMMIT) == snapshot


def test_local_model_finds_what_a_load_finds_without_the_network(allocine_cache, tf_camembert_dir, monkeypatch):
    """What a Ray job's driver hashes before deciding a rerun needs no cluster: the cached snapshot of a Hub id
    (resolve_model's folder), a folder, the bundled model; None for an id not cached or not an id."""
    from coulisse.defaults import BUNDLED_MODEL, bundled_dir
    from coulisse.hub import local_model

    def no_network(*args, **kwargs):
        raise AssertionError("the network was asked")

    monkeypatch.setattr("coulisse.hub._download", no_network)
    monkeypatch.delenv("HF_HUB_OFFLINE")  # online too: the cache alone answers
    assert local_model(REPO) == resolve_model(REPO) == allocine_cache[1]
    assert local_model(str(tf_camembert_dir)) == tf_camembert_dir
    assert local_model(BUNDLED_MODEL) == bundled_dir(BUNDLED_MODEL) is not None
    assert local_model("someone/not-cached") is None and local_model("../nowhere") is None and local_model("") is None


def test_sentiment_pipeline_from_the_cache_equals_tensorflow(allocine_cache, tf_camembert_dir):
    texts, want = tf_scores(tf_camembert_dir)
    classifier = pipeline("sentiment-analysis", model=REPO)
    assert classifier.checkpoint.directory == allocine_cache[1]
    assert_results(classifier(texts), want)


def test_default_sentiment_model_is_tf_allocine(allocine_cache, tf_camembert_dir):
    texts, want = tf_scores(tf_camembert_dir)
    classifier = pipeline("sentiment-analysis")
    assert classifier.checkpoint.name == REPO
    assert_results(classifier(texts[:3]), want[:3])


def test_hf_home_is_honoured(tmp_path, monkeypatch, tf_camembert_dir):
    make_hf_cache(tmp_path / "home" / "hub", tf_camembert_dir)
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert hub_cache_dir() == tmp_path / "home" / "hub"
    assert resolve_model(REPO).parent.name == "snapshots"


def test_default_cache_location_follows_huggingface_hub(tmp_path, monkeypatch):
    """huggingface_hub's rule: HF_HUB_CACHE, else $HF_HOME/hub, else $XDG_CACHE_HOME/huggingface/hub."""
    for name in ("HF_HUB_CACHE", "HF_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert hub_cache_dir() == tmp_path / "xdg" / "huggingface" / "hub"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert hub_cache_dir() == Path("~/.cache/huggingface/hub").expanduser()


def test_offline_with_an_empty_cache_says_what_to_do(tmp_path, monkeypatch):
    cache = tmp_path / "empty-cache"
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotFoundError) as info:
        pipeline("sentiment-analysis", model=REPO)
    message = str(info.value)
    assert REPO in message
    assert str(cache) in message
    assert "HF_HUB_OFFLINE" in message
    assert "download" in message and REPO in message.split("download", 1)[1]  # fix 1: fetch it once online
    assert "local folder" in message  # fix 2: point at a folder


@pytest.mark.parametrize("model", ["./no-such-folder", "/no/such/folder", "not a hub id!"])
def test_missing_local_paths_are_named(model, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotFoundError, match="neither a folder nor a Hub id") as info:
        resolve_model(model)
    assert repr(model) in str(info.value)


# -- downloading, with huggingface_hub's two entry points replaced (no network in tests) ----------------


class FakeHub:
    """A Hub holding one repo: `model_info` lists its files, `hf_hub_download` copies them into the cache."""

    def __init__(self, source: Path, repo: str, files: list[str]):
        self.source, self.repo, self.files, self.downloaded = source, repo, files, []

    def install(self, monkeypatch) -> None:
        import huggingface_hub

        hub = self

        class Api:
            def model_info(self, repo_id, revision=None, timeout=None, token=None):
                import httpx
                from huggingface_hub.errors import RepositoryNotFoundError

                if repo_id != hub.repo:
                    url = f"https://huggingface.co/api/models/{repo_id}"
                    response = httpx.Response(404, request=httpx.Request("GET", url))
                    raise RepositoryNotFoundError(f"404 {repo_id}", response=response)
                return type("Info", (), {"siblings": [type("S", (), {"rfilename": f}) for f in hub.files],
                                         "sha": COMMIT})

        def download(repo_id, filename, revision=None, cache_dir=None, token=None):
            hub.downloaded.append(filename)
            snapshot = Path(cache_dir) / ("models--" + repo_id.replace("/", "--")) / "snapshots" / COMMIT
            (snapshot / filename).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(hub.source / filename, snapshot / filename)
            return str(snapshot / filename)

        monkeypatch.setattr(huggingface_hub, "HfApi", Api)
        monkeypatch.setattr(huggingface_hub, "hf_hub_download", download)


@pytest.fixture
def online(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    return tmp_path / "cache"


def test_download_fetches_only_what_inference_needs(online, monkeypatch, factory, tf_camembert_dir, tmp_path):
    """A repo with every format: config, tokenizer files and the single best weight file are fetched."""
    source = tmp_path / "repo"
    shutil.copytree(factory.checkpoint("camembert"), source)
    shutil.copy(factory.checkpoint("camembert", "bin") / "pytorch_model.bin", source)
    shutil.copy(tf_camembert_dir / "tf_model.h5", source)
    (source / "README.md").write_text("# big repo")
    hub = FakeHub(source, "someone/camembert-tiny", sorted(p.name for p in source.iterdir()))
    hub.install(monkeypatch)
    directory = resolve_model("someone/camembert-tiny")
    assert "model.safetensors" in hub.downloaded and "config.json" in hub.downloaded
    assert not {"pytorch_model.bin", "tf_model.h5", "README.md"} & set(hub.downloaded)
    assert pipeline("sentiment-analysis", model="someone/camembert-tiny").checkpoint.directory == directory


def test_download_of_a_sharded_repo_fetches_every_shard(online, monkeypatch, factory):
    source = factory.checkpoint("bert", "sharded-safetensors")
    hub = FakeHub(source, "someone/sharded", sorted(p.name for p in source.iterdir()))
    hub.install(monkeypatch)
    resolve_model("someone/sharded")
    shards = {p.name for p in source.glob("model-*.safetensors")}
    assert shards <= set(hub.downloaded) and "model.safetensors.index.json" in hub.downloaded


def test_repo_without_weights_lists_its_files(online, monkeypatch, tf_camembert_dir):
    """The seed's philschmid/pt-tblard-tf-allocine: config and tokenizer, but no weight file at all."""
    files = ["config.json", "sentencepiece.bpe.model", "special_tokens_map.json", "tokenizer_config.json"]
    FakeHub(tf_camembert_dir, "philschmid/pt-tblard-tf-allocine", files).install(monkeypatch)
    with pytest.raises(ModelNotFoundError) as info:
        pipeline("sentiment-analysis", model="philschmid/pt-tblard-tf-allocine")
    message = str(info.value)
    assert "philschmid/pt-tblard-tf-allocine" in message
    assert all(f in message for f in files)
    assert all(f in message for f in ("model.safetensors", "pytorch_model.bin", "tf_model.h5"))


def test_unknown_repo_is_named(online, monkeypatch, tf_camembert_dir):
    FakeHub(tf_camembert_dir, REPO, list(ALLOCINE_FILES)).install(monkeypatch)
    with pytest.raises(ModelNotFoundError, match="no model 'tblard/tf-allocyne'"):
        resolve_model("tblard/tf-allocyne")


# -- ids that are neither a folder nor a Hub id: refused before the cache is asked ----------------------------

INVALID_IDS = {
    "foo/..": "'..' is a path component, not a name",
    "../no-such-x": "no folder exists at that path, and a Hub id does not start with '/', '~' or '.'",
    "/no/such/folder": "no folder exists at that path, and a Hub id does not start with '/', '~' or '.'",
    "a/b/c": "it has 3 parts separated by '/'; a Hub id has at most two, owner and name",
    "foo/../bar": "it has 3 parts separated by '/'",
    "owner\\name": "it contains a backslash; Hub ids separate owner and name with '/'",
    "foo--bar/x": "'foo--bar' contains '--' or '..', which Hub ids may not",
    "x/a..b": "'a..b' contains '--' or '..', which Hub ids may not",
    "x/.git": "'.git' starts or ends with '-' or '.', which Hub ids may not",
    "owner/": "it has an empty part",
    "not a hub id!": "it contains ' '; Hub ids use letters, digits, '-', '_' and '.'",
    "owner/naïve": "it contains 'ï'",
    "a" * 97: "it is 97 characters long; Hub ids have at most 96",
    "": "it is empty",
}


@pytest.mark.parametrize("model", list(INVALID_IDS))
def test_invalid_ids_are_one_typed_error_before_the_cache(model, tmp_path, monkeypatch):
    from coulisse import hub
    from coulisse.errors import InvalidModelIdError

    monkeypatch.chdir(tmp_path)  # no folder named like the id
    monkeypatch.setattr(hub, "_from_cache", lambda *a: pytest.fail("the cache was asked"))
    monkeypatch.setattr(hub, "_download", lambda *a: pytest.fail("the Hub was asked"))
    with pytest.raises(InvalidModelIdError) as info:
        resolve_model(model)
    message = str(info.value)
    assert message.startswith(f"model {model!r} is neither a folder nor a Hub id: {INVALID_IDS[model]}")
    assert message.endswith("Pass an existing folder holding config.json and the weights, or a Hub id 'name' or "
                            "'owner/name' (like 'tblard/tf-allocine').")
    assert "\n" not in message and isinstance(info.value, ModelNotFoundError)


def test_a_file_is_not_a_model_folder(tmp_path):
    from coulisse.errors import InvalidModelIdError

    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(InvalidModelIdError, match="is neither a folder nor a Hub id: it is a file, not a folder"):
        resolve_model(tmp_path / "config.json")


@pytest.mark.parametrize("model", ["bert-base-uncased", "owner/name", "Owner_1/name.v2-x"])
def test_well_formed_ids_go_to_the_cache(model, tmp_path, monkeypatch):
    from coulisse import hub

    monkeypatch.chdir(tmp_path)
    asked = []
    monkeypatch.setattr(hub, "_from_cache", lambda repo_id, revision: asked.append(repo_id) or tmp_path)
    monkeypatch.setattr(hub, "snapshot_complete", lambda folder: True)
    assert resolve_model(model) == tmp_path and asked == [model]


def test_a_path_that_exists_is_a_folder_even_when_it_looks_odd(tmp_path, monkeypatch):
    (tmp_path / "foo").mkdir()
    monkeypatch.chdir(tmp_path)
    assert resolve_model("foo/..").resolve() == tmp_path.resolve()


@pytest.mark.slow
@pytest.mark.parametrize("model", ["foo/..", "a/b/c", "a\\b"])
def test_cli_says_the_id_is_invalid_in_one_line(model, tmp_path):
    import os
    import subprocess
    import sys

    script = Path(sys.executable).parent / "coulisse"
    command = [str(script)] if script.is_file() else [sys.executable, "-m", "coulisse.interfaces.cli"]
    env = {**{k: v for k, v in os.environ.items() if k != "COULISSE_MODEL"}, "HF_HUB_OFFLINE": "1",
           "HF_HUB_CACHE": str(tmp_path / "cache")}
    done = subprocess.run([*command, "classify", "--model", model, "texte"], capture_output=True, text=True,
                          env=env, cwd=tmp_path, timeout=300)
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith(f"Error: InvalidModelIdError: model {model!r} is neither a folder nor a Hub id: ")
    assert not (tmp_path / "cache").exists()


@pytest.mark.parametrize("typo", ["coulisse/mini-alocine", "coulisse/mini-allocin", "Coulisse/Mini-Allocine",
                                  "coulisse/mini_allocine"])
def test_a_typo_of_the_bundled_name_suggests_it_without_asking_the_hub(typo, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr("coulisse.hub._download", lambda *a: pytest.fail("the Hub was asked"))
    with pytest.raises(ModelNotFoundError, match=f"model '{typo}' is not shipped with coulisse.*did you mean "
                                                 "'coulisse/mini-allocine'"):
        resolve_model(typo)


@pytest.mark.parametrize("other", ["coulisse/mini-allocine-v2", "coulisse/allocine", "tblard/tf-allocine"])
def test_other_names_near_the_bundled_one_still_go_to_the_hub(other, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    asked = []
    monkeypatch.setattr("coulisse.hub._download", lambda repo_id, revision: asked.append(repo_id) or tmp_path)
    assert resolve_model(other) == tmp_path and asked == [other]


@pytest.mark.parametrize("ref", ["absolute", "dotdot"])
def test_a_ref_leading_outside_the_snapshots_is_refused(allocine_cache, tf_camembert_dir, tmp_path, ref):
    """huggingface_hub joins snapshots/ with a ref's text unchecked: a ref holding an absolute path or "../.."
    must not have the model read from a folder outside the cache (audit 39)."""
    from coulisse.errors import UnsafeCheckpointError

    cache, _ = allocine_cache
    outside = tmp_path / "outside_model"
    shutil.copytree(tf_camembert_dir, outside)
    main = cache / "models--tblard--tf-allocine" / "refs" / "main"
    main.write_text(str(outside) if ref == "absolute" else "../../../../outside_model")
    assert (main.parent.parent / "snapshots" / main.read_text()).resolve() == outside.resolve()  # it would escape
    with pytest.raises(UnsafeCheckpointError, match="outside the repo's snapshots") as caught:
        resolve_model(REPO)
    assert "\n" not in str(caught.value)


def test_a_ref_that_is_no_regular_file_is_refused_before_it_blocks(allocine_cache):
    """A FIFO at refs/main would block huggingface_hub's read of it forever."""
    from fifo import fifo_at

    from coulisse.errors import UnsafeCheckpointError

    cache, _ = allocine_cache
    main = cache / "models--tblard--tf-allocine" / "refs" / "main"
    main.unlink()
    with fifo_at(main), pytest.raises(UnsafeCheckpointError, match="is not a regular file"):
        resolve_model(REPO)


def test_a_snapshot_folder_that_is_a_link_still_loads(allocine_cache, tmp_path):
    """snapshots/<commit> made a link (a cache moved by hand) loaded before the ref check and still does; the
    check is on the ref's own text (audit 39, review)."""
    cache, snapshot = allocine_cache
    moved = tmp_path / "moved-snapshot"
    moved.mkdir()
    for file in snapshot.iterdir():  # a snapshot of real files, moved to another disk
        shutil.copy(file, moved / file.name)
        file.unlink()
    snapshot.rmdir()
    snapshot.symlink_to(moved, target_is_directory=True)
    assert resolve_model(REPO) == snapshot

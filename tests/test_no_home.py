"""A process without a home folder (HOME unset and a uid with no passwd entry: `env -i`, a container run as
`--user 4242` without HOME): Python's `Path.home()` raises there, and so does huggingface_hub's lookup of its
default cache. The caches are then off and said once, a Hub id says to set HF_HOME, the default model falls back
to the bundled one, and a command runs (audit 48, containers F1)."""

from __future__ import annotations

import logging
import os
import pwd
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from coulisse import hub_fallback
from coulisse.defaults import BUNDLED_MODEL, bundled_dir
from coulisse.engine import cache
from coulisse.errors import ModelNotFoundError
from coulisse.hub import resolve_model
from coulisse.hub_cache import homeless_cache, hub_cache_dir
from coulisse.hub_fallback import default_model


@pytest.fixture
def no_home(monkeypatch, tmp_path):
    for name in ("HOME", "HF_HOME", "HF_HUB_CACHE", "XDG_CACHE_HOME", "COULISSE_CACHE", "HF_HUB_OFFLINE"):
        monkeypatch.delenv(name, raising=False)

    def no_entry(uid):
        raise KeyError(f"getpwuid(): uid not found: {uid}")

    monkeypatch.setattr(pwd, "getpwuid", no_entry)
    monkeypatch.setattr(cache, "_say_no_home", cache._say_no_home.__wrapped__)  # said again for this test
    monkeypatch.setattr(hub_fallback, "_FELL_BACK", set())
    monkeypatch.setattr(hub_fallback, "_HUB_FAILED", {})
    monkeypatch.chdir(tmp_path)
    with pytest.raises(RuntimeError, match="home directory"):  # what Python itself does here
        Path.home()


def test_the_weight_cache_is_off_and_says_how_to_turn_it_on(no_home, caplog, monkeypatch):
    with caplog.at_level(logging.WARNING, logger="coulisse.engine.cache"):
        assert cache.cache_dir() is None
    assert "the cache is off: this process has no home folder" in caplog.text
    assert "set COULISSE_CACHE" in caplog.text
    monkeypatch.setenv("COULISSE_CACHE", "~/cache")  # a folder under the home that is not there
    assert cache.cache_dir() is None
    monkeypatch.setenv("COULISSE_CACHE", "/srv/cache")
    assert cache.cache_dir() == Path("/srv/cache")


def test_a_hub_id_says_to_set_hf_home_and_the_default_model_falls_back(no_home, caplog):
    assert homeless_cache() and str(hub_cache_dir()).startswith("~")
    with pytest.raises(ModelNotFoundError, match="no home folder.*Set HF_HOME"):
        resolve_model("camembert-base")
    with caplog.at_level(logging.WARNING, logger="coulisse.checkpoint"):
        assert default_model("text-classification") == BUNDLED_MODEL
    assert "no home folder" in caplog.text


def test_hf_home_or_xdg_gives_the_cache_a_place(no_home, monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache.cache_dir() == tmp_path / "xdg" / "coulisse"
    assert hub_cache_dir() == tmp_path / "xdg" / "huggingface" / "hub" and not homeless_cache()
    monkeypatch.setenv("HF_HOME", "$PWD/hf")  # expanded as huggingface_hub expands it
    monkeypatch.setenv("PWD", str(tmp_path))
    assert hub_cache_dir() == tmp_path / "hf" / "hub"


def as_uid_without_passwd_entry(*args: str) -> subprocess.CompletedProcess:
    uid = 4242
    while True:
        try:
            pwd.getpwuid(uid)
            uid += 1
        except KeyError:
            break
    env = {k: v for k, v in os.environ.items() if k not in ("HOME", "HF_HOME", "HF_HUB_CACHE", "XDG_CACHE_HOME",
                                                              "COULISSE_CACHE")}
    command = [shutil.which("setpriv") or "setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups",
               sys.executable, *args]
    return subprocess.run(command, capture_output=True, text=True, env=env, cwd="/", timeout=300)


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None, reason="needs root and setpriv")
def test_a_command_runs_as_a_user_with_no_home():
    """`coulisse classify --fast` (int8 codes would be cached) on the bundled model and without --model (the
    default model's Hub lookup), as a uid with no passwd entry and no HOME: the answer, and warnings only."""
    probe = as_uid_without_passwd_entry("-c", "import coulisse")
    if probe.returncode != 0:
        pytest.skip(f"this checkout is not readable by another user: {probe.stderr.strip()[-200:]}")
    main = "import sys; from coulisse.interfaces.cli import main; sys.argv[0] = 'coulisse'; main()"
    for args in (["classify", "--fast", "-m", str(bundled_dir(BUNDLED_MODEL)), "Un film magnifique."],
                 ["classify", "Un film magnifique."]):
        done = as_uid_without_passwd_entry("-c", main, *args)
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith("POSITIVE"), done.stdout
        assert "Traceback" not in done.stderr
        assert "the cache is off: this process has no home folder" in done.stderr

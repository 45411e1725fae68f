"""What a user installing coulisse gets: a version the command reports, the Apache-2.0 license as an SPDX
expression and as the full text, and py.typed for type checkers, in the installed metadata and the wheel."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from importlib.metadata import distribution, metadata, version
from importlib.resources import files
from pathlib import Path

import pytest
from click.testing import CliRunner

from coulisse.interfaces.cli import cli

ROOT = Path(__file__).resolve().parents[1]
# sha256 of the whitespace-normalized text from "TERMS AND CONDITIONS" to "END OF TERMS AND CONDITIONS" of
# the Apache License 2.0, identical in the copies huggingface_hub, transformers, safetensors and onnx ship.
APACHE_2_TERMS = "efc42672d5e2255417ab2bbcef2a39e8400f0ab6d32f4c790d95a3640087923c"


def pyproject() -> dict:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def test_version_is_the_installed_one():
    assert CliRunner().invoke(cli, ["--version"]).stdout == f"coulisse {version('coulisse')}\n"
    script = Path(sys.executable).parent / "coulisse"
    if not script.is_file():
        pytest.skip(f"no installed console script beside {sys.executable} (pip install -e .)")
    result = subprocess.run([str(script), "--version"], capture_output=True, text=True, timeout=60)
    assert (result.returncode, result.stdout) == (0, f"coulisse {version('coulisse')}\n")


def test_package_version_is_the_installed_one():
    import coulisse

    assert coulisse.__version__ == version("coulisse") == pyproject()["project"]["version"]


@pytest.mark.parametrize("name", ["coulisse", "coulisse.interfaces.server", "coulisse.interfaces.jobs"])
def test_the_lazy_names_are_offered_to_completion(name):
    """A package whose names load on first use (to keep `import coulisse` free of torch) still lists them, so
    that `coulisse.<Tab>` in a notebook or IPython offers `pipeline`; and each listed name resolves."""
    import importlib

    module = importlib.import_module(name)
    listed = dir(module)
    assert set(module.__all__) <= set(listed), (module.__all__, listed)
    for attribute in module.__all__:
        assert getattr(module, attribute) is not None


def test_license_expression_matches_pyproject():
    project = pyproject()["project"]
    assert project["license"] == "Apache-2.0" == metadata("coulisse")["License-Expression"]
    assert project["license-files"] == ["LICENSE"]
    assert "LICENSE" in (metadata("coulisse").get_all("License-File") or [])


def test_license_file_is_the_apache_2_text():
    text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert text.split("\n", 3)[:3] == [" " * 33 + "Apache License", " " * 27 + "Version 2.0, January 2004",
                                       " " * 24 + "http://www.apache.org/licenses/"]
    terms = text[text.index("TERMS AND CONDITIONS"):text.index("END OF TERMS AND CONDITIONS")]
    assert hashlib.sha256(" ".join(terms.split()).encode()).hexdigest() == APACHE_2_TERMS
    assert "   Copyright 2026 the coulisse authors\n" in text
    installed = [f for f in distribution("coulisse").files or [] if f.name == "LICENSE"]
    assert installed and installed[0].read_text(encoding="utf-8") == text


def test_py_typed_ships_with_the_package():
    assert files("coulisse").joinpath("py.typed").is_file()
    assert "py.typed" in pyproject()["tool"]["setuptools"]["package-data"]["coulisse"]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The README's `python -m pip wheel . -w dist --no-deps`, on a clean copy of the sources."""
    tmp_path = tmp_path_factory.mktemp("wheel")
    source = tmp_path / "src-copy"
    source.mkdir()
    for name in ("pyproject.toml", "setup.py", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "src", source / "src",
                    ignore=shutil.ignore_patterns("__pycache__", "*.so", "*.egg-info"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(source), "-w", str(tmp_path / "dist"), "--no-deps",
                    "--no-build-isolation", "-q"], check=True, timeout=600, capture_output=True)
    return next((tmp_path / "dist").glob("coulisse-*.whl"))


def test_the_wheel_carries_license_and_py_typed(wheel):
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        info = f"coulisse-{version('coulisse')}.dist-info"
        meta = archive.read(f"{info}/METADATA").decode()
    assert "coulisse/py.typed" in names
    assert f"{info}/licenses/LICENSE" in names
    # The C kernels ship compiled, not as sources (those stay in the sdist).
    assert not [n for n in names if n.endswith((".c", ".h"))]
    if shutil.which("cc") or shutil.which("gcc"):  # the extension is optional: no compiler, no module
        assert [n for n in names if n.endswith(".so")] and all(
            n.startswith("coulisse/models/_int8.") for n in names if n.endswith(".so"))
    assert "License-Expression: Apache-2.0" in meta.splitlines()


def test_bench_from_the_wheel_says_it_needs_a_checkout(wheel, tmp_path):
    """An installed wheel carries the command's modules but not bench/: `coulisse bench` says so in one line
    (how to get the harness), without a traceback, instead of failing on a missing file."""
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        assert not any(name.startswith("bench/") for name in names)
        for module in ("cli", "options", "bench_command", "task_commands", "explain_command", "qa_commands",
                       "jobs/command", "server/command", "server/limits"):
            assert f"coulisse/interfaces/{module}.py" in names, module
        archive.extractall(tmp_path / "site")
    # The unpacked wheel first on the path, run from an empty folder: no source tree in sight.
    probe = ("import coulisse, sys; print(coulisse.__file__, file=sys.stderr); "
             "from coulisse.interfaces.cli import main; main()")
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "site")}
    (tmp_path / "cwd").mkdir()
    result = subprocess.run([sys.executable, "-c", probe, "bench"], capture_output=True, text=True,
                            env=env, cwd=tmp_path / "cwd", timeout=120)
    loaded, *lines = result.stderr.strip().splitlines()
    assert loaded.startswith(str(tmp_path / "site")), loaded
    assert result.returncode == 1 and result.stdout == "", result
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert lines[0].startswith("Error: `coulisse bench` runs from a source checkout"), lines[0]
    assert "git clone" in lines[0] and "pip install -e '.[bench]'" in lines[0], lines[0]
    assert f"installed at {tmp_path / 'site' / 'coulisse'}." in lines[0], lines[0]  # no folder that cannot exist


@pytest.mark.slow
def test_the_sdist_ships_the_docs_and_no_part_of_the_test_suite(tmp_path):
    """The sdist (MANIFEST.in): the package with its C sources and bundled model, the docs the README links to
    and the changelog; the test suite needs the repository, so none of it (setuptools alone would ship
    tests/test_*.py without their conftest and fixtures)."""
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    source = tmp_path / "src-copy"
    for name in tracked.splitlines():
        if (ROOT / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(ROOT / name, source / name)
    subprocess.run([sys.executable, "setup.py", "-q", "sdist", "-d", str(tmp_path / "dist")], cwd=source,
                   check=True, timeout=600, capture_output=True)
    (archive,) = (tmp_path / "dist").glob("coulisse-*.tar.gz")
    with tarfile.open(archive) as tar:
        names = {name.split("/", 1)[1] for name in tar.getnames() if "/" in name}
    assert {"CHANGELOG.md", "README.md", "LICENSE", "docs/server.md", "docs/jobs.md", "setup.py",
            "src/coulisse/models/_int8.c", "src/coulisse/models/_kernels.h",
            "src/coulisse/bundled/mini-allocine/model.safetensors"} <= names
    assert not [name for name in names if name.startswith(("tests/", "bench/", "training/"))]

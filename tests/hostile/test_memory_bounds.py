"""Hostile checkpoints must be refused before they cost memory: peak RSS of `coulisse classify` measured in a
subprocess (os.wait4's rusage of that one process), on a 4 MB tf_model.h5 declaring a 2 GiB dataset and on
config.json files declaring 10^9 labels or 10^7 layers (issue 12: 4.1 GB, 5.7 GB and > 4.5 GB before).

The bound is the peak of the same command on the untouched model, which reads its 4 MB of weights and
classifies, plus 200 MB. A refusal happens before any weight is read, so it should stay under that baseline;
200 MB absorbs what differs between two runs of the interpreter (allocator, lazily imported modules), and is
ten times smaller than the smallest of the allocations the attacks asked for (2 GiB)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import pytest

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not sys.platform.startswith("linux"), reason="ru_maxrss in KiB, os.wait4: Linux")]

MARGIN = 200 * 2**20
DECLARED = (2**24, 32)  # float32: 2 GiB
WORDS = "tf_camembert_for_sequence_classification/roberta/embeddings/word_embeddings/weight:0"


# Linux carries a process's peak RSS across fork and exec: a child started by pytest (hundreds of MB, more as
# tests run) would report pytest's peak as its own. This launcher (about 10 MB) starts the command instead and
# reports that grandchild's own peak, through os.wait4.
LAUNCHER = """import os, subprocess, sys
process = subprocess.Popen(sys.argv[2:])
_, status, usage = os.wait4(process.pid, 0)
with open(sys.argv[1], "w") as f:
    f.write(f"{usage.ru_maxrss * 1024} {os.waitstatus_to_exitcode(status)}")
"""


def peak_rss(args: list[str], tmp_path: Path) -> tuple[int, int, str]:
    """(peak RSS in bytes, exit code, stderr) of one run of `args`."""
    env = {k: v for k, v in os.environ.items() if k != "COULISSE_MODEL"}
    env["HF_HUB_OFFLINE"] = "1"
    report = tmp_path / "peak"
    done = subprocess.run([sys.executable, "-c", LAUNCHER, str(report), *args], capture_output=True, env=env,
                          timeout=300)
    rss, code = map(int, report.read_text().split())
    return rss, code, done.stderr.decode(errors="replace")


def classify(model: Path) -> list[str]:
    script = Path(sys.executable).parent / "coulisse"
    command = [str(script)] if script.is_file() else [sys.executable, "-m", "coulisse.interfaces.cli"]
    return [*command, "classify", "--model", str(model), "texte"]


@pytest.fixture(scope="module")
def baseline(tf_camembert_dir, tmp_path_factory) -> int:
    rss, code, err = peak_rss(classify(tf_camembert_dir), tmp_path_factory.mktemp("baseline"))
    assert code == 0, err
    return rss


def _huge_dataset(tf_camembert_dir, target: Path, **storage) -> Path:
    """The fixture with its word embeddings replaced by a dataset declaring 2 GiB and storing nothing: a read
    would fill every page with the fill value (not zero, which untouched calloc'd pages would fake)."""
    shutil.copytree(tf_camembert_dir, target)
    with h5py.File(target / "tf_model.h5", "a") as f:
        del f["roberta"][WORDS]
        f["roberta"].create_dataset(WORDS, shape=DECLARED, dtype="<f4", fillvalue=0.5, **storage)
    assert (target / "tf_model.h5").stat().st_size < 5 * 2**20
    return target


def _config(tf_camembert_dir, target: Path, **changes) -> Path:
    shutil.copytree(tf_camembert_dir, target)
    config = json.loads((target / "config.json").read_text())
    config.pop("id2label", None)
    config.pop("label2id", None)
    (target / "config.json").write_text(json.dumps({**config, **changes}))
    return target


CASES = {
    "h5 declaring 2 GiB": (lambda d, t: _huge_dataset(d, t), "UnsafeCheckpointError", "more than the whole file"),
    "h5 declaring 2 GiB, gzip": (lambda d, t: _huge_dataset(d, t, compression="gzip", chunks=(2**16, 32)),
                                 "UnsafeCheckpointError", "more than the whole file"),
    "num_labels 1e9": (lambda d, t: _config(d, t, num_labels=1e9), "UnsafeCheckpointError", "num_labels"),
    "num_hidden_layers 1e7": (lambda d, t: _config(d, t, num_hidden_layers=10**7), "UnsafeCheckpointError",
                              "num_hidden_layers"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_hostile_checkpoint_is_refused_within_the_memory_bound(name, baseline, tf_camembert_dir, tmp_path):
    build, error, words = CASES[name]
    model = build(tf_camembert_dir, tmp_path / "model")
    rss, code, err = peak_rss(classify(model), tmp_path)
    lines = err.strip().splitlines()
    assert code == 1 and len(lines) == 1 and lines[0].startswith(f"Error: {error}: ") and words in lines[0], err
    print(f"{name}: peak RSS {rss / 2**20:.0f} MB, baseline {baseline / 2**20:.0f} MB")
    assert rss <= baseline + MARGIN, f"{name}: peak RSS {rss / 2**20:.0f} MB, baseline {baseline / 2**20:.0f} MB"


def test_the_measure_sees_an_allocation_of_the_margin(tf_camembert_dir, tmp_path):
    """Control: reading 300 MB of the crafted dataset's fill values with h5py shows in the child's peak RSS, so
    a reader that read the declared dataset would break the bound above."""
    model = _huge_dataset(tf_camembert_dir, tmp_path / "model")
    code = (f"import h5py; f = h5py.File({str(model / 'tf_model.h5')!r}); "
            f"a = f['roberta'][{WORDS!r}][: {300 * 2**20 // 128}]; print(a.sum())")
    small, _, _ = peak_rss([sys.executable, "-c", "import h5py"], tmp_path)
    rss, status, err = peak_rss([sys.executable, "-c", code], tmp_path)
    assert status == 0, err
    print(f"peak RSS: import h5py {small / 2**20:.0f} MB, then 300 MB read {rss / 2**20:.0f} MB")
    assert rss - small >= 290 * 2**20

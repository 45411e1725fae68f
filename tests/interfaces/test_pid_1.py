"""coulisse as a container's first process (PID 1 in its PID namespace, `docker run` without `--init`): the kernel
delivers PID 1 no signal left to its default action, so SIGTERM while a model loads was ignored and the load went
on to serve, or to finish the job (audit 48, containers F2). `cli.stop_as_pid_1` gives SIGTERM its default effect
by hand. Run in a real PID namespace (`unshare --pid --fork`, root only)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from coulisse.defaults import BUNDLED_MODEL, bundled_dir

MAIN = "import sys; from coulisse.interfaces.cli import main; sys.argv[0] = 'coulisse'; main()"
UNSHARE = ["unshare", "--pid", "--fork", "--kill-child"]


def _namespaces_work() -> bool:
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        return False
    probe = subprocess.run([*UNSHARE, sys.executable, "-c", "import os; assert os.getpid() == 1"],
                           capture_output=True, timeout=60)
    return probe.returncode == 0


pytestmark = pytest.mark.skipif(not _namespaces_work(), reason="needs root and a PID namespace (unshare --pid)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def first_child(pid: int, timeout: float = 30.0) -> int:
    """The process `unshare` forked (PID 1 inside), by its PID out here."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        if children:
            return int(children[0])
        time.sleep(0.01)
    raise AssertionError("unshare forked no process")


def catches(pid: int, signum: int) -> bool:
    """Whether process `pid` has a handler for `signum` (SigCgt in /proc/PID/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigCgt:"):
            return bool(int(line.split()[1], 16) >> (signum - 1) & 1)
    return False


def terminated_while_loading(args: list[str], tmp_path: Path, env: dict | None = None
                             ) -> tuple[subprocess.CompletedProcess, float]:
    """`coulisse ARGS` as PID 1, sent SIGTERM as soon as it has a handler for it: its exit status, what it said,
    and how long it ran."""
    started = time.monotonic()
    with (tmp_path / "err").open("w+") as err:
        outer = subprocess.Popen([*UNSHARE, sys.executable, "-c", MAIN, *args], stdout=subprocess.PIPE, stderr=err,
                                 text=True, cwd=tmp_path, env=env or dict(os.environ))
        try:
            inner = first_child(outer.pid)
            deadline = time.monotonic() + 120
            while not catches(inner, signal.SIGTERM) and time.monotonic() < deadline and outer.poll() is None:
                time.sleep(0.005)
            with contextlib.suppress(ProcessLookupError):
                os.kill(inner, signal.SIGTERM)
            out, _ = outer.communicate(timeout=120)
        finally:
            if outer.poll() is None:
                outer.kill()
                outer.wait()
        err.seek(0)
        return subprocess.CompletedProcess(outer.args, outer.returncode, out, err.read()), time.monotonic() - started


def test_serve_stops_on_sigterm_while_its_model_loads(tmp_path):
    """serve sets its own handler once its models answer: the signal comes before."""
    done, took = terminated_while_loading(["serve", "-m", str(bundled_dir(BUNDLED_MODEL)), "--port",
                                           str(free_port())], tmp_path)
    assert done.returncode == 128 + signal.SIGTERM, done.stderr
    assert "coulisse serve:" not in done.stderr  # stopped before its model answered, as any other process
    assert "Traceback" not in done.stderr
    assert took < 30


@pytest.fixture
def silent_hub():
    """A Hub endpoint that accepts connections and never answers (a pod without egress behind a proxy)."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(64)
        yield f"http://127.0.0.1:{server.getsockname()[1]}"


def test_a_corpus_job_stops_on_sigterm_while_it_waits_for_the_hub(tmp_path, silent_hub):
    """Without --model, a job asks the Hub for the default model before it opens its input (and sets its own
    handler): with a Hub that never answers, that wait is 30 s; SIGTERM ends it at once."""
    source = tmp_path / "in.csv"
    source.write_text("text\n" + "".join(f"Un film numéro {i}, plutôt réussi.\n" for i in range(50)))
    env = {name: value for name, value in os.environ.items()
           if name not in ("HF_HUB_OFFLINE", "HF_HUB_CACHE", "COULISSE_MODEL")}
    env.update(HF_ENDPOINT=silent_hub, HF_HUB_ETAG_TIMEOUT="30", HF_HUB_DOWNLOAD_TIMEOUT="30",
               HF_HOME=str(tmp_path / "hf"), COULISSE_CACHE=str(tmp_path / "cache"))
    done, took = terminated_while_loading(["classify", "-i", str(source), "-o", str(tmp_path / "out.csv"),
                                           "--quiet"], tmp_path, env)
    assert done.returncode == 128 + signal.SIGTERM, done.stderr
    assert took < 20, done.stderr  # not the Hub's 30 s
    assert "using the bundled" not in done.stderr  # stopped while waiting, before the fallback
    out = tmp_path / "out.csv"
    assert not out.exists() or len(out.read_text().splitlines()) <= 1

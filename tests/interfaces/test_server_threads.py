"""`coulisse serve` under contention and `--fast`: the thread count each batch runs on, the OpenMP wait
policy the runtime actually read (libgomp prints it with OMP_DISPLAY_ENV; the server sets a short spin unless the user
set one), user overrides winning, all torch work on one thread, and /info naming the precision --fast resolved to."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import time

import pytest
import torch

httpx = pytest.importorskip("httpx")
pytest.importorskip("uvicorn")
from click.testing import CliRunner  # noqa: E402
from starlette.testclient import TestClient  # noqa: E402

import coulisse  # noqa: E402
from coulisse.engine.cpu_limit import cpu_limit  # noqa: E402
from coulisse.engine.threads import capped  # noqa: E402
from coulisse.interfaces.cli import cli  # noqa: E402
from coulisse.interfaces.options import SERVER_SPINCOUNT  # noqa: E402
from coulisse.interfaces.server import ServerSettings, create_app  # noqa: E402

SERVE = [sys.executable, "-c", "from coulisse.interfaces.cli import main; main()", "serve"]
OPENMP = "OpenMP" in torch.__config__.parallel_info()
needs_openmp = pytest.mark.skipif(not OPENMP, reason="torch is not built with OpenMP here (parallel_info)")


@pytest.fixture
def two_threads():
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(previous)


def observe_threads(monkeypatch, pipe) -> list[tuple[int, int]]:
    """(tokens, torch's thread count) inside each forward the server runs."""
    seen = []
    forward = pipe.forward

    def spy(items, *args, **kwargs):
        seen.append((sum(len(i.ids) for i in items), torch.get_num_threads()))
        return forward(items, *args, **kwargs)

    monkeypatch.setattr(pipe, "forward", spy)
    return seen


@pytest.mark.parametrize(("threads", "expected"), [(None, capped(2)), (1, 1)])
def test_each_batch_runs_on_the_policys_threads(classifier, monkeypatch, two_threads, threads, expected):
    """Every core (torch's count when the server starts, 2 here, at most a container's CPU limit) or --threads,
    in the forward thread itself, for a short request and a long one alike."""
    seen = observe_threads(monkeypatch, classifier)
    with TestClient(create_app(classifier, ServerSettings(threads=threads))) as c:
        for text in ("Bof.", " ".join(["film"] * 300)):
            assert c.post("/predict", json={"inputs": text}).status_code == 200
        info = c.get("/info").json()
    assert [count for _, count in seen] == [expected, expected]
    assert info["threads"]["threads"] == expected
    assert info["threads"]["chosen_by"] == ("coulisse" if threads is None else "--threads")


def test_the_models_load_warm_up_and_run_on_one_thread(classifier, monkeypatch):
    """`coulisse serve` loads each model, warms it up and runs every batch on the process's torch thread. libgomp
    keeps an OpenMP team per thread that ran a parallel region; with a second one (load on the main thread,
    batches on a worker) it throttles every idle thread to 100 spins whatever GOMP_SPINCOUNT says: a short
    MiniLM request ran in 11.3 ms instead of 6.8 (coulisse/engine/threads.py)."""
    import threading

    from coulisse.engine.engine import Engine
    from coulisse.engine.threads import torch_thread
    from coulisse.interfaces.server import command

    where: dict[str, set[int]] = {"load": set(), "engine": set()}
    run = Engine.run

    def spy(self, *args, **kwargs):
        where["engine"].add(threading.get_ident())
        return run(self, *args, **kwargs)

    texts = ["Super film !", "Quel ennui."]
    expected = [[a["label"] for a in answer] for answer in classifier(texts, top_k=None)]  # before the spy
    answers = []

    class Served:
        def __init__(self, config, drain):
            self.app = config.app

        def run(self):
            with TestClient(self.app) as c:
                answers.append(c.post("/predict", json={"inputs": [[t] for t in texts]}).json())

    monkeypatch.setattr(Engine, "run", spy)
    monkeypatch.setattr(command, "load_pipeline",
                        lambda *a, **k: where["load"].add(threading.get_ident()) or classifier)
    monkeypatch.setattr("coulisse.interfaces.server.detect.served_task", lambda task, *a: "text-classification")
    monkeypatch.setattr("coulisse.interfaces.server.protocol.DrainingServer", Served)
    monkeypatch.setattr(command.signal, "signal", lambda *a: None)
    result = CliRunner().invoke(cli, ["serve", "-m", "mini", "--port", "0"])
    assert result.exit_code == 0, result.output
    assert [[a["label"] for a in answer] for answer in answers[0]] == expected
    torch_ident = torch_thread().submit(threading.get_ident).result()
    assert where == {"load": {torch_ident}, "engine": {torch_ident}}  # the warm-up and both batches' runs


def test_fast_next_to_quantize_is_one_line(tf_camembert_dir):
    result = CliRunner().invoke(cli, ["serve", "-m", str(tf_camembert_dir), "--fast", "--quantize", "int8"])
    assert result.exit_code == 2 and "Traceback" not in result.output  # a usage error, before any model loads
    assert result.output.strip().splitlines()[-1] == ("Error: --fast picks the precision itself; drop --quantize "
                                                      "int8, or drop --fast.")


@pytest.mark.parametrize("args, said", [
    (["--fast", "--dtype", "bfloat16"], "--fast picks the precision itself; drop --dtype bfloat16, or drop --fast."),
    (["-q", "int8", "--dtype", "bfloat16"], "--quantize int8 runs beside float32 layers, not bfloat16 ones; drop "
                                            "--dtype bfloat16, or drop --quantize."),
])
def test_precisions_that_contradict_each_other_are_usage_errors(tf_camembert_dir, args, said):
    """int8 beside bf16 layers crashed every request (LayerNorm: mixed dtype) after a 122-line traceback at the
    warm-up; --fast beside --dtype was the library's InputError, exit 1 (audit 43)."""
    result = CliRunner().invoke(cli, ["serve", "-m", str(tf_camembert_dir), *args])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert result.output.strip().splitlines()[-1] == f"Error: {said}"


@pytest.mark.parametrize("names, said", [
    (["a", "a"], "two models are served as 'a'; give each its own --served-model-name."),
    (["a", ""], "--served-model-name is empty; give the model a name"),
])
def test_served_names_are_checked_before_any_model_loads(tmp_path, names, said):
    """Two models under one name were refused once both had loaded, and an empty name fell back to the path
    (audit 43): usage errors now, before the models are looked for (these folders do not exist)."""
    args = ["serve", "--port", "0", "-m", str(tmp_path / "x"), "-m", str(tmp_path / "y")]
    result = CliRunner().invoke(cli, [*args, *[a for n in names for a in ("--served-model-name", n)]])
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    assert said in result.output.strip().splitlines()[-1]


# -- real processes ---------------------------------------------------------------------------------------


def start(model, *args, **env_vars) -> tuple[subprocess.Popen, str]:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("COULISSE_") and k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME")}
    env.update(OMP_DISPLAY_ENV="VERBOSE", **env_vars)
    # A file, not a pipe nobody reads while the server runs: its access log (a line per request) would fill it.
    log = tempfile.TemporaryFile("w+")  # noqa: SIM115 - open while the server runs; stop() reads it
    proc = subprocess.Popen([*SERVE, "--model", str(model), "--port", str(port), *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=log, text=True)
    proc.log = log
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"the server exited with {proc.returncode}:\n{stop(proc)}")
        try:
            if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                return proc, base
        except httpx.TransportError:
            time.sleep(0.2)
    proc.kill()
    pytest.fail("the server did not answer /health within 180 s")


def stop(proc) -> str:
    """Its stderr, which holds what libgomp read from the environment when torch loaded."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    proc.log.seek(0)
    return proc.log.read()


def openmp_read(stderr: str, name: str) -> str:
    found = re.findall(rf"^\s*{name} = '([^']*)'", stderr, re.M)
    assert found, f"no {name} in OMP_DISPLAY_ENV's output:\n{stderr[-2000:]}"
    return found[0]


def fresh_thread_count() -> int:
    """torch's own default in a new process (this one runs tests on one thread), at most a container's CPU
    limit rounded up (`coulisse.engine.cpu_limit`: a server in this process's cgroup runs no more)."""
    out = subprocess.run([sys.executable, "-c", "import torch; print(torch.get_num_threads())"],
                         capture_output=True, text=True, check=True)
    return capped(int(out.stdout))


@pytest.mark.slow
@needs_openmp
def test_fast_server_says_its_precision_and_sets_a_short_spin(tf_camembert_dir):
    """--fast (as COULISSE_FAST) with nothing set: /info says what --fast resolved to, as pipeline(fast=True)
    resolves it in this process; the server sets its short spin count before torch loads (libgomp read it, not
    its default 300,000), says so, and every batch runs on torch's own count."""
    proc, base = start(tf_camembert_dir, COULISSE_FAST="1")
    try:
        info = httpx.get(f"{base}/info").json()
        assert httpx.post(f"{base}/predict", json={"inputs": "Bof."}).status_code == 200
    finally:
        err = stop(proc)
    oracle = coulisse.pipeline("sentiment-analysis", model=str(tf_camembert_dir), fast=True).preparation
    assert info["fast"] is True
    assert info["model_dtype"] == ("int8" if oracle.quantize else str(oracle.dtype).removeprefix("torch."))
    assert openmp_read(err, "GOMP_SPINCOUNT") == SERVER_SPINCOUNT != "300000"
    assert info["omp_wait_policy"] == (f"GOMP_SPINCOUNT={SERVER_SPINCOUNT} (coulisse's; set OMP_WAIT_POLICY or "
                                       "GOMP_SPINCOUNT to choose)")
    n = fresh_thread_count()
    assert info["threads"] == {"threads": n, "chosen_by": "coulisse", "idle_threads_spin": True,
                               "cpu_limit": cpu_limit()}


@pytest.mark.slow
@needs_openmp
def test_the_users_settings_win(tf_camembert_dir):
    """The user's spin count: libgomp read it and /info says threads spin; the user's wait policy and
    --threads: libgomp read it, every batch runs on that count. Without --fast, /info says exact fp32."""
    proc, base = start(tf_camembert_dir, GOMP_SPINCOUNT="1234")
    try:
        info = httpx.get(f"{base}/info").json()
    finally:
        err = stop(proc)
    assert openmp_read(err, "GOMP_SPINCOUNT") == "1234"
    assert info["omp_wait_policy"] == "GOMP_SPINCOUNT=1234 (yours)"
    n = fresh_thread_count()
    assert info["threads"] == {"threads": n, "chosen_by": "coulisse", "idle_threads_spin": True,
                               "cpu_limit": cpu_limit()}
    assert (info["fast"], info["model_dtype"]) == (False, "float32")
    proc, base = start(tf_camembert_dir, "--threads", "1", OMP_WAIT_POLICY="ACTIVE")
    try:
        info = httpx.get(f"{base}/info").json()
    finally:
        err = stop(proc)
    assert openmp_read(err, "OMP_WAIT_POLICY") == "ACTIVE"
    assert info["threads"] == {"threads": 1, "chosen_by": "--threads", "idle_threads_spin": True,
                               "cpu_limit": cpu_limit()}


@pytest.mark.slow
@pytest.mark.parametrize("command", ["serve", "studio"])
def test_ctrl_c_while_a_model_loads_stops_at_once(command, tmp_path):
    """The load runs on the torch thread: Python waited at exit for it to end (a Hub download, the weights, the
    warm-up), and a second Ctrl-C aborted inside torch (audit 40, review). Ctrl-C now ends the process at once,
    exit 130, without a traceback."""
    started = tmp_path / "started"
    code = ("import time, coulisse.interfaces.options as o\n"
            "def slow(*a, **k):\n"
            f"    open({str(started)!r}, 'w').close()\n"
            "    time.sleep(60)\n"
            "o.load_pipeline = slow\n"
            "import coulisse.interfaces.server.command as s, coulisse.interfaces.studio.command as st\n"
            "s.load_pipeline = st.load_pipeline = slow\n"
            "s.served_task = lambda task, *a: 'text-classification'\n"
            "import coulisse.interfaces.server.detect as d\n"
            "d.served_task = s.served_task\n"
            "from coulisse.interfaces.cli import main\n"
            "main()\n")
    # A shell starts background jobs with SIGINT ignored, and Python keeps an ignored SIGINT ignored.
    proc = subprocess.Popen([sys.executable, "-c", code, command, "-m", "some-model", "--port", "0"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 120
    while not started.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert started.exists(), proc.stderr.read() if proc.poll() is not None else "the load never began"
    sent = time.monotonic()
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=30) == 130
    assert time.monotonic() - sent < 10  # not the 60 s the load would take
    assert "Traceback" not in proc.stderr.read()

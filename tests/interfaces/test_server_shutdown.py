"""A real `coulisse serve` process on 127.0.0.1: SIGTERM with requests in flight answers them all, exits 0;
Ctrl-C (SIGINT) stops it cleanly with exit status 130."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("uvicorn")

IN_FLIGHT = 8
# What the `coulisse` script runs (`python -m coulisse.interfaces.cli` would import cli.py twice).
SERVE = [sys.executable, "-c", "from coulisse.interfaces.cli import main; main()", "serve"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def metric(base: str, name: str) -> float:
    for line in httpx.get(f"{base}/metrics", timeout=5).text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0


def start_server(model, **env_vars) -> tuple[subprocess.Popen, str]:
    """A `coulisse serve` process, once /health answers 200."""
    port = free_port()
    env = {**os.environ, **env_vars}
    env.pop("COULISSE_API_KEY", None)
    proc = subprocess.Popen(
        [*SERVE, "--model", str(model), "--host", "127.0.0.1", "--port", str(port)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        # A shell starts background jobs with SIGINT ignored, and Python keeps an ignored SIGINT ignored.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"the server exited with {proc.returncode}:\n{proc.stdout.read()}")
        try:
            if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            time.sleep(0.1)
    else:
        proc.kill()
        pytest.fail("the server did not answer /health within 120 s")
    return proc, base


@pytest.fixture(scope="module")
def server(tf_camembert_dir):
    # A long deadline and no count limit: the requests wait in the queue when SIGTERM arrives.
    proc, base = start_server(tf_camembert_dir, COULISSE_MAX_WAIT_MS="1500", COULISSE_MAX_BATCH_REQUESTS="1000")
    yield proc, base
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def test_a_client_that_hangs_up_costs_no_compute(server):
    """Over a real socket: the request waits for its batch's deadline; the client leaves before it."""
    _, base = server
    port = int(base.rsplit(":", 1)[1])
    body = b'{"inputs": [["un"], ["deux"], ["trois"]]}'
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(b"POST /predict HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
                  b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
        deadline = time.monotonic() + 20
        while metric(base, "te_queue_size") < 3:
            assert time.monotonic() < deadline, "the inputs never reached the queue"
            time.sleep(0.02)
    deadline = time.monotonic() + 20
    while metric(base, "te_batch_dropped_inputs") < 3:
        assert time.monotonic() < deadline, "the inputs of a gone client were not dropped"
        time.sleep(0.05)
    assert metric(base, "te_batch_next_size_count") == 0  # no batch ever ran
    assert metric(base, 'te_request_failure{err="cancelled"}') == 1


def test_sigterm_finishes_in_flight_requests_and_exits_0(server, tf_camembert_dir):
    """Last in this module: it stops the server."""
    proc, base = server
    texts = [f"Film numéro {i}, plutôt réussi." for i in range(IN_FLIGHT)]
    with ThreadPoolExecutor(IN_FLIGHT) as pool:
        pending = [pool.submit(httpx.post, f"{base}/predict", json={"inputs": t}, timeout=60) for t in texts]
        deadline = time.monotonic() + 20
        while metric(base, "te_requests_in_flight") < IN_FLIGHT:
            assert time.monotonic() < deadline, "the requests never reached the queue"
            time.sleep(0.02)
        proc.send_signal(signal.SIGTERM)
        refused = False
        for _ in range(50):  # the listening socket closes at once; in-flight requests go on
            try:
                httpx.get(f"{base}/health", timeout=0.5)
            except httpx.TransportError:
                refused = True
                break
            time.sleep(0.02)
        responses = [f.result() for f in pending]
    code = proc.wait(timeout=60)
    output = proc.stdout.read()
    assert [r.status_code for r in responses] == [200] * IN_FLIGHT, output
    assert all(r.json()[0]["label"] in ("POSITIVE", "NEGATIVE") for r in responses)
    assert refused, "new connections should be refused once SIGTERM arrived"
    assert code == 0, output
    # the first line says which model answers, for which task, in what precision
    assert output.splitlines()[0] == f"coulisse serve: {tf_camembert_dir} (text-classification, float32)", output


def test_ctrl_c_stops_cleanly_with_130(tf_camembert_dir):
    proc, base = start_server(tf_camembert_dir)
    try:
        assert httpx.post(f"{base}/predict", json={"inputs": "Super film !"}, timeout=30).status_code == 200
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    output = proc.stdout.read()
    assert code == 130, output
    assert "Aborted" not in output and "Traceback" not in output, output
    assert "Finished server process" in output, output  # uvicorn's graceful shutdown ran


@pytest.mark.parametrize("host", ["::", "[::]"])
def test_listening_on_all_ipv6_addresses_takes_ipv4_too(host):
    """`--host ::` bound IPv6 only (asyncio's default), so an IPv4 cluster's probes were refused and the pod never
    became ready (audit 44); TEI's `::` takes both. `[::]`, as URLs write it, was refused."""
    if not socket.has_ipv6:
        pytest.skip("no IPv6 on this machine")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("COULISSE_API_KEY", "COULISSE_PORT", "PORT")}
    proc = subprocess.Popen([*SERVE, "--model", "coulisse/mini-allocine", "--host", host, "--port", str(port),
                             "--api-key", "k"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline, answers = time.monotonic() + 120, {}
        while time.monotonic() < deadline and len(answers) < 2 and proc.poll() is None:
            for base in (f"http://127.0.0.1:{port}", f"http://[::1]:{port}"):
                try:
                    answers[base] = httpx.get(f"{base}/health", timeout=1).status_code
                except httpx.TransportError:
                    time.sleep(0.1)
        assert answers == {f"http://127.0.0.1:{port}": 200, f"http://[::1]:{port}": 200}, (
            answers, proc.poll() is not None and proc.stdout.read())
    finally:
        proc.terminate()
        proc.wait(30)
    assert f"running on http://[::]:{port} (every IPv6 and IPv4 address)" in proc.stdout.read()

"""`coulisse serve` says at start when a container's memory limit may not hold its models and its bodies in flight
(an out-of-memory kill is silent: exit 137, no log line; audit 48), with the setting that bounds them."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

import coulisse.engine.memory_limit as memory
from coulisse.defaults import BUNDLED_MODEL, bundled_dir
from coulisse.interfaces.server import command

MB = 1_000_000


def warned(caplog, monkeypatch, limit: int | None, held: int, in_flight: int) -> str:
    monkeypatch.setattr(memory, "memory_limit", lambda: limit)
    monkeypatch.setattr(memory, "resident_bytes", lambda: held)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="coulisse.interfaces.server.command"):
        command.check_memory(in_flight)
    return caplog.text


def test_the_warning_names_the_setting_that_fits(caplog, monkeypatch):
    text = warned(caplog, monkeypatch, 400 * MB, 300 * MB, 64 * MB)
    assert "memory limit is 400 MB; the server holds 300 MB" in text
    assert "4 x --max-payload-in-flight = 256 MB more" in text and "exit 137" in text
    assert f"Pass --max-payload-in-flight {100 * MB // 4} or less" in text
    assert "Raise the limit: the models alone" in warned(caplog, monkeypatch, 300 * MB, 310 * MB, 64 * MB)


def test_no_warning_where_it_fits_or_without_a_limit(caplog, monkeypatch):
    assert warned(caplog, monkeypatch, 2_000 * MB, 300 * MB, 64 * MB) == ""
    assert warned(caplog, monkeypatch, None, 300 * MB, 64 * MB) == ""


def memory_cgroup(limit: int) -> Path | None:
    """A cgroup of this machine limited to `limit` bytes (v1's memory controller, else v2); None where a test
    cannot make one."""
    name = f"coulisse-test-{uuid.uuid4().hex[:8]}"
    for folder, limit_file in ((Path("/sys/fs/cgroup/memory") / name, "memory.limit_in_bytes"),
                               (Path("/sys/fs/cgroup") / name, "memory.max")):
        if not (folder.parent / limit_file).exists() and not (folder.parent / "cgroup.subtree_control").exists():
            continue
        try:
            folder.mkdir()
            (folder / limit_file).write_text(str(limit))
            return folder
        except OSError:
            if folder.exists():
                folder.rmdir()
    return None


def test_a_real_server_under_a_tight_limit_says_so_at_start(tmp_path):
    """The bundled model's server in a cgroup of 500 MB (it holds ~300 MB loaded; bodies in flight may take 4 x
    64 MB by default): the warning, before uvicorn's first line."""
    if os.geteuid() != 0:
        pytest.skip("needs root to make a cgroup")
    folder = memory_cgroup(500 * MB)
    if folder is None:
        pytest.skip("no memory cgroup this test can make")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    main = "import sys; from coulisse.interfaces.cli import main; sys.argv[0] = 'coulisse'; main()"
    proc = subprocess.Popen([sys.executable, "-c", main, "serve", "-m", str(bundled_dir(BUNDLED_MODEL)), "--port",
                             str(port)], stderr=subprocess.PIPE, text=True, cwd=tmp_path,
                            preexec_fn=lambda: (folder / "cgroup.procs").write_text(str(os.getpid())))
    try:
        lines = []
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            line = proc.stderr.readline()
            if not line or "Started server process" in line:
                break
            lines.append(line)
    finally:
        proc.terminate()
        proc.wait(timeout=60)
        for _ in range(50):
            try:
                folder.rmdir()
                break
            except OSError:
                time.sleep(0.1)
    said = "".join(lines)
    assert "this container's memory limit is 500 MB" in said, said
    assert "Pass --max-payload-in-flight" in said

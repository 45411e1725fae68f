"""A corpus job in a real `coulisse` process, and a wait on its commit record: the kill -9 / lock tests' tools."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

from coulisse.interfaces.jobs.state import state_path

MAIN = "from coulisse.interfaces.cli import main; main()"


def start_job(command: str, model, source, output, *extra) -> subprocess.Popen:
    """`coulisse COMMAND -m MODEL -i SOURCE -o OUTPUT -b 8 -t 1 --quiet EXTRA…`, free of the caller's COULISSE_*
    settings. A shell starts background jobs with SIGINT ignored, and Python keeps an ignored SIGINT ignored:
    the child gets the default handler back, so a test can stop it as Ctrl-C would."""
    cmd = [sys.executable, "-c", MAIN, command, "-m", str(model), "-i", str(source), "-o", str(output),
           "-b", "8", "-t", "1", "--quiet", *extra]
    env = {k: v for k, v in os.environ.items() if not k.startswith("COULISSE_")}
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def wait_rows(proc, output, rows: int, timeout: float = 300, poll: float = 0.05) -> int:
    """Poll the state record until `rows` are committed; the process must still be running."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            done = json.loads(state_path(output).read_text())["rows"]
        except (FileNotFoundError, ValueError, KeyError):
            done = 0
        if done >= rows:
            return done
        assert proc.poll() is None, proc.communicate()
        time.sleep(poll)
    raise AssertionError(f"{rows} rows were not committed in {timeout} s")

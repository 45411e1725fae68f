"""A process forked after a pipeline ran on several threads: the child's calls finish with the parent's results
(they hung forever: libgomp's team of the thread that forked does not survive fork, audit 45), through
`os.fork()` and a `multiprocessing` pool with the fork start method, exact and int8; a pipeline built in the
child, the model called by hand and plain torch there finish too; a fork while another thread holds the
tokenizer's lock leaves the child a free one; and the process's torch thread (the server's and the studio's)
is the child's own. Each case runs in a fresh interpreter, which kills a hung child after a deadline and says so.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

if not hasattr(__import__("os"), "fork"):
    pytest.skip("no fork() on this platform", allow_module_level=True)

SCRIPT = r'''
import multiprocessing, os, signal, sys, threading, time
import torch
from coulisse import pipeline
from coulisse.engine.threads import torch_thread

torch.set_num_threads(2)  # a team of two in the thread that forks, whatever the machine's cores
pipe = pipeline("sentiment-analysis", model="coulisse/mini-allocine", quantize=sys.argv[1] or None)
texts = ["Un film magnifique, des acteurs excellents.", "Quel navet, deux heures perdues !", "Bof."] * 6
want = pipe(texts)
assert torch_thread().submit(lambda: 1).result() == 1  # the parent's torch thread, made before the fork


def child(_):
    return pipe(texts)


def wait(pid):
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.1)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    return "hung"


pid = os.fork()
if pid == 0:
    ok = pipe(texts) == want and torch_thread().submit(lambda: 2).result() == 2
    os._exit(0 if ok else 3)
print("os.fork:", wait(pid))

# what runs torch on the thread that forked: a pipeline built there, the model called by hand, a tensor op
inputs = pipe.tokenizer(texts, padding=True, return_tensors="pt")
logits = pipe.model(**inputs).logits
pid = os.fork()
if pid == 0:
    again = pipeline("sentiment-analysis", model="coulisse/mini-allocine", quantize=sys.argv[1] or None)
    same = again(texts) == want and torch.allclose(pipe.model(**inputs).logits, logits, atol=1e-6)
    big = torch.randn(512, 512)
    os._exit(0 if same and torch.allclose((big @ big).sum(), (big @ big).sum()) else 3)
print("built in the child:", wait(pid))

# fork while another thread of the parent holds the tokenizer's lock (tokenizing)
held, release = threading.Event(), threading.Event()
def hold():
    with pipe.tokenizer._lock:
        held.set()
        release.wait()
holder = threading.Thread(target=hold)
holder.start()
held.wait()
pid = os.fork()
if pid == 0:
    os._exit(0 if pipe(texts) == want else 3)
release.set()
holder.join()
print("lock held at fork:", wait(pid))
pool = multiprocessing.get_context("fork").Pool(2)
result = pool.map_async(child, range(2))
try:
    print("fork pool:", "same" if result.get(timeout=90) == [want, want] else "different")
except multiprocessing.TimeoutError:
    print("fork pool: hung")
pool.terminate()
'''


@pytest.mark.parametrize("quantize", ["", "int8"])
def test_a_forked_child_runs_the_pipeline_with_the_parents_results(quantize):
    done = subprocess.run([sys.executable, "-c", SCRIPT, quantize], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.splitlines() == ["os.fork: 0", "built in the child: 0", "lock held at fork: 0",
                                        "fork pool: same"], (done.stdout, done.stderr[-2000:])

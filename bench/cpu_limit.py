"""Threads under a container's CPU quota (not a test): what `coulisse.engine.cpu_limit` caps, measured.

    sudo python bench/cpu_limit.py                                   # quotas 1 and 1.5 CPUs, 1 and 2 threads
    sudo python bench/cpu_limit.py --quotas 1,1.5,none --threads 1,2,4 --model /path/to/model

Each setting is a fresh process put in a cgroup of this machine with that quota (v1's cpu controller, else v2's
cpu.max; root only) before torch loads, running a pipeline without `threads=` on torch's count set to the setting
(`torch.set_num_threads` in the process, so coulisse's own cap stays out of the way:
`coulisse.engine.engine.thread_cap` is patched to None). It measures one short French sentence at a time (p50 and
p90 ms over 100 calls after 5 warm-ups) and a corpus's work (the Allociné sample's first reviews, or bench_texts's,
in calls of 32: reviews per second, best of 2). Settings run in turn, quota by quota, and the ratios compare the
thread counts within one quota, measured minutes apart at most.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

CHILD = r"""
import json, sys, time
threads, model, n = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
import torch
torch.set_num_threads(threads)
import coulisse
from coulisse.engine import engine
engine.thread_cap = lambda: None  # the count under test, not coulisse's cap
from coulisse.engine.cpu_limit import cpu_limit
sys.path.insert(0, sys.argv[4])
from bench_texts import load_texts
texts, _ = load_texts(n)
pipe = coulisse.pipeline("text-classification", model=model)
short = "Je déteste tellement ça !"
for _ in range(5):
    pipe(short)
times = []
for _ in range(100):
    t = time.perf_counter(); pipe(short); times.append(1000 * (time.perf_counter() - t))
times.sort()
pipe(texts[:8])
runs = []
for _ in range(2):
    t = time.perf_counter(); pipe(texts, batch_size=32); runs.append(time.perf_counter() - t)
print(json.dumps({"threads": torch.get_num_threads(), "cpu_limit": cpu_limit(), "p50": times[50], "p90": times[90],
                  "reviews_s": n / min(runs)}))
"""


def cgroup(quota: float | None) -> Path | None:
    """A cgroup with `quota` CPUs (None: no limit, no cgroup); its cgroup.procs file."""
    if quota is None:
        return None
    name = f"coulisse-bench-{uuid.uuid4().hex[:8]}"
    v1 = Path("/sys/fs/cgroup/cpu")
    if (v1 / "cpu.cfs_quota_us").exists():
        folder = v1 / name
        folder.mkdir()
        (folder / "cpu.cfs_quota_us").write_text(str(int(quota * 100_000)))
    else:
        folder = Path("/sys/fs/cgroup") / name
        folder.mkdir()
        (folder / "cpu.max").write_text(f"{int(quota * 100_000)} 100000")
    return folder / "cgroup.procs"


def measure(procs: Path | None, threads: int, model: str, n: int) -> dict:
    """One setting in a fresh process, put in the cgroup between fork and exec (before torch loads)."""
    def enter() -> None:
        if procs is not None:
            procs.write_text(str(os.getpid()))

    out = subprocess.run([sys.executable, "-c", CHILD, str(threads), model, str(n), str(BENCH)],
                         capture_output=True, text=True, check=True, preexec_fn=enter)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quotas", default="1,1.5", help="CPUs per setting, 'none' for no limit (default: 1,1.5)")
    parser.add_argument("--threads", default="1,2", help="torch threads to compare (default: 1,2)")
    parser.add_argument("--model", default=str(Path.home() / ".cache/coulisse-bench/camembert-base-random"),
                        help="a classifier folder (default: coulisse bench's camembert-base-sized one)")
    parser.add_argument("-n", type=int, default=64, help="reviews for the throughput (default: 64)")
    args = parser.parse_args()
    quotas = [None if q == "none" else float(q) for q in args.quotas.split(",")]
    counts = [int(t) for t in args.threads.split(",")]
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}; model {args.model}")
    print(f"{'quota':>6} {'threads':>7} {'p50 ms':>8} {'p90 ms':>8} {'reviews/s':>10}  vs {counts[0]} thread(s)")
    for quota in quotas:
        procs = cgroup(quota)
        try:
            rows = [measure(procs, t, args.model, args.n) for t in counts]
        finally:
            if procs is not None:
                procs.parent.rmdir()
        for row in rows:
            ratio = f"p50 {row['p50'] / rows[0]['p50']:.2f}x, reviews/s {row['reviews_s'] / rows[0]['reviews_s']:.2f}x"
            print(f"{quota if quota is not None else 'none':>6} {row['threads']:>7} {row['p50']:>8.1f} "
                  f"{row['p90']:>8.1f} {row['reviews_s']:>10.1f}  {ratio}")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()

"""Latency and throughput under CPU contention (not a test): torch threads × OpenMP wait policy × busy neighbours.

    python bench/contention.py                                    # both models, pipeline and server
    python bench/contention.py --models bundled --parts pipeline --seconds 4
    python bench/contention.py --docs docs/benchmarks.md          # write the table there

On a machine with few cores, another busy process makes torch's OpenMP team wait at every barrier for a
thread the kernel has descheduled; libgomp's default wait (spinning ~300,000 times, a few ms, before it
sleeps) then burns the time slice the late thread needs. Measured here, per setting:

- **request latency**: one short French sentence (`Je déteste tellement ça !`), one at a time, through a
  pipeline (`pipe(text)`, in a worker process) and through `coulisse serve` (one client, sequential
  `POST /predict` on a keep-alive connection): p50, p99 and min in ms;
- **throughput**: a corpus job's work, reviews (bench_texts.py's; Allociné when the file is there) in chunks
  of 8 (about one 1,024-token engine batch) through the same pipeline: reviews per second.

Settings: torch threads (2, 1; the server also "auto", what `coulisse serve` chooses by itself) and the
OpenMP wait policy, which libgomp reads once when torch loads, so each setting is a fresh process with its
environment: `spin` is libgomp's default (written GOMP_SPINCOUNT=300000, its value when nothing is set, so
coulisse's own policy leaves it alone), `passive` is OMP_WAIT_POLICY=PASSIVE (sleep at once), `auto` (server
only) sets nothing and lets coulisse choose. Neighbours: 0, 1 (a Python busy loop) or 2 (that, and a process
running 512×512 torch matmuls on 2 threads). Each neighbour count runs every setting, interleaved, so the
machine's own background load (printed as the load average) is shared by the settings it compares.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
SECTION = "### Under contention: threads and OpenMP wait policy (bench/contention.py)"
POLICIES = {"spin": {"GOMP_SPINCOUNT": "300000"}, "passive": {"OMP_WAIT_POLICY": "PASSIVE"},
            "short-spin": {"GOMP_SPINCOUNT": "10000"}, "spin-30k": {"GOMP_SPINCOUNT": "30000"},
            "spin-1000": {"GOMP_SPINCOUNT": "1000"}, "spin-3000": {"GOMP_SPINCOUNT": "3000"}, "auto": {}}
NEIGHBOURS = [
    [],
    [[sys.executable, "-c", "while True: pass"]],
    [[sys.executable, "-c", "while True: pass"],
     [sys.executable, "-c", "import torch\ntorch.set_num_threads(2)\na = torch.randn(512, 512)\n"
                            "while True: a @ a"]],
]
CHUNK = 8  # reviews per call: about one engine batch (1,024 tokens) of base-model reviews
WAIT_VARIABLES = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME", "COULISSE_THREADS")


def quantiles(seconds: list[float]) -> dict:
    ordered = sorted(seconds)
    return {"n": len(ordered), "p50": 1000 * statistics.median(ordered),
            "p99": 1000 * ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))], "min": 1000 * ordered[0]}


def pipeline_worker(model: str, threads: list[int], seconds: float, most: int) -> None:
    """Thread counts alternate request by request (and chunk by chunk), so they share the machine's load."""
    import bench_texts
    import torch

    from coulisse import pipeline

    pipe = pipeline("text-classification", model=model)
    reviews, _ = bench_texts.load_texts(96)
    chunks = [reviews[i:i + CHUNK] for i in range(0, len(reviews), CHUNK)]
    latencies: dict[int, list[float]] = {n: [] for n in threads}
    for n in threads:  # warm-up: the first call on each count pays one-off costs
        torch.set_num_threads(n)
        pipe(bench_texts.SHORT_SENTENCE)
    stop, i = time.monotonic() + seconds * len(threads), 0
    while min(map(len, latencies.values())) < most and (time.monotonic() < stop or
                                                        min(map(len, latencies.values())) < 5):
        n = threads[i % len(threads)]
        i += 1
        torch.set_num_threads(n)
        start = time.perf_counter()
        pipe(bench_texts.SHORT_SENTENCE)
        latencies[n].append(time.perf_counter() - start)
    done, spent = dict.fromkeys(threads, 0), dict.fromkeys(threads, 0.0)
    stop, i = time.monotonic() + seconds * len(threads), 0
    while time.monotonic() < stop or min(done.values()) == 0:
        n = threads[i % len(threads)]
        chunk = chunks[(i // len(threads)) % len(chunks)]
        i += 1
        torch.set_num_threads(n)
        start = time.perf_counter()
        done[n] += len(pipe(chunk, truncation=True))
        spent[n] += time.perf_counter() - start
    for n in threads:
        print(json.dumps({"threads": n, "latencies": latencies[n], "done": done[n], "spent": spent[n]}), flush=True)


# -- from the parent: runs and the server ---------------------------------------------------------------


def environment(policy: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in WAIT_VARIABLES}
    env.update(POLICIES[policy])
    return env


def run_pipeline(model: str, policy: str, args) -> list[dict]:
    cmd = [sys.executable, __file__, "--worker", model, "--threads", args.threads, "--seconds", str(args.seconds),
           "--requests", str(args.requests)]
    done = subprocess.run(cmd, env=environment(policy), capture_output=True, text=True, timeout=900)
    if done.returncode:
        raise SystemExit(f"the worker failed: {done.stderr[-2000:]}")
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]


def run_server(model: str, policy: str, threads: str, args) -> dict:
    """One client, sequential requests, against a fresh server with this setting's environment."""
    from load_test import Connection, free_port

    port = free_port()
    cmd = [sys.executable, "-c", "from coulisse.interfaces.cli import main; main()", "serve", "--model", model,
           "--port", str(port), "--no-access-log"] + ([] if threads == "auto" else ["--threads", threads])
    proc = subprocess.Popen(cmd, env=environment(policy), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    body = json.dumps({"inputs": __import__("bench_texts").SHORT_SENTENCE}, ensure_ascii=False).encode()

    async def measure() -> list[float]:
        conn = Connection("127.0.0.1", port)
        deadline = time.monotonic() + 300
        while True:
            try:
                if (await conn.request("GET", "/health"))[0] == 200:
                    break
            except OSError:
                conn.close()
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the server did not start: {proc.stderr.read()[-2000:]}")
            await asyncio.sleep(0.2)
        await conn.request("POST", "/predict", body)  # warm-up
        out: list[float] = []
        stop = time.monotonic() + args.seconds
        while len(out) < args.requests and (time.monotonic() < stop or len(out) < 5):
            start = time.perf_counter()
            status, _ = await conn.request("POST", "/predict", body)
            if status != 200:
                raise SystemExit(f"the server answered {status}")
            out.append(time.perf_counter() - start)
        conn.close()
        return out

    try:
        return {"latencies": asyncio.run(measure())}
    finally:
        proc.terminate()
        proc.wait(30)


def model_path(name: str) -> tuple[str, str]:
    if name == "bundled":
        return "coulisse/mini-allocine", "coulisse/mini-allocine (bundled default, 2 M parameters)"
    from load_test import default_model

    return default_model(), "camembert-base-sized random classifier (bench_model.py)"


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def measure_block(count: int, args, cells: dict) -> None:
    """Every setting once, for each model, under `count` neighbours; each cell's samples accumulate over rounds."""
    for name in args.models.split(","):
        model, described = model_path(name)
        settings = []
        if "pipeline" in args.parts:
            settings += [("pipeline", policy, None) for policy in args.policies.split(",")]
        if "server" in args.parts:
            settings += [("server", *setting.split(":")) for setting in args.server_settings.split(",")]
        for where, policy, threads in settings:
            if where == "pipeline":
                results = run_pipeline(model, policy, args)
            else:
                results = [{"threads": threads, **run_server(model, policy, threads, args)}]
            for r in results:
                cell = cells.setdefault((described, where, count, policy, str(r["threads"])),
                                        {"latencies": [], "done": 0, "spent": 0.0, "loads": []})
                cell["latencies"] += r["latencies"]
                cell["done"] += r.get("done", 0)
                cell["spent"] += r.get("spent", 0.0)
                cell["loads"].append(os.getloadavg()[0])
                summary = quantiles(r["latencies"])
                print(f"{described[:24]} {where} neighbours={count} {policy} threads={r['threads']}: p50 "
                      f"{summary['p50']:.1f} ms, min {summary['min']:.1f} ms; load {load()}", file=sys.stderr,
                      flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="bundled,base", help="bundled, base (the bench's camembert-base)")
    parser.add_argument("--parts", default="pipeline,server")
    parser.add_argument("--policies", default="spin,passive", help=f"of {', '.join(POLICIES)}")
    parser.add_argument("--server-settings", default="spin:2,passive:2,auto:auto",
                        help="POLICY:THREADS pairs for the server")
    parser.add_argument("--neighbours", default="0,1,2")
    parser.add_argument("--threads", default="2,1")
    parser.add_argument("--rounds", type=int, default=2, help="times each setting runs, interleaved")
    parser.add_argument("--seconds", type=float, default=4.0, help="most seconds per measurement and setting")
    parser.add_argument("--requests", type=int, default=100, help="most requests per measurement")
    parser.add_argument("--docs", type=Path, default=None, help=f"write the tables under '{SECTION}' there")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        pipeline_worker(args.worker, [int(t) for t in args.threads.split(",")], args.seconds, args.requests)
        return
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # the neighbours are stopped on the way out
    cells: dict = {}
    print(f"load average before: {load()}", file=sys.stderr)
    for _ in range(args.rounds):
        for count in (int(n) for n in args.neighbours.split(",")):
            neighbours = [subprocess.Popen(cmd, stdout=subprocess.DEVNULL) for cmd in NEIGHBOURS[count]]
            try:
                time.sleep(1.0)
                measure_block(count, args, cells)
            finally:
                for p in neighbours:
                    p.kill()
                    p.wait()
    text = report(cells, args)
    print(text)
    if args.docs:
        import load_test

        load_test.SECTION = SECTION  # its write_section replaces the section it names
        load_test.write_section(args.docs, text)


def report(cells: dict, args) -> str:
    from load_test import machine

    lines = [SECTION, "", f"`python bench/contention.py {' '.join(sys.argv[1:])}` on {machine()}; per cell "
             f"{args.rounds} rounds of at most {args.seconds:g} s or {args.requests} requests, settings interleaved; "
             "the load average is the machine's 1-minute one during the cell's runs (neighbours included).", ""]
    for model in dict.fromkeys(key[0] for key in cells):
        lines += [f"{model}:", "", "| where | neighbours | wait policy | threads | p50 ms | p99 ms | min ms "
                  f"| reviews/s ({CHUNK} per call) | load average |", "|---|---:|---|---:|---:|---:|---:|---:|---|"]
        for (_, where, count, policy, threads), cell in ((k, v) for k, v in cells.items() if k[0] == model):
            q = quantiles(cell["latencies"])
            rate = f"{cell['done'] / cell['spent']:.2f}" if cell["spent"] else "—"
            loads = cell["loads"]
            lines.append(f"| {where} | {count} | {policy} | {threads} | {q['p50']:.1f} | {q['p99']:.1f} | "
                         f"{q['min']:.1f} | {rate} | {min(loads):.1f}–{max(loads):.1f} |")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    main()

"""Resident memory over many batches of varied lengths, as a server or a Python loop sees them (not a test).

    python bench/rss_over_batches.py [--model DIR] [--mode fast|int8|exact] [--calls 200] [--per-call 8]
    python bench/rss_over_batches.py --calls 600 --per-call 1 --min-tokens 65   # a server's single requests
    ONEDNN_PRIMITIVE_CACHE_CAPACITY=1024 python bench/rss_over_batches.py   # oneDNN's own default bound

Each call classifies the next `--per-call` real Allociné reviews (the bench's sample, or its French
sentences when the sample is absent), so nearly every call has a token count of its own, then the first
calls run again. Prints the process's RSS (VmRSS) after every 50 calls and the seconds spent, then each
call's mean and median latency. `--min-tokens` keeps only reviews of at least that many tokens (int8 runs
64 rows or fewer on fbgemm, which makes no oneDNN primitive). oneDNN
makes one primitive per GEMM shape, token count included, and keeps up to ONEDNN_PRIMITIVE_CACHE_CAPACITY
of them; coulisse bounds that at `coulisse.engine.prepare.ONEDNN_CACHE_ENTRIES` unless the variable is set.
DIR defaults to the camembert-base-sized random model `coulisse bench` builds.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

from bench_texts import load_texts  # bench/ is run as a script folder

from coulisse import pipeline

DEFAULT_MODEL = Path.home() / ".cache" / "coulisse-bench" / "camembert-base-random"
MODES = {"fast": {"fast": True}, "int8": {"quantize": "int8"}, "exact": {}}


def rss_mb() -> int:
    with open("/proc/self/status", encoding="ascii") as f:
        return next(int(line.split()[1]) // 1024 for line in f if line.startswith("VmRSS"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--mode", choices=sorted(MODES), default="fast")
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--per-call", type=int, default=8)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--min-tokens", type=int, default=0)
    args = parser.parse_args()
    texts, source = load_texts(2000)
    pipe = pipeline("sentiment-analysis", model=str(args.model), threads=args.threads, **MODES[args.mode])
    if args.min_tokens:
        texts = [t for t in texts if len(pipe.tokenizer(t)["input_ids"]) >= args.min_tokens]
    pipe(texts[: args.per_call])
    print(f"{args.mode}, {source}; {os.environ.get('ONEDNN_PRIMITIVE_CACHE_CAPACITY')} oneDNN primitives at most "
          f"(ONEDNN_PRIMITIVE_CACHE_CAPACITY); loaded: RSS {rss_mb()} MB", flush=True)
    start, latencies = time.perf_counter(), []
    for call in range(args.calls):
        at = call * args.per_call % len(texts)
        began = time.perf_counter()
        pipe(texts[at: at + args.per_call])
        latencies.append(time.perf_counter() - began)
        if (call + 1) % 50 == 0 or call + 1 == args.calls:
            print(f"after {call + 1} calls: RSS {rss_mb()} MB, {time.perf_counter() - start:.1f} s", flush=True)
    start = time.perf_counter()
    again = min(50, args.calls)
    for call in range(again):
        pipe(texts[call * args.per_call: (call + 1) * args.per_call])
    print(f"the first {again} calls again: RSS {rss_mb()} MB, {time.perf_counter() - start:.1f} s")
    print(f"latency per call: mean {1e3 * statistics.mean(latencies):.1f} ms, "
          f"median {1e3 * statistics.median(latencies):.1f} ms ({len(texts)} texts)")


if __name__ == "__main__":
    main()

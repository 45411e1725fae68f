"""`coulisse serve` under load (not a test): 64 concurrent clients against the same server answering one
client's requests one after another. Goal: ≥ 3× the sequential throughput, no request failed or lost.

    python bench/server_load.py                                   # the bundled coulisse/mini-allocine
    python bench/server_load.py --requests 1024 --docs docs/benchmarks.md
    python bench/server_load.py --model tests/fixtures/tf_camembert --requests 32 --seconds 10

Texts: the first sentence of each review of ../shared/data/allocine-sample/train.csv (short reviews, as a
sentiment widget sends them); when that file is absent, bench_texts.py's short sentences, and the report
says so. One text per request (`POST /predict {"inputs": text}`), over raw HTTP/1.1 keep-alive
connections on 127.0.0.1 (load_test.py's client: an HTTP library would cost the shared CPU more than the
server). Both settings run against one server process, so the ratio is what dynamic batching and
concurrency give, with the model, the HTTP stack and the machine the same. load_test.py compares with
the in-process pipeline instead.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import os
import re
import signal
import statistics
import sys
from pathlib import Path

from load_test import Setting, batch_stats, free_port, machine, run_clients, start_server, table

ALLOCINE = Path(__file__).resolve().parents[2] / "shared" / "data" / "allocine-sample" / "train.csv"
SECTION = "## HTTP server under load: 64 clients vs sequential requests (bench/server_load.py)"
GOAL = 3.0


def first_sentences(path: Path, most: int) -> list[str]:
    """The first sentence of each review (at most 200 characters), in file order."""
    texts = []
    with path.open(encoding="utf-8", newline="") as f:
        for row in csv.DictReader(f):
            sentence = re.split(r"(?<=[.!?])\s", row["text"].strip(), maxsplit=1)[0][:200]
            if sentence:
                texts.append(sentence)
            if len(texts) >= most:
                break
    return texts


def load_texts(csv_path: Path) -> tuple[list[str], str]:
    if csv_path.is_file():
        return first_sentences(csv_path, 512), f"first sentences of {csv_path.name} (Allociné reviews)"
    import bench_texts

    print(f"{csv_path} is absent: using bench_texts.py's short sentences", file=sys.stderr)
    return list(bench_texts.FALLBACK), f"bench_texts.py's short sentences ({csv_path} absent)"


def bundled_model() -> str:
    from coulisse.defaults import BUNDLED_DIR

    return str(BUNDLED_DIR)


def measure(args, texts: list[str]) -> tuple[list[Setting], int]:
    """Sequential (1 client), then `--clients` concurrent clients, on one server; its exit code after SIGTERM."""
    port = free_port()
    proc = start_server(args, port)
    rows = []
    try:
        asyncio.run(run_clients("127.0.0.1", port, texts, 4, 8, args.seconds))  # warm-up, not counted
        for name, clients in (("sequential (1 client)", 1), (f"{args.clients} clients", args.clients)):
            start = asyncio.run(batch_stats("127.0.0.1", port))
            row = asyncio.run(run_clients("127.0.0.1", port, texts, clients, args.requests, args.seconds))
            end = asyncio.run(batch_stats("127.0.0.1", port))
            row.name, row.mean_batch = name, (end[0] - start[0]) / max(end[1] - start[1], 1)
            rows.append(row)
            print(f"{row.name}: {row.rate:.1f} req/s, p50 {row.quantile(0.5):.1f} ms", file=sys.stderr)
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=120)
    return rows, code


def write_section(path: Path, body: str) -> None:
    """Replace (or append) this benchmark's section only."""
    text = path.read_text(encoding="utf-8") if path.is_file() else "# Benchmarks\n"
    start = text.find(SECTION)
    if start < 0:
        text = text.rstrip("\n") + "\n\n" + body
    else:
        following = text.find("\n## ", start + len(SECTION))
        text = text[:start] + body + ("\n" + text[following + 1:] if following >= 0 else "")
    path.write_text(text.rstrip("\n") + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="checkpoint folder (default: the bundled mini-allocine)")
    parser.add_argument("--csv", type=Path, default=ALLOCINE, help="reviews (a `text` column)")
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--requests", type=int, default=512, help="most requests per setting")
    parser.add_argument("--seconds", type=float, default=60, help="most seconds per setting")
    parser.add_argument("--threads", type=int, default=None, help="the server's torch threads")
    parser.add_argument("--max-wait-ms", type=float, default=2.0)
    parser.add_argument("--max-batch-requests", type=int, default=64)
    parser.add_argument("--max-batch-tokens", type=int, default=4096)
    parser.add_argument("--docs", type=Path, default=None, help=f"write the table under '{SECTION}' there")
    args = parser.parse_args(argv)
    args.model = args.model or bundled_model()
    load = os.getloadavg()[0]
    texts, source = load_texts(args.csv)
    print(f"model {args.model}; texts: {source}; {machine()}", file=sys.stderr)
    (sequential, concurrent), code = measure(args, texts)
    ratio = concurrent.rate / sequential.rate if sequential.rate else float("nan")
    failed = sum(n for s, n in (*sequential.statuses.items(), *concurrent.statuses.items()) if s != 200)
    verdict = (f"{args.clients} clients: {ratio:.2f}× the sequential throughput (goal ≥ {GOAL:g}×: "
               f"{'met' if ratio >= GOAL else 'NOT met'}); {failed} request(s) failed or lost.")
    lengths = f"median {statistics.median(len(t) for t in texts):.0f} characters"
    command = "python bench/server_load.py " + " ".join(sys.argv[1:] if argv is None else argv)
    body = (f"{SECTION}\n\nMeasured with `{command}` on {machine()}; 1-minute load average before the run "
            f"{load:.2f} (anything else running shares these CPUs). Model: `{Path(args.model).name}`; texts: {source} "
            f"({lengths}); one text per request; --max-wait-ms {args.max_wait_ms}, --max-batch-requests "
            f"{args.max_batch_requests}, server threads: {args.threads or 'torch default'}. Server exit code "
            f"after SIGTERM: {code}.\n\n{table([concurrent], sequential)}\n\n{verdict}\n")
    print(body)
    if args.docs:
        write_section(args.docs, body)
    return 0 if failed == 0 and code == 0 else 1


if __name__ == "__main__":
    sys.exit(main())

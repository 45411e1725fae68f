"""Load test for `coulisse serve`: N concurrent clients on 127.0.0.1 vs the same model called in-process.

    python bench/load_test.py                          # camembert-base-sized classifier, short French texts
    python bench/load_test.py --texts allocine --clients 1,16,64 --requests 256 --seconds 60
    python bench/load_test.py --model tests/fixtures/tf_camembert --docs docs/benchmarks.md

Bounded: each setting stops issuing requests after --requests or --seconds, whichever comes first.
The in-process baseline runs before the server starts, after it stopped, and after that on one worker
thread as the server runs the model; the ratios use the fastest of the three, so neither a noisy
neighbour nor torch's threading can flatter the server.
Loopback only: the server listens on 127.0.0.1 and the clients are raw HTTP/1.1 keep-alive
connections written with asyncio streams (an HTTP library would cost the shared CPU more than the
server does). The baseline is `pipe(text)`, one text at a time, in this process. Every client sends
one text per request (`{"inputs": text}`), as a sentiment widget would.
The model defaults to the random camembert-base-sized classifier of bench_model.py (tblard/tf-allocine's
shape) and needs the `bench` extra (transformers) once, to build it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
SECTION = "## HTTP server (coulisse serve)"


@dataclass
class Setting:
    name: str
    latencies: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    sent: int = 0
    seconds: float = 0.0
    mean_batch: float | None = None

    @property
    def ok(self) -> int:
        return self.statuses.get(200, 0)

    @property
    def rate(self) -> float:
        return self.ok / self.seconds if self.seconds else 0.0

    def quantile(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000 if ordered else float("nan")


# -- a minimal HTTP/1.1 client ------------------------------------------------------------------------


class Connection:
    def __init__(self, host: str, port: int):
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        head = (f"{method} {path} HTTP/1.1\r\nHost: {self.host}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n\r\n").encode()
        self.writer.write(head + body)
        status = int((await self.reader.readline()).split()[1])
        length, close = 0, False
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            if name.lower() == "content-length":
                length = int(value)
            elif name.lower() == "connection" and value.strip().lower() == "close":
                close = True
        payload = await self.reader.readexactly(length)
        if close:
            self.close()
        return status, payload

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.reader = self.writer = None


async def run_clients(host: str, port: int, texts: list[str], clients: int, requests: int,
                      seconds: float) -> Setting:
    result = Setting(f"{clients} client{'s' if clients > 1 else ''}")
    bodies = [json.dumps({"inputs": t}, ensure_ascii=False).encode() for t in texts]
    stop_at = time.monotonic() + seconds

    async def client() -> None:
        conn = Connection(host, port)
        try:
            while result.sent < requests and time.monotonic() < stop_at:
                body = bodies[result.sent % len(bodies)]
                result.sent += 1
                start = time.perf_counter()
                try:
                    status, _ = await asyncio.wait_for(conn.request("POST", "/predict", body), timeout=120)
                except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, ValueError, IndexError):
                    conn.close()
                    status = -1  # lost: no answer
                result.statuses[status] = result.statuses.get(status, 0) + 1
                if status == 200:
                    result.latencies.append(time.perf_counter() - start)
        finally:
            conn.close()

    start = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    result.seconds = time.perf_counter() - start
    return result


async def batch_stats(host: str, port: int) -> tuple[float, float]:
    """(sum, count) of te_batch_next_size from /metrics."""
    conn = Connection(host, port)
    try:
        _, text = await conn.request("GET", "/metrics")
    finally:
        conn.close()
    values = dict(re.findall(r"^te_batch_next_size_(sum|count) (\S+)$", text.decode(), re.M))
    return float(values.get("sum", 0)), float(values.get("count", 0))


# -- the server process ---------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(args, port: int) -> subprocess.Popen:
    cmd = [sys.executable, "-c", "from coulisse.interfaces.cli import main; main()", "serve",
           "--model", args.model, "--host", "127.0.0.1", "--port", str(port),
           "--max-wait-ms", str(args.max_wait_ms), "--max-concurrent-requests", "1024",
           "--max-batch-requests", str(args.max_batch_requests),
           "--max-batch-tokens", str(args.max_batch_tokens),
           "--no-access-log"]  # measured as before the access log (a line per request), into a pipe nobody reads
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited with {proc.returncode}: {proc.stderr.read()}")
        try:
            status, _ = asyncio.run(Connection("127.0.0.1", port).request("GET", "/health"))
            if status == 200:
                return proc
        except OSError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise SystemExit("the server did not answer /health within 300 s")


# -- baseline, texts, machine ---------------------------------------------------------------------


def sequential(pipe, texts: list[str], args, name: str, thread: ThreadPoolExecutor | None = None) -> Setting:
    """`pipe(text)` one text at a time, on this thread or on one worker thread (as the server runs it)."""
    call = pipe if thread is None else (lambda text: thread.submit(pipe, text).result())
    call(texts[0])  # warm-up
    result = Setting(name)
    stop_at = time.monotonic() + args.baseline_seconds
    start = time.perf_counter()
    for i in range(args.requests):
        if time.monotonic() >= stop_at:
            break
        t = time.perf_counter()
        call(texts[i % len(texts)])
        result.latencies.append(time.perf_counter() - t)
        result.sent += 1
    result.seconds = time.perf_counter() - start
    result.statuses[200] = result.sent
    return result


def load_texts(kind: str) -> tuple[list[str], str]:
    import bench_texts

    if kind == "short":
        return list(bench_texts.FALLBACK), "the short French sentences of bench/bench_texts.py"
    return bench_texts.load_texts(256)


def default_model() -> str:
    import bench_model

    directory = bench_model.DEFAULT_DIR
    if not (directory / "model.safetensors").is_file():
        bench_model.build_model(directory)  # random weights, camembert-base's shape (needs transformers)
    return str(directory)


def machine() -> str:
    model = "unknown CPU"
    if shutil.which("lscpu"):
        for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
    return f"{model}, {os.cpu_count()} logical CPUs"


# -- report ---------------------------------------------------------------------------------------


def table(rows: list[Setting], base: Setting) -> str:
    lines = ["| setting | requests | 200 | failed | lost | req/s | × sequential | p50 ms | p99 ms "
             "| mean batch |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in [base, *rows]:
        failed = sum(n for s, n in r.statuses.items() if s not in (200, -1))
        batch = f"{r.mean_batch:.1f}" if r.mean_batch is not None else "—"
        lines.append(f"| {r.name} | {r.sent} | {r.ok} | {failed} | {r.statuses.get(-1, 0)} | {r.rate:.2f} | "
                     f"{r.rate / base.rate:.2f} | {r.quantile(0.5):.1f} | {r.quantile(0.99):.1f} | {batch} |")
    return "\n".join(lines)


def write_section(path: Path, body: str) -> None:
    """Replace (or append) this benchmark's section only; other sections belong to other benchmarks."""
    text = path.read_text(encoding="utf-8") if path.is_file() else "# Benchmarks\n"
    start = text.find(SECTION)
    if start < 0:
        text = text.rstrip("\n") + "\n\n" + body
    else:
        following = text.find("\n## ", start + len(SECTION))
        text = text[:start] + body + ("\n" + text[following + 1:] if following >= 0 else "")
    path.write_text(text.rstrip("\n") + "\n", encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="checkpoint folder (default: bench_model.py's)")
    parser.add_argument("--texts", choices=["short", "allocine"], default="short")
    parser.add_argument("--clients", default="1,16,64")
    parser.add_argument("--requests", type=int, default=256, help="most requests per setting")
    parser.add_argument("--seconds", type=float, default=60, help="most seconds per setting")
    parser.add_argument("--baseline-seconds", type=float, default=30,
                        help="most seconds per sequential run (one before the server, one after)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads, server and baseline")
    parser.add_argument("--max-wait-ms", type=float, default=2.0)
    parser.add_argument("--max-batch-requests", type=int, default=64)
    parser.add_argument("--max-batch-tokens", type=int, default=4096)
    parser.add_argument("--docs", type=Path, default=None, help=f"write the table under '{SECTION}' there")
    args = parser.parse_args()
    args.model = args.model or default_model()
    texts, source = load_texts(args.texts)
    clients = [int(c) for c in args.clients.split(",")]

    print(f"model {args.model}; texts: {source}; {machine()}", file=sys.stderr)
    import coulisse

    pipe = coulisse.pipeline("sentiment-analysis", model=args.model, threads=args.threads)
    before = sequential(pipe, texts, args, "sequential in-process, before")
    print(f"sequential: {before.rate:.2f} texts/s", file=sys.stderr)
    port = free_port()
    proc = start_server(args, port)
    rows = []
    try:
        asyncio.run(run_clients("127.0.0.1", port, texts, 4, 8, args.seconds))  # warm-up, not counted
        for n in clients:
            start = asyncio.run(batch_stats("127.0.0.1", port))
            row = asyncio.run(run_clients("127.0.0.1", port, texts, n, args.requests, args.seconds))
            end = asyncio.run(batch_stats("127.0.0.1", port))
            row.mean_batch = (end[0] - start[0]) / max(end[1] - start[1], 1)
            rows.append(row)
            print(f"{row.name}: {row.rate:.2f} req/s, p50 {row.quantile(0.5):.0f} ms", file=sys.stderr)
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=120)
    # On a shared machine one run can be unlucky, and torch's speed on the main thread and on the server's
    # worker thread can differ: the ratios use the fastest of three baselines.
    after = sequential(pipe, texts, args, "sequential in-process, after")
    with ThreadPoolExecutor(1) as thread:
        worker = sequential(pipe, texts, args, "sequential in-process, worker thread", thread)
    baselines = sorted([before, after, worker], key=lambda r: -r.rate)
    base = baselines[0]
    report = table([*baselines[1:], *rows], base)
    lengths = f"median {statistics.median(len(t) for t in texts):.0f} characters"
    command = "python bench/load_test.py " + " ".join(sys.argv[1:])
    body = (f"{SECTION}\n\nMeasured with `{command}` on {machine()}, a machine shared with other engineers' "
            f"test runs at the time (figures as measured, noisy). Model: `{args.model}`; texts: {source} "
            f"({lengths}); one text per request; server threads: {args.threads or 'torch default'}, "
            f"--max-wait-ms {args.max_wait_ms}, --max-batch-requests {args.max_batch_requests}. "
            f"Server exit code after SIGTERM: {code}.\n\n{report}\n")
    print(body)
    if args.docs:
        write_section(args.docs, body)


if __name__ == "__main__":
    main()

"""Peak memory of `coulisse classify --input` on 1,000 vs 1,000,000 rows: it must not grow with the file.

Each run is a fresh `coulisse` process started by a fresh wrapper, so `ru_maxrss` of the wrapper's
children is that one process's peak RSS. The rows are short synthetic French reviews (seeded), written
to a scratch folder; the default model is the tiny test checkpoint (memory, not speed, is measured).

    python bench/jobs_rss.py                          # 1,000 and 1,000,000 rows, CSV -> CSV
    python bench/jobs_rss.py --rows 1000 100000 --format parquet
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "tests" / "fixtures" / "tf_camembert"
# The console script's entry point (`python -m coulisse.interfaces.cli` would import the CLI module twice).
MAIN = "from coulisse.interfaces.cli import main; main()"
WORDS = ["film", "acteur", "actrice", "scénario", "génial", "nul", "ennuyeux", "magnifique", "histoire",
         "musique", "fin", "début", "drôle", "triste", "long", "court", "lent", "émouvant", "raté", "superbe",
         "décevant", "bouleversant", "mise", "en", "scène", "dialogues", "image"]
WRAPPER = ("import resource, subprocess, sys; r = subprocess.run(sys.argv[1:]); "
           "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(r.returncode)")


def make_input(path: Path, rows: int, fmt: str) -> None:
    rng = random.Random(0)
    texts = (" ".join(rng.choices(WORDS, k=rng.randint(4, 30))) for _ in range(rows))
    if fmt == "csv":
        with open(path, "w", encoding="utf-8", newline="") as f:
            w = csv.writer(f)
            w.writerow(["id", "text"])
            w.writerows((i, t) for i, t in enumerate(texts))
        return
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema([("id", pa.int64()), ("text", pa.string())])
    with pq.ParquetWriter(path, schema) as writer:
        for start in range(0, rows, 100_000):
            n = min(100_000, rows - start)
            chunk = {"id": range(start, start + n), "text": [next(texts) for _ in range(n)]}
            writer.write_table(pa.table(chunk, schema=schema))


def measure(source: Path, output: Path, model: str, threads: int, batch_rows: int) -> dict:
    cmd = [sys.executable, "-c", WRAPPER, sys.executable, "-c", MAIN, "classify",
           "-m", model, "-i", str(source), "-o", str(output), "--overwrite", "-t", str(threads),
           "-b", str(batch_rows)]
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, check=True)
    wall = time.perf_counter() - start
    peak_kib = int(done.stdout.strip().splitlines()[-1])
    return {"peak_rss_mib": round(peak_kib / 1024, 1), "wall_s": round(wall, 1),
            "summary": done.stderr.strip(), "output_mib": round(output.stat().st_size / 2**20, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000, 1_000_000])
    parser.add_argument("--format", choices=["csv", "parquet"], default="csv")
    parser.add_argument("--model", default=str(TINY))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch-rows", type=int, default=1024)
    parser.add_argument("--workdir", default=None, help="scratch folder (default: a temporary one)")
    args = parser.parse_args()
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="coulisse-rss-"))
    workdir.mkdir(parents=True, exist_ok=True)
    results = {}
    for rows in args.rows:
        source = workdir / f"in-{rows}.{args.format}"
        if not source.exists():
            make_input(source, rows, args.format)
        output = workdir / f"out-{rows}.{args.format}"
        result = measure(source, output, args.model, args.threads, args.batch_rows)
        result["input_mib"] = round(source.stat().st_size / 2**20, 1)
        results[rows] = result
        print(f"{rows:>9,} rows: peak RSS {result['peak_rss_mib']:7.1f} MiB, {result['wall_s']:7.1f} s wall, "
              f"input {result['input_mib']} MiB, output {result['output_mib']} MiB | {result['summary']}",
              flush=True)
    first, last = results[args.rows[0]], results[args.rows[-1]]
    print(f"peak RSS ratio {args.rows[-1]:,} / {args.rows[0]:,} rows: "
          f"{last['peak_rss_mib'] / first['peak_rss_mib']:.3f} (cpus: {os.cpu_count()}, "
          f"load average {os.getloadavg()[0]:.1f})")
    print(json.dumps({str(k): v for k, v in results.items()}))


if __name__ == "__main__":
    main()
